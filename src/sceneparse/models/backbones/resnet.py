"""ResNet trunk (He et al., 2016) returning the stage outputs C2..C5, for detection (feature pyramid)
and dense prediction (dilated, output stride 8 or 16).

The layers are torchvision's ``resnet18/34/50/101`` definitions (so torchvision / ImageNet checkpoints
fit by name, as ``trunk.<name>``); this module only chooses the normalisation, freezes the early stages,
optionally replaces the stride of the last stages by dilation and returns the intermediate feature
maps. Stage ``k`` (1..4) is ``layer{k}``; its stride is ``2 ** (k + 1)`` up to the output stride.

Dilation ("atrous" convolution; DeepLab) keeps the map at output stride 8 or 16 instead of 32 while the
receptive field grows as before: a 3x3 convolution with dilation ``d`` covers ``(2d + 1) x (2d + 1)``
pixels with 9 weights. The weights keep their shapes, so the same checkpoints load.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops.misc import FrozenBatchNorm2d

_DEPTHS = {18: tv_resnet.resnet18, 34: tv_resnet.resnet34, 50: tv_resnet.resnet50, 101: tv_resnet.resnet101}
#: output stride -> which of layer2, layer3, layer4 trade their stride for dilation (torchvision's
#: ``replace_stride_with_dilation``)
_DILATE = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


def norm_layer(norm: str, eps: float, momentum: float = 0.1):
    """``"frozen_bn"`` (affine + running statistics as constant buffers, the detection default,
    because detection batches are too small for batch statistics) or ``"bn"`` (ordinary BatchNorm
    with that ``momentum``)."""
    if norm == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    if norm == "bn":
        return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)
    raise ValueError(f"norm must be 'frozen_bn' or 'bn', got {norm!r}")


def _replace_stride_with_dilation(trunk: tv_resnet.ResNet, dilate: Sequence[bool]) -> None:
    """Dilate ``layer2..4`` where ``dilate`` says so, in place, by torchvision's rule: the stage's
    strided 3x3 convolution (first block) gets stride 1 and the previous dilation, every other 3x3
    convolution of the stage the new dilation (twice the previous); the projection shortcut loses its
    stride. Written for both block types: torchvision builds dilated Bottlenecks itself but refuses
    dilated BasicBlocks (ResNet-18/34), which DeepLab on small trunks needs."""
    dilation = 1
    for layer, d in zip((trunk.layer2, trunk.layer3, trunk.layer4), dilate):
        if not d:
            continue
        previous, dilation = dilation, dilation * 2
        for block in layer:
            for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
                if conv.kernel_size == (3, 3):
                    d_conv = previous if conv.stride == (2, 2) else dilation
                    conv.stride, conv.dilation, conv.padding = (1, 1), (d_conv, d_conv), (d_conv, d_conv)
                elif conv.stride == (2, 2):  # the 1x1 projection of the shortcut
                    conv.stride = (1, 1)


class ResNetBackbone(nn.Module):
    """ResNet-18/34/50/101 trunk -> ``list[Tensor]`` of the returned stages, finest first.

    Args:
        depth: 18, 34, 50 or 101.
        norm: ``"frozen_bn"`` or ``"bn"`` (see :func:`norm_layer`); ``bn_eps`` is its epsilon
            (torchvision's legacy COCO R-CNN checkpoints were trained with ``0.0``).
        trainable_layers: how many of ``layer4, layer3, layer2, layer1, conv1`` (counted from the
            top) keep gradients; 5 also trains ``bn1``. 0 freezes the whole trunk.
        returned_stages: stages (1..4) whose outputs are returned. The stages after the last one are
            not built (a trunk returning ``(1, 2, 3)`` has no ``layer4``: ResNet-18 without its
            ``layer4`` keeps 2.8 of its 11.2 M parameters); an ImageNet checkpoint's entries for them
            are skipped (``load_imagenet_trunk``).
        output_stride: 32 (plain), 16 (``layer4`` dilated 2) or 8 (``layer3`` dilated 2, ``layer4``
            dilated 4): torchvision's ``replace_stride_with_dilation`` ``[False, False, True]`` /
            ``[False, True, True]``, also for ResNet-18/34.

    Attributes:
        out_channels: channels of each returned map; ``strides``: their strides in input pixels (e.g.
        ``4, 8, 8, 8`` at output stride 8). Each strided layer computes ``ceil(n / 2)``: any input size works.
    """

    def __init__(self, depth: int = 50, *, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                 trainable_layers: int = 3, returned_stages: Sequence[int] = (1, 2, 3, 4), output_stride: int = 32):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if output_stride not in _DILATE:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        returned_stages = tuple(int(s) for s in returned_stages)
        if not returned_stages or min(returned_stages) < 1 or max(returned_stages) > 4 \
                or list(returned_stages) != sorted(set(returned_stages)):
            raise ValueError(f"returned_stages must be increasing values in 1..4, got {returned_stages}")
        trunk = _DEPTHS[depth](weights=None, norm_layer=norm_layer(norm, bn_eps))
        del trunk.fc, trunk.avgpool  # classification head: not part of a backbone
        _replace_stride_with_dilation(trunk, _DILATE[output_stride])
        #: ``layer<k>`` names this trunk does not build (after the last returned stage)
        self.dropped_layers = tuple(f"layer{k}" for k in range(returned_stages[-1] + 1, 5))
        for name in self.dropped_layers:
            delattr(trunk, name)
        self.trunk = trunk
        self.depth = depth
        self.output_stride = output_stride
        self.returned_stages = returned_stages
        expansion = 4 if depth >= 50 else 1
        self.out_channels = [64 * 2 ** (s - 1) * expansion for s in returned_stages]
        self.strides = [min(2 ** (s + 1), output_stride) for s in returned_stages]
        train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            train.append("bn1")
        for name, p in self.trunk.named_parameters():
            if not any(name.startswith(t) for t in train):
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: ``[B, 3, H, W]`` normalised images -> stage outputs ``[B, C_k, H/2^(k+1), W/2^(k+1)]``."""
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        out = []
        for k in range(1, self.returned_stages[-1] + 1):
            x = getattr(t, f"layer{k}")(x)
            if k in self.returned_stages:
                out.append(x)
        return out

    def torchvision_module_map(self) -> dict[str, str]:
        """Module names here -> in ``torchvision.models.resnetXX`` (``trunk.<name>`` -> ``<name>``)."""
        return {f"trunk.{n}": n for n, m in self.trunk.named_modules() if n and not list(m.children())}


__all__ = ["ResNetBackbone", "norm_layer"]
