"""The dense heads of RetinaNet and FCOS: two parallel subnets slid over every pyramid level.

RetinaNet (Lin et al., 2017, sec. 4 and fig. 3): a *classification subnet* of four 3x3 convs with
``C_in`` filters, each followed by ReLU, then a 3x3 conv with ``K A`` outputs (sigmoid per class and
anchor); a *box subnet* of the same shape ending in ``4 A`` outputs (class-agnostic deltas). The
subnets share their weights across levels but not with each other. The last classification conv is
initialised with bias ``b = -log((1 - pi) / pi)``, ``pi = 0.01``, so every anchor starts at foreground
confidence ~0.01 (otherwise the many background anchors dominate the first iterations); the other
convs get ``N(0, 0.01)`` weights and zero biases.

FCOS (Tian et al., 2019, sec. 2.1 / 2.3): the same two towers with GroupNorm (32 groups) after each
conv; the box tower ends in 4 distances ``(l, t, r, b)`` (ReLU: non-negative) and, in parallel, one
*centre-ness* logit per location (the improved FCOS puts centre-ness on the regression branch).

Torchvision's ``retinanet_resnet50_fpn_v2`` head is RetinaNet's with GroupNorm and bias-free convs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..heads.rpn import flatten_levels


class ConvBlock(nn.Module):
    """3x3 conv (``bias`` optional) -> GroupNorm (``norm_groups`` groups, or none) -> ReLU."""

    def __init__(self, channels: int, norm_groups: int | None = None, bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)
        self.norm = nn.GroupNorm(norm_groups, channels) if norm_groups else None
        nn.init.normal_(self.conv.weight, std=0.01)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x)


class DenseHead(nn.Module):
    """Classification subnet + box subnet (+ centre-ness), shared over pyramid levels.

    Args:
        in_channels: channels of every level.
        num_anchors: references per location ``A`` (9 for RetinaNet, 1 for FCOS).
        num_columns: class outputs per reference ``K`` (``C + 1``: column 0 is background, see
            :mod:`sceneparse.models.one_stage.dense`).
        num_convs: convs per subnet (4).
        norm_groups: GroupNorm groups after each conv (``None``: no normalisation).
        conv_bias: whether the subnet convs have a bias (torchvision drops it before GroupNorm in
            RetinaNet v2, keeps it in FCOS).
        centerness: add FCOS's centre-ness output to the box subnet.
        box_relu: ReLU on the box outputs (FCOS's distances are non-negative).
        prior_prob: initial foreground probability ``pi`` of the classification output.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_columns: int, *, num_convs: int = 4,
                 norm_groups: int | None = None, conv_bias: bool = True, centerness: bool = False,
                 box_relu: bool = False, prior_prob: float = 0.01):
        super().__init__()
        if not 0 < prior_prob < 1:
            raise ValueError(f"prior_prob must lie in (0, 1), got {prior_prob}")
        self.num_anchors = int(num_anchors)
        self.num_columns = int(num_columns)
        self.box_relu = bool(box_relu)
        self.cls_subnet = nn.ModuleList(ConvBlock(in_channels, norm_groups, conv_bias) for _ in range(num_convs))
        self.box_subnet = nn.ModuleList(ConvBlock(in_channels, norm_groups, conv_bias) for _ in range(num_convs))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_columns, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, num_anchors, 3, padding=1) if centerness else None
        for conv in (self.cls_logits, self.bbox_pred, self.centerness):
            if conv is not None:
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Levels ``[B, C_in, H_l, W_l]`` -> ``cls [B, N, K]``, ``box [B, N, 4]``, ``centerness [B, N]``
        (or ``None``), ``N = sum_l H_l W_l A`` in reference order."""
        cls, box, ctr = [], [], []
        for f in features:
            c = f
            for block in self.cls_subnet:
                c = block(c)
            cls.append(self.cls_logits(c))
            b = f
            for block in self.box_subnet:
                b = block(b)
            reg = self.bbox_pred(b)
            box.append(F.relu(reg) if self.box_relu else reg)
            if self.centerness is not None:
                ctr.append(self.centerness(b))
        return (flatten_levels(cls, self.num_columns), flatten_levels(box, 4),
                flatten_levels(ctr, 1)[..., 0] if self.centerness is not None else None)


__all__ = ["ConvBlock", "DenseHead"]
