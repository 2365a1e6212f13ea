"""COCO object-detection / instance-segmentation / person-keypoint JSON.

Reading converts once, at the boundary: COCO's top-left ``XYWH`` boxes become ``XYXY`` absolute
pixels (``float32``), category ids become contiguous labels through the set's
:class:`~sceneparse.conventions.CategoryMap`, and keypoints become ``float32 [K, 3]``. Segmentations
stay as COCO wrote them (polygons, compressed RLE with ``counts: str``, or uncompressed RLE with
``counts: list[int]``) until a dataset decodes them. Writing undoes each step; unknown keys of
images and annotations travel in ``extra`` and are written back.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...conventions import BoxFormat, Category, CategoryMap
from ...errors import DataError, Problem
from ...structures import boxes as box_ops
from ...structures import masks as mask_ops
from ...structures.keypoints import COCO_KEYPOINT_NAMES, COCO_OKS_SIGMAS, COCO_PERSON, COCO_SKELETON, KeypointSet
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


def parse_categories(raw: Any, file: str, ck: Checker) -> CategoryMap:
    """COCO ``categories`` -> :class:`CategoryMap` (sorted by id). Duplicate ids are a problem
    (lenient: the later entry is dropped)."""
    if not isinstance(raw, list):
        fail(file, None, "categories", "missing or not a list", type(raw).__name__)
    cats: dict[int, Category] = {}
    for i, c in enumerate(raw):
        rec = f"category #{i}"
        if not isinstance(c, dict):
            fail(file, rec, None, f"expected an object, got {type(c).__name__}", c)
        cid = get_int(c, "id", file, rec)
        rec = f"category {cid}"
        name = get_str(c, "name", file, rec, default=str(cid))
        kps = get_list(c, "keypoints", file, rec, default=[]) or []
        if not all(isinstance(k, str) for k in kps):
            fail(file, rec, "keypoints", "expected a list of keypoint names", kps)
        skel = get_list(c, "skeleton", file, rec, default=[]) or []
        for e in skel:
            numbers(e, file, rec, "skeleton", length=2)
        color = c.get("color")
        if color is not None:
            numbers(color, file, rec, "color", length=3)
        isthing = c.get("isthing", 1)
        if isinstance(isthing, bool) or isthing not in (0, 1):
            fail(file, rec, "isthing", "expected 0 or 1", isthing)
        if cid in cats:
            ck.flag(file, rec, "id", "duplicate category id", cid, repaired="dropped this category entry")
            continue
        cats[cid] = Category(
            id=cid, name=name, isthing=bool(isthing), supercategory=str(c.get("supercategory", "") or ""),
            color=tuple(int(v) for v in color) if color is not None else None,
            keypoints=tuple(kps), skeleton=tuple((int(a), int(b)) for a, b in skel),
        )
    return CategoryMap.from_categories(cats.values())


def keypoint_set_of(cmap: CategoryMap, file: str) -> KeypointSet | None:
    """The keypoint layout given by the categories' ``keypoints`` / ``skeleton`` (COCO's 17 person
    keypoints -> :data:`~sceneparse.structures.keypoints.COCO_PERSON`). One layout per set."""
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


def parse_images(raw: Any, file: str) -> tuple[list[ImageRecord], list[Origin]]:
    if not isinstance(raw, list):
        fail(file, None, "images", "missing or not a list", type(raw).__name__)
    images, origins = [], []
    for i, im in enumerate(raw):
        if not isinstance(im, dict):
            fail(file, f"image #{i}", None, f"expected an object, got {type(im).__name__}", im)
        iid = get_int(im, "id", file, f"image #{i}")
        rec = f"image {iid}"
        images.append(ImageRecord(
            id=iid, file_name=get_str(im, "file_name", file, rec),
            height=get_int(im, "height", file, rec), width=get_int(im, "width", file, rec),
            extra={k: v for k, v in im.items() if k not in _IMAGE_KEYS},
        ))
        origins.append(Origin(file, rec))
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
        return {"size": [int(size[0]), int(size[1])], "counts": counts}
    fail(file, rec, "segmentation", f"expected polygons (list) or RLE (object), got {type(seg).__name__}", seg)


def parse_annotations(raw: Any, cmap: CategoryMap, file: str, ck: Checker) -> tuple[list[ObjectRecord], list[Origin]]:
    """COCO ``annotations`` -> object records. Boxes are converted in one vectorised step."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        fail(file, None, "annotations", "not a list", type(raw).__name__)
    records: list[ObjectRecord] = []
    origins: list[Origin] = []
    bboxes: list[list] = []
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            fail(file, f"annotation #{i}", None, f"expected an object, got {type(a).__name__}", a)
        aid, image_id, cid = a.get("id"), a.get("image_id"), a.get("category_id")
        if type(aid) is not int:  # fast path for well-formed files; get_int explains the others
            aid = get_int(a, "id", file, f"annotation #{i}")
        rec = f"annotation {aid}"
        if type(image_id) is not int:
            image_id = get_int(a, "image_id", file, rec)
        if type(cid) is not int:
            cid = get_int(a, "category_id", file, rec)
        bbox = numbers(get_list(a, "bbox", file, rec), file, rec, "bbox", length=4)
        seg = check_segmentation(a["segmentation"], file, rec) if "segmentation" in a else None
        area = get_number(a, "area", file, rec, default=None)
        iscrowd = a.get("iscrowd", 0)
        if isinstance(iscrowd, bool) or iscrowd not in (0, 1):
            fail(file, rec, "iscrowd", "expected 0 or 1", iscrowd)
        kps = None
        if a.get("keypoints"):  # absent, null or [] -> no keypoints
            flat = np.asarray(numbers(a["keypoints"], file, rec, "keypoints"), dtype=np.float32)
            kps = flat.reshape(-1, 3) if flat.size % 3 == 0 else flat
        if not cmap.has_id(cid):
            ck.flag(file, rec, "category_id", "unknown category id", cid, repaired="dropped the annotation")
            continue
        records.append(ObjectRecord(
            id=aid, image_id=image_id, label=cmap.to_label(cid), bbox=None, iscrowd=bool(iscrowd), area=area,
            segmentation=seg, keypoints=kps, extra={k: v for k, v in a.items() if k not in _ANN_KEYS},
        ))
        origins.append(Origin(file, rec))
        bboxes.append(bbox)
    if records:
        xyxy = box_ops.convert(np.asarray(bboxes, dtype=np.float64), BoxFormat.XYWH, BoxFormat.XYXY).astype(np.float32)
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
    cmap = parse_categories(data.get("categories"), file, ck)
    kset = keypoint_set_of(cmap, file)
    images, image_origins = parse_images(data.get("images"), file)
    anns, origins = parse_annotations(data.get("annotations"), cmap, file, ck)
    aset = AnnotationSet(categories=cmap, images=images, annotations=anns,
                         image_root=Path(image_root) if image_root is not None else None,
                         keypoint_set=kset, source=file)
    validate_annotation_set(aset, checker=ck, check_images=check_images, image_origins=image_origins,
                            object_origins=origins, field_names=FIELD_NAMES)
    aset.problems = list(ck.problems)
    return aset


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
        xywh = np.round(box_ops.convert(xyxy, BoxFormat.XYXY, BoxFormat.XYWH), 4)
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
