"""Explanation pictures as data: what a model shows about one image, described, not drawn.

A model's :meth:`~sceneparse.models.base.SceneModel.explain` returns a list of :class:`Explanation`
(one picture each); :mod:`sceneparse.viz.explain` draws them (models never draw, viz never imports
models). An explanation is a row of :class:`Panel` s under one title, with a caption that says what
the picture shows in the lecture notes' terms, plus ``data``: the numbers the marks were made from
(so that a test, or a user, can check that the picture shows the decoder's own numbers).

A panel is a background image in **its own pixels** (the original image, ``uint8 [H, W, 3]``), an
optional :class:`ScalarMap` (a heatmap / attention map of any resolution, resampled onto the part of
the image its grid covers and coloured by a colour scale, with a colour bar), and marks in the same
pixel frame (``x`` right, ``y`` down, COCO's rule: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``):

* :class:`BoxMark`: an XYXY box with a text label;
* :class:`PointMark`: a dot (e.g. a heatmap peak) with a text label;
* :class:`ArrowMark`: a vector from ``start`` to ``end`` (e.g. a size regression);
* :class:`SegmentMark`: a line between two points with text at its middle (e.g. a distance);
* :class:`TextMark`: free text anchored at a point.

Colours: a mark's ``color`` is an ``(r, g, b)`` triple; else its ``value`` is looked up in the panel's
:class:`ColorScale` (the overlay's, or ``Panel.scale``); else its ``label_index`` picks the class
colour; else white. ``alpha`` in ``[0, 1]`` makes marks faint (e.g. DETR's "no object" queries).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # numpy alone at run time: importing the types (and viz) does not import torch
    from torch import Tensor

__all__ = ["ArrowMark", "BoxMark", "ColorScale", "Explanation", "Panel", "PointMark", "RGB", "ScalarMap",
           "SegmentMark", "TextMark", "as_rgb8"]

#: an ``(r, g, b)`` colour, each ``0..255``
RGB = tuple[int, int, int]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _numpy(x: Any) -> np.ndarray:
    """A tensor (any device, with or without grad) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if _is_tensor(x) else np.asarray(x)


def as_rgb8(image: "Tensor | np.ndarray") -> np.ndarray:
    """``uint8 [H, W, 3]`` from a model input (``float [3, H, W]`` tensor in ``[0, 1]`` or ``uint8 [3,
    H, W]`` tensor) or an ``[H, W, 3]`` array (``uint8``, or float in ``[0, 1]``); grey ``[H, W]`` is
    repeated to three channels."""
    a = _numpy(image)
    if _is_tensor(image) and a.ndim == 3 and a.shape[0] in (1, 3):  # tensors are channels-first
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"an explanation's image must be [3, H, W] (tensor) or [H, W, 3] (array), "
                         f"got shape {tuple(a.shape)}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(a)


def _xy(p: Sequence[float], what: str) -> tuple[float, float]:
    v = tuple(float(c) for c in np.asarray(_numpy(p), dtype=np.float64).reshape(-1))
    if len(v) != 2 or not all(np.isfinite(v)):
        raise ValueError(f"{what} must be a finite (x, y), got {p!r}")
    return v  # type: ignore[return-value]


def _rgb(c: Sequence[int] | None) -> RGB | None:
    if c is None:
        return None
    v = tuple(int(x) for x in c)
    if len(v) != 3 or not all(0 <= x <= 255 for x in v):
        raise ValueError(f"a colour is (r, g, b) in 0..255, got {c!r}")
    return v  # type: ignore[return-value]


def _alpha(a: float) -> float:
    a = float(a)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {a}")
    return a


