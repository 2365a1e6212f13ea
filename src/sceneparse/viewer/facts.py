"""Per-image and per-object facts of one prediction source, from sceneparse's evaluation.

Everything here is derived from :func:`sceneparse.evaluation.errors.tide_from_columns` (COCO's greedy
matching at the foreground IoU ``t_f``, crowd regions as ignore areas, ``max_dets`` per image and
category, and TIDE's error types: Bolya et al., ECCV 2020): each result is ``TP``, one of the error
types ``Cls`` / ``Loc`` / ``Both`` / ``Dupe`` / ``Bkg`` (a false positive), ``ignored`` (matched a
crowd region) or ``dropped`` (beyond ``max_dets``); each missed object is a ``Miss``.

Per image (all vectorised with numpy over the whole source, no loop over images):

* ``tp`` / ``fp``: counted detections that are / are not true positives;
* ``fn``: non-crowd ground-truth objects no true positive matched (``num_gt - tp``: every true
  positive takes exactly one non-crowd object);
* one count per error type;
* ``ap``: the image's AP at ``t_f``, COCO's 101-point interpolated AP computed on that image alone
  (the mean over the categories with non-crowd ground truth in the image; ``NaN`` for an image
  without any), and ``ap`` per (image, category) for "worst images for class X". It equals
  ``tide_from_columns`` run on the image's ground truth and results only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation.errors import MAIN_ERRORS, REC_THRESHOLDS, TideErrors, tide_from_columns
from ..evaluation.validate import CocoPair

#: false-positive error types (TIDE's short names), in the order the client lists them
FP_TYPES = tuple(t.value for t in MAIN_ERRORS if t.value != "Miss")
#: every per-image error count
ERROR_TYPES = tuple(t.value for t in MAIN_ERRORS)


@dataclass
class SourceFacts:
    """Facts of one source at one IoU, over the pair's image index (``pair.image_ids`` order).

    Attributes:
        iou: the foreground IoU ``t_f`` of the matching.
        tide: the evaluation's result (``det_kind`` / ``det_target`` per result row, ``missed_gt``).
        tp / fp / fn: ``int64 [I]`` per image.
        errors: error type -> ``int64 [I]`` count per image (``Miss`` included).
        num_gt: ``int64 [I]`` non-crowd ground-truth objects per image.
        ap: ``float64 [I]`` per-image AP at ``iou`` (NaN without ground truth).
        class_ap: ``float64 [I, K]`` per image and category index (NaN where the category has no
            non-crowd ground truth in the image).
        missed: ``bool [N_gt]`` per ground-truth row: a ``Miss`` error.
    """

    iou: float
    tide: TideErrors
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    errors: dict[str, np.ndarray]
    num_gt: np.ndarray
    ap: np.ndarray
    class_ap: np.ndarray
    missed: np.ndarray


def per_image_ap(image: np.ndarray, label: np.ndarray, score: np.ndarray, tp: np.ndarray, order: np.ndarray,
                 num_pos: np.ndarray) -> np.ndarray:
    """COCO's 101-point interpolated AP of every (image, category) group at once.

    Args:
        image / label / score / tp / order: ``[N]`` counted detections (ignored and dropped left out):
            image index, category index, score, true-positive flag, and the position that breaks score
            ties (pycocotools' list order).
        num_pos: ``int64 [I, K]`` non-crowd ground-truth objects per image and category.

    Returns:
        ``float64 [I, K]``: the AP of each group, NaN where ``num_pos == 0``.

    The loop form (:func:`sceneparse.evaluation.errors.average_precision`) takes, for each recall
    threshold ``r``, the precision envelope at the first rank whose recall reaches ``r``. Rank ``i``
    of a group therefore collects the thresholds in ``(recall[i-1], recall[i]]`` (``[0, recall[0]]``
    for the first), so the AP is ``sum_i envelope[i] * count_i / 101`` -- a segment sum.
    """
    n_img, k = num_pos.shape
    ap = np.where(num_pos > 0, 0.0, np.nan)
    if len(image) == 0:
        return ap
    group = image.astype(np.int64) * k + label.astype(np.int64)
    srt = np.lexsort((order, -score, group))
    group, tp = group[srt], tp[srt].astype(bool)
    n = len(group)
    first = np.r_[True, group[1:] != group[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    ctp = np.cumsum(tp)
    base = (ctp - tp)[start]  # true positives before the group
    tpc = (ctp - base).astype(np.float64)
    rank = np.arange(n) - start + 1
    fpc = rank - tpc
    pos = num_pos.reshape(-1)[group].astype(np.float64)
    has = pos > 0
    rc = np.divide(tpc, pos, out=np.zeros(n), where=has)
    pr = tpc / (fpc + tpc + np.spacing(1))
    # envelope: running maximum from the end of each group (offset groups so they cannot mix)
    gid = np.cumsum(first) - 1
    shifted = pr - 2.0 * gid  # 0 <= pr <= 1: later groups sit strictly below earlier ones
    env = np.maximum.accumulate(shifted[::-1])[::-1] + 2.0 * gid
    # thresholds <= recall at each rank, minus those <= the previous rank's recall in the group
    upto = np.searchsorted(REC_THRESHOLDS, rc, side="right")
    prev = np.where(first, 0, np.r_[0, upto[:-1]])
    count = (upto - prev).astype(np.float64)
    contrib = env * count / len(REC_THRESHOLDS)
    sums = np.bincount(group[has], weights=contrib[has], minlength=n_img * k).reshape(n_img, k)
    return np.where(num_pos > 0, sums, np.nan)


def compute_facts(pair: CocoPair, iou: float = 0.5, *, t_b: float = 0.1, max_dets: int = 100) -> SourceFacts:
    """The evaluation's error breakdown of one source and the per-image numbers above."""
    tide = tide_from_columns(pair, t_f=iou, t_b=min(t_b, iou), max_dets=max_dets)
    n_img, k = len(pair.image_ids), len(pair.cat_ids)
    dt, gt = pair.dt, pair.gt
    kind = tide.det_kind
    is_tp = kind == "TP"
    is_fp = np.isin(kind, FP_TYPES)
    counted = is_tp | is_fp
    tp = np.bincount(dt.image[is_tp], minlength=n_img)
    fp = np.bincount(dt.image[is_fp], minlength=n_img)
    regular = ~gt.crowd
    num_gt = np.bincount(gt.image[regular], minlength=n_img)
    missed = np.isin(gt.ids, tide.missed_gt) & regular
    errors = {t: np.bincount(dt.image[kind == t], minlength=n_img) for t in FP_TYPES}
    errors["Miss"] = np.bincount(gt.image[missed], minlength=n_img)
    num_pos = np.bincount(gt.image[regular] * k + gt.label[regular], minlength=n_img * k).reshape(n_img, k)
    class_ap = per_image_ap(dt.image[counted], dt.label[counted], dt.score[counted], is_tp[counted],
                            np.flatnonzero(counted), num_pos)
    has = (num_pos > 0).any(1)
    ap = np.full(n_img, np.nan)
    ap[has] = np.nanmean(class_ap[has], axis=1)
    return SourceFacts(iou, tide, tp, fp, num_gt - tp, errors, num_gt, ap, class_ap, missed)


__all__ = ["ERROR_TYPES", "FP_TYPES", "SourceFacts", "compute_facts", "per_image_ap"]
