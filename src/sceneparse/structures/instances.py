"""``Instances``: the per-image result / target container (boxes, labels, scores, masks, keypoints).

All fields are optional but share the first dimension ``N``. Coordinates are XYXY absolute pixels
of the image whose ``(height, width)`` is ``image_size``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import torch

_FIELDS = ("boxes", "labels", "scores", "masks", "keypoints", "keypoint_scores")


@dataclass
class Instances:
    """Detections or annotated objects of one image.

    Attributes:
        image_size: ``(height, width)`` of the image the coordinates refer to.
        boxes: ``float32 [N, 4]`` XYXY absolute pixels.
        labels: ``int64 [N]`` contiguous labels ``0..C-1``.
        scores: ``float32 [N]`` confidences in ``[0, 1]`` (results only).
        masks: ``bool [N, H, W]`` full-image masks.
        keypoints: ``float32 [N, K, 3]`` as ``(x, y, v)``.
        keypoint_scores: ``float32 [N, K]`` (results only).
    """

    image_size: tuple[int, int]
    boxes: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    keypoint_scores: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        n = None
        for name in _FIELDS:
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v)
                setattr(self, name, v)
            if n is None:
                n = v.shape[0]
            elif v.shape[0] != n:
                raise ValueError(f"Instances field {name!r} has {v.shape[0]} rows, expected {n}")
        if self.boxes is not None and (self.boxes.ndim != 2 or self.boxes.shape[1] != 4):
            raise ValueError(f"boxes must be [N, 4], got {tuple(self.boxes.shape)}")
        if self.masks is not None and self.masks.ndim != 3:
            raise ValueError(f"masks must be [N, H, W], got {tuple(self.masks.shape)}")
        if self.keypoints is not None and (self.keypoints.ndim != 3 or self.keypoints.shape[2] != 3):
            raise ValueError(f"keypoints must be [N, K, 3], got {tuple(self.keypoints.shape)}")

    # ---- container protocol -------------------------------------------------------------
    def __len__(self) -> int:
        for name in _FIELDS:
            v = getattr(self, name)
            if v is not None:
                return int(v.shape[0])
        return 0

    def has(self, name: str) -> bool:
        return getattr(self, name, None) is not None

    def fields(self) -> dict[str, torch.Tensor]:
        """The fields that are set, by name."""
        return {n: getattr(self, n) for n in _FIELDS if getattr(self, n) is not None}

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> "Instances":
        """Select rows by int, slice, bool mask or index tensor/list; always returns ``Instances``."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        elif not isinstance(index, (slice, torch.Tensor)):
            index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, **{n: v[index] for n, v in self.fields().items()})

    def __iter__(self) -> Iterator["Instances"]:
        for i in range(len(self)):
            yield self[i]

    def to(self, device: torch.device | str) -> "Instances":
        return replace(self, **{n: v.to(device) for n, v in self.fields().items()})

    @staticmethod
    def cat(items: Sequence["Instances"]) -> "Instances":
        """Concatenate instances of the same image (same ``image_size`` and the same set fields)."""
        if len(items) == 0:
            raise ValueError("Instances.cat needs at least one element")
        size = items[0].image_size
        names = set(items[0].fields())
        for it in items[1:]:
            if it.image_size != size:
                raise ValueError(f"cannot concatenate Instances of sizes {size} and {it.image_size}")
            if set(it.fields()) != names:
                raise ValueError(f"cannot concatenate Instances with fields {sorted(names)} and {sorted(it.fields())}")
        return Instances(size, **{n: torch.cat([getattr(it, n) for it in items]) for n in names})

    @classmethod
    def empty(cls, image_size: tuple[int, int], *, with_scores: bool = True, masks: bool = False,
              num_keypoints: int = 0) -> "Instances":
        h, w = image_size
        kw = dict(boxes=torch.zeros((0, 4)), labels=torch.zeros((0,), dtype=torch.long))
        if with_scores:
            kw["scores"] = torch.zeros((0,))
        if masks:
            kw["masks"] = torch.zeros((0, h, w), dtype=torch.bool)
        if num_keypoints:
            kw["keypoints"] = torch.zeros((0, num_keypoints, 3))
            if with_scores:
                kw["keypoint_scores"] = torch.zeros((0, num_keypoints))
        return cls(image_size, **kw)

    def __repr__(self) -> str:
        parts = [f"num={len(self)}", f"image_size={self.image_size}"]
        for n, v in self.fields().items():
            parts.append(f"{n}={tuple(v.shape)}:{str(v.dtype).replace('torch.', '')}")
        return f"Instances({', '.join(parts)})"


__all__ = ["Instances"]
