"""The results boundary: read COCO ground truth / results files, check results record by record, and
turn both into typed columns for matching.

Files are read, and ground truth and results turned into columns, by the one COCO table reader,
:mod:`.coco.tables` (:func:`~.coco.tables.load_ground_truth`, :func:`~.coco.tables.load_results`);
:func:`coco_columns` re-indexes its tables for the class-agnostic matching of the confusion matrix
and the error breakdown.

:func:`validate_coco_results` is what every COCO-style evaluator calls before evaluating: malformed
predictions fail with a :class:`~sceneparse.errors.PredictionError` that names the record (its index
in the results list and its ``image_id``), the field and the offending value, instead of an
``AssertionError`` or a wrong number deep inside the evaluation.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from ..errors import DataError, FormatError, PredictionError, Problem
from .coco.mask_iou import to_rles
from ..structures.rle import polygon_problems, rle_problems
from .coco.tables import check_ground_truth, ground_truth_dict, load_coco_json, load_ground_truth, load_results

IOU_TYPES = ("bbox", "segm", "keypoints")

#: at most this many problems are listed in one error, then a line with the count of all
#: (DataError's message shows 20 lines)
MAX_PROBLEMS = 19


# ---- reading ----------------------------------------------------------------------------
def load_coco_gt(gt: "str | os.PathLike | dict", *, iou_type: str | None = None, check: bool = True
                 ) -> tuple[dict, str | None]:
    """A COCO ground-truth JSON path or an already loaded dict -> ``(dict, file name or None)``.

    Read by :func:`.coco.tables.ground_truth_dict` (a missing file is a :class:`FormatError`) and,
    unless ``check=False``, checked by :func:`.coco.tables.check_ground_truth` -- the validation
    every command runs on a COCO file -- so that nothing below trusts ground truth that ``convert``
    would reject. ``iou_type="segm"`` also requires the image sizes of an in-memory dict."""
    if isinstance(gt, dict):
        data, name = ground_truth_dict(gt)[0], None
    else:
        name = str(gt)
        try:
            data = ground_truth_dict(name)[0]
        except FileNotFoundError:
            raise FormatError(Problem(name, None, None, "ground-truth file not found")) from None
    if check:
        check_ground_truth(data, name or "<dict>", is_file=name is not None, iou_type=iou_type)
    return data, name


def load_coco_results(results: "str | os.PathLike | Sequence[dict]") -> tuple[list, str | None]:
    """A COCO results JSON path or a list of result dicts -> ``(list, file name or None)``."""
    if isinstance(results, (str, os.PathLike)):
        name = str(results)
        data = _read_json(name, "results", PredictionError)
        if not isinstance(data, list):
            raise PredictionError(Problem(name, None, None, "a COCO results file holds a JSON list of results",
                                          type(data).__name__))
        return data, name
    if isinstance(results, np.ndarray):
        raise TypeError("validate numpy results with validate_coco_results(gt, array, ...) directly")
    return list(results), None


def results_for(results: Sequence[dict], iou_type: str) -> list[dict]:
    """The records of a combined results file (``bbox`` + ``segmentation`` + ``keypoints`` in one
    record, as sceneparse's predictor and detectron2 write them) as ``iou_type`` should see them.

    For ``segm`` the ``bbox`` key is dropped: pycocotools' ``loadRes`` takes the first record's keys to
    decide the result type, and with a ``bbox`` present it sets ``area`` to the *box* area, so masks
    would be put in the small / medium / large ranges by their boxes. Without it, area and box come
    from the mask, as detectron2's COCO evaluator does. Other types are returned unchanged.
    """
    if iou_type != "segm":
        return list(results)
    return [{k: v for k, v in r.items() if k != "bbox"} if isinstance(r, dict) and "segmentation" in r else r
            for r in results]


def _read_json(path: str, what: str, err) -> Any:
    """:func:`.coco.tables.load_coco_json` with its errors as ``err`` (a missing file too)."""
    try:
        return load_coco_json(path, what)
    except FileNotFoundError:
        raise err(Problem(path, None, None, f"{what} file not found")) from None
    except FormatError as e:
        if err is FormatError:
            raise
        raise err(e.problems) from None


# ---- validation -------------------------------------------------------------------------
def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def validate_coco_results(gt_dict: dict, results, iou_type: str, *, file: str | None = None,
                          check_masks: bool = True) -> None:
    """Check COCO detection / segmentation / keypoint results against their ground truth.

    Args:
        gt_dict: loaded COCO ground truth (``images``, ``categories``; ``annotations`` for keypoint counts).
        results: list of result dicts (``image_id``, ``category_id``, ``score`` and ``bbox`` [x, y, w, h] /
            ``segmentation`` (RLE or polygons) / ``keypoints`` [x1, y1, v1, ...]), or an ``[N, 7]``
            array ``(image_id, x, y, w, h, score, category_id)`` (pycocotools' numpy form, bbox only).
        iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
        file: the results file name, for messages.
        check_masks: also decode every RLE (:func:`~sceneparse.structures.rle.rle_problems`: the
            alphabet, run lengths adding up to height * width) and check every polygon's coordinates
            against its image, all at once; ``False`` when the results go to
            :func:`~.coco.evaluate.evaluate_coco` next, whose reader checks the same.

    Raises:
        PredictionError: listing (up to :data:`MAX_PROBLEMS`) records as ``result <index> (image_id <id>)``
        with the field and value: unknown image or category ids, missing fields, NaN / infinite / negative
        scores, boxes that are not 4 finite numbers or have negative width or height, malformed RLEs /
        polygons or RLE sizes that differ from the image size, keypoint arrays whose length is not
        ``3 * K`` (``K`` from the category's ``keypoints`` list, else from its ground truth) or that hold
        non-finite values; RLEs that pycocotools' C code must not read and polygons it must not
        rasterise (``check_masks``). A results file that is not a list of objects is one problem
        naming the file.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    images = {img["id"]: img for img in gt_dict.get("images", [])}
    cats = {c["id"]: c for c in gt_dict.get("categories", [])}
    problems: list[Problem] = []
    count = 0

    def bad(i, image_id, fld, msg, value=None):
        nonlocal count
        count += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(Problem(file, f"result {i} (image_id {image_id})", fld, msg, value))

    if isinstance(results, np.ndarray):
        _validate_numpy(results, images, cats, iou_type, bad)
    else:
        if not isinstance(results, (list, tuple)):
            raise PredictionError(Problem(file, None, None, "results must be a list of dicts", type(results).__name__))
        if results and not any(isinstance(r, dict) for r in results):
            raise PredictionError(Problem(file, None, None, "a COCO results file holds a list of result objects "
                                          f"({{image_id, category_id, score, ...}}), this one a list of "
                                          f"{type(results[0]).__name__}", _cut(results)))
        kp_len = _keypoint_lengths(gt_dict) if iou_type == "keypoints" else {}
        suspects = _screen(results, iou_type, images, cats, kp_len)
        rows = range(len(results)) if suspects is None else suspects.tolist()
        for i in rows:
            _check_record(i, results[i], iou_type, images, cats, kp_len, bad)
        if iou_type == "segm" and suspects is not None:  # masks: structure checked record by record
            flagged = set(rows)
            for i, r in enumerate(results):
                if i not in flagged:
                    _check_segmentation(r["segmentation"], images.get(r["image_id"]), i, r["image_id"], bad)
        if iou_type == "segm" and check_masks:
            _check_mask_contents(results, images, bad)
    if count:
        if count > len(problems):
            problems.append(Problem(file, None, None, f"... and {count - len(problems)} more: {count} problems in all"))
        raise PredictionError(problems)


_FIELD = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}


def _screen(results: Sequence, iou_type: str, images: dict, cats: dict, kp_len: dict) -> np.ndarray | None:
    """Vectorised first pass: indices of the records that may be bad (checked one by one afterwards),
    or ``None`` when the columns cannot even be built (then every record is checked)."""
    n = len(results)
    try:
        img = np.fromiter((r["image_id"] for r in results), dtype=np.float64, count=n)
        cat = np.fromiter((r["category_id"] for r in results), dtype=np.float64, count=n)
        score = np.fromiter((r["score"] for r in results), dtype=np.float64, count=n)
        geom = [r[_FIELD[iou_type]] for r in results]
        extra_box = [i for i, r in enumerate(results) if "bbox" in r] if iou_type != "bbox" else []
    except (KeyError, TypeError, ValueError):
        return None
    ids = np.fromiter(images, dtype=np.float64, count=len(images)) if all(_is_num(k) for k in images) else None
    cids = np.fromiter(cats, dtype=np.float64, count=len(cats)) if all(_is_num(k) for k in cats) else None
    if ids is None or cids is None:
        return None
    suspect = ~np.isin(img, ids) | ~np.isin(cat, cids) | ~np.isfinite(score) | (score < 0)
    if iou_type == "bbox":
        try:
            b = np.asarray(geom, dtype=np.float64).reshape(n, 4)
        except (TypeError, ValueError):
            return None
        suspect |= ~np.isfinite(b).all(1) | (b[:, 2] < 0) | (b[:, 3] < 0)
    elif iou_type == "keypoints":
        try:
            lengths = np.fromiter((len(k) for k in geom), dtype=np.int64, count=n)
            flat = np.fromiter((v for k in geom for v in k), dtype=np.float64, count=int(lengths.sum()))
        except (TypeError, ValueError):
            return None
        want = np.fromiter((3 * kp_len.get(c, 0) for c in cat.tolist()), dtype=np.int64, count=n)
        suspect |= (lengths == 0) | (lengths % 3 != 0) | ((want > 0) & (lengths != want))
        finite = np.isfinite(flat).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        nonempty = lengths > 0
        n_finite = np.zeros(n, dtype=np.int64)
        if flat.size:
            n_finite[nonempty] = np.add.reduceat(finite, starts[nonempty])
        suspect |= n_finite != lengths
    suspect[extra_box] = True  # a box next to a mask / keypoints: check it record by record
    return np.flatnonzero(suspect)


def _check_record(i: int, r, iou_type: str, images: dict, cats: dict, kp_len: dict, bad) -> None:
    if not isinstance(r, dict):
        bad(i, None, None, "a result must be a JSON object", type(r).__name__)
        return
    image_id = r.get("image_id")
    missing = [k for k in ("image_id", "category_id", "score", _FIELD[iou_type]) if k not in r]
    if missing:
        bad(i, image_id, ", ".join(missing), "missing field(s)")
        return
    if image_id not in images:
        bad(i, image_id, "image_id", "unknown image id (not in the ground truth)", image_id)
    cid = r["category_id"]
    if cid not in cats:
        bad(i, image_id, "category_id", f"unknown category id; known ids: {sorted(cats)[:30]}", cid)
    s = r["score"]
    if not _is_num(s) or not math.isfinite(s) or s < 0:
        bad(i, image_id, "score", "score must be a finite number >= 0", s)
    if iou_type == "bbox" or "bbox" in r:
        _check_bbox(r.get("bbox"), i, image_id, bad)
    if iou_type == "segm":
        _check_segmentation(r["segmentation"], images.get(image_id), i, image_id, bad)
    elif iou_type == "keypoints":
        _check_keypoints(r["keypoints"], kp_len.get(cid), i, image_id, bad)


def _check_bbox(b, i, image_id, bad) -> None:
    if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(_is_num(v) for v in b):
        bad(i, image_id, "bbox", "bbox must be 4 numbers [x, y, width, height]", b)
    elif not all(math.isfinite(v) for v in b):
        bad(i, image_id, "bbox", "bbox has non-finite values", b)
    elif b[2] < 0 or b[3] < 0:
        bad(i, image_id, "bbox", "box with negative width or height", b)


def _check_segmentation(seg, image, i, image_id, bad) -> None:
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            bad(i, image_id, "segmentation.size", "an RLE needs size [height, width]", size)
            return
        if image is not None and "height" in image and "width" in image and \
                list(size) != [image["height"], image["width"]]:
            bad(i, image_id, "segmentation.size", f"RLE size differs from the image size "
                f"[{image['height']}, {image['width']}]", list(size))
            return
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != size[0] * size[1]:
                bad(i, image_id, "segmentation.counts", "uncompressed RLE counts must be non-negative integers "
                    "summing to height * width", f"{len(counts)} counts")
        elif not isinstance(counts, (str, bytes)):
            bad(i, image_id, "segmentation.counts", "RLE counts must be a string (compressed) or a list", counts)
    elif isinstance(seg, list):
        if not seg or not all(isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0 and
                              all(_is_num(v) and math.isfinite(v) for v in p) for p in seg):
            bad(i, image_id, "segmentation", "polygons must be lists of >= 3 finite (x, y) pairs", seg)
    else:
        bad(i, image_id, "segmentation", "segmentation must be an RLE dict or a list of polygons", seg)


def _cut(v: list) -> list:
    return v[:8] + ["..."] if len(v) > 8 else v


def _check_mask_contents(results: Sequence, images: dict, bad) -> None:
    """The masks whose structure passed: RLE contents and polygon coordinates, vectorised over all
    results (the checks pycocotools' C code needs; see :mod:`sceneparse.structures.rle`)."""
    rle_rows, poly_rows = [], []
    for i, r in enumerate(results):
        seg = r.get("segmentation") if isinstance(r, dict) else None
        if isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes, list)):
            image = images.get(r.get("image_id"))
            if image is None or [image.get("height"), image.get("width")] == list(seg.get("size") or ()):
                rle_rows.append(i)  # (a size that differs from the image's is reported already)
        elif isinstance(seg, list) and seg:
            poly_rows.append(i)
    if rle_rows:
        for i, p in zip(rle_rows, rle_problems([results[i]["segmentation"] for i in rle_rows])):
            if p is not None:
                bad(i, results[i].get("image_id"), "segmentation.counts", p)
    if poly_rows:
        def size(i, key):
            v = images.get(results[i].get("image_id"), {}).get(key)
            return v if _is_num(v) and v > 0 else math.inf
        h = [size(i, "height") for i in poly_rows]
        w = [size(i, "width") for i in poly_rows]
        for i, p in zip(poly_rows, polygon_problems([results[i]["segmentation"] for i in poly_rows], h, w)):
            if p is not None and all(isinstance(q, (list, tuple)) and len(q) >= 6 for q in results[i]["segmentation"]):
                bad(i, results[i].get("image_id"), "segmentation", p)


