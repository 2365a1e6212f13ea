"""``conv -> BatchNorm -> activation``, the unit the segmentation heads and decoders are built of."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AtrousConv2d", "ConvNormAct", "SeparableConvNormAct"]


class AtrousConv2d(nn.Conv2d):
    """A stride-1 "same" dilated convolution that skips the kernel taps which read only padding.

    With dilation ``d`` and padding ``d (k - 1) / 2``, tap ``j`` of an axis reads the input at offset
    ``(j - (k - 1) / 2) d``; once ``|offset| >= size`` of that axis it reads zeros for every output
    position. ASPP's large rates on small maps are the case: rates (6, 12, 18) at output stride 16 on a
    128 px image meet an 8 x 8 map, where the rate-12 and rate-18 3x3 convolutions are exactly 1x1
    convolutions by their centre tap -- computed as such here (9x fewer multiply-adds, forward and
    backward). The result is the same function with the same gradients (the skipped taps' gradients are
    0 either way), and the parameters are a plain ``nn.Conv2d``'s. Tracing and compilation run the full
    kernel, so an exported graph stays valid at every input size.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1) or self.padding_mode != "zeros" or torch.jit.is_tracing() \
                or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return super().forward(x)
        keep = []  # per axis: taps kept on each side of the centre
        for size, k, d, pad in zip(x.shape[-2:], self.kernel_size, self.dilation, self.padding):
            half = (k - 1) // 2
            if k % 2 == 0 or pad != d * half:
                return super().forward(x)
            keep.append(min(half, (int(size) - 1) // d))
        (kh, kw), (hh, hw) = keep, ((k - 1) // 2 for k in self.kernel_size)
        if (kh, kw) == (hh, hw):
            return super().forward(x)
        weight = self.weight[:, :, hh - kh:hh + kh + 1, hw - kw:hw + kw + 1]
        return F.conv2d(x, weight, self.bias, 1, (kh * self.dilation[0], kw * self.dilation[1]),
                        self.dilation, self.groups)


class ConvNormAct(nn.Module):
    """``conv (no bias) -> BatchNorm -> activation``; ``padding = dilation * (k - 1) / 2`` keeps the
    size at stride 1. ``act=None`` leaves the activation out (linear projections). Named children
    ``conv`` / ``bn`` / ``act`` (torchvision's ``Conv2dNormActivation`` is the same with ``0`` / ``1``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, act: Callable[..., nn.Module] | None = nn.ReLU,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        super().__init__()
        conv = AtrousConv2d if dilation > 1 and stride == 1 else nn.Conv2d  # the same function, faster on small maps
        self.conv = conv(in_channels, out_channels, kernel_size, stride=stride,
                         padding=dilation * (kernel_size - 1) // 2, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        # in place: the BN output is a fresh tensor nobody else holds (saves an allocation per layer)
        self.act = act(inplace=True) if act is not None else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConvNormAct(nn.Sequential):
    """Depthwise-separable ``k x k`` convolution as DeepLabv3+ builds its decoder: a depthwise ``k x k``
    conv-BN-ReLU per channel, then a pointwise 1x1 conv-BN-ReLU mixing them (Chollet's Xception,
    MobileNet): ``k^2 in + in out`` multiply-adds per pixel against ``k^2 in out``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1)
        self.out_channels = out_channels
