"""In-memory annotation sets: what every format reader produces and every writer consumes.

Records are already in sceneparse's conventions (XYXY absolute px boxes, contiguous labels via
the set's :class:`~sceneparse.conventions.CategoryMap`); foreign layouts exist only inside
``data/formats``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..conventions import CategoryMap
from ..errors import Problem

if TYPE_CHECKING:  # a type only: records (and the COCO check evaluation runs) load without torch
    from ..structures.keypoints import KeypointSet

#: COCO polygons (list of flat xy rings) or an RLE dict (compressed ``str`` or uncompressed list counts)
Segmentation = Any


@dataclass
class ImageRecord:
    """One image. ``file_name`` is relative to the set's ``image_root`` (or absolute)."""

    id: int
    file_name: str
    height: int
    width: int
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. VOC 'segmented', COCO 'license'


@dataclass
class ObjectRecord:
    """One annotated object (COCO "annotation").

    ``bbox`` is ``float32 [4]`` XYXY absolute pixels; ``label`` is the contiguous index;
    ``keypoints`` is ``float32 [K, 3]`` (x, y, v) or ``None``; ``extra`` holds per-format flags such as
    VOC ``difficult`` / ``truncated`` (bools).
    """

    id: int
    image_id: int
    label: int
    bbox: np.ndarray
    iscrowd: bool = False
    area: float | None = None  # COCO 'area' (mask area when a mask exists); None -> box area
    segmentation: Segmentation | None = None
    keypoints: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PanopticRecord:
    """Panoptic annotation of one image: the PNG (COCO RGB id encoding) and its segments, as in
    COCO panoptic JSON (``segments_info`` entries with ``category_id`` as dataset ids)."""

    image_id: int
    file_name: str  # relative to AnnotationSet.panoptic_root
    segments_info: list[dict]


@dataclass
class AnnotationSet:
    """A loaded dataset split.

    Attributes:
        categories: dataset ids <-> contiguous labels (things and stuff).
        images: image records, in file order.
        annotations: object records (things and crowd regions).
        image_root: folder that ``ImageRecord.file_name`` is relative to.
        keypoint_set: keypoint layout when objects carry keypoints.
        semantic_root: folder of per-image label PNGs (``<image stem>.png``), values = contiguous labels,
            255 = ignore.
        panoptic: panoptic records by image id; ``panoptic_root`` holds their PNGs.
        source: where the set was read from (for messages).
        problems: what validation found / lenient mode repaired while reading.
    """

    categories: CategoryMap
    images: list[ImageRecord] = field(default_factory=list)
    annotations: list[ObjectRecord] = field(default_factory=list)
    image_root: Path | None = None
    keypoint_set: KeypointSet | None = None
    semantic_root: Path | None = None
    panoptic: dict[int, PanopticRecord] = field(default_factory=dict)
    panoptic_root: Path | None = None
    source: str = ""
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_image: dict[int, list[ObjectRecord]] | None = None

    def annotations_of(self, image_id: int) -> list[ObjectRecord]:
        """Objects of one image (index built lazily; call :meth:`reindex` after editing lists)."""
        if self._by_image is None:
            self.reindex()
        return self._by_image.get(int(image_id), [])  # type: ignore[union-attr]

    def reindex(self) -> None:
        by: dict[int, list[ObjectRecord]] = {}
        for a in self.annotations:
            by.setdefault(int(a.image_id), []).append(a)
        self._by_image = by

    def image_path(self, image: ImageRecord) -> Path:
        p = Path(image.file_name)
        if p.is_absolute() or self.image_root is None:
            return p
        return Path(self.image_root) / p
