"""Semantic segmentation as folders of label PNGs (VOC ``SegmentationClass``, Cityscapes
``labelTrainIds``, ADE20K-style): one single-channel ``uint8`` PNG per image whose pixel values are
contiguous labels ``0..C-1`` and :data:`~sceneparse.conventions.IGNORE_INDEX` (255) for void.

Palette PNGs (mode ``P``) are read by palette *index*, which is the label (VOC's convention); the
palette only colours the file for viewers. The label PNG of an image is
``<semantic_root>/<image file_name with .png>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ...conventions import IGNORE_INDEX
from ...errors import DataError, FormatError, Problem
from ...structures.segmaps import SemanticMap
from ..records import AnnotationSet, ImageRecord
from ._io import IMAGE_SUFFIXES, atomic_open, categories_from_names, ids_from_stems, image_size, inside
from ._parse import fail
from .validate import Checker, Origin, validate_annotation_set

_MODES = ("L", "P")


def voc_palette(n: int = 256) -> np.ndarray:
    """``uint8 [n, 3]`` colours: label ``i``'s bits spread over the high bits of R, G, B (the
    colour map of Pascal VOC's SegmentationClass PNGs: 0 black, 1 dark red, 2 dark green, ...)."""
    idx = np.arange(n, dtype=np.int64)
    out = np.zeros((n, 3), dtype=np.int64)
    c = idx.copy()
    for shift in range(7, -1, -1):  # 8 rounds of 3 bits, vectorised over labels
        for ch in range(3):
            out[:, ch] |= ((c >> ch) & 1) << shift
        c >>= 3
    return out.astype(np.uint8)


