"""COCO's greedy matching of detections to ground truth, for all groups, thresholds and areas at once.

The rule (pycocotools' ``evaluateImg``), inside one (image, category) group, for one IoU threshold
``t`` and one area range: detections are visited by descending score; each one takes, among the
ground truths still available (not yet matched, or crowd, which can absorb any number of
detections), the one with the highest IoU provided it is ``>= min(t, 1 - 1e-10)``, preferring any
*regular* ground truth over an *ignored* one (crowd, ``num_keypoints == 0`` or outside the area
range): pycocotools sorts ignored ground truths last and stops scanning at the first ignored one
once a regular match is in hand. On equal IoUs the ground truth that comes later in the group's
order wins (pycocotools' scan keeps replacing its best on ``>=``). A detection matched to an
ignored ground truth is ignored; so is an unmatched detection outside the area range.

Why vectorised by *rank*: the matching is sequential within a group (a ground truth taken by the
first detection is no longer available to the second), but groups are independent. So the loop
runs over detection ranks (at most ``max_dets[-1]`` iterations), and iteration ``r`` decides the
r-th detection of every group, for all ``T`` thresholds and ``A`` area ranges, with segmented
reductions (``ufunc.reduceat``) over the candidate pairs. Pairs whose IoU is below the smallest
threshold are dropped first: they can never match.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


def dense_dt_gt(t: np.ndarray, a: np.ndarray, d: np.ndarray, g: np.ndarray, shape: tuple[int, int, int]
                ) -> np.ndarray:
    """``int32 [T, A, D]`` ground-truth row matched by each detection (-1 if none) from the match
    index arrays (``dt_gt[t, a, d] = g``)."""
    out = np.full(shape, -1, dtype=np.int32)
    out[t, a, d] = g
    return out


@dataclass
class MatchArrays:
    """Raw matching results (indices into the evaluation's sorted detection / ground-truth rows).

    The matches are index arrays ``int64 [M]`` (threshold, area range, detection row, ground-truth
    row), in no particular order; :attr:`dt_gt` is their dense ``[T, A, D]`` form, built on first use
    (filling an ``int32 [10, 4, 500k]`` array costs 0.1 s that the evaluation itself does not need).
    """

    gt_dt: np.ndarray  # int32 [T, A, G]: detection row matched to each ground truth, -1 if none
    #: (a crowd ground truth keeps the *last* detection that matched it, as pycocotools' gtMatches)
    t: np.ndarray
    a: np.ndarray
    d: np.ndarray
    g: np.ndarray
    num_dt: int

    @functools.cached_property
    def dt_gt(self) -> np.ndarray:
        """``int32 [T, A, D]``: ground-truth row matched by each detection, -1 if none."""
        return dense_dt_gt(self.t, self.a, self.d, self.g, (*self.gt_dt.shape[:2], self.num_dt))


def greedy_match(pair_dt: np.ndarray, pair_gt: np.ndarray, pair_iou: np.ndarray, dt_rank: np.ndarray,
                 gt_ignore: np.ndarray, gt_crowd: np.ndarray, iou_thresholds: np.ndarray,
                 num_dt: int, num_gt: int) -> MatchArrays:
    """Match detections to ground truth.

    ``pair_dt``, ``pair_gt``, ``pair_iou`` ``[P]``: every (detection, ground truth) pair of the
    same group with its IoU / OKS; the pairs of one detection are contiguous and in the group's
    ground-truth order. ``dt_rank [D]``: 0-based position of each detection in its group by
    descending score. ``gt_ignore`` ``bool [A, G]``: pycocotools' ``gtIgnore`` per area range;
    ``gt_crowd`` ``bool [G]``; ``iou_thresholds`` ``[T]``.
    """
    t_count, a_count = iou_thresholds.size, gt_ignore.shape[0]
    gt_dt = np.full((t_count, a_count, num_gt), -1, dtype=np.int32)
    none = np.zeros(0, np.int64)
    if pair_iou.size == 0:
        return MatchArrays(gt_dt, none, none, none, none, num_dt)
    thr = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)
    keep = pair_iou >= thr.min()
    pd, pg, pi = pair_dt[keep], pair_gt[keep], pair_iou[keep]
    if pd.size == 0:
        return MatchArrays(gt_dt, none, none, none, none, num_dt)
    by_rank = np.argsort(dt_rank[pd], kind="stable")  # keeps each detection's pairs together, in order
    pd, pg, pi = pd[by_rank], pg[by_rank], pi[by_rank]
    rank = dt_rank[pd]
    cuts = np.flatnonzero(np.diff(rank)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [rank.size]])

    taken = np.zeros((num_gt, t_count, a_count), dtype=bool)
    ign_ga = np.ascontiguousarray(gt_ignore.T)  # [G, A]
    found: list[tuple[np.ndarray, ...]] = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        d, g, iou = pd[s:e], pg[s:e], pi[s:e]
        first = np.concatenate([[True], d[1:] != d[:-1]])
        seg_start = np.flatnonzero(first)
        seg_id = np.cumsum(first) - 1
        valid = (iou[:, None] >= thr[None, :])[:, :, None] & (~taken[g] | gt_crowd[g][:, None, None])
        ign = ign_ga[g][:, None, :]  # [Pr, 1, A]
        has_regular = np.logical_or.reduceat(valid & ~ign, seg_start, axis=0)  # [Dr, T, A]
        cand = valid & (ign != has_regular[seg_id])  # regular ones if any is available, else ignored ones
        key = np.where(cand, iou[:, None, None], -1.0)
        best = np.maximum.reduceat(key, seg_start, axis=0)
        win = cand & (key == best[seg_id])
        pos = np.where(win, np.arange(d.size)[:, None, None], -1)
        choice = np.maximum.reduceat(pos, seg_start, axis=0)  # last best pair, -1 when none
        di, ti, ai = np.nonzero(choice >= 0)
        if di.size == 0:
            continue
        gi = g[choice[di, ti, ai]]
        dets = d[seg_start[di]]
        gt_dt[ti, ai, gi] = dets
        taken[gi, ti, ai] = True
        found.append((ti, ai, dets, gi))
    if not found:
        return MatchArrays(gt_dt, none, none, none, none, num_dt)
    t_, a_, d_, g_ = (np.concatenate(parts).astype(np.int64, copy=False) for parts in zip(*found))
    return MatchArrays(gt_dt, t_, a_, d_, g_, num_dt)
