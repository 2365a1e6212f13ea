"""``evaluate_coco``: COCO AP/AR for boxes, masks and keypoints, equal to pycocotools' numbers.

The pipeline is pycocotools' (``evaluate`` -> ``accumulate`` -> ``summarize``) on columns instead of
per-annotation dicts:

1. select the ground truths / results of the evaluated images and categories and group them by
   (image, category) -- or by image alone when ``use_cats=False`` -- with one ``lexsort``;
   within a group, results go by descending score (ties in file order; pycocotools' stable
   mergesort) and only the first ``max_dets[-1]`` stay;
2. form every (result, ground truth) pair of a group and compute its overlap, vectorised over
   all pairs (boxes, OKS) or in pycocotools' C code one group at a time (masks);
3. greedy matching for all thresholds and area ranges at once (:mod:`.matching`);
4. precision / recall arrays (:mod:`.accumulate`) and the summary numbers (:mod:`.summary`).

Deliberate differences, none of which changes a number pycocotools produces: empty results
evaluate (pycocotools fails on ``anns[0]``); a missing ``iscrowd`` counts as 0 (pycocotools
raises ``KeyError``); malformed input raises :class:`~sceneparse.errors.DataError` /
:class:`~sceneparse.errors.PredictionError` naming the record; inputs are never modified.
Kept on purpose because they change numbers: an annotation's ``ignore`` field has no effect
(pycocotools overwrites it with ``iscrowd``), and a detection matched to a ground truth whose
annotation id is 0 counts as unmatched (pycocotools tests ``dtMatches != 0``).
One pycocotools bug is *not* reproduced: with ``use_cats=False`` its ``computeOks`` looks the
ground truth up under category -1, finds none and scores every keypoint detection as a false
positive; here pooled keypoints are evaluated like pooled boxes (as one category holding every
annotation, in category order).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from ...errors import DataError, PredictionError, Problem
from .accumulate import accumulate, accumulation_order
from .box_iou import box_iou_pairs
from .mask_iou import mask_iou_blocks, to_rles
from .matching import greedy_match
from .oks import oks_pairs
from .params import COCOParams, make_params
from .result import CategoryStats, COCOEvalResult, Matches
from .summary import stat_specs, summarize_one, summarize_per_category
from .tables import DetectionColumns, DetectionTable, GroundTruthTable, gc_paused, load_ground_truth, load_results


@gc_paused()
def evaluate_coco(
    gt: "str | os.PathLike | Mapping | GroundTruthTable",
    results: "str | os.PathLike | list | np.ndarray | DetectionColumns",
    iou_type: str = "bbox",
    *,
    max_dets: Sequence[int] | None = None,
    area_ranges=None,
    iou_thresholds: Sequence[float] | np.ndarray | None = None,
    img_ids: Sequence[int] | None = None,
    cat_ids: Sequence[int] | None = None,
    use_cats: bool = True,
    sigmas: Sequence[float] | np.ndarray | None = None,
    gt_source: str | None = None,
    results_source: str | None = None,
) -> COCOEvalResult:
    """COCO evaluation of ``results`` against ``gt``; the numbers are pycocotools' ``COCOeval``'s.

    Args:
        gt: COCO ground-truth JSON path, its loaded dict, or a :class:`GroundTruthTable` read
            once with :func:`load_ground_truth` (to evaluate several result sets).
        results: COCO results JSON path, list of result dicts, pycocotools' ``[N, 7]`` array
            (``image_id, x, y, w, h, score, category_id``) or :class:`DetectionColumns`.
        iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
        max_dets: detections kept per image (and category); default ``[1, 10, 100]``
            (keypoints ``[20]``).
        area_ranges: ``{name: (lo, hi)}`` in squared pixels, or a list of ``(lo, hi)`` /
            ``(name, lo, hi)``; default all/small/medium/large (keypoints: all/medium/large).
        iou_thresholds: default ``0.50:0.05:0.95``.
        img_ids, cat_ids: restrict the evaluation (default: every image / category of ``gt``).
        use_cats: ``False`` pools all categories (class-agnostic, as for proposals).
        sigmas: per-keypoint OKS sigmas *as published* (COCO's nose: 0.26; divided by 10 here as
            pycocotools does); default COCO's 17 person sigmas.
        gt_source, results_source: the file names of an already loaded ``gt`` dict / ``results``
            list, for messages (default ``"<dict>"`` / ``"<results>"``; paths name themselves).

    Returns:
        :class:`COCOEvalResult` (``stats``, ``precision`` ``[T, R, K, A, M]``, ``recall``,
        ``scores``, ``per_category``, ``matches``, ``summary()``, ``to_dict()``).
    """
    table = gt if isinstance(gt, GroundTruthTable) else load_ground_truth(gt, iou_type, source=gt_source)
    _check_table_fits(table, iou_type)
    dets = load_results(results, table, iou_type, source=results_source)
    params = make_params(iou_type, gt_img_ids=table.img_ids, gt_cat_ids=table.cat_ids, max_dets=max_dets,
                         area_ranges=area_ranges, iou_thresholds=iou_thresholds, img_ids=img_ids, cat_ids=cat_ids,
                         use_cats=use_cats, sigmas=sigmas)
    return evaluate_tables(table, dets, params)


def _check_table_fits(table: GroundTruthTable, iou_type: str) -> None:
    need = {"bbox": ("boxes",), "segm": ("segmentations",), "keypoints": ("boxes", "keypoints", "num_keypoints")}
    for name in need.get(iou_type, ()):
        if getattr(table, name) is None:
            raise ValueError(f"this GroundTruthTable was read without '{name}'; read it with "
                             f"load_ground_truth(..., iou_type={iou_type!r})")


def _positions(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of ``ids`` in the ascending ``sorted_ids``, -1 where absent."""
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    pos_c = np.minimum(pos, sorted_ids.size - 1)
    return np.where(sorted_ids[pos_c] == ids, pos_c, -1).astype(np.int64)


