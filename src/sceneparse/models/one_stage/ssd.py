"""SSD (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016): SSD300 on VGG-16.

* Multi-scale feature maps (sec. 2.1): six maps of 38, 19, 10, 5, 3, 1 cells at 300 px
  (:class:`~sceneparse.models.backbones.vgg.SSDVGG16Backbone`); on each a 3x3 conv predicts, per
  default box, ``C + 1`` class scores (softmax, column 0 = background) and 4 offsets.
* Default boxes (sec. 2.2, "choosing scales and aspect ratios"): on map ``k`` scale ``s_k`` (fraction
  of the image side), boxes ``s_k x s_k`` and ``s'_k x s'_k`` with ``s'_k = sqrt(s_k s_{k+1})`` plus
  ``(s_k sqrt(a), s_k / sqrt(a))`` and its transpose for each extra aspect ratio ``a`` (2, or 2 and 3):
  4 or 6 per location, 8732 in all. Centres ``((i + 0.5) / f_k, (j + 0.5) / f_k)`` with
  ``f_k = image / step_k``; widths / heights clipped to ``[0, 1]``. SSD300's scales
  ``0.07, 0.15, 0.33, 0.51, 0.69, 0.87 (, 1.05)`` and steps ``8, 16, 32, 64, 100, 300`` are those of
  the paper's released model (and torchvision's).
* Matching (sec. 2.2): each ground truth takes its best default box, and every default box with
  IoU > 0.5 with some ground truth matches the best one.
* Loss (eq. 1-3): ``(L_conf + L_loc) / N`` with ``N`` matched boxes; ``L_loc`` smooth-L1 (beta 1) on the
  R-CNN offsets with variances ``0.1, 0.2`` (weights ``10, 10, 5, 5``); ``L_conf`` softmax cross
  entropy over the positives and the *hard negatives*: per image the ``3 x #positives`` background
  boxes of highest loss (negatives : positives at most 3 : 1).
* Inference: per class, softmax score ``> 0.01``, the 400 best boxes; class-wise NMS at 0.45; 200
  detections per image (torchvision's settings).

The input is resized to a fixed 300 x 300 (aspect ratio not kept), with torchvision's SSD300
normalisation (mean of the 0-255 VGG weights, std ``1/255``). torchvision's ``ssd300_vgg16`` state
dict loads through :data:`TORCHVISION_SSD_KEY_RULES`; build with ``num_classes=90`` for COCO (its 91
softmax columns include the background: label ``l`` is COCO id ``l + 1``).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.box_coder import BoxCoder
from ...ops.boxes import box_iou
from ...ops.losses import smooth_l1_loss
from ...ops.matching import Matcher
from ...structures import boxes as box_geometry
from ...structures.batch import ImageBatch
from ...structures.target import Target
from ..base import InferenceSettings
from ..heads.rpn import flatten_levels
from ..preprocess import Preprocessor
from ..zoo import register
from .dense import DenseDetector, DenseRaw, topk_count

#: torchvision SSD key -> sceneparse key (first match wins; other keys, the VGG trunk's, are the same).
TORCHVISION_SSD_KEY_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^backbone\.scale_weight$", lambda m: "backbone.l2norm.weight"),
    (r"^head\.classification_head\.module_list\.(.+)$", lambda m: f"head.cls_logits.{m[1]}"),
    (r"^head\.regression_head\.module_list\.(.+)$", lambda m: f"head.bbox_pred.{m[1]}"),
)


class DefaultBoxes:
    """SSD's default boxes for a list of feature maps (module docstring; torchvision's
    ``DefaultBoxGenerator`` arithmetic, in float32).

    Args:
        aspect_ratios: extra ratios per map (each adds two boxes per location).
        scales: ``s_0 .. s_K`` (one more than maps: the last only sets ``s'_{K-1}``); default
            ``min_ratio + (max_ratio - min_ratio) k / (K - 1)`` and 1.0.
        steps: pixel step of each map's grid (``None``: the map's own size, ``f_k`` = cells).
        clip: clip widths / heights to ``[0, 1]`` of the image.
    """

    def __init__(self, aspect_ratios: Sequence[Sequence[float]], *, min_ratio: float = 0.15, max_ratio: float = 0.9,
                 scales: Sequence[float] | None = None, steps: Sequence[int] | None = None, clip: bool = True):
        k = len(aspect_ratios)
        if steps is not None and len(steps) != k:
            raise ValueError(f"{len(steps)} steps for {k} feature maps")
        if scales is None:
            scales = [min_ratio + (max_ratio - min_ratio) * i / (k - 1.0) for i in range(k)] + [1.0] if k > 1 \
                else [min_ratio, max_ratio]
        if len(scales) != k + 1:
            raise ValueError(f"need {k + 1} scales for {k} feature maps, got {len(scales)}")
        self.aspect_ratios = tuple(tuple(float(a) for a in r) for r in aspect_ratios)
        self.scales = tuple(float(s) for s in scales)
        self.steps = None if steps is None else tuple(int(s) for s in steps)
        self.clip = bool(clip)
        self.wh = []
        for i, ratios in enumerate(self.aspect_ratios):
            s, s_next = self.scales[i], math.sqrt(self.scales[i] * self.scales[i + 1])
            pairs = [[s, s], [s_next, s_next]]
            for a in ratios:
                w, h = s * math.sqrt(a), s / math.sqrt(a)
                pairs += [[w, h], [h, w]]
            wh = torch.as_tensor(pairs, dtype=torch.float32)
            self.wh.append(wh.clamp(0, 1) if self.clip else wh)

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def __call__(self, image_size: tuple[int, int], feature_sizes: Sequence[tuple[int, int]],
                 device: torch.device | str = "cpu") -> list[Tensor]:
        """XYXY default boxes ``[h_k w_k A_k, 4]`` per map, in pixels of the ``(H, W)`` network input,
        location-major then box (the order of :func:`~sceneparse.models.heads.rpn.flatten_levels`)."""
        H, W = image_size
        out = []
        for k, (h, w) in enumerate(feature_sizes):
            fy, fx = (H / self.steps[k], W / self.steps[k]) if self.steps is not None else (h, w)
            cx = (torch.arange(0, w) + 0.5) / fx
            cy = (torch.arange(0, h) + 0.5) / fy
            yy, xx = torch.meshgrid(cy.to(torch.float32), cx.to(torch.float32), indexing="ij")
            a = self.wh[k].shape[0]
            centres = torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=-1).repeat_interleave(a, dim=0)
            wh = self.wh[k].repeat(h * w, 1)
            size = torch.tensor([W, H])
            out.append(torch.cat([(centres - 0.5 * wh) * size, (centres + 0.5 * wh) * size], -1).to(device))
        return out


class SSDHead(nn.Module):
    """One 3x3 conv per feature map for the class scores (``A_k (C + 1)``) and one for the offsets
    (``4 A_k``); Xavier-initialised, zero bias."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_columns: int):
        super().__init__()
        self.num_columns = int(num_columns)
        self.cls_logits = nn.ModuleList(nn.Conv2d(c, a * num_columns, 3, padding=1)
                                        for c, a in zip(in_channels, num_anchors))
        self.bbox_pred = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(in_channels, num_anchors))
        for conv in list(self.cls_logits) + list(self.bbox_pred):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, None]:
        cls = [m(f) for m, f in zip(self.cls_logits, features)]
        box = [m(f) for m, f in zip(self.bbox_pred, features)]
        return flatten_levels(cls, self.num_columns), flatten_levels(box, 4), None


