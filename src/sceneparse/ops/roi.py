"""Region-of-interest feature extraction (Fast R-CNN RoIPool, Mask R-CNN RoIAlign, FPN level mapping).

``roi_align`` / ``roi_pool`` wrap torchvision's compiled kernels (CPU and CUDA, with backward). On the
CPU, where torchvision's RoIAlign kernels run on one thread, :func:`roi_align` splits the RoIs into one
contiguous chunk per intra-op thread and runs the chunks concurrently (the kernels release the GIL):
the same kernel on the same numbers, so the output is bitwise the one-call output.

Its CPU backward with a fixed ``sampling_ratio`` is a sparse matrix product instead of torchvision's
kernel, which recomputes every bilinear weight once per channel and scatters channel by channel.
RoIAlign is linear in the features: ``out[r, c, bin] = sum_k w[bin, k] * f[b_r, c, p[bin, k]]`` with
``k`` over the ``S x S`` samples of the bin times their 4 bilinear corners. The weights and corner
positions are computed once for all RoIs (vectorised, the same float32 arithmetic as the kernel), as a
``[B*H*W, bins]`` matrix in CSC form -- each bin's column holds exactly ``4 S^2`` entries, so the
column pointers are a plain ``arange`` and nothing is sorted -- and the feature gradient is that
matrix times the output gradient laid out ``[bins, C]``. Same terms as the kernel, summed in
another order where several samples hit one pixel: equal to float32 rounding (tests: 2e-6). The
adaptive grid (``sampling_ratio <= 0``, a per-RoI sample count) keeps the kernel.
Boxes are XYXY in *input-image* pixels; ``spatial_scale`` maps them to the feature map
(``1 / stride``). RoIs are either a ``[K, 5]`` tensor ``(batch_index, x1, y1, x2, y2)`` or a list with
one ``[K_i, 4]`` tensor per image.

Dtypes: float32 and float64 features are computed as they are, with the RoIs cast to that type.
float16 and bfloat16 features are always computed in float32 -- features upcast (exact), RoIs cast
from their own type straight to float32 (never rounded to the half type), the float32 result rounded
once to the features' type -- on every device and path, whatever the number of RoIs. So a RoI's
output does not depend on the other RoIs of the call, bit for bit, in any dtype. (torchvision's CPU
kernel has no bfloat16 variant and runs float16 in float16 arithmetic; its autocast wrapper computes
in float32 as this rule does.)

:func:`multiscale_roi_align` pools each RoI from one FPN level chosen by :func:`assign_levels`
(FPN eq. 1: ``k = floor(k0 + log2(sqrt(w h) / 224))``) and is numerically identical to
``torchvision.ops.MultiScaleRoIAlign`` -- but stateless: torchvision caches the scales of the first
call, this function infers them on every call.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torchvision
from torch import Tensor

from ._pool import cpu_workers, executor as _executor
from .boxes import box_area

__all__ = ["roi_align", "roi_align_sampling", "roi_pool", "assign_levels", "infer_scale", "multiscale_roi_align", "rois_from_boxes"]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or (height, width), got {size!r}")
    return size  # type: ignore[return-value]


def rois_from_boxes(boxes: Sequence[Tensor]) -> Tensor:
    """Per-image ``[K_i, 4]`` boxes -> ``[sum K_i, 5]`` RoIs ``(batch_index, x1, y1, x2, y2)``."""
    if len(boxes) == 0:
        raise ValueError("boxes must hold one [K_i, 4] tensor per image, got an empty list")
    for i, b in enumerate(boxes):
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must have shape [K, 4], got {tuple(b.shape)}")
    # full_like instead of repeat_interleave over a list of counts: a traced graph keeps the counts dynamic
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)], dim=0)


def _as_rois(rois: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(rois, Tensor):
        if rois.ndim != 2 or rois.shape[1] != 5:
            raise ValueError(f"rois must be [K, 5] (batch_index, x1, y1, x2, y2) or a list of [K_i, 4], "
                             f"got {tuple(rois.shape)}")
        return rois
    return rois_from_boxes(rois)


def _check_features(features: Tensor) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be [B, C, H, W], got {tuple(features.shape)}")


#: fewer RoIs than this per thread run in one kernel call (a few RoIs are not worth a thread hand-off)
MIN_ROIS_PER_THREAD = 16
def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _bilinear_axis(v: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's ``bilinear_interpolate`` along one axis of length ``n``, for sample coordinates
    ``v``: ``(low index, high index, low weight, high weight)``; weights 0 outside ``[-1, n]``."""
    inside = (v >= -1.0) & (v <= n)
    v = v.clamp(min=0)
    low = v.floor().long()  # the kernel's (int) cast: v >= 0 here
    top = low >= n - 1
    low = torch.where(top, n - 1, low)
    high = torch.where(top, n - 1, low + 1)
    frac = torch.where(top, torch.zeros_like(v), v - low.to(v.dtype))
    return low, high, (1 - frac) * inside, frac * inside


