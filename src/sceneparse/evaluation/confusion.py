"""Detection confusion matrix, and the padded greedy matcher it shares with the error breakdown.

The ``(C+1) x (C+1)`` matrix counts, at one IoU threshold and above one score threshold,

* ``M[g, p]``  ground-truth objects of class ``g`` matched to a detection of class ``p``
  (``g == p`` on the diagonal: correct; off the diagonal: confusions),
* ``M[g, C]``  ground-truth objects of class ``g`` left unmatched (missed: *background column*),
* ``M[C, p]``  detections of class ``p`` left unmatched (false alarms: *background row*).

Matching is class-agnostic and greedy, COCO's rule applied to all classes at once: detections of
an image in descending score order each take the still-free ground-truth object of highest IoU
(``>= iou``). Crowd regions are "ignore" objects: a detection matched to one is dropped, and they are
never counted as missed; non-crowd objects are preferred, exactly as in COCO's per-category matching.

:func:`greedy_match` runs that matching for many images at once on padded ``[G, D, M]`` IoU arrays:
the only Python loop is over detection ranks (``D``, at most ``max_dets``), vectorised over images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .validate import CocoPair, coco_columns

#: padded IoU arrays are built for chunks of images of at most this many elements
CHUNK_ELEMENTS = 4_000_000


# ---- shared matching core ---------------------------------------------------------------
def padded_rows(image_of_row: np.ndarray, rows: np.ndarray, num_images: int) -> np.ndarray:
    """Scatter ``rows`` into an ``int64 [num_images, L]`` table, ``-1`` padded, ``L`` = most rows of
    one image; inside each image the rows keep the order they are given in (COCO files need not
    group their annotations by image: the rows are put in image order by a stable sort first)."""
    rows = rows[np.argsort(image_of_row[rows], kind="stable")]
    img = image_of_row[rows]
    counts = np.bincount(img, minlength=num_images)
    width = int(counts.max()) if len(rows) else 0
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(rows)) - start[img]
    out = np.full((num_images, width), -1, dtype=np.int64)
    out[img, rank] = rows
    return out


def image_chunks(det_rows: np.ndarray, gt_rows: np.ndarray) -> Iterator[slice]:
    """Slices of images such that one chunk's ``[G, D, M]`` arrays stay below :data:`CHUNK_ELEMENTS`."""
    n = det_rows.shape[0]
    per_image = max(1, det_rows.shape[1] * max(1, gt_rows.shape[1]))
    step = max(1, CHUNK_ELEMENTS // per_image)
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def pairwise_iou(pair: CocoPair, det_rows: np.ndarray, gt_rows: np.ndarray) -> np.ndarray:
    """``float64 [G, D, M]`` IoU of padded detections ``det_rows [G, D]`` and ground truth
    ``gt_rows [G, M]`` (rows of ``pair.dt`` / ``pair.gt``; ``-1`` padding gives 0).

    pycocotools' definition: boxes as ``[x, y, w, h]`` with ``area = w * h``; against a crowd region
    the "IoU" is ``|d & g| / |d|``. Boxes are computed here in one broadcast (the same float64
    operations as pycocotools' ``bbIou``); masks go through ``pycocotools.mask.iou`` once per image.
    """
    g_n, d_n, m_n = det_rows.shape[0], det_rows.shape[1], gt_rows.shape[1]
    dvalid, gvalid = det_rows >= 0, gt_rows >= 0
    crowd = np.where(gvalid, pair.gt.crowd[gt_rows.clip(0)] if len(pair.gt) else False, False)
    if pair.iou_type == "bbox":
        d = pair.dt.boxes[det_rows.clip(0)] if len(pair.dt) else np.zeros((g_n, d_n, 4))
        g = pair.gt.boxes[gt_rows.clip(0)] if len(pair.gt) else np.zeros((g_n, m_n, 4))
        dx, dy, dw, dh = (d[..., i][:, :, None] for i in range(4))
        gx, gy, gw, gh = (g[..., i][:, None, :] for i in range(4))
        iw = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
        ih = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        union = np.where(crowd[:, None, :], dw * dh, dw * dh + gw * gh - inter)
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)
    else:
        from pycocotools import mask as mask_utils

        iou = np.zeros((g_n, d_n, m_n))
        for i in np.flatnonzero(dvalid.any(1) & gvalid.any(1)):
            dr, gr = det_rows[i][dvalid[i]], gt_rows[i][gvalid[i]]
            iou[i, :len(dr), :len(gr)] = np.asarray(mask_utils.iou([pair.dt.rles[j] for j in dr],
                                                                   [pair.gt.rles[j] for j in gr],
                                                                   crowd[i][gvalid[i]].astype(np.uint8).tolist()))
    return np.where(dvalid[:, :, None] & gvalid[:, None, :], iou, 0.0)


