"""Corner pooling (CornerNet, Law and Deng, 2018, sec. 3.4): a corner of a box usually lies outside
the object, so a local feature cannot see it. Corner pooling gives each location the maximum of a
feature map over all locations from it to the border in one direction.

For the top-left corner at ``(i, j)`` the object lies below and to the right, so CornerNet max-pools
the first map ``f_t`` over the rows ``i..H-1`` (``t_ij = max(f_t_ij, t_(i+1)j)``: "top pooling",
scanning from the bottom border up) and the second map ``f_l`` over the columns ``j..W-1`` ("left
pooling", from the right border leftwards), and adds them: ``top_left_pool(f_t, f_l) = t + l``. The
bottom-right corner mirrors it: "bottom pooling" over rows ``0..i`` and "right pooling" over columns
``0..j``. The names are those of the reference implementation (``TopPool`` etc.): a pooling is named
after the corner side it serves, not the direction it looks.

All functions take ``[..., H, W]`` tensors (any leading dimensions) and are vectorised: eagerly a
running maximum (``cummax``) along the flipped axis; inside a trace (ONNX export, which has no
``cummax``) maxima of the map and its copy shifted by ``1, 2, 4, ...`` (doubling: after step ``s``
each location holds the maximum of the ``2^s`` locations from it onwards; :data:`TRACED_STEPS`
rounds). Both give the same values; the gradient reaches the location of the maximum (ties are a sub-gradient choice).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["top_pool", "left_pool", "bottom_pool", "right_pool", "top_left_pool", "bottom_right_pool"]


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


#: Doubling steps of the traced form: enough for maps up to ``2^12 = 4096`` cells along an axis (a
#: 16k px image at stride 4), so a graph traced at one size stays right at any other (dynamic axes).
TRACED_STEPS = 12


def _suffix_max_doubling(x: Tensor, dim: int, steps: int | None = None) -> Tensor:
    """``out[..., i, ...] = max(x[..., i:, ...])`` along ``dim`` by doubling: ``steps`` rounds (default
    ``ceil(log2 n)``) of ``max(y, y shifted by 2^s towards the start)``, the shifted copy padded with
    ``-inf`` at the end (a shift past the border is a no-op). Pad, slice and maximum only, with no
    size of ``x`` frozen into them: traceable and exportable with dynamic axes."""
    n = x.shape[dim]
    if steps is None:
        steps = max(int(n - 1).bit_length(), 0)
    dim = dim % x.ndim
    y = x
    for s in range(steps):
        shift = 1 << s
        pad = [0, 0] * (x.ndim - 1 - dim) + [0, shift]  # F.pad lists the last dimension first
        shifted = _drop_front(F.pad(y, pad, value=float("-inf")), dim, shift)
        y = torch.maximum(y, shifted)
    return y


def _drop_front(x: Tensor, dim: int, k: int) -> Tensor:
    """``x`` without its first ``k`` entries along ``dim`` (an open-ended slice: no size in the trace)."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(k, None)
    return x[tuple(index)]


def _suffix_max(x: Tensor, dim: int) -> Tensor:
    """Running maximum from each index to the end of ``dim``."""
    if _tracing():
        return _suffix_max_doubling(x, dim, TRACED_STEPS)
    return x.flip(dim).cummax(dim).values.flip(dim)


def _prefix_max(x: Tensor, dim: int) -> Tensor:
    """Running maximum from the start of ``dim`` to each index."""
    if _tracing():
        return _suffix_max_doubling(x.flip(dim), dim, TRACED_STEPS).flip(dim)
    return x.cummax(dim).values


def top_pool(x: Tensor) -> Tensor:
    """``out[..., i, j] = max_{k >= i} x[..., k, j]`` (the top side of a box: looks down to the bottom border)."""
    return _suffix_max(x, -2)


def left_pool(x: Tensor) -> Tensor:
    """``out[..., i, j] = max_{k >= j} x[..., i, k]`` (the left side: looks right to the right border)."""
    return _suffix_max(x, -1)


def bottom_pool(x: Tensor) -> Tensor:
    """``out[..., i, j] = max_{k <= i} x[..., k, j]`` (the bottom side: looks up to the top border)."""
    return _prefix_max(x, -2)


def right_pool(x: Tensor) -> Tensor:
    """``out[..., i, j] = max_{k <= j} x[..., i, k]`` (the right side: looks left to the left border)."""
    return _prefix_max(x, -1)


def top_left_pool(f_top: Tensor, f_left: Tensor) -> Tensor:
    """CornerNet's top-left corner pooling: ``top_pool(f_top) + left_pool(f_left)`` (same shapes)."""
    return top_pool(f_top) + left_pool(f_left)


def bottom_right_pool(f_bottom: Tensor, f_right: Tensor) -> Tensor:
    """CornerNet's bottom-right corner pooling: ``bottom_pool(f_bottom) + right_pool(f_right)``."""
    return bottom_pool(f_bottom) + right_pool(f_right)
