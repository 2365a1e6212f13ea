"""Region Proposal Network (Faster R-CNN, Ren et al., 2015, sec. 3.1; FPN variant, Lin et al., 2017).

A small conv head slides over every pyramid level and predicts, for each of the ``A`` anchors at
each location, an objectness logit and 4 box deltas (R-CNN parametrisation, weights ``(1,1,1,1)``).
Proposals: decode all anchors, keep the ``pre_nms_top_n`` best per level, clip to the image, drop
boxes smaller than ``min_size`` and scores below ``score_thresh``, NMS per level at ``nms_thresh``,
keep the ``post_nms_top_n`` best over all levels. Training: anchors with IoU >= 0.7 with some ground
truth (or the best anchor of a ground truth) are positive, < 0.3 negative; 256 anchors per image
with <= 50 % positives are sampled; loss = BCE on the objectness of the sampled anchors + smooth-L1
(beta 1/9) on the deltas of the positives, divided by the number of sampled anchors.

Anchor order everywhere is level-major, then location-major, then anchor -- the order in which
:meth:`RPNHead.forward`'s maps are flattened by :func:`flatten_levels`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops._pool import cpu_workers, executor
from ...ops.anchors import AnchorGenerator
from ...ops.box_coder import BoxCoder
from ...ops.boxes import box_iou
from ...ops.losses import smooth_l1_loss
from ...ops.matching import BalancedPositiveNegativeSampler, Matcher
from ...ops.nms import batched_nms
from ...structures import boxes as box_geometry


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared by two sibling 1x1 convs: ``A`` objectness logits and ``4A`` deltas."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for conv in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``[B, C, H, W]`` -> objectness ``[B, A, H, W]`` and deltas ``[B, 4A, H, W]``."""
        logits, deltas = [], []
        for f in features:
            t = F.relu(self.conv(f))
            logits.append(self.objectness(t))
            deltas.append(self.deltas(t))
        return logits, deltas


def flatten_levels(maps: Sequence[Tensor], values_per_anchor: int) -> Tensor:
    """Per level ``[B, A*V, H, W]`` -> ``[B, sum_l H_l*W_l*A, V]`` in anchor order (location-major)."""
    out = []
    for m in maps:
        b, av, h, w = m.shape
        a = av // values_per_anchor
        out.append(m.view(b, a, values_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, values_per_anchor))
    return torch.cat(out, dim=1)


@dataclass
class RPNOutput:
    """What the RPN computed for one batch (frame: the padded batch / resized images).

    Attributes:
        objectness: ``[B, N]`` logits for all ``N`` anchors (level-, then location-major order).
        deltas: ``[B, N, 4]`` predicted box deltas relative to ``anchors``.
        anchors: ``[N, 4]`` XYXY anchors, shared by the images of the padded batch.
        num_anchors_per_level: ``N`` split by pyramid level.
        proposals: per image ``[P_i, 4]`` XYXY proposals, best first (detached: Faster R-CNN does not
            back-propagate through proposal coordinates).
        scores: per image ``[P_i]`` sigmoid objectness of the proposals.
    """

    objectness: Tensor
    deltas: Tensor
    anchors: Tensor
    num_anchors_per_level: list[int]
    proposals: list[Tensor]
    scores: list[Tensor]


