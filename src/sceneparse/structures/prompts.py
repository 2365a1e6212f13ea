"""Prompts for promptable segmentation (Segment Anything style): what to segment in one image.

One :class:`Prompts` per image; ``N`` prompts, each giving one mask (``Instances`` row ``i`` of the
model's result answers prompt ``i``). A prompt is a box, a set of points, or both. Frame: the
original image's pixels (XYXY float32 for boxes, ``x, y`` for points), as every result is.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prompts:
    """Attributes:
        boxes: ``float32 [N, 4]`` XYXY, or ``None``.
        points: ``float32 [N, P, 2]`` ``x, y`` per prompt, or ``None``.
        point_labels: ``int64 [N, P]``: 1 foreground, 0 background (``None``: all foreground).
    """

    boxes: torch.Tensor | None = None
    points: torch.Tensor | None = None
    point_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.boxes is None and self.points is None:
            raise ValueError("a prompt needs boxes or points")
        if self.boxes is not None:
            self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32)
            if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
                raise ValueError(f"prompt boxes must be [N, 4], got {tuple(self.boxes.shape)}")
            if not bool(torch.isfinite(self.boxes).all()):
                raise ValueError("prompt boxes must be finite")
        if self.points is not None:
            self.points = torch.as_tensor(self.points, dtype=torch.float32)
            if self.points.ndim != 3 or self.points.shape[2] != 2:
                raise ValueError(f"prompt points must be [N, P, 2], got {tuple(self.points.shape)}")
            if self.point_labels is None:
                self.point_labels = torch.ones(self.points.shape[:2], dtype=torch.long, device=self.points.device)
            self.point_labels = torch.as_tensor(self.point_labels, dtype=torch.long)
            if tuple(self.point_labels.shape) != tuple(self.points.shape[:2]):
                raise ValueError(f"point_labels must be {tuple(self.points.shape[:2])}, "
                                 f"got {tuple(self.point_labels.shape)}")
        if self.boxes is not None and self.points is not None and self.boxes.shape[0] != self.points.shape[0]:
            raise ValueError(f"{self.boxes.shape[0]} box prompts but {self.points.shape[0]} point prompts")

    def __len__(self) -> int:
        return int((self.boxes if self.boxes is not None else self.points).shape[0])

    def to(self, device) -> "Prompts":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Prompts(mv(self.boxes), mv(self.points), mv(self.point_labels))


__all__ = ["Prompts"]
