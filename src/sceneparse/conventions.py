"""The conventions of sceneparse, decided once.

* Boxes inside sceneparse are ``XYXY``, absolute pixels, ``float32``. Pixel ``(i, j)`` (row i,
  column j) covers ``[j, j+1) x [i, i+1)``; so a box covering exactly that pixel is
  ``(j, i, j+1, i+1)`` and ``area = w * h`` with no ``+1`` (COCO's rule).
* ``XYWH`` is *only* COCO's top-left form ``(x_min, y_min, width, height)``; ``CXCYWH`` is the
  centre form (YOLO, DETR). Foreign formats are converted once, at the data boundary.
* Images into models: list of ``float32`` CHW RGB tensors in ``[0, 1]``.
* Labels: contiguous ``0..C-1``; background is never a result label. Dataset category ids map to
  these indices through :class:`CategoryMap` (one place), and back when files are written.
* Masks: ``bool [N, H, W]``. Keypoints: ``float32 [N, K, 3]`` as ``x, y, v`` with
  ``v`` in {0 unlabeled, 1 labeled but occluded, 2 visible}.
* Semantic maps: ``int64 [H, W]`` with :data:`IGNORE_INDEX` for void pixels.
* COCO's fixed tables -- the 17 person keypoints, their skeleton and OKS sigmas -- and its panoptic
  PNG id encoding (:func:`rgb2id` / :func:`id2rgb`) are plain data here, so that scoring files
  (:mod:`sceneparse.evaluation`) needs neither torch nor the structures that use torch.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

#: Pixel value meaning "not labelled" in semantic label maps (PNG files and tensors).
IGNORE_INDEX: int = 255

#: Internal box format everywhere past the data boundary.
BOX_DTYPE = "float32"


class BoxFormat(str, enum.Enum):
    """Box coordinate layouts. Use these names, never a bare "xywh"."""

    XYXY = "xyxy"  #: (x_min, y_min, x_max, y_max); sceneparse's internal format
    XYWH = "xywh"  #: COCO: (x_min, y_min, width, height)
    CXCYWH = "cxcywh"  #: centre form: (x_center, y_center, width, height)

    @classmethod
    def parse(cls, value: "BoxFormat | str") -> "BoxFormat":
        if isinstance(value, BoxFormat):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown box format {value!r}; expected one of {[f.value for f in cls]}") from None


INTERNAL_BOX_FORMAT = BoxFormat.XYXY


@dataclass(frozen=True)
class Category:
    """One dataset category. ``id`` is the dataset's own id (e.g. COCO's 1..90)."""

    id: int
    name: str
    isthing: bool = True
    supercategory: str = ""
    color: tuple[int, int, int] | None = None
    keypoints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()  # 1-based pairs, as COCO writes them


@dataclass
class CategoryMap:
    """The single place where dataset category ids meet contiguous label indices.

    ``labels`` are ``0..C-1`` in the order of ``categories`` (sorted by id when built with
    :meth:`from_categories`). Things and stuff share the index space; ``thing_mask`` tells them apart.
    """

    categories: list[Category] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = [c.id for c in self.categories]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate category ids: {dup}")
        self._id_to_label = {c.id: i for i, c in enumerate(self.categories)}

    @classmethod
    def from_categories(cls, categories: Iterable[Category]) -> "CategoryMap":
        return cls(sorted(categories, key=lambda c: c.id))

    def __len__(self) -> int:
        return len(self.categories)

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.categories]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def thing_labels(self) -> list[int]:
        return [i for i, c in enumerate(self.categories) if c.isthing]

    @property
    def stuff_labels(self) -> list[int]:
        return [i for i, c in enumerate(self.categories) if not c.isthing]

    def has_id(self, category_id: int) -> bool:
        return category_id in self._id_to_label

    def to_label(self, category_id: int) -> int:
        try:
            return self._id_to_label[int(category_id)]
        except KeyError:
            raise KeyError(f"unknown category id {category_id}; known ids: {self.ids}") from None

    def to_labels(self, category_ids: Sequence[int]) -> list[int]:
        return [self.to_label(c) for c in category_ids]

    def to_id(self, label: int) -> int:
        if not 0 <= int(label) < len(self.categories):
            raise KeyError(f"label {label} out of range 0..{len(self.categories) - 1}")
        return self.categories[int(label)].id

    def to_ids(self, labels: Sequence[int]) -> list[int]:
        return [self.to_id(l) for l in labels]

    def to_coco(self) -> list[dict]:
        out = []
        for c in self.categories:
            d = {"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": int(c.isthing)}
            if c.color is not None:
                d["color"] = list(c.color)
            if c.keypoints:
                d["keypoints"] = list(c.keypoints)
                d["skeleton"] = [list(p) for p in c.skeleton]
            out.append(d)
        return out

    @classmethod
    def from_coco(cls, cats: Iterable[dict]) -> "CategoryMap":
        return cls.from_categories(
            Category(
                id=int(c["id"]),
                name=str(c.get("name", c["id"])),
                isthing=bool(c.get("isthing", 1)),
                supercategory=str(c.get("supercategory", "")),
                color=tuple(c["color"]) if c.get("color") is not None else None,
                keypoints=tuple(c.get("keypoints", ()) or ()),
                skeleton=tuple(tuple(p) for p in (c.get("skeleton", ()) or ())),
            )
            for c in cats
        )


# ---- COCO's fixed tables and the panoptic PNG encoding ------------------------------------------
#: COCO's 17 person keypoint names, in the order of person_keypoints JSON files.
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

#: COCO's skeleton, 1-based as written in person_keypoints JSON files.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

#: Per-keypoint OKS sigmas used by COCO's keypoint evaluation (pycocotools' values).
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG ``uint8 [H, W, 3]`` -> ``int64 [H, W]`` ids (``R + 256 G + 256^2 B``)."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 3 and rgb.shape[2] >= 3:
        rgb = rgb[..., :3].astype(np.int64)
        return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    raise ValueError(f"panoptic PNG must be [H, W, 3], got shape {rgb.shape}")


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """``int [H, W]`` ids -> ``uint8 [H, W, 3]`` COCO panoptic encoding."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256 ** 3:
        raise ValueError("panoptic ids must lie in [0, 256**3)")
    out = np.empty(ids.shape + (3,), dtype=np.uint8)
    out[..., 0] = ids % 256
    out[..., 1] = (ids // 256) % 256
    out[..., 2] = ids // (256 * 256)
    return out
