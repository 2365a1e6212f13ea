"""COCO object-detection / instance-segmentation / person-keypoint JSON.

Reading converts once, at the boundary: COCO's top-left ``XYWH`` boxes become ``XYXY`` absolute
pixels (``float32``), category ids become contiguous labels through the set's
:class:`~sceneparse.conventions.CategoryMap`, and keypoints become ``float32 [K, 3]``. Segmentations
stay as COCO wrote them (polygons, compressed RLE with ``counts: str``, or uncompressed RLE with
``counts: list[int]``) until a dataset decodes them. Writing undoes each step; unknown keys of
images and annotations travel in ``extra`` and are written back.

Reading is also :func:`check_coco`, the one validation of a COCO file that every command runs
(``convert``, ``show``, ``train``, ``val`` through :func:`read_coco`; ``eval`` through
:mod:`sceneparse.evaluation`): fields of the wrong type are a :class:`~sceneparse.errors.FormatError`
listing every record that has one (three annotations without ``bbox`` are three problems); the
values are checked by :func:`~.validate.validate_annotation_set`. This module never imports torch
(evaluation runs it), so the keypoint layout types are imported where they are built.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ... import __version__
from ...conventions import COCO_KEYPOINT_NAMES, COCO_OKS_SIGMAS, COCO_SKELETON, Category, CategoryMap
from ...errors import DataError, FormatError, Problem
from ..records import AnnotationSet, ImageRecord, ObjectRecord
from ._io import WriteResult, atomic_open
from ._parse import fail, get_int, get_list, get_number, get_str, numbers
from .validate import Checker, Origin, validate_annotation_set

_IMAGE_KEYS = {"id", "file_name", "height", "width"}
_ANN_KEYS = {"id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd", "keypoints", "num_keypoints"}
#: COCO's words for the generic fields used in validation messages
FIELD_NAMES = {"category": "category_id", "size": "height/width"}


def load_json(path: Path) -> dict:
    """Parse a JSON file whose top level must be an object; :class:`FormatError` otherwise."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        fail(str(path), None, None, "file not found")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(str(path), None, None, f"invalid JSON: {e}")
    if not isinstance(data, dict):
        fail(str(path), None, None, f"top level must be a JSON object, got {type(data).__name__}")
    return data


