"""Training of YOLOv8 / YOLO11 (ultralytics' ``v8DetectionLoss``): task-aligned assignment, then
CIoU + DFL box losses and a BCE class loss.

* Task-aligned assigner (TOOD, Feng et al. 2021; :func:`task_aligned_assign`): for every ground
  truth, the candidate points are the anchor centres strictly inside it (8.4 floors a side shorter
  than the middle stride, 16 px, to 16 px about the centre); their alignment ``t = s^alpha u^beta``
  combines the predicted score ``s`` of the gt's class and the CIoU ``u`` of the predicted box with
  the gt (``alpha = 0.5``, ``beta = 6``); the ``topk = 10`` best are positives. A point positive for
  several gts keeps the one it overlaps most. Its soft class target is ``t / max t * max u`` (maxima
  over the gt's positives), one-hot on the gt's class.
* Losses, each divided by ``max(sum of soft targets, 1)``: BCE on all class logits against the soft
  targets; ``(1 - CIoU)`` per positive weighted by its soft target; DFL (Generalized Focal Loss):
  cross-entropy of each side's 16-bin distribution with the two bins around the target distance
  (in stride units, clamped to ``[0, 14.99]``), linearly weighted, mean over the 4 sides, weighted
  like the CIoU term. Gains ``box 7.5, cls 0.5, dfl 1.5``; ultralytics multiplies the sum by the
  batch size (its loss is per image, summed over the batch), and so do we.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .detector import YOLORaw


def ciou_paired(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (Zheng et al., 2020) of paired XYXY boxes ``[..., 4]``: ``IoU - rho^2 / c^2 - alpha v``
    with ``v = 4 / pi^2 (atan(w_b / h_b) - atan(w_a / h_a))^2`` and ``alpha = v / (v - IoU + 1 + eps)``
    (no gradient through ``alpha``); ``eps`` placed as ultralytics places it (heights, union, diagonal)."""
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    w1, h1 = ax2 - ax1, ay2 - ay1 + eps
    w2, h2 = bx2 - bx1, by2 - by1 + eps
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(0) * \
        (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((bx1 + bx2 - ax1 - ax2).pow(2) + (by1 + by2 - ay1 - ay2).pow(2)) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def task_aligned_assign(pd_scores: Tensor, pd_boxes: Tensor, anchors: Tensor, gt_labels: Tensor, gt_boxes: Tensor,
                        gt_valid: Tensor, *, topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                        min_side: float = 16.0, eps: float = 1e-9) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Task-aligned assignment (see the module docstring), batched and vectorised.

    Args:
        pd_scores: ``[B, A, C]`` predicted probabilities; pd_boxes: ``[B, A, 4]`` predicted XYXY px.
        anchors: ``[A, 2]`` anchor centres in px.
        gt_labels: ``[B, M]`` int; gt_boxes: ``[B, M, 4]`` XYXY px; gt_valid: ``[B, M]`` bool (padding False).
        min_side: gt sides shorter than this are widened to it when choosing candidates (ultralytics 8.4:
            the middle stride).

    Returns:
        ``(target_boxes [B, A, 4], target_scores [B, A, C], fg [B, A] bool, target_gt [B, A] int64)``.
    """
    b, a, c = pd_scores.shape
    m = gt_boxes.shape[1]
    if m == 0:
        return (torch.zeros_like(pd_boxes), torch.zeros_like(pd_scores), torch.zeros((b, a), dtype=torch.bool,
                device=pd_scores.device), torch.zeros((b, a), dtype=torch.long, device=pd_scores.device))
    # candidates: anchor centres strictly inside the (floored) gt box
    ctr = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    half = torch.where(gt_valid[..., None] & (gt_boxes[..., 2:] - gt_boxes[..., :2] < min_side),
                       torch.full_like(ctr, min_side), gt_boxes[..., 2:] - gt_boxes[..., :2]) / 2
    lt, rb = (ctr - half)[:, :, None], (ctr + half)[:, :, None]  # [B, M, 1, 2]
    p = anchors[None, None]  # [1, 1, A, 2]
    inside = torch.cat((p - lt, rb - p), -1).amin(-1) > eps  # [B, M, A]
    cand = inside & gt_valid[..., None]
    # alignment metric on the candidates
    overlaps = torch.zeros((b, m, a), dtype=pd_boxes.dtype, device=pd_boxes.device)
    align = torch.zeros_like(overlaps)
    bi, mi, ai = torch.nonzero(cand, as_tuple=True)
    u = ciou_paired(gt_boxes[bi, mi], pd_boxes[bi, ai]).clamp(0)
    s = pd_scores[bi, ai, gt_labels[bi, mi].long()]
    overlaps[bi, mi, ai] = u
    align[bi, mi, ai] = s.pow(alpha) * u.pow(beta)
    # the top-k points of each gt (those not inside it dropped again); a padded gt selects nothing
    k = min(topk, a)
    top = align.topk(k, dim=-1).indices  # [B, M, k]
    chosen = torch.zeros((b, m, a), dtype=torch.bool, device=align.device)
    chosen.scatter_(-1, top, True)
    pos = chosen & cand
    # a point positive for several gts keeps the gt it overlaps most
    multi = pos.sum(1, keepdim=True) > 1  # [B, 1, A]
    best = F.one_hot(overlaps.argmax(1), m).permute(0, 2, 1).bool()  # [B, M, A]
    pos = torch.where(multi, best & pos.any(1, keepdim=True), pos)
    fg = pos.any(1)
    target_gt = pos.to(torch.uint8).argmax(1)  # [B, A]
    labels = torch.gather(gt_labels.long(), 1, target_gt)
    target_boxes = torch.gather(gt_boxes, 1, target_gt[..., None].expand(-1, -1, 4))
    # soft targets: t / max t * max u over each gt's positives
    align = align * pos
    overlaps = overlaps * pos
    norm = (align * overlaps.amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + eps)).amax(1)  # [B, A]
    target_scores = F.one_hot(labels, c).to(pd_scores.dtype) * (fg[..., None] * norm[..., None])
    return target_boxes, target_scores, fg, target_gt


def dfl_loss(logits: Tensor, target: Tensor, reg_max: int = 16) -> Tensor:
    """Distribution focal loss per point: ``[N, 4, reg_max]`` logits, ``[N, 4]`` target distances (stride
    units) -> ``[N]`` (mean over the sides of the two-bin cross-entropy)."""
    t = target.clamp(0, reg_max - 1 - 0.01)
    left = t.long()
    wl = left + 1 - t
    logp = F.log_softmax(logits, -1)
    ce = -(logp.gather(-1, left[..., None])[..., 0] * wl + logp.gather(-1, (left + 1)[..., None])[..., 0] * (1 - wl))
    return ce.mean(-1)


def yolo_detection_loss(raw: YOLORaw, gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor], *,
                        gains: dict[str, float], topk: int = 10, alpha: float = 0.5,
                        beta: float = 6.0) -> dict[str, Tensor]:
    """The v8 detection loss of one batch (targets in the network-input frame, XYXY px)."""
    bsz, _, a = raw.box_logits.shape
    reg_max = raw.box_logits.shape[1] // 4
    dev, dtype = raw.box_logits.device, raw.box_logits.dtype
    pred_dist = raw.box_logits.permute(0, 2, 1).reshape(bsz, a, 4, reg_max)
    pred_logits = raw.cls_logits.permute(0, 2, 1)  # [B, A, C]
    pts, stride = raw.anchors()  # grid units, [A, 1]
    bins = torch.arange(reg_max, dtype=dtype, device=dev)
    dist = pred_dist.softmax(-1) @ bins  # [B, A, 4]
    pred_boxes = torch.cat((pts - dist[..., :2], pts + dist[..., 2:]), -1)  # grid units
    m = max((len(g) for g in gt_boxes), default=0)
    boxes = torch.zeros((bsz, m, 4), dtype=dtype, device=dev)
    labels = torch.zeros((bsz, m), dtype=torch.long, device=dev)
    valid = torch.zeros((bsz, m), dtype=torch.bool, device=dev)
    for i, (g, lab) in enumerate(zip(gt_boxes, gt_labels)):
        boxes[i, :len(g)] = g.to(dev, dtype)
        labels[i, :len(g)] = lab.to(dev)
        valid[i, :len(g)] = True
    mid_stride = float(raw.strides[len(raw.strides) // 2]) if len(raw.strides) > 1 else float(raw.strides[0])
    target_boxes, target_scores, fg, _ = task_aligned_assign(
        pred_logits.detach().sigmoid(), (pred_boxes.detach() * stride), pts * stride, labels, boxes, valid,
        topk=topk, alpha=alpha, beta=beta, min_side=mid_stride)
    total = target_scores.sum().clamp(min=1)
    loss_cls = F.binary_cross_entropy_with_logits(pred_logits, target_scores, reduction="sum") / total
    target_grid = target_boxes / stride
    weight = target_scores.sum(-1)[fg]
    iou = ciou_paired(pred_boxes[fg], target_grid[fg])
    loss_box = ((1.0 - iou) * weight).sum() / total
    ltrb = torch.cat((pts - target_grid[..., :2], target_grid[..., 2:] - pts), -1)[fg]
    loss_dfl = (dfl_loss(pred_dist[fg], ltrb, reg_max) * weight).sum() / total
    if not fg.any():  # keep the box branch in the graph (zero loss, defined gradients)
        loss_box = loss_box + 0.0 * pred_dist.sum()
        loss_dfl = loss_dfl + 0.0 * pred_dist.sum()
    return {"loss_box": loss_box * gains["box"] * bsz, "loss_cls": loss_cls * gains["cls"] * bsz,
            "loss_dfl": loss_dfl * gains["dfl"] * bsz}


__all__ = ["ciou_paired", "dfl_loss", "task_aligned_assign", "yolo_detection_loss"]
