"""DeepLabv3 (Chen et al. 2017, "Rethinking Atrous Convolution") and DeepLabv3+ (Chen et al. 2018).

* **Atrous (dilated) convolution** keeps the trunk at output stride 8 or 16 without shrinking the
  receptive field (see :mod:`.backbones`).
* **ASPP** (atrous spatial pyramid pooling) looks at the same feature map at several scales at once:
  a 1x1 conv, three 3x3 convs with dilation rates ``r1 < r2 < r3`` and *image pooling* (global
  average -> 1x1 conv, broadcast back: image-level context for when a large rate sees mostly padding);
  the five branches are concatenated and projected by a 1x1 conv. Rates (6, 12, 18) at output stride
  16 and twice that, (12, 24, 36), at output stride 8 cover the same image extent.
* **DeepLabv3+** adds a decoder: the ASPP output (stride 16) is upsampled 4x and concatenated with
  the stride-4 ``layer1`` features reduced to 48 channels, refined by two 3x3 convs, then classified
  -- sharper boundaries at little cost.

:class:`DeepLabV3` with ``backbone="resnet50"`` / ``"mobilenet_v3_large"`` is checkpoint-compatible with
torchvision's ``deeplabv3_resnet50`` / ``deeplabv3_mobilenet_v3_large``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ConvNormAct, SeparableConvNormAct
from .backbones import build_trunk
from .base import SemanticSegmentor
from ..zoo import register
from .checkpoints import load_weights, prefixed
from .fcn import TrunkHeadSegmentor, _resize_to

__all__ = [
    "ASPP",
    "ASPPPooling",
    "DeepLabHead",
    "DeepLabV3",
    "DeepLabV3Plus",
    "default_atrous_rates",
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet18",
    "deeplabv3_resnet50",
    "deeplabv3plus_resnet18",
    "deeplabv3plus_resnet50",
]


def default_atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """(6, 12, 18) at output stride 16, doubled at 8 (the same image extent), halved at 32."""
    return {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]


class ASPPPooling(nn.Module):
    """Image-pooling branch: global average -> 1x1 conv -> BN -> ReLU, broadcast to the input's size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = ConvNormAct(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(F.adaptive_avg_pool2d(x, 1))
        return y.expand(-1, -1, x.shape[2], x.shape[3])  # = bilinear upsampling of a 1x1 map


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: ``[B, in, h, w] -> [B, out, h, w]``.

    Branches ``conv1x1``, ``atrous[i]`` (3x3, dilation ``rates[i]``), ``image_pool``; concatenated
    (``(2 + len(rates)) * out`` channels) and fused by ``project`` (1x1 conv, BN, ReLU) and dropout.
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int], out_channels: int = 256,
                 dropout: float = 0.5):
        super().__init__()
        self.conv1x1 = ConvNormAct(in_channels, out_channels, 1)
        self.atrous = nn.ModuleList(ConvNormAct(in_channels, out_channels, 3, dilation=int(r)) for r in atrous_rates)
        self.image_pool = ASPPPooling(in_channels, out_channels)
        self.project = ConvNormAct((2 + len(self.atrous)) * out_channels, out_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.conv1x1(x), *(conv(x) for conv in self.atrous), self.image_pool(x)]
        return self.dropout(self.project(torch.cat(branches, dim=1)))

    def torchvision_module_map(self) -> dict[str, str]:
        n = len(self.atrous)
        m = {"conv1x1.conv": "convs.0.0", "conv1x1.bn": "convs.0.1",
             "image_pool.block.conv": f"convs.{n + 1}.1", "image_pool.block.bn": f"convs.{n + 1}.2",
             "project.conv": "project.0", "project.bn": "project.1"}
        for i in range(n):
            m.update({f"atrous.{i}.conv": f"convs.{i + 1}.0", f"atrous.{i}.bn": f"convs.{i + 1}.1"})
        return m


