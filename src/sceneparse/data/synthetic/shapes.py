"""Shape things: ellipse, rectangle, triangle, star, ring and cross, as polygons in image pixels.

A :class:`ShapeSpec` fixes one object's geometry and look; :func:`shape_polygons` turns it into
rings of vertices (continuous px, even-odd filling: a ring's inner boundary is a hole) and
:func:`render_shape` rasterises it into a :class:`~.raster.Sprite`. Intra-class variation comes from
size, aspect ratio, rotation and the class parameters (star points and depth, ring thickness and
gap, cross arm width, triangle corner angles), plus colour and fill.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .raster import Sprite, crop_box, fill_polygons
from .textures import FILL_KINDS, fill, random_color

#: Shape classes this module draws (``person`` is drawn by :mod:`.person`).
SHAPE_NAMES: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "star", "ring", "cross")


@dataclass
class ShapeSpec:
    """One shape thing.

    Attributes:
        name: class name, one of :data:`SHAPE_NAMES`.
        center: ``(x, y)`` in continuous image px.
        size: extent along the shape's major axis in px (a circle's diameter, a rectangle's long side).
        aspect: minor / major extent in ``(0, 1]``.
        angle: rotation in radians (clockwise on screen, as y points down).
        points: star: number of tips.
        inner: star: inner / outer radius; ring: inner / outer radius; cross: arm width / arm span.
        gap: ring: angular opening in radians (0 = closed ring, which has a hole).
        corners: triangle: angular positions (radians) of the 3 corners on the unit circle before scaling.
        fill: fill style (see :data:`~.textures.FILL_KINDS`); color1 / color2: RGB 0..255.
    """

    name: str
    center: tuple[float, float]
    size: float
    aspect: float = 1.0
    angle: float = 0.0
    points: int = 5
    inner: float = 0.5
    gap: float = 0.0
    corners: tuple[float, float, float] = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
    fill: str = "solid"
    color1: tuple[float, float, float] = (200.0, 50.0, 50.0)
    color2: tuple[float, float, float] = (50.0, 50.0, 200.0)

    def __post_init__(self) -> None:
        if self.name not in SHAPE_NAMES:
            raise ValueError(f"ShapeSpec.name: unknown shape {self.name!r}; expected one of {SHAPE_NAMES}")
        if not (self.size > 0 and 0 < self.aspect <= 1):
            raise ValueError(f"ShapeSpec: need size > 0 and 0 < aspect <= 1 (got size={self.size}, aspect={self.aspect})")


def _circle(n: int, start: float = 0.0, stop: float = 2 * math.pi, endpoint: bool = False) -> np.ndarray:
    t = np.linspace(start, stop, n, endpoint=endpoint)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _unit_rings(spec: ShapeSpec) -> list[np.ndarray]:
    """The shape's rings in its own frame, extents in ``[-1, 1]`` on both axes (before aspect)."""
    n = int(np.clip(spec.size * 0.6, 16, 96))
    name = spec.name
    if name == "ellipse":
        return [_circle(n)]
    if name == "rectangle":
        return [np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])]
    if name == "triangle":
        return [np.stack([np.cos(spec.corners), np.sin(spec.corners)], axis=1)]
    if name == "star":
        k = 2 * int(spec.points)
        r = np.where(np.arange(k) % 2 == 0, 1.0, spec.inner)
        t = -math.pi / 2 + np.arange(k) * math.pi / spec.points
        return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]
    if name == "ring":
        if spec.gap <= 0:
            return [_circle(n), spec.inner * _circle(n)[::-1]]
        half = spec.gap / 2
        outer = _circle(n, half, 2 * math.pi - half, endpoint=True)
        inner = spec.inner * _circle(n, 2 * math.pi - half, half, endpoint=True)
        return [np.concatenate([outer, inner])]
    if name == "cross":
        w = spec.inner
        return [np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w],
                          [-1, w], [-1, -w], [-w, -w]], dtype=np.float64)]
    raise ValueError(f"unknown shape {name!r}")


def shape_polygons(spec: ShapeSpec) -> list[np.ndarray]:
    """Rings ``[P, 2]`` (x, y) of the shape in continuous image px (scaled, rotated, translated)."""
    sx, sy = spec.size / 2, spec.size * spec.aspect / 2
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    rot = np.array([[c, s], [-s, c]])  # row vectors: p @ rot rotates by +angle (clockwise on screen)
    out = []
    for ring in _unit_rings(spec):
        p = (ring * (sx, sy)) @ rot + spec.center
        out.append(p)
    return out


def render_shape(rng: np.random.Generator, spec: ShapeSpec, image_size: tuple[int, int]) -> Sprite | None:
    """Rasterise a shape into a crop (``None`` when it lies entirely outside the image)."""
    polys = shape_polygons(spec)
    box = crop_box(np.concatenate(polys), 1.0, image_size)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    fill_polygons(canvas, polys, x0, y0)
    if not canvas.any():
        return None
    rgb = fill(rng, y1 - y0, x1 - x0, spec.fill, np.asarray(spec.color1, np.float32), np.asarray(spec.color2, np.float32))
    return Sprite(x0, y0, canvas.astype(bool), rgb)


def sample_shape(rng: np.random.Generator, name: str, center: tuple[float, float], size: float) -> ShapeSpec:
    """A random shape of class ``name`` at ``center`` with major extent ``size`` (class-specific
    aspect and parameters, random rotation, colours and fill)."""
    angle = rng.uniform(0, 2 * math.pi)
    kw: dict = {}
    if name == "ellipse":
        aspect = 1.0 if rng.random() < 0.35 else rng.uniform(0.35, 1.0)
    elif name == "rectangle":
        aspect = 1.0 if rng.random() < 0.2 else rng.uniform(0.25, 1.0)
    elif name == "triangle":
        aspect = rng.uniform(0.6, 1.0)
        gaps = rng.uniform(0.6, 1.4, size=3)  # shares of the circle between consecutive corners
        gaps = gaps / gaps.sum() * 2 * math.pi
        start = rng.uniform(0, 2 * math.pi)
        kw["corners"] = tuple(float(v) for v in start + np.concatenate([[0.0], np.cumsum(gaps[:2])]))
    elif name == "star":
        aspect = rng.uniform(0.8, 1.0)
        kw["points"] = int(rng.integers(4, 9))
        kw["inner"] = rng.uniform(0.3, 0.6)
    elif name == "ring":
        aspect = rng.uniform(0.55, 1.0)
        kw["inner"] = rng.uniform(0.45, 0.75)
        kw["gap"] = 0.0 if rng.random() < 0.5 else rng.uniform(0.3, 1.6)
    elif name == "cross":
        aspect = rng.uniform(0.7, 1.0)
        kw["inner"] = rng.uniform(0.18, 0.4)
    else:
        raise ValueError(f"unknown shape {name!r}; expected one of {SHAPE_NAMES}")
    c1 = random_color(rng)
    c2 = np.clip(c1 + rng.uniform(-90, 90, 3), 0, 255) if rng.random() < 0.6 else random_color(rng)
    return ShapeSpec(name=name, center=(float(center[0]), float(center[1])), size=float(size), aspect=float(aspect),
                     angle=float(angle), fill=str(rng.choice(FILL_KINDS)),
                     color1=tuple(float(v) for v in c1), color2=tuple(float(v) for v in c2), **kw)