def _group_ranks(groups_sorted: np.ndarray) -> np.ndarray:
    """0-based position of each row within its run of equal (sorted) group keys."""
    n = groups_sorted.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.concatenate([[True], groups_sorted[1:] != groups_sorted[:-1]])
    idx = np.arange(n, dtype=np.int64)
    return idx - np.maximum.accumulate(np.where(first, idx, 0))


@gc_paused()  # millions of short-lived objects, no cycles: see tables.gc_paused
def evaluate_tables(gt: GroundTruthTable, dt: DetectionTable, params: COCOParams) -> COCOEvalResult:
    """Run the evaluation on already-loaded tables (see :func:`evaluate_coco`)."""
    p = params
    iou_type = p.iou_type
    n_cats = p.evaluated_cat_ids.size
    per_img = n_cats if p.use_cats else 1

    # 1. ground truth of the evaluated images / categories, grouped; file order inside a group
    g_img = _positions(p.img_ids, gt.image_ids)
    g_cat = _positions(p.evaluated_cat_ids, gt.category_ids)
    rows = np.flatnonzero((g_img >= 0) & (g_cat >= 0))
    g_group_all = g_img * per_img + (g_cat if p.use_cats else 0)
    g_rows = rows[np.lexsort((rows, g_cat[rows], g_group_all[rows]))]
    g_group = g_group_all[g_rows]
    g_k = g_cat[g_rows] if p.use_cats else np.zeros(g_rows.size, np.int64)
    g_crowd = gt.iscrowd[g_rows]
    g_area = gt.areas[g_rows]
    g_ids = gt.ids[g_rows]
    base_ignore = g_crowd.copy()
    if iou_type == "keypoints":
        base_ignore |= gt.num_keypoints[g_rows] == 0
    lo = np.array([a.lo for a in p.area_ranges])[:, None]
    hi = np.array([a.hi for a in p.area_ranges])[:, None]
    g_ignore = base_ignore[None, :] | (g_area[None, :] < lo) | (g_area[None, :] > hi)  # [A, G]

    # results: grouped, by descending score (stable), truncated to max_dets[-1] per group
    d_img = _positions(p.img_ids, dt.image_ids)
    d_cat = _positions(p.evaluated_cat_ids, dt.category_ids)
    rows = np.flatnonzero((d_img >= 0) & (d_cat >= 0))
    d_group_all = d_img * per_img + (d_cat if p.use_cats else 0)
    order = rows[np.lexsort((rows, d_cat[rows], -dt.scores[rows], d_group_all[rows]))]
    rank = _group_ranks(d_group_all[order])
    keep = rank < p.max_dets[-1]
    d_rows, d_rank = order[keep], rank[keep]
    d_group = d_group_all[d_rows]
    d_k = d_cat[d_rows] if p.use_cats else np.zeros(d_rows.size, np.int64)
    d_area = dt.areas[d_rows]
    d_scores = dt.scores[d_rows]

    # 2. every (result, ground truth) pair of a group, result-major, ground truths in group order
    g_start = np.searchsorted(g_group, d_group, side="left")
    g_count = np.searchsorted(g_group, d_group, side="right") - g_start
    n_pairs = int(g_count.sum())
    pair_dt = np.repeat(np.arange(d_rows.size, dtype=np.int64), g_count)
    first_pair = np.cumsum(g_count) - g_count
    pair_gt = np.repeat(g_start, g_count) + (np.arange(n_pairs, dtype=np.int64) - np.repeat(first_pair, g_count))
    pair_iou = _overlaps(gt, dt, p, g_rows, d_rows, d_group, g_group, g_count, pair_dt, pair_gt)

    # 3. greedy matching, then pycocotools' dtIgnore
    m = greedy_match(pair_dt, pair_gt, pair_iou, d_rank, g_ignore, g_crowd, p.iou_thresholds, d_rows.size, g_rows.size)
    ti, ai, di, gi = m.t, m.a, m.d, m.g  # the matches
    # pycocotools stores the matched annotation id and tests it for != 0
    matched = g_ids[gi] != 0 if (g_ids == 0).any() else np.ones(gi.size, dtype=bool)
    d_out = (d_area[None, :] < lo) | (d_area[None, :] > hi)  # [A, D]
    # dtIgnore: matched to an ignored ground truth, or not matched and outside the area range
    ignored = g_ignore[ai, gi] | (~matched & d_out[ai, di])
    dt_matched = np.zeros((p.iou_thresholds.size, len(p.area_ranges), d_rows.size), dtype=bool)  # [T, A, D]
    dt_matched[ti, ai, di] = matched
    dt_ignore = np.repeat(d_out[None, :, :], dt_matched.shape[0], axis=0)
    dt_ignore[ti, ai, di] = ignored

    # 4. accumulate and summarise
    k_count = p.cat_ids.size
    a_count = len(p.area_ranges)
    regular = ~g_ignore  # [A, G]
    n_gt = np.zeros((k_count, a_count), dtype=np.int64)
    for a in range(a_count):
        n_gt[:, a] = np.bincount(g_k[regular[a]], minlength=k_count)[:k_count]
    d_img_kept = d_img[d_rows]
    # true positives and counted (not ignored) results straight in accumulation order: a scatter of
    # the matches instead of two gathers over the whole [T, A, D] arrays
    order = accumulation_order(d_k, d_scores)  # rows are in image, rank order
    where = np.empty(order.size, dtype=np.int64)
    where[order] = np.arange(order.size)
    t_count = dt_matched.shape[0]
    tp_o = np.zeros((t_count, a_count, order.size), dtype=bool)
    tp_o[ti, ai, where[di]] = matched & ~ignored
    counted_o = np.repeat(~d_out[:, order][None, :, :], t_count, axis=0)
    counted_o[ti, ai, where[di]] = ~ignored
    acc = accumulate(tp_o, counted_o, d_k, d_rank, d_scores, n_gt, p.rec_thresholds, p.max_dets, order=order)
    specs = stat_specs(iou_type, p.max_dets)
    stats = np.array([summarize_one(acc.precision, acc.recall, p, s) for s in specs], dtype=np.float64)
    names = [s.name for s in specs]
    per_cat = np.stack([summarize_per_category(acc.precision, acc.recall, p, s) for s in specs], axis=1)  # [K, S]
    per_category: dict[int, CategoryStats] = {}
    for k, cid in enumerate(p.cat_ids.tolist()):
        label = gt.cat_names.get(cid, str(cid)) if cid != -1 else "all"
        per_category[cid] = CategoryStats(cid, label, tuple(names), tuple(per_cat[k].tolist()))

    matches = Matches(
        params=p, dt_ids=d_rows + 1, dt_image_ids=dt.image_ids[d_rows], dt_category_ids=dt.category_ids[d_rows],
        dt_scores=d_scores, dt_areas=d_area, dt_rank=d_rank, dt_k=d_k, dt_img=d_img_kept,
        dt_ignore=dt_ignore, dt_matched=dt_matched, gt_ids=g_ids, gt_image_ids=gt.image_ids[g_rows],
        gt_category_ids=gt.category_ids[g_rows], gt_areas=g_area, gt_iscrowd=g_crowd, gt_ignore=g_ignore,
        gt_k=g_k, gt_dt=m.gt_dt, match_index=(ti, ai, di, gi),
    )
    return COCOEvalResult(
        iou_type=iou_type, params=p, stats=stats, stat_names=names, stat_specs=specs, precision=acc.precision,
        recall=acc.recall, scores=acc.scores, per_category=per_category, matches=matches,
        category_names={int(c): gt.cat_names.get(int(c), str(c)) for c in p.evaluated_cat_ids.tolist()},
    )


