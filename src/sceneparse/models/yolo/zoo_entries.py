"""Zoo builders of the YOLO family: one per ultralytics variant (``yolov8n`` ... ``yolo11x``)."""
from __future__ import annotations

from typing import Any, Callable

from ..zoo import register
from .detector import SCALES, YOLODetector


def _builder(family: str, scale: str) -> Callable[..., YOLODetector]:
    def build(*, num_classes: int = 80, **kwargs: Any) -> YOLODetector:
        return YOLODetector(family, scale, num_classes, **kwargs)

    build.__name__ = f"{family}{scale}"
    build.__qualname__ = build.__name__
    build.__doc__ = (f"ultralytics' {family}{scale} ({family}.yaml, scale {scale}: depth/width/max channels "
                     f"{SCALES[family][scale]}); keyword arguments go to :class:`YOLODetector`.")
    build.__annotations__["return"] = YOLODetector
    return build


BUILDERS = {f"{family}{scale}": register(f"{family}{scale}")(_builder(family, scale))
            for family in SCALES for scale in SCALES[family]}

__all__ = ["BUILDERS"]
