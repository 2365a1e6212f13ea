"""CornerNet's targets, losses and decoding (Law and Deng, "CornerNet: Detecting Objects as Paired
Keypoints", ECCV 2018, sec. 3.2-3.3), as tensor functions.

A box is a pair of corners: its top-left ``(x1, y1)`` and bottom-right ``(x2, y2)``. On the output map
(stride ``R`` = 4) each corner ``p = (x, y) / R`` falls in the integer cell ``floor(p)`` (clamped into
the map: a bottom-right corner on the right / bottom border of the map belongs to the last cell),
and the network predicts per corner type

* ``C`` heatmaps: the corner's class map has an unnormalised Gaussian at the corner cell (peak 1),
  ``sigma = (2 r + 1) / 6``, the radius ``r`` CenterNet's op gives
  (:func:`~sceneparse.ops.center_heatmaps.gaussian_radius`) for the box size in map cells rounded up
  (as the reference) and an IoU ``t`` ("a pair of points within the radius would generate a bounding
  box with at least t IoU"): the paper's text says ``t = 0.3``, its released code runs with 0.7 (the
  default ``gaussian_iou`` of its ``db/detection.py``, which its configurations do not override), the
  value CenterNet kept, and the default here; loss: the penalty-reduced focal loss (alpha 2, beta 4,
  :func:`~sceneparse.ops.center_heatmaps.penalty_reduced_focal_loss`);
* a 1-d embedding: the two corners of object ``k`` get embeddings ``e_tk``, ``e_bk`` with mean ``e_k``;
  ``L_pull = 1/N sum_k (e_tk - e_k)^2 + (e_bk - e_k)^2`` pulls them together and
  ``L_push = 1/(N (N - 1)) sum_k sum_{j != k} max(0, 1 - |e_k - e_j|)`` (margin 1) pushes different
  objects apart (:func:`embedding_losses`);
* 2-d offsets ``o_k = p - floor(p)`` (what the rounding to the cell lost), smooth L1 at the corners.

Decoding (:func:`decode_corners`): 3x3 max-pool peaks and the top ``k`` corners of each heatmap
(:func:`~sceneparse.ops.center_heatmaps.heatmap_peaks`), all ``k x k`` (top-left, bottom-right) pairs
at once; a pair is rejected when the classes differ, the bottom-right corner is not strictly below
and to the right of the top-left one, or the embeddings differ by more than 0.5; its score is the
mean of the two corner scores; the best ``max_det`` pairs are the detections (no soft-NMS).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops.center_heatmaps import gaussian_radius, heatmap_peaks, splat_gaussians

__all__ = ["CornerPairs", "CornerTargets", "encode_corners", "embedding_losses", "offset_loss", "pair_corners",
           "decode_corners"]


@dataclass
class CornerTargets:
    """Targets of one image on an ``h x w`` output map (:func:`encode_corners`), ``M`` objects.

    Attributes:
        tl_heatmap, br_heatmap: ``[C, h, w]`` float32, Gaussians with peak 1 at the corner cells.
        tl_index, br_index: ``[M]`` int64 flat index ``i * w + j`` of each object's corner cells.
        tl_offset, br_offset: ``[M, 2]`` ``(ox, oy)``: corner minus its cell (map units, ``[0, 1]``).
        radius: ``[M]`` int64 Gaussian radius of each object (both corners).
    """

    tl_heatmap: Tensor
    br_heatmap: Tensor
    tl_index: Tensor
    br_index: Tensor
    tl_offset: Tensor
    br_offset: Tensor
    radius: Tensor


def _cells(points: Tensor, h: int, w: int) -> Tensor:
    """Integer cells ``floor(p)`` of ``points [M, 2]`` ``(x, y)``, clamped into the ``h x w`` map."""
    cell = points.floor()
    return torch.stack([cell[:, 0].clamp(0, w - 1), cell[:, 1].clamp(0, h - 1)], 1)


def encode_corners(boxes: Tensor, labels: Tensor, num_classes: int, out_size: tuple[int, int], stride: float,
                   min_overlap: float = 0.7) -> CornerTargets:
    """CornerNet targets of one image: ``boxes [M, 4]`` XYXY in input pixels (inside the map),
    ``labels [M]`` in ``0..C-1``, output map ``out_size = (h, w)`` at ``stride`` input pixels a cell.

    The radius is ``max(0, floor(gaussian_radius(ceil(bh), ceil(bw), min_overlap)))`` for the box's
    height and width ``bh, bw`` in map cells (the reference's rounding)."""
    h, w = int(out_size[0]), int(out_size[1])
    b = boxes.float() / stride
    tl = b[:, :2].clamp(min=0)
    br = torch.minimum(b[:, 2:], torch.tensor([float(w), float(h)], device=b.device))
    tl_cell, br_cell = _cells(tl, h, w), _cells(br, h, w)
    size = (b[:, 2:] - b[:, :2]).ceil()
    radius = gaussian_radius(size[:, 1], size[:, 0], min_overlap).floor().clamp(min=0).to(torch.int64)
    return CornerTargets(
        splat_gaussians(tl_cell, radius, labels, num_classes, (h, w)),
        splat_gaussians(br_cell, radius, labels, num_classes, (h, w)),
        (tl_cell[:, 1] * w + tl_cell[:, 0]).to(torch.int64), (br_cell[:, 1] * w + br_cell[:, 0]).to(torch.int64),
        tl - tl_cell, br - br_cell, radius)


def embedding_losses(tl: Tensor, br: Tensor, mask: Tensor, margin: float = 1.0) -> tuple[Tensor, Tensor]:
    """The pull and push losses (eq. 4-5) of a batch: ``tl, br [B, M]`` the embeddings of the two
    corners of up to ``M`` objects per image, ``mask [B, M]`` bool which are objects.

    Per image with ``N`` objects, ``e_k = (e_tk + e_bk) / 2``:
    ``pull = 1/N sum_k (e_tk - e_k)^2 + (e_bk - e_k)^2``,
    ``push = 1/(N (N - 1)) sum_k sum_{j != k} max(0, margin - |e_k - e_j|)`` (0 for ``N < 2``); both
    summed over the images of the batch, as the reference implementation does (the paper writes one
    image). Returns ``(pull, push)``, float32 scalars."""
    tl, br = tl.float(), br.float()
    m = mask.to(tl.dtype)
    n = m.sum(1)  # [B]
    mean = (tl + br) / 2
    pull = ((((tl - mean) ** 2 + (br - mean) ** 2) * m).sum(1) / n.clamp(min=1)).sum()
    eye = torch.eye(tl.shape[1], dtype=torch.bool, device=tl.device)
    pairs = (mask[:, :, None] & mask[:, None, :] & ~eye).to(tl.dtype)  # [B, M, M], j != k
    hinge = F.relu(margin - (mean[:, :, None] - mean[:, None, :]).abs())
    push = ((hinge * pairs).sum((1, 2)) / (n * (n - 1)).clamp(min=1)).sum()
    return pull, push


def offset_loss(pred: Tensor, target: Tensor, num_objects: int) -> Tensor:
    """Smooth L1 (``beta = 1``, eq. 3's ``SmoothL1``) of ``pred`` vs ``target`` ``[M, 2]`` offsets,
    summed and divided by ``num_objects`` (1 at least)."""
    return F.smooth_l1_loss(pred.float(), target.float(), reduction="sum", beta=1.0) / max(int(num_objects), 1)


def _gather(maps: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """``maps [B, D, h, w]`` at ``(ys, xs) [B, K]`` -> ``[B, K, D]``."""
    B, D, h, w = maps.shape
    pos = (ys * w + xs)[:, None, :].expand(-1, D, -1)
    return maps.flatten(2).gather(2, pos).transpose(1, 2)


@dataclass
class CornerPairs:
    """The ``D`` best corner pairs of each image (:func:`pair_corners`), best first, in map units.

    Attributes:
        scores: ``[B, D]`` mean of the two corner scores, ``-1`` for rejected pairs (last).
        labels: ``[B, D]`` class of the pair (its top-left corner's).
        tl, br: ``[B, D, 2]`` ``(x, y)`` corners on the output map (cell + offset).
        tl_cell, br_cell: ``[B, D, 2]`` ``(x, y)`` integer peak cells.
        tl_embedding, br_embedding: ``[B, D]`` the corners' embeddings.
    """

    scores: Tensor
    labels: Tensor
    tl: Tensor
    br: Tensor
    tl_cell: Tensor
    br_cell: Tensor
    tl_embedding: Tensor
    br_embedding: Tensor


def pair_corners(tl_heat: Tensor, br_heat: Tensor, tl_embed: Tensor, br_embed: Tensor, tl_offset: Tensor,
                 br_offset: Tensor, stride: float, k: int = 100, max_det: int = 100, ae_threshold: float = 0.5,
                 image_sizes: Tensor | None = None) -> CornerPairs:
    """The pairing of :func:`decode_corners` with every number of the pairs kept (see there)."""
    tl_s, tl_c, tl_y, tl_x = heatmap_peaks(tl_heat, k)  # [B, K]
    br_s, br_c, br_y, br_x = heatmap_peaks(br_heat, k)
    tl_o, br_o = _gather(tl_offset, tl_y, tl_x), _gather(br_offset, br_y, br_x)  # [B, K, 2]
    tl_e, br_e = _gather(tl_embed, tl_y, tl_x)[..., 0], _gather(br_embed, br_y, br_x)[..., 0]  # [B, K]
    x1 = (tl_x.to(tl_o.dtype) + tl_o[..., 0])[:, :, None]  # [B, K, 1]: rows are top-left corners
    y1 = (tl_y.to(tl_o.dtype) + tl_o[..., 1])[:, :, None]
    x2 = (br_x.to(br_o.dtype) + br_o[..., 0])[:, None, :]  # [B, 1, K]: columns bottom-right corners
    y2 = (br_y.to(br_o.dtype) + br_o[..., 1])[:, None, :]
    valid = (tl_c[:, :, None] == br_c[:, None, :]) & (x2 > x1) & (y2 > y1) & \
        ((tl_e[:, :, None] - br_e[:, None, :]).abs() <= ae_threshold)
    if image_sizes is not None:
        limit = image_sizes.to(x1.dtype) / stride  # [B, 2] (h, w) in map units
        valid = valid & (x1 < limit[:, 1, None, None]) & (y1 < limit[:, 0, None, None])
    scores = (tl_s[:, :, None] + br_s[:, None, :]) / 2
    scores = torch.where(valid, scores, torch.full_like(scores, -1.0))
    K1, K2 = scores.shape[1], scores.shape[2]
    best, idx = scores.flatten(1).topk(min(max_det, K1 * K2), dim=1)
    i, j = torch.div(idx, K2, rounding_mode="floor"), idx % K2
    return CornerPairs(
        best, tl_c.gather(1, i),
        torch.stack([x1[:, :, 0].gather(1, i), y1[:, :, 0].gather(1, i)], -1),
        torch.stack([x2[:, 0, :].gather(1, j), y2[:, 0, :].gather(1, j)], -1),
        torch.stack([tl_x.gather(1, i), tl_y.gather(1, i)], -1),
        torch.stack([br_x.gather(1, j), br_y.gather(1, j)], -1),
        tl_e.gather(1, i), br_e.gather(1, j))


def decode_corners(tl_heat: Tensor, br_heat: Tensor, tl_embed: Tensor, br_embed: Tensor, tl_offset: Tensor,
                   br_offset: Tensor, stride: float, k: int = 100, max_det: int = 100, ae_threshold: float = 0.5,
                   image_sizes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes from CornerNet's outputs: ``*_heat [B, C, h, w]`` probabilities, ``*_embed [B, 1, h, w]``,
    ``*_offset [B, 2, h, w]`` (map units). Returns XYXY boxes ``[B, D, 4]`` in input pixels, scores
    and labels ``[B, D]``, best first, ``D = min(max_det, k'^2)`` (``k' = min(k, C h w)``); rejected
    pairs (other classes, not below-right, embedding distance > ``ae_threshold``) have score ``-1``
    and come last. ``image_sizes [B, 2]`` ``(h, w)`` of the images in the padded input (optional): a
    pair whose top-left corner lies in the padding, right of or below the image, is rejected too (its
    box clipped to the image would be empty)."""
    p = pair_corners(tl_heat, br_heat, tl_embed, br_embed, tl_offset, br_offset, stride, k, max_det, ae_threshold,
                     image_sizes)
    return torch.cat([p.tl, p.br], -1) * stride, p.scores, p.labels
