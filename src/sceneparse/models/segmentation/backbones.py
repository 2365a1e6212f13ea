"""Dilated trunks for dense prediction: ResNet-18/34/50/101 and MobileNetV3-Large.

Segmentation wants features that are both deep (large receptive field) and dense. Replacing the
stride of the last stages by dilation ("atrous" convolution; DeepLab) keeps the map at output stride
8 or 16 instead of 32 while the receptive field grows as before: a 3x3 convolution with dilation
``d`` covers ``(2d + 1) x (2d + 1)`` pixels with 9 weights.

Both trunks return their stage outputs as a list (finest first) and keep the parameter layout of
torchvision's classification networks, so ImageNet (and torchvision segmentation) checkpoints fit:
the ResNet with identical names (``conv1, bn1, layer1..4``), MobileNetV3 through the key map in
:meth:`MobileNetV3Large.torchvision_module_map`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvNormAct",
    "InvertedResidual",
    "MobileNetV3Large",
    "ResNet",
    "SqueezeExcitation",
    "TRUNKS",
    "build_trunk",
    "make_divisible",
    "resnet",
]


class ConvNormAct(nn.Module):
    """``conv (no bias) -> BatchNorm -> activation``; ``padding = dilation * (k - 1) / 2`` keeps the
    size at stride 1. ``act=None`` leaves the activation out (linear bottleneck projections)."""

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


# ---------------------------------------------------------------------------------------------------
# ResNet
# ---------------------------------------------------------------------------------------------------
def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Projection shortcut (1x1 conv + BN); a ``Sequential`` so keys read ``downsample.0/.1``."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projection) shortcut (ResNet-18/34).

    ``first_dilation`` is the dilation of the first conv, ``dilation`` of the second: the first block
    of a dilated stage keeps the previous stage's dilation so the transition is gradual (the scheme
    of torchvision's ``replace_stride_with_dilation``; torchvision itself does not dilate BasicBlocks).
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None):
        super().__init__()
        d1 = dilation if first_dilation is None else first_dilation
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=d1, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out, stride) if stride != 1 or in_channels != out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)  # in place: no extra full-size tensor
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided / dilated) -> 1x1 expand (x4), with shortcut (ResNet-50/101).
    The stride sits on the 3x3 conv ("ResNet v1.5", torchvision's layout)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None):
        super().__init__()
        d = dilation if first_dilation is None else first_dilation
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=d, dilation=d, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out, stride) if stride != 1 or in_channels != out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)  # in place: no extra full-size tensor
        return self.relu(out)


_RESNET_SPECS: dict[int, tuple[type, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet trunk with a chosen output stride.

    Args:
        depth: 18, 34, 50 or 101.
        output_stride: 32 (plain), 16 (``layer4`` dilated 2) or 8 (``layer3`` dilated 2, ``layer4``
            dilated 4) -- torchvision's ``replace_stride_with_dilation`` = ``[False, False, True]`` /
            ``[False, True, True]``.

    ``forward(x [B, 3, H, W]) -> [c2, c3, c4, c5]``, the outputs of ``layer1..layer4`` with
    ``out_channels`` channels and strides ``strides`` (e.g. ``4, 8, 8, 8`` at output stride 8). Each
    strided layer computes ``ceil(n / 2)``, so any input size works.
    """

    def __init__(self, depth: int = 50, output_stride: int = 32):
        super().__init__()
        if depth not in _RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(_RESNET_SPECS)}, got {depth}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, counts = _RESNET_SPECS[depth]
        dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[output_stride]
        self.depth = depth
        self.output_stride = output_stride
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch, dilation, stride_now = 64, 1, 4
        strides, channels = [], []
        layers = []
        for k, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
            stride = 1 if k == 0 else 2
            previous = dilation
            if k > 0 and dilate[k - 1]:
                dilation *= stride
                stride = 1
            blocks = [block(in_ch, planes, stride, dilation, first_dilation=previous)]
            in_ch = planes * block.expansion
            blocks += [block(in_ch, planes, 1, dilation) for _ in range(1, n)]
            layers.append(nn.Sequential(*blocks))
            stride_now *= stride
            strides.append(stride_now)
            channels.append(in_ch)
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels: list[int] = channels
        self.strides: list[int] = strides
        for m in self.modules():  # He init (fan_out) and unit BN, as torchvision initialises ResNets
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]

    def torchvision_module_map(self) -> dict[str, str]:
        """Module names here -> in ``torchvision.models.resnetXX`` (identical; ``fc`` is not kept)."""
        return {n: n for n, m in self.named_modules() if n and not list(m.children())}


def resnet(depth: int = 50, output_stride: int = 32) -> ResNet:
    """Shorthand for :class:`ResNet`."""
    return ResNet(depth, output_stride)