def ssd_match(iou: Tensor, threshold: float = 0.5) -> Tensor:
    """SSD's matching of ``[G, N]`` IoUs: index of the best ground truth per default box if its IoU
    is ``>= threshold`` (else -1), then each ground truth's best box is forced to that ground truth."""
    matches = Matcher(threshold, threshold)(iou)
    best_box = iou.max(dim=1).indices
    matches[best_box] = torch.arange(iou.shape[0], device=iou.device)
    return matches


class SSD(DenseDetector):
    """SSD on a backbone returning its maps (see the module docstring).

    Args:
        backbone: returns the feature maps (``out_channels`` per map).
        num_classes: foreground classes ``C``.
        default_boxes: :class:`DefaultBoxes` (one entry per map).
        size: ``(h, w)`` every image is resized to.
        image_mean, image_std: normalisation of ``[0, 1]`` RGB.
        head: the prediction head (default :class:`SSDHead`).
        iou_thresh: matching threshold (0.5). neg_pos_ratio: hard negatives per positive (3).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: inference (0.01, 0.45, 200, 400
            per class).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, default_boxes: DefaultBoxes, *,
                 size: tuple[int, int] = (300, 300), image_mean: Sequence[float] = (0.48235, 0.45882, 0.40784),
                 image_std: Sequence[float] = (1.0 / 255.0,) * 3, head: nn.Module | None = None,
                 iou_thresh: float = 0.5, neg_pos_ratio: float = 3.0, score_thresh: float = 0.01,
                 nms_thresh: float = 0.45, detections_per_img: int = 200, topk_candidates: int = 400):
        pre = Preprocessor(min(size), max(size), image_mean, image_std, size_divisible=1, fixed_size=tuple(size))
        super().__init__(backbone, None, num_classes, pre, score_thresh=score_thresh, nms_thresh=nms_thresh,
                         detections_per_img=detections_per_img, topk_candidates=topk_candidates)
        if len(backbone.out_channels) != len(default_boxes.aspect_ratios):
            raise ValueError(f"{len(backbone.out_channels)} feature maps but default boxes for "
                             f"{len(default_boxes.aspect_ratios)}")
        self.default_boxes = default_boxes
        self.head = head if head is not None else SSDHead(backbone.out_channels,
                                                          default_boxes.num_anchors_per_location(), num_classes + 1)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.iou_thresh = float(iou_thresh)
        self.neg_pos_ratio = float(neg_pos_ratio)

    def references(self, batch: ImageBatch, feats: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        refs = self.default_boxes(tuple(int(v) for v in batch.tensor.shape[-2:]),
                                  [tuple(int(v) for v in f.shape[-2:]) for f in feats], device=feats[0].device)
        return torch.cat(refs).to(torch.promote_types(feats[0].dtype, torch.float32)), [r.shape[0] for r in refs]

    def decode(self, box_regression: Tensor, references: Tensor) -> Tensor:
        return self.box_coder.decode(box_regression, references)[:, 0]

    def candidates(self, raw: DenseRaw, i: int, settings: InferenceSettings) -> tuple[Tensor, Tensor, Tensor]:
        """All boxes decoded and clipped; per class, softmax scores ``> conf`` and the
        ``topk_candidates`` best of them."""
        boxes = box_geometry.clip(self.decode(raw.box_regression[i], raw.references), raw.image_sizes[i])
        scores = F.softmax(raw.cls_logits[i], dim=-1)[:, 1:].t()  # [C, N]
        masked = torch.where(scores > settings.conf, scores, torch.full_like(scores, -1.0))
        top, idx = masked.topk(topk_count(masked[0], self.topk_candidates), dim=1)  # [C, k]
        labels = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(idx)
        keep = top.reshape(-1) > settings.conf
        return boxes[idx.reshape(-1)[keep]], top.reshape(-1)[keep], labels.reshape(-1)[keep]

    def loss(self, raw: DenseRaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """``bbox_regression`` (smooth-L1 over the positives) and ``classification`` (cross entropy over
        positives and hard negatives), both divided by the batch's number of positives (at least 1)."""
        gt = self.training_targets(targets, raw)
        refs = raw.references
        cls_targets, box_losses = [], []
        for i, t in enumerate(gt):  # one iteration per image
            boxes = t.instances.boxes.to(refs.dtype)
            m = ssd_match(box_iou(boxes, refs), self.iou_thresh) if boxes.shape[0] else \
                torch.full((refs.shape[0],), -1, dtype=torch.int64, device=refs.device)
            fg = torch.where(m >= 0)[0]
            box_losses.append(smooth_l1_loss(raw.box_regression[i, fg], self.box_coder.encode(boxes[m[fg]], refs[fg]),
                                             beta=1.0, reduction="sum"))
            target = torch.zeros(refs.shape[0], dtype=torch.int64, device=refs.device)
            target[fg] = t.instances.labels[m[fg]] + 1
            cls_targets.append(target)
        cls_targets = torch.stack(cls_targets)  # [B, N], 0 = background
        ce = F.cross_entropy(raw.cls_logits.reshape(-1, raw.cls_logits.shape[-1]), cls_targets.reshape(-1),
                             reduction="none").view(cls_targets.shape)
        positive = cls_targets > 0
        num_neg = self.neg_pos_ratio * positive.sum(dim=1, keepdim=True)
        neg_loss = torch.where(positive, torch.full_like(ce, -math.inf), ce.detach())
        rank = neg_loss.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = hardest negative
        hard_negative = (rank < num_neg) & ~positive
        n = max(1, int(positive.sum()))
        return {"bbox_regression": sum(box_losses) / n,
                "classification": (ce[positive].sum() + ce[hard_negative].sum()) / n}

    def torchvision_key_rules(self):
        """torchvision SSD / SSDlite state-dict keys -> this model's (:data:`TORCHVISION_SSD_KEY_RULES`)."""
        return TORCHVISION_SSD_KEY_RULES


@register("ssd300_vgg16")
def ssd300_vgg16(*, num_classes: int = 90, trainable_layers: int = 4, **kwargs) -> SSD:
    """torchvision's ``ssd300_vgg16``: VGG-16 with L2Norm and extra layers, 8732 default boxes, 300 px."""
    from ..backbones.vgg import SSDVGG16Backbone

    boxes = DefaultBoxes([[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
                         steps=[8, 16, 32, 64, 100, 300])
    return SSD(SSDVGG16Backbone(trainable_layers=trainable_layers), num_classes, boxes, **kwargs)


__all__ = ["DefaultBoxes", "SSD", "SSDHead", "TORCHVISION_SSD_KEY_RULES", "ssd300_vgg16", "ssd_match"]