class RegionProposalNetwork(nn.Module):
    """RPN over the levels of a feature pyramid (one anchor size per level by default).

    Args:
        in_channels: channels of every pyramid level.
        anchor_sizes, aspect_ratios: per level, as :class:`sceneparse.ops.anchors.AnchorGenerator`.
        fg_iou_thresh, bg_iou_thresh: anchor matching thresholds (0.7 / 0.3).
        batch_size_per_image, positive_fraction: anchors sampled per image for the loss (256, 0.5).
        pre_nms_top_n, post_nms_top_n: ``(training, testing)`` counts, per level before NMS and per
            image after it.
        nms_thresh: IoU threshold of the per-level NMS; score_thresh: minimum sigmoid objectness;
        min_size: minimum side (px) of a proposal.
    """

    def __init__(self, in_channels: int, anchor_sizes: Sequence[Sequence[float]],
                 aspect_ratios: Sequence[Sequence[float]], *, fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: tuple[int, int] = (2000, 1000), post_nms_top_n: tuple[int, int] = (2000, 1000),
                 nms_thresh: float = 0.7, score_thresh: float = 0.0, min_size: float = 1e-3):
        super().__init__()
        self.anchor_generator = AnchorGenerator(anchor_sizes, aspect_ratios)
        num_anchors = set(self.anchor_generator.num_anchors_per_location())
        if len(num_anchors) != 1:
            raise ValueError(f"the shared RPN head needs the same number of anchors on every level, got {num_anchors}")
        self.head = RPNHead(in_channels, num_anchors.pop())
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = tuple(int(v) for v in pre_nms_top_n)
        self.post_nms_top_n = tuple(int(v) for v in post_nms_top_n)
        self.nms_thresh = float(nms_thresh)
        self.score_thresh = float(score_thresh)
        self.min_size = float(min_size)

    @property
    def num_levels(self) -> int:
        return self.anchor_generator.num_levels

    def forward(self, features: Sequence[Tensor], padded_size: tuple[int, int],
                image_sizes: Sequence[tuple[int, int]]) -> RPNOutput:
        """``features``: pyramid levels ``[B, C, H_l, W_l]``; ``padded_size``: ``(H, W)`` of the batch
        tensor; ``image_sizes``: valid ``(h, w)`` of each image (proposals are clipped to it)."""
        if len(features) != self.num_levels:
            raise ValueError(f"RPN built for {self.num_levels} levels, got {len(features)} feature maps")
        logits, deltas = self.head(features)
        f0 = features[0]
        # anchors (and the boxes matched to them) in at least float32: under bfloat16 autocast a
        # 1 px wide box at x = 319 rounds to width 0 and its regression target to -inf
        anchors = torch.cat(self.anchor_generator(padded_size, [tuple(f.shape[-2:]) for f in features],
                                                  device=f0.device,
                                                  dtype=torch.promote_types(f0.dtype, torch.float32)))
        per_level = [l.shape[1] * l.shape[2] * l.shape[3] for l in logits]  # traced sizes in graph export
        if not torch.jit.is_tracing():
            per_level = [int(n) for n in per_level]
        objectness = flatten_levels(logits, 1)[..., 0]
        deltas = flatten_levels(deltas, 4)
        proposals, scores = self._proposals(objectness.detach(), deltas.detach(), anchors, per_level, image_sizes)
        return RPNOutput(objectness, deltas, anchors, per_level, proposals, scores)

    def _proposals(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, per_level: list[int],
                   image_sizes: Sequence[tuple[int, int]]) -> tuple[list[Tensor], list[Tensor]]:
        b = objectness.shape[0]
        pre_n = self.pre_nms_top_n[0 if self.training else 1]
        post_n = self.post_nms_top_n[0 if self.training else 1]
        # top-k per level (a level is a contiguous block of anchors), indices into all anchors
        top_idx, top_lvl, offset = [], [], 0
        for lvl, (ob, n) in enumerate(zip(objectness.split(per_level, dim=1), per_level)):
            k = torch.clamp(n, max=pre_n) if isinstance(n, Tensor) else min(pre_n, n)  # n traced: k in the graph
            idx = ob.topk(k, dim=1).indices + offset
            top_idx.append(idx)
            top_lvl.append(torch.full_like(idx, lvl))
            offset += n
        top_idx = torch.cat(top_idx, dim=1)  # [B, K]
        levels = torch.cat(top_lvl, dim=1)
        batch_idx = torch.arange(b, device=objectness.device)[:, None]
        scores = torch.sigmoid(objectness[batch_idx, top_idx])
        boxes = self.box_coder.decode(deltas[batch_idx, top_idx].reshape(-1, 4),
                                      anchors[top_idx.reshape(-1)]).view(b, -1, 4)

        def one_image(i: int) -> tuple[Tensor, Tensor]:
            bx = box_geometry.clip(boxes[i], image_sizes[i])
            w, h = bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]
            keep = (w >= self.min_size) & (h >= self.min_size) & (scores[i] >= self.score_thresh)
            bx, sc, lv = bx[keep], scores[i][keep], levels[i][keep]
            keep = batched_nms(bx, sc, lv, self.nms_thresh)[:post_n]
            return bx[keep], sc[keep]

        # the images' NMS calls are independent and torchvision's CPU kernel is single-threaded:
        # on the CPU they run side by side on the intra-op threads
        workers = cpu_workers(boxes.device, b)
        per_image = list(executor(workers).map(one_image, range(b))) if workers > 1 else \
            [one_image(i) for i in range(b)]
        return [p[0] for p in per_image], [p[1] for p in per_image]

    def loss(self, out: RPNOutput, gt_boxes: Sequence[Tensor]) -> dict[str, Tensor]:
        """``gt_boxes``: per image ``[G_i, 4]`` in the batch frame. Returns ``loss_objectness``
        (BCE, mean over sampled anchors) and ``loss_rpn_box_reg`` (smooth-L1 sum over positives /
        number of sampled anchors)."""
        labels, matched = [], []
        for boxes in gt_boxes:  # one iteration per image
            if boxes.numel() == 0:
                m = torch.full((out.anchors.shape[0],), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64,
                               device=out.anchors.device)
            else:
                m = self.matcher(box_iou(boxes.to(out.anchors.dtype), out.anchors))
            lab = (m >= 0).to(torch.float32)
            lab[m == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
            matched.append(m)
        pos_masks, neg_masks = self.sampler(labels)
        pred, target = [], []
        for i, (boxes, m, pos_mask) in enumerate(zip(gt_boxes, matched, pos_masks)):
            pos = torch.where(pos_mask)[0]
            pred.append(out.deltas[i, pos])
            target.append(self.box_coder.encode(boxes.to(out.anchors.dtype)[m[pos]], out.anchors[pos]))
        sampled = torch.where(torch.cat(pos_masks) | torch.cat(neg_masks))[0]
        box_loss = smooth_l1_loss(torch.cat(pred), torch.cat(target), beta=1 / 9, reduction="sum")
        box_loss = box_loss / max(sampled.numel(), 1)
        obj_loss = F.binary_cross_entropy_with_logits(out.objectness.reshape(-1)[sampled], torch.cat(labels)[sampled])
        return {"loss_objectness": obj_loss, "loss_rpn_box_reg": box_loss}


__all__ = ["RPNHead", "RegionProposalNetwork", "RPNOutput", "flatten_levels"]
