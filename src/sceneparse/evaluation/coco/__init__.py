"""COCO evaluation (bbox, segm, keypoints) with pycocotools' numbers, on columns instead of dicts.

``evaluate_coco(gt, results, iou_type)`` -> :class:`COCOEvalResult`. See :mod:`.evaluate` for the
pipeline and the (few, documented) differences from pycocotools' behaviour.
"""
from .accumulate import Accumulated, accumulate
from .box_iou import box_iou_pairs
from .evaluate import evaluate_coco, evaluate_tables
from .mask_iou import mask_iou_blocks, to_rles
from .matching import MatchArrays, greedy_match
from .oks import oks_pairs
from .params import (DETECTION_AREA_RANGES, KEYPOINT_AREA_RANGES, AreaRange, COCOParams, coco_iou_thresholds,
                     coco_recall_thresholds, make_params)
from .result import CategoryMatches, CategoryStats, COCOEvalResult, Matches
from .summary import StatSpec, stat_specs
from .tables import DetectionColumns, DetectionTable, GroundTruthTable, load_ground_truth, load_results

__all__ = [
    "evaluate_coco", "evaluate_tables", "COCOEvalResult", "CategoryStats", "Matches", "CategoryMatches",
    "COCOParams", "AreaRange", "make_params", "coco_iou_thresholds", "coco_recall_thresholds",
    "DETECTION_AREA_RANGES", "KEYPOINT_AREA_RANGES", "StatSpec", "stat_specs",
    "DetectionColumns", "DetectionTable", "GroundTruthTable", "load_ground_truth", "load_results",
    "box_iou_pairs", "oks_pairs", "mask_iou_blocks", "to_rles", "greedy_match", "MatchArrays",
    "accumulate", "Accumulated",
]
