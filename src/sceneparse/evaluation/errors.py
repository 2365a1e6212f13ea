"""Detection error breakdown in the spirit of TIDE (Bolya et al., "TIDE: A General Toolbox for
Identifying Object Detection Errors", ECCV 2020).

Every false positive at the foreground IoU ``t_f`` (0.5) and every missed object gets exactly one
error type, and each type is scored by how much AP@50 would rise if an oracle fixed all errors of
that type and nothing else (``delta_ap = AP50(fixed) - AP50``). The types, tested in this order
(TIDE's), with ``iou_same`` / ``iou_other`` the highest IoU with a non-crowd ground-truth object of
the detection's own / another class:

========  ==================================================  ======================================
type      false positive with                                 oracle fix
========  ==================================================  ======================================
``Loc``   ``t_b <= iou_same < t_f``                           box / mask := the object's; it becomes
                                                              a true positive of that object
``Cls``   ``iou_other >= t_f``                                class := the object's class; it becomes
                                                              a true positive of that object
``Dupe``  ``iou_same >= t_f`` (the object was already taken   suppress the detection
          by a higher-scoring detection)
``Bkg``   ``max(iou_same, iou_other) < t_b``                  suppress the detection
``Both``  anything else (``t_b <= iou_other < t_f``)          suppress the detection
``Miss``  a non-crowd object that no detection matched and    drop the object from the ground truth
          no ``Cls`` / ``Loc`` error points at                (fewer positives)
========  ==================================================  ======================================

As in TIDE, a ``Cls`` or ``Loc`` error is only turned into a true positive when its object is
unmatched and it is the highest-scoring error pointing at that object; otherwise fixing it would
make a duplicate, so it is suppressed. Two further oracles bound the total: ``FalsePos`` (suppress
every false positive) and ``FalseNeg`` (drop every unmatched object).

The baseline is COCO's AP@[IoU=0.50 | area=all | maxDets=100]: same greedy matching, crowd regions
as ignore areas, at most ``max_dets`` detections per image and category, and 101-point interpolated
precision. Only the iteration over categories in the AP step and over detection ranks in the
matching is in Python.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .confusion import greedy_match, image_chunks, padded_rows, pairwise_iou, sorted_by_image_then_score
from .validate import CocoPair, coco_columns

#: pycocotools' 101 recall thresholds
REC_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


class ErrorType(str, enum.Enum):
    """TIDE's main error types (``value`` is TIDE's short name)."""

    CLS = "Cls"
    LOC = "Loc"
    BOTH = "Both"
    DUPE = "Dupe"
    BKG = "Bkg"
    MISS = "Miss"


MAIN_ERRORS = (ErrorType.CLS, ErrorType.LOC, ErrorType.BOTH, ErrorType.DUPE, ErrorType.BKG, ErrorType.MISS)


@dataclass
class TideErrors:
    """Error breakdown of one set of detections.

    Attributes:
        ap50: baseline AP@50 (fraction) over categories with ground truth.
        counts: number of errors of each type.
        delta_ap: AP@50 gained by fixing all errors of one type (fraction; main types). NaN when the fix
            leaves no category with ground truth (e.g. ``Miss`` when every object was missed).
        delta_ap_false_pos / delta_ap_false_neg: the two bounding oracles.
        det_kind: ``str [N_results]`` per result: ``"TP"``, ``"ignored"`` (matched a crowd region),
            ``"dropped"`` (beyond ``max_dets``) or an error type's short name.
        det_target: ``int64 [N_results]`` annotation id a ``Cls``/``Loc``/``Dupe`` error points at, else -1.
        missed_gt: annotation ids of the ``Miss`` errors.
        t_f / t_b: the foreground and background IoU thresholds used.
    """

    ap50: float
    counts: dict[ErrorType, int]
    delta_ap: dict[ErrorType, float]
    delta_ap_false_pos: float
    delta_ap_false_neg: float
    det_kind: np.ndarray
    det_target: np.ndarray
    missed_gt: np.ndarray
    t_f: float = 0.5
    t_b: float = 0.1
    per_category_ap50: dict[int, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"TIDE-style error breakdown (t_f={self.t_f:g}, t_b={self.t_b:g}); AP50 = {100 * self.ap50:.2f}",
                 f"{'type':<9} {'count':>7} {'dAP50':>7}"]
        for t in MAIN_ERRORS:
            lines.append(f"{t.value:<9} {self.counts[t]:>7d} {100 * self.delta_ap[t]:>7.2f}")
        lines.append(f"{'FalsePos':<9} {'':>7} {100 * self.delta_ap_false_pos:>7.2f}")
        lines.append(f"{'FalseNeg':<9} {'':>7} {100 * self.delta_ap_false_neg:>7.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"ap50": _num(self.ap50), "t_f": self.t_f, "t_b": self.t_b,
                "counts": {t.value: int(self.counts[t]) for t in MAIN_ERRORS},
                "delta_ap": {t.value: _num(self.delta_ap[t]) for t in MAIN_ERRORS},
                "delta_ap_special": {"FalsePos": _num(self.delta_ap_false_pos),
                                     "FalseNeg": _num(self.delta_ap_false_neg)}}


def _num(v):
    return float(v) if np.isfinite(v) else None


def average_precision(label: np.ndarray, score: np.ndarray, tp: np.ndarray, order: np.ndarray,
                      num_pos: np.ndarray) -> tuple[float, np.ndarray]:
    """COCO's 101-point interpolated AP per category from scored true/false positives.

    Args:
        label / score / tp: ``[N]`` category index, score and true-positive flag of each counted
            detection (ignored ones left out).
        order: ``[N]`` position in pycocotools' concatenation order (image, then score rank inside the
            image and category); ties of score are broken by it, as pycocotools' stable sort does.
        num_pos: ``int [K]`` positives per category.

    Returns:
        ``(mean AP over categories with num_pos > 0 (NaN if none), float64 [K] AP with NaN for the rest)``.
    """
    k = len(num_pos)
    ap = np.full(k, np.nan)
    srt = np.lexsort((order, -score, label))
    label, tp = label[srt], tp[srt]
    bounds = np.searchsorted(label, np.arange(k + 1))
    for c in np.flatnonzero(num_pos > 0):
        t = tp[bounds[c]:bounds[c + 1]]
        tpc = np.cumsum(t).astype(float)
        fpc = np.cumsum(~t).astype(float)
        rc = tpc / num_pos[c]
        pr = tpc / (fpc + tpc + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, REC_THRESHOLDS, side="left")
        q = np.zeros(len(REC_THRESHOLDS))
        ok = idx < len(t)
        q[ok] = pr[idx[ok]]
        ap[c] = q.mean()
    valid = num_pos > 0
    return (float(ap[valid].mean()) if valid.any() else float("nan")), ap


def tide_errors(gt, results, iou_type: str = "bbox", *, t_f: float = 0.5, t_b: float = 0.1,
                max_dets: int = 100) -> TideErrors:
    """Classify the errors of COCO results and measure the AP@``t_f`` each type costs.

    Args:
        gt: COCO ground truth (path or dict). results: COCO results (path or list; validated).
        iou_type: ``"bbox"`` or ``"segm"``.
        t_f: foreground IoU (a match). t_b: background IoU (below it a detection touches nothing).
        max_dets: detections kept per image and category (highest scores), as COCO's maxDets.
    """
    return tide_from_columns(coco_columns(gt, results, iou_type), t_f=t_f, t_b=t_b, max_dets=max_dets)


def tide_from_columns(pair: CocoPair, *, t_f: float = 0.5, t_b: float = 0.1, max_dets: int = 100) -> TideErrors:
    """:func:`tide_errors` on already read and validated columns (see ``validate.coco_columns``)."""
    if not 0 <= t_b <= t_f <= 1:
        raise ValueError(f"need 0 <= t_b <= t_f <= 1, got t_b={t_b}, t_f={t_f}")
    n_dt, n_gt, k = len(pair.dt), len(pair.gt), len(pair.cat_ids)
    n_img = len(pair.image_ids)
    dt, gt = pair.dt, pair.gt

    # pycocotools' order: per (image, category), descending score, ties in list order; keep max_dets
    o = np.lexsort((np.arange(n_dt), -dt.score, dt.label, dt.image))
    grp = dt.image[o] * k + dt.label[o]
    first = np.r_[True, grp[1:] != grp[:-1]] if n_dt else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(n_dt), 0)) if n_dt else np.zeros(0, np.int64)
    rank = np.empty(n_dt, dtype=np.int64)
    rank[o] = np.arange(n_dt) - start
    position = np.empty(n_dt, dtype=np.int64)
    position[o] = np.arange(n_dt)
    kept = rank < max_dets

    det_rows = padded_rows(dt.image, sorted_by_image_then_score(pair, kept), n_img)
    gt_rows = padded_rows(gt.image, np.arange(n_gt), n_img)

    matched_gt = np.full(n_dt, -1, dtype=np.int64)  # gt row of each matched detection
    same_iou = np.zeros(n_dt)
    same_gt = np.full(n_dt, -1, dtype=np.int64)
    other_iou = np.zeros(n_dt)
    other_gt = np.full(n_dt, -1, dtype=np.int64)
    for sl in image_chunks(det_rows, gt_rows):
        dr, gr = det_rows[sl], gt_rows[sl]
        if dr.shape[1] == 0 or gr.shape[1] == 0:  # nothing to match: all detections stay unmatched
            continue
        ious = pairwise_iou(pair, dr, gr)
        dvalid, gvalid = dr >= 0, gr >= 0
        crowd = gvalid & gt.crowd[gr.clip(0)]
        same = dt.label[dr.clip(0)][:, :, None] == gt.label[gr.clip(0)][:, None, :]
        valid = dvalid[:, :, None] & gvalid[:, None, :]
        match = greedy_match(ious, valid & same, crowd, crowd, t_f)
        rows = dr[dvalid]
        m = match[dvalid]
        matched_gt[rows] = np.where(m >= 0, np.take_along_axis(gr, match.clip(0), axis=1)[dvalid], -1)
        regular = valid & ~crowd[:, None, :]
        for sel, iou_out, gt_out in ((regular & same, same_iou, same_gt), (regular & ~same, other_iou, other_gt)):
            s = np.where(sel, ious, -1.0)
            best = s.argmax(2)
            val = np.take_along_axis(s, best[:, :, None], axis=2)[:, :, 0]
            iou_out[rows] = np.maximum(val[dvalid], 0.0)
            gt_out[rows] = np.where(val[dvalid] >= 0, np.take_along_axis(gr, best, axis=1)[dvalid], -1)

    is_matched = matched_gt >= 0
    ignored = is_matched & gt.crowd[matched_gt.clip(0)] if n_gt else np.zeros(n_dt, dtype=bool)
    tp = kept & is_matched & ~ignored
    fp = kept & ~is_matched

    kind = np.full(n_dt, "dropped", dtype="<U7")
    kind[tp] = "TP"
    kind[ignored] = "ignored"
    loc = fp & (same_iou >= t_b) & (same_iou < t_f)
    cls = fp & ~loc & (other_iou >= t_f)
    dupe = fp & ~loc & ~cls & (same_iou >= t_f)
    bkg = fp & ~loc & ~cls & ~dupe & (np.maximum(same_iou, other_iou) < t_b)
    both = fp & ~loc & ~cls & ~dupe & ~bkg
    for mask, t in ((loc, ErrorType.LOC), (cls, ErrorType.CLS), (dupe, ErrorType.DUPE), (bkg, ErrorType.BKG),
                    (both, ErrorType.BOTH)):
        kind[mask] = t.value
    target = np.full(n_dt, -1, dtype=np.int64)
    target[loc | dupe] = same_gt[loc | dupe]
    target[cls] = other_gt[cls]

    gt_tp = np.zeros(n_gt, dtype=bool)
    gt_tp[matched_gt[tp]] = True
    pointed = np.zeros(n_gt, dtype=bool)
    pointed[target[loc | cls]] = True
    unmatched_gt = ~gt.crowd & ~gt_tp
    miss = unmatched_gt & ~pointed
    num_pos = np.bincount(gt.label[~gt.crowd], minlength=k)

    # Cls / Loc fixes: the highest-scoring error pointing at a free object becomes its true positive
    cand = np.flatnonzero(loc | cls)
    cand = cand[~gt_tp[target[cand]]]
    best = np.lexsort((position[cand], -dt.score[cand], target[cand]))
    cand = cand[best]
    first_of_target = np.r_[True, target[cand][1:] != target[cand][:-1]] if len(cand) else np.zeros(0, bool)
    promoted = np.zeros(n_dt, dtype=bool)
    promoted[cand[first_of_target]] = True

    counted = tp | fp
    base_label = dt.label

    def ap_of(keep: np.ndarray, is_tp: np.ndarray, label: np.ndarray, pos: np.ndarray) -> float:
        return average_precision(label[keep], dt.score[keep], is_tp[keep], position[keep], pos)[0]

    base, per_cat = average_precision(base_label[counted], dt.score[counted], tp[counted], position[counted], num_pos)
    delta: dict[ErrorType, float] = {}
    # Loc: promoted Loc errors become TPs of their own class; the other Loc errors are suppressed
    delta[ErrorType.LOC] = ap_of(counted & ~(loc & ~promoted), tp | (loc & promoted), base_label, num_pos) - base
    relabel = base_label.copy()
    cls_fix = cls & promoted
    relabel[cls_fix] = gt.label[target[cls_fix]]
    delta[ErrorType.CLS] = ap_of(counted & ~(cls & ~promoted), tp | cls_fix, relabel, num_pos) - base
    for t, mask in ((ErrorType.BOTH, both), (ErrorType.DUPE, dupe), (ErrorType.BKG, bkg)):
        delta[t] = ap_of(counted & ~mask, tp, base_label, num_pos) - base
    delta[ErrorType.MISS] = ap_of(counted, tp, base_label,
                                  num_pos - np.bincount(gt.label[miss], minlength=k)) - base
    d_fp = ap_of(tp, tp, base_label, num_pos) - base
    d_fn = ap_of(counted, tp, base_label, num_pos - np.bincount(gt.label[unmatched_gt], minlength=k)) - base

    counts = {ErrorType.LOC: int(loc.sum()), ErrorType.CLS: int(cls.sum()), ErrorType.DUPE: int(dupe.sum()),
              ErrorType.BKG: int(bkg.sum()), ErrorType.BOTH: int(both.sum()), ErrorType.MISS: int(miss.sum())}
    det_target = np.where(target >= 0, gt.ids[target.clip(0)] if n_gt else -1, -1)
    return TideErrors(base, counts, delta, d_fp, d_fn, kind, det_target, gt.ids[miss], t_f, t_b,
                      {int(c): float(a) for c, a in zip(pair.cat_ids, per_cat) if np.isfinite(a)})


__all__ = ["ErrorType", "MAIN_ERRORS", "TideErrors", "average_precision", "tide_errors", "tide_from_columns"]
