"""YOLO (Darknet / Ultralytics) text labels: one ``.txt`` per image, one object per line, all
coordinates normalised by the image width / height.

* ``detect``:  ``cls cx cy w h`` (box centre and size, :attr:`BoxFormat.CXCYWH`)
* ``segment``: ``cls x1 y1 x2 y2 ...`` (one polygon ring; the box is its tight bounds)
* ``pose``:    ``cls cx cy w h x1 y1 v1 ... xK yK vK`` (or ``x y`` pairs when ``kpt_shape = [K, 2]``)

Class names (and, for pose, ``kpt_shape`` / ``flip_idx``) live in a ``data.yaml``. The writer adds
``category_ids`` (the dataset ids of the classes) and ``kpt_names`` / ``skeleton`` so that a COCO set
converted to YOLO and back keeps its ids and keypoint layout; other tools ignore these keys.

Labels live in ``labels/<path of the image relative to images/ with .txt>``; an image without a
label file has no objects. Image sizes are read from the image headers (PIL, no decoding), with
EXIF orientation applied (the size the image is displayed and loaded at).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import yaml
from tqdm import tqdm

from ...conventions import BoxFormat, CategoryMap
from ...errors import DataError, Problem
from ...structures import boxes as box_ops
from ...structures import masks as mask_ops
from ...structures.keypoints import COCO_KEYPOINT_NAMES, COCO_PERSON, KeypointSet
from ..records import AnnotationSet, ImageRecord, ObjectRecord
from ._io import WriteResult, atomic_open, atomic_write_text, categories_from_names, ids_from_stems, image_size, \
    list_images, output_path
from ._parse import fail
from .validate import Checker, Origin, validate_annotation_set

Task = Literal["detect", "segment", "pose"]
TASKS = ("detect", "segment", "pose")
FIELD_NAMES = {"bbox": "box", "category": "class", "segmentation": "polygon", "file_name": "image"}


@dataclass
class YoloMeta:
    """What a YOLO ``data.yaml`` says about the classes and keypoints."""

    names: list[str]
    category_ids: list[int] | None = None  # sceneparse extension: dataset ids in label order
    kpt_shape: tuple[int, int] | None = None  # (K, 2 or 3)
    flip_idx: list[int] | None = None
    kpt_names: list[str] | None = None  # sceneparse extension
    skeleton: list[tuple[int, int]] = field(default_factory=list)  # sceneparse extension, 0-based
    images: Path | None = None  # the image folder data.yaml's ``train`` names (resolved), if it names one

    def categories(self) -> CategoryMap:
        return categories_from_names(self.names, self.category_ids)

    def keypoint_set(self) -> KeypointSet | None:
        """Layout from ``kpt_names`` / ``flip_idx`` / ``skeleton``; 17 unnamed keypoints are COCO's."""
        if self.kpt_shape is None:
            return None
        k = self.kpt_shape[0]
        names = tuple(self.kpt_names or (COCO_KEYPOINT_NAMES if k == 17 else [f"kp{i}" for i in range(k)]))
        if names == COCO_KEYPOINT_NAMES:  # COCO's layout, with the file's skeleton / flips if it gives them
            ks = KeypointSet(names, tuple(self.skeleton) or COCO_PERSON.skeleton,
                             tuple(self.flip_idx) if self.flip_idx is not None else COCO_PERSON.flip_index,
                             COCO_PERSON.sigmas)
            return COCO_PERSON if ks == COCO_PERSON else ks
        ks = KeypointSet.from_names(names, self.skeleton)
        if self.flip_idx is not None:
            ks = KeypointSet(ks.names, ks.skeleton, tuple(self.flip_idx), ks.sigmas)
        return ks


def read_data_yaml(path: str | Path) -> YoloMeta:
    """Parse a YOLO ``data.yaml`` (``names`` as a list or ``{index: name}``; ``kpt_shape``, ``flip_idx``)."""
    path = Path(path)
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(file, None, None, "file not found")
    except yaml.YAMLError as e:
        fail(file, None, None, f"invalid YAML: {e}")
    if not isinstance(data, dict):
        fail(file, None, None, "top level must be a mapping")
    meta = _meta_from(data, file)
    meta.images = _train_images(data, path)
    return meta


