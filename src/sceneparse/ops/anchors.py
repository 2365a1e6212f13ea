"""Anchor boxes (Faster R-CNN sec. 3.1.1; FPN sec. 4.1): a fixed set of reference boxes at every
feature-map location, against which the RPN / dense heads regress (see :mod:`.box_coder`).

Per pyramid level ``l`` the *cell anchors* are the ``A = len(sizes[l]) * len(aspect_ratios[l])``
zero-centred boxes with area ``size^2`` and ``aspect ratio = height / width``; they are rounded to
integer pixels exactly as torchvision does. *Grid anchors* shift them by ``(x * stride_x, y * stride_y)``
for every location; the output is ordered location-major (row, then column), then anchor, i.e.
row ``(y * W + x) * A + a`` -- the order in which a head's ``[B, A*4, H, W]`` output is flattened
after ``permute(0, 2, 3, 1)``. The anchor of location ``(0, 0)`` is centred on the image origin
(torchvision's convention, kept so that pretrained torchvision detectors see the same anchors).

Numerically identical to ``torchvision.models.detection.anchor_utils.AnchorGenerator``. A plain
object, not an ``nn.Module``: it holds no learnable state and nothing to save in a checkpoint.
RetinaNet-style anchors (scales ``2^(k/3)`` per octave) are just other ``sizes``: see
:func:`octave_sizes`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["AnchorGenerator", "octave_sizes"]


def octave_sizes(base_sizes: Sequence[float] = (32, 64, 128, 256, 512),
                 scales_per_octave: int = 3) -> tuple[tuple[float, ...], ...]:
    """Per-level sizes ``base * 2^(k / scales_per_octave)``, ``k = 0..scales_per_octave-1`` (RetinaNet)."""
    if scales_per_octave < 1:
        raise ValueError(f"scales_per_octave must be >= 1, got {scales_per_octave}")
    return tuple(tuple(float(b) * 2 ** (k / scales_per_octave) for k in range(scales_per_octave))
                 for b in base_sizes)


class AnchorGenerator:
    """Anchors for a list of feature levels.

    ``sizes[l]`` and ``aspect_ratios[l]`` list the anchor sizes (sqrt of the area, in input-image
    pixels) and aspect ratios (h / w) of level ``l``; both must have one entry per level. A flat tuple
    of sizes means one size per level (torchvision's shorthand); a flat tuple of ratios (the default
    ``(0.5, 1, 2)``) is used for every level.
    """

    def __init__(self, sizes: Sequence[Sequence[float]] | Sequence[float] = ((32,), (64,), (128,), (256,), (512,)),
                 aspect_ratios: Sequence[Sequence[float]] | Sequence[float] = (0.5, 1.0, 2.0)) -> None:
        if len(sizes) == 0:
            raise ValueError("sizes must name at least one level")
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"sizes and aspect_ratios need one entry per level, got {len(sizes)} and "
                             f"{len(aspect_ratios)}")
        for level, (s, r) in enumerate(zip(sizes, aspect_ratios)):
            if len(s) == 0 or len(r) == 0 or any(v <= 0 for v in s) or any(v <= 0 for v in r):
                raise ValueError(f"level {level}: sizes {s!r} and aspect ratios {r!r} must be non-empty and positive")
        self.sizes: tuple[tuple[float, ...], ...] = tuple(tuple(s) for s in sizes)
        self.aspect_ratios: tuple[tuple[float, ...], ...] = tuple(tuple(r) for r in aspect_ratios)

    def __repr__(self) -> str:
        return f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios})"

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def num_anchors_per_location(self) -> list[int]:
        """``A`` of each level: ``len(sizes[l]) * len(aspect_ratios[l])``."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def cell_anchors(self, level: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> Tensor:
        """Zero-centred anchors ``[A, 4]`` of one level, ratio-major (all sizes of ratio 0, then ratio 1...).

        Width ``size / sqrt(ratio)``, height ``size * sqrt(ratio)``; the corners ``(-w/2, -h/2, w/2, h/2)``
        are rounded half-to-even, computed in float32 first as torchvision does, then cast to ``dtype``.
        """
        if not 0 <= level < self.num_levels:
            raise IndexError(f"level {level} out of range for {self.num_levels} levels")
        scales = torch.as_tensor(self.sizes[level], dtype=torch.float32)
        ratios = torch.as_tensor(self.aspect_ratios[level], dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round().to(dtype=dtype, device=device)

    def grid_anchors(self, feature_sizes: Sequence[tuple[int, int]], strides: Sequence[tuple[int, int]],
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[Tensor]:
        """Anchors ``[h*w*A, 4]`` per level for feature maps of ``(h, w)`` with strides ``(sy, sx)`` pixels.

        Row ``(y * w + x) * A + a`` is cell anchor ``a`` shifted by ``(x * sx, y * sy)``.
        """
        if len(feature_sizes) != self.num_levels or len(strides) != self.num_levels:
            raise ValueError(f"this generator has {self.num_levels} levels but got {len(feature_sizes)} feature "
                             f"sizes and {len(strides)} strides")
        out = []
        for level, ((h, w), (sy, sx)) in enumerate(zip(feature_sizes, strides)):
            cell = self.cell_anchors(level, dtype=dtype, device=device)
            shift_x = _shifts(w, sx, device, dtype)
            shift_y = _shifts(h, sy, device, dtype)
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            xx, yy = xx.reshape(-1), yy.reshape(-1)
            shifts = torch.stack((xx, yy, xx, yy), dim=1)
            out.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))
        return out

    def __call__(self, image_size_padded: tuple[int, int], feature_sizes: Sequence[tuple[int, int]],
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> list[Tensor]:
        """Anchors per level for a padded batch of ``(H, W)`` pixels and feature maps of ``(h, w)``.

        The stride of a level is ``(H // h, W // w)`` (integer division, as torchvision). Every image
        of the padded batch shares these anchors. While tracing (graph export) the sizes are 0-dim
        int64 tensors and strides and grids are computed in the graph, so it holds for any input size.
        """
        if torch.jit.is_tracing():
            H, W = image_size_padded
            strides = [(H // h, W // w) for h, w in feature_sizes]
            return self.grid_anchors(feature_sizes, strides, device=device, dtype=dtype)
        H, W = (int(v) for v in image_size_padded)
        strides = []
        for h, w in feature_sizes:
            if h <= 0 or w <= 0 or h > H or w > W:
                raise ValueError(f"feature size {(h, w)} does not fit the padded image size {(H, W)}")
            strides.append((H // int(h), W // int(w)))
        return self.grid_anchors(feature_sizes, strides, device=device, dtype=dtype)


def _shifts(n: int, stride: int | float, device, dtype: torch.dtype) -> Tensor:
    """``arange(n) * stride``; exact integer arithmetic for integer strides (as torchvision).
    ``n`` and ``stride`` may be traced 0-dim int64 tensors (graph export)."""
    if isinstance(stride, Tensor) and not stride.is_floating_point():
        return (torch.arange(n, dtype=torch.int64, device=device) * stride).to(dtype)
    n = int(n)
    if float(stride).is_integer():
        return (torch.arange(n, dtype=torch.int64, device=device) * int(stride)).to(dtype)
    return torch.arange(n, dtype=dtype, device=device) * float(stride)