@dataclass(frozen=True, kw_only=True)
class _Mark:
    """What every mark has: a text ``label`` (``""``: none), an explicit ``color``, a ``value`` on the
    panel's colour scale, a class ``label_index`` (class colour), and an opacity ``alpha``."""

    label: str = ""
    color: RGB | None = None
    value: float | None = None
    label_index: int | None = None
    alpha: float = 1.0

    def _check(self) -> None:
        object.__setattr__(self, "color", _rgb(self.color))
        object.__setattr__(self, "alpha", _alpha(self.alpha))
        if self.value is not None:
            object.__setattr__(self, "value", float(self.value))
        if self.label_index is not None:
            object.__setattr__(self, "label_index", int(self.label_index))
        object.__setattr__(self, "label", str(self.label))


@dataclass(frozen=True, kw_only=True)
class BoxMark(_Mark):
    """An XYXY box ``(x0, y0, x1, y1)`` in panel pixels; ``width``: outline width at the original
    scale (the renderer scales it with the picture)."""

    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    width: float = 2.0

    def __post_init__(self) -> None:
        b = tuple(float(c) for c in np.asarray(_numpy(self.box), dtype=np.float64).reshape(-1))
        if len(b) != 4 or not all(np.isfinite(b)):
            raise ValueError(f"BoxMark.box must be 4 finite numbers (x0, y0, x1, y1), got {self.box!r}")
        object.__setattr__(self, "box", b)
        self._check()


@dataclass(frozen=True, kw_only=True)
class PointMark(_Mark):
    """A dot at ``xy`` of ``radius`` px (original scale)."""

    xy: tuple[float, float] = (0.0, 0.0)
    radius: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "xy", _xy(self.xy, "PointMark.xy"))
        self._check()


@dataclass(frozen=True, kw_only=True)
class ArrowMark(_Mark):
    """A vector from ``start`` to ``end`` (the head at ``end``); ``label`` is written at ``end``."""

    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    width: float = 1.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _xy(self.start, "ArrowMark.start"))
        object.__setattr__(self, "end", _xy(self.end, "ArrowMark.end"))
        self._check()


@dataclass(frozen=True, kw_only=True)
class SegmentMark(_Mark):
    """A line between ``start`` and ``end`` with ``label`` at its middle (e.g. a distance, an IoU)."""

    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)
    width: float = 1.5
    dashed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _xy(self.start, "SegmentMark.start"))
        object.__setattr__(self, "end", _xy(self.end, "SegmentMark.end"))
        self._check()


@dataclass(frozen=True, kw_only=True)
class TextMark(_Mark):
    """``label`` written at ``xy`` (its top-left corner)."""

    xy: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "xy", _xy(self.xy, "TextMark.xy"))
        self._check()


@dataclass(frozen=True)
class ColorScale:
    """A colour scale: a matplotlib colormap name over ``[vmin, vmax]``, with a colour-bar ``title``
    (e.g. ``"peak score"``, ``"attention weight"``)."""

    vmin: float = 0.0
    vmax: float = 1.0
    colormap: str = "viridis"
    title: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "vmin", float(self.vmin))
        object.__setattr__(self, "vmax", float(self.vmax))
        if not (np.isfinite(self.vmin) and np.isfinite(self.vmax)) or self.vmax < self.vmin:
            raise ValueError(f"ColorScale needs finite vmin <= vmax, got {self.vmin}, {self.vmax}")

    def normalise(self, v: np.ndarray | float) -> np.ndarray:
        """``(v - vmin) / (vmax - vmin)`` clipped to ``[0, 1]`` (0 where the range is empty)."""
        span = self.vmax - self.vmin
        v = np.asarray(v, dtype=np.float64)
        return np.clip((v - self.vmin) / span, 0.0, 1.0) if span > 0 else np.zeros_like(v)


