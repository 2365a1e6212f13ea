"""COCO ground truth and COCO results as columns (one numpy array per field), read once.

pycocotools keeps one dict per annotation and groups them into dict-of-lists per (image,
category); that is where most of its time and memory go. Here every field is one array indexed
by annotation row, in file order (file order matters: it breaks score and IoU ties exactly as
pycocotools does). Segmentations stay Python objects (RLE dicts or polygons) because the mask
overlap runs in pycocotools' C code.

Results follow pycocotools' ``COCO.loadRes`` to the letter, because its choices change the
numbers: the *first* result decides the kind (``bbox`` if it has a non-empty ``bbox``, else
``segmentation``, else ``keypoints``); box results get ``area = w * h`` (even in a ``segm``
evaluation) and, when they lack a mask, the box as a polygon; mask results get the mask area and
the mask's bounding box; keypoint results get the area and box of the extent of *all* their
keypoints (labelled or not); ids are 1..N in list order.
"""
from __future__ import annotations

import contextlib
import gc
import json
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import msgspec
import numpy as np
from pycocotools import mask as mask_utils

from ...errors import DataError, FormatError, PredictionError, Problem
from ...structures.rle import polygon_problems, rle_problems
from .mask_iou import COMPRESSED, INVALID, ODD_POLYGONS, POLYGONS, UNCOMPRESSED, segmentation_kinds, to_rles

#: at most this many records are named in one error about result masks (DataError shows 20 lines)
_MAX_NAMED = 19


