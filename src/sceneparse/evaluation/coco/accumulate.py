"""Precision/recall accumulation of COCO AP (pycocotools' ``accumulate``), vectorised per category.

For one category, area range and maxDets ``m``: the detections of all images (each image's ``m``
best of that category) are ordered by descending score, ties kept in image order then in-image
rank (pycocotools' stable mergesort); true and false positives are counted cumulatively,
ignored detections counting as neither; ``recall = tp / n_gt`` and
``precision = tp / (fp + tp + eps)``. Precision is then made monotone (each point takes the best
precision at any later point, the right-to-left max envelope) and read at the 101 recall
thresholds ``r``: at the first detection whose recall is ``>= r`` (``np.searchsorted(rc, r,
side='left')``), 0 beyond the last detection. ``scores`` holds the score at that detection.
Categories without any regular ground truth in an area range keep -1 there.

Same numbers, less work -- two exact shortcuts:

* Recall only changes at a true positive, so "first detection with recall >= r" is the
  ``c_r``-th true positive, where ``c_r`` is the smallest count whose float recall ``c / n_gt`` is
  ``>= r`` (found once per ``n_gt`` with the same float division).
* Between two true positives precision only falls (false positives grow the denominator), so
  the envelope at a true positive is the max of the precisions at that and later true positives,
  and at the first detection it is the max over all true positives. Precision is therefore only
  computed at true positives -- at most ``n_gt`` values per curve instead of one per detection --
  with pycocotools' operations (``tp / (float(fp + tp) + eps)``), so the values are bit-identical.

All ``T x A`` curves of one category and maxDets are handled together (a padded
``[T * A, max_tp]`` array for the envelope); the Python loop is over categories and maxDets only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Accumulated:
    precision: np.ndarray  # float64 [T, R, K, A, M], -1 where a category has no regular ground truth
    recall: np.ndarray  # float64 [T, K, A, M]
    scores: np.ndarray  # float64 [T, R, K, A, M]


def accumulation_order(dt_k: np.ndarray, dt_scores: np.ndarray) -> np.ndarray:
    """Rows sorted by category, then descending score, ties kept in the given row order.

    The rows must already be ordered by image, then by rank within each (image, category) group
    (as the evaluation produces them): ties then fall in image order, then rank, as in pycocotools
    (which concatenates images in order and sorts with a stable mergesort).
    """
    by_score = np.argsort(-dt_scores, kind="stable")
    k = dt_k[by_score]
    k = k.astype(np.int16) if k.size and 0 <= k.min() and k.max() < 2 ** 15 else k  # radix sort
    return by_score[np.argsort(k, kind="stable")]


def _count_thresholds(n_gt: int, rec_thresholds: np.ndarray) -> np.ndarray:
    """``int64 [R]``: smallest tp count ``c`` with ``c / n_gt >= r`` (float64, as pycocotools divides)."""
    recalls = np.arange(n_gt + 1, dtype=np.float64) / n_gt
    return np.searchsorted(recalls, rec_thresholds, side="left").astype(np.int64)


def accumulate(tp: np.ndarray, counted: np.ndarray, dt_k: np.ndarray, dt_rank: np.ndarray, dt_scores: np.ndarray,
               n_gt: np.ndarray, rec_thresholds: np.ndarray, max_dets: tuple[int, ...],
               order: np.ndarray | None = None) -> Accumulated:
    """Build the precision / recall / scores arrays.

    ``tp``: ``bool [T, A, D]`` true positives; ``counted``: ``bool [T, A, D]``, not ignored (true or
    false positives); ``dt_k``: category
    index (K axis) of each detection; ``dt_rank``: rank in its (image, category) group;
    ``dt_scores`` ``[D]``; ``n_gt`` ``int [K, A]``: regular ground truths. Detection rows must be
    ordered by image, then rank (see :func:`accumulation_order`).

    ``order``: when given, :func:`accumulation_order` of these rows, and ``tp`` / ``counted`` are
    already in that order along their last axis (the evaluation builds them so from its matches,
    saving two gathers over the whole ``[T, A, D]`` arrays); ``dt_k``, ``dt_rank``, ``dt_scores``
    stay in row order.
    """
    t_count, a_count = tp.shape[0], tp.shape[1]
    rows = t_count * a_count
    k_count = n_gt.shape[0]
    r_count = rec_thresholds.size
    precision = -np.ones((t_count, r_count, k_count, a_count, len(max_dets)))
    recall = -np.ones((t_count, k_count, a_count, len(max_dets)))
    scores = -np.ones((t_count, r_count, k_count, a_count, len(max_dets)))
    if order is None:
        order = accumulation_order(dt_k, dt_scores)
        tp_o = np.take(tp.reshape(rows, -1), order, axis=1)  # np.take: several times faster than [:, order]
        counted_o = np.take(counted.reshape(rows, -1), order, axis=1)
    else:
        tp_o, counted_o = tp.reshape(rows, -1), counted.reshape(rows, -1)
    rank = dt_rank[order]
    k_sorted = dt_k[order]
    score_o = dt_scores[order]
    thresholds: dict[int, np.ndarray] = {}
    row_area = np.tile(np.arange(a_count), t_count)
    eps = np.spacing(1)
    for mi, max_det in enumerate(max_dets):
        if rank.size and rank.max() < max_det:  # every detection counts: views, no copies
            tp_m, counted_m, score_m, k_m = tp_o, counted_o, score_o, k_sorted
        else:
            keep = rank < max_det
            tp_m, counted_m, score_m, k_m = tp_o[:, keep], counted_o[:, keep], score_o[keep], k_sorted[keep]
        bounds = np.searchsorted(k_m, np.arange(k_count + 1))
        for k in range(k_count):
            areas = np.flatnonzero(n_gt[k] > 0)
            if areas.size == 0:
                continue
            s, e = int(bounds[k]), int(bounds[k + 1])
            n = e - s
            if n == 0:
                recall[:, k, areas, mi] = 0
                precision[:, :, k, areas, mi] = 0
                scores[:, :, k, areas, mi] = 0
                continue
            tp_k = tp_m[:, s:e]  # [rows, n]
            row_i, pos = np.nonzero(tp_k)  # true positives, by row then position
            n_tp = np.bincount(row_i, minlength=rows)  # [rows]
            first = np.cumsum(n_tp) - n_tp
            tp_count = np.arange(row_i.size) - first[row_i] + 1  # cumulative tp at each true positive
            counted = np.cumsum(counted_m[:, s:e], axis=1, dtype=np.int32)[row_i, pos]  # fp + tp there
            pr = tp_count.astype(np.float64) / (counted.astype(np.float64) + eps)
            width = max(int(n_tp.max()), 1)
            padded = np.zeros((rows, width))
            padded[row_i, tp_count - 1] = pr
            envelope = np.maximum.accumulate(padded[:, ::-1], axis=1)[:, ::-1]

            ngt_rows = n_gt[k, row_area]  # [rows]
            valid_rows = ngt_rows > 0
            rec = n_tp / np.where(valid_rows, ngt_rows, 1)
            need = np.zeros((rows, r_count), dtype=np.int64)
            for a in areas.tolist():
                c = int(n_gt[k, a])
                need[row_area == a] = thresholds.setdefault(c, _count_thresholds(c, rec_thresholds))
            reached = need <= n_tp[:, None]
            col = np.clip(need - 1, 0, width - 1)
            prec = np.where(reached, np.take_along_axis(envelope, col, axis=1), 0.0)
            tp_index = np.minimum(first[:, None] + np.maximum(need - 1, 0), max(row_i.size - 1, 0))
            at = np.where(need == 0, 0, pos[tp_index] if pos.size else 0)
            sc = np.where(reached, score_m[s:e][at], 0.0)

            prec = prec.reshape(t_count, a_count, r_count)[:, areas]
            sc = sc.reshape(t_count, a_count, r_count)[:, areas]
            recall[:, k, areas, mi] = rec.reshape(t_count, a_count)[:, areas]
            precision[:, :, k, areas, mi] = prec.transpose(0, 2, 1)
            scores[:, :, k, areas, mi] = sc.transpose(0, 2, 1)
    return Accumulated(precision, recall, scores)
