"""What a COCO evaluation returns: the summary, the full arrays, per-category numbers and the matches."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .accumulate import accumulation_order
from .matching import dense_dt_gt
from .params import AreaRange, COCOParams
from .summary import StatSpec, summary_lines


@dataclass(frozen=True)
class CategoryStats(Mapping):
    """The summary numbers of one category (same names and definitions as the overall ``stats``,
    restricted to this category; -1 where it has no ground truth in that slice).

    Reads as a mapping: ``per_category[1]["AP"]``, ``dict(per_category[1])``.
    """

    cat_id: int
    name: str
    names: tuple[str, ...]
    values: tuple[float, ...]

    def __getitem__(self, key: str) -> float:
        try:
            return self.values[self.names.index(key)]
        except ValueError:
            raise KeyError(f"{key!r}; known: {list(self.names)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        vals = ", ".join(f"{n}={v:.3f}" for n, v in zip(self.names, self.values))
        return f"CategoryStats({self.cat_id} {self.name!r}: {vals})"


@dataclass
class CategoryMatches:
    """One category's detections in accumulation order (descending score; ties by image, then rank),
    at one IoU threshold, area range and maxDets: what a PR curve or an error analysis needs.

    ``tp`` / ``fp`` / ``ignored`` partition the detections. Precision/recall at each detection:
    ``cumsum(tp) / num_gt`` and ``cumsum(tp) / (cumsum(tp) + cumsum(fp))``.
    """

    cat_id: int
    iou_threshold: float
    area: str
    max_det: int
    dt_rows: np.ndarray  # int64 [n]: rows of Matches.dt_* arrays
    dt_ids: np.ndarray  # int64 [n]: result ids (1-based position in the results list)
    image_ids: np.ndarray  # int64 [n]
    scores: np.ndarray  # float64 [n], descending
    tp: np.ndarray  # bool [n]
    fp: np.ndarray  # bool [n]
    ignored: np.ndarray  # bool [n]
    matched_gt_ids: np.ndarray  # int64 [n]: annotation id of the matched ground truth, 0 if none
    num_gt: int  # regular (not ignored) ground truths of the category in this area range


@dataclass
class Matches:
    """Per-detection and per-ground-truth matching results (pycocotools' ``evalImgs``, as columns).

    Detections ("dt rows", ``D``) are those evaluated: in the evaluated images and categories,
    each (image, category) group truncated to its ``max_dets[-1]`` best; rows are ordered by group
    (image position, category position) then descending score. Ground truths ("gt rows", ``G``)
    are ordered by group then file order. Matching arrays are per IoU threshold ``T`` and area
    range ``A``.
    """

    params: COCOParams
    dt_ids: np.ndarray  # int64 [D]: result id (1-based position in the results list, as loadRes assigns)
    dt_image_ids: np.ndarray  # int64 [D]
    dt_category_ids: np.ndarray  # int64 [D]
    dt_scores: np.ndarray  # float64 [D]
    dt_areas: np.ndarray  # float64 [D]: loadRes' area (box, mask or keypoint extent)
    dt_rank: np.ndarray  # int64 [D]: 0-based rank by score within its (image, category) group
    dt_k: np.ndarray  # int64 [D]: K-axis index (position in params.cat_ids)
    dt_img: np.ndarray  # int64 [D]: position of the image in params.img_ids
    dt_ignore: np.ndarray  # bool [T, A, D]: pycocotools' dtIgnore
    dt_matched: np.ndarray  # bool [T, A, D]: pycocotools' dtMatches != 0 (a match to an annotation id 0 does not count)
    gt_ids: np.ndarray  # int64 [G]: annotation ids
    gt_image_ids: np.ndarray  # int64 [G]
    gt_category_ids: np.ndarray  # int64 [G]
    gt_areas: np.ndarray  # float64 [G]
    gt_iscrowd: np.ndarray  # bool [G]
    gt_ignore: np.ndarray  # bool [A, G]: pycocotools' gtIgnore (crowd / no keypoints / outside the area range)
    gt_k: np.ndarray  # int64 [G]
    gt_dt: np.ndarray  # int32 [T, A, G]: matched dt row, -1 if none (a crowd keeps its last match)
    #: the matches as int64 [M] index arrays (threshold, area range, dt row, gt row): dt_gt[t, a, d] == g
    match_index: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

    @functools.cached_property
    def dt_gt(self) -> np.ndarray:
        """``int32 [T, A, D]``: matched gt row, -1 if none (built from :attr:`match_index` on first use)."""
        return dense_dt_gt(*self.match_index, self.dt_ignore.shape)

    @property
    def tp(self) -> np.ndarray:
        """``bool [T, A, D]``: true positives."""
        return self.dt_matched & ~self.dt_ignore

    @property
    def fp(self) -> np.ndarray:
        """``bool [T, A, D]``: false positives."""
        return ~self.dt_matched & ~self.dt_ignore

    def category(self, cat_id: int, iou_index: int = 0, area: str = "all",
                 max_det: int | None = None) -> CategoryMatches:
        """The detections of ``cat_id`` (``-1`` when categories are pooled) in accumulation order."""
        p = self.params
        where = np.flatnonzero(p.cat_ids == cat_id)
        if where.size == 0:
            raise KeyError(f"category {cat_id} was not evaluated; evaluated: {p.cat_ids.tolist()}")
        k = int(where[0])
        a = p.area_index(area)
        m = p.max_dets[-1] if max_det is None else int(max_det)
        rows = np.flatnonzero((self.dt_k == k) & (self.dt_rank < m))
        rows = rows[accumulation_order(self.dt_k[rows], self.dt_scores[rows])]  # rows ascend: image, then rank
        gt_row = self.dt_gt[iou_index, a, rows]
        matched = self.dt_matched[iou_index, a, rows]
        ignored = self.dt_ignore[iou_index, a, rows]
        num_gt = int(np.count_nonzero((self.gt_k == k) & ~self.gt_ignore[a]))
        return CategoryMatches(
            cat_id=int(cat_id), iou_threshold=float(p.iou_thresholds[iou_index]), area=area, max_det=m,
            dt_rows=rows, dt_ids=self.dt_ids[rows], image_ids=self.dt_image_ids[rows], scores=self.dt_scores[rows],
            tp=matched & ~ignored, fp=~matched & ~ignored, ignored=ignored,
            matched_gt_ids=np.where(gt_row >= 0, self.gt_ids[np.maximum(gt_row, 0)], 0) if self.gt_ids.size
            else np.zeros(rows.size, np.int64),
            num_gt=num_gt,
        )


@dataclass
class COCOEvalResult:
    """A COCO evaluation (pycocotools' ``COCOeval`` after evaluate / accumulate / summarize).

    Arrays use pycocotools' axes: ``T`` IoU thresholds, ``R`` recall thresholds, ``K`` categories
    (``params.cat_ids``), ``A`` area ranges, ``M`` maxDets. ``-1`` marks settings without ground truth.
    """

    iou_type: str
    params: COCOParams
    stats: np.ndarray  # float64 [12] (bbox/segm) or [10] (keypoints), pycocotools' order
    stat_names: list[str]
    stat_specs: list[StatSpec]
    precision: np.ndarray  # float64 [T, R, K, A, M]
    recall: np.ndarray  # float64 [T, K, A, M]
    scores: np.ndarray  # float64 [T, R, K, A, M]: detection score at each precision point
    per_category: dict[int, CategoryStats]
    matches: Matches
    category_names: dict[int, str]

    # -- parameters, under the names pycocotools users look for
    @property
    def iou_thresholds(self) -> np.ndarray:
        return self.params.iou_thresholds

    @property
    def rec_thresholds(self) -> np.ndarray:
        return self.params.rec_thresholds

    @property
    def area_ranges(self) -> tuple[AreaRange, ...]:
        return self.params.area_ranges

    @property
    def area_names(self) -> list[str]:
        return self.params.area_names

    @property
    def max_dets(self) -> tuple[int, ...]:
        return self.params.max_dets

    @property
    def cat_ids(self) -> list[int]:
        return self.params.cat_ids.tolist()

    @property
    def img_ids(self) -> list[int]:
        return self.params.img_ids.tolist()

    def stat(self, name: str) -> float:
        """One summary number by name (``"AP"``, ``"AP50"``, ``"AR100"``, ...)."""
        if name not in self.stat_names:
            raise KeyError(f"{name!r}; known: {self.stat_names}")
        return float(self.stats[self.stat_names.index(name)])

    def summary(self) -> str:
        """The table pycocotools' ``summarize()`` prints."""
        return "\n".join(summary_lines(self.stats, self.stat_specs, self.params))

    def per_category_table(self) -> str:
        """One line per category: id, name and its summary numbers (``-1`` printed as ``-``)."""
        names = self.stat_names
        width = max([len(n) for n in self.category_names.values()] + [8])
        head = f"{'id':>5}  {'category':<{width}}  " + " ".join(f"{n:>6}" for n in names)
        lines = [head]
        for cid, cs in self.per_category.items():
            vals = " ".join(f"{v:6.3f}" if v > -1 else f"{'-':>6}" for v in cs.values)
            lines.append(f"{cid:>5}  {cs.name:<{width}}  {vals}")
        return "\n".join(lines)

    def to_dict(self, arrays: bool = False) -> dict:
        """JSON-ready: ``stats`` (pycocotools' order), ``stat_names``, ``metrics`` by name,
        ``per_category`` (keys are category ids as strings), ``params``; with ``arrays=True`` also
        ``precision`` / ``recall`` / ``scores`` as nested lists."""
        d = {
            "iou_type": self.iou_type,
            "stats": [float(v) for v in self.stats],
            "stat_names": list(self.stat_names),
            "metrics": {n: float(v) for n, v in zip(self.stat_names, self.stats)},
            "per_category": {str(cid): {"name": cs.name, **{n: float(v) for n, v in cs.items()}}
                             for cid, cs in self.per_category.items()},
            "params": self.params.to_dict(),
        }
        if arrays:
            d["precision"] = self.precision.tolist()
            d["recall"] = self.recall.tolist()
            d["scores"] = self.scores.tolist()
        return d