def _overlaps(gt: GroundTruthTable, dt: DetectionTable, p: COCOParams, g_rows, d_rows, d_group, g_group, g_count,
              pair_dt, pair_gt) -> np.ndarray:
    """IoU (boxes, masks) or OKS (keypoints) of every pair, ``float64 [P]``."""
    if pair_dt.size == 0:
        return np.zeros(0, dtype=np.float64)
    if p.iou_type == "bbox":
        return box_iou_pairs(dt.boxes[d_rows[pair_dt]], gt.boxes[g_rows[pair_gt]], gt.iscrowd[g_rows[pair_gt]])
    if p.iou_type == "keypoints":
        j3 = gt.keypoints.shape[1]
        if dt.keypoints.shape[1] != j3:
            raise PredictionError(Problem(dt.source, None, "keypoints", f"results have {dt.keypoints.shape[1] // 3} "
                                          f"keypoints, the ground truth {j3 // 3}", dt.keypoints.shape[1]))
        if p.kpt_oks_sigmas.size != j3 // 3:
            raise DataError(Problem(gt.source, None, "keypoints", f"{j3 // 3} keypoints but {p.kpt_oks_sigmas.size} "
                                    "OKS sigmas; pass sigmas= for this keypoint set", p.kpt_oks_sigmas.size))
        gsel = g_rows[pair_gt]
        return oks_pairs(dt.keypoints[d_rows[pair_dt]], gt.keypoints[gsel], gt.boxes[gsel], gt.areas[gsel],
                         p.kpt_oks_sigmas)
    # segm: one pycocotools call per (image, category) group that has results and ground truth
    with_gt = np.flatnonzero(g_count > 0)  # result rows (sorted by group) that have pairs
    dgr = d_group[with_gt]
    cut = np.flatnonzero(np.concatenate([[True], dgr[1:] != dgr[:-1]]))
    groups = dgr[cut]
    d_bounds = np.stack([cut, np.concatenate([cut[1:], [dgr.size]])], axis=1)
    g_lo = np.searchsorted(g_group, groups, side="left")
    g_hi = np.searchsorted(g_group, groups, side="right")
    sizes = g_hi - g_lo
    g_local = np.concatenate([[0], np.cumsum(sizes)])
    g_need = np.repeat(g_lo, sizes) + (np.arange(int(g_local[-1]), dtype=np.int64) - np.repeat(g_local[:-1], sizes))
    g_bounds = np.stack([g_local[:-1], g_local[1:]], axis=1)
    gt_src = g_rows[g_need]
    dt_src = d_rows[with_gt]
    gk, dk = gt.segmentation_kinds, dt.segmentation_kinds
    gt_rles = to_rles(list(map(gt.segmentations.__getitem__, gt_src.tolist())), gt.image_ids[gt_src], gt,
                      gt.source, None if gk is None else gk[gt_src])
    dt_rles = to_rles(list(map(dt.segmentations.__getitem__, dt_src.tolist())), dt.image_ids[dt_src], gt,
                      dt.source, None if dk is None else dk[dt_src])
    return mask_iou_blocks(dt_rles, gt_rles, gt.iscrowd[gt_src], d_bounds, g_bounds,
                           group_images=dt.image_ids[dt_src][d_bounds[:, 0]])
