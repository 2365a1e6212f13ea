"""FCOS (Tian, Shen, Chen, He: "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019;
the improved version of "FCOS: A Simple and Strong Anchor-free Object Detector", TPAMI 2020).

Anchor-free: every location ``(x, y)`` of pyramid level P3..P7 (strides 8..128) is a *point* that
predicts a class and the distances ``(l, t, r, b)`` from itself to the four sides of a box.

* Points: the centres of torchvision's one-anchor-per-location grid (an anchor of size = stride and
  aspect ratio 1), i.e. ``(x s, y s)`` for level stride ``s``; distances are regressed in units of
  ``s`` (``normalize_by_size``) and decoded as ``x1 = x - l s, y1 = y - t s, x2 = x + r s, y2 = y + b s``.
* Assignment (sec. 3.2 and the improved version's centre sampling): a point is positive for a box if
  it lies inside the box, within ``radius * s`` (``radius = 1.5``) of the box centre in both axes
  (centre sampling), and its largest distance ``max(l, t, r, b)`` lies in the level's regression range
  ``(m_{i-1}, m_i)``: ``0, 64, 128, 256, 512, inf`` for P3..P7 (``4 s`` and ``8 s``). A point that
  qualifies for several boxes takes the one of smallest area.
* Centre-ness target ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` (eq. 3); at inference the
  class score is ``sqrt(sigmoid(cls) * sigmoid(centerness))`` so that low-quality boxes far from an
  object's centre rank lower before NMS.
* Loss: focal loss (alpha 0.25, gamma 2) over all points, GIoU loss of the decoded boxes and BCE of
  the centre-ness on the positive points, each summed and divided by the number of positives in the
  batch (torchvision's training recipe, which its released weights follow).
* Inference (torchvision's defaults): per level scores ``> 0.2``, the 1000 best, decoded and clipped;
  class-wise NMS at IoU 0.6; 100 detections per image.

Checkpoints: torchvision's ``fcos_resnet50_fpn`` state dict loads through
:data:`TORCHVISION_FCOS_KEY_RULES` (``num_classes=90`` for COCO, see
:mod:`sceneparse.models.one_stage.dense` for the background column).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.anchors import AnchorGenerator
from ...ops.losses import giou_loss, sigmoid_focal_loss
from ...structures.target import Target
from ..necks.fpn import FPN
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor
from ..zoo import register
from .dense import DenseDetector, DenseRaw
from .heads import DenseHead
from .retinanet import _backbone_fpn_rules, _resnet_c3_c5


def _tower_key(branch: str) -> Callable[[re.Match], str]:
    """torchvision's FCOS tower ``conv.<j>`` is (Conv2d, GroupNorm, ReLU) x 4: ``j = 3 i`` conv, ``3 i + 1`` norm."""
    return lambda m: f"head.{branch}.{int(m[1]) // 3}.{'conv' if int(m[1]) % 3 == 0 else 'norm'}.{m[2]}"


#: torchvision FCOS key -> sceneparse key (first match wins).
TORCHVISION_FCOS_KEY_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = _backbone_fpn_rules() + (
    (r"^head\.classification_head\.conv\.(\d+)\.(weight|bias)$", _tower_key("cls_subnet")),
    (r"^head\.classification_head\.cls_logits\.(weight|bias)$", lambda m: f"head.cls_logits.{m[1]}"),
    (r"^head\.regression_head\.conv\.(\d+)\.(weight|bias)$", _tower_key("box_subnet")),
    (r"^head\.regression_head\.bbox_reg\.(weight|bias)$", lambda m: f"head.bbox_pred.{m[1]}"),
    (r"^head\.regression_head\.bbox_ctrness\.(weight|bias)$", lambda m: f"head.centerness.{m[1]}"),
)


def encode_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """``(l, t, r, b)`` from the centres of ``points`` (XYXY boxes of side = stride) to the sides of
    ``boxes``, in units of the point's box size: ``[..., 4]``. Negative where the centre is outside."""
    cx = 0.5 * (points[..., 0] + points[..., 2])
    cy = 0.5 * (points[..., 1] + points[..., 3])
    d = torch.stack((cx - boxes[..., 0], cy - boxes[..., 1], boxes[..., 2] - cx, boxes[..., 3] - cy), dim=-1)
    w = points[..., 2] - points[..., 0]
    h = points[..., 3] - points[..., 1]
    return d / torch.stack((w, h, w, h), dim=-1)


