"""Semantic-segmentation logits -> :class:`SemanticMap` in original image pixels; tiled inference.

Frames: a model's logits live in the *batch frame* -- the resized image, zero-padded at the
bottom/right to the batch size (:class:`~sceneparse.structures.batch.ImageBatch`). Going back to the
user's image means: crop the valid ``image_sizes[i]`` region, resize to ``original_sizes[i]``
(bilinear on the logits, ``align_corners=False`` so pixel areas map onto pixel areas), then take the
arg-max. Interpolating logits *before* the arg-max gives smooth class boundaries instead of the
blocky ones of resizing a label map.

Large images: :func:`sliding_window_logits` runs a network on overlapping windows and blends the
logits where windows overlap, so memory stays bounded by the window size while every output pixel
still gets a prediction from a window that contains some context around it.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..conventions import IGNORE_INDEX
from ..structures.segmaps import SemanticMap

__all__ = ["semantic_maps_from_logits", "sliding_window_logits", "window_starts"]


def semantic_maps_from_logits(logits: torch.Tensor, image_sizes: Sequence[tuple[int, int]],
                              original_sizes: Sequence[tuple[int, int]], *, return_scores: bool = False,
                              ignore_index: int = IGNORE_INDEX) -> list[SemanticMap]:
    """Per-image :class:`SemanticMap` in original pixels.

    Args:
        logits: ``float [B, C, Hb, Wb]`` in the batch frame.
        image_sizes: per image ``(h, w)`` valid region of the batch frame (``h <= Hb``, ``w <= Wb``).
        original_sizes: per image ``(H, W)`` the labels are returned at.
        return_scores: also return ``scores`` = softmax probabilities ``float32 [C, H, W]``.
    Returns:
        ``SemanticMap(labels int64 [H, W] in 0..C-1, ignore_index, scores?)``. Every pixel gets a class
        (the model predicts no void).
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be [B, C, H, W], got {tuple(logits.shape)}")
    if not len(image_sizes) == len(original_sizes) == logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit maps but {len(image_sizes)} image sizes and "
                         f"{len(original_sizes)} original sizes")
    out = []
    for i, ((h, w), (oh, ow)) in enumerate(zip(image_sizes, original_sizes)):
        if h > logits.shape[2] or w > logits.shape[3] or min(h, w, oh, ow) < 1:
            raise ValueError(f"image {i}: valid size {(h, w)} / original size {(oh, ow)} do not fit logits "
                             f"{tuple(logits.shape[2:])}")
        x = logits[i:i + 1, :, :h, :w]
        if (h, w) != (oh, ow):
            x = F.interpolate(x, size=(int(oh), int(ow)), mode="bilinear", align_corners=False)
        labels = x[0].argmax(dim=0)
        scores = x[0].float().softmax(dim=0) if return_scores else None
        out.append(SemanticMap(labels, ignore_index, scores))
    return out


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``window`` moved by ``stride`` over ``length`` pixels.

    Regular steps ``0, stride, 2 stride, ...`` and one last window flush with the end, so every pixel is
    covered and no window leaves the image. A window longer than ``length`` shrinks to ``length``
    (one window at 0).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window} and {stride}")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would leave pixels uncovered")
    if length <= window:
        return [0]
    n = math.ceil((length - window) / stride)  # regular steps before the flush-right window
    starts = [k * stride for k in range(n)] + [length - window]
    return starts


def _blend_weights(h: int, w: int, weighting: str, device, dtype) -> torch.Tensor:
    if weighting == "uniform":
        return torch.ones(h, w, device=device, dtype=dtype)
    if weighting == "gaussian":  # nnU-Net's choice: sigma = 1/8 of the window, centre-heavy
        def g(n: int) -> torch.Tensor:
            r = torch.arange(n, device=device, dtype=torch.float64) - (n - 1) / 2
            return torch.exp(-0.5 * (r / max(n / 8, 1e-6)) ** 2)
        wmap = torch.outer(g(h), g(w))
        wmap = wmap / wmap.max()
        return wmap.clamp(min=1e-3).to(dtype)  # never 0: the flush windows may be a pixel's only cover
    raise ValueError(f"weighting must be 'uniform' or 'gaussian', got {weighting!r}")


def sliding_window_logits(logits_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                          window: int | tuple[int, int], *, overlap: float = 1 / 3,
                          stride: int | tuple[int, int] | None = None, batch_size: int = 4,
                          weighting: str = "uniform") -> torch.Tensor:
    """Tiled inference: run ``logits_fn`` on overlapping windows of ``image`` and stitch the logits.

    Args:
        logits_fn: ``[N, Cin, h, w] -> [N, C, h, w]`` (logits at the window's own resolution).
        image: ``[Cin, H, W]`` (already normalised / resized as the network expects).
        window: window ``(h, w)`` (or one int); clipped to the image size.
        overlap: fraction of the window shared by neighbours (stride = ``ceil(window * (1 - overlap))``)
            when ``stride`` is not given.
        batch_size: windows per call of ``logits_fn``.
        weighting: ``"uniform"`` (plain average over the windows covering a pixel) or ``"gaussian"``
            (centre-weighted average: window borders, which see the least context, count less).
    Returns:
        ``[C, H, W]`` blended logits. With a position-independent per-pixel network the result equals
        running it on the whole image.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be [C, H, W], got {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    H, W = int(image.shape[1]), int(image.shape[2])
    wh, ww = (window, window) if isinstance(window, int) else (int(window[0]), int(window[1]))
    wh, ww = min(wh, H), min(ww, W)
    if stride is None:
        sh, sw = max(1, math.ceil(wh * (1 - overlap))), max(1, math.ceil(ww * (1 - overlap)))
    else:
        sh, sw = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
    ys, xs = window_starts(H, wh, min(sh, wh)), window_starts(W, ww, min(sw, ww))
    corners = [(y, x) for y in ys for x in xs]
    weight = None
    acc = None
    norm = torch.zeros(H, W, device=image.device, dtype=torch.float32)
    for k in range(0, len(corners), max(1, batch_size)):
        chunk = corners[k:k + batch_size]
        tiles = torch.stack([image[:, y:y + wh, x:x + ww] for y, x in chunk])
        out = logits_fn(tiles)
        if out.ndim != 4 or out.shape[0] != len(chunk) or tuple(out.shape[2:]) != (wh, ww):
            raise ValueError(f"logits_fn returned {tuple(out.shape)} for windows {tuple(tiles.shape)}; expected "
                             f"[{len(chunk)}, C, {wh}, {ww}]")
        if acc is None:
            acc = torch.zeros(out.shape[1], H, W, device=out.device, dtype=torch.float32)
            weight = _blend_weights(wh, ww, weighting, out.device, torch.float32)
        for (y, x), o in zip(chunk, out):
            acc[:, y:y + wh, x:x + ww] += o.float() * weight
            norm[y:y + wh, x:x + ww] += weight
    return (acc / norm).to(image.dtype if image.is_floating_point() else torch.float32)
