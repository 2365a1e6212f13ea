"""The 12 (bbox, segm) or 10 (keypoints) summary numbers of COCO evaluation and their table.

Each number is the mean of the valid (``> -1``) entries of a slice of ``precision`` (AP) or
``recall`` (AR), the slice picked by IoU threshold (all, or exactly ``0.5`` / ``0.75``, compared
with ``==`` as pycocotools does), area-range name and maxDets value; an empty slice gives -1. The
slicing and the mean are pycocotools' operations, so the values are bit-identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import COCOParams

_LINE = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"


@dataclass(frozen=True)
class StatSpec:
    """One summary number: AP (``ap=True``) or AR over a slice of the result arrays."""

    name: str
    ap: bool
    iou: float | None  # None: mean over all IoU thresholds
    area: str
    max_det: int


def stat_specs(iou_type: str, max_dets: tuple[int, ...]) -> list[StatSpec]:
    """pycocotools' ``_summarizeDets`` / ``_summarizeKps`` definitions, in its order.

    Detection stats read ``maxDets[0..2]`` (pycocotools fails with fewer than three values; here
    the last one is repeated) and the first AP always uses maxDets=100, as pycocotools' does.
    """
    if iou_type == "keypoints":
        return [StatSpec("AP", True, None, "all", 20), StatSpec("AP50", True, .5, "all", 20),
                StatSpec("AP75", True, .75, "all", 20), StatSpec("APm", True, None, "medium", 20),
                StatSpec("APl", True, None, "large", 20), StatSpec("AR", False, None, "all", 20),
                StatSpec("AR50", False, .5, "all", 20), StatSpec("AR75", False, .75, "all", 20),
                StatSpec("ARm", False, None, "medium", 20), StatSpec("ARl", False, None, "large", 20)]
    md = [max_dets[min(i, len(max_dets) - 1)] for i in range(3)]
    return [StatSpec("AP", True, None, "all", 100), StatSpec("AP50", True, .5, "all", md[2]),
            StatSpec("AP75", True, .75, "all", md[2]), StatSpec("APs", True, None, "small", md[2]),
            StatSpec("APm", True, None, "medium", md[2]), StatSpec("APl", True, None, "large", md[2]),
            StatSpec(f"AR{md[0]}", False, None, "all", md[0]), StatSpec(f"AR{md[1]}", False, None, "all", md[1]),
            StatSpec(f"AR{md[2]}", False, None, "all", md[2]), StatSpec("ARs", False, None, "small", md[2]),
            StatSpec("ARm", False, None, "medium", md[2]), StatSpec("ARl", False, None, "large", md[2])]


def summarize_one(precision: np.ndarray, recall: np.ndarray, params: COCOParams, spec: StatSpec,
                  k: int | None = None) -> float:
    """One summary number; ``k`` restricts it to one category (K-axis index)."""
    aind = [i for i, name in enumerate(params.area_names) if name == spec.area]
    mind = [i for i, m in enumerate(params.max_dets) if m == spec.max_det]
    if spec.ap:
        s = precision
        if spec.iou is not None:
            s = s[np.where(spec.iou == params.iou_thresholds)[0]]
        if k is not None:
            s = s[:, :, k:k + 1]
        s = s[:, :, :, aind, mind]
    else:
        s = recall
        if spec.iou is not None:
            s = s[np.where(spec.iou == params.iou_thresholds)[0]]
        if k is not None:
            s = s[:, k:k + 1]
        s = s[:, :, aind, mind]
    valid = s[s > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def summarize_per_category(precision: np.ndarray, recall: np.ndarray, params: COCOParams,
                           spec: StatSpec) -> np.ndarray:
    """``float64 [K]``: one summary number for every category at once (the mean of its valid
    entries, -1 where it has none; equal to :func:`summarize_one` with ``k`` up to rounding)."""
    aind = [i for i, name in enumerate(params.area_names) if name == spec.area]
    mind = [i for i, m in enumerate(params.max_dets) if m == spec.max_det]
    s = precision if spec.ap else recall
    if spec.iou is not None:
        s = s[np.where(spec.iou == params.iou_thresholds)[0]]
    s = s[..., aind, mind]  # AP: [T', R, K, n]; AR: [T', K, n]
    k_axis = 2 if spec.ap else 1
    s = np.moveaxis(s, k_axis, 0).reshape(s.shape[k_axis], -1)
    valid = s > -1
    count = valid.sum(axis=1)
    total = np.where(valid, s, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


def summary_lines(stats: np.ndarray, specs: list[StatSpec], params: COCOParams) -> list[str]:
    """pycocotools' printed table, one line per number."""
    out = []
    for value, spec in zip(stats.tolist(), specs):
        iou = ("{:0.2f}:{:0.2f}".format(params.iou_thresholds[0], params.iou_thresholds[-1])
               if spec.iou is None else "{:0.2f}".format(spec.iou))
        out.append(_LINE.format("Average Precision" if spec.ap else "Average Recall", "(AP)" if spec.ap else "(AR)",
                                iou, spec.area, spec.max_det, value))
    return out
