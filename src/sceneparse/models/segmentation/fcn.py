"""Fully Convolutional Networks (Long, Shelhamer & Darrell, CVPR 2015).

A classification network made fully convolutional labels every pixel at once; the problem is that
its last map is 32x coarser than the image. Two answers live here:

* :class:`FCNSkip` -- the paper's FCN-32s / 16s / 8s: 1x1 "score" layers on the stride-32, 16 and 8
  stages; the coarse scores are upsampled 2x by a transposed convolution, cropped to the finer stage
  and *added* to its scores (skip fusion), and the fused map is upsampled to the image by a final
  transposed convolution. All upsamplers start as bilinear interpolation; the finer score layers start
  at zero, so training starts from FCN-32s and learns to use the skips.
* :class:`FCN` -- torchvision's ``fcn_resnet50``: a dilated ResNet (output stride 8) with an
  :class:`FCNHead`, upsampled bilinearly; checkpoint-compatible with torchvision.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ConvNormAct
from ..layers.upsampling import TransposedConv2d
from .backbones import build_trunk
from .base import SemanticSegmentor
from ..zoo import register
from .checkpoints import load_weights, prefixed

__all__ = ["FCN", "FCNHead", "FCNSkip", "TrunkHeadSegmentor", "fcn_resnet50", "fcn8s_resnet18", "fcn16s_resnet18",
           "fcn32s_resnet18"]


class FCNHead(nn.Module):
    """``3x3 conv (in -> in/4) -> BN -> ReLU -> Dropout(0.1) -> 1x1 conv (-> num_classes)``;
    torchvision's ``FCNHead``, also used as the auxiliary head of FCN and DeepLabV3."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.block = ConvNormAct(in_channels, in_channels // 4, 3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(in_channels // 4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.block(x)))

    def torchvision_module_map(self) -> dict[str, str]:
        return {"block.conv": "0", "block.bn": "1", "classifier": "4"}


