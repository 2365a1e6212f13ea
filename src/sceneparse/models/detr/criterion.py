"""DETR's set prediction loss (Carion et al., 2020, sec. 3.1, eq. 1-2 and appendix A.2).

After the Hungarian match (:func:`sceneparse.ops.set_matching.hungarian_match`), the loss of one
decoder layer is

``L = CE(classes; no-object weight 0.1) + 5 * L1(b, bhat) + 2 * (1 - GIoU(b, bhat))``

* the cross-entropy covers all ``N`` predictions: matched ones towards their object's class, the
  others towards "no object" (the last class), whose weight is ``eos_coef = 0.1`` to balance the
  many unmatched slots (the weighted mean divides by the sum of the weights, as DETR's
  ``F.cross_entropy(..., weight)``);
* the box losses cover the matched pairs only, in normalised ``cxcywh`` (L1) and their corners
  (GIoU), summed and divided by the number of objects in the batch (at least 1).

With auxiliary losses every decoder layer's output (through the shared LayerNorm and the shared
heads) gets its own match and the same loss; they are reported as ``loss_ce_0 ... loss_giou_4`` for
the first ``L - 1`` layers and ``loss_ce / loss_bbox / loss_giou`` for the last. Values are already
weighted: the total loss is their sum.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops.boxes import generalized_box_iou_paired
from ...ops.set_matching import cxcywh_to_xyxy, hungarian_match

__all__ = ["SetCriterion"]


class SetCriterion:
    """DETR's matcher + loss. ``num_classes`` foreground classes (logits have ``C + 1``)."""

    def __init__(self, num_classes: int, *, eos_coef: float = 0.1, class_cost: float = 1.0, l1_cost: float = 5.0,
                 giou_cost: float = 2.0, ce_weight: float = 1.0, l1_weight: float = 5.0, giou_weight: float = 2.0):
        self.num_classes = int(num_classes)
        self.eos_coef = float(eos_coef)
        self.costs = dict(class_weight=class_cost, l1_weight=l1_cost, giou_weight=giou_cost)
        self.weights = dict(ce=ce_weight, bbox=l1_weight, giou=giou_weight)

    def layer_loss(self, logits: Tensor, boxes: Tensor, gt_labels: Sequence[Tensor], gt_boxes: Sequence[Tensor],
                   num_boxes: float) -> dict[str, Tensor]:
        """Loss of one decoder layer: ``logits [B, N, C + 1]``, ``boxes [B, N, 4]`` (``cxcywh`` in
        [0, 1]); targets per image (labels ``[M]``, boxes ``[M, 4]`` ``cxcywh`` in [0, 1])."""
        B, N, K = logits.shape
        if K != self.num_classes + 1:
            raise ValueError(f"logits have {K} classes, expected {self.num_classes} + 1 (no object)")
        matches = hungarian_match(logits.detach(), boxes.detach(), gt_labels, gt_boxes, **self.costs)
        batch_idx = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(matches)])
        pred_idx = torch.cat([p for p, _ in matches])
        classes = torch.full((B, N), self.num_classes, dtype=torch.int64, device=logits.device)
        classes[batch_idx, pred_idx] = torch.cat([gt_labels[b][g] for b, (_, g) in enumerate(matches)]).to(
            logits.device)
        weight = torch.ones(K, device=logits.device, dtype=logits.dtype)
        weight[-1] = self.eos_coef
        loss_ce = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), weight=weight)
        src = boxes[batch_idx, pred_idx]
        tgt = torch.cat([gt_boxes[b][g] for b, (_, g) in enumerate(matches)]).to(boxes)
        loss_bbox = (src - tgt).abs().sum() / num_boxes
        loss_giou = (1 - generalized_box_iou_paired(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt))).sum() / num_boxes
        w = self.weights
        return {"loss_ce": w["ce"] * loss_ce, "loss_bbox": w["bbox"] * loss_bbox, "loss_giou": w["giou"] * loss_giou}

    def __call__(self, logits: Tensor, boxes: Tensor, gt_labels: Sequence[Tensor], gt_boxes: Sequence[Tensor], *,
                 aux: bool = True, prefix: str = "") -> dict[str, Tensor]:
        """``logits [L, B, N, C + 1]`` / ``boxes [L, B, N, 4]`` of all decoder layers -> the losses
        of the last layer and, with ``aux``, of every earlier one (suffix ``_<layer>``)."""
        num_boxes = max(float(sum(int(t.shape[0]) for t in gt_labels)), 1.0)
        out = {f"{prefix}{k}": v for k, v in
               self.layer_loss(logits[-1], boxes[-1], gt_labels, gt_boxes, num_boxes).items()}
        if aux:
            for i in range(logits.shape[0] - 1):
                for k, v in self.layer_loss(logits[i], boxes[i], gt_labels, gt_boxes, num_boxes).items():
                    out[f"{prefix}{k}_{i}"] = v
        return out