def _try(errors: list[Problem], fn: Callable, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)``; a :class:`FormatError` it raises joins ``errors`` (result ``None``), so
    that every bad field of every record is reported, not only the first."""
    try:
        return fn(*args, **kwargs)
    except FormatError as e:
        errors.extend(e.problems)
        return None


def _fsum_ok(values: list) -> bool:
    """A flat list of numbers (the element check runs in C, as in ``_parse.numbers``)."""
    try:
        math.fsum(values)
    except OverflowError:
        pass
    except (TypeError, ValueError):
        return False
    return True


def _whole(values: list, lo: float, hi: float = float("inf")) -> bool:
    """Every value a whole number in ``[lo, hi]`` (NaN and infinity are not)."""
    return all(float(v).is_integer() and lo <= v <= hi for v in values)


def parse_categories(raw: Any, file: str, ck: Checker) -> CategoryMap:
    """COCO ``categories`` -> :class:`CategoryMap` (sorted by id). Duplicate ids are a problem
    (lenient: the later entry is dropped). Fields of the wrong type: :class:`FormatError` listing all."""
    if not isinstance(raw, list):
        fail(file, None, "categories", "missing or not a list", type(raw).__name__)
    cats: dict[int, Category] = {}
    errors: list[Problem] = []
    for i, c in enumerate(raw):
        rec = f"category #{i}"
        if not isinstance(c, dict):
            errors.append(Problem(file, rec, None, f"expected an object, got {type(c).__name__}", c))
            continue
        n = len(errors)
        cid = _try(errors, get_int, c, "id", file, rec)
        if cid is None:
            continue
        rec = f"category {cid}"
        name = _try(errors, get_str, c, "name", file, rec, default=str(cid))
        kps = _try(errors, get_list, c, "keypoints", file, rec, default=[]) or []
        if not all(isinstance(k, str) for k in kps):
            errors.append(Problem(file, rec, "keypoints", "expected a list of keypoint names", kps))
        skel = _try(errors, get_list, c, "skeleton", file, rec, default=[]) or []
        for e in skel:
            if _try(errors, numbers, e, file, rec, "skeleton", length=2) is not None and not _whole(e, 1):
                errors.append(Problem(file, rec, "skeleton", "expected pairs of keypoint numbers (1-based)", e))
        color = c.get("color")
        if color is not None:
            if _try(errors, numbers, color, file, rec, "color", length=3) is not None and not _whole(color, 0, 255):
                errors.append(Problem(file, rec, "color", "expected 3 whole numbers 0..255", color))
        isthing = c.get("isthing", 1)
        if isinstance(isthing, bool) or isthing not in (0, 1):
            errors.append(Problem(file, rec, "isthing", "expected 0 or 1", isthing))
        if len(errors) > n:
            continue
        if cid in cats:
            ck.flag(file, rec, "id", "duplicate category id", cid, repaired="dropped this category entry")
            continue
        cats[cid] = Category(
            id=cid, name=name, isthing=bool(isthing), supercategory=str(c.get("supercategory", "") or ""),
            color=tuple(int(v) for v in color) if color is not None else None,
            keypoints=tuple(kps), skeleton=tuple((int(a), int(b)) for a, b in skel),
        )
    if errors:
        raise FormatError(errors)
    return CategoryMap.from_categories(cats.values())


def keypoint_set_of(cmap: CategoryMap, file: str):
    """The keypoint layout (:class:`~sceneparse.structures.keypoints.KeypointSet`) given by the
    categories' ``keypoints`` / ``skeleton`` (COCO's 17 person keypoints -> ``COCO_PERSON``). One
    layout per set."""
    from ...structures.keypoints import COCO_PERSON, KeypointSet

    layouts = {(c.keypoints, c.skeleton): c.id for c in cmap.categories if c.keypoints}
    if not layouts:
        return None
    if len(layouts) > 1:
        fail(file, f"categories {sorted(layouts.values())}", "keypoints",
             "categories with different keypoint layouts; sceneparse supports one layout per set")
    (names, skeleton), cid = next(iter(layouts.items()))
    if names == COCO_KEYPOINT_NAMES:
        if set(skeleton) == set(COCO_SKELETON):
            return COCO_PERSON
        sigmas = COCO_OKS_SIGMAS
    else:
        sigmas = None
    try:
        return KeypointSet.from_names(names, skeleton, sigmas, one_based_skeleton=True)
    except (ValueError, KeyError) as e:
        fail(file, f"category {cid}", "skeleton", f"invalid keypoint layout: {e}", [list(p) for p in skeleton])


def parse_images(raw: Any, file: str, *, require: tuple[str, ...] = ("file_name", "height", "width")
                 ) -> tuple[list[ImageRecord], list[Origin]]:
    """COCO ``images`` -> image records. ``require``: the fields that must be there (in-memory ground
    truth handed to evaluation may leave out ``file_name``, and ``height`` / ``width`` when no mask
    is rasterised; missing ones are then ``""`` / ``None``, a size that is not known, which only
    :func:`check_coco` accepts). Fields of the wrong type: :class:`FormatError` listing every image
    that has one."""
    if not isinstance(raw, list):
        fail(file, None, "images", "missing or not a list", type(raw).__name__)
    images, origins = [], []
    errors: list[Problem] = []
    for i, im in enumerate(raw):
        if not isinstance(im, dict):
            errors.append(Problem(file, f"image #{i}", None, f"expected an object, got {type(im).__name__}", im))
            continue
        iid = im.get("id")
        if type(iid) is not int:
            iid = _try(errors, get_int, im, "id", file, f"image #{i}")
            if iid is None:
                continue
        rec = f"image {iid}"
        n = len(errors)
        name = _try(errors, get_str, im, "file_name", file, rec, default=... if "file_name" in require else "")
        if name == "" and "file_name" in require:
            errors.append(Problem(file, rec, "file_name", "empty file name", name))
        h = _try(errors, get_int, im, "height", file, rec, default=... if "height" in require else None)
        w = _try(errors, get_int, im, "width", file, rec, default=... if "width" in require else None)
        if len(errors) > n:
            continue
        images.append(ImageRecord(id=iid, file_name=name, height=h, width=w,
                                  extra={k: v for k, v in im.items() if k not in _IMAGE_KEYS}))
        origins.append(Origin(file, rec))
    if errors:
        raise FormatError(errors)
    return images, origins


def check_segmentation(seg: Any, file: str, rec: str) -> Any:
    """Type-check a COCO segmentation: polygons ``list[list[number]]`` or RLE
    ``{"size": [h, w], "counts": str | list[int]}``. Returns it unchanged (``None`` for ``[]``)."""
    if isinstance(seg, list):
        if not seg:
            return None
        for r, ring in enumerate(seg):
            numbers(ring, file, rec, f"segmentation[{r}]")
        return seg
    if isinstance(seg, dict):
        size = seg.get("size")
        counts = seg.get("counts")
        numbers(size, file, rec, "segmentation.size", length=2)
        if isinstance(counts, list):
            numbers(counts, file, rec, "segmentation.counts")
        elif not isinstance(counts, str):
            fail(file, rec, "segmentation.counts", "RLE counts must be a string (compressed) or a list of ints",
                 type(counts).__name__)
        if not all(math.isfinite(v) and v >= 0 and float(v).is_integer() for v in size):
            fail(file, rec, "segmentation.size", "RLE size must be two whole numbers >= 0 (height, width)", size)
        return {"size": [int(size[0]), int(size[1])], "counts": counts}
    fail(file, rec, "segmentation", f"expected polygons (list) or RLE (object), got {type(seg).__name__}", seg)


def parse_annotations(raw: Any, cmap: CategoryMap, file: str, ck: Checker) -> tuple[list[ObjectRecord], list[Origin]]:
    """COCO ``annotations`` -> object records (boxes ``XYXY``, converted in one vectorised step).
    Fields of the wrong type: :class:`FormatError` listing every bad field of every annotation;
    an undeclared ``category_id`` is a problem of the record (lenient: the annotation is dropped)."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        fail(file, None, "annotations", "not a list", type(raw).__name__)
    records: list[ObjectRecord] = []
    origins: list[Origin] = []
    bboxes: list[list] = []
    errors: list[Problem] = []
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            errors.append(Problem(file, f"annotation #{i}", None, f"expected an object, got {type(a).__name__}", a))
            continue
        n = len(errors)
        aid, image_id, cid = a.get("id"), a.get("image_id"), a.get("category_id")
        if type(aid) is not int:  # fast path for well-formed files; get_int explains the others
            aid = _try(errors, get_int, a, "id", file, f"annotation #{i}")
        rec = f"annotation {aid}" if aid is not None else f"annotation #{i}"
        if type(image_id) is not int:
            image_id = _try(errors, get_int, a, "image_id", file, rec)
        if type(cid) is not int:
            cid = _try(errors, get_int, a, "category_id", file, rec)
        bbox = a.get("bbox")
        if not (type(bbox) is list and len(bbox) == 4 and _fsum_ok(bbox)):  # fast path for well-formed files
            bbox = _try(errors, get_list, a, "bbox", file, rec)
            if bbox is not None:
                bbox = _try(errors, numbers, bbox, file, rec, "bbox", length=4)
        seg = _try(errors, check_segmentation, a["segmentation"], file, rec) if "segmentation" in a else None
        area = _try(errors, get_number, a, "area", file, rec, default=None)
        iscrowd = a.get("iscrowd", 0)
        if iscrowd not in (0, 1):  # true / false too, as pycocotools reads them
            errors.append(Problem(file, rec, "iscrowd", "expected 0 or 1", iscrowd))
        kps = None
        if a.get("keypoints"):  # absent, null or [] -> no keypoints
            flat = _try(errors, numbers, a["keypoints"], file, rec, "keypoints")
            if flat is not None:
                flat = np.asarray(flat, dtype=np.float32)
                kps = flat.reshape(-1, 3) if flat.size % 3 == 0 else flat
        if len(errors) > n or aid is None:
            continue
        if not cmap.has_id(cid):
            ck.flag(file, rec, "category_id", "unknown category id", cid,
                    repaired="dropped the annotation")
            continue
        records.append(ObjectRecord(
            id=aid, image_id=image_id, label=cmap.to_label(cid), bbox=None, iscrowd=bool(iscrowd), area=area,
            segmentation=seg, keypoints=kps, extra={k: v for k, v in a.items() if k not in _ANN_KEYS},
        ))
        origins.append(Origin(file, rec))
        bboxes.append(bbox)
    if errors:
        raise FormatError(errors)
    if records:
        xyxy = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        xyxy[:, 2:] += xyxy[:, :2]  # COCO's top-left XYWH -> XYXY (conventions.BoxFormat)
        xyxy = xyxy.astype(np.float32)
        for r, b in zip(records, xyxy):
            r.bbox = b
    return records, origins


