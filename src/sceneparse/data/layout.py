"""Dataset folders in COCO layout (as ``sceneparse data synth`` writes them) -> the
:class:`~sceneparse.data.records.AnnotationSet` a task trains and evaluates on.

A *source* is either a dataset folder::

    DIR/images/SPLIT/                              images
    DIR/annotations/instances_SPLIT.json           boxes, masks, crowd regions        kind "instances"
    DIR/annotations/person_keypoints_SPLIT.json    persons with keypoints             kind "keypoints"
    DIR/semantic/SPLIT/<image stem>.png            label PNGs (255 = void)            kind "semantic"
    DIR/annotations/panoptic_SPLIT.json + panoptic_SPLIT/   COCO panoptic             kind "panoptic"

(``DIR/dataset.yaml``'s ``splits: {SPLIT: {images: ..., instances: ..., ...}}`` entries, relative to
``DIR``, override these paths), or a COCO JSON file with its image folder given explicitly (and,
for ``semantic``, the label PNG folder; for ``panoptic``, the panoptic PNG folder, by default the
JSON path without ``.json``).

What each kind gives:

* ``instances``: the instances JSON as read by :func:`~sceneparse.data.formats.read_coco`; with
  ``things_only=True`` (what detectors train on) the stuff categories (``isthing: 0``) are left out
  and labels renumbered ``0..C_things-1``;
* ``keypoints``: the categories that have keypoints (COCO: ``person`` only), with their objects;
* ``semantic``: the images of the split with ``semantic_root`` set, labels = the category map of the
  instances JSON (the label PNG values index it: things first, then stuff), or of the panoptic JSON;
* ``panoptic``: :func:`~sceneparse.data.formats.read_coco_panoptic`.

Every missing file raises :class:`~sceneparse.errors.DataError` naming it (use :func:`missing` to ask
first). ``max_images`` keeps the first N images of the split (and their objects).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml

from ..conventions import CategoryMap
from ..errors import DataError, Problem
from .formats import read_coco, read_coco_panoptic
from .formats.coco import FIELD_NAMES, load_json, parse_categories, parse_images
from .formats.validate import Checker, validate_annotation_set
from .records import AnnotationSet

KINDS = ("instances", "keypoints", "semantic", "panoptic")


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's files are (paths may not exist; :func:`missing` says which kind lacks what).

    ``json`` is the explicit COCO file of a file source (``None`` for a folder source)."""

    source: Path
    split: str
    images: Path | None
    instances: Path | None
    person_keypoints: Path | None
    panoptic_json: Path | None
    panoptic_root: Path | None
    semantic: Path | None
    json: Path | None = None


def _yaml_split(root: Path, split: str) -> dict:
    meta = root / "dataset.yaml"
    if not meta.is_file():
        return {}
    try:
        data = yaml.safe_load(meta.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(Problem(str(meta), None, None, f"invalid YAML: {e}")) from None
    entry = (data.get("splits") or {}).get(split) if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) else {}


