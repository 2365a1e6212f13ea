"""``conv -> BatchNorm -> activation``, the unit the segmentation heads and decoders are built of."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["ConvNormAct"]


class ConvNormAct(nn.Module):
    """``conv (no bias) -> BatchNorm -> activation``; ``padding = dilation * (k - 1) / 2`` keeps the
    size at stride 1. ``act=None`` leaves the activation out (linear projections). Named children
    ``conv`` / ``bn`` / ``act`` (torchvision's ``Conv2dNormActivation`` is the same with ``0`` / ``1``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, act: Callable[..., nn.Module] | None = nn.ReLU,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=dilation * (kernel_size - 1) // 2, dilation=dilation, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        # in place: the BN output is a fresh tensor nobody else holds (saves an allocation per layer)
        self.act = act(inplace=True) if act is not None else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