def roi_align_sampling(rois: Tensor, feature_size: tuple[int, int], output_size: tuple[int, int], spatial_scale: float,
                       sampling_ratio: int, aligned: bool) -> tuple[Tensor, Tensor]:
    """RoIAlign as a sparse linear map, for a fixed ``sampling_ratio`` ``S >= 1``.

    Returns ``(index, weight)``, both ``[K * oh * ow, 4 * S * S]``: for every output bin (RoI-major,
    then row, then column), the flat positions ``b * H * W + y * W + x`` of the feature pixels it reads
    and their weights (bilinear weight / ``S * S``; 0 for samples outside the map), so that
    ``out[bin, c] = sum_j weight[bin, j] * features_flat[index[bin, j], c]``.
    """
    h, w = feature_size
    oh, ow = output_size
    s = int(sampling_ratio)
    dt = rois.dtype
    off = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - off, rois[:, 2] * spatial_scale - off
    rw, rh = rois[:, 3] * spatial_scale - off - x1, rois[:, 4] * spatial_scale - off - y1
    if not aligned:  # the original RoIAlign forces boxes to at least 1 x 1 feature pixel
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    frac = (torch.arange(s, dtype=dt) + 0.5)

    def coords(start: Tensor, length: Tensor, bins: int) -> Tensor:  # [K, bins, S], the kernel's expression
        size = length / bins
        return (start[:, None, None] + torch.arange(bins, dtype=dt)[None, :, None] * size[:, None, None]
                + frac[None, None, :] * size[:, None, None] / s)

    ylo, yhi, wylo, wyhi = _bilinear_axis(coords(y1, rh, oh), h)
    xlo, xhi, wxlo, wxhi = _bilinear_axis(coords(x1, rw, ow), w)
    yi, yw = torch.stack([ylo, yhi], -1), torch.stack([wylo, wyhi], -1)  # [K, oh, S, 2]
    xi, xw = torch.stack([xlo, xhi], -1), torch.stack([wxlo, wxhi], -1)  # [K, ow, S, 2]
    base = rois[:, 0].long() * (h * w)
    # [K, oh, ow, Sy, Sx, 2, 2] in the kernel's order of samples and corners
    index = (base[:, None, None, None, None, None, None] + yi[:, :, None, :, None, :, None] * w
             + xi[:, None, :, None, :, None, :])
    weight = yw[:, :, None, :, None, :, None] * xw[:, None, :, None, :, None, :] / (s * s)
    n = rois.shape[0] * oh * ow
    return index.reshape(n, 4 * s * s), weight.reshape(n, 4 * s * s)  # explicit: K may be 0


def _sparse_roi_align_backward(grad: Tensor, rois: Tensor, spatial_scale: float, sampling_ratio: int,
                               aligned: bool, feature_shape: tuple[int, int, int, int]) -> Tensor:
    """The feature gradient of RoIAlign (fixed ``sampling_ratio``) as one sparse x dense product.
    (Memory-bound: one product per RoI chunk on two threads measured no faster.)"""
    b, c, h, w = feature_shape
    k, _, oh, ow = grad.shape
    if k and not (0 <= float(rois[:, 0].min()) and float(rois[:, 0].max()) < b):
        raise ValueError(f"RoI batch indices must lie in [0, {b}), got {rois[:, 0].min()}..{rois[:, 0].max()}")
    index, weight = roi_align_sampling(rois, (h, w), (oh, ow), spatial_scale, sampling_ratio, aligned)
    n, per_bin = index.shape
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSC tensor support is in beta.*")
        m = torch.sparse_csc_tensor(torch.arange(0, n * per_bin + 1, per_bin), index.reshape(-1),
                                    weight.reshape(-1).to(grad.dtype), size=(b * h * w, n),
                                    check_invariants=False)  # valid by construction
        rows = m @ grad.permute(0, 2, 3, 1).reshape(n, c)  # [B*H*W, C]
    return rows.view(b, h, w, c).permute(0, 3, 1, 2)


