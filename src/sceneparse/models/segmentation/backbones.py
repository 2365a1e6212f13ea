"""Trunks for dense prediction: the shared :mod:`sceneparse.models.backbones` (the detectors' ResNet
and MobileNetV3-Large), configured the way torchvision's segmentation models configure them.

Segmentation wants features that are both deep (large receptive field) and dense, so the last stages
trade their stride for dilation (output stride 8 or 16 instead of 32; see
:mod:`sceneparse.models.backbones.resnet`). Unlike detection, BatchNorm is trainable (segmentation
batches hold enough pixels for batch statistics) and no stage is frozen.

* ``resnet{18,34,50,101}``: :class:`~sceneparse.models.backbones.ResNetBackbone` returning
  ``[c2, c3, c4, c5]`` at output stride 8, 16 or 32;
* ``mobilenet_v3_large``: :class:`~sceneparse.models.backbones.MobileNetV3Backbone` returning
  ``[low (stride 8, 40 ch), high (960 ch)]`` -- torchvision's taps, ``features[4]`` and ``features[16]``
  -- dilated (output stride 16) or not (32), with MobileNet's BatchNorm (``eps 1e-3``, momentum 0.01).

``features[-1]`` feeds the main head and ``features[-2]`` the auxiliary head, as in torchvision. The
parameters are torchvision's under ``trunk.`` (``torchvision_module_map()``), so torchvision segmentation
and ImageNet checkpoints load (:mod:`.checkpoints`).
"""
from __future__ import annotations

from torch import nn

from ..backbones import MobileNetV3Backbone, ResNetBackbone

__all__ = ["TRUNKS", "build_trunk"]

TRUNKS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")


def build_trunk(name: str, output_stride: int = 8, stages: int = 4) -> nn.Module:
    """A trunk by name with the requested output stride; attributes ``out_channels`` and ``strides``
    describe the returned maps. ``stages``: a ResNet's stages kept (4: all; 3: without ``layer4``,
    whose stride is then 16 without dilation, or 8 with ``layer3`` dilated)."""
    if name.startswith("resnet") and name[6:].isdigit():
        if stages not in (3, 4):
            raise ValueError(f"a ResNet trunk keeps 3 or 4 stages, got {stages}")
        if stages == 3 and output_stride == 32:
            raise ValueError("a ResNet trunk without layer4 has output stride 8 or 16, not 32")
        return ResNetBackbone(int(name[6:]), norm="bn", trainable_layers=5, output_stride=output_stride,
                              returned_stages=tuple(range(1, stages + 1)))
    if stages != 4:
        raise ValueError(f"stages applies to ResNet trunks, not {name!r}")
    if name == "mobilenet_v3_large":
        if output_stride not in (16, 32):
            raise ValueError(f"mobilenet_v3_large supports output_stride 16 or 32, got {output_stride}")
        return MobileNetV3Backbone(norm="bn", bn_eps=1e-3, bn_momentum=0.01, trainable_layers=6,
                                   returned_stages=(2, 5), dilated=output_stride == 16)
    raise ValueError(f"unknown trunk {name!r}; expected one of {TRUNKS}")