# ---------------------------------------------------------------------------------------------------
# MobileNetV3-Large
# ---------------------------------------------------------------------------------------------------
def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class SqueezeExcitation(nn.Module):
    """Channel attention: global average -> 1x1 ``fc1`` -> ReLU -> 1x1 ``fc2`` -> hard-sigmoid -> scale x."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.relu(self.fc1(s))))


_BN = dict(bn_eps=1e-3, bn_momentum=0.01)  # MobileNetV3's BatchNorm settings


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: 1x1 ``expand`` -> k x k ``depthwise`` (strided or dilated) -> optional
    ``se`` -> linear 1x1 ``project``; residual when the shape is kept. A dilated block keeps stride 1."""

    def __init__(self, in_channels: int, kernel: int, expanded: int, out_channels: int, use_se: bool,
                 activation: str, stride: int, dilation: int = 1):
        super().__init__()
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        self.expand = ConvNormAct(in_channels, expanded, 1, act=act, **_BN) if expanded != in_channels else None
        self.depthwise = ConvNormAct(expanded, expanded, kernel, stride=1 if dilation > 1 else stride,
                                     dilation=dilation, groups=expanded, act=act, **_BN)
        self.se = SqueezeExcitation(expanded, make_divisible(expanded // 4, 8)) if use_se else None
        self.project = ConvNormAct(expanded, out_channels, 1, act=None, **_BN)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        if self.use_residual:
            y += x  # in place: y is this block's own fresh output
        return y

    def torchvision_module_map(self) -> dict[str, str]:
        """Names here -> inside torchvision's ``InvertedResidual`` (a ``block`` Sequential)."""
        out, j = {}, 0
        for name in ("expand", "depthwise", "se", "project"):
            mod = getattr(self, name)
            if mod is None:
                continue
            if name == "se":
                out.update({"se.fc1": f"block.{j}.fc1", "se.fc2": f"block.{j}.fc2"})
            else:
                out.update({f"{name}.conv": f"block.{j}.0", f"{name}.bn": f"block.{j}.1"})
            j += 1
        return out


#: (in, kernel, expanded, out, SE, activation, stride) of MobileNetV3-Large (Howard et al. 2019, Table 1)
_LARGE = [
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
]


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large feature trunk (no classifier).

    Positions (torchvision's ``features`` numbering): 0 = ``stem`` (3x3 s2, 16 ch), 1..15 =
    ``blocks[0..14]``, 16 = ``last`` (1x1 to 960 ch). ``dilated=True`` turns the last stride-2 block
    (position 13) into stride 1 with dilation 2 for the last three blocks: output stride 16.

    Args:
        taps: positions whose outputs :meth:`forward` returns, increasing. The default ``(4, 16)`` is
            what torchvision's segmentation models tap: position 4, the *first* block at stride 8
            (40 ch, "low"), and position 16, the last conv (960 ch, stride 16 when dilated, "high").
    """

    def __init__(self, dilated: bool = True, taps: Sequence[int] = (4, 16)):
        super().__init__()
        taps = tuple(int(t) for t in taps)
        if not taps or list(taps) != sorted(set(taps)) or taps[0] < 0 or taps[-1] > len(_LARGE) + 1:
            raise ValueError(f"taps must be increasing positions in 0..{len(_LARGE) + 1}, got {taps}")
        self.taps = taps
        self.stem = ConvNormAct(3, 16, 3, stride=2, act=nn.Hardswish, **_BN)
        blocks, channels, strides = [], [16], [2]
        stride_now = 2
        for i, (cin, k, exp, cout, se, act, s) in enumerate(_LARGE):
            d = 2 if dilated and i >= 12 else 1  # the C4 stage (from the last stride-2 block on)
            blocks.append(InvertedResidual(cin, k, exp, cout, se, act, s, d))
            if s == 2 and d == 1:
                stride_now *= 2
            channels.append(cout)
            strides.append(stride_now)
        self.blocks = nn.ModuleList(blocks)
        self.last = ConvNormAct(160, 960, 1, act=nn.Hardswish, **_BN)
        channels.append(960)
        strides.append(stride_now)
        self.out_channels: list[int] = [channels[t] for t in taps]
        self.strides: list[int] = [strides[t] for t in taps]
        for m in self.modules():  # torchvision's MobileNetV3 initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = self.stem(x)
        if 0 in self.taps:
            out.append(x)
        last_tap = self.taps[-1]
        for pos, block in enumerate(self.blocks, start=1):
            if pos > last_tap:
                return out
            x = block(x)
            if pos in self.taps:
                out.append(x)
        if last_tap == len(self.blocks) + 1:
            out.append(self.last(x))
        return out

    def torchvision_module_map(self) -> dict[str, str]:
        """Module names here -> in ``torchvision.models.mobilenet_v3_large().features``."""
        out = {"stem.conv": "0.0", "stem.bn": "0.1", "last.conv": f"{len(self.blocks) + 1}.0",
               "last.bn": f"{len(self.blocks) + 1}.1"}
        for i, block in enumerate(self.blocks):
            out.update({f"blocks.{i}.{k}": f"{i + 1}.{v}" for k, v in block.torchvision_module_map().items()})
        return out


# ---------------------------------------------------------------------------------------------------
# Choosing a trunk by name
# ---------------------------------------------------------------------------------------------------
TRUNKS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")


def build_trunk(name: str, output_stride: int = 8) -> nn.Module:
    """A trunk by name with the requested output stride.

    ``resnet{18,34,50,101}`` return ``[c2, c3, c4, c5]`` (output stride 8, 16 or 32);
    ``mobilenet_v3_large`` returns ``[low (stride 8, 40 ch), high (960 ch)]`` with output stride 16
    (dilated) or 32. In both cases ``features[-1]`` feeds the main head and ``features[-2]`` the
    auxiliary head, as in torchvision's segmentation models. Attributes ``out_channels`` and ``strides``
    describe the returned maps.
    """
    if name.startswith("resnet") and name[6:].isdigit():
        return ResNet(int(name[6:]), output_stride)
    if name == "mobilenet_v3_large":
        if output_stride not in (16, 32):
            raise ValueError(f"mobilenet_v3_large supports output_stride 16 or 32, got {output_stride}")
        return MobileNetV3Large(dilated=output_stride == 16, taps=(4, 16))
    raise ValueError(f"unknown trunk {name!r}; expected one of {TRUNKS}")