def decode_distances(distances: Tensor, points: Tensor) -> Tensor:
    """Inverse of :func:`encode_distances`: XYXY boxes ``[..., 4]`` from distances in point-size units."""
    points = points.to(distances.dtype)
    cx = 0.5 * (points[..., 0] + points[..., 2])
    cy = 0.5 * (points[..., 1] + points[..., 3])
    w = points[..., 2] - points[..., 0]
    h = points[..., 3] - points[..., 1]
    d = distances * torch.stack((w, h, w, h), dim=-1)
    return torch.stack((cx - d[..., 0], cy - d[..., 1], cx + d[..., 2], cy + d[..., 3]), dim=-1)


def centerness_target(distances: Tensor) -> Tensor:
    """FCOS eq. 3 on ``(l, t, r, b)`` ``[..., 4]`` (any common unit) -> ``[...]`` in ``[0, 1]``."""
    lr, tb = distances[..., 0::2], distances[..., 1::2]
    return torch.sqrt((lr.min(dim=-1).values / lr.max(dim=-1).values) * (tb.min(dim=-1).values / tb.max(dim=-1).values))


class FCOS(DenseDetector):
    """FCOS with a ResNet/FPN P3-P7 backbone (see the module docstring).

    Args:
        backbone: returns C3, C4, C5. num_classes: foreground classes ``C``.
        fpn_channels, fpn_extra: pyramid (torchvision: 256, P6 from P5).
        min_size, max_size, image_mean, image_std, size_divisible: see :class:`Preprocessor`.
        point_sizes: the point box size (= nominal stride) per level, ``8 .. 128``.
        regression_ranges: ``(low, high)`` of ``max(l, t, r, b)`` in pixels per level (default ``4 s`` and
            ``8 s``, open at both ends of the pyramid).
        center_sampling_radius: in units of the level's point size (1.5).
        num_convs, head_norm_groups: the towers (4 convs, GroupNorm 32).
        focal_alpha, focal_gamma: focal loss (0.25 / 2).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: inference (0.2, 0.6, 100, 1000).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, fpn_channels: int = 256, fpn_extra: str = "p6p7",
                 min_size: int | Sequence[int] = 800, max_size: int = 1333,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                 size_divisible: int = 32, point_sizes: Sequence[float] = (8, 16, 32, 64, 128),
                 regression_ranges: Sequence[tuple[float, float]] | None = None,
                 center_sampling_radius: float = 1.5, num_convs: int = 4, head_norm_groups: int | None = 32,
                 prior_prob: float = 0.01, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 score_thresh: float = 0.2, nms_thresh: float = 0.6, detections_per_img: int = 100,
                 topk_candidates: int = 1000):
        neck = FPN(backbone.out_channels, fpn_channels, fpn_extra)
        super().__init__(backbone, neck, num_classes, Preprocessor(min_size, max_size, image_mean, image_std,
                                                                   size_divisible),
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         topk_candidates=topk_candidates)
        if len(point_sizes) != neck.num_levels:
            raise ValueError(f"{len(point_sizes)} point sizes for {neck.num_levels} FPN levels")
        self.anchor_generator = AnchorGenerator(tuple((float(s),) for s in point_sizes), ((1.0,),) * len(point_sizes))
        if regression_ranges is None:
            regression_ranges = [(4.0 * s, 8.0 * s) for s in point_sizes]
            regression_ranges[0] = (0.0, regression_ranges[0][1])
            regression_ranges[-1] = (regression_ranges[-1][0], math.inf)
        if len(regression_ranges) != len(point_sizes):
            raise ValueError(f"{len(regression_ranges)} regression ranges for {len(point_sizes)} levels")
        self.regression_ranges = tuple((float(lo), float(hi)) for lo, hi in regression_ranges)
        self.center_sampling_radius = float(center_sampling_radius)
        self.head = DenseHead(fpn_channels, 1, num_classes + 1, num_convs=num_convs, norm_groups=head_norm_groups,
                              conv_bias=True, centerness=True, box_relu=True, prior_prob=prior_prob)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)

    def decode(self, box_regression: Tensor, references: Tensor) -> Tensor:
        return decode_distances(box_regression, references)

    def class_scores(self, raw: DenseRaw, i: int, start, end) -> Tensor:
        """``sqrt(sigmoid(cls) * sigmoid(centerness))`` per foreground class."""
        return torch.sqrt(torch.sigmoid(raw.cls_logits[i, start:end, 1:]) *
                          torch.sigmoid(raw.centerness[i, start:end, None]))

    def assign(self, boxes: Tensor, points: Tensor, num_per_level: Sequence[int]) -> Tensor:
        """Ground truth index per point ``[N]`` (``-1``: background) for ``boxes [G, 4]`` (module
        docstring: inside the box, centre sampling, the level's range, the smallest box wins)."""
        n = points.shape[0]
        if boxes.shape[0] == 0:
            return torch.full((n,), -1, dtype=torch.int64, device=points.device)
        size = points[:, 2] - points[:, 0]
        centres = (points[:, :2] + points[:, 2:]) / 2
        gt_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        near = (centres[:, None, :] - gt_centres[None, :, :]).abs().max(dim=2).values < \
            self.center_sampling_radius * size[:, None]
        x, y = centres[:, 0:1], centres[:, 1:2]
        dist = torch.stack([x - boxes[None, :, 0], y - boxes[None, :, 1], boxes[None, :, 2] - x,
                            boxes[None, :, 3] - y], dim=2)  # [N, G, 4] in pixels
        counts = torch.as_tensor(list(num_per_level), device=points.device)
        ranges = torch.as_tensor(self.regression_ranges, dtype=dist.dtype, device=points.device)
        lo, hi = ranges.repeat_interleave(counts, dim=0).unbind(dim=1)
        reach = dist.max(dim=2).values
        ok = near & (dist.min(dim=2).values > 0) & (reach > lo[:, None]) & (reach < hi[:, None])
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        best_area, best = torch.where(ok, area[None, :], torch.full_like(reach, math.inf)).min(dim=1)
        return torch.where(torch.isfinite(best_area), best, torch.full_like(best, -1))

    def loss(self, raw: DenseRaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """``classification`` (focal), ``bbox_regression`` (GIoU), ``bbox_ctrness`` (BCE), each summed
        over the batch and divided by its number of positive points (at least 1)."""
        gt = self.training_targets(targets, raw)
        refs = raw.references
        onehots, pred, matched, points, ctr = [], [], [], [], []
        for i, t in enumerate(gt):  # one iteration per image
            boxes = t.instances.boxes.to(refs.dtype)
            m = self.assign(boxes, refs, raw.num_per_level)
            fg = torch.where(m >= 0)[0]
            onehot = torch.zeros_like(raw.cls_logits[i])
            onehot[fg, t.instances.labels[m[fg]] + 1] = 1.0
            onehots.append(onehot)
            pred.append(raw.box_regression[i, fg])
            matched.append(boxes[m[fg]])
            points.append(refs[fg])
            ctr.append(raw.centerness[i, fg])
        pred, matched, points, ctr = (torch.cat(v) for v in (pred, matched, points, ctr))
        num_fg = max(1, matched.shape[0])
        cls = sigmoid_focal_loss(raw.cls_logits, torch.stack(onehots), self.focal_alpha, self.focal_gamma,
                                 reduction="sum")
        box = giou_loss(self.decode(pred, points), matched, reduction="sum")
        ctr_target = centerness_target(encode_distances(points, matched))
        ctr_loss = F.binary_cross_entropy_with_logits(ctr, ctr_target, reduction="sum")
        return {"classification": cls / num_fg, "bbox_regression": box / num_fg, "bbox_ctrness": ctr_loss / num_fg}

    def torchvision_key_rules(self):
        """torchvision FCOS state-dict keys -> this model's (:data:`TORCHVISION_FCOS_KEY_RULES`)."""
        return TORCHVISION_FCOS_KEY_RULES


@register("fcos_resnet50_fpn")
def fcos_resnet50_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                      trainable_layers: int = 3, **kwargs) -> FCOS:
    """torchvision's ``fcos_resnet50_fpn`` architecture (800/1333 px, P6 from P5, GroupNorm towers)."""
    return FCOS(_resnet_c3_c5(50, norm, bn_eps, trainable_layers), num_classes, **kwargs)


#: The small CPU-trainable FCOS: ResNet-18, trainable BatchNorm, 320 px, 128-channel pyramid and towers,
#: regression ranges halved for the 0.4x smaller input (0, 32, 64, 128, 256, inf).
SMALL_FCOS_SETTINGS: dict = dict(fpn_channels=128, min_size=320, max_size=512,
                                 regression_ranges=((0.0, 32.0), (32.0, 64.0), (64.0, 128.0), (128.0, 256.0),
                                                    (256.0, math.inf)))


@register("fcos_resnet18_fpn")
def fcos_resnet18_fpn(*, num_classes: int, norm: str = "bn", bn_eps: float = 1e-5, trainable_layers: int = 5,
                      **kwargs) -> FCOS:
    """Small FCOS for CPU training on the synthetic scenes (:data:`SMALL_FCOS_SETTINGS`)."""
    return FCOS(_resnet_c3_c5(18, norm, bn_eps, trainable_layers), num_classes, **{**SMALL_FCOS_SETTINGS, **kwargs})


__all__ = ["FCOS", "TORCHVISION_FCOS_KEY_RULES", "SMALL_FCOS_SETTINGS", "centerness_target", "decode_distances",
           "encode_distances", "fcos_resnet18_fpn", "fcos_resnet50_fpn"]
