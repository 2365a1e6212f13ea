"""Lite R-ASPP (Howard et al., "Searching for MobileNetV3", 2019): a segmentation head for mobile trunks.

Instead of ASPP's five branches on the high-level map, LR-ASPP uses one 1x1 conv and a squeeze-and-
excitation style *global* gate: ``high' = cbr(high) * sigmoid(conv(avgpool(high)))``. ``high'`` (stride
16) is upsampled to the stride-8 ``low`` features and the two are classified separately and summed:
``logits = low_classifier(low) + high_classifier(up(high'))``, then upsampled to the image. Checkpoint-
compatible with torchvision's ``lraspp_mobilenet_v3_large``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ConvNormAct
from .backbones import build_trunk
from .base import SemanticSegmentor
from ..zoo import register
from .checkpoints import load_weights, prefixed

__all__ = ["LRASPP", "LRASPPHead", "lraspp_mobilenet_v3_large"]


class LRASPPHead(nn.Module):
    """``(low [B, Cl, h8, w8], high [B, Ch, h16, w16]) -> logits [B, num_classes, h8, w8]``."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128):
        super().__init__()
        self.high_proj = ConvNormAct(high_channels, inter_channels, 1)
        self.gate_conv = nn.Conv2d(high_channels, inter_channels, 1, bias=False)
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate_conv(F.adaptive_avg_pool2d(high, 1)))
        x = self.high_proj(high) * gate
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)

    def torchvision_module_map(self) -> dict[str, str]:
        return {"high_proj.conv": "cbr.0", "high_proj.bn": "cbr.1", "gate_conv": "scale.1",
                "low_classifier": "low_classifier", "high_classifier": "high_classifier"}


class LRASPP(SemanticSegmentor):
    """MobileNetV3-Large (dilated, output stride 16) + :class:`LRASPPHead`.

    Args:
        num_classes: number of labels.
        inter_channels: width of the gated high-level branch (128).
        **kwargs: :class:`SemanticSegmentor` options.

    Any input size works and torchvision runs it unpadded: no padding (``size_multiple = 1``), so the
    gate's global average sees only the image.
    """

    size_multiple = 1

    def __init__(self, num_classes: int, *, inter_channels: int = 128, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.backbone = build_trunk("mobilenet_v3_large", output_stride=16)
        low, high = self.backbone.out_channels
        self.head = LRASPPHead(low, high, num_classes, inter_channels)

    def segment(self, x: torch.Tensor, with_aux: bool = False):
        low, high = self.backbone(x)
        out = self.head(low, high)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False), None

    def torchvision_module_map(self) -> dict[str, str]:
        m = prefixed(self.backbone.torchvision_module_map(), "backbone", "backbone")
        m.update(prefixed(self.head.torchvision_module_map(), "head", "classifier"))
        return m


@register("lraspp_mobilenet_v3_large")
def lraspp_mobilenet_v3_large(num_classes: int = 21, *, weights: str | Path | None = None,
                              weights_backbone: str | Path | None = None, **kwargs) -> LRASPP:
    """torchvision's ``lraspp_mobilenet_v3_large``; ``weights``: a torchvision state-dict file or a
    sceneparse checkpoint."""
    return load_weights(LRASPP(num_classes, **kwargs), weights, weights_backbone)