class DeepLabHead(nn.Module):
    """DeepLabv3 head: ``ASPP -> 3x3 conv (256) -> BN -> ReLU -> 1x1 conv (num_classes)``."""

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (12, 24, 36),
                 channels: int = 256):
        super().__init__()
        self.aspp = ASPP(in_channels, atrous_rates, channels)
        self.block = ConvNormAct(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block(self.aspp(x)))

    def torchvision_module_map(self) -> dict[str, str]:
        m = prefixed(self.aspp.torchvision_module_map(), "aspp", "0")
        m.update({"block.conv": "1", "block.bn": "2", "classifier": "4"})
        return m


class DeepLabV3(TrunkHeadSegmentor):
    """DeepLabv3: dilated trunk -> :class:`DeepLabHead` -> bilinear upsampling to the input.

    Args:
        num_classes: number of labels.
        backbone: a trunk name (``resnet18/34/50/101``, ``mobilenet_v3_large``).
        output_stride: 8 or 16 (ResNets also 32; MobileNetV3 16 or 32).
        atrous_rates: ASPP rates; default :func:`default_atrous_rates` for ResNets and torchvision's
            (12, 24, 36) for MobileNetV3 (what its checkpoint was trained with).
        aux: auxiliary :class:`~.fcn.FCNHead` on ``features[-2]`` (ResNet ``layer3``; MobileNetV3's
            stride-8 features), for the training loss only.
        **kwargs: :class:`SemanticSegmentor` options.
    """

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", output_stride: int = 8,
                 atrous_rates: Sequence[int] | None = None, aux: bool = False, **kwargs):
        if atrous_rates is None:
            atrous_rates = (12, 24, 36) if backbone == "mobilenet_v3_large" else default_atrous_rates(output_stride)
        super().__init__(num_classes, lambda c: DeepLabHead(c, num_classes, atrous_rates), backbone=backbone,
                         output_stride=output_stride, aux=aux, **kwargs)


class DeepLabV3Plus(SemanticSegmentor):
    """DeepLabv3+: ASPP encoder on a dilated ResNet + a decoder fed by the stride-4 ``layer1`` features.

    Args:
        num_classes: number of labels.
        depth: ResNet depth.
        output_stride: 16 (the paper's default) or 8.
        atrous_rates: default :func:`default_atrous_rates`.
        low_level_channels: channels the ``layer1`` features are reduced to (48 in the paper, few enough
            not to outweigh the 256 semantic channels).
        channels: ASPP width (256 in the paper).
        decoder_channels: width of the decoder's two 3x3 convs (default ``channels``). They run at
            stride 4, where they cost more than a ResNet-18 trunk at 256: a CPU-sized model halves them.
        trunk_stages: 4 (the whole ResNet) or 3: the ASPP sits on ``layer3`` (stride 16 undilated, 8 with
            ``output_stride=8``) and ``layer4`` is not built. ResNet-18 at output stride 16 with ASPP 128
            and decoder 96 (the CPU-sized model): 13.4 -> 4.1 M parameters, 1.36 -> 0.77 GMAC per 128 px
            image (layer4 dilated at stride 16 is 0.54 of them), training step 1.75x faster.
        separable_decoder: the decoder's two 3x3 convs depthwise-separable (:class:`SeparableConvNormAct`),
            as in the paper (which makes the ASPP separable too; on a CPU a dilated depthwise conv on an
            8 x 8 map is slower than the dense one, so the ASPP stays dense). The CPU-sized model above:
            a training step (batch 8, 128 px, bf16) 178 -> 156 ms.
        **kwargs: :class:`SemanticSegmentor` options.

    ``segment``: ``a = ASPP(c5)``; ``d = fuse(cat(up(a -> c2 size), low_proj(c2)))`` with two 3x3
    conv-BN-ReLU of ``decoder_channels``; ``logits = up(classifier(d) -> input size)``. Any input size
    works: no padding (``size_multiple = 1``), so the ASPP's image pooling sees only the image.
    """

    size_multiple = 1

    def __init__(self, num_classes: int, *, depth: int = 50, output_stride: int = 16,
                 atrous_rates: Sequence[int] | None = None, low_level_channels: int = 48, channels: int = 256,
                 decoder_channels: int | None = None, trunk_stages: int = 4, separable_decoder: bool = False,
                 **kwargs):
        super().__init__(num_classes, **kwargs)
        self.backbone = build_trunk(f"resnet{depth}", output_stride, stages=trunk_stages)
        c2, c5 = self.backbone.out_channels[0], self.backbone.out_channels[-1]
        self.aspp = ASPP(c5, atrous_rates or default_atrous_rates(output_stride), channels)
        self.low_proj = ConvNormAct(c2, low_level_channels, 1)
        dec = decoder_channels or channels
        block = SeparableConvNormAct if separable_decoder else ConvNormAct
        self.fuse = nn.Sequential(block(channels + low_level_channels, dec, 3), block(dec, dec, 3))
        self.classifier = nn.Conv2d(dec, num_classes, 1)

    def segment(self, x: torch.Tensor, with_aux: bool = False):
        features = self.backbone(x)
        c2, c5 = features[0], features[-1]
        a = _resize_to(self.aspp(c5), c2)
        d = self.fuse(torch.cat([a, self.low_proj(c2)], dim=1))
        return _resize_to(self.classifier(d), x), None


