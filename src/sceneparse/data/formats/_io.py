"""File plumbing shared by the format codecs: atomic writes, image headers, ids from file names,
name-list category maps and the :class:`WriteResult` every writer returns."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ...conventions import Category, CategoryMap
from ...fileio import atomic_open, atomic_write_text  # noqa: F401  (re-exported: the codecs import them from here)
from ...errors import DataError, Problem

#: File suffixes treated as images when a folder is scanned (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


@dataclass
class WriteResult:
    """What a writer produced.

    Attributes:
        files: every file written (label files, XMLs, JSON, data.yaml, PNGs).
        images: number of images written.
        objects: number of objects written.
        lost: information the target format cannot hold (crowd regions in YOLO, masks in VOC, ...),
            one :class:`Problem` per affected record, ``repaired`` saying what was done instead.
    """

    files: list[Path] = field(default_factory=list)
    images: int = 0
    objects: int = 0
    lost: list[Problem] = field(default_factory=list)


def inside(root: str | os.PathLike, name: str | os.PathLike) -> Path | None:
    """``root / name`` with ``..`` and symbolic links resolved, if that lies inside ``root`` (also
    resolved); ``None`` for a name that leads outside it -- an absolute name, ``..`` that climbs out, a
    link to elsewhere -- or that is no path at all (empty, ``.``, a NUL byte)."""
    try:
        if not isinstance(name, (str, os.PathLike)) or not os.fspath(name) or "\x00" in os.fspath(name):
            return None
        rel = Path(name)
        if rel.is_absolute() or rel.drive or rel.root:
            return None
        base = Path(os.path.realpath(root))
        target = Path(os.path.realpath(base / rel))
    except (OSError, ValueError):
        return None
    if target == base or base not in target.parents:
        return None
    return target


def output_path(root: str | os.PathLike, name: str | os.PathLike, *, file: str | None = None,
                record: str | None = None, field: str | None = "file_name") -> Path:
    """Where a writer puts the file called ``name`` (read from a data file: a COCO ``file_name``, a
    VOC ``<filename>``, a panoptic PNG name) under its output folder ``root``.

    Names from data files are not trusted: an absolute name, or ``..`` that climbs out of ``root``
    (also through a symbolic link inside it), would make the writer overwrite -- or, when it
    replaces a file, delete -- a file elsewhere. Such a name raises :class:`DataError` naming the
    source ``file``, the ``record`` and the ``field``; nothing is written. Returns ``root`` joined
    with the normalised name (``a/../b.png`` -> ``root/b.png``).
    """
    target = inside(root, name)
    if target is None:
        raise DataError(Problem(file, record, field, f"refusing a file name that leads outside the output "
                                f"folder {root}", os.fspath(name) if isinstance(name, (str, os.PathLike)) else name))
    return Path(root) / target.relative_to(os.path.realpath(root))


#: EXIF orientations that turn the stored pixels by 90 degrees (width and height swap when displayed)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def _orientation(im) -> int:
    """EXIF orientation (tag 0x0112) from the header, 1 when absent. PNG keeps EXIF in an ``eXIf``
    chunk; only one placed before the pixels is seen without decoding (the common placement)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block does not make the image unusable
        return 1


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` as displayed, from the image header only (PIL opens lazily; pixels are not
    decoded). EXIF orientation is applied, as the dataset loader does (``ImageOps.exif_transpose``),
    so that annotations made on the displayed image (e.g. YOLO's normalised coordinates) match.
    Raises ``OSError`` for a missing or unreadable file."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        if _orientation(im) in _SWAPPING_ORIENTATIONS:
            w, h = h, w
    return int(h), int(w)


def decode_check(path: str | os.PathLike) -> tuple[int, int]:
    """Fully decode an image (catches truncated / corrupt files); returns ``(height, width)`` as
    displayed (EXIF orientation applied, like :func:`image_size`)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        w, h = im.size
        if _orientation(im) in _SWAPPING_ORIENTATIONS:
            w, h = h, w
    return int(h), int(w)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted, as paths relative to ``folder``."""
    out = [p.relative_to(folder) for p in folder.rglob("*")
           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")]
    return sorted(out, key=lambda p: p.as_posix())


_DIGITS = re.compile(r"^\d+$")


def ids_from_stems(stems: Sequence[str]) -> list[int]:
    """Integer image ids for formats that have none (VOC, YOLO, label PNGs).

    If every stem is a decimal number and the numbers are distinct (COCO-style names such as
    ``000000397133``), the number is the id, so a COCO set converted away and back keeps its ids.
    Otherwise ids are ``1..N`` in the given (sorted) order.
    """
    if stems and all(_DIGITS.match(s) for s in stems):
        nums = [int(s) for s in stems]
        if len(set(nums)) == len(nums):
            return nums
    return list(range(1, len(stems) + 1))


def categories_from_names(names: Sequence[str], ids: Sequence[int] | None = None) -> CategoryMap:
    """Category map for formats that only list class names (VOC, YOLO, label PNGs): label ``i`` is
    ``names[i]``; dataset ids are ``ids`` when known (e.g. kept from COCO in YOLO's data.yaml), else
    ``1..C`` (0 stays free, as in COCO)."""
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate class names: {dup}")
    if ids is None:
        ids = range(1, len(names) + 1)
    ids = [int(i) for i in ids]
    if len(ids) != len(names):
        raise ValueError(f"{len(names)} class names but {len(ids)} category ids")
    if sorted(ids) != ids:
        raise ValueError(f"category ids must be increasing in label order, got {ids}")
    return CategoryMap([Category(id=i, name=n) for i, n in zip(ids, names)])


def fmt_num(v: float, decimals: int = 4) -> str:
    """Shortest text for a coordinate: an integer when it is one, else at most ``decimals`` places
    (float32 noise such as ``10.300000190734863`` becomes ``10.3``)."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)  # readers flag 'nan' / 'inf' as a problem of the record
    r = round(v, decimals)
    if r == int(r):
        return str(int(r))
    return f"{r:.{decimals}f}".rstrip("0")