def greedy_match(iou: np.ndarray, allowed: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray,
                 threshold: float) -> np.ndarray:
    """COCO's greedy matching for ``G`` groups at once.

    Args:
        iou: ``float [G, D, M]``; detections of each group in the order they choose (descending score).
        allowed: ``bool [G, D, M]`` pairs that may match (valid rows; same class for per-class matching).
        gt_ignore: ``bool [G, M]`` "ignore" objects (crowd): taken only when no regular one qualifies,
            and a detection that takes one is ignored by the caller.
        gt_crowd: ``bool [G, M]`` objects that stay available after a match (crowd regions).
        threshold: minimum IoU (pycocotools: ``iou >= min(threshold, 1 - 1e-10)``).

    Returns:
        ``int64 [G, D]``: index ``m`` of the matched object, ``-1`` when unmatched. Among candidates of
        equal IoU the last one wins, as in pycocotools' loop over ground truth.
    """
    g_n, d_n, m_n = iou.shape
    thr = min(threshold, 1 - 1e-10)
    match = np.full((g_n, d_n), -1, dtype=np.int64)
    if m_n == 0 or d_n == 0:
        return match
    taken = np.zeros((g_n, m_n), dtype=bool)
    rows = np.arange(g_n)
    for d in range(d_n):
        cand = allowed[:, d] & (iou[:, d] >= thr) & ~(taken & ~gt_crowd)
        regular = cand & ~gt_ignore
        use = np.where(regular.any(1, keepdims=True), regular, cand)
        score = np.where(use, iou[:, d], -1.0)
        m = m_n - 1 - np.argmax(score[:, ::-1], axis=1)  # last maximum
        hit = use.any(1)
        match[hit, d] = m[hit]
        taken[rows[hit], m[hit]] = True
    return match


def sorted_by_image_then_score(pair: CocoPair, keep: np.ndarray | None = None) -> np.ndarray:
    """Detection rows ordered by image, then descending score (ties: original order, as mergesort)."""
    rows = np.arange(len(pair.dt)) if keep is None else np.flatnonzero(keep)
    order = np.lexsort((-pair.dt.score[rows], pair.dt.image[rows]))
    return rows[order]


# ---- the confusion matrix ---------------------------------------------------------------
@dataclass
class DetectionConfusionMatrix:
    """``matrix``: ``int64 [C+1, C+1]``, rows = ground-truth class, columns = predicted class; index ``C``
    is background (row: unmatched detections; column: missed objects). ``np.asarray(cm)`` gives it."""

    matrix: np.ndarray
    class_names: list[str]
    cat_ids: list[int]
    iou: float
    score_threshold: float
    num_images: int = 0
    crowd_matches: int = 0  # detections dropped because they matched a crowd region

    def __array__(self, dtype=None, copy=None):
        return self.matrix if dtype is None else self.matrix.astype(dtype)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        c = self.num_classes
        m = self.matrix
        tp = np.diag(m)[:c]
        lines = [f"detection confusion at IoU >= {self.iou}, score >= {self.score_threshold} "
                 f"(rows: ground truth, columns: prediction)",
                 f"{'class':<16} {'correct':>8} {'confused':>9} {'missed':>7} {'false alarms':>13}"]
        for k in range(c):
            lines.append(f"{self.class_names[k][:16]:<16} {int(tp[k]):>8d} {int(m[k, :c].sum() - tp[k]):>9d} "
                         f"{int(m[k, c]):>7d} {int(m[c, k]):>13d}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"iou": self.iou, "score_threshold": self.score_threshold,
                "labels": self.class_names + ["background"], "cat_ids": self.cat_ids,
                "matrix": self.matrix.tolist(), "crowd_matches": self.crowd_matches}