@dataclass
class GroundTruthTable:
    """A COCO ground-truth file as columns. ``G`` annotations in file order, ``I`` images, ``C`` categories."""

    source: str  # file name, or "<dict>" for an in-memory dataset
    img_ids: np.ndarray  # int64 [I]: the ``images`` list
    img_heights: np.ndarray  # int64 [I]
    img_widths: np.ndarray  # int64 [I]
    cat_ids: np.ndarray  # int64 [C], ascending: the ``categories`` list
    cat_names: dict[int, str]
    ids: np.ndarray  # int64 [G]: annotation ids
    image_ids: np.ndarray  # int64 [G]
    category_ids: np.ndarray  # int64 [G]
    areas: np.ndarray  # float64 [G]: the annotation's own ``area`` field (mask area in COCO)
    iscrowd: np.ndarray  # bool [G]
    boxes: np.ndarray | None  # float64 [G, 4] COCO XYWH; bbox and keypoints evaluations
    segmentations: list | None  # G polygons / RLEs as in the file; segm evaluation
    keypoints: np.ndarray | None  # float64 [G, 3J] flat (x, y, v) triples; keypoints evaluation
    num_keypoints: np.ndarray | None  # int64 [G]; keypoints evaluation
    segmentation_kinds: np.ndarray | None = None  # int8 [G] mask_iou.segmentation_kinds codes; segm

    def image_sizes(self, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(heights, widths)`` int64 for each id in ``image_ids`` (all must be known)."""
        order = np.argsort(self.img_ids, kind="stable")
        pos = order[np.searchsorted(self.img_ids[order], image_ids)]
        return self.img_heights[pos], self.img_widths[pos]


@dataclass
class DetectionTable:
    """COCO results after ``loadRes``, as columns; ``N`` results in list order (id = row + 1)."""

    source: str
    kind: str  # which loadRes branch applied: "bbox" | "segm" | "keypoints" ("empty" for no results)
    image_ids: np.ndarray  # int64 [N]
    category_ids: np.ndarray  # int64 [N]
    scores: np.ndarray  # float64 [N]
    areas: np.ndarray  # float64 [N]: as loadRes sets it (box, mask or keypoint-extent area)
    boxes: np.ndarray | None  # float64 [N, 4] COCO XYWH (given, or from the mask / keypoints; None if unused)
    segmentations: list | None  # N segmentations (RLE dicts or polygons); segm evaluation only
    keypoints: np.ndarray | None  # float64 [N, 3J]; keypoints evaluation only
    segmentation_kinds: np.ndarray | None = None  # int8 [N] mask_iou.segmentation_kinds codes, with segmentations

    def __len__(self) -> int:
        return int(self.image_ids.size)

    @property
    def ids(self) -> np.ndarray:
        return np.arange(1, len(self) + 1, dtype=np.int64)


@dataclass
class DetectionColumns:
    """Results in columnar form, the fast alternative to a list of COCO result dicts.

    ``boxes`` are COCO ``XYWH`` absolute pixels (convert sceneparse's XYXY with
    :func:`sceneparse.structures.boxes.convert`); ``segmentations`` are RLE dicts (or polygons);
    ``keypoints`` are ``[N, J, 3]`` or flat ``[N, 3J]`` ``(x, y, score-or-visibility)``. Which of
    the three is set decides the ``loadRes`` kind: boxes first, then masks, then keypoints (boxes
    given with masks or keypoints make ``area = w * h``, as for dict results).
    """

    image_ids: Any  # int [N]
    category_ids: Any  # int [N]
    scores: Any  # float [N]
    boxes: Any = None  # float [N, 4] XYWH
    segmentations: Sequence | None = None  # N RLE dicts / polygons
    keypoints: Any = None  # float [N, J, 3] or [N, 3J]

    @classmethod
    def from_instances(cls, image_ids: Sequence[int], results: Sequence, category_ids: Sequence[int],
                       iou_type: str = "bbox") -> "DetectionColumns":
        """Columns from per-image model results (:class:`~sceneparse.structures.instances.Instances`).

        ``image_ids[i]`` is the dataset id of ``results[i]``'s image; ``category_ids[label]`` maps
        contiguous labels back to dataset ids (``CategoryMap.ids``). Only the field the
        ``iou_type`` needs is filled, so that ``loadRes`` semantics give the natural area: the box
        area for bbox, the mask area for segm (masks are RLE-encoded), the keypoint extent for
        keypoints (whose third value is the keypoint score when the results have one).
        """
        from ...structures.boxes import convert
        from ...structures.masks import encode_rle

        if len(image_ids) != len(results):
            raise ValueError(f"{len(image_ids)} image ids for {len(results)} results")
        lut = np.asarray(category_ids, dtype=np.int64)
        img, cat, score, boxes, segs, kps = [], [], [], [], [], []
        for image_id, inst in zip(image_ids, results):
            n = len(inst)
            if n == 0:
                continue
            needed = {"bbox": "boxes", "segm": "masks", "keypoints": "keypoints"}[iou_type]
            for name in ("labels", "scores", needed):
                if getattr(inst, name, None) is None:
                    raise PredictionError(Problem(None, f"image {image_id}", name, f"a {iou_type} evaluation needs "
                                                  f"results with {name}"))
            labels = inst.labels.detach().cpu().numpy()
            if labels.size and (labels.min() < 0 or labels.max() >= lut.size):
                raise PredictionError(Problem(None, f"image {image_id}", "labels",
                                              f"labels must be in 0..{lut.size - 1}", labels.tolist()))
            img.append(np.full(n, int(image_id), dtype=np.int64))
            cat.append(lut[labels])
            score.append(inst.scores.detach().cpu().numpy().astype(np.float64))
            if iou_type == "bbox":
                boxes.append(convert(inst.boxes.detach().cpu().numpy().astype(np.float64), "xyxy", "xywh"))
            elif iou_type == "segm":
                segs.extend(encode_rle(inst.masks))
            else:
                kp = inst.keypoints.detach().cpu().numpy().astype(np.float64).copy()
                if getattr(inst, "keypoint_scores", None) is not None:
                    kp[..., 2] = inst.keypoint_scores.detach().cpu().numpy()
                kps.append(kp.reshape(n, -1))
        cat_ = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
        return cls(image_ids=cat_(img, np.int64), category_ids=cat_(cat, np.int64), scores=cat_(score, np.float64),
                   boxes=(np.concatenate(boxes) if boxes else np.zeros((0, 4))) if iou_type == "bbox" else None,
                   segmentations=segs if iou_type == "segm" else None,
                   keypoints=(np.concatenate(kps) if kps else np.zeros((0, 51))) if iou_type == "keypoints" else None)


# ----------------------------------------------------------------------------- helpers

_GET_SEGMENTATION = operator.methodcaller("get", "segmentation")

@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for the block (back on after, if it was on).

    Reading a COCO file creates millions of dicts and lists, and every 700 net allocations the
    collector walks the young ones, then more and more of the old ones: for the 500,000-result
    segm file of ``benchmarks/bench_eval.py`` that is 0.9 of the 1.5 s ``json.loads`` takes. Nothing
    read here forms reference cycles, so there is nothing for the collector to find.

    The collector counts the allocations made while it was off, so the first one after the block
    walks every container object still alive: :func:`~.evaluate.evaluate_coco` therefore holds one
    pause over reading *and* evaluating, and the tables are freed (by reference counting) before it
    ends -- re-enabling after ``load_results`` instead walked the 500,000 result dicts again
    (0.3 s). Nested pauses leave the collector to the outermost one.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_coco_json(path, what: str):
    """A COCO JSON file (ground truth or results), decoded by msgspec (into the same dicts and lists
    as ``json.loads``, about twice as fast: 0.32 against 0.59-0.89 s for bench_eval's 115 MB segm
    results). A file msgspec refuses goes through ``json`` as well, which also reads the non-standard
    ``NaN`` / ``Infinity`` (reported later as bad values of the record that holds them) and words the
    syntax error. Every COCO file of :mod:`sceneparse.evaluation` is read here.

    Raises ``FileNotFoundError`` (``what`` names the file's role) and :class:`FormatError` naming
    the file for invalid JSON."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    data = p.read_bytes()  # callers pause the garbage collector
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        pass
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(Problem(str(p), None, None, f"not valid JSON: {e}")) from None


def ground_truth_dict(gt: "str | os.PathLike | Mapping") -> tuple[Mapping, str]:
    """A COCO ground-truth path or loaded dict -> ``(dict, source)`` (``source``: the file name, or
    ``"<dict>"``), with the top level checked: a JSON object with ``images``, ``annotations`` and
    ``categories`` lists, else :class:`FormatError` naming the file and key."""
    if isinstance(gt, (str, os.PathLike)):
        source = str(gt)
        data = load_coco_json(gt, "ground-truth")
    elif isinstance(gt, Mapping):
        source, data = "<dict>", gt
    else:
        raise TypeError(f"gt must be a path or a COCO dict, got {type(gt).__name__}")
    if not isinstance(data, Mapping):
        raise FormatError(Problem(source, None, None, "a COCO ground-truth file must hold a JSON object"))
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, None), list):
            raise FormatError(Problem(source, None, key, "missing or not a list"))
    return data, source


