"""The building blocks of ultralytics' YOLOv8 (2023) and YOLO11 (2024) detectors.

Every block is named and wired as in ultralytics' ``nn/modules`` (children ``conv`` / ``bn``, ``cv1``,
``cv2``, ``m``, ...), so that their state-dict keys below a layer index are the same and the
checkpoint mapping only renames the layer prefix (:mod:`sceneparse.models.yolo.checkpoints`).

Facts (ultralytics' source and YAMLs):

* ``Conv``: ``conv (no bias, 'same' padding k // 2) -> BatchNorm (eps 1e-3, momentum 0.03) -> SiLU``.
* ``Bottleneck(c1, c2, shortcut, k=(3, 3), e)``: two Convs with ``int(c2 e)`` hidden channels, a
  residual when ``shortcut and c1 == c2``.
* ``C2f`` (YOLOv8, "CSP bottleneck with 2 convolutions, faster"): ``cv1`` (1x1) to ``2c`` channels,
  split in two halves, ``n`` bottlenecks chained on the second half, every intermediate output
  concatenated (``(2 + n) c`` channels) and fused by ``cv2`` (1x1).
* ``C3k2`` (YOLO11): C2f whose inner blocks are ``Bottleneck(e=0.5)`` or, with ``c3k``, ``C3k``
  (a C3 -- two 1x1 branches, ``n = 2`` 3x3 bottlenecks on one, concat, 1x1 -- of its own).
* ``SPPF``: 1x1 to ``c1 / 2`` (with SiLU in v8 / 11: ultralytics builds their YAML rows so; only
  YOLO26's is linear), three chained 5x5 max-pools (= SPP with 5/9/13),
  the four maps concatenated, 1x1.
* ``C2PSA`` (YOLO11): 1x1 to ``2c`` channels, split; ``n`` PSA blocks on one half (multi-head
  self-attention over all positions with ``key_dim = head_dim / 2``, a 3x3 depthwise positional
  encoding of the values, then a 2x-wide 1x1 feed-forward; both residual), concat, 1x1.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

#: BatchNorm settings of every ultralytics YOLO (``initialize_weights``)
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def make_divisible(x: float, divisor: int = 8) -> int:
    """The smallest multiple of ``divisor`` that is >= ``x`` (how ultralytics scales channel widths)."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """``Conv2d(k, s, padding k // 2, groups g, no bias) -> BatchNorm2d -> SiLU`` (``act=False``: no activation)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(Conv):
    """Depthwise Conv: ``groups = gcd(c1, c2)`` (= ``c1`` when ``c1 == c2``)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, act: bool = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), act=act)


class Bottleneck(nn.Module):
    """``x (+) cv2(cv1(x))``: two k x k Convs through ``int(c2 e)`` channels; residual iff ``shortcut and c1 == c2``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, k: tuple[int, int] = (3, 3), e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0])
        self.cv2 = Conv(c_, c2, k[1])
        self.add = bool(shortcut and c1 == c2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions (YOLOv8): ``c = int(c2 e)``; ``cv1`` -> ``[a, b]``; ``b`` through
    ``n`` bottlenecks, keeping every output; ``cv2(cat(a, b, m1, ..., mn))``."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, (3, 3), 1.0) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class C3k(nn.Module):
    """C3 block (CSP with three convolutions) with ``n`` k x k bottlenecks: ``cv3(cat(m(cv1 x), cv2 x))``."""

    def __init__(self, c1: int, c2: int, n: int = 2, shortcut: bool = True, e: float = 0.5, k: int = 3):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c1, c_, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, (k, k), 1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k2(C2f):
    """YOLO11's C2f: inner blocks ``C3k(c, c, 2)`` when ``c3k`` else ``Bottleneck(c, c, e=0.5)``."""

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, shortcut: bool = True):
        super().__init__(c1, c2, n, shortcut, e)
        self.m = nn.ModuleList(C3k(self.c, self.c, 2, shortcut) if c3k else Bottleneck(self.c, self.c, shortcut)
                               for _ in range(n))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: ``cv2(cat(y, p(y), p(p(y)), p(p(p(y)))))`` with ``y = cv1(x)``, ``p`` a
    k x k stride-1 max-pool (three 5x5 pools = SPP's 5/9/13 windows)."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Attention(nn.Module):
    """Multi-head self-attention over the ``H W`` positions of a map (YOLO11's PSA).

    ``qkv`` (1x1, no activation) gives per head ``key_dim`` query and key channels and ``head_dim =
    dim / heads`` value channels (``key_dim = head_dim * attn_ratio``); ``softmax(q^T k / sqrt(key_dim))``
    weights the values, a 3x3 depthwise conv of the values (``pe``) is added, ``proj`` (1x1) mixes.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, g=dim, act=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        attn = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # [b, heads, N, N]
        y = (v @ attn.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(y)


class PSABlock(nn.Module):
    """``x + attn(x)`` then ``x + ffn(x)`` (``ffn``: 1x1 to ``2c`` with SiLU, 1x1 back without)."""

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True):
        super().__init__()
        self.attn = Attention(c, num_heads=num_heads, attn_ratio=attn_ratio)
        self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))
        self.add = shortcut

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """CSP block with ``n`` PSA blocks (``max(c / 64, 1)`` heads) on half of the channels (YOLO11)."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA keeps the channel count, got {c1} -> {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


def dfl_expectation(box_logits: Tensor, reg_max: int = 16) -> Tensor:
    """Distribution Focal Loss decoding (Li et al., *Generalized Focal Loss*, 2020): each box side is a
    distribution over the ``reg_max`` integer distances ``0..reg_max-1`` (in stride units); its value is
    the expectation ``sum_i softmax(logits)_i * i``. ``[B, 4 reg_max, A]`` -> ``[B, 4, A]`` (l, t, r, b)."""
    b, _, a = box_logits.shape
    probs = box_logits.view(b, 4, reg_max, a).softmax(2)
    bins = torch.arange(reg_max, dtype=probs.dtype, device=probs.device)
    return (probs * bins.view(1, 1, reg_max, 1)).sum(2)


def anchor_points(sizes: Sequence[tuple[int, int]], strides: Sequence[int], dtype: torch.dtype,
                  device: torch.device) -> tuple[Tensor, Tensor]:
    """Cell centres of every level, in grid units (``x + 0.5, y + 0.5``, row-major per level), and the
    stride of each: ``([A, 2], [A, 1])`` with ``A = sum h w``."""
    points, stride_col = [], []
    for (h, w), s in zip(sizes, strides):
        sy, sx = torch.meshgrid(torch.arange(h, device=device, dtype=dtype) + 0.5,
                                torch.arange(w, device=device, dtype=dtype) + 0.5, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_col.append(torch.full((h * w, 1), float(s), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_col)


__all__ = ["BN_EPS", "BN_MOMENTUM", "C2PSA", "C2f", "C3k", "C3k2", "Attention", "Bottleneck", "Conv", "DWConv",
           "PSABlock", "SPPF", "anchor_points", "dfl_expectation", "make_divisible"]