def read_coco(path: str | Path, image_root: str | Path | None = None, *, strict: bool = False,
              check_images: bool = False) -> AnnotationSet:
    """Read a COCO instances / person_keypoints JSON file.

    Args:
        path: the JSON file.
        image_root: folder that ``images[].file_name`` is relative to. When given, every image must
            exist there (a validation problem otherwise).
        strict: raise :class:`~sceneparse.errors.DataError` at the first problem (see
            :mod:`.validate` for what lenient mode repairs).
        check_images: also decode every image and compare its size with the record.

    Returns:
        An :class:`AnnotationSet` with boxes ``XYXY`` absolute px, contiguous labels, keypoints
        ``float32 [K, 3]`` and the keypoint layout of the categories (COCO's 17 -> ``COCO_PERSON``);
        ``problems`` lists what validation found and repaired.

    Raises:
        FormatError: invalid JSON or fields of the wrong type (names file, record and field).
    """
    path = Path(path)
    file = str(path)
    data = load_json(path)
    ck = Checker(strict)
    cmap, images, image_origins, anns, origins = _parse(data, file, ck)
    kset = keypoint_set_of(cmap, file)
    aset = AnnotationSet(categories=cmap, images=images, annotations=anns,
                         image_root=Path(image_root) if image_root is not None else None,
                         keypoint_set=kset, source=file)
    validate_annotation_set(aset, checker=ck, check_images=check_images, image_origins=image_origins,
                            object_origins=origins, field_names=FIELD_NAMES)
    aset.problems = list(ck.problems)
    return aset