def _train_images(data: Mapping, yaml_path: Path) -> Path | None:
    """The folder of ``train`` (Ultralytics: relative to ``path``, which is relative to the yaml's
    folder), when it is one string."""
    train = data.get("train")
    if not isinstance(train, str) or not train:
        return None
    base = data.get("path")
    root = yaml_path.parent / base if isinstance(base, str) and base else yaml_path.parent
    return root / train


def _meta_from(data: Mapping, file: str | None) -> YoloMeta:
    names = _names_list(data.get("names"), file)
    if "nc" in data and data["nc"] != len(names):
        fail(file, None, "nc", f"nc={data['nc']} but {len(names)} names", data["nc"])
    ids = data.get("category_ids")
    if ids is not None and (not isinstance(ids, list) or len(ids) != len(names)
                            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        fail(file, None, "category_ids", f"expected {len(names)} integers", ids)
    kshape = data.get("kpt_shape")
    if kshape is not None:
        if not (isinstance(kshape, list) and len(kshape) == 2 and all(isinstance(v, int) for v in kshape)
                and kshape[0] > 0 and kshape[1] in (2, 3)):
            fail(file, None, "kpt_shape", "expected [K, 2] or [K, 3]", kshape)
        kshape = (kshape[0], kshape[1])
    flip = data.get("flip_idx")
    if flip is not None and (kshape is None or not isinstance(flip, list) or sorted(flip) != list(range(kshape[0]))):
        fail(file, None, "flip_idx", "expected a permutation of 0..K-1", flip)
    kn = data.get("kpt_names")
    if kn is not None:
        if isinstance(kn, dict):  # some data.yaml files give {class: [names]}; one layout is supported
            kn = next(iter(kn.values()), None)
        if kshape is None or not isinstance(kn, list) or len(kn) != kshape[0]:
            fail(file, None, "kpt_names", f"expected {kshape[0] if kshape else 'K'} names", kn)
        kn = [str(n) for n in kn]
    sk = data.get("skeleton") or []
    if not isinstance(sk, list) or not all(isinstance(e, list) and len(e) == 2 for e in sk):
        fail(file, None, "skeleton", "expected a list of [a, b] pairs", sk)
    return YoloMeta(names, ids, kshape, flip, kn, [(int(a), int(b)) for a, b in sk])


def _names_list(names, file: str | None) -> list[str]:
    if isinstance(names, Mapping):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            fail(file, None, "names", "class indices must be 0..C-1", keys)
        return [str(names[k]) for k in keys]
    if isinstance(names, (list, tuple)) and names:
        return [str(n) for n in names]
    fail(file, None, "names", "expected a non-empty list or {index: name} mapping", names)


def _denorm_rows(file: str, lines: list[tuple[int, list[float]]], width: int, height: int, task: str,
                 meta_k: tuple[int, int] | None, ck: Checker):
    """Parsed numeric rows of one label file -> (line, class, box XYXY px, polygon or None, keypoints or None)."""
    out = []
    if not lines:
        return out
    scale = np.asarray([width, height], dtype=np.float64)
    if task == "detect":
        arr = np.asarray([v for _, v in lines], dtype=np.float64)
        boxes = box_ops.convert(box_ops.denormalize(arr[:, 1:5], (height, width)), BoxFormat.CXCYWH, BoxFormat.XYXY)
        for (ln, v), b in zip(lines, boxes):
            out.append((ln, int(v[0]), b, None, None))
        return out
    for ln, v in lines:
        if task == "segment":
            pts = np.asarray(v[1:], dtype=np.float64).reshape(-1, 2) * scale
            if len(pts) < 3:
                ck.flag(file, f"line {ln}", "polygon", f"polygon with fewer than 3 points ({len(pts)})",
                        [round(x, 6) for x in v[1:]], repaired="dropped the object")
                continue
            box = np.concatenate([pts.min(0), pts.max(0)])
            out.append((ln, int(v[0]), box, [np.round(pts, 4).ravel().tolist()], None))
        else:
            box = box_ops.convert(box_ops.denormalize(np.asarray(v[1:5], dtype=np.float64), (height, width)),
                                  BoxFormat.CXCYWH, BoxFormat.XYXY)
            flat = np.asarray(v[5:], dtype=np.float64)
            k, d = meta_k
            if flat.size == k * d:
                kp = flat.reshape(k, d)
                xy = kp[:, :2] * scale
                vis = kp[:, 2] if d == 3 else np.where((kp[:, 0] != 0) | (kp[:, 1] != 0), 2.0, 0.0)
                kps = np.concatenate([xy, vis[:, None]], axis=1).astype(np.float32)
            else:
                kps = flat.astype(np.float32)  # wrong length: validation reports and repairs it
            out.append((ln, int(v[0]), box, None, kps))
    return out


def _parse_label_file(path: Path, task: str, meta_k: tuple[int, int] | None) -> list[tuple[int, list[float]]]:
    """Numeric rows of one label file with their 1-based line numbers; wrong token counts and
    non-numbers raise :class:`FormatError`."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        fail(file, None, None, f"cannot read label file: {e}")
    rows = []
    for ln, line in enumerate(text.splitlines(), 1):
        toks = line.split()
        if not toks:
            continue
        try:
            v = [float(t) for t in toks]
        except ValueError:
            bad = next(t for t in toks if not _is_float(t))
            fail(file, f"line {ln}", "value", "not a number", bad)
        if not v[0].is_integer() or v[0] < 0:
            fail(file, f"line {ln}", "class", "class index must be a non-negative integer", toks[0])
        n = len(v)
        if task == "detect" and n != 5:
            fail(file, f"line {ln}", None, f"expected 5 values 'cls cx cy w h' for task=detect, got {n}"
                 + (" (a segment or pose file? pass task=...)" if n > 5 else ""), line.strip())
        if task == "segment" and (n - 1) % 2:
            fail(file, f"line {ln}", "polygon", f"odd number of polygon coordinates ({n - 1})", line.strip())
        if task == "pose" and n < 5:
            fail(file, f"line {ln}", "box", f"expected 'cls cx cy w h' then keypoints, got {n} values", line.strip())
        rows.append((ln, v))
    return rows


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def default_labels_dir(images_dir: Path) -> Path:
    """Ultralytics' rule: the last ``images`` path component becomes ``labels``."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir.parent / "labels"


def read_yolo(images_dir: str | Path, labels_dir: str | Path | None = None,
              names: Sequence[str] | Mapping[int, str] | str | Path | None = None, task: Task = "detect", *,
              strict: bool = False, check_images: bool = False, keypoint_set: KeypointSet | None = None,
              progress: bool = False) -> AnnotationSet:
    """Read YOLO labels.

    Args:
        images_dir: folder of images (searched recursively); image sizes come from their headers.
        labels_dir: folder of ``.txt`` labels mirroring ``images_dir`` (default: Ultralytics' rule,
            ``.../images/...`` -> ``.../labels/...``).
        names: class names (list or ``{index: name}``) or the path of a ``data.yaml`` (which can also
            give ``category_ids``, ``kpt_shape``, ``flip_idx``, ``kpt_names``, ``skeleton``).
        task: ``"detect"``, ``"segment"`` or ``"pose"``.
        keypoint_set: the keypoint layout for ``pose`` when no data.yaml gives ``kpt_shape``.
        strict / check_images: see :func:`~sceneparse.data.formats.validate.validate_annotation_set`.

    Image ids come from the file stems when all are distinct numbers, else ``1..N`` in sorted path
    order; object ids are ``1..M`` in reading order. Label files without an image and class indices
    outside ``0..C-1`` are problems (lenient: ignored / dropped, and listed).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        fail(str(images_dir), None, None, "images folder not found")
    labels_dir = Path(labels_dir) if labels_dir is not None else default_labels_dir(images_dir)
    if names is None:
        fail(None, None, "names", "class names are required (a list, a mapping or a data.yaml path)")
    if isinstance(names, (str, Path)):
        meta = read_data_yaml(names)
    else:
        meta = YoloMeta(_names_list(names, None))
    src = str(names) if isinstance(names, (str, Path)) else None
    try:
        cmap = meta.categories()
        kset = keypoint_set if keypoint_set is not None else meta.keypoint_set()
    except ValueError as e:  # duplicate names, skeleton edges out of range, ...
        fail(src, None, "names/keypoints", str(e))
    kshape = None
    if task == "pose":
        if kset is None:
            fail(src, None, "kpt_shape",
                 "task=pose needs kpt_shape in data.yaml or a keypoint_set")
        kshape = meta.kpt_shape or (kset.num_keypoints, 3)
        if kshape[0] != kset.num_keypoints:
            fail(None, None, "kpt_shape", f"kpt_shape {list(kshape)} does not fit the keypoint set of "
                 f"{kset.num_keypoints}", list(kshape))

    ck = Checker(strict)
    rels = list_images(images_dir)
    ids = ids_from_stems([r.stem for r in rels])
    images, image_origins, objects, origins = [], [], [], []
    next_id = 1
    used_labels = set()
    for rel, iid in tqdm(list(zip(rels, ids)), desc="reading YOLO labels", disable=not progress):
        img_path = images_dir / rel
        try:
            h, w = image_size(img_path)
        except Exception as e:
            ck.flag(str(img_path), f"image {iid}", "image", f"unreadable image: {type(e).__name__}: {e}",
                    rel.as_posix(), repaired="dropped the image and its label file")
            used_labels.add((labels_dir / rel).with_suffix(".txt"))
            continue
        images.append(ImageRecord(id=iid, file_name=rel.as_posix(), height=h, width=w))
        image_origins.append(Origin(str(img_path), f"image {iid}"))
        lab = (labels_dir / rel).with_suffix(".txt")
        used_labels.add(lab)
        if not lab.is_file():
            continue
        rows = _parse_label_file(lab, task, kshape)
        for ln, cls, box, poly, kps in _denorm_rows(str(lab), rows, w, h, task, kshape, ck):
            if cls >= len(cmap):
                ck.flag(str(lab), f"line {ln}", "class", f"unknown class index (known: 0..{len(cmap) - 1})", cls,
                        repaired="dropped the object")
                continue
            objects.append(ObjectRecord(id=next_id, image_id=iid, label=cls, bbox=np.asarray(box, dtype=np.float32),
                                        segmentation=poly, keypoints=kps))
            origins.append(Origin(str(lab), f"line {ln}"))
            next_id += 1
    if labels_dir.is_dir():
        for lab in sorted(labels_dir.rglob("*.txt")):
            if lab not in used_labels and not (lab.parent == labels_dir and lab.name == "classes.txt"):
                ck.flag(str(lab), None, None, "label file without an image in " + str(images_dir), None,
                        repaired="ignored the label file")
    aset = AnnotationSet(categories=cmap, images=images, annotations=objects, image_root=images_dir,
                         keypoint_set=kset if task == "pose" else None, source=str(labels_dir))
    validate_annotation_set(aset, checker=ck, check_images=check_images, image_origins=image_origins,
                            object_origins=origins, field_names=FIELD_NAMES)
    aset.problems = list(ck.problems)
    return aset


def merge_rings(rings: Sequence[np.ndarray]) -> np.ndarray:
    """Join several polygon rings (``[P_i, 2]``) into one ring for formats with one polygon per object.

    Each further ring is attached at its vertex closest to the ring built so far, through a
    zero-width bridge walked there and back; the rasterised area is the union of the rings."""
    out = np.asarray(rings[0], dtype=np.float64)
    for r in rings[1:]:
        r = np.asarray(r, dtype=np.float64)
        d = ((out[:, None, :] - r[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        r = np.roll(r, -j, axis=0)
        out = np.concatenate([out[: i + 1], r, r[:1], out[i:]])
    return out


def _fmt(v: float) -> str:
    s = f"{v:.8f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _line(values) -> str:
    return " ".join(_fmt(v) for v in values)


def yolo_lines(aset: AnnotationSet, image: ImageRecord, task: Task, label_file: str,
               lost: list[Problem]) -> list[str]:
    """The label lines of one image. Objects the task cannot express go to ``lost``."""
    objs = [o for o in aset.annotations_of(image.id)]
    h, w = image.height, image.width
    keep = []
    for o in objs:
        if o.iscrowd:
            lost.append(Problem(label_file, f"annotation {o.id}", "iscrowd", "YOLO has no crowd regions",
                                repaired="not written"))
        elif task == "segment" and o.segmentation is None:
            lost.append(Problem(label_file, f"annotation {o.id}", "segmentation",
                                "task=segment needs a mask; the object has none", repaired="not written"))
        else:
            keep.append(o)
    if not keep:
        return []
    xyxy = np.round(np.stack([np.asarray(o.bbox, dtype=np.float64) for o in keep]), 4)
    finite = np.isfinite(xyxy).all(axis=1)
    if not finite.all():  # readers drop these; never write 'nan' into a label file
        o = keep[int(np.flatnonzero(~finite)[0])]
        raise DataError(Problem(aset.source or None, f"annotation {o.id}", "bbox", "box with non-finite "
                                "coordinates (NaN or infinity)", np.asarray(o.bbox).tolist()))
    cxcywh = box_ops.normalize(box_ops.convert(xyxy, BoxFormat.XYXY, BoxFormat.CXCYWH), (h, w))
    scale = np.asarray([w, h], dtype=np.float64)
    lines = []
    for o, b in zip(keep, cxcywh):
        if task == "detect":
            lines.append(f"{o.label} {_line(b)}")
        elif task == "segment":
            seg = o.segmentation
            if isinstance(seg, dict):
                rings = mask_ops.mask_to_polygons(mask_ops.decode_rle(seg))
                lost.append(Problem(label_file, f"annotation {o.id}", "segmentation", "RLE mask written as polygon",
                                    repaired="traced the mask outline (approximate)"))
                if not rings:
                    lost.append(Problem(label_file, f"annotation {o.id}", "segmentation", "empty mask",
                                        repaired="not written"))
                    continue
            else:
                rings = seg
            ring = merge_rings([np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in rings])
            if not np.isfinite(ring).all():
                raise DataError(Problem(aset.source or None, f"annotation {o.id}", "segmentation",
                                        "polygon with non-finite coordinates (NaN or infinity)"))
            lines.append(f"{o.label} {_line((np.round(ring, 4) / scale).ravel())}")
        else:
            k = aset.keypoint_set.num_keypoints
            kp = np.zeros((k, 3)) if o.keypoints is None else np.asarray(o.keypoints, dtype=np.float64).reshape(k, 3)
            if not np.isfinite(kp).all():
                raise DataError(Problem(aset.source or None, f"annotation {o.id}", "keypoints",
                                        "keypoints with non-finite values (NaN or infinity)"))
            xy = np.round(kp[:, :2], 4) / scale
            vals = " ".join(f"{_fmt(x)} {_fmt(y)} {int(v)}" for (x, y), v in zip(xy, kp[:, 2]))
            lines.append(f"{o.label} {_line(b)} {vals}")
    return lines


def data_yaml(aset: AnnotationSet, out_dir: Path, task: Task, images: Path | str = "images") -> dict:
    """The ``data.yaml`` mapping for ``aset`` (Ultralytics keys plus sceneparse's ``category_ids``,
    ``kpt_names`` and ``skeleton``); ``train`` / ``val`` name ``images`` (relative to ``out_dir``, or
    absolute: the source image folder when the images are not copied)."""
    d: dict = {"path": str(out_dir.resolve()), "train": str(images), "val": str(images),
               "nc": len(aset.categories), "names": {i: n for i, n in enumerate(aset.categories.names)},
               "category_ids": list(aset.categories.ids)}
    if task == "pose":
        ks = aset.keypoint_set
        d["kpt_shape"] = [ks.num_keypoints, 3]
        d["flip_idx"] = list(ks.flip_index)
        d["kpt_names"] = list(ks.names)
        d["skeleton"] = [list(e) for e in ks.skeleton]
    return d


def _targets(aset: AnnotationSet, out_dir: Path, copy_images: bool) -> list[tuple[Path, Path, Path | None]]:
    """Per image ``(name inside images/, label file, source image or None)``, every name checked
    before anything is written: a ``file_name`` that would put a file outside ``out_dir`` (absolute,
    or climbing out with ``..``), two images with one label file, a missing source image (when
    copying or linking) -- each a problem naming its record, all raised together."""
    problems: list[Problem] = []
    out: list[tuple[Path, Path, Path | None]] = []
    seen: dict[Path, int] = {}
    images_dir, labels_dir = out_dir / "images", out_dir / "labels"
    for im in aset.images:
        rec = f"image {im.id}"
        try:
            rel = output_path(images_dir, im.file_name, file=aset.source or None, record=rec).relative_to(images_dir)
            lab = output_path(labels_dir, rel.with_suffix(".txt"), file=aset.source or None, record=rec)
        except (DataError, ValueError) as e:
            problems.extend(e.problems if isinstance(e, DataError) else
                            [Problem(aset.source or None, rec, "file_name", f"not a file name: {e}", im.file_name)])
            continue
        if lab in seen:
            problems.append(Problem(aset.source or None, rec, "file_name", f"same label file {lab} as image "
                                    f"{seen[lab]}; YOLO needs distinct image names (without suffix)", im.file_name))
            continue
        seen[lab] = im.id
        src = None
        if copy_images:
            src = aset.image_path(im)
            if not Path(src).is_file():
                problems.append(Problem(aset.source or None, rec, "file_name", f"image file not found: {src}",
                                        im.file_name))
                continue
        out.append((rel, lab, src))
    if problems:
        raise DataError(problems)
    return out


def write_yolo(aset: AnnotationSet, out_dir: str | Path, task: Task = "detect", *,
               images: Literal["none", "copy", "symlink"] = "none", progress: bool = False) -> WriteResult:
    """Write ``out_dir/labels/<image path>.txt`` for every image (empty for no objects) and
    ``out_dir/data.yaml``; with ``images="copy"``/``"symlink"`` also ``out_dir/images/``.

    ``data.yaml``'s ``train`` / ``val`` name ``images`` when the images are copied or linked, else
    the set's ``image_root`` (absolute), so that the dataset reads back as written.
    Crowd regions (and, for ``segment``, objects without a mask) cannot be written and are listed
    in ``WriteResult.lost``; several polygon rings of one object are joined by :func:`merge_rings`;
    RLE masks are traced to polygons; ``pose`` objects without keypoints get K unlabeled ones.

    File names come from the data: one that leads outside ``out_dir`` (absolute, or ``..`` climbing
    out) is a :class:`DataError` naming the record, raised before anything is written or removed."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "pose" and aset.keypoint_set is None:
        raise ValueError("task=pose needs a set with a keypoint layout (aset.keypoint_set)")
    if images not in ("none", "copy", "symlink"):
        raise ValueError(f"images must be 'none', 'copy' or 'symlink', got {images!r}")
    if images != "none" and aset.image_root is None and not all(Path(im.file_name).is_absolute() for im in aset.images):
        raise DataError(Problem(aset.source or None, None, "image_root",
                                f"images={images!r} needs to know where the images are: the set has no image_root"))
    out_dir = Path(out_dir)
    targets = _targets(aset, out_dir, images != "none")
    result = WriteResult()
    for im, (rel, lab, src) in tqdm(list(zip(aset.images, targets)), desc="writing YOLO labels",
                                    disable=not progress):
        lines = yolo_lines(aset, im, task, str(lab), result.lost)
        atomic_write_text(lab, "".join(ln + "\n" for ln in lines))
        result.files.append(lab)
        result.images += 1
        result.objects += len(lines)
        if images != "none":
            dst = out_dir / "images" / rel  # inside out_dir: checked by _targets
            dst.parent.mkdir(parents=True, exist_ok=True)
            if os.path.realpath(dst) == os.path.realpath(src):
                pass  # the image is already there (out_dir/images is the image folder)
            elif images == "copy":
                with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:  # replaces dst atomically
                    shutil.copyfileobj(fin, fout)
            else:
                if dst.is_symlink() or dst.exists():
                    dst.unlink()
                os.symlink(Path(src).resolve(), dst)
            result.files.append(dst)
    y = out_dir / "data.yaml"
    where = "images" if images != "none" or aset.image_root is None else Path(aset.image_root).resolve()
    atomic_write_text(y, yaml.safe_dump(data_yaml(aset, out_dir, task, where), sort_keys=False))
    result.files.append(y)
    return result
