"""Keypoint heatmap codec for heatmap-regression pose models (SimpleBaseline, HRNet, DARK).

Built on :mod:`sceneparse.ops.heatmaps` (``gaussian_heatmaps`` encodes, ``decode_heatmaps`` finds
the peak cell and refines it); this module adds what a top-down pose model needs around them:

* :func:`encode` -- Gaussian targets with the sigma chosen for the heatmap resolution
  (:func:`sigma_for`: SimpleBaseline / mmpose use ``sigma = 2`` cells at 64 x 48 and ``3`` at 96 x 72,
  i.e. sigma grows with the map height) and target weights 0 for unlabelled / off-map keypoints.
* :func:`decode` -- ``"argmax"`` (peak cell + the quarter-cell shift toward the higher neighbour,
  SimpleBaseline sec. 3 / HRNet), ``"dark"`` (Zhang et al., CVPR 2020, *Distribution-Aware
  Coordinate Representation*: modulate the heatmap with a Gaussian kernel so that its log is close to
  a quadratic (:func:`dark_modulate`), then one second-order Taylor (Newton) step on the log-heatmap
  around the peak, ``mu = m - H^{-1} g``), ``"integral"`` (Sun et al., ECCV 2018, *Integral Human
  Pose Regression*: the expectation of the coordinates under ``softmax(beta * map)``,
  :func:`soft_argmax`; differentiable).
* :func:`flip_back` / :func:`flip_test` -- test-time augmentation: the heatmaps of the mirrored
  image are mirrored back, their left/right channels swapped, optionally shifted one cell to the
  right (SimpleBaseline's ``shift_heatmap`` / mmpose's ``flip_test`` with ``shift_heatmap=True``),
  and averaged with the original's.

Frames (as :mod:`sceneparse.ops.heatmaps`): heatmap cell ``(i, j)`` covers input pixels
``[j s, (j+1) s) x [i s, (i+1) s)`` for stride ``s``; an input point ``x`` is at the continuous cell
coordinate ``u = x / s - 0.5``. In this continuous frame the mirror of an input of width
``W = w s`` (``x' = W - x``) is exactly the mirror of the map (``u' = w - 1 - u``): no shift is needed.
SimpleBaseline's one-cell shift compensates for *its* integer-pixel frame (``x' = W - 1 - x`` and
``u = x / s``), where the mirrored map is off by ``1 - 1/s`` cells; ``shift=True`` reproduces it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .heatmaps import decode_heatmaps, gaussian_heatmaps

__all__ = ["sigma_for", "encode", "decode", "dark_modulate", "soft_argmax", "flip_back", "flip_test",
           "DECODERS"]

#: decoding methods of :func:`decode`
DECODERS = ("argmax", "dark", "integral", "none")


def sigma_for(heatmap_size: Sequence[int]) -> float:
    """The Gaussian sigma (in heatmap cells) for a map of ``(h, w)``: ``2 * h / 64``, so 2 at SimpleBaseline's
    64 x 48 maps (input 256 x 192), 3 at 96 x 72 (input 384 x 288) and 1 at 32 x 24 (the CPU size)."""
    h = int(heatmap_size[0])
    if h <= 0:
        raise ValueError(f"heatmap height must be positive, got {heatmap_size}")
    return 2.0 * h / 64.0


def encode(keypoints: Tensor, heatmap_size: Sequence[int], stride: float,
           sigma: float | None = None) -> tuple[Tensor, Tensor]:
    """Target heatmaps ``float32 [N, K, h, w]`` and target weights ``float32 [N, K]`` for ``keypoints
    [N, K, 3]`` in input pixels (``x, y, v``). ``sigma`` in cells (``None``: :func:`sigma_for` the size).

    A keypoint with ``v == 0`` or whose position lies outside the map gets an all-zero map and weight 0
    (the loss ignores it); labelled ones (``v`` 1 or 2) get a unit Gaussian peak and weight 1.
    """
    s = sigma_for(heatmap_size) if sigma is None else float(sigma)
    return gaussian_heatmaps(keypoints, heatmap_size, stride, s)


def dark_modulate(maps: Tensor, kernel: int = 11) -> Tensor:
    """DARK's distribution modulation: each map convolved with a Gaussian of ``kernel`` taps
    (sigma ``0.3 ((kernel - 1) 0.5 - 1) + 0.8``, OpenCV's rule for ``GaussianBlur(sigma=0)`` that the
    paper's code uses), then rescaled so its maximum equals the original's.

    The network's heatmaps are not exactly Gaussian (multiple peaks, noise); smoothing makes the
    log-heatmap near the maximum close to a quadratic, which is what the Taylor step assumes. Border
    cells are blurred with zero padding (of zeros, reflection and replication, the one that biases a
    peak near the border least; a unit Gaussian of sigma 2 at least 5 cells inside decodes within 1e-3
    cell). ``maps [N, K, h, w]`` -> same shape.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be [N, K, h, w], got {tuple(maps.shape)}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd number, got {kernel}")
    N, K, h, w = maps.shape
    m = maps.float()
    if kernel == 1 or m.numel() == 0:
        return m.clone()
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=m.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    x = m.reshape(N * K, 1, h, w)
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), g.view(1, 1, 1, -1))  # separable: rows, then columns
    x = F.conv2d(F.pad(x, (0, 0, r, r)), g.view(1, 1, -1, 1))
    x = x.reshape(N, K, h, w)
    old_max = m.flatten(2).amax(dim=2)
    new_max = x.flatten(2).amax(dim=2)
    scale = torch.where(new_max > 0, old_max / new_max.clamp(min=1e-12), torch.zeros_like(new_max))
    return x * scale[..., None, None]