class _CPURoIAlign(torch.autograd.Function):
    """torchvision's CPU RoIAlign forward kernel, one RoI chunk per thread; backward as a sparse
    product (fixed sampling ratio) or torchvision's backward kernel per chunk (adaptive)."""

    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, oh: int, ow: int, scale: float, sampling: int,
                aligned: bool, parts: int) -> Tensor:
        # roi_align has already made the features float32 / float64 and the RoIs of the same type
        f = features.contiguous()
        r = rois.to(f.dtype).contiguous()
        spans = _chunks(r.shape[0], parts) or [(0, 0)]  # no RoIs: one kernel call, an empty [0, C, oh, ow]
        op = torch.ops.torchvision.roi_align
        outs = list(_executor(len(spans)).map(
            lambda ab: op(f, r[ab[0]:ab[1]], scale, oh, ow, sampling, aligned), spans))
        ctx.save_for_backward(r)
        ctx.args = (oh, ow, scale, sampling, aligned, spans, tuple(f.shape), features.dtype)
        return torch.cat(outs).to(features.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (r,) = ctx.saved_tensors
        oh, ow, scale, sampling, aligned, spans, (b, c, h, w), dtype = ctx.args
        if sampling > 0:
            out = _sparse_roi_align_backward(grad.to(r.dtype), r, scale, sampling, aligned, (b, c, h, w))
            return out.to(dtype), None, None, None, None, None, None, None
        g = grad.to(r.dtype).contiguous()
        op = torch.ops.torchvision._roi_align_backward

        def part(ab):
            return op(g[ab[0]:ab[1]], r[ab[0]:ab[1]], scale, oh, ow, b, c, h, w, sampling, aligned)

        grads = list(_executor(len(spans)).map(part, spans))
        total = grads[0]
        for other in grads[1:]:
            total.add_(other)
        return total.to(dtype), None, None, None, None, None, None, None


def _cpu_parts(features: Tensor, n_rois: int) -> int:
    """How many threads a CPU RoIAlign forward gets: 1 off the CPU, when traced, with one intra-op
    thread or with few RoIs."""
    return cpu_workers(features.device, n_rois // MIN_ROIS_PER_THREAD)


def _own_cpu_path(features: Tensor, parts: int, sampling_ratio: int) -> bool:
    """Whether :class:`_CPURoIAlign` runs the call: on the CPU, not traced or scripted (export sees
    torchvision's op), and when it helps -- several threads, or a gradient with a fixed sampling ratio."""
    if features.device.type != "cpu" or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return parts > 1 or (sampling_ratio > 0 and features.requires_grad and torch.is_grad_enabled())


def roi_align(features: Tensor, rois: Tensor | Sequence[Tensor], output_size: int | Sequence[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoIAlign (Mask R-CNN): bilinear samples averaged in each of ``oh x ow`` bins -> ``[K, C, oh, ow]``.

    ``sampling_ratio`` samples per bin side (``<= 0``: ``ceil(roi_size / output_size)``, adaptive).
    ``aligned=True`` shifts boxes by -0.5 px so that a box ``(0, 0, 1, 1)`` samples the centre of pixel 0
    (the pixel-model-correct variant, Detectron2's ROIAlignV2); ``False`` reproduces the original.

    float32 / float64 features are computed as they are (RoIs cast to their type); float16 / bfloat16
    features are computed in float32 (RoIs cast to float32 from their own type, not through the half
    type) and the result is rounded once to the features' dtype -- on every device and path, so a RoI
    gives the same output, bit for bit, whatever the other RoIs of the call and however many there are.
    Zero RoIs give an empty ``[0, C, oh, ow]`` (with a gradient path when the features need one).
    """
    _check_features(features)
    half = features.dtype in (torch.float16, torch.bfloat16)
    x = features.float() if half else features
    rois = _as_rois(rois).to(x.dtype)
    oh, ow = _pair(output_size)
    parts = _cpu_parts(x, rois.shape[0])
    if _own_cpu_path(x, parts, int(sampling_ratio)):
        out = _CPURoIAlign.apply(x, rois, oh, ow, float(spatial_scale), int(sampling_ratio), bool(aligned), parts)
    else:
        out = torchvision.ops.roi_align(x, rois, (oh, ow), float(spatial_scale), int(sampling_ratio), bool(aligned))
    return out.to(features.dtype) if half else out


def roi_pool(features: Tensor, rois: Tensor | Sequence[Tensor], output_size: int | Sequence[int],
             spatial_scale: float = 1.0) -> Tensor:
    """RoIPool (Fast R-CNN): max over each of ``oh x ow`` quantised bins -> ``[K, C, oh, ow]``."""
    _check_features(features)
    rois = _as_rois(rois).to(features.dtype)
    return torchvision.ops.roi_pool(features, rois, _pair(output_size), float(spatial_scale))


def assign_levels(boxes: Tensor, k_min: int, k_max: int, canonical_scale: float = 224,
                  canonical_level: int = 4, eps: float = 1e-6) -> Tensor:
    """FPN level of each box, as an index ``0..k_max-k_min`` into the levels ``k_min..k_max``: int64 ``[K]``.

    FPN eq. 1: ``k = floor(k0 + log2(sqrt(w h) / s0) + eps)`` clamped to ``[k_min, k_max]``, with
    ``k0 = canonical_level`` the level of a ``s0 x s0`` box (``s0 = canonical_scale`` = the ImageNet
    pre-training size). ``eps`` keeps exact powers of two from falling one level low through rounding.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [K, 4], got {tuple(boxes.shape)}")
    if k_min > k_max:
        raise ValueError(f"k_min ({k_min}) must be <= k_max ({k_max})")
    s = torch.sqrt(box_area(boxes))
    k = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype))
    k = k.clamp(min=k_min, max=k_max)
    return k.to(torch.int64) - k_min


def infer_scale(feature_size: Sequence[int], image_size: Sequence[int]) -> float:
    """The ``1 / stride`` of a feature map, assumed a power of two: ``2 ** round(log2(h / H))``.

    Uses the heights (as torchvision): ``feature_size = (h, w)``, ``image_size = (H, W)``.
    """
    approx = float(feature_size[0]) / float(image_size[0])
    # Rounded in float32, as torchvision does, so that the two agree on every input.
    return 2 ** float(torch.tensor(approx, dtype=torch.float32).log2().round())


def multiscale_roi_align(features: Sequence[Tensor], boxes: Sequence[Tensor],
                         image_sizes: Sequence[tuple[int, int]], output_size: int | Sequence[int],
                         sampling_ratio: int = 2, canonical_scale: float = 224,
                         canonical_level: int = 4, aligned: bool = False) -> Tensor:
    """RoIAlign from the FPN level of each box -> ``[sum K_i, C, oh, ow]`` in the order of ``boxes``.

    ``features``: the levels, finest first, each ``[B, C, H_l, W_l]``; ``boxes``: one ``[K_i, 4]``
    tensor per image in input-image pixels; ``image_sizes``: ``(H, W)`` of each image *before* the
    backbone (unpadded sizes; their per-axis maximum is the reference). The scale of each level is
    ``2 ** round(log2(H_l / H))`` and the levels are ``k = -log2(scale)``; a single level skips the
    mapping. ``aligned``: :func:`roi_align`'s (half-pixel offset; torchvision's FPN pooler uses ``False``).
    Dtypes as :func:`roi_align`. No boxes at all: an empty ``[0, C, oh, ow]`` that every level's
    features get a (zero) gradient through, as torchvision's pooler.
    """
    if len(features) == 0:
        raise ValueError("features must hold at least one level")
    if len(image_sizes) == 0:
        raise ValueError("image_sizes must not be empty")
    oh, ow = _pair(output_size)
    ref = (max(int(s[0]) for s in image_sizes), max(int(s[1]) for s in image_sizes))
    scales = [infer_scale(f.shape[-2:], ref) for f in features]
    rois = rois_from_boxes(boxes)
    if len(features) == 1:
        return roi_align(features[0], rois, (oh, ow), scales[0], sampling_ratio, aligned)
    k_min = int(-math.log2(scales[0]))
    k_max = int(-math.log2(scales[-1]))
    levels = assign_levels(rois[:, 1:], k_min, k_max, canonical_scale, canonical_level)
    first = features[0]
    out = torch.zeros((rois.shape[0], first.shape[1], oh, ow), dtype=first.dtype, device=first.device)
    for level, (feat, scale) in enumerate(zip(features, scales)):  # one kernel call per level
        idx = torch.where(levels == level)[0]
        if torch.jit.is_tracing():
            # graph export: every level's branch is kept, and a scatter instead of ``out[idx] = ...``, whose
            # ONNX form is specialised to the example's count when a level gets a single RoI
            pooled = roi_align(feat, rois[idx], (oh, ow), scale, sampling_ratio, aligned).to(out.dtype)
            out = out.scatter(0, idx.view(-1, 1, 1, 1).expand_as(pooled), pooled)
        elif idx.numel() or not rois.shape[0]:  # no RoIs at all: still one (empty) call per level
            out[idx] = roi_align(feat, rois[idx], (oh, ow), scale, sampling_ratio, aligned).to(out.dtype)
    return out