def check_ground_truth(data: Mapping, source: str, *, is_file: bool, iou_type: str | None = None) -> None:
    """The one validation of a COCO file (:func:`sceneparse.data.formats.coco.check_coco`, what
    ``convert`` / ``show`` / ``train`` / ``val`` run too) on ground truth about to be evaluated:
    :class:`DataError` listing every problem, each naming ``source``, the record and the field
    (:class:`FormatError` for fields of the wrong type). A file must give every image's
    ``file_name``, ``height`` and ``width``; an in-memory dict may leave out ``file_name``, and the
    size unless masks are evaluated (``iou_type="segm"``) -- pycocotools does not need them."""
    from ...data.formats.coco import check_coco  # numpy only: evaluation stays free of torch

    require = ("file_name", "height", "width") if is_file else ("height", "width") if iou_type == "segm" else ()
    problems = check_coco(data, source, require=require)
    if problems:
        raise DataError(problems)


def _record(kind: str, records: Sequence, i: int) -> str:
    """A record as the COCO readers name it: ``annotation 17`` by its id, ``annotation #3`` (list
    position) when it has no integer id."""
    r = records[i]
    rid = r.get("id") if isinstance(r, Mapping) else None
    return f"{kind} {rid}" if _is_int(rid) else f"{kind} #{i}"


def _first_bad(records: Sequence[Mapping], key: str, check: Callable[[Any], bool]) -> int:
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or key not in r or not check(r[key]):
            return i
    return -1


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) or (
        isinstance(v, (float, np.floating)) and float(v).is_integer())


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _number_list(v) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) and all(_is_number(x) for x in v)


