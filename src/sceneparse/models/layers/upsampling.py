"""In-network upsampling: unpooling, interpolation and transposed convolution.

A segmentation network downsamples (pooling, strided convolution) to see context cheaply and has to
come back to full resolution to label every pixel. The lecture names five ways back up, all here:

* **Bed of nails** unpooling: each input value goes to the top-left corner of its ``s x s`` output
  cell, the rest of the cell is zero.
* **Nearest-neighbour** unpooling: each input value fills its whole ``s x s`` output cell.
* **Max unpooling**: a max-pool remembers *where* each maximum came from
  (:func:`max_pool_with_indices`); the paired unpooling puts the value back at that position and
  zeros elsewhere (SegNet, DeconvNet: "pair each downsampling layer with an upsampling layer").
* **Bilinear / bicubic interpolation** (fixed weights, :func:`interpolate`): bilinear uses the 2
  nearest neighbours per axis with weights ``max(0, 1 - |x - i|)``; bicubic uses 4 with the Keys
  cubic-convolution kernel (``a = -0.75``, PyTorch's and OpenCV's choice).
* **Transposed convolution** (learnable, :class:`TransposedConv2d`): every input value scales a copy
  of the filter that is added into the output, the filter moving ``stride`` output pixels per input
  pixel; overlaps are summed. It is multiplication by the *transpose* of the matrix of the matching
  convolution (:func:`conv1d_matrix`), hence the name (not a "deconvolution": it does not invert
  anything).

``align_corners`` semantics (interpolation and every resize in sceneparse):

* ``align_corners=False`` (the default everywhere in sceneparse, as in torchvision's segmentation
  models): pixels are unit squares and their *centres* are aligned; output pixel ``o`` samples the
  input at ``x = (o + 0.5) * in / out - 0.5``, clamped at the borders. Upsampling ``[[1, 2], [3, 4]]``
  to 4x4 gives the lecture's table ``1.00 1.25 1.75 2.00 / 1.50 1.75 2.25 2.50 / ...``. Resizing
  by ``s`` and back maps pixel areas onto pixel areas, which is what image <-> feature-map scaling needs.
* ``align_corners=True``: the *corner pixels' centres* are aligned; ``x = o * (in - 1) / (out - 1)``.
  The corner values are reproduced exactly, but the sampling grid is not a uniform scaling of
  pixel areas (a 2x upsampling is not exactly "scale by 2").
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BedOfNailsUnpool",
    "Interpolate",
    "MaxPoolWithIndices",
    "MaxUnpool",
    "NearestUnpool",
    "TransposedConv2d",
    "bed_of_nails_unpool",
    "bilinear_kernel",
    "conv1d_matrix",
    "interpolate",
    "max_pool_with_indices",
    "max_unpool",
    "nearest_unpool",
    "transposed_conv_output_size",
]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


# ---------------------------------------------------------------------------------------------------
# Unpooling (no parameters)
# ---------------------------------------------------------------------------------------------------
def bed_of_nails_unpool(x: torch.Tensor, scale: int | Sequence[int] = 2) -> torch.Tensor:
    """Bed-of-nails unpooling: ``[..., H, W] -> [..., sy*H, sx*W]``.

    ``out[..., sy*i, sx*j] = x[..., i, j]`` and every other output pixel is 0.
    """
    sy, sx = _pair(scale)
    if sy < 1 or sx < 1:
        raise ValueError(f"unpooling scale must be >= 1, got {(sy, sx)}")
    h, w = x.shape[-2:]
    out = x.new_zeros(*x.shape[:-2], h * sy, w * sx)
    out[..., ::sy, ::sx] = x
    return out


def nearest_unpool(x: torch.Tensor, scale: int | Sequence[int] = 2) -> torch.Tensor:
    """Nearest-neighbour unpooling: ``[..., H, W] -> [..., sy*H, sx*W]``, ``out[..., i, j] = x[..., i//sy, j//sx]``."""
    sy, sx = _pair(scale)
    if sy < 1 or sx < 1:
        raise ValueError(f"unpooling scale must be >= 1, got {(sy, sx)}")
    return x.repeat_interleave(sy, dim=-2).repeat_interleave(sx, dim=-1)


def max_pool_with_indices(x: torch.Tensor, kernel_size: int | Sequence[int] = 2,
                          stride: int | Sequence[int] | None = None,
                          padding: int | Sequence[int] = 0, ceil_mode: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling that remembers where each maximum was.

    Args:
        x: ``[B, C, H, W]``.
        ceil_mode: ``ceil`` instead of ``floor`` for the output size, so that the last row/column of
            an odd-sized map is pooled (by a clipped window) rather than dropped.
    Returns:
        ``(values [B, C, h, w], indices int64 [B, C, h, w])``; ``indices`` are flat positions
        ``row * W + col`` into the *input* plane of the same ``(b, c)``, the layout
        :func:`max_unpool` (and ``torch.nn.functional.max_unpool2d``) expects. Ties go to the
        first maximum in row-major order.
    """
    return F.max_pool2d(x, kernel_size, stride if stride is not None else kernel_size, padding,
                        ceil_mode=ceil_mode, return_indices=True)


def max_unpool(x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """Max unpooling: put each value back where its max-pool found the maximum, zeros elsewhere.

    Args:
        x: ``[B, C, h, w]`` values to place (the pooled features after "the rest of the net").
        indices: ``int64 [B, C, h, w]`` from :func:`max_pool_with_indices` (flat ``row * W + col``).
        output_size: ``(H, W)`` of the tensor that was pooled (needed because pooling floors odd sizes).
    Returns:
        ``[B, C, H, W]``. Vectorised as one ``scatter`` over the flattened planes; if two pooling
        windows overlap (stride < kernel) and chose the same input pixel, one of the values wins.
    """
    if indices.shape != x.shape:
        raise ValueError(f"indices {tuple(indices.shape)} must have the shape of x {tuple(x.shape)}")
    if torch.jit.is_tracing():  # graph export: sizes stay traced, no data-dependent check
        oh, ow = output_size[-2], output_size[-1]
    else:
        oh, ow = int(output_size[-2]), int(output_size[-1])
    if not torch.jit.is_tracing() and indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= oh * ow):
        raise ValueError(f"pooling indices out of range for output size {(oh, ow)}")
    flat = x.new_zeros(*x.shape[:-2], oh * ow)
    flat = flat.scatter(-1, indices.flatten(-2), x.flatten(-2))
    return flat.view(*x.shape[:-2], oh, ow)


class BedOfNailsUnpool(nn.Module):
    """Module form of :func:`bed_of_nails_unpool`."""

    def __init__(self, scale: int | Sequence[int] = 2):
        super().__init__()
        self.scale = _pair(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bed_of_nails_unpool(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class NearestUnpool(nn.Module):
    """Module form of :func:`nearest_unpool`."""

    def __init__(self, scale: int | Sequence[int] = 2):
        super().__init__()
        self.scale = _pair(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nearest_unpool(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class MaxPoolWithIndices(nn.Module):
    """Max pool returning ``(values, indices)``; hand ``indices`` and the input size to :class:`MaxUnpool`."""

    def __init__(self, kernel_size: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.padding = _pair(padding)
        self.ceil_mode = ceil_mode

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return max_pool_with_indices(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")


class MaxUnpool(nn.Module):
    """Module form of :func:`max_unpool`: ``forward(x, indices, output_size)``."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
        return max_unpool(x, indices, output_size)


# ---------------------------------------------------------------------------------------------------
# Interpolation (fixed weights)
# ---------------------------------------------------------------------------------------------------
_INTERP_MODES = ("nearest", "bilinear", "bicubic")


def interpolate(x: torch.Tensor, size: Sequence[int] | None = None, scale_factor: float | None = None,
                mode: str = "bilinear", align_corners: bool = False) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` feature maps by interpolation.

    ``mode``: ``"nearest"`` (``torch``'s "nearest-exact": ``src = floor((o + 0.5) * in / out)``, the
    pixel whose area contains the output pixel's centre), ``"bilinear"`` or ``"bicubic"`` (Keys kernel,
    ``a = -0.75``; overshoots, so outputs may leave the input's value range). ``align_corners`` is as
    described in the module docstring and ignored for ``"nearest"``. Exactly one of ``size`` and
    ``scale_factor``.
    """
    if mode not in _INTERP_MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; expected one of {_INTERP_MODES}")
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    if size is not None:
        size = (int(size[-2]), int(size[-1]))
    if mode == "nearest":
        return F.interpolate(x, size=size, scale_factor=scale_factor, mode="nearest-exact")
    return F.interpolate(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners)


class Interpolate(nn.Module):
    """Module form of :func:`interpolate` with a fixed ``scale_factor`` (or ``size``)."""

    def __init__(self, scale_factor: float | None = 2.0, size: Sequence[int] | None = None,
                 mode: str = "bilinear", align_corners: bool = False):
        super().__init__()
        if mode not in _INTERP_MODES:
            raise ValueError(f"unknown interpolation mode {mode!r}; expected one of {_INTERP_MODES}")
        self.scale_factor = None if size is not None else scale_factor
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}, align_corners={self.align_corners}"


# ---------------------------------------------------------------------------------------------------
# Transposed convolution (learnable)
# ---------------------------------------------------------------------------------------------------
def transposed_conv_output_size(in_size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                                output_padding: int = 0, dilation: int = 1) -> int:
    """Output length of a transposed convolution along one axis.

    ``(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1 + output_padding``; with
    ``dilation = 1`` this is the lecture's ``(in - 1) * stride - 2 * pad + kernel + output_padding``.
    ``padding`` *removes* ``padding`` pixels from each side of the full ("valid") output;
    ``output_padding`` (``< stride``) adds back rows/columns at the bottom/right, choosing among the
    ``stride`` input sizes that a strided convolution maps to the same output size.
    """
    if stride < 1 or kernel_size < 1 or dilation < 1:
        raise ValueError("stride, kernel_size and dilation must be >= 1")
    if not 0 <= output_padding < max(stride, dilation):
        raise ValueError(f"output_padding must be in [0, max(stride, dilation)), got {output_padding}")
    out = (in_size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + 1 + output_padding
    if out < 1:
        raise ValueError(f"transposed convolution gives an empty output for input size {in_size}")
    return out


def conv1d_matrix(weight: torch.Tensor, in_len: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """The matrix ``X`` of a 1-D convolution (cross-correlation, as in PyTorch): ``conv(a) = X @ a``.

    Args:
        weight: ``[k]`` filter ``(x, y, z, ...)``.
        in_len: length of the (unpadded) input ``a``.
    Returns:
        ``[out_len, in_len]`` with ``out_len = (in_len + 2 * padding - k) // stride + 1`` and
        ``X[o, i] = weight[i + padding - o * stride]`` where that index is in ``[0, k)`` (zero padding
        is folded in: padded positions simply have no column). Then the transposed convolution with
        the same filter, stride and padding is ``X.T @ b`` -- the lecture's "transposed convolution
        multiplies by the transpose of the same matrix". For ``stride = 1`` ``X.T`` is again a
        convolution matrix (flipped filter); for ``stride > 1`` it is not.
    """
    weight = torch.as_tensor(weight)
    if weight.ndim != 1:
        raise ValueError(f"weight must be [k], got {tuple(weight.shape)}")
    k = weight.shape[0]
    out_len = (in_len + 2 * padding - k) // stride + 1
    if out_len < 1:
        raise ValueError(f"convolution gives an empty output for input length {in_len}")
    o = torch.arange(out_len).unsqueeze(1)
    i = torch.arange(in_len).unsqueeze(0)
    tap = i + padding - o * stride  # [out_len, in_len] filter tap that multiplies a[i] for output o
    valid = (tap >= 0) & (tap < k)
    return torch.where(valid, weight[tap.clamp(0, k - 1)], weight.new_zeros(()))


def bilinear_kernel(kernel_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[k, k]`` bilinear-interpolation filter used to initialise an upsampling transposed convolution.

    FCN initialises its 2x / 8x / 16x / 32x "deconvolutions" so that, before training, they perform
    bilinear interpolation: for upsampling factor ``f`` the filter has ``k = 2f - f % 2`` taps with
    weight ``(1 - |i - c| / f_)`` per axis, ``f_ = ceil(k / 2)``, centred at ``c = f_ - 1`` (k odd) or
    ``f_ - 0.5`` (k even). In the layout of :meth:`TransposedConv2d.upsampling` (``stride = f``,
    ``k = 2f`` and ``padding = f / 2`` for even ``f``, ``k = 2f - 1`` and ``padding = (f - 1) / 2`` for
    odd ``f``) the transposed convolution equals ``align_corners=False`` bilinear upsampling away from
    the border (where it sees zeros instead of replicated edge values).
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    r = torch.arange(kernel_size, dtype=torch.float64)
    w1 = 1 - (r - center).abs() / factor
    return torch.outer(w1, w1).to(dtype)


class TransposedConv2d(nn.ConvTranspose2d):
    """Learnable upsampling by transposed convolution (``torch.nn.ConvTranspose2d`` numerics).

    Output size per axis: :func:`transposed_conv_output_size`. ``bilinear_init=True`` sets each
    channel's filter to :func:`bilinear_kernel` (identity across channels: output channel ``c`` only
    reads input channel ``c``; requires ``in_channels == out_channels`` and ``groups == 1``) and zero
    bias, so training starts from bilinear upsampling as in FCN.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, output_padding: int = 0, bias: bool = True, bilinear_init: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         output_padding=output_padding, bias=bias)
        if bilinear_init:
            if in_channels != out_channels:
                raise ValueError("bilinear_init needs in_channels == out_channels")
            k = self.kernel_size[0]
            if self.kernel_size[1] != k:
                raise ValueError("bilinear_init needs a square kernel")
            with torch.no_grad():
                self.weight.zero_()
                idx = torch.arange(in_channels)
                self.weight[idx, idx] = bilinear_kernel(k, self.weight.dtype)
                if self.bias is not None:
                    self.bias.zero_()

    @classmethod
    def upsampling(cls, channels: int, factor: int, bias: bool = False, bilinear_init: bool = True
                   ) -> "TransposedConv2d":
        """An exact ``factor``-times upsampler: ``kernel = 2 * factor``, ``stride = factor``,
        ``padding = factor // 2`` (even factors; odd factors use ``kernel = 2f - 1``,
        ``padding = (f - 1) // 2``), so ``out = in * factor`` and input pixel ``i``'s centre lands on the
        centre of output cell ``i`` -- the FCN upsampling layers, aligned so that a plain top-left crop
        fits them to the skip layer."""
        if factor < 1:
            raise ValueError(f"upsampling factor must be >= 1, got {factor}")
        if factor % 2 == 0:
            k, p = 2 * factor, factor // 2
        else:
            k, p = 2 * factor - 1, (factor - 1) // 2
        return cls(channels, channels, k, stride=factor, padding=p, bias=bias, bilinear_init=bilinear_init)

    def output_size_for(self, in_size: Sequence[int]) -> tuple[int, int]:
        """``(H_out, W_out)`` for an input of ``(H, W)`` (no ``output_size`` override)."""
        return tuple(  # type: ignore[return-value]
            transposed_conv_output_size(int(s), self.kernel_size[d], self.stride[d], self.padding[d],
                                        self.output_padding[d], self.dilation[d])
            for d, s in enumerate(in_size[-2:])
        )
