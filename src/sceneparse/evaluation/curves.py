"""Precision-recall curves read from a COCO evaluation's ``precision [T, R, K, A, M]`` array.

COCO AP is the mean of *interpolated* precision at ``R = 101`` recall points ``0, .01, ..., 1``:
``precision[t, r, k, a, m]`` is the highest precision reached at recall ``>= rec_thresholds[r]``
by category ``k`` at IoU threshold ``t``, area range ``a`` and ``max_dets[m]`` detections per image
(0 beyond the highest recall reached; -1 when the category has no ground truth). So a curve is
just a slice, and its mean is the category's AP at that IoU, exactly pycocotools' number.
Drawing them is :func:`sceneparse.viz.plots.plot_pr_curves`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass
class PRCurve:
    """One category's interpolated PR curve: ``recall`` / ``precision`` ``float64 [R]``; ``ap`` their mean
    (NaN when the category has no ground truth: pycocotools' -1 entries)."""

    cat_id: int
    name: str
    recall: np.ndarray
    precision: np.ndarray
    ap: float


@dataclass
class _PRSource:
    precision: np.ndarray  # [T, R, K, A, M]
    iou_thresholds: np.ndarray
    rec_thresholds: np.ndarray
    area_names: list[str]
    max_dets: list[int]
    cat_ids: list[int]
    names: dict[int, str]


def _source(result) -> _PRSource:
    """Accept sceneparse's ``COCOEvalResult`` or a pycocotools ``COCOeval`` after ``accumulate()``."""
    if hasattr(result, "eval") and isinstance(getattr(result, "eval"), dict) and hasattr(result, "params"):
        if "precision" not in result.eval:
            raise ValueError("COCOeval has no 'precision' yet: call evaluate() and accumulate() first")
        p = result.params
        names = {}
        gt = getattr(result, "cocoGt", None)
        if gt is not None:
            names = {int(k): str(v.get("name", k)) for k, v in gt.cats.items()}
        return _PRSource(np.asarray(result.eval["precision"]), np.asarray(p.iouThrs), np.asarray(p.recThrs),
                         list(p.areaRngLbl), list(p.maxDets), [int(c) for c in p.catIds], names)
    params = getattr(result, "params", result)
    areas = getattr(params, "area_names", None)
    if areas is None:
        areas = [getattr(a, "name", a) for a in params.area_ranges]
    names = {}
    per_cat = getattr(result, "per_category", None) or {}
    for k, v in per_cat.items():
        n = getattr(v, "name", None)
        if n is None and isinstance(v, Mapping):
            n = v.get("name")
        if n is not None:
            names[int(k)] = str(n)
    for attr in ("category_names", "cat_names"):
        table = getattr(result, attr, None)
        if isinstance(table, Mapping):
            names.update({int(k): str(v) for k, v in table.items()})
    return _PRSource(np.asarray(result.precision), np.asarray(params.iou_thresholds),
                     np.asarray(params.rec_thresholds), [str(a) for a in areas], [int(m) for m in params.max_dets],
                     [int(c) for c in np.asarray(params.cat_ids).tolist()], names)


def _index(values: Sequence, want, what: str, close: bool = False) -> int:
    arr = list(values)
    for i, v in enumerate(arr):
        if (close and np.isclose(float(v), float(want), rtol=0, atol=1e-9)) or (not close and v == want):
            return i
    raise KeyError(f"{what} {want!r} was not evaluated; available: {arr}")


def precision_recall_curves(coco_eval_result, iou: float = 0.5, area: str = "all", max_dets: int = 100,
                            names: Mapping[int, str] | None = None) -> dict[int, PRCurve]:
    """Per-category PR curves at one IoU threshold, area range and ``max_dets``.

    Args:
        coco_eval_result: ``COCOEvalResult`` (``precision [T, R, K, A, M]`` + params) or an accumulated
            pycocotools ``COCOeval``.
        iou: one of the evaluated IoU thresholds (matched to 1e-9).
        area: area range name (``"all"``, ``"small"``, ...). max_dets: one of the evaluated ``max_dets``.
        names: category id -> display name (default: names known to the result, else the id).

    Returns:
        ``{cat_id: PRCurve}`` in the result's category order; ``recall`` is the 101 recall thresholds.
    """
    s = _source(coco_eval_result)
    t = _index(s.iou_thresholds, iou, "IoU threshold", close=True)
    a = _index(s.area_names, area, "area range")
    m = _index(s.max_dets, int(max_dets), "max_dets")
    table = dict(s.names)
    if names:
        table.update({int(k): str(v) for k, v in names.items()})
    out = {}
    for k, cid in enumerate(s.cat_ids):
        p = np.asarray(s.precision[t, :, k, a, m], dtype=np.float64)
        ap = float(p.mean()) if (p > -1).all() else float("nan")
        out[cid] = PRCurve(cid, table.get(cid, str(cid)), np.asarray(s.rec_thresholds, dtype=np.float64).copy(),
                           np.where(p > -1, p, np.nan), ap)
    return out


__all__ = ["PRCurve", "precision_recall_curves"]