def _open_labels(path: Path) -> np.ndarray:
    """Decode a label PNG to ``uint8 [H, W]`` (palette indices for mode P)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in _MODES:
                fail(str(path), None, None, f"label PNG must be single-channel (mode L or P), got mode {im.mode}")
            return np.asarray(im)
    except (OSError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError) as e:  # truncated, corrupt, huge
        fail(str(path), None, None, f"unreadable label PNG: {type(e).__name__}: {e}")


def _bad_values(labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> list[int]:
    counts = np.bincount(labels.ravel(), minlength=256)
    bad = np.flatnonzero(counts)
    return [int(v) for v in bad if v >= num_classes and v != ignore_index]


def semantic_png_path(aset: AnnotationSet, image: ImageRecord) -> Path:
    if aset.semantic_root is None:
        raise DataError(Problem(aset.source or None, f"image {image.id}", "semantic_root", "the set has no semantic_root"))
    try:
        name = Path(image.file_name).with_suffix(".png")
    except ValueError:  # "..", "": no file name to put a suffix on
        name = None
    if name is None or inside(aset.semantic_root, name) is None:
        raise DataError(Problem(aset.source or None, f"image {image.id}", "file_name",
                                f"its label PNG would lie outside the label folder {aset.semantic_root}",
                                image.file_name))
    return Path(aset.semantic_root) / name


def read_semantic_pngs(label_dir: str | Path, image_root: str | Path | None = None,
                       class_names: Sequence[str] | None = None, *, strict: bool = False,
                       check_images: bool = False, progress: bool = False) -> AnnotationSet:
    """Index a folder of label PNGs (searched recursively) as an :class:`AnnotationSet` with
    ``semantic_root = label_dir`` and no objects.

    Args:
        label_dir: the label PNGs.
        image_root: the images; each PNG's image is the file with the same relative path and an image
            suffix. Without it, ``file_name`` is the PNG's own relative path (images unknown).
        class_names: names of labels ``0..C-1``. Without them every PNG is decoded and
            ``C = max label + 1`` (names ``class_0`` ...).
        strict / check_images: see :func:`~sceneparse.data.formats.validate.validate_annotation_set`;
            ``check_images`` also decodes every PNG and checks that its values are known labels or 255.

    Problems (lenient repair): PNG without an image, PNG size differing from its image, values
    outside ``0..C-1`` / 255 [the image is dropped]. A PNG that is not single-channel is a
    :class:`FormatError`.
    """
    from PIL import Image

    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        fail(str(label_dir), None, None, "label folder not found")
    image_root = Path(image_root) if image_root is not None else None
    pngs = sorted((p.relative_to(label_dir) for p in label_dir.rglob("*.png") if p.is_file()),
                  key=lambda p: p.as_posix())
    image_of: dict[str, Path] = {}
    if image_root is not None:
        for p in sorted(image_root.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                image_of.setdefault(p.relative_to(image_root).with_suffix("").as_posix(), p.relative_to(image_root))
    ck = Checker(strict)
    decode = class_names is None or check_images
    found_max = -1
    ids = ids_from_stems([p.stem for p in pngs])
    images, origins, values = [], [], []
    for rel, iid in tqdm(list(zip(pngs, ids)), desc="reading label PNGs", disable=not progress):
        path = label_dir / rel
        try:
            with Image.open(path) as im:
                mode, (w, h) = im.mode, im.size
        except Exception as e:
            ck.flag(str(path), f"image {iid}", None, f"unreadable label PNG: {type(e).__name__}: {e}", None,
                    repaired="dropped the image")
            continue
        if mode not in _MODES:
            fail(str(path), None, None, f"label PNG must be single-channel (mode L or P), got mode {mode}")
        if image_root is not None:
            img_rel = image_of.get(rel.with_suffix("").as_posix())
            if img_rel is None:
                ck.flag(str(path), f"image {iid}", "file_name", f"no image for this label PNG in {image_root}",
                        rel.as_posix(), repaired="dropped the label PNG")
                continue
            file_name = img_rel.as_posix()
            try:
                ih, iw = image_size(image_root / img_rel)
            except Exception as e:
                ck.flag(str(image_root / img_rel), f"image {iid}", "image", f"unreadable image: {type(e).__name__}: {e}",
                        img_rel.as_posix(), repaired="dropped the image")
                continue
            if (ih, iw) != (h, w):
                ck.flag(str(path), f"image {iid}", "size", f"label PNG is {h}x{w} (HxW) but its image "
                        f"{img_rel.as_posix()} is {ih}x{iw}", (h, w), repaired="dropped the image")
                continue
            file_name = img_rel.as_posix()
        else:
            file_name = rel.as_posix()
        if decode:
            try:
                labels = _open_labels(path)
            except FormatError as e:
                if "unreadable" not in e.problems[0].message:
                    raise
                ck.flag(str(path), f"image {iid}", None, e.problems[0].message, None, repaired="dropped the image")
                continue
            bad = _bad_values(labels, len(class_names) if class_names is not None else 255)
            if bad:
                ck.flag(str(path), f"image {iid}", "labels", f"unknown category ids (labels outside "
                        f"0..{len(class_names) - 1} and {IGNORE_INDEX})", bad[:20], repaired="dropped the image")
                continue
            valid = labels[labels != IGNORE_INDEX]
            found_max = max(found_max, int(valid.max()) if valid.size else -1)
        images.append(ImageRecord(id=iid, file_name=file_name, height=h, width=w))
        origins.append(Origin(str(path), f"image {iid}"))
    if class_names is None:
        class_names = [f"class_{i}" for i in range(found_max + 1)]
    cmap = categories_from_names(class_names)
    aset = AnnotationSet(categories=cmap, images=images, image_root=image_root, semantic_root=label_dir,
                         source=str(label_dir))
    # image existence and (check_images) decoding; the record carries the PNG's size, so a decoded
    # image of another size is reported too.
    validate_annotation_set(aset, checker=ck, check_images=check_images, image_origins=origins,
                            object_origins=[], field_names={"size": "size", "file_name": "image"})
    aset.problems = list(ck.problems)
    return aset


def load_semantic_map(aset: AnnotationSet, image_id: int) -> SemanticMap:
    """Decode the label PNG of one image into a :class:`SemanticMap` (``int64 [H, W]``, 255 = ignore).
    Raises :class:`DataError` naming the file for a size that differs from the image record or for
    values outside ``0..C-1`` and 255."""
    image = next((im for im in aset.images if im.id == int(image_id)), None)
    if image is None:
        raise DataError(Problem(aset.source or None, f"image {image_id}", "image_id", "no such image in the set"))
    path = semantic_png_path(aset, image)
    if not path.is_file():
        raise DataError(Problem(str(path), f"image {image_id}", "file_name", "label PNG not found"))
    labels = _open_labels(path)
    if labels.shape != (image.height, image.width):
        raise DataError(Problem(str(path), f"image {image_id}", "size", f"label PNG is {labels.shape[0]}x"
                                f"{labels.shape[1]} (HxW), image record {image.height}x{image.width}"))
    bad = _bad_values(labels, len(aset.categories))
    if bad:
        raise DataError(Problem(str(path), f"image {image_id}", "labels",
                                f"unknown category ids (outside 0..{len(aset.categories) - 1} and {IGNORE_INDEX})", bad))
    return SemanticMap(torch.from_numpy(labels.astype(np.int64)), ignore_index=IGNORE_INDEX)


def write_semantic_png(path: str | Path, labels, palette: np.ndarray | Sequence | bool | None = None) -> Path:
    """Write a label map as a ``uint8`` PNG, atomically.

    Args:
        labels: ``int [H, W]`` tensor / array, or a :class:`SemanticMap` (its ``ignore_index`` is
            written as 255). Values must be ``0..254`` or 255 (ignore).
        palette: ``None`` for a grey (mode ``L``) PNG; ``True`` for :func:`voc_palette`; or ``[n, 3]``
            RGB colours (mode ``P``; pixel values stay the labels).
    """
    from PIL import Image

    ignore = IGNORE_INDEX
    if isinstance(labels, SemanticMap):
        ignore = labels.ignore_index
        labels = labels.labels
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64)
    void = arr == ignore
    bad = (~void) & ((arr < 0) | (arr >= IGNORE_INDEX))
    if bad.any():
        vals = np.unique(arr[bad])[:10].tolist()
        raise ValueError(f"{path}: label values must be 0..{IGNORE_INDEX - 1} or the ignore index {ignore}, got {vals}")
    out = np.where(void, IGNORE_INDEX, arr).astype(np.uint8)
    if palette is None or palette is False:
        img = Image.fromarray(out)  # uint8 [H, W] -> mode L
    else:
        pal = voc_palette() if palette is True else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        if len(pal) > 256:
            raise ValueError("a PNG palette holds at most 256 colours")
        full = np.zeros((256, 3), dtype=np.uint8)
        full[: len(pal)] = pal
        img = Image.fromarray(out)
        img.putpalette(full.ravel().tolist())
    path = Path(path)
    with atomic_open(path, "wb") as f:
        img.save(f, format="PNG")
    return path