class _Column:
    """Extracts one field of many records into an array; on failure names the first bad record."""

    def __init__(self, records: Sequence[Mapping], source: str, describe: Callable[[int], str], error=DataError):
        self.records, self.source, self.describe, self.error = records, source, describe, error

    def fail(self, i: int, key: str, message: str):
        r = self.records[i]
        value = r.get(key) if isinstance(r, Mapping) else r
        raise self.error(Problem(self.source, self.describe(i), key, message, value))

    def scalar(self, key: str, integer: bool, check: Callable[[Any], bool], expected: str, default=None) -> np.ndarray:
        """``int64`` (``integer``) or ``float64 [N]`` from a scalar field; ``default`` fills a missing one."""
        recs = self.records
        try:
            # map(itemgetter / methodcaller): the per-record work stays in C (500k results: 3x faster)
            if default is None:
                vals = list(map(operator.itemgetter(key), recs))
            else:
                vals = list(map(operator.methodcaller("get", key, default), recs))
            a = np.array(vals)
        except (KeyError, TypeError, AttributeError, ValueError):  # ValueError: ragged values (lists)
            a = None
        if a is not None and a.ndim == 1 and len(recs) == a.size:
            if a.size == 0:
                return np.zeros(0, np.int64 if integer else np.float64)
            if a.dtype.kind in "iu" and (not integer or a.dtype.kind == "i" or a.max() < 2 ** 63):
                return a.astype(np.int64 if integer else np.float64)
            if a.dtype.kind == "f" and (not integer or np.array_equal(a, np.round(a))):
                return a.astype(np.int64) if integer else a
            if a.dtype.kind == "b" and integer and check(True):  # e.g. "iscrowd": true
                return a.astype(np.int64)
        for i, r in enumerate(recs):
            if not isinstance(r, Mapping):
                self.fail(i, key, "is not a JSON object")
            if key not in r:
                if default is None:
                    self.fail(i, key, "missing")
            elif not check(r[key]):
                self.fail(i, key, f"not {expected}")
        raise self.error(Problem(self.source, None, key, f"values are not all {expected}"))

    def rows(self, key: str, width: int | None, expected: str) -> np.ndarray:
        """``float64 [N, width]`` from a list-valued field (``width=None``: all rows as long as the first)."""
        recs = self.records
        n = len(recs)
        try:
            out = np.array([r[key] for r in recs], dtype=np.float64)
            ok = out.ndim == 2 and (width is None or out.shape[1] == width)
        except (KeyError, TypeError, ValueError):
            out, ok = None, False
        if n == 0:
            return np.zeros((0, width or 0), dtype=np.float64)
        if not ok:
            w = width
            if w is None:
                first = recs[0].get(key) if isinstance(recs[0], Mapping) else None
                w = len(first) if isinstance(first, (list, tuple, np.ndarray)) else -1
            i = _first_bad(recs, key, lambda v: _number_list(v) and len(v) == w)
            self.fail(max(i, 0), key, f"missing or not {expected}" + (f" of length {w}" if w >= 0 else ""))
        return out


def _check_finite(col: _Column, key: str, values: np.ndarray) -> None:
    bad = ~np.isfinite(values)
    if bad.ndim > 1:
        bad = bad.any(axis=tuple(range(1, bad.ndim)))
    if bad.any():
        col.fail(int(np.flatnonzero(bad)[0]), key, "must be finite (no NaN or infinity)")


# ----------------------------------------------------------------------------- ground truth