def soft_argmax(maps: Tensor, beta: float | None = None) -> tuple[Tensor, Tensor]:
    """Integral regression: the expected cell ``(u, v) = sum_ij p_ij (j, i)`` of each map.

    ``p = softmax(beta * map)`` over the ``h w`` cells when ``beta`` is given (Integral Pose Regression
    trains the network's logits through it), else the map itself normalised to sum 1 after clamping
    negatives to 0 (the decoder for Gaussian-trained heatmaps: for an untruncated symmetric peak the
    expectation is exactly its centre). ``maps [N, K, h, w]`` -> continuous cell coordinates
    ``[N, K, 2]`` (``u`` along ``w``) and the peak values ``[N, K]``. Differentiable; a map of zeros
    decodes to the map's centre. The mass of a peak near the border is cut there, which pulls the
    expectation inward.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be [N, K, h, w], got {tuple(maps.shape)}")
    N, K, h, w = maps.shape
    if h * w == 0:
        raise ValueError(f"maps must have a non-empty spatial size, got {(h, w)}")
    flat = (maps if maps.is_floating_point() else maps.float()).flatten(2)  # float64 stays float64 (gradcheck)
    if beta is None:
        mass = flat.clamp(min=0)
        total = mass.sum(dim=2, keepdim=True)
        p = torch.where(total > 0, mass / total.clamp(min=1e-12), torch.full_like(mass, 1.0 / (h * w)))
    else:
        p = torch.softmax(beta * flat, dim=2)
    p = p.reshape(N, K, h, w)
    j = torch.arange(w, dtype=p.dtype, device=p.device)
    i = torch.arange(h, dtype=p.dtype, device=p.device)
    u = (p.sum(dim=2) * j).sum(dim=2)
    v = (p.sum(dim=3) * i).sum(dim=2)
    return torch.stack([u, v], dim=2), flat.amax(dim=2)


def decode(maps: Tensor, stride: float = 1.0, method: str = "dark", *, kernel: int = 11,
           beta: float | None = None) -> tuple[Tensor, Tensor]:
    """Keypoints ``[N, K, 3]`` ``(x, y, 1)`` in input pixels and scores ``[N, K]`` from ``maps [N, K, h, w]``.

    ``method``: ``"argmax"`` (peak cell, quarter-cell shift toward the higher neighbour), ``"dark"``
    (:func:`dark_modulate` with ``kernel`` taps -- ``kernel=1``: no modulation -- then the Newton step
    on ``log map``; exact for a Gaussian peak at least ``kernel // 2`` cells from the border, where
    the zero padding of the blur does not cut it), ``"integral"`` (:func:`soft_argmax` with ``beta``) or
    ``"none"`` (the peak cell's centre). Scores are the peak values of the *unmodulated* maps. Cell
    coordinates go to input pixels by ``x = (u + 0.5) * stride``.
    """
    if method not in DECODERS:
        raise ValueError(f"method must be one of {DECODERS}, got {method!r}")
    if maps.ndim != 4:
        raise ValueError(f"maps must be [N, K, h, w], got {tuple(maps.shape)}")
    if method == "integral":
        uv, scores = soft_argmax(maps, beta)
        xy = (uv + 0.5) * stride
        return torch.cat([xy, torch.ones_like(xy[..., :1])], dim=2), scores
    if method == "dark":
        kp, _ = decode_heatmaps(dark_modulate(maps, kernel), stride, refine="dark")
        return kp, maps.float().flatten(2).amax(dim=2)
    return decode_heatmaps(maps, stride, refine="quarter" if method == "argmax" else "none")


def flip_back(maps: Tensor, flip_index: Sequence[int], shift: bool = False) -> Tensor:
    """Heatmaps of a horizontally mirrored input, brought back to the unmirrored frame.

    ``maps [N, K, h, w]``: mirrored along ``w``, channel ``k`` taken from ``flip_index[k]`` (left and
    right swap; ``flip_index`` of :class:`~sceneparse.structures.keypoints.KeypointSet`), and, with
    ``shift=True``, moved one cell to the right (column ``j`` takes column ``j - 1``, the first column
    kept) as SimpleBaseline's ``flip_back`` + ``shift_heatmap`` do for their integer-pixel frame. In the
    continuous frame of this module the plain mirror is exact (module docstring): keep ``shift=False``.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be [N, K, h, w], got {tuple(maps.shape)}")
    index = torch.as_tensor(list(flip_index), dtype=torch.long, device=maps.device)
    if index.numel() != maps.shape[1]:
        raise ValueError(f"flip_index has {index.numel()} entries for {maps.shape[1]} heatmaps")
    out = maps.flip(3)[:, index]
    if shift and out.shape[3] > 1:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=3)
    return out


def flip_test(maps: Tensor, flipped_maps: Tensor, flip_index: Sequence[int], shift: bool = False) -> Tensor:
    """Flip-test average ``(maps + flip_back(flipped_maps)) / 2`` (SimpleBaseline / HRNet test-time
    augmentation); ``flipped_maps`` are the network's maps of the mirrored input."""
    if maps.shape != flipped_maps.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and flipped maps {tuple(flipped_maps.shape)} differ in shape")
    return 0.5 * (maps + flip_back(flipped_maps, flip_index, shift))