def _check_keypoints(kp, k, i, image_id, bad) -> None:
    if not isinstance(kp, (list, tuple)) or not all(_is_num(v) for v in kp):
        bad(i, image_id, "keypoints", "keypoints must be a flat list of numbers", kp)
    elif (k is not None and len(kp) != 3 * k) or len(kp) == 0 or len(kp) % 3:
        expect = f"3 * {k} = {3 * k}" if k is not None else "a positive multiple of 3"
        bad(i, image_id, "keypoints", f"keypoints must have {expect} values", f"{len(kp)} values")
    elif not all(math.isfinite(v) for v in kp):
        bad(i, image_id, "keypoints", "keypoints hold non-finite values", kp)


def _keypoint_lengths(gt_dict: dict) -> dict[int, int]:
    """Category id -> number of keypoints (from the category's names, else its first GT annotation)."""
    out = {c["id"]: len(c["keypoints"]) for c in gt_dict.get("categories", []) if c.get("keypoints")}
    for a in gt_dict.get("annotations", []):
        if a.get("category_id") not in out and a.get("keypoints"):
            out[a["category_id"]] = len(a["keypoints"]) // 3
    return out


def _validate_numpy(arr: np.ndarray, images, cats, iou_type: str, bad) -> None:
    if iou_type != "bbox":
        raise ValueError("numpy results ([N, 7] rows) exist for bbox evaluation only")
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 7:
        bad(0, None, None, "numpy results must be [N, 7]: image_id, x, y, w, h, score, category_id", a.shape)
        return
    img_ok = np.isin(a[:, 0], np.fromiter(images, dtype=np.float64, count=len(images)))
    cat_ok = np.isin(a[:, 6], np.fromiter(cats, dtype=np.float64, count=len(cats)))
    score_ok = np.isfinite(a[:, 5]) & (a[:, 5] >= 0)
    box_finite = np.isfinite(a[:, 1:5]).all(1)
    size_ok = (a[:, 3] >= 0) & (a[:, 4] >= 0)
    for i in np.flatnonzero(~(img_ok & cat_ok & score_ok & box_finite & size_ok)):
        iid = a[i, 0]
        iid = int(iid) if np.isfinite(iid) and iid == int(iid) else iid
        if not img_ok[i]:
            bad(int(i), iid, "image_id", "unknown image id (not in the ground truth)", iid)
        if not cat_ok[i]:
            bad(int(i), iid, "category_id", "unknown category id", a[i, 6])
        if not score_ok[i]:
            bad(int(i), iid, "score", "score must be a finite number >= 0", a[i, 5])
        if not box_finite[i]:
            bad(int(i), iid, "bbox", "bbox has non-finite values", a[i, 1:5].tolist())
        elif not size_ok[i]:
            bad(int(i), iid, "bbox", "box with negative width or height", a[i, 1:5].tolist())


