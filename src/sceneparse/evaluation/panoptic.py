"""Panoptic quality (Kirillov et al., 2019) with the COCO panoptic rules.

For every category ``c``, ground-truth and predicted segments are matched when they have the same
category and ``IoU > 0.5`` (a match is then unique, so no assignment problem is solved). Then

``PQ_c = sum_{(p, g) in TP} IoU(p, g) / (|TP| + |FP| / 2 + |FN| / 2) = SQ_c * RQ_c`` with
``SQ_c = sum IoU / |TP|`` (0 when ``|TP| = 0``) and ``RQ_c = |TP| / (|TP| + |FP| / 2 + |FN| / 2)``.

The COCO rules (``panopticapi``'s ``pq_compute``), followed here:

* **Void**: ground-truth pixels with segment id 0 are void. The IoU removes them from the prediction:
  ``union = area(p) + area(g) - |p & g| - |p & void|``.
* **Crowd**: ground-truth segments with ``iscrowd = 1`` are never matched and never false negatives.
  An unmatched predicted segment is *not* a false positive when more than half of its area lies on
  void pixels plus the crowd regions of its own category.
* Category averages are over categories with ``TP + FP + FN > 0``; ``things`` / ``stuff`` average
  over the categories with ``isthing`` 1 / 0. A group with no such category gives NaN.

Two details differ on purpose from ``panopticapi`` and only matter for malformed input: areas are
pixel counts of the PNG (``panopticapi`` reads the ground truth's ``area`` from the JSON, which COCO
writes equal to the pixel count) and when one image has several crowd segments of one category all
of them count (``panopticapi`` keeps the last one).

The per-image pairwise intersections come from a single ``np.unique`` over
``gt_id * OFFSET + pred_id``; everything after that is vectorised over segment pairs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from ..conventions import CategoryMap, rgb2id
from ..errors import DataError, FormatError, PredictionError, Problem
from ._torch import to_numpy

if TYPE_CHECKING:
    from ..structures.segmaps import PanopticMap, SegmentInfo

#: ``gt_id * OFFSET + pred_id`` is unique for ids below ``256**3`` (the PNG encoding's range).
OFFSET = 256 ** 3
VOID = 0


@dataclass
class PQSummary:
    """PQ / SQ / RQ averaged over ``n`` categories (fractions in ``[0, 1]``; NaN when ``n == 0``)."""

    pq: float
    sq: float
    rq: float
    n: int

    def to_dict(self) -> dict:
        return {"pq": _num(self.pq), "sq": _num(self.sq), "rq": _num(self.rq), "n": self.n}


@dataclass
class PQCategory:
    """Counts and scores of one category (``pq = sq = rq = 0`` when ``tp + fp + fn == 0``)."""

    category_id: int
    name: str
    isthing: bool
    tp: int
    fp: int
    fn: int
    iou_sum: float
    pq: float
    sq: float
    rq: float

    def to_dict(self) -> dict:
        return {"name": self.name, "isthing": self.isthing, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "iou_sum": self.iou_sum, "pq": self.pq, "sq": self.sq, "rq": self.rq}


@dataclass
class PanopticEvalResult:
    """PQ overall (``all``), for ``things`` and ``stuff``, and per category (dataset ids as keys)."""

    all: PQSummary
    things: PQSummary
    stuff: PQSummary
    per_category: dict[int, PQCategory] = field(default_factory=dict)
    num_images: int = 0

    @property
    def pq(self) -> float:
        return self.all.pq

    @property
    def sq(self) -> float:
        return self.all.sq

    @property
    def rq(self) -> float:
        return self.all.rq

    def summary(self) -> str:
        """``panopticapi``'s table (percentages), then one line per category."""
        lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
        for name, s in (("All", self.all), ("Things", self.things), ("Stuff", self.stuff)):
            lines.append(f"{name:10s}| {100 * s.pq:5.1f}  {100 * s.sq:5.1f}  {100 * s.rq:5.1f} {s.n:5d}")
        if self.per_category:
            w = max(len(c.name) for c in self.per_category.values())
            lines.append("")
            lines.append(f"{'category':<{w}}  {'kind':5s} {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'TP':>6s} {'FP':>6s} "
                         f"{'FN':>6s}")
            for c in self.per_category.values():
                lines.append(f"{c.name:<{w}}  {'thing' if c.isthing else 'stuff':5s} {100 * c.pq:5.1f}  "
                             f"{100 * c.sq:5.1f}  {100 * c.rq:5.1f} {c.tp:6d} {c.fp:6d} {c.fn:6d}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"pq": _num(self.pq), "sq": _num(self.sq), "rq": _num(self.rq), "num_images": self.num_images,
                "all": self.all.to_dict(), "things": self.things.to_dict(), "stuff": self.stuff.to_dict(),
                "per_category": {str(k): v.to_dict() for k, v in self.per_category.items()}}