def split_files(source: str | Path, split: str = "val", *, images: str | Path | None = None,
                semantic: str | Path | None = None, panoptic_root: str | Path | None = None) -> SplitFiles:
    """Resolve the files of ``split`` of a dataset folder, or of a COCO JSON file (``split`` unused).

    ``images`` / ``semantic`` / ``panoptic_root`` override the folder layout's image, label PNG and
    panoptic PNG folders (a JSON file source takes them from here only)."""
    src = Path(source)
    opt = lambda p: Path(p) if p is not None else None  # noqa: E731
    if src.is_dir():
        entry = _yaml_split(src, split)

        def at(key: str, default: str) -> Path:
            rel = entry.get(key)
            return src / (str(rel) if isinstance(rel, str) and rel else default)

        return SplitFiles(
            source=src, split=split,
            images=opt(images) or at("images", f"images/{split}"),
            instances=at("instances", f"annotations/instances_{split}.json"),
            person_keypoints=at("person_keypoints", f"annotations/person_keypoints_{split}.json"),
            panoptic_json=at("panoptic_json", f"annotations/panoptic_{split}.json"),
            panoptic_root=opt(panoptic_root) or at("panoptic_root", f"annotations/panoptic_{split}"),
            semantic=opt(semantic) or at("semantic", f"semantic/{split}"))
    if not src.is_file():
        raise DataError(Problem(str(src), None, None, "dataset not found (expected a folder in COCO layout "
                                "or a COCO JSON file)"))
    is_panoptic = panoptic_root is not None or "panoptic" in src.name
    return SplitFiles(
        source=src, split=split, images=opt(images), json=src,
        instances=None if is_panoptic else src, person_keypoints=None if is_panoptic else src,
        panoptic_json=src if is_panoptic else None,
        panoptic_root=(opt(panoptic_root) or src.with_suffix("")) if is_panoptic else None,
        semantic=opt(semantic))


