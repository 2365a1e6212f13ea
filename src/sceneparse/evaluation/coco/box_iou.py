"""Box overlaps as pycocotools' ``maskUtils.iou`` computes them for COCO ``XYWH`` boxes.

The arithmetic follows pycocotools' C ``bbIou`` operation by operation, in float64, so that every
value is bit-identical (an IoU one ulp off can flip an ``iou >= 0.5`` decision):
``w = min(xd + wd, xg + wg) - max(xd, xg)`` (zero overlap when ``w <= 0`` or ``h <= 0``),
``i = w * h``, ``u = (a_d + a_g) - i`` and, for a crowd ground truth, ``u = a_d``: a detection
inside a crowd region is not penalised for the part of the crowd it does not cover.
"""
from __future__ import annotations

import numpy as np


def box_iou_pairs(dt_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """IoU of paired boxes: ``float64 [P, 4]`` XYWH detections and ground truths, ``bool [P]`` crowd
    flags of the ground truths -> ``float64 [P]``."""
    d = np.asarray(dt_boxes, dtype=np.float64)
    g = np.asarray(gt_boxes, dtype=np.float64)
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    overlap = (w > 0) & (h > 0)
    inter = w * h
    da = d[:, 2] * d[:, 3]
    union = np.where(gt_crowd, da, da + g[:, 2] * g[:, 3] - inter)
    out = np.zeros(d.shape[0], dtype=np.float64)
    np.divide(inter, union, out=out, where=overlap)
    return out
