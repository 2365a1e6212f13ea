"""Dense per-pixel results: :class:`SemanticMap` and :class:`PanopticMap`.

COCO panoptic PNGs encode a segment id per pixel as ``id = R + 256 * G + 256**2 * B``;
id 0 is void (unlabelled). The codec (:func:`rgb2id` / :func:`id2rgb`) is plain numpy in
:mod:`sceneparse.conventions`, re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..conventions import IGNORE_INDEX, id2rgb, rgb2id  # noqa: F401  (codec re-exported)


def _int64_map(x, what: str) -> torch.Tensor:
    """A tensor or array-like as an ``int64 [H, W]`` tensor; ``ValueError`` naming ``what`` otherwise."""
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if x.ndim != 2:
        raise ValueError(f"{what} must be [H, W], got {tuple(x.shape)}")
    return x.long()


@dataclass
class SemanticMap:
    """``labels``: ``int64 [H, W]`` contiguous labels; ``ignore_index`` marks void pixels.
    ``scores`` (optional): ``float32 [C, H, W]`` class probabilities for results."""

    labels: torch.Tensor
    ignore_index: int = IGNORE_INDEX
    scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.labels = _int64_map(self.labels, "SemanticMap labels")

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    def to(self, device) -> "SemanticMap":
        return SemanticMap(self.labels.to(device), self.ignore_index,
                           None if self.scores is None else self.scores.to(device))


@dataclass
class SegmentInfo:
    """One panoptic segment. ``category_id`` is the dataset id; ``label`` the contiguous index."""

    id: int
    category_id: int
    label: int = -1
    isthing: bool = True
    iscrowd: bool = False
    area: int = 0
    bbox: tuple[float, float, float, float] | None = None  # COCO XYWH, as in panoptic JSON
    score: float | None = None

    def to_coco(self) -> dict:
        d = {"id": int(self.id), "category_id": int(self.category_id), "iscrowd": int(self.iscrowd),
             "area": int(self.area)}
        if self.bbox is not None:
            d["bbox"] = [float(v) for v in self.bbox]
        return d


@dataclass
class PanopticMap:
    """``ids``: ``int64 [H, W]`` segment id per pixel (0 = void); ``segments``: one info per id."""

    ids: torch.Tensor
    segments: list[SegmentInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ids = _int64_map(self.ids, "PanopticMap ids")
        seen = [s.id for s in self.segments]
        if len(set(seen)) != len(seen):
            raise ValueError("PanopticMap has duplicate segment ids")
        if 0 in seen:
            raise ValueError("segment id 0 is reserved for void")

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.ids.shape[0]), int(self.ids.shape[1])

    def to(self, device) -> "PanopticMap":
        return PanopticMap(self.ids.to(device), list(self.segments))

    def segment(self, segment_id: int) -> SegmentInfo:
        for s in self.segments:
            if s.id == segment_id:
                return s
        raise KeyError(f"no segment with id {segment_id}")

    def with_ids(self, ids: torch.Tensor) -> "PanopticMap":
        """The same segments over a new id map (the old one moved by a resize, flip or crop): each
        segment's ``area`` and ``bbox`` (COCO XYWH, pixel edges) are recomputed from ``ids``, and
        segments without a pixel left are dropped. Vectorised over pixels (``scatter_reduce``)."""
        ids = torch.as_tensor(ids).long()
        if not self.segments:
            return PanopticMap(ids, [])
        h, w = ids.shape
        uniq, inv, counts = torch.unique(ids.flatten(), return_inverse=True, return_counts=True)
        xs = torch.arange(w, device=ids.device).repeat(h)
        ys = torch.arange(h, device=ids.device).repeat_interleave(w)

        def reduce(values: torch.Tensor, how: str, start: int) -> list[int]:
            return torch.full((len(uniq),), start, dtype=torch.long, device=ids.device) \
                .scatter_reduce(0, inv, values, how).tolist()

        x0, y0 = reduce(xs, "amin", w), reduce(ys, "amin", h)
        x1, y1 = reduce(xs, "amax", -1), reduce(ys, "amax", -1)
        where = {u: i for i, u in enumerate(uniq.tolist())}
        area = counts.tolist()
        segments = []
        for seg in self.segments:
            i = where.get(int(seg.id))
            if i is not None:
                bbox = (float(x0[i]), float(y0[i]), float(x1[i] - x0[i] + 1), float(y1[i] - y0[i] + 1))
                segments.append(replace(seg, area=int(area[i]), bbox=bbox))
        return PanopticMap(ids, segments)

    def to_rgb(self) -> np.ndarray:
        """``uint8 [H, W, 3]`` COCO panoptic PNG encoding."""
        return id2rgb(self.ids.cpu().numpy())

    @classmethod
    def from_rgb(cls, rgb: np.ndarray, segments: list[SegmentInfo]) -> "PanopticMap":
        return cls(torch.from_numpy(rgb2id(rgb)), segments)

    def semantic(self, num_void: int = IGNORE_INDEX) -> SemanticMap:
        """The semantic map implied by the segments' ``label`` (void -> ``num_void``). Vectorised."""
        ids = self.ids
        if not self.segments:
            return SemanticMap(torch.full_like(ids, num_void))
        seg_ids = torch.tensor([s.id for s in self.segments], dtype=torch.long)
        seg_labels = torch.tensor([s.label for s in self.segments], dtype=torch.long)
        order = torch.argsort(seg_ids)
        seg_ids, seg_labels = seg_ids[order], seg_labels[order]
        pos = torch.searchsorted(seg_ids, ids.flatten()).clamp(max=len(seg_ids) - 1)
        found = seg_ids[pos] == ids.flatten()
        out = torch.where(found, seg_labels[pos], torch.full_like(pos, num_void))
        return SemanticMap(out.view_as(ids))