@gc_paused()
def load_ground_truth(gt: "str | os.PathLike | Mapping", iou_type: str, *, source: str | None = None,
                      check: bool = True) -> GroundTruthTable:
    """Read a COCO ground-truth file (or its loaded dict) into a :class:`GroundTruthTable`.

    Only the fields the ``iou_type`` needs are read (and required): ``id``, ``image_id``,
    ``category_id``, ``area`` always; ``bbox`` for bbox and keypoints; ``segmentation`` for segm;
    ``keypoints`` and ``num_keypoints`` for keypoints. A missing ``iscrowd`` counts as 0. The input
    is never modified (pycocotools writes ``ignore`` and RLEs into it). ``source`` names a dict's
    file in messages (default: the path, or ``"<dict>"``).

    Before any of that the file goes through :func:`check_ground_truth` (the checks every command
    runs on a COCO file; ``check=False`` when the caller has just run it on the same dict).
    """
    data, default_source = ground_truth_dict(gt)
    source = source or default_source
    if check:
        check_ground_truth(data, source, is_file=isinstance(gt, (str, os.PathLike)) or source != "<dict>",
                           iou_type=iou_type)

    images = data["images"]
    icol = _Column(images, source, lambda i: _record("image", images, i))
    img_ids = icol.scalar("id", True, _is_int, "an integer")
    need_size = iou_type == "segm"
    heights = icol.scalar("height", True, _is_int, "an integer", default=None if need_size else 0)
    widths = icol.scalar("width", True, _is_int, "an integer", default=None if need_size else 0)
    if np.unique(img_ids).size != img_ids.size:
        u, c = np.unique(img_ids, return_counts=True)
        raise DataError(Problem(source, "images", "id", "duplicate image ids", u[c > 1][:10].tolist()))

    cats = data["categories"]
    ccol = _Column(cats, source, lambda i: _record("category", cats, i))
    cat_ids_file = ccol.scalar("id", True, _is_int, "an integer")
    cat_names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}

    anns = data["annotations"]
    acol = _Column(anns, source, lambda i: _record("annotation", anns, i))
    ids = acol.scalar("id", True, _is_int, "an integer")
    if np.unique(ids).size != ids.size:
        u, c = np.unique(ids, return_counts=True)
        raise DataError(Problem(source, "annotations", "id", "duplicate annotation ids", u[c > 1][:10].tolist()))
    image_ids = acol.scalar("image_id", True, _is_int, "an integer")
    category_ids = acol.scalar("category_id", True, _is_int, "an integer")
    areas = acol.scalar("area", False, _is_number, "a number")
    _check_finite(acol, "area", areas)
    iscrowd = acol.scalar("iscrowd", True, lambda v: isinstance(v, bool) or _is_int(v), "0 or 1", default=0) != 0

    boxes = segs = kps = nkps = seg_kinds = None
    if iou_type in ("bbox", "keypoints"):
        boxes = acol.rows("bbox", 4, "[x, y, w, h]")
        _check_finite(acol, "bbox", boxes)
    if iou_type == "segm":
        segs = list(map(_GET_SEGMENTATION, anns))
        seg_kinds = _check_segmentations(segs, acol)
    if iou_type == "keypoints":
        kps = acol.rows("keypoints", None, "a flat list of (x, y, v) numbers")
        if kps.shape[1] % 3:
            acol.fail(0, "keypoints", f"length must be a multiple of 3, got {kps.shape[1]}")
        _check_finite(acol, "keypoints", kps)
        nkps = acol.scalar("num_keypoints", True, _is_int, "an integer")
    return GroundTruthTable(
        source=source, img_ids=img_ids, img_heights=heights, img_widths=widths,
        cat_ids=np.sort(cat_ids_file), cat_names=cat_names, ids=ids, image_ids=image_ids,
        category_ids=category_ids, areas=areas, iscrowd=iscrowd, boxes=boxes, segmentations=segs,
        keypoints=kps, num_keypoints=nkps, segmentation_kinds=seg_kinds,
    )


# ----------------------------------------------------------------------------- results (loadRes)