# ---- columns for matching ---------------------------------------------------------------
@dataclass
class CocoColumns:
    """COCO annotations or results as columns over a shared image / category index.

    Attributes:
        image: ``int64 [N]`` index into ``image_ids`` (sorted ground-truth image ids).
        label: ``int64 [N]`` index into ``cat_ids`` (sorted ground-truth category ids).
        score: ``float64 [N]`` result scores (1 for ground truth).
        crowd: ``bool [N]`` ``iscrowd`` (ground truth; always False for results).
        boxes: ``float64 [N, 4]`` COCO ``[x, y, w, h]``.
        rles: for ``segm``, pycocotools' compressed RLEs (``counts`` as ``bytes``), else ``None``.
        index: ``int64 [N]`` position of each row in the original list (for messages).
        ids: ``int64 [N]`` annotation ``id`` (ground truth) or ``index + 1`` (results, as ``loadRes``).
    """

    image: np.ndarray
    label: np.ndarray
    score: np.ndarray
    crowd: np.ndarray
    boxes: np.ndarray
    rles: list | None
    index: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def take(self, keep: np.ndarray) -> "CocoColumns":
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        return CocoColumns(self.image[keep], self.label[keep], self.score[keep], self.crowd[keep], self.boxes[keep],
                           None if self.rles is None else [self.rles[i] for i in keep], self.index[keep],
                           self.ids[keep])


