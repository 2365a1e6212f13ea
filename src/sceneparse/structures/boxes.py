"""Box conversions and geometry. Works on ``torch.Tensor`` or ``numpy.ndarray`` ``[..., 4]``.

The result has the type of the input (tensor in, tensor out). See :mod:`sceneparse.conventions`
for the coordinate rule (``area = w * h``, no ``+1``).

Integer boxes stay exact: what needs no division (XYXY <-> XYWH, :func:`area`, :func:`hflip`, ...)
keeps the integer dtype, and what divides (conversions from or to CXCYWH, :func:`normalize`) is
computed in float64 for integer tensors -- as numpy does for integer arrays -- never in float32.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from ..conventions import BoxFormat

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _stack(parts, like):
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def _check(boxes) -> None:
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape [..., 4], got {tuple(boxes.shape)}")


def _divisible(boxes):
    """Integer tensors as float64 before a division (torch divides them in float32); numpy already
    divides integer arrays in float64, floating inputs are kept."""
    if isinstance(boxes, torch.Tensor) and not (boxes.is_floating_point() or boxes.is_complex()):
        return boxes.double()
    return boxes


def convert(boxes: ArrayT, src: BoxFormat | str, dst: BoxFormat | str) -> ArrayT:
    """Convert ``[..., 4]`` boxes between :class:`BoxFormat` layouts."""
    src, dst = BoxFormat.parse(src), BoxFormat.parse(dst)
    _check(boxes)
    if src == dst:
        return boxes.clone() if isinstance(boxes, torch.Tensor) else boxes.copy()
    if BoxFormat.CXCYWH in (src, dst):  # halves sizes or sums
        boxes = _divisible(boxes)
    a, b, c, d = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    if src == BoxFormat.XYWH:
        x0, y0, x1, y1 = a, b, a + c, b + d
    elif src == BoxFormat.CXCYWH:
        x0, y0, x1, y1 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    else:
        x0, y0, x1, y1 = a, b, c, d
    if dst == BoxFormat.XYXY:
        return _stack([x0, y0, x1, y1], boxes)
    if dst == BoxFormat.XYWH:
        return _stack([x0, y0, x1 - x0, y1 - y0], boxes)
    return _stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], boxes)


def normalize(boxes: ArrayT, image_size: tuple[int, int]) -> ArrayT:
    """Absolute pixels -> fractions of the image. ``image_size`` is ``(height, width)``.
    Valid for XYXY and CXCYWH / XYWH alike (x-like coordinates at even positions)."""
    boxes = _divisible(boxes)
    h, w = image_size
    scale = [w, h, w, h]
    scale = torch.tensor(scale, dtype=boxes.dtype, device=boxes.device) if isinstance(boxes, torch.Tensor) \
        else np.asarray(scale, dtype=boxes.dtype)
    return boxes / scale


def denormalize(boxes: ArrayT, image_size: tuple[int, int]) -> ArrayT:
    """Fractions of the image -> absolute pixels. ``image_size`` is ``(height, width)``."""
    h, w = image_size
    scale = [w, h, w, h]
    scale = torch.tensor(scale, dtype=boxes.dtype, device=boxes.device) if isinstance(boxes, torch.Tensor) \
        else np.asarray(scale, dtype=boxes.dtype)
    return boxes * scale


def area(boxes: ArrayT) -> ArrayT:
    """Area of XYXY boxes (``w * h``; negative sizes give 0)."""
    _check(boxes)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    if isinstance(boxes, torch.Tensor):
        return w.clamp(min=0) * h.clamp(min=0)
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def clip(boxes: ArrayT, image_size: tuple[int, int]) -> ArrayT:
    """Clip XYXY boxes to ``[0, W] x [0, H]``; ``image_size`` is ``(height, width)``."""
    _check(boxes)
    h, w = image_size
    if isinstance(boxes, torch.Tensor):
        if isinstance(w, torch.Tensor):  # traced sizes (graph export)
            h, w = h.to(boxes.dtype), w.to(boxes.dtype)
        x = boxes[..., 0::2].clamp(0, w)
        y = boxes[..., 1::2].clamp(0, h)
        return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
    x = np.clip(boxes[..., 0::2], 0, w)
    y = np.clip(boxes[..., 1::2], 0, h)
    return np.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def scale(boxes: ArrayT, sx: float, sy: float | None = None) -> ArrayT:
    """Scale XYXY boxes by ``sx`` horizontally and ``sy`` (default ``sx``) vertically."""
    _check(boxes)
    sy = sx if sy is None else sy
    f = [sx, sy, sx, sy]
    f = torch.tensor(f, dtype=boxes.dtype, device=boxes.device) if isinstance(boxes, torch.Tensor) \
        else np.asarray(f, dtype=boxes.dtype)
    return boxes * f


def translate(boxes: ArrayT, dx: float, dy: float) -> ArrayT:
    _check(boxes)
    f = [dx, dy, dx, dy]
    f = torch.tensor(f, dtype=boxes.dtype, device=boxes.device) if isinstance(boxes, torch.Tensor) \
        else np.asarray(f, dtype=boxes.dtype)
    return boxes + f


def is_valid(boxes: ArrayT, min_size: float = 0.0) -> ArrayT:
    """Boolean ``[...]``: finite and strictly wider/taller than ``min_size``."""
    _check(boxes)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    if isinstance(boxes, torch.Tensor):
        return torch.isfinite(boxes).all(dim=-1) & (w > min_size) & (h > min_size)
    return np.isfinite(boxes).all(axis=-1) & (w > min_size) & (h > min_size)


def inside(boxes: ArrayT, image_size: tuple[int, int], tol: float = 0.0) -> ArrayT:
    """Boolean ``[...]``: the box lies inside ``[0, W] x [0, H]`` (with tolerance ``tol`` px)."""
    h, w = image_size
    return (boxes[..., 0] >= -tol) & (boxes[..., 1] >= -tol) & (boxes[..., 2] <= w + tol) & (boxes[..., 3] <= h + tol)


def hflip(boxes: ArrayT, width: int) -> ArrayT:
    """Mirror XYXY boxes horizontally inside an image of the given width."""
    _check(boxes)
    x0 = width - boxes[..., 2]
    x1 = width - boxes[..., 0]
    return _stack([x0, boxes[..., 1], x1, boxes[..., 3]], boxes)