def _keypoint_extent(kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """loadRes for keypoint results: extent of all keypoints -> (area [N], XYWH box [N, 4])."""
    x, y = kps[:, 0::3], kps[:, 1::3]
    x0, x1, y0, y1 = x.min(axis=1), x.max(axis=1), y.min(axis=1), y.max(axis=1)
    return (x1 - x0) * (y1 - y0), np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def _box_polygons(boxes: np.ndarray) -> list:
    """loadRes' mask for a box result that has none: the box as one polygon."""
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    return [[p] for p in np.stack([x1, y1, x1, y2, x2, y2, x2, y1], axis=1).tolist()]


def _mask_area_and_box(segs: list, image_ids: np.ndarray, gt: GroundTruthTable, source: str,
                       need_boxes: bool) -> tuple[np.ndarray, np.ndarray | None, list]:
    """loadRes for mask results: (area [N], XYWH box [N, 4], RLEs) via pycocotools' ``area``/``toBbox``
    (the boxes only when ``need_boxes``: only a bbox evaluation reads them).

    pycocotools accepts only compressed RLEs here; polygons and uncompressed RLEs are converted
    first (with the image size) so that such files work too.
    """
    kinds = segmentation_kinds(segs)
    if (kinds == INVALID).any():
        i = int(np.flatnonzero(kinds == INVALID)[0])
        raise PredictionError(Problem(source, f"result {i} (image_id {int(image_ids[i])})", "segmentation",
                                      "missing or not an RLE / polygons", segs[i]))
    check_result_masks(segs, kinds, image_ids, gt, source)
    if (kinds != COMPRESSED).any():
        known = np.isin(image_ids, gt.img_ids)
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            raise PredictionError(Problem(source, f"result {i} (image_id {int(image_ids[i])})", "image_id",
                                          f"image id not in the ground truth {gt.source}", int(image_ids[i])))
        segs = to_rles(segs, image_ids, gt, source, kinds)
    if not segs:
        return np.zeros(0), np.zeros((0, 4)), segs
    # (now every entry is a compressed RLE)
    # pycocotools' area() cannot return more than 255 values under numpy 2 (it sizes a uint8 array with n)
    areas = np.concatenate([mask_utils.area(segs[i:i + 255]) for i in range(0, len(segs), 255)]).astype(np.float64)
    return areas, mask_utils.toBbox(segs).astype(np.float64) if need_boxes else None, segs


@gc_paused()
def load_results(results, gt: GroundTruthTable, iou_type: str, *, source: str | None = None) -> DetectionTable:
    """Read COCO results (a JSON path, a list of result dicts, pycocotools' ``[N, 7]`` array
    ``[image_id, x, y, w, h, score, category_id]``, or :class:`DetectionColumns`) into a
    :class:`DetectionTable`, as ``loadRes`` would.

    Raises :class:`~sceneparse.errors.PredictionError` naming the result (index and image id) for a
    missing field, a non-finite score or box, keypoints of the wrong length, or an image id that
    is not in the ground truth (pycocotools asserts the same). Results of categories outside the
    evaluated ones are dropped later, silently, as pycocotools does. ``source`` names the file of
    already loaded results in messages (default: the path, or ``"<results>"``).
    """
    if isinstance(results, (str, os.PathLike)):
        source = source or str(results)
        results = load_coco_json(results, "results")
    else:
        source = source or "<results>"
    if isinstance(results, DetectionColumns):
        table = _from_columns(results, source, gt, iou_type)
    elif isinstance(results, np.ndarray):
        arr = np.asarray(results, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 7:
            raise PredictionError(Problem(source, None, None, "a results array must be [N, 7]: "
                                          "image_id, x, y, w, h, score, category_id", list(arr.shape)))
        cols = DetectionColumns(image_ids=arr[:, 0].astype(np.int64), category_ids=arr[:, 6].astype(np.int64),
                                scores=arr[:, 5], boxes=arr[:, 1:5])
        table = _from_columns(cols, source, gt, iou_type)
    elif isinstance(results, list):
        table = _from_dicts(results, source, gt, iou_type)
    else:
        raise PredictionError(Problem(source, None, None, "results must be a list of result objects, an [N, 7] "
                                      "array or DetectionColumns", type(results).__name__))
    _check_image_ids(table, gt)
    if table.kind == "bbox" and table.segmentations is not None:  # masks given next to boxes (segm)
        kinds = table.segmentation_kinds if table.segmentation_kinds is not None else \
            segmentation_kinds(table.segmentations)
        check_result_masks(table.segmentations, kinds, table.image_ids, gt, source)
    return table


def check_result_masks(segs: Sequence, kinds: np.ndarray, image_ids: np.ndarray, gt: GroundTruthTable,
                       source: str) -> None:
    """Result masks that pycocotools' C code must not see, as a :class:`PredictionError` naming
    each (up to 19, then the count): RLEs outside its alphabet or whose run lengths do not add up
    to ``height * width`` (a heap corruption or an endless loop in ``mask.iou``), polygons with
    fewer than 3 points, non-finite coordinates or coordinates far outside the image (gigabytes for
    ``frPyObjects``). Vectorised over all of them (:func:`~sceneparse.structures.rle.rle_problems`)."""
    found: list[tuple[int, str]] = []
    rle_rows = np.flatnonzero((kinds == COMPRESSED) | (kinds == UNCOMPRESSED))
    if rle_rows.size:
        rows = rle_rows.tolist()
        found += [(i, p) for i, p in zip(rows, rle_problems([segs[i] for i in rows])) if p is not None]
    poly_rows = np.flatnonzero((kinds == POLYGONS) | (kinds == ODD_POLYGONS))
    if poly_rows.size:
        ids = np.asarray(image_ids)[poly_rows]
        known = np.isin(ids, gt.img_ids)
        h = np.full(poly_rows.size, np.inf)
        w = np.full(poly_rows.size, np.inf)
        if known.any():
            hh, ww = gt.image_sizes(ids[known])
            h[known] = np.where(hh > 0, hh, np.inf)
            w[known] = np.where(ww > 0, ww, np.inf)
        rows = poly_rows.tolist()
        found += [(i, p) for i, p in zip(rows, polygon_problems([segs[i] for i in rows], h, w)) if p is not None]
    if found:
        found.sort()
        problems = [Problem(source, f"result {i} (image_id {int(image_ids[i])})", "segmentation", p)
                    for i, p in found[:_MAX_NAMED]]
        if len(found) > _MAX_NAMED:
            problems.append(Problem(source, None, None, f"... {len(found)} results with such masks in all"))
        raise PredictionError(problems)


def _check_image_ids(table: DetectionTable, gt: GroundTruthTable) -> None:
    if not len(table):
        return
    known = np.isin(table.image_ids, gt.img_ids)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise PredictionError(Problem(table.source, f"result {i} (image_id {int(table.image_ids[i])})", "image_id",
                                      f"image id not in the ground truth {gt.source} "
                                      f"({int((~known).sum())} results in all)", int(table.image_ids[i])))


def _from_dicts(anns: list, source: str, gt: GroundTruthTable, iou_type: str) -> DetectionTable:
    n = len(anns)
    if n == 0:
        z = np.zeros(0)
        return DetectionTable(source, "empty", np.zeros(0, np.int64), np.zeros(0, np.int64), z, z,
                              np.zeros((0, 4)), [], np.zeros((0, 0)))

    def describe(i: int) -> str:
        a = anns[i]
        has_id = isinstance(a, Mapping) and "image_id" in a
        return f"result {i}" + (f" (image_id {a.get('image_id')})" if has_id else "")

    col = _Column(anns, source, describe, error=PredictionError)
    if not isinstance(anns[0], Mapping):
        col.fail(0, "", "is not a JSON object")
    image_ids = col.scalar("image_id", True, _is_int, "an integer")
    category_ids = col.scalar("category_id", True, _is_int, "an integer")
    scores = col.scalar("score", False, _is_number, "a number")
    _check_finite(col, "score", scores)
    first = anns[0]
    boxes = segs = kps = kinds = None
    if "bbox" in first and not first["bbox"] == []:
        kind = "bbox"
        boxes = col.rows("bbox", 4, "[x, y, w, h]")
        _check_finite(col, "bbox", boxes)
        areas = boxes[:, 2] * boxes[:, 3]
        if iou_type == "segm":
            segs = list(map(_GET_SEGMENTATION, anns))
            missing = [i for i, s in enumerate(segs) if s is None]
            if missing:
                polys = _box_polygons(boxes[missing])
                for i, p in zip(missing, polys):
                    segs[i] = p
    elif "segmentation" in first:
        kind = "segm"
        segs = list(map(_GET_SEGMENTATION, anns))
        areas, boxes, segs = _mask_area_and_box(segs, image_ids, gt, source, need_boxes=iou_type == "bbox")
        kinds = np.zeros(n, np.int8)  # all compressed RLEs now
        own = np.fromiter(("bbox" in a for a in anns), bool, count=n) if boxes is not None else np.zeros(0, bool)
        if own.any():
            idx = np.flatnonzero(own)
            sub = _Column([anns[i] for i in idx], source, lambda j: describe(int(idx[j])), error=PredictionError)
            boxes[idx] = sub.rows("bbox", 4, "[x, y, w, h]")
    elif "keypoints" in first:
        kind = "keypoints"
        kps = col.rows("keypoints", None, "a flat list of (x, y, score) numbers")
        _check_finite(col, "keypoints", kps)
        areas, boxes = _keypoint_extent(kps)
    else:
        col.fail(0, "bbox", "a result needs a 'bbox', 'segmentation' or 'keypoints' field")
    if iou_type == "keypoints" and kps is None:
        kps = col.rows("keypoints", None, "a flat list of (x, y, score) numbers")
        _check_finite(col, "keypoints", kps)
    if iou_type == "segm" and segs is None:
        col.fail(0, "segmentation", "a segm evaluation needs mask results")
    if segs is not None and kind == "bbox":
        kinds = _check_segmentations(segs, col)
    return DetectionTable(source, kind, image_ids, category_ids, scores, np.asarray(areas, np.float64),
                          boxes, segs, kps, kinds)


def _check_segmentations(segs: list, col: _Column) -> np.ndarray:
    """:func:`~.mask_iou.segmentation_kinds` of ``segs``; names the first invalid one."""
    kinds = segmentation_kinds(segs)
    bad = kinds == INVALID
    if bad.any():
        col.fail(int(np.flatnonzero(bad)[0]), "segmentation", "not an RLE / polygons")
    return kinds


def _from_columns(c: DetectionColumns, source: str, gt: GroundTruthTable, iou_type: str) -> DetectionTable:
    def arr(name, value, dtype, ndim_ok):
        try:
            a = np.asarray(value)
            if dtype == np.int64 and a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
                raise ValueError("not whole numbers")
            if a.dtype.kind not in "iufb":
                raise TypeError(f"dtype {a.dtype}")
            a = a.astype(dtype)
        except (TypeError, ValueError) as e:
            raise PredictionError(Problem(source, None, name,
                                          f"cannot be read as {np.dtype(dtype).name}: {e}")) from None
        if not ndim_ok(a):
            raise PredictionError(Problem(source, None, name, "has the wrong shape", list(a.shape)))
        return a

    image_ids = arr("image_ids", c.image_ids, np.int64, lambda a: a.ndim == 1)
    n = image_ids.size
    category_ids = arr("category_ids", c.category_ids, np.int64, lambda a: a.shape == (n,))
    scores = arr("scores", c.scores, np.float64, lambda a: a.shape == (n,))

    def fail_row(name, mask):
        i = int(np.flatnonzero(mask)[0])
        raise PredictionError(Problem(source, f"result {i} (image_id {int(image_ids[i])})", name,
                                      "must be finite (no NaN or infinity)"))

    if not np.isfinite(scores).all():
        fail_row("scores", ~np.isfinite(scores))
    boxes = segs = kps = None
    if c.keypoints is not None:
        kps = arr("keypoints", c.keypoints, np.float64, lambda a: a.ndim in (2, 3) and a.shape[0] == n)
        kps = kps.reshape(n, -1)
        if kps.shape[1] % 3:
            raise PredictionError(Problem(source, None, "keypoints", "need (x, y, score) triples", list(kps.shape)))
        if not np.isfinite(kps).all():
            fail_row("keypoints", ~np.isfinite(kps).all(axis=1))
    if c.boxes is not None:
        kind = "bbox"
        boxes = arr("boxes", c.boxes, np.float64, lambda a: a.shape == (n, 4))
        if not np.isfinite(boxes).all():
            fail_row("boxes", ~np.isfinite(boxes).all(axis=1))
        areas = boxes[:, 2] * boxes[:, 3]
        if c.segmentations is not None:
            segs = list(c.segmentations)
        elif iou_type == "segm":
            segs = _box_polygons(boxes)
    elif c.segmentations is not None:
        kind = "segm"
        segs = list(c.segmentations)
        if len(segs) != n:
            raise PredictionError(Problem(source, None, "segmentations", f"need {n} entries", len(segs)))
        areas, boxes, segs = _mask_area_and_box(segs, image_ids, gt, source, need_boxes=iou_type == "bbox")
    elif kps is not None:
        kind = "keypoints"
        areas, boxes = _keypoint_extent(kps)
    else:
        raise PredictionError(Problem(source, None, None, "DetectionColumns needs boxes, segmentations or keypoints"))
    if segs is not None and len(segs) != n:
        raise PredictionError(Problem(source, None, "segmentations", f"need {n} entries", len(segs)))
    if iou_type == "segm" and segs is None:
        raise PredictionError(Problem(source, None, "segmentations", "a segm evaluation needs mask results"))
    if iou_type == "keypoints" and kps is None:
        raise PredictionError(Problem(source, None, "keypoints", "a keypoints evaluation needs keypoint results"))
    return DetectionTable(source, kind if n else "empty", image_ids, category_ids, scores,
                          np.asarray(areas, np.float64), boxes, segs, kps)
