"""Evaluation parameters of COCO detection / segmentation / keypoint AP, built as pycocotools builds them.

The defaults are pycocotools' ``Params`` bit for bit: IoU thresholds ``.50:.05:.95`` and recall
thresholds ``0:.01:1`` made with ``np.linspace`` (``np.arange`` would put the points slightly off,
which changes ``iou >= t`` decisions and the ``iouThr == .5`` look-ups of the summary), the area
ranges all/small/medium/large (keypoints: all/medium/large) in squared pixels, and maxDets
1/10/100 (keypoints: 20).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from ...conventions import COCO_OKS_SIGMAS

IOU_TYPES = ("bbox", "segm", "keypoints")


@dataclass(frozen=True)
class AreaRange:
    """An object-size bucket: objects with ``lo <= area <= hi`` (squared pixels) take part."""

    name: str
    lo: float
    hi: float


#: pycocotools' ``areaRng`` / ``areaRngLbl`` for bbox and segm.
DETECTION_AREA_RANGES: tuple[AreaRange, ...] = (
    AreaRange("all", 0 ** 2, 1e5 ** 2),
    AreaRange("small", 0 ** 2, 32 ** 2),
    AreaRange("medium", 32 ** 2, 96 ** 2),
    AreaRange("large", 96 ** 2, 1e5 ** 2),
)
#: pycocotools' keypoint area ranges (no "small": people under 32² px carry no usable keypoints).
KEYPOINT_AREA_RANGES: tuple[AreaRange, ...] = (
    AreaRange("all", 0 ** 2, 1e5 ** 2),
    AreaRange("medium", 32 ** 2, 96 ** 2),
    AreaRange("large", 96 ** 2, 1e5 ** 2),
)
DETECTION_MAX_DETS: tuple[int, ...] = (1, 10, 100)
KEYPOINT_MAX_DETS: tuple[int, ...] = (20,)


def coco_iou_thresholds() -> np.ndarray:
    """``float64 [10]``: 0.50, 0.55, ..., 0.95 exactly as pycocotools computes them."""
    return np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)


def coco_recall_thresholds() -> np.ndarray:
    """``float64 [101]``: 0.00, 0.01, ..., 1.00 exactly as pycocotools computes them."""
    return np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


@dataclass
class COCOParams:
    """The parameters one evaluation ran with (pycocotools' ``Params`` after ``evaluate()``).

    Axis names used by the result arrays: ``T`` = ``iou_thresholds``, ``R`` = ``rec_thresholds``,
    ``K`` = ``cat_ids``, ``A`` = ``area_ranges``, ``M`` = ``max_dets``.
    """

    iou_type: str
    iou_thresholds: np.ndarray  # float64 [T]
    rec_thresholds: np.ndarray  # float64 [R]
    area_ranges: tuple[AreaRange, ...]  # [A]
    max_dets: tuple[int, ...]  # [M], ascending (pycocotools sorts them)
    img_ids: np.ndarray  # int64 [I], ascending and unique (pycocotools: np.unique)
    cat_ids: np.ndarray  # int64 [K]: the K axis; [-1] when use_cats is False (all categories pooled)
    use_cats: bool
    #: categories whose annotations take part (equal to ``cat_ids`` unless ``use_cats`` is False)
    evaluated_cat_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: per-keypoint OKS sigmas as pycocotools uses them (published value / 10); keypoints only
    kpt_oks_sigmas: np.ndarray | None = None

    @property
    def area_names(self) -> list[str]:
        return [a.name for a in self.area_ranges]

    def area_index(self, name: str) -> int:
        for i, a in enumerate(self.area_ranges):
            if a.name == name:
                return i
        raise KeyError(f"unknown area range {name!r}; known: {self.area_names}")

    def to_dict(self) -> dict:
        d = {
            "iou_type": self.iou_type,
            "iou_thresholds": self.iou_thresholds.tolist(),
            "rec_thresholds": self.rec_thresholds.tolist(),
            "area_ranges": {a.name: [a.lo, a.hi] for a in self.area_ranges},
            "max_dets": list(self.max_dets),
            "cat_ids": self.cat_ids.tolist(),
            "num_images": int(self.img_ids.size),
            "use_cats": self.use_cats,
        }
        if self.kpt_oks_sigmas is not None:
            d["kpt_oks_sigmas"] = self.kpt_oks_sigmas.tolist()
        return d


def _area_ranges(area_ranges, iou_type: str) -> tuple[AreaRange, ...]:
    defaults = KEYPOINT_AREA_RANGES if iou_type == "keypoints" else DETECTION_AREA_RANGES
    if area_ranges is None:
        return defaults
    if isinstance(area_ranges, Mapping):
        items = [AreaRange(str(k), float(v[0]), float(v[1])) for k, v in area_ranges.items()]
    else:
        items = []
        by_bounds = {(a.lo, a.hi): a.name for a in DETECTION_AREA_RANGES + KEYPOINT_AREA_RANGES}
        for a in area_ranges:
            if isinstance(a, AreaRange):
                items.append(a)
            elif len(a) == 3:
                items.append(AreaRange(str(a[0]), float(a[1]), float(a[2])))
            elif len(a) == 2:
                lo, hi = float(a[0]), float(a[1])
                items.append(AreaRange(by_bounds.get((lo, hi), f"{lo:g}-{hi:g}"), lo, hi))
            else:
                raise ValueError(f"area range {a!r}: expected (lo, hi), (name, lo, hi) or AreaRange")
    if not items:
        raise ValueError("area_ranges is empty")
    for a in items:
        if not a.lo <= a.hi:
            raise ValueError(f"area range {a.name!r}: lo {a.lo} > hi {a.hi}")
    names = [a.name for a in items]
    if len(set(names)) != len(names):
        raise ValueError(f"area range names must be unique, got {names}")
    return tuple(items)


def make_params(
    iou_type: str,
    *,
    gt_img_ids: Iterable[int],
    gt_cat_ids: Iterable[int],
    max_dets: Sequence[int] | None = None,
    area_ranges=None,
    iou_thresholds: Sequence[float] | np.ndarray | None = None,
    img_ids: Iterable[int] | None = None,
    cat_ids: Iterable[int] | None = None,
    use_cats: bool = True,
    sigmas: Sequence[float] | np.ndarray | None = None,
) -> COCOParams:
    """Build :class:`COCOParams` from user arguments, with pycocotools' defaults and normalisation.

    ``sigmas`` are per-keypoint OKS sigmas *as published* (0.26 for COCO's nose, like
    :attr:`~sceneparse.structures.keypoints.KeypointSet.sigmas`); they are divided by 10 here, as
    pycocotools' ``kpt_oks_sigmas`` are. ``None`` means COCO's 17 person sigmas.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if max_dets is None:
        max_dets = KEYPOINT_MAX_DETS if iou_type == "keypoints" else DETECTION_MAX_DETS
    md = sorted(int(m) for m in max_dets)
    if not md or md[0] < 0:
        raise ValueError(f"max_dets must be a non-empty list of non-negative ints, got {list(max_dets)}")
    thr = coco_iou_thresholds() if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64).ravel()
    if thr.size == 0 or not np.all(np.isfinite(thr)):
        raise ValueError(f"iou_thresholds must be a non-empty list of finite numbers, got {thr.tolist()}")
    imgs = np.unique(np.asarray(list(gt_img_ids if img_ids is None else img_ids), dtype=np.int64))
    cats = np.unique(np.asarray(list(gt_cat_ids if cat_ids is None else cat_ids), dtype=np.int64))
    kpt_sigmas = None
    if iou_type == "keypoints":
        if sigmas is None:
            sigmas = COCO_OKS_SIGMAS
        kpt_sigmas = np.asarray(sigmas, dtype=np.float64).ravel() / 10.0
        if kpt_sigmas.size == 0 or not np.all(np.isfinite(kpt_sigmas)) or (kpt_sigmas <= 0).any():
            raise ValueError(f"sigmas must be positive numbers, got {np.asarray(sigmas).tolist()}")
    return COCOParams(
        iou_type=iou_type,
        iou_thresholds=thr,
        rec_thresholds=coco_recall_thresholds(),
        area_ranges=_area_ranges(area_ranges, iou_type),
        max_dets=tuple(md),
        img_ids=imgs,
        cat_ids=cats if use_cats else np.array([-1], dtype=np.int64),
        use_cats=bool(use_cats),
        evaluated_cat_ids=cats,
        kpt_oks_sigmas=kpt_sigmas,
    )
