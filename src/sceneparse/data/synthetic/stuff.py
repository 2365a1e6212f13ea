"""The stuff background: a horizon (sky above) and wavy bands of ground classes below.

Geometry: ``B`` bands stacked top to bottom, separated by ``B - 1`` boundary curves
``y = base + slope * (x - W/2) + sum_k a_k sin(2 pi f_k x / W + phi_k)`` (continuous pixel frame,
evaluated at pixel centres). A pixel belongs to band ``b`` = number of boundaries above its centre,
so the bands tile the image exactly: every pixel has one stuff class (no void).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .textures import STUFF_TEXTURES


@dataclass
class StuffLayout:
    """Band classes (top to bottom) and the boundary curves between them.

    Attributes:
        classes: stuff class name of each band, ``B`` names; neighbours differ.
        boundaries: ``float32 [B - 1, W]``: y (continuous px) of the boundary below band ``b`` at
            each column's centre; non-decreasing along axis 0 (a band may pinch to nothing).
    """

    classes: tuple[str, ...]
    boundaries: np.ndarray

    def __post_init__(self) -> None:
        b = np.asarray(self.boundaries, dtype=np.float32)
        if not self.classes or b.ndim != 2 or b.shape[0] != len(self.classes) - 1:
            raise ValueError(f"StuffLayout: {len(self.classes)} band classes need boundaries of shape "
                             f"[{len(self.classes) - 1}, W], got {b.shape}")
        self.boundaries = np.sort(b, axis=0)

    def band_index(self, height: int) -> np.ndarray:
        """``uint8 [H, W]``: band of each pixel (its centre's y compared with each boundary)."""
        ys = np.arange(height, dtype=np.float32)[:, None] + np.float32(0.5)
        band = np.zeros((height, self.boundaries.shape[1]), dtype=np.uint8)
        for b in range(self.boundaries.shape[0]):  # B - 1 <= 3 curves, each a vectorised compare
            band += ys >= self.boundaries[b][None, :]
        return band


def _curve(rng: np.random.Generator, width: int, base: float, amplitude: float, slope: float) -> np.ndarray:
    """``float32 [W]``: a boundary curve (tilt plus two or three sinusoids) at column centres."""
    xs = np.arange(width, dtype=np.float32) + np.float32(0.5)
    y = base + slope * (xs - width / 2)
    for _ in range(int(rng.integers(2, 4))):
        f = rng.uniform(0.3, 4.0)
        y = y + rng.uniform(0.2, 1.0) * amplitude / f ** 0.5 * np.sin(2 * np.pi * f * xs / width + rng.uniform(0, 2 * np.pi))
    return y.astype(np.float32)


def sample_stuff_layout(rng: np.random.Generator, height: int, width: int, stuff_classes: tuple[str, ...]) -> StuffLayout:
    """Random background: with probability 0.85 (when ``sky`` is available) a sky above a wavy
    horizon at 15-65 % of the height, then one to three ground bands whose classes differ from their
    neighbours. Only classes in ``stuff_classes`` are used."""
    ground = [c for c in stuff_classes if c != "sky"]
    has_sky = "sky" in stuff_classes and (not ground or rng.random() < 0.85)
    classes: list[str] = []
    curves: list[np.ndarray] = []
    y = 0.0
    if has_sky:
        classes.append("sky")
        if not ground:
            return StuffLayout(("sky",), np.zeros((0, width), np.float32))
        y = rng.uniform(0.15, 0.65) * height
        curves.append(_curve(rng, width, y, rng.uniform(0.0, 0.08) * height, rng.uniform(-0.15, 0.15)))
    n_ground = int(rng.integers(1, min(3, len(ground)) + 1))
    for i in range(n_ground):
        choices = [c for c in ground if not classes or c != classes[-1]]
        classes.append(str(rng.choice(choices)))
        if i < n_ground - 1:  # a boundary below this band
            rest = height - y
            y = y + rng.uniform(0.25, 0.6) * rest
            curves.append(_curve(rng, width, y, rng.uniform(0.0, 0.05) * height, rng.uniform(-0.25, 0.25)))
    bounds = np.stack(curves) if curves else np.zeros((0, width), np.float32)
    return StuffLayout(tuple(classes), bounds)


def render_stuff(rng: np.random.Generator, layout: StuffLayout, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint the background.

    Returns:
        ``(image float32 [H, W, 3] RGB 0..255 (unclipped), band uint8 [H, W])``. Each band's texture is
        computed only over the rows the band touches.
    """
    band = layout.band_index(height)
    image = np.empty((height, width, 3), dtype=np.float32)
    edges = np.vstack([np.zeros((1, width), np.float32), layout.boundaries,
                      np.full((1, width), height, np.float32)])
    edges = np.clip(edges, 0, height)
    for b, name in enumerate(layout.classes):
        rows = np.flatnonzero((band == b).any(axis=1))
        if rows.size == 0:
            continue
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        tex = STUFF_TEXTURES[name](rng, r0, r1, width, edges[b], edges[b + 1])
        sel = band[r0:r1] == b
        whole = np.flatnonzero(sel.all(axis=1))  # rows wholly in this band: a contiguous range
        f0, f1 = (int(whole[0]), int(whole[-1]) + 1) if whole.size else (0, 0)
        image[r0 + f0:r0 + f1] = tex[f0:f1]
        for a, z in ((0, f0), (f1, r1 - r0)):  # rows the band shares with a neighbour
            if z > a:
                np.copyto(image[r0 + a:r0 + z], tex[a:z], where=sel[a:z, :, None])
    return image, band
