"""Rasterising geometry into crops: the one place that maps continuous pixel coordinates to OpenCV.

sceneparse's frame puts pixel ``(i, j)``'s centre at ``(j + 0.5, i + 0.5)``; OpenCV puts it at
``(j, i)``. Drawing calls therefore subtract 0.5 and pass 4 fractional bits (``shift=4``), so
geometry keeps sub-pixel precision and a shape drawn at ``(x, y)`` covers the pixel ``floor(x, y)``.
All drawing is done in a crop around the object (``Sprite``), never over the full image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass
class Sprite:
    """A rasterised thing, before occlusion.

    Attributes:
        x0, y0: top-left pixel of the crop in the image.
        mask: ``bool [h, w]`` pixels the thing covers (inside the image only).
        rgb: ``float32 [h, w, 3]`` its colours (meaningful where ``mask``).
        keypoints: ``float32 [K, 2]`` (x, y) in image px for persons, else ``None``.
    """

    x0: int
    y0: int
    mask: np.ndarray
    rgb: np.ndarray
    keypoints: np.ndarray | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Crop as integer ``(x0, y0, x1, y1)`` (exclusive ends)."""
        return self.x0, self.y0, self.x0 + self.mask.shape[1], self.y0 + self.mask.shape[0]


def crop_box(points: np.ndarray, pad: float, image_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Integer crop ``(x0, y0, x1, y1)`` holding ``points [P, 2]`` grown by ``pad`` px, clipped to the
    image; ``None`` when nothing of it lies inside."""
    h, w = image_size
    x0 = max(0, int(math.floor(points[:, 0].min() - pad)) - 1)
    y0 = max(0, int(math.floor(points[:, 1].min() - pad)) - 1)
    x1 = min(w, int(math.ceil(points[:, 0].max() + pad)) + 1)
    y1 = min(h, int(math.ceil(points[:, 1].max() + pad)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def to_cv(points: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Continuous image coordinates ``[..., 2]`` -> OpenCV fixed-point crop coordinates (int32)."""
    p = (np.asarray(points, dtype=np.float64) - (x0 + 0.5, y0 + 0.5)) * _ONE
    return np.round(p).astype(np.int32)


def fill_polygons(canvas: np.ndarray, polygons: list[np.ndarray], x0: int, y0: int, value=1) -> None:
    """Fill ``polygons`` (list of ``[P, 2]`` rings, even-odd: inner rings make holes) into ``canvas``."""
    cv2.fillPoly(canvas, [to_cv(p, x0, y0) for p in polygons], value, cv2.LINE_8, _SHIFT)


def draw_segment(canvas: np.ndarray, p: np.ndarray, q: np.ndarray, thickness: float, x0: int, y0: int, value=1) -> None:
    """A thick segment ``p -> q`` with round caps (a limb)."""
    a, b = to_cv(p, x0, y0), to_cv(q, x0, y0)
    t = max(1, int(round(thickness)))
    cv2.line(canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), value, t, cv2.LINE_8, _SHIFT)
    r = max(0.5, thickness / 2)
    draw_disc(canvas, p, r, x0, y0, value)
    draw_disc(canvas, q, r, x0, y0, value)


def draw_disc(canvas: np.ndarray, c: np.ndarray, radius: float, x0: int, y0: int, value=1) -> None:
    """A filled disc of ``radius`` px centred at ``c``."""
    a = to_cv(c, x0, y0)
    cv2.circle(canvas, (int(a[0]), int(a[1])), max(1, int(round(radius * _ONE))), value, -1, cv2.LINE_8, _SHIFT)
