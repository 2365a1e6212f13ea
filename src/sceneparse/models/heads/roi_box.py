"""The Fast R-CNN box head on RoIs (Girshick, 2015; with FPN: Lin et al., 2017, sec. 4.2).

Each RoI is pooled by RoIAlign (7x7, from the FPN level that matches its size), flattened and passed
through two fully connected layers (the "2-fc MLP head", 1024-d); two sibling linear layers predict
``C + 1`` class logits (class 0 = background) and class-specific box deltas (R-CNN parametrisation
with weights ``(10, 10, 5, 5)``).

Training: softmax cross-entropy over the sampled RoIs, plus smooth-L1 (beta 1/9) between the deltas
predicted *for the ground-truth class* and the encoded ground truth of the foreground RoIs, summed and
divided by the number of sampled RoIs. Inference: per class decode + clip, drop background and scores
``<= score_thresh`` and boxes smaller than 0.01 px, class-wise NMS at ``nms_thresh``, keep the
``detections_per_img`` best.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.box_coder import BoxCoder
from ...ops.losses import smooth_l1_loss
from ...ops.nms import batched_nms
from ...ops.roi import multiscale_roi_align
from ...structures import boxes as box_geometry
from .proposal_sampler import SampledRoIs


class TwoMLPHead(nn.Module):
    """``[R, C, S, S]`` pooled features -> ``[R, representation_size]`` (fc6, fc7, ReLU after each)."""

    def __init__(self, in_features: int, representation_size: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """``[R, D]`` -> class logits ``[R, C+1]`` and box deltas ``[R, 4 (C+1)]`` (class ``j`` in columns
    ``4j..4j+3``)."""

    def __init__(self, in_features: int, num_classes_with_bg: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes_with_bg)
        self.bbox_pred = nn.Linear(in_features, num_classes_with_bg * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


@dataclass
class Detections:
    """Final detections of one image in the batch (resized) frame, before mapping to original pixels.

    Attributes:
        boxes: ``[D, 4]`` XYXY; scores: ``[D]`` softmax probabilities; labels: ``int64 [D]`` in
            ``1..C`` (the heads' convention, background = 0; results subtract 1).
        mask_probs: ``[D, M, M]`` sigmoid mask of the detected class inside the box (Mask R-CNN).
        keypoint_logits: ``[D, K, S, S]`` keypoint heatmap logits inside the box (Keypoint R-CNN).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    mask_probs: Tensor | None = None
    keypoint_logits: Tensor | None = None


class RoIBoxHead(nn.Module):
    """RoIAlign + :class:`TwoMLPHead` + :class:`FastRCNNPredictor`, with the Fast R-CNN loss and inference.

    Args:
        in_channels: channels of the pyramid levels; num_classes: foreground classes ``C``.
        pool_size, sampling_ratio: RoIAlign output side (7) and samples per bin side (2).
        representation_size: width of the MLP (1024).
        bbox_reg_weights: box-coder weights (10, 10, 5, 5).
        score_thresh, nms_thresh, detections_per_img: inference settings (0.05, 0.5, 100).
    """

    def __init__(self, in_channels: int, num_classes: int, *, pool_size: int = 7, sampling_ratio: int = 2,
                 representation_size: int = 1024, bbox_reg_weights: tuple[float, float, float, float] = (10., 10., 5., 5.),
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (foreground classes), got {num_classes}")
        self.num_classes = int(num_classes)
        self.pool_size = int(pool_size)
        self.sampling_ratio = int(sampling_ratio)
        self.head = TwoMLPHead(in_channels * pool_size * pool_size, representation_size)
        self.predictor = FastRCNNPredictor(representation_size, num_classes + 1)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)

    def forward(self, features: Sequence[Tensor], rois: Sequence[Tensor],
                image_sizes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """Features of the pooled levels, per-image RoIs ``[R_i, 4]`` -> logits ``[R, C+1]``, deltas
        ``[R, 4 (C+1)]`` (RoIs of all images concatenated in order)."""
        pooled = multiscale_roi_align(features, rois, image_sizes, self.pool_size, self.sampling_ratio)
        return self.predictor(self.head(pooled))

    def loss(self, class_logits: Tensor, box_deltas: Tensor, sampled: SampledRoIs,
             gt_boxes: Sequence[Tensor]) -> dict[str, Tensor]:
        """``loss_classifier`` (CE, mean over RoIs) and ``loss_box_reg`` (smooth-L1 over foreground
        RoIs of their class' deltas, summed, / number of RoIs)."""
        labels = torch.cat(sampled.labels)
        pos_targets = []
        for rois, lab, m, gt in zip(sampled.boxes, sampled.labels, sampled.matched_idxs, gt_boxes):
            pos = torch.where(lab > 0)[0]
            pos_targets.append(self.box_coder.encode(gt.to(rois.dtype)[m[pos]], rois[pos]))
        pos = torch.where(labels > 0)[0]
        # (explicit class count: a batch without any RoI -- no proposals and no ground truth -- has 0 rows)
        deltas = box_deltas.reshape(box_deltas.shape[0], box_deltas.shape[1] // 4, 4)[pos, labels[pos]]
        box_loss = smooth_l1_loss(deltas, torch.cat(pos_targets), beta=1 / 9, reduction="sum")
        n = max(labels.numel(), 1)  # the mean over RoIs; 0, not NaN, without any
        return {"loss_classifier": F.cross_entropy(class_logits, labels, reduction="sum") / n,
                "loss_box_reg": box_loss / n}

    def detect(self, class_logits: Tensor, box_deltas: Tensor, rois: Sequence[Tensor],
               image_sizes: Sequence[tuple[int, int]], *, score_thresh: float | None = None,
               nms_thresh: float | None = None, detections_per_img: int | None = None) -> list[Detections]:
        """Inference: per image, class-specific boxes after thresholding and class-wise NMS, best first.
        The keyword settings override the head's for this call (``None``: the head's)."""
        score_thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        nms_thresh = self.nms_thresh if nms_thresh is None else float(nms_thresh)
        detections_per_img = self.detections_per_img if detections_per_img is None else int(detections_per_img)
        num_cls = class_logits.shape[-1]
        counts = [r.shape[0] for r in rois]
        boxes = self.box_coder.decode(box_deltas, torch.cat(list(rois)))  # [R, C+1, 4]
        scores = F.softmax(class_logits, -1)
        out = []
        for bx, sc, size in zip(boxes.split(counts), scores.split(counts), image_sizes):  # per image
            bx = box_geometry.clip(bx, size)[:, 1:].reshape(-1, 4)
            lab = torch.arange(1, num_cls, device=sc.device).repeat(sc.shape[0])
            sc = sc[:, 1:].reshape(-1)
            w, h = bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]
            keep = torch.where(sc > score_thresh)[0]
            keep = keep[(w[keep] >= 1e-2) & (h[keep] >= 1e-2)]
            bx, sc, lab = bx[keep], sc[keep], lab[keep]
            keep = batched_nms(bx, sc, lab, nms_thresh)[: detections_per_img]
            out.append(Detections(bx[keep], sc[keep], lab[keep]))
        return out


__all__ = ["TwoMLPHead", "FastRCNNPredictor", "RoIBoxHead", "Detections"]