# ---- builders ------------------------------------------------------------------------------------
@register("deeplabv3_resnet50")
def deeplabv3_resnet50(num_classes: int = 21, *, aux_loss: bool = True, weights: str | Path | None = None,
                       weights_backbone: str | Path | None = None, **kwargs) -> DeepLabV3:
    """torchvision's ``deeplabv3_resnet50``: ResNet-50 at output stride 8, ASPP rates (12, 24, 36).
    ``aux_loss`` on by default as in torchvision's checkpoints (the aux head only runs in training);
    ``weights``: a torchvision state-dict file or a sceneparse checkpoint."""
    model = DeepLabV3(num_classes, backbone="resnet50", output_stride=8, aux=aux_loss, **kwargs)
    return load_weights(model, weights, weights_backbone)


@register("deeplabv3_mobilenet_v3_large")
def deeplabv3_mobilenet_v3_large(num_classes: int = 21, *, aux_loss: bool = True,
                                 weights: str | Path | None = None, weights_backbone: str | Path | None = None,
                                 **kwargs) -> DeepLabV3:
    """torchvision's ``deeplabv3_mobilenet_v3_large``: dilated MobileNetV3-Large (output stride 16),
    ASPP rates (12, 24, 36), aux head on the stride-8 features (on by default, as in torchvision's checkpoint)."""
    model = DeepLabV3(num_classes, backbone="mobilenet_v3_large", output_stride=16, aux=aux_loss, **kwargs)
    return load_weights(model, weights, weights_backbone)


@register("deeplabv3_resnet18")
def deeplabv3_resnet18(num_classes: int = 21, *, output_stride: int = 16, aux_loss: bool = False,
                       weights: str | Path | None = None, weights_backbone: str | Path | None = None,
                       **kwargs) -> DeepLabV3:
    """DeepLabv3 on a dilated ResNet-18 (CPU-trainable; rates by ``output_stride``)."""
    model = DeepLabV3(num_classes, backbone="resnet18", output_stride=output_stride, aux=aux_loss, **kwargs)
    return load_weights(model, weights, weights_backbone)


@register("deeplabv3plus_resnet18")
def deeplabv3plus_resnet18(num_classes: int = 21, *, output_stride: int = 16, weights: str | Path | None = None,
                           weights_backbone: str | Path | None = None, **kwargs) -> DeepLabV3Plus:
    """DeepLabv3+ on ResNet-18."""
    model = DeepLabV3Plus(num_classes, depth=18, output_stride=output_stride, **kwargs)
    return load_weights(model, weights, weights_backbone)


@register("deeplabv3plus_resnet50")
def deeplabv3plus_resnet50(num_classes: int = 21, *, output_stride: int = 16, weights: str | Path | None = None,
                           weights_backbone: str | Path | None = None, **kwargs) -> DeepLabV3Plus:
    """DeepLabv3+ on ResNet-50."""
    model = DeepLabV3Plus(num_classes, depth=50, output_stride=output_stride, **kwargs)
    return load_weights(model, weights, weights_backbone)