def missing(files: SplitFiles, kind: str) -> str:
    """Why ``kind`` cannot be loaded from ``files`` (``""`` when its files are there)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if files.images is None:
        return f"{files.source} is a COCO JSON file; give its image folder"
    if not files.images.is_dir():
        return f"image folder {files.images} not found"
    if kind == "instances":
        return "" if files.instances is not None and files.instances.is_file() else \
            f"{files.instances or 'an instances JSON'} not found"
    if kind == "keypoints":
        return "" if files.person_keypoints is not None and files.person_keypoints.is_file() else \
            f"{files.person_keypoints or 'a person_keypoints JSON'} not found"
    if kind == "panoptic":
        if files.panoptic_json is None or not files.panoptic_json.is_file():
            return f"{files.panoptic_json or 'a panoptic JSON'} not found"
        if files.panoptic_root is None or not files.panoptic_root.is_dir():
            return f"panoptic PNG folder {files.panoptic_root} not found"
        return ""
    if files.semantic is None:
        return "no semantic label PNG folder given"
    if not files.semantic.is_dir():
        return f"semantic label folder {files.semantic} not found"
    if _category_source(files) is None:
        return "no category list (instances or panoptic JSON) for the label PNGs"
    return ""


def _category_source(files: SplitFiles) -> Path | None:
    for p in (files.instances, files.panoptic_json):
        if p is not None and p.is_file():
            return p
    return None


def restrict_categories(aset: AnnotationSet, keep: np.ndarray | list[int], why: str) -> AnnotationSet:
    """A copy of ``aset`` with only the categories of labels ``keep`` (in their order), labels
    renumbered, and the objects of other categories dropped (each dropped object is recorded in
    ``problems``, ``why`` saying why)."""
    keep = [int(k) for k in keep]
    lut = np.full(len(aset.categories), -1, dtype=np.int64)
    lut[keep] = np.arange(len(keep))
    labels = np.asarray([a.label for a in aset.annotations], dtype=np.int64).reshape(-1)
    new = lut[labels] if labels.size else labels
    problems = list(aset.problems)
    anns = []
    for a, lab in zip(aset.annotations, new.tolist()):
        if lab < 0:
            problems.append(Problem(aset.source or None, f"annotation {a.id}", "category_id",
                                    f"object of category {aset.categories.categories[a.label].name!r} left out",
                                    aset.categories.to_id(a.label), repaired=why))
            continue
        anns.append(replace(a, label=lab))
    cmap = CategoryMap([aset.categories.categories[k] for k in keep])
    out = AnnotationSet(categories=cmap, images=list(aset.images), annotations=anns, image_root=aset.image_root,
                        keypoint_set=aset.keypoint_set, semantic_root=aset.semantic_root, panoptic=aset.panoptic,
                        panoptic_root=aset.panoptic_root, source=aset.source, problems=problems)
    return out


def first_images(aset: AnnotationSet, n: int | None) -> AnnotationSet:
    """The first ``n`` images of ``aset`` (file order) with their objects; ``aset`` itself if ``n`` is None."""
    if n is None or n >= len(aset.images):
        return aset
    if n < 1:
        raise DataError(Problem(aset.source or None, None, "max_images", "must be at least 1", n))
    images = aset.images[:n]
    ids = {int(im.id) for im in images}
    return replace(aset, images=images, annotations=[a for a in aset.annotations if int(a.image_id) in ids],
                   panoptic={k: v for k, v in aset.panoptic.items() if int(k) in ids},
                   problems=list(aset.problems))


def _semantic_set(files: SplitFiles, strict: bool) -> AnnotationSet:
    cat_file = _category_source(files)
    assert cat_file is not None and files.semantic is not None  # checked by missing()
    file = str(cat_file)
    data = load_json(cat_file)
    ck = Checker(strict)
    cmap = parse_categories(data.get("categories"), file, ck)
    images, origins = parse_images(data.get("images"), file)
    aset = AnnotationSet(categories=cmap, images=images, image_root=files.images, semantic_root=files.semantic,
                         source=str(files.semantic))
    validate_annotation_set(aset, checker=ck, image_origins=origins, object_origins=[], field_names=FIELD_NAMES)
    # SceneDataset reads <semantic_root>/<image stem>.png; an image without one cannot be trained on
    have = {p.stem for p in files.semantic.iterdir() if p.suffix.lower() == ".png"}
    keep = []
    for im in aset.images:
        if Path(im.file_name).stem in have:
            keep.append(im)
        else:
            ck.flag(str(files.semantic), f"image {im.id}", "semantic", "no label PNG for this image",
                    Path(im.file_name).stem + ".png", repaired="image left out")
    aset.images = keep
    aset.problems = list(ck.problems)
    return aset


def load_split(source: str | Path, split: str = "val", kind: str = "instances", *,
               images: str | Path | None = None, semantic: str | Path | None = None,
               panoptic_root: str | Path | None = None, things_only: bool = False, strict: bool = False,
               max_images: int | None = None) -> AnnotationSet:
    """Load ``kind`` (``instances | keypoints | semantic | panoptic``) of ``split`` of ``source``
    (a dataset folder or a COCO JSON file; see the module doc). ``things_only`` (instances) leaves
    stuff categories out; ``strict`` stops at the first annotation problem; ``max_images`` keeps the
    first N images. Raises :class:`DataError` naming the missing file or folder."""
    files = split_files(source, split, images=images, semantic=semantic, panoptic_root=panoptic_root)
    why = missing(files, kind)
    if why:
        raise DataError(Problem(str(files.source), None, kind, f"cannot load {kind} of split {split!r}: {why}"))
    if kind == "instances":
        aset = read_coco(files.instances, files.images, strict=strict)
        if things_only:
            things = aset.categories.thing_labels
            if not things:
                raise DataError(Problem(aset.source, None, "categories", "no thing category (isthing: 1) to detect"))
            if len(things) < len(aset.categories):
                aset = restrict_categories(aset, things, "stuff categories are not detected")
    elif kind == "keypoints":
        aset = read_coco(files.person_keypoints, files.images, strict=strict)
        with_kp = [i for i, c in enumerate(aset.categories.categories) if c.keypoints]
        if not with_kp:
            raise DataError(Problem(aset.source, None, "categories", "no category has keypoints (a COCO "
                                    "person_keypoints file lists them for 'person')"))
        if len(with_kp) < len(aset.categories):
            aset = restrict_categories(aset, with_kp, "only categories with keypoints are kept")
    elif kind == "panoptic":
        aset = read_coco_panoptic(files.panoptic_json, files.panoptic_root, files.images, strict=strict)
    else:
        aset = _semantic_set(files, strict)
    return first_images(aset, max_images)


__all__ = ["KINDS", "SplitFiles", "first_images", "load_split", "missing", "restrict_categories", "split_files"]
