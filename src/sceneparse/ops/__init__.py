"""sceneparse.ops: pure tensor functions for detection, no learnable state. Boxes are XYXY pixels.

One concept per module: :mod:`.boxes` (IoU, GIoU, DIoU), :mod:`.box_coder` (R-CNN deltas),
:mod:`.anchors`, :mod:`.matching` (Matcher, sampler, Hungarian), :mod:`.roi` (RoIAlign/RoIPool,
FPN level mapping), :mod:`.losses`, :mod:`.heatmaps` (keypoint heatmaps), :mod:`.nms`.
"""
from .anchors import AnchorGenerator, octave_sizes
from .box_coder import BoxCoder
from .boxes import (
    box_area,
    box_iou,
    box_iou_paired,
    distance_box_iou,
    distance_box_iou_paired,
    generalized_box_iou,
    generalized_box_iou_paired,
)
from .heatmaps import decode_heatmaps, gaussian_heatmaps, heatmaps_to_keypoints, keypoints_to_heatmap_targets
from .losses import dice_loss, diou_loss, giou_loss, sigmoid_focal_loss, smooth_l1_loss
from .matching import BalancedPositiveNegativeSampler, Matcher, hungarian_match
from .nms import batched_nms, matrix_nms, nms, soft_nms
from .roi import assign_levels, infer_scale, multiscale_roi_align, roi_align, roi_pool, rois_from_boxes

__all__ = [
    "AnchorGenerator", "octave_sizes",
    "BoxCoder",
    "box_area", "box_iou", "generalized_box_iou", "distance_box_iou",
    "box_iou_paired", "generalized_box_iou_paired", "distance_box_iou_paired",
    "keypoints_to_heatmap_targets", "heatmaps_to_keypoints", "gaussian_heatmaps", "decode_heatmaps",
    "smooth_l1_loss", "sigmoid_focal_loss", "giou_loss", "diou_loss", "dice_loss",
    "Matcher", "BalancedPositiveNegativeSampler", "hungarian_match",
    "nms", "batched_nms", "soft_nms", "matrix_nms",
    "roi_align", "roi_pool", "assign_levels", "infer_scale", "multiscale_roi_align", "rois_from_boxes",
]