@dataclass(frozen=True)
class ScalarMap:
    """A map of scalars ``values [h, w]`` (any resolution, e.g. a stride-4 heatmap or a stride-32
    attention grid) laid over the panel: its grid covers ``extent = (x0, y0, x1, y1)`` in panel pixels
    (``None``: the whole image; a grid that covers the padded network input extends past the image and
    is cropped), each cell a ``(x1 - x0) / w`` x ``(y1 - y0) / h`` rectangle. Drawn resampled
    (bilinear) onto the image and coloured by ``scale``; ``alpha``: the overlay's opacity where the
    value is at ``vmax`` (opacity grows with the value, so low values leave the image visible).
    ``scale=None``: the data's own range. ``resample``: ``"bilinear"`` (default) or ``"nearest"`` (each
    cell drawn as a flat rectangle: for pictures whose point is the cells themselves, e.g. nearest-
    neighbour upsampling or max-unpooling's sparse map)."""

    values: np.ndarray
    extent: tuple[float, float, float, float] | None = None
    scale: ColorScale | None = None
    alpha: float = 0.6
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        v = _numpy(self.values)
        if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
            raise ValueError(f"ScalarMap.values must be a 2-D [h, w] map, got shape {tuple(v.shape)}")
        v = v.astype(np.float32)
        if not np.isfinite(v).all():
            raise ValueError("ScalarMap.values must be finite")
        object.__setattr__(self, "values", v)
        if self.extent is not None:
            e = tuple(float(c) for c in self.extent)
            if len(e) != 4 or not (e[2] > e[0] and e[3] > e[1]):
                raise ValueError(f"ScalarMap.extent must be (x0, y0, x1, y1) with x1 > x0, y1 > y0, got {self.extent}")
            object.__setattr__(self, "extent", e)
        if self.scale is None:
            object.__setattr__(self, "scale", ColorScale(float(v.min()), float(v.max())))
        object.__setattr__(self, "alpha", _alpha(self.alpha))
        if self.resample not in ("bilinear", "nearest"):
            raise ValueError(f"ScalarMap.resample must be 'bilinear' or 'nearest', got {self.resample!r}")


@dataclass(frozen=True)
class Panel:
    """One picture of a row: ``image`` (converted to ``uint8 [H, W, 3]``, see :func:`as_rgb8`), its
    ``title``, an optional ``overlay``, the marks, and ``scale``: the colour scale of marks with a
    ``value`` when there is no overlay (it gets a colour bar too)."""

    image: np.ndarray
    title: str = ""
    overlay: ScalarMap | None = None
    boxes: tuple[BoxMark, ...] = ()
    points: tuple[PointMark, ...] = ()
    arrows: tuple[ArrowMark, ...] = ()
    segments: tuple[SegmentMark, ...] = ()
    texts: tuple[TextMark, ...] = ()
    scale: ColorScale | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", as_rgb8(self.image))
        for name, kind in (("boxes", BoxMark), ("points", PointMark), ("arrows", ArrowMark),
                           ("segments", SegmentMark), ("texts", TextMark)):
            marks = tuple(getattr(self, name))
            bad = [type(m).__name__ for m in marks if not isinstance(m, kind)]
            if bad:
                raise TypeError(f"Panel.{name} holds {kind.__name__}s, got {bad[:3]}")
            object.__setattr__(self, name, marks)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the background image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def color_scale(self) -> ColorScale | None:
        """The scale of the colour bar: the overlay's, else :attr:`scale`."""
        return self.overlay.scale if self.overlay is not None else self.scale


@dataclass(frozen=True)
class Explanation:
    """One picture: ``name`` (a file-name-safe word, e.g. ``"centernet_heatmap"``), ``title``,
    ``caption`` (what it shows, in the notes' terms), ``panels`` side by side, and ``data``: the
    numbers behind the marks (tensors or plain values, keyed by what they are, e.g. ``scores``)."""

    name: str
    title: str
    caption: str
    panels: tuple[Panel, ...]
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"Explanation.name must be a file-name-safe word ([A-Za-z0-9_.-]), got {self.name!r}")
        panels = tuple(self.panels)
        if not panels or not all(isinstance(p, Panel) for p in panels):
            raise ValueError("an Explanation needs at least one Panel")
        object.__setattr__(self, "panels", panels)
        object.__setattr__(self, "data", dict(self.data))