def _parse(data: Mapping, file: str, ck: Checker, require: tuple[str, ...] = ("file_name", "height", "width")):
    """Categories, images and annotations of a loaded COCO file; the :class:`FormatError` lists the
    wrong-type fields of all three lists at once."""
    errors: list[Problem] = []
    cmap = _try(errors, parse_categories, data.get("categories"), file, ck)
    parsed = _try(errors, parse_images, data.get("images"), file, require=require)
    images, image_origins = parsed if parsed is not None else ([], [])
    anns, origins = [], []
    if cmap is not None:
        parsed = _try(errors, parse_annotations, data.get("annotations"), cmap, file, ck)
        if parsed is not None:
            anns, origins = parsed
    if errors:
        raise FormatError(errors)
    return cmap, images, image_origins, anns, origins


def check_coco(data: Mapping, file: str, *, require: tuple[str, ...] = ("file_name", "height", "width")
               ) -> list[Problem]:
    """The one validation of a COCO instances / person_keypoints file, for ground truth that is used
    as it is (``sceneparse eval`` and :mod:`sceneparse.evaluation`): exactly what :func:`read_coco`
    checks (``convert``, ``show``, ``train`` and ``val`` read through it), nothing repaired.

    Args:
        data: the loaded JSON object.
        file: its file name, for every message (``"<dict>"`` for an in-memory one).
        require: image fields that must be present (see :func:`parse_images`).

    Returns:
        Every problem, each naming the file, the record (``image 3``, ``annotation 17``) and the field:
        duplicate image / annotation ids, non-positive image sizes, annotations of unknown images or
        undeclared categories, boxes that are not finite or have no positive size, polygons with
        fewer than 3 points, non-finite or absurd coordinates, RLEs that pycocotools must not read
        (alphabet, length) or whose size is not the image's, keypoints of the wrong length or not
        finite, areas that are not finite numbers >= 0. Two things that :func:`read_coco` repairs are
        fine here, because evaluation scores ground truth as pycocotools does: boxes reaching
        outside the image, and keypoints without a keypoint layout in the categories.

    Raises:
        FormatError: fields of the wrong type (every one of them), as :func:`read_coco` does.
    """
    ck = Checker(strict=False)
    cmap, images, image_origins, anns, origins = _parse(data, file, ck, require)
    kps = [c.keypoints for c in cmap.categories if c.keypoints]
    aset = AnnotationSet(categories=cmap, images=images, annotations=anns, source=file)
    validate_annotation_set(aset, checker=ck, image_origins=image_origins, object_origins=origins,
                            field_names=FIELD_NAMES, as_is=True,
                            num_keypoints=len(kps[0]) if len(kps) == 1 else None)
    return [dataclasses.replace(p, repaired=None) for p in ck.problems]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, bytes):
        return o.decode("ascii")
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _segmentation_out(seg: Any) -> Any:
    if isinstance(seg, dict):
        counts = seg["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        elif not isinstance(counts, str):
            counts = [int(c) for c in counts]
        return {"size": [int(s) for s in seg["size"]], "counts": counts}
    return [ring.tolist() if isinstance(ring, np.ndarray) else list(ring) for ring in seg]


def _mask_area(seg: Any, height: int, width: int) -> float:
    from ...structures import masks as mask_ops  # torch: only writers get here

    if isinstance(seg, dict):
        return float(mask_ops.rle_area([seg])[0])
    return float(mask_ops.rle_area([mask_ops.polygons_to_rle(seg, height, width)])[0])


def to_coco_dict(aset: AnnotationSet, *, info: dict | None = None) -> dict:
    """The COCO JSON object of ``aset``: boxes as top-left ``XYWH`` (rounded to 1e-4 px), category ids
    from labels, ``area`` (the stored one, else the mask area, else the box area), ``iscrowd``,
    segmentation as stored, ``keypoints`` flat with ``num_keypoints`` = labelled (v > 0) count."""
    cmap = aset.categories
    size_of = {im.id: (im.height, im.width) for im in aset.images}
    images = [{"id": int(im.id), "file_name": im.file_name, "height": int(im.height), "width": int(im.width),
               **{k: v for k, v in im.extra.items() if k not in _IMAGE_KEYS}} for im in aset.images]
    anns = aset.annotations
    n = len(anns)
    out_anns: list[dict] = []
    if n:
        xyxy = np.stack([np.asarray(a.bbox, dtype=np.float64) for a in anns])
        xywh = xyxy.copy()
        xywh[:, 2:] -= xywh[:, :2]  # XYXY -> COCO's top-left XYWH
        xywh = np.round(xywh, 4)
        box_area = np.round(xywh[:, 2].clip(0) * xywh[:, 3].clip(0), 4)
        cat_ids = np.asarray(cmap.ids, dtype=np.int64)
        labels = np.asarray([a.label for a in anns], dtype=np.int64)
        if labels.min() < 0 or labels.max() >= len(cat_ids):
            j = int(np.flatnonzero((labels < 0) | (labels >= len(cat_ids)))[0])
            raise DataError([Problem(aset.source or None, f"annotation {anns[j].id}", "label",
                                       f"label outside 0..{len(cat_ids) - 1}", int(labels[j]))])
        ids_out = cat_ids[labels].tolist()
        xywh_l = xywh.tolist()
        for j, a in enumerate(anns):
            d: dict[str, Any] = {"id": int(a.id), "image_id": int(a.image_id), "category_id": ids_out[j],
                                 "bbox": xywh_l[j], "iscrowd": int(bool(a.iscrowd))}
            if a.segmentation is not None:
                d["segmentation"] = _segmentation_out(a.segmentation)
            if a.area is not None:
                d["area"] = float(a.area)
            elif a.segmentation is not None and a.image_id in size_of:
                d["area"] = _mask_area(a.segmentation, *size_of[a.image_id])
            else:
                d["area"] = float(box_area[j])
            if a.keypoints is not None:
                kp = np.asarray(a.keypoints, dtype=np.float64).reshape(-1, 3)
                xy = np.round(kp[:, :2], 4)
                v = kp[:, 2].astype(np.int64)
                flat: list = np.concatenate([xy, v[:, None]], axis=1).ravel().tolist()
                flat[2::3] = [int(x) for x in v]
                d["keypoints"] = flat
                d["num_keypoints"] = int((v > 0).sum())
            for k, val in a.extra.items():
                if k not in d:
                    d[k] = val
            out_anns.append(d)
    return {
        "info": info if info is not None else {"description": f"written by sceneparse {__version__}"
                                                              + (f" from {aset.source}" if aset.source else "")},
        "images": images,
        "annotations": out_anns,
        "categories": cmap.to_coco(),
    }


def write_coco(aset: AnnotationSet, path: str | Path, *, indent: int | None = None) -> WriteResult:
    """Write ``aset`` as COCO JSON, atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    data = to_coco_dict(aset)
    # json.dumps (one shot) runs the C encoder; json.dump to a file would run the pure-Python one
    text = json.dumps(data, default=_json_default, indent=indent, separators=None if indent else (",", ":"))
    with atomic_open(path, "w", durable=True) as f:
        f.write(text)
    return WriteResult(files=[path], images=len(data["images"]), objects=len(data["annotations"]))