def _num(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _as_category_map(categories) -> CategoryMap:
    if isinstance(categories, CategoryMap):
        return categories
    if isinstance(categories, Mapping):  # {id: coco category dict}
        categories = list(categories.values())
    return CategoryMap.from_coco(categories)


@dataclass
class _Segments:
    """One image's segments as sorted columns (ids ascending)."""

    ids: np.ndarray  # int64 [S]
    cat: np.ndarray  # int64 [S] category index into the evaluator's category map
    crowd: np.ndarray  # bool [S]


class PanopticEvaluator:
    """Streaming PQ: ``update(gt, pred)`` per image, ``compute()`` at the end.

    ``categories`` (a :class:`CategoryMap`, or COCO category dicts with ``isthing``) fixes the
    categories that are scored; segments refer to them by ``SegmentInfo.category_id`` (dataset ids).
    Memory is four counters per category.
    """

    def __init__(self, categories):
        self.categories = _as_category_map(categories)
        if len(self.categories) == 0:
            raise ValueError("PanopticEvaluator needs at least one category")
        self._cat_ids = np.asarray(self.categories.ids, dtype=np.int64)  # sorted (CategoryMap order)
        self._order = np.argsort(self._cat_ids, kind="stable")
        self.reset()

    def reset(self) -> None:
        k = len(self.categories)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.iou_sum = np.zeros(k, dtype=np.float64)
        self.num_images = 0

    # ---- segment tables -----------------------------------------------------------------
    def _table(self, segments: Iterable[SegmentInfo] | Iterable[dict], where: str, is_pred: bool) -> _Segments:
        err = PredictionError if is_pred else DataError
        rows = [(int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", 0))) if isinstance(s, dict)
                else (int(s.id), int(s.category_id), bool(s.iscrowd)) for s in segments]
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        ids, cats, crowd = arr[:, 0], arr[:, 1], arr[:, 2].astype(bool)
        uniq, count = np.unique(ids, return_counts=True)
        if (count > 1).any():
            raise err(Problem(None, where, "segments_info", "duplicate segment ids", uniq[count > 1].tolist()))
        if (ids <= 0).any() or (ids >= OFFSET).any():
            raise err(Problem(None, where, "segments_info", "segment ids must be in 1..256**3-1",
                              ids[(ids <= 0) | (ids >= OFFSET)].tolist()))
        pos = np.searchsorted(self._cat_ids[self._order], cats).clip(max=len(self._cat_ids) - 1)
        known = self._cat_ids[self._order][pos] == cats
        if not known.all():
            bad = int(np.flatnonzero(~known)[0])
            raise err(Problem(None, f"{where}, segment {int(ids[bad])}", "category_id",
                              f"unknown category id; known ids: {self.categories.ids}", int(cats[bad])))
        if is_pred and crowd.any():
            crowd = np.zeros_like(crowd)  # crowd is a ground-truth notion; predictions carry no such flag
        order = np.argsort(ids)
        return _Segments(ids[order], self._order[pos][order], crowd[order])

    def update(self, gt: PanopticMap, pred: PanopticMap, image_id: int | str | None = None) -> None:
        """Add one image: ``gt`` and ``pred`` are :class:`PanopticMap` of the same ``[H, W]`` size whose
        ``segments`` carry dataset ``category_id`` (ground truth also ``iscrowd``)."""
        where = f"image {image_id}" if image_id is not None else f"image #{self.num_images}"
        self._update_arrays(to_numpy(gt.ids), gt.segments, to_numpy(pred.ids), pred.segments, where)

    def _update_arrays(self, gt_ids: np.ndarray, gt_segments, pred_ids: np.ndarray, pred_segments,
                       where: str) -> None:
        if gt_ids.shape != pred_ids.shape:
            raise PredictionError(Problem(None, where, "png", f"prediction size {pred_ids.shape} differs from "
                                          f"ground truth size {gt_ids.shape}"))
        g_seg = self._table(gt_segments, where + " (ground truth)", is_pred=False)
        p_seg = self._table(pred_segments, where + " (prediction)", is_pred=True)
        keys, inter = np.unique(gt_ids.astype(np.int64).ravel() * OFFSET + pred_ids.astype(np.int64).ravel(),
                                return_counts=True)
        kg, kp = keys // OFFSET, keys % OFFSET

        # every non-void id in a PNG must be listed in its segments_info and vice versa (predictions)
        gi = _lookup(g_seg.ids, kg)
        pi = _lookup(p_seg.ids, kp)
        bad = (gi < 0) & (kg != VOID)
        if bad.any():
            raise DataError(Problem(None, where + " (ground truth)", "png",
                                    "segment ids in the PNG are missing from segments_info",
                                    np.unique(kg[bad]).tolist()))
        bad = (pi < 0) & (kp != VOID)
        if bad.any():
            raise PredictionError(Problem(None, where + " (prediction)", "png",
                                          "segment ids in the PNG are missing from segments_info",
                                          np.unique(kp[bad]).tolist()))
        g_area = np.bincount(gi[gi >= 0], weights=inter[gi >= 0], minlength=len(g_seg.ids))
        p_area = np.bincount(pi[pi >= 0], weights=inter[pi >= 0], minlength=len(p_seg.ids))
        absent = p_area == 0
        if absent.any():
            raise PredictionError(Problem(None, where + " (prediction)", "segments_info",
                                          "segments listed in segments_info do not appear in the PNG",
                                          p_seg.ids[absent].tolist()))
        on_void = (kg == VOID) & (pi >= 0)
        p_void = np.bincount(pi[on_void], weights=inter[on_void], minlength=len(p_seg.ids))

        # candidate pairs: both real segments, same category, ground truth not crowd
        both = (gi >= 0) & (pi >= 0)
        pg, pp, pin = gi[both], pi[both], inter[both].astype(np.float64)
        same = g_seg.cat[pg] == p_seg.cat[pp]
        cand = same & ~g_seg.crowd[pg]
        union = p_area[pp] + g_area[pg] - pin - p_void[pp]
        iou = np.divide(pin, union, out=np.zeros_like(pin), where=union > 0)
        match = cand & (iou > 0.5)
        k = len(self.categories)
        mg, mp = pg[match], pp[match]
        self.tp += np.bincount(g_seg.cat[mg], minlength=k)
        self.iou_sum += np.bincount(g_seg.cat[mg], weights=iou[match], minlength=k)

        g_matched = np.zeros(len(g_seg.ids), dtype=bool)
        g_matched[mg] = True
        p_matched = np.zeros(len(p_seg.ids), dtype=bool)
        p_matched[mp] = True
        fn = ~g_matched & ~g_seg.crowd
        self.fn += np.bincount(g_seg.cat[fn], minlength=k)

        # unmatched predictions mostly on void + same-category crowd are not false positives
        on_crowd = same & g_seg.crowd[pg]
        ignored = p_void + np.bincount(pp[on_crowd], weights=pin[on_crowd], minlength=len(p_seg.ids))
        fp = ~p_matched & ~(ignored / p_area > 0.5)
        self.fp += np.bincount(p_seg.cat[fp], minlength=k)
        self.num_images += 1

    # ---- results ------------------------------------------------------------------------
    def compute(self) -> PanopticEvalResult:
        cats = self.categories.categories
        tp, fp, fn, iou = (self.tp.astype(np.float64), self.fp.astype(np.float64), self.fn.astype(np.float64),
                           self.iou_sum)
        denom = tp + 0.5 * fp + 0.5 * fn
        seen = denom > 0
        pq = np.divide(iou, denom, out=np.zeros_like(iou), where=seen)
        sq = np.divide(iou, tp, out=np.zeros_like(iou), where=tp > 0)
        rq = np.divide(tp, denom, out=np.zeros_like(iou), where=seen)
        thing = np.array([c.isthing for c in cats], dtype=bool)

        def group(sel: np.ndarray) -> PQSummary:
            s = sel & seen
            n = int(s.sum())
            if n == 0:
                return PQSummary(float("nan"), float("nan"), float("nan"), 0)
            return PQSummary(float(pq[s].mean()), float(sq[s].mean()), float(rq[s].mean()), n)

        per = {c.id: PQCategory(c.id, c.name, c.isthing, int(self.tp[i]), int(self.fp[i]), int(self.fn[i]),
                                float(iou[i]), float(pq[i]), float(sq[i]), float(rq[i])) for i, c in enumerate(cats)}
        everything = np.ones(len(cats), dtype=bool)
        return PanopticEvalResult(group(everything), group(thing), group(~thing), per, self.num_images)


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in ``sorted_ids`` or -1 where absent."""
    if len(sorted_ids) == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, values).clip(max=len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == values, pos, -1)


# ---- files ------------------------------------------------------------------------------
def _load_json(path, what: str, err=FormatError) -> dict:
    p = Path(path)
    try:
        with open(p) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise err(Problem(str(p), None, None, f"{what} file not found")) from None
    except json.JSONDecodeError as e:
        raise err(Problem(str(p), None, None, f"not valid JSON: {e}")) from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise err(Problem(str(p), None, "annotations", "a COCO panoptic JSON needs an 'annotations' list"))
    return data


def read_panoptic_png(path: str | os.PathLike, err=DataError) -> np.ndarray:
    """COCO panoptic PNG -> ``int64 [H, W]`` segment ids."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise err(Problem(str(path), None, None, "panoptic PNG not found")) from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise err(Problem(str(path), None, None, f"cannot read the PNG: {e}")) from None
    return rgb2id(rgb)


def _png_path(folder, a: dict, json_name: str, record: str, err) -> Path:
    """The PNG of one panoptic annotation; a ``file_name`` that leads outside ``folder`` (absolute,
    ``..``) is refused, naming the JSON file and the record."""
    from ..data.formats._io import inside

    name = a.get("file_name")
    if not isinstance(name, str) or inside(folder, name) is None:
        raise err(Problem(json_name, record, "file_name", f"not a PNG name inside the folder {folder}", name))
    return Path(folder) / name


def evaluate_panoptic(gt_json, gt_png_dir, pred_json, pred_png_dir, categories=None,
                      progress: bool = False) -> PanopticEvalResult:
    """PQ of COCO panoptic predictions against COCO panoptic ground truth.

    Args:
        gt_json / pred_json: paths to (or loaded) COCO panoptic JSON: ``annotations`` with ``image_id``,
            ``file_name`` and ``segments_info`` (``id``, ``category_id``, ground truth ``iscrowd``).
        gt_png_dir / pred_png_dir: folders of the PNGs named by ``file_name`` (RGB id encoding).
            ``None`` means the JSON path without ``.json``, as ``panopticapi`` does.
        categories: categories to score (CategoryMap or COCO dicts); default: the ground truth's.
        progress: show a tqdm bar.

    Every ground-truth image needs a prediction; predictions for images absent from the ground truth
    are a :class:`PredictionError`.
    """
    gt_name = str(gt_json) if not isinstance(gt_json, dict) else "ground truth"
    pred_name = str(pred_json) if not isinstance(pred_json, dict) else "predictions"
    gt = gt_json if isinstance(gt_json, dict) else _load_json(gt_json, "ground-truth panoptic JSON")
    pred = pred_json if isinstance(pred_json, dict) else _load_json(pred_json, "prediction panoptic JSON",
                                                                      PredictionError)
    if gt_png_dir is None:
        gt_png_dir = str(gt_json).removesuffix(".json")
    if pred_png_dir is None:
        pred_png_dir = str(pred_json).removesuffix(".json")
    if categories is None:
        if not gt.get("categories"):
            raise DataError(Problem(gt_name, None, "categories", "no categories in the ground truth; pass categories="))
        categories = gt["categories"]
    ev = PanopticEvaluator(categories)

    pred_by_image: dict[int, dict] = {}
    for i, a in enumerate(pred["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "segments_info" not in a or "file_name" not in a:
            raise PredictionError(Problem(pred_name, f"annotation {i}", None,
                                          "needs 'image_id', 'file_name' and 'segments_info'"))
        if not isinstance(a["segments_info"], list):
            raise PredictionError(Problem(pred_name, f"annotation {i}", "segments_info", "not a list",
                                          type(a["segments_info"]).__name__))
        try:
            hash(a["image_id"])
        except TypeError:
            raise PredictionError(Problem(pred_name, f"annotation {i}", "image_id", "not an id", a["image_id"])) from None
        if a["image_id"] in pred_by_image:
            raise PredictionError(Problem(pred_name, f"annotation {i}", "image_id", "two predictions for one image",
                                          a["image_id"]))
        pred_by_image[a["image_id"]] = a
    for i, a in enumerate(gt["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("segments_info"), list):
            raise DataError(Problem(gt_name, f"annotation {i}", None, "needs 'image_id', 'file_name' and a "
                                    "'segments_info' list"))
        try:
            hash(a["image_id"])
        except TypeError:
            raise DataError(Problem(gt_name, f"annotation {i}", "image_id", "not an id", a["image_id"])) from None
    gt_images = {a["image_id"] for a in gt["annotations"]}
    extra = sorted(set(pred_by_image) - gt_images, key=str)
    if extra:
        raise PredictionError(Problem(pred_name, f"image_id {extra[0]}", "image_id",
                                      f"prediction for an image that is not in the ground truth "
                                      f"({len(extra)} such images)", extra[:10]))
    items = gt["annotations"]
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="panoptic", unit="img")
    for i, g in enumerate(items):
        image_id = g["image_id"]
        p = pred_by_image.get(image_id)
        if p is None:
            raise PredictionError(Problem(pred_name, f"image_id {image_id}", None, "no prediction for this image"))
        gpath = _png_path(gt_png_dir, g, gt_name, f"image_id {image_id}", DataError)
        ppath = _png_path(pred_png_dir, p, pred_name, f"image_id {image_id}", PredictionError)
        g_ids = read_panoptic_png(gpath, DataError)
        p_ids = read_panoptic_png(ppath, PredictionError)
        try:
            ev._update_arrays(g_ids, g["segments_info"], p_ids, p["segments_info"], f"image_id {image_id}")
        except DataError as e:  # name the files too
            for prob in e.problems:
                prob.file = prob.file or (str(ppath) if isinstance(e, PredictionError) else str(gpath))
            raise type(e)(e.problems) from None
    return ev.compute()


__all__ = ["OFFSET", "PQCategory", "PQSummary", "PanopticEvalResult", "PanopticEvaluator", "evaluate_panoptic",
           "read_panoptic_png"]
