"""Bipartite (Hungarian) matching of a set of predictions to the ground truth, as DETR trains.

DETR (Carion et al., 2020, sec. 3.1) predicts a fixed-size set of ``N`` boxes and finds the
permutation ``sigma`` of the predictions with the lowest total matching cost against the ``M <= N``
ground-truth objects (the rest are matched to "no object"):

``C_match(y_i, yhat_sigma(i)) = -w_class * p_sigma(i)(c_i) + w_L1 * ||b_i - bhat_sigma(i)||_1
- w_giou * GIoU(b_i, bhat_sigma(i))``

with the class *probability* (not its log: it keeps the class and box terms commensurable) and the
paper's weights ``w_class = 1``, ``w_L1 = 5``, ``w_giou = 2``. Boxes are ``cxcywh`` normalised by the
image size (``[0, 1]``); GIoU is computed on their ``xyxy`` corners. The assignment is solved exactly
by the Hungarian algorithm (scipy's ``linear_sum_assignment``, on the CPU).

:func:`one_to_many_targets` repeats the ground truth ``k`` times for the auxiliary one-to-many match
of H-DETR (Jia et al., 2023): each object is then matched to ``k`` queries of a separate query group.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .boxes import generalized_box_iou

__all__ = ["cxcywh_to_xyxy", "xyxy_to_cxcywh", "set_matching_cost", "hungarian_match", "one_to_many_targets"]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` centre / size -> corners (same units)."""
    c, s = boxes[..., :2], boxes[..., 2:]
    return torch.cat([c - 0.5 * s, c + 0.5 * s], dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``[..., 4]`` corners -> centre / size (same units)."""
    p, q = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(p + q) / 2, q - p], dim=-1)


def set_matching_cost(logits: Tensor, boxes: Tensor, gt_labels: Tensor, gt_boxes: Tensor, *,
                      class_weight: float = 1.0, l1_weight: float = 5.0, giou_weight: float = 2.0) -> Tensor:
    """DETR's matching cost of every prediction against every target of one image.

    Args:
        logits: ``[N, C + 1]`` class logits (the last class is "no object").
        boxes: ``[N, 4]`` predicted ``cxcywh`` boxes in ``[0, 1]``.
        gt_labels: ``[M]`` int64 in ``0..C-1``; gt_boxes: ``[M, 4]`` ``cxcywh`` in ``[0, 1]``.

    Returns ``[N, M]`` (float32): ``-w_class p(c) + w_L1 L1 - w_giou GIoU``.
    """
    prob = logits.float().softmax(-1)
    cost_class = -prob[:, gt_labels]
    b, g = boxes.float(), gt_boxes.float()
    cost_l1 = torch.cdist(b, g, p=1)
    cost_giou = -generalized_box_iou(cxcywh_to_xyxy(b), cxcywh_to_xyxy(g))
    return class_weight * cost_class + l1_weight * cost_l1 + giou_weight * cost_giou


@torch.no_grad()
def hungarian_match(logits: Tensor, boxes: Tensor, gt_labels: Sequence[Tensor], gt_boxes: Sequence[Tensor], *,
                    class_weight: float = 1.0, l1_weight: float = 5.0,
                    giou_weight: float = 2.0) -> list[tuple[Tensor, Tensor]]:
    """The lowest-cost one-to-one assignment per image (:func:`set_matching_cost`).

    Args:
        logits: ``[B, N, C + 1]``; boxes: ``[B, N, 4]`` ``cxcywh`` in ``[0, 1]``.
        gt_labels, gt_boxes: per image ``[M_b]`` / ``[M_b, 4]`` (``cxcywh`` in ``[0, 1]``).

    Returns per image ``(pred_idx, gt_idx)``, two int64 ``[min(N, M_b)]`` tensors on ``logits``'
    device, sorted by ``pred_idx``: prediction ``pred_idx[j]`` is matched to target ``gt_idx[j]``.
    The cost of all images is computed in one batch (targets concatenated) and split, so the
    Hungarian solver is the only per-image step.
    """
    B, N = logits.shape[:2]
    if len(gt_labels) != B or len(gt_boxes) != B:
        raise ValueError(f"{B} images of predictions but {len(gt_labels)} / {len(gt_boxes)} targets")
    sizes = [int(t.shape[0]) for t in gt_labels]
    dev = logits.device
    empty = (torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=torch.int64, device=dev))
    if sum(sizes) == 0:
        return [empty for _ in range(B)]
    labels = torch.cat(list(gt_labels)).to(dev)
    targets = torch.cat(list(gt_boxes)).to(dev)
    cost = set_matching_cost(logits.flatten(0, 1), boxes.flatten(0, 1), labels, targets, class_weight=class_weight,
                             l1_weight=l1_weight, giou_weight=giou_weight).view(B, N, -1).cpu()
    if not torch.isfinite(cost).all():
        raise ValueError("the matching cost is not finite (NaN / inf predictions or targets)")
    out = []
    for b, c in enumerate(cost.split(sizes, dim=-1)):
        if sizes[b] == 0:
            out.append(empty)
            continue
        rows, cols = linear_sum_assignment(c[b].numpy())
        out.append((torch.as_tensor(rows, dtype=torch.int64, device=dev),
                    torch.as_tensor(np.asarray(cols), dtype=torch.int64, device=dev)))
    return out


def one_to_many_targets(labels: Tensor, boxes: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ground truth of one image repeated ``k`` times (``[k M]`` / ``[k M, 4]``), so that the
    Hungarian match assigns each object to ``k`` predictions (H-DETR's one-to-many branch)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return labels.repeat(k), boxes.repeat(k, 1)
