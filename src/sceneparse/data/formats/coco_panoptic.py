"""COCO panoptic segmentation: a JSON file plus one PNG per image.

Each PNG encodes a segment id per pixel as ``id = R + 256 G + 256^2 B`` (0 = void); the JSON lists
each image's segments (``segments_info``: ``id``, ``category_id``, ``iscrowd``, ``area``, ``bbox`` in
COCO ``XYWH``) and the categories with ``isthing``. Reading keeps the JSON records
(:class:`~sceneparse.data.records.PanopticRecord`) and checks them; pixels are decoded on demand by
:func:`load_panoptic_map`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ... import __version__
from ...errors import DataError, FormatError, Problem
from ...structures.segmaps import PanopticMap, SegmentInfo, id2rgb, rgb2id
from ..records import AnnotationSet, PanopticRecord
from ._io import WriteResult, atomic_open, inside, output_path
from ._parse import fail, get_int, get_list, get_str, numbers
from .coco import FIELD_NAMES, _json_default, load_json, parse_categories, parse_images
from .validate import Checker, validate_annotation_set

_SEGMENT_KEYS = ("id", "category_id", "iscrowd", "area", "bbox")


def _parse_segment(s: Any, file: str, rec: str, k: int) -> dict:
    where = f"{rec} segments_info[{k}]"
    if not isinstance(s, dict):
        fail(file, where, None, f"expected an object, got {type(s).__name__}", s)
    out: dict[str, Any] = {"id": get_int(s, "id", file, where), "category_id": get_int(s, "category_id", file, where)}
    crowd = s.get("iscrowd", 0)
    if isinstance(crowd, bool) or crowd not in (0, 1):
        fail(file, where, "iscrowd", "expected 0 or 1", crowd)
    out["iscrowd"] = int(crowd)
    if "area" in s:
        out["area"] = get_int(s, "area", file, where)
    if "bbox" in s:
        out["bbox"] = [float(v) for v in numbers(s["bbox"], file, where, "bbox", length=4)]
    out.update({key: v for key, v in s.items() if key not in _SEGMENT_KEYS})
    return out


def _read_png_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("RGB", "RGBA"):
            fail(str(path), None, None, f"panoptic PNG must be RGB (COCO id encoding), got mode {im.mode}")
        return np.asarray(im.convert("RGB"))


def read_coco_panoptic(json_path: str | Path, png_root: str | Path, image_root: str | Path | None = None, *,
                       strict: bool = False, check_images: bool = False) -> AnnotationSet:
    """Read a COCO panoptic JSON file whose PNGs live in ``png_root``.

    Fills ``panoptic`` (one :class:`PanopticRecord` per annotated image), ``panoptic_root`` and the
    categories (with ``isthing``); ``annotations`` stays empty (objects live in the PNGs; see
    :func:`load_panoptic_map`).

    Checks (lenient repair in brackets): panoptic annotation of an unknown image [dropped], a second
    annotation of one image [dropped], segment id 0 or a repeated segment id [segment entry
    dropped], unknown category id [the image's panoptic annotation dropped, since its pixels would
    have no category], PNG missing [annotation dropped]. With ``check_images``, each PNG is decoded:
    size must equal the image's, every non-zero id in the PNG must have a segment [annotation
    dropped], every segment must have pixels [segment entry dropped]; images are decoded too.
    """
    json_path, png_root = Path(json_path), Path(png_root)
    file = str(json_path)
    data = load_json(json_path)
    ck = Checker(strict)
    cmap = parse_categories(data.get("categories"), file, ck)
    images, image_origins = parse_images(data.get("images"), file)
    aset = AnnotationSet(categories=cmap, images=images, image_root=Path(image_root) if image_root else None,
                         panoptic_root=png_root, source=file)
    validate_annotation_set(aset, checker=ck, check_images=check_images, image_origins=image_origins,
                            object_origins=[], field_names=FIELD_NAMES)
    size_of = {im.id: (im.height, im.width) for im in aset.images}

    raw = data.get("annotations")
    if not isinstance(raw, list):
        fail(file, None, "annotations", "missing or not a list", type(raw).__name__)
    panoptic: dict[int, PanopticRecord] = {}
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            fail(file, f"annotation #{i}", None, f"expected an object, got {type(a).__name__}", a)
        image_id = get_int(a, "image_id", file, f"annotation #{i}")
        rec = f"annotation of image {image_id}"
        fname = get_str(a, "file_name", file, rec)
        segs = [_parse_segment(s, file, rec, k) for k, s in enumerate(get_list(a, "segments_info", file, rec))]
        if image_id not in size_of:
            ck.flag(file, rec, "image_id", "unknown image id (or image dropped)", image_id,
                    repaired="dropped the panoptic annotation")
            continue
        if image_id in panoptic:
            ck.flag(file, rec, "image_id", "second panoptic annotation of this image", image_id,
                    repaired="dropped the later annotation")
            continue
        kept, seen, drop_record = [], set(), False
        for k, s in enumerate(segs):
            where = f"{rec} segments_info[{k}]"
            if s["id"] == 0:
                ck.flag(file, where, "id", "segment id 0 is reserved for void", 0, repaired="dropped the segment entry")
            elif s["id"] in seen:
                ck.flag(file, where, "id", "duplicate segment id in this image", s["id"],
                        repaired="dropped the later segment entry")
            elif not cmap.has_id(s["category_id"]):
                ck.flag(file, where, "category_id", "unknown category id", s["category_id"],
                        repaired="dropped the panoptic annotation of this image")
                drop_record = True
                break
            else:
                seen.add(s["id"])
                kept.append(s)
        if drop_record:
            continue
        if inside(png_root, fname) is None:  # "../x.png", "/etc/x.png": the PNG must be in its folder
            ck.flag(file, rec, "file_name", f"PNG name leads outside the panoptic PNG folder {png_root}", fname,
                    repaired="dropped the panoptic annotation")
            continue
        png = png_root / fname
        if not png.is_file():
            ck.flag(file, rec, "file_name", f"panoptic PNG not found: {png}", fname,
                    repaired="dropped the panoptic annotation")
            continue
        if check_images:
            try:
                ids = rgb2id(_read_png_rgb(png))
            except FormatError:
                raise
            except Exception as e:
                ck.flag(file, rec, "file_name", f"unreadable panoptic PNG {png}: {type(e).__name__}: {e}", fname,
                        repaired="dropped the panoptic annotation")
                continue
            if ids.shape != size_of[image_id]:
                ck.flag(file, rec, "file_name", f"panoptic PNG is {ids.shape[0]}x{ids.shape[1]} (HxW) but the image is "
                        f"{size_of[image_id][0]}x{size_of[image_id][1]}", fname,
                        repaired="dropped the panoptic annotation")
                continue
            present = np.unique(ids)
            present = present[present != 0]
            listed = np.asarray(sorted(seen), dtype=np.int64)
            orphan = np.setdiff1d(present, listed)
            if orphan.size:
                ck.flag(file, rec, "segments_info", "segment ids in the PNG without a segments_info entry",
                        orphan.tolist()[:20], repaired="dropped the panoptic annotation")
                continue
            empty = set(np.setdiff1d(listed, present).tolist())
            for k, s in enumerate(kept):
                if s["id"] in empty:
                    ck.flag(file, f"{rec} segment {s['id']}", "id", "segment has no pixels in the PNG", s["id"],
                            repaired="dropped the segment entry")
            kept = [s for s in kept if s["id"] not in empty]
        panoptic[image_id] = PanopticRecord(image_id=image_id, file_name=fname, segments_info=kept)
    aset.panoptic = panoptic
    aset.problems = list(ck.problems)
    return aset


def load_panoptic_map(aset: AnnotationSet, image_id: int) -> PanopticMap:
    """Decode the panoptic PNG of one image into a :class:`PanopticMap` (``ids int64 [H, W]``, one
    :class:`SegmentInfo` per segment with its contiguous ``label`` and ``isthing``).

    Raises :class:`DataError` when the image has no panoptic record, the PNG size differs from the
    image record, or the PNG holds ids without a segment entry; :class:`FormatError` when the PNG is
    not RGB."""
    rec = aset.panoptic.get(int(image_id))
    if rec is None:
        raise DataError(Problem(aset.source or None, f"image {image_id}", "panoptic", "image has no panoptic annotation"))
    if aset.panoptic_root is None:
        raise DataError(Problem(aset.source or None, f"image {image_id}", "panoptic_root", "the set has no panoptic_root"))
    if inside(aset.panoptic_root, rec.file_name) is None:
        raise DataError(Problem(aset.source or None, f"image {image_id}", "file_name",
                                f"PNG name leads outside the panoptic PNG folder {aset.panoptic_root}", rec.file_name))
    png = Path(aset.panoptic_root) / rec.file_name
    if not png.is_file():
        raise DataError(Problem(str(png), f"image {image_id}", "file_name", "panoptic PNG not found"))
    ids = rgb2id(_read_png_rgb(png))
    image = next((im for im in aset.images if im.id == int(image_id)), None)
    if image is not None and ids.shape != (image.height, image.width):
        raise DataError(Problem(str(png), f"image {image_id}", "size",
                                f"PNG is {ids.shape[0]}x{ids.shape[1]} (HxW), image record {image.height}x{image.width}"))
    seg_ids = np.asarray([s["id"] for s in rec.segments_info], dtype=np.int64)
    present, counts = np.unique(ids, return_counts=True)
    orphan = np.setdiff1d(present[present != 0], seg_ids)
    if orphan.size:
        raise DataError(Problem(str(png), f"image {image_id}", "segments_info",
                                "segment ids in the PNG without a segments_info entry", orphan.tolist()[:20]))
    count_of = dict(zip(present.tolist(), counts.tolist()))
    cmap = aset.categories
    segments = []
    for s in rec.segments_info:
        cid = int(s["category_id"])
        label = cmap.to_label(cid)
        segments.append(SegmentInfo(
            id=int(s["id"]), category_id=cid, label=label, isthing=cmap.categories[label].isthing,
            iscrowd=bool(s.get("iscrowd", 0)), area=int(s.get("area", count_of.get(int(s["id"]), 0))),
            bbox=tuple(s["bbox"]) if "bbox" in s else None,
        ))
    return PanopticMap(ids, segments)


def segments_from_map(pmap: PanopticMap, categories) -> list[dict]:
    """COCO ``segments_info`` of a :class:`PanopticMap`: ``area`` (pixel count) and ``bbox`` (COCO
    ``XYWH``, pixel-edge convention) measured on the id map in one pass (``scipy.ndimage``);
    ``category_id`` from the segment's ``label`` through ``categories`` when set, else its own."""
    from scipy import ndimage

    ids = pmap.ids.cpu().numpy()
    seg_ids = np.asarray([s.id for s in pmap.segments], dtype=np.int64)
    out = []
    if seg_ids.size == 0:
        return out
    order = np.argsort(seg_ids)
    sorted_ids = seg_ids[order]
    pos = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
    dense = np.where(sorted_ids[pos] == ids, pos + 1, 0)  # 1..S in sorted-id order, 0 = void / unknown
    areas = np.bincount(dense.ravel(), minlength=len(sorted_ids) + 1)[1:]
    slices = ndimage.find_objects(dense, max_label=len(sorted_ids))
    for rank, s in zip(np.argsort(order), pmap.segments):
        sl = slices[rank]
        bbox = [0.0, 0.0, 0.0, 0.0] if sl is None else \
            [float(sl[1].start), float(sl[0].start), float(sl[1].stop - sl[1].start), float(sl[0].stop - sl[0].start)]
        cid = categories.to_id(s.label) if s.label is not None and s.label >= 0 else int(s.category_id)
        d = {"id": int(s.id), "category_id": int(cid), "iscrowd": int(s.iscrowd), "area": int(areas[rank]), "bbox": bbox}
        if s.score is not None:
            d["score"] = float(s.score)
        out.append(d)
    return out