def _resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class TrunkHeadSegmentor(SemanticSegmentor):
    """Trunk -> a head on its last map (+ an auxiliary :class:`FCNHead` on the map before) -> bilinear
    upsampling to the input: torchvision's ``_SimpleSegmentationModel``, the shape of :class:`FCN` and
    :class:`~.deeplab.DeepLabV3` (their torchvision names: ``backbone``, ``classifier``, ``aux_classifier``).

    Args:
        num_classes: number of labels.
        head: ``in_channels -> module`` building the main head on the trunk's last map.
        backbone, output_stride: the trunk (:func:`~.backbones.build_trunk`).
        aux: add the auxiliary head on ``features[-2]``, used for the training loss only.
        **kwargs: :class:`SemanticSegmentor` options (preprocessor, aux_weight, dice_weight, ...).

    Any input size works (strided convs round up, the logits are resized to the input), and torchvision
    runs these networks unpadded: no padding (``size_multiple = 1``), which also keeps the DeepLab
    ASPP's image pooling off padded pixels.
    """

    size_multiple = 1

    def __init__(self, num_classes: int, head: Callable[[int], nn.Module], *, backbone: str, output_stride: int,
                 aux: bool = False, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.backbone = build_trunk(backbone, output_stride)
        self.head = head(self.backbone.out_channels[-1])
        self.aux_head = FCNHead(self.backbone.out_channels[-2], num_classes) if aux else None

    def segment(self, x: torch.Tensor, with_aux: bool = False):
        feats = self.backbone(x)
        logits = _resize_to(self.head(feats[-1]), x)
        aux = _resize_to(self.aux_head(feats[-2]), x) if with_aux and self.aux_head is not None else None
        return logits, aux

    def torchvision_module_map(self) -> dict[str, str]:
        m = prefixed(self.backbone.torchvision_module_map(), "backbone", "backbone")
        m.update(prefixed(self.head.torchvision_module_map(), "head", "classifier"))
        if self.aux_head is not None:
            m.update(prefixed(self.aux_head.torchvision_module_map(), "aux_head", "aux_classifier"))
        return m


class FCN(TrunkHeadSegmentor):
    """Dilated-trunk FCN with an :class:`FCNHead` (and an auxiliary one on the stage before).

    Args:
        num_classes: number of labels.
        backbone: a :data:`~sceneparse.models.segmentation.backbones.TRUNKS` name.
        output_stride: 8 (torchvision's ``fcn_resnet50``), 16 or 32.
        aux: add the auxiliary head on ``features[-2]`` (``layer3``), used for the training loss only.
        **kwargs: :class:`SemanticSegmentor` options (preprocessor, aux_weight, dice_weight, ...).
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", output_stride: int = 8, aux: bool = False,
                 **kwargs):
        super().__init__(num_classes, lambda c: FCNHead(c, num_classes), backbone=backbone,
                         output_stride=output_stride, aux=aux, **kwargs)


def _crop(x: torch.Tensor, size) -> torch.Tensor:
    """Top-left crop to ``size`` (the upsamplers are centre-aligned, so the excess is at the bottom/right)."""
    return x[..., : size[-2], : size[-1]]  # no int(): traced sizes stay dynamic in an exported graph


class FCNSkip(SemanticSegmentor):
    """FCN-32s / FCN-16s / FCN-8s on a plain (stride-32) ResNet.

    Args:
        num_classes: number of labels.
        variant: 32, 16 or 8 -- the stride of the finest stage fused (FCN-8s fuses strides 32, 16, 8).
        depth: ResNet depth for the trunk (18 is CPU-friendly).
        **kwargs: :class:`SemanticSegmentor` options.

    ``segment``: ``s = score32(c5)``; FCN-16s: ``s = crop(up2(s)) + score16(c4)``; FCN-8s: also
    ``s = crop(up2'(s)) + score8(c3)``; finally ``crop(up_variant(s))`` to the input size. Every upsampler
    is a :class:`~sceneparse.models.layers.upsampling.TransposedConv2d` with ``stride = factor``,
    ``kernel = 2 factor``, ``padding = factor / 2`` (``out = factor * in``) initialised bilinear.
    The upsamplers are centre-aligned and cropped at the bottom/right, so any input size works: no
    padding (``size_multiple = 1``).
    """

    size_multiple = 1

    def __init__(self, num_classes: int, *, variant: int = 8, depth: int = 18, **kwargs):
        super().__init__(num_classes, **kwargs)
        if variant not in (8, 16, 32):
            raise ValueError(f"FCN variant must be 8, 16 or 32, got {variant}")
        self.variant = variant
        self.backbone = build_trunk(f"resnet{depth}", output_stride=32)
        _, c3, c4, c5 = self.backbone.out_channels
        self.score32 = nn.Conv2d(c5, num_classes, 1)
        if variant <= 16:
            self.score16 = nn.Conv2d(c4, num_classes, 1)
            self.up32to16 = TransposedConv2d.upsampling(num_classes, 2)
            nn.init.zeros_(self.score16.weight)
            nn.init.zeros_(self.score16.bias)
        if variant == 8:
            self.score8 = nn.Conv2d(c3, num_classes, 1)
            self.up16to8 = TransposedConv2d.upsampling(num_classes, 2)
            nn.init.zeros_(self.score8.weight)
            nn.init.zeros_(self.score8.bias)
        self.up_final = TransposedConv2d.upsampling(num_classes, variant)

    def segment(self, x: torch.Tensor, with_aux: bool = False):
        _, c3, c4, c5 = self.backbone(x)
        s = self.score32(c5)
        if self.variant <= 16:
            s = _crop(self.up32to16(s), c4.shape) + self.score16(c4)
        if self.variant == 8:
            s = _crop(self.up16to8(s), c3.shape) + self.score8(c3)
        return _crop(self.up_final(s), x.shape), None


# ---- builders ------------------------------------------------------------------------------------
@register("fcn_resnet50")
def fcn_resnet50(num_classes: int = 21, *, aux_loss: bool = True, weights: str | Path | None = None,
                 weights_backbone: str | Path | None = None, **kwargs) -> FCN:
    """torchvision's ``fcn_resnet50``: dilated ResNet-50 (output stride 8) + FCNHead (+ aux on layer3).

    ``aux_loss`` defaults to on, as in torchvision's checkpoints (the auxiliary head only runs in
    training). ``weights``: a torchvision ``fcn_resnet50`` state-dict file or a sceneparse checkpoint;
    ``weights_backbone``: a torchvision ImageNet ``resnet50`` file for the trunk.
    """
    model = FCN(num_classes, backbone="resnet50", output_stride=8, aux=aux_loss, **kwargs)
    return load_weights(model, weights, weights_backbone)


def _fcn_skip(variant: int, num_classes: int, weights, weights_backbone, kwargs) -> FCNSkip:
    return load_weights(FCNSkip(num_classes, variant=variant, depth=18, **kwargs), weights, weights_backbone)


@register("fcn8s_resnet18")
def fcn8s_resnet18(num_classes: int = 21, *, weights: str | Path | None = None,
                    weights_backbone: str | Path | None = None, **kwargs) -> FCNSkip:
    """FCN-8s on ResNet-18 (strides 32 + 16 + 8 fused)."""
    return _fcn_skip(8, num_classes, weights, weights_backbone, kwargs)


@register("fcn16s_resnet18")
def fcn16s_resnet18(num_classes: int = 21, *, weights: str | Path | None = None,
                    weights_backbone: str | Path | None = None, **kwargs) -> FCNSkip:
    """FCN-16s on ResNet-18 (strides 32 + 16 fused)."""
    return _fcn_skip(16, num_classes, weights, weights_backbone, kwargs)


@register("fcn32s_resnet18")
def fcn32s_resnet18(num_classes: int = 21, *, weights: str | Path | None = None,
                    weights_backbone: str | Path | None = None, **kwargs) -> FCNSkip:
    """FCN-32s on ResNet-18 (stride-32 scores upsampled 32x)."""
    return _fcn_skip(32, num_classes, weights, weights_backbone, kwargs)