def detection_confusion_matrix(gt, results, iou: float = 0.5, score_threshold: float = 0.25,
                               iou_type: str = "bbox") -> DetectionConfusionMatrix:
    """Count (ground-truth class, predicted class) pairs after class-agnostic greedy matching.

    Args:
        gt: COCO ground truth (path or dict). results: COCO results (path or list of dicts), validated
            with :func:`~sceneparse.evaluation.validate.validate_coco_results`.
        iou: IoU needed for a match. score_threshold: detections below it are left out.
        iou_type: ``"bbox"`` or ``"segm"`` (mask IoU).
    """
    pair = coco_columns(gt, results, iou_type)
    return confusion_from_columns(pair, iou, score_threshold)


def confusion_from_columns(pair: CocoPair, iou: float = 0.5, score_threshold: float = 0.25) -> DetectionConfusionMatrix:
    c = len(pair.cat_ids)
    n_img = len(pair.image_ids)
    det_rows = padded_rows(pair.dt.image, sorted_by_image_then_score(pair, pair.dt.score >= score_threshold), n_img)
    gt_rows = padded_rows(pair.gt.image, np.arange(len(pair.gt)), n_img)
    matrix = np.zeros((c + 1, c + 1), dtype=np.int64)
    crowd_hits = 0
    if gt_rows.shape[1] == 0:  # no object anywhere: every detection is a false alarm
        matrix[c, :c] = np.bincount(pair.dt.label[det_rows[det_rows >= 0]], minlength=c)
        det_rows = det_rows[:, :0]
    for sl in image_chunks(det_rows, gt_rows):
        dr, gr = det_rows[sl], gt_rows[sl]
        if dr.shape[1] == 0:  # no detection in these images: every object is missed
            missed = (gr >= 0) & ~pair.gt.crowd[gr.clip(0)] if len(pair.gt) else np.zeros(gr.shape, bool)
            matrix[:c, c] += np.bincount(pair.gt.label[gr[missed]], minlength=c)
            continue
        ious = pairwise_iou(pair, dr, gr)
        dvalid, gvalid = dr >= 0, gr >= 0
        crowd = gvalid & pair.gt.crowd[gr.clip(0)] if len(pair.gt) else np.zeros(gr.shape, dtype=bool)
        allowed = dvalid[:, :, None] & gvalid[:, None, :]
        match = greedy_match(ious, allowed, crowd, crowd, iou)
        hit = match >= 0
        matched_gt = np.take_along_axis(gr, match.clip(0), axis=1)
        to_crowd = hit & np.take_along_axis(crowd, match.clip(0), axis=1)
        crowd_hits += int(to_crowd.sum())
        pairs = hit & ~to_crowd
        g_lab = pair.gt.label[matched_gt[pairs]]
        d_lab = pair.dt.label[dr[pairs]]
        fa = dvalid & ~hit
        gt_used = np.zeros(gr.shape, dtype=bool)
        gi, di = np.nonzero(pairs)
        gt_used[gi, match[gi, di]] = True
        missed = gvalid & ~crowd & ~gt_used
        flat = np.concatenate([g_lab * (c + 1) + d_lab,
                               c * (c + 1) + pair.dt.label[dr[fa]],
                               pair.gt.label[gr[missed]] * (c + 1) + c])
        matrix += np.bincount(flat, minlength=(c + 1) ** 2).reshape(c + 1, c + 1)
    return DetectionConfusionMatrix(matrix, list(pair.cat_names), pair.cat_ids.tolist(), float(iou),
                                    float(score_threshold), n_img, crowd_hits)


__all__ = ["DetectionConfusionMatrix", "detection_confusion_matrix", "greedy_match", "pairwise_iou"]