@dataclass
class CocoPair:
    """Ground truth and results of one evaluation as :class:`CocoColumns` on shared indices."""

    gt: CocoColumns
    dt: CocoColumns
    image_ids: np.ndarray  # int64 [I] sorted
    cat_ids: np.ndarray  # int64 [K] sorted
    cat_names: list[str]
    image_sizes: np.ndarray  # int64 [I, 2] (height, width)
    iou_type: str


def coco_columns(gt, results, iou_type: str = "bbox", validate: bool = True, *, gt_source: str | None = None,
                 results_source: str | None = None) -> CocoPair:
    """Read (if paths), validate and convert COCO ground truth + results for ``bbox`` or ``segm`` matching.

    The ground truth and the results go through the one COCO table reader
    (:func:`~.coco.tables.load_ground_truth`, :func:`~.coco.tables.load_results`, whose checks they
    pass: annotation ``id`` and ``area`` are required, as for :func:`~.coco.evaluate.evaluate_coco`);
    masks become pycocotools RLEs by :func:`~.coco.mask_iou.to_rles` (``annToRLE``'s rule, at the
    image size). Annotations of images or categories missing from the ground truth are a
    :class:`DataError` here, as is an image without a positive size in a ``segm`` matching.
    ``validate=False``: both were checked already (by the caller, on these very objects).
    ``gt_source`` / ``results_source`` name already loaded ones in messages.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"matching needs iou_type 'bbox' or 'segm', got {iou_type!r}")
    gt_dict, gt_file = load_coco_gt(gt, iou_type=iou_type, check=validate)
    gt_file = gt_file or gt_source
    res, res_file = load_coco_results(results)
    res_file = res_file or results_source
    if validate:
        validate_coco_results(gt_dict, res, iou_type, file=res_file)
    table = load_ground_truth(gt_dict, iou_type, source=gt_file, check=False)
    image_ids = np.sort(table.img_ids)
    heights, widths = table.image_sizes(image_ids)
    sizes = np.stack([heights, widths], axis=1).astype(np.int64).reshape(-1, 2)
    cat_ids = table.cat_ids.astype(np.int64)
    names = [table.cat_names[c] for c in cat_ids.tolist()]
    problems = []
    if iou_type == "segm" and (sizes <= 0).any():
        bad_img = int(image_ids[np.flatnonzero((sizes <= 0).any(1))[0]])
        problems.append(Problem(gt_file, f"image {bad_img}", "height/width",
                                "mask evaluation needs the image size (polygons are rasterised at it)"))
    bad_image = ~np.isin(table.image_ids, image_ids)
    bad_cat = ~bad_image & ~np.isin(table.category_ids, cat_ids)
    for j in np.flatnonzero(bad_image | bad_cat)[:MAX_PROBLEMS - len(problems)].tolist():
        where = f"annotation {int(table.ids[j])}"
        if bad_image[j]:
            problems.append(Problem(gt_file, where, "image_id", "unknown image id", int(table.image_ids[j])))
        else:
            problems.append(Problem(gt_file, where, "category_id", "unknown category id", int(table.category_ids[j])))
    if problems:
        raise DataError(problems)
    dets = load_results(res, table, iou_type, source=res_file)

    def columns(img_of, cat_of, scores, crowd, boxes, segs, kinds, ids, source) -> CocoColumns:
        n = len(img_of)
        rles = None
        if iou_type == "segm":
            rles = _pycoco_bytes(to_rles(list(segs), img_of, table, source, kinds))
            boxes = np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(n, 4) if n else np.zeros((0, 4))
        return CocoColumns(np.searchsorted(image_ids, img_of).astype(np.int64),
                           np.searchsorted(cat_ids, cat_of).astype(np.int64), scores, crowd,
                           np.asarray(boxes, dtype=np.float64).reshape(n, 4), rles, np.arange(n, dtype=np.int64), ids)

    n_gt, n_dt = len(table.ids), len(dets)
    return CocoPair(
        columns(table.image_ids, table.category_ids, np.ones(n_gt), table.iscrowd.astype(bool), table.boxes,
                table.segmentations, table.segmentation_kinds, table.ids.astype(np.int64), table.source),
        columns(dets.image_ids, dets.category_ids, dets.scores.astype(np.float64), np.zeros(n_dt, dtype=bool),
                dets.boxes, dets.segmentations, dets.segmentation_kinds, dets.ids, dets.source),
        image_ids, cat_ids, names, sizes, iou_type)


def _pycoco_bytes(rles: list) -> list:
    """Compressed RLEs as :class:`CocoColumns` holds them: ``counts`` as ``bytes`` (pycocotools'
    own output already is; a compressed RLE read from JSON has ``counts`` as ``str``)."""
    return [{"size": list(r["size"]), "counts": r["counts"].encode("ascii")} if isinstance(r["counts"], str) else r
            for r in rles]


__all__ = ["CocoColumns", "CocoPair", "IOU_TYPES", "coco_columns", "load_coco_gt", "load_coco_results",
           "validate_coco_results"]
