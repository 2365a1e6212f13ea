"""Fast R-CNN minibatch sampling (Girshick, 2015, sec. 2.3): which proposals train the RoI heads.

The ground-truth boxes are appended to the proposals (so that every object has at least one
perfectly placed RoI early in training), every RoI is matched to the ground truth with the highest
IoU (foreground if IoU >= ``fg_iou_thresh``, background below ``bg_iou_thresh``, ignored in between),
and ``batch_size_per_image`` RoIs with at most ``positive_fraction`` foreground are drawn at random.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ...ops.boxes import box_iou
from ...ops.matching import BalancedPositiveNegativeSampler, Matcher


@dataclass
class SampledRoIs:
    """Training RoIs of a batch, per image (frame: the batch / resized images).

    Attributes:
        boxes: per image ``[R_i, 4]`` XYXY RoIs (sampled proposals and ground-truth boxes).
        labels: per image ``int64 [R_i]``: ``0`` background, ``1..C`` = dataset label + 1.
        matched_idxs: per image ``int64 [R_i]``: index of the matched ground-truth object (0 for
            background RoIs, whose value is meaningless).
    """

    boxes: list[Tensor]
    labels: list[Tensor]
    matched_idxs: list[Tensor]

    def positives(self) -> "SampledRoIs":
        """The foreground RoIs only (what the mask and keypoint heads train on)."""
        keep = [torch.where(l > 0)[0] for l in self.labels]
        return SampledRoIs([b[k] for b, k in zip(self.boxes, keep)], [l[k] for l, k in zip(self.labels, keep)],
                           [m[k] for m, k in zip(self.matched_idxs, keep)])


class ProposalSampler:
    """Match proposals to ground truth and draw a balanced minibatch of RoIs per image.

    Args:
        fg_iou_thresh, bg_iou_thresh: IoU thresholds (0.5 / 0.5 in Faster R-CNN with FPN).
        batch_size_per_image: RoIs per image (512); positive_fraction: at most this share of
            foreground (0.25).
    """

    def __init__(self, fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25):
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)

    def __repr__(self) -> str:
        return f"ProposalSampler({self.matcher!r}, {self.sampler!r})"

    def __call__(self, proposals: Sequence[Tensor], gt_boxes: Sequence[Tensor],
                 gt_labels: Sequence[Tensor]) -> SampledRoIs:
        """``proposals``/``gt_boxes`` per image ``[P_i, 4]`` / ``[G_i, 4]``; ``gt_labels`` per image
        ``int64 [G_i]`` in ``0..C-1`` (the dataset's labels; shifted by one here)."""
        rois, labels, matched = [], [], []
        for props, boxes, labs in zip(proposals, gt_boxes, gt_labels):  # one iteration per image
            boxes = boxes.to(props.dtype)
            props = torch.cat([props, boxes])
            if boxes.shape[0] == 0:
                m = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                lab = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
            else:
                raw = self.matcher(box_iou(boxes, props))
                m = raw.clamp(min=0)
                lab = labs.to(torch.int64)[m] + 1
                lab[raw == Matcher.BELOW_LOW_THRESHOLD] = 0
                lab[raw == Matcher.BETWEEN_THRESHOLDS] = -1
            rois.append(props)
            labels.append(lab)
            matched.append(m)
        pos_masks, neg_masks = self.sampler(labels)
        keep = [torch.where(p | n)[0] for p, n in zip(pos_masks, neg_masks)]
        return SampledRoIs([r[k] for r, k in zip(rois, keep)], [l[k] for l, k in zip(labels, keep)],
                           [m[k] for m, k in zip(matched, keep)])


__all__ = ["ProposalSampler", "SampledRoIs"]