def write_panoptic_png(path: str | Path, pmap: PanopticMap) -> Path:
    """Write the id map of ``pmap`` as a COCO panoptic RGB PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_open(path, "wb") as f:
        Image.fromarray(id2rgb(pmap.ids.cpu().numpy())).save(f, format="PNG")
    return path


def _png_name(file_name: str) -> str:
    """The panoptic PNG name of an image: its file name with ``.png`` (``Path.with_suffix`` refuses
    names such as ``..``; those come back unchanged, for :func:`output_path` to refuse)."""
    try:
        return Path(file_name).with_suffix(".png").as_posix()
    except ValueError:
        return file_name


def write_coco_panoptic(aset: AnnotationSet, json_path: str | Path, png_root: str | Path | None = None, *,
                        maps: Mapping[int, PanopticMap] | None = None) -> WriteResult:
    """Write COCO panoptic JSON (atomically) and, where needed, the PNGs.

    * ``maps`` given (e.g. predictions): each map is written to ``png_root/<image stem>.png`` and its
      segments (area and bbox measured on the map) become that image's ``segments_info``.
    * otherwise the set's records are written; their PNGs are copied from ``aset.panoptic_root`` to
      ``png_root`` when that is a different folder.

    A file name that would put a PNG outside ``png_root`` (absolute, or climbing out with ``..``) is a
    :class:`DataError` naming the record, raised before anything is written.
    """
    json_path = Path(json_path)
    result = WriteResult()
    if maps is not None and png_root is None:
        raise ValueError("png_root is required when maps are given")
    png_root = Path(png_root) if png_root is not None else None
    annotations = []
    images_by_id = {im.id: im for im in aset.images}
    if maps is not None:
        dsts, problems = {}, []
        for image_id in maps:  # every name checked before anything is written
            im = images_by_id.get(int(image_id))
            if im is None:
                raise DataError(Problem(str(json_path), f"image {image_id}", "image_id", "map for an image not in the set"))
            try:
                dsts[image_id] = output_path(png_root, _png_name(im.file_name), file=aset.source or None,
                                             record=f"image {im.id}")
            except DataError as e:
                problems.extend(e.problems)
        if problems:
            raise DataError(problems)
        for image_id, pmap in maps.items():
            dst = dsts[image_id]
            fname = dst.relative_to(png_root).as_posix()
            result.files.append(write_panoptic_png(dst, pmap))
            annotations.append({"image_id": int(image_id), "file_name": fname,
                                "segments_info": segments_from_map(pmap, aset.categories)})
    else:
        same = png_root is None or (aset.panoptic_root is not None
                                    and Path(png_root).resolve() == Path(aset.panoptic_root).resolve())
        targets = {}
        if not same:  # every name checked before anything is written
            problems = []
            for image_id, rec in aset.panoptic.items():
                try:
                    targets[image_id] = output_path(png_root, rec.file_name, file=aset.source or None,
                                                    record=f"panoptic annotation of image {image_id}")
                    if inside(aset.panoptic_root, rec.file_name) is None:
                        raise DataError(Problem(aset.source or None, f"panoptic annotation of image {image_id}",
                                                "file_name", "PNG name leads outside the panoptic PNG folder "
                                                f"{aset.panoptic_root}", rec.file_name))
                except DataError as e:
                    problems.extend(e.problems)
            if problems:
                raise DataError(problems)
        for image_id, rec in aset.panoptic.items():
            if not same:
                src = Path(aset.panoptic_root) / rec.file_name
                dst = targets[image_id]
                with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                result.files.append(dst)
            annotations.append({"image_id": int(image_id), "file_name": rec.file_name,
                                "segments_info": [dict(s) for s in rec.segments_info]})
    data = {
        "info": {"description": f"written by sceneparse {__version__}"},
        "images": [{"id": int(im.id), "file_name": im.file_name, "height": int(im.height), "width": int(im.width),
                    **im.extra} for im in aset.images],
        "annotations": annotations,
        "categories": aset.categories.to_coco(),
    }
    text = json.dumps(data, default=_json_default, separators=(",", ":"))
    with atomic_open(json_path, "w", durable=True) as f:
        f.write(text)
    result.files.insert(0, json_path)
    result.images = len(data["images"])
    result.objects = sum(len(a["segments_info"]) for a in annotations)
    return result
