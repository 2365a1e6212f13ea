"""Procedural textures: stuff backgrounds (sky, grass, water, road, sand) and fills of things.

Everything is vectorised numpy / OpenCV over whole rows or crops (no per-pixel Python). Textures
are ``float32 [h, w, 3]`` RGB in ``0..255`` (not yet clipped); the scene clips and rounds once.
Randomness comes only from the ``numpy.random.Generator`` passed in, so a seed fixes every pixel.
"""
from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

#: Fill styles of things (chosen per object).
FILL_KINDS: tuple[str, ...] = ("solid", "gradient", "stripes", "spots")


def hsv_color(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
              val: tuple[float, float]) -> np.ndarray:
    """A random RGB colour ``float32 [3]`` (0..255) with HSV components drawn from the ranges (0..1;
    hue ranges may wrap past 1)."""
    h = rng.uniform(*hue) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def random_color(rng: np.random.Generator) -> np.ndarray:
    """Any hue, fairly saturated and not too dark: colours of shapes and clothes."""
    return hsv_color(rng, (0.0, 1.0), (0.35, 1.0), (0.35, 1.0))


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float | None = None) -> np.ndarray:
    """Value noise ``float32 [h, w]`` with features about ``cell_y x cell_x`` px, roughly unit std.

    A coarse grid of N(0, 1) values is bicubically upsampled (OpenCV), so the cost is one resize.
    """
    cell_x = cell_y if cell_x is None else cell_x
    gh = max(2, int(math.ceil(h / max(cell_y, 1e-3)))) + 1
    gw = max(2, int(math.ceil(w / max(cell_x, 1e-3)))) + 1
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(1.3)


# ----------------------------------------------------------------------------------------------
# stuff
# ----------------------------------------------------------------------------------------------

def _grid(row0: int, row1: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y [r, 1], x [1, W])`` of rows ``row0..row1-1`` (continuous frame)."""
    ys = np.arange(row0, row1, dtype=np.float32)[:, None] + np.float32(0.5)
    xs = np.arange(width, dtype=np.float32)[None, :] + np.float32(0.5)
    return ys, xs


def _shade(base: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """``base [3]`` colour plus a luminance offset field ``lum [h, w]`` -> ``float32 [h, w, 3]``."""
    return base[None, None, :] + lum[:, :, None]


def sky(rng, row0, row1, width, top, bottom) -> np.ndarray:
    """Vertical gradient (deep at the top, pale at the horizon) with horizontally stretched clouds."""
    deep = hsv_color(rng, (0.53, 0.63), (0.45, 0.85), (0.6, 0.95))
    pale = hsv_color(rng, (0.53, 0.63), (0.05, 0.3), (0.85, 1.0))
    ys, _ = _grid(row0, row1, width)
    horizon = max(float(np.max(bottom)), 1.0)
    t = np.clip(ys / horizon, 0, 1)[:, :, None]  # [r, 1, 1]
    img = deep * (1 - t) + pale * t
    img = np.broadcast_to(img, (row1 - row0, width, 3))
    cell = rng.uniform(0.08, 0.2) * width
    n = smooth_noise(rng, row1 - row0, width, cell * 0.4, cell)
    cover = np.clip((n - rng.uniform(0.2, 1.2)) * 1.5, 0, 1)[:, :, None]
    white = np.float32(rng.uniform(225, 250))
    return img * (1 - cover) + white * cover


def grass(rng, row0, row1, width, top, bottom) -> np.ndarray:
    """Green with large patches and vertically elongated blade noise."""
    base = hsv_color(rng, (0.2, 0.33), (0.45, 0.85), (0.3, 0.65))
    h = row1 - row0
    lum = smooth_noise(rng, h, width, 0.15 * width) * 14
    lum += smooth_noise(rng, h, width, rng.uniform(4, 8), rng.uniform(1.0, 2.0)) * 12
    return _shade(base, lum)


def water(rng, row0, row1, width, top, bottom) -> np.ndarray:
    """Blue / teal with horizontal ripples (period 5-14 px, wobbling) and bright glints."""
    base = hsv_color(rng, (0.5, 0.63), (0.45, 0.9), (0.3, 0.65))
    h = row1 - row0
    ys, _ = _grid(row0, row1, width)
    wobble = smooth_noise(rng, h, width, 0.08 * width, 0.2 * width) * 0.6
    period = rng.uniform(5, 14)
    lum = np.sin(2 * np.pi * (ys / period + wobble)) * np.float32(rng.uniform(6, 16))
    glint = np.clip(smooth_noise(rng, h, width, 2.5, 10) - 1.4, 0, None) * 90
    return _shade(base, lum + glint)


def road(rng, row0, row1, width, top, bottom) -> np.ndarray:
    """Grey asphalt (per-pixel grain plus stains) with a dashed lane marking along the band's middle."""
    base = hsv_color(rng, (0.0, 1.0), (0.0, 0.08), (0.28, 0.5))
    h = row1 - row0
    lum = rng.standard_normal((h, width), dtype=np.float32) * np.float32(7)
    lum += smooth_noise(rng, h, width, 0.1 * width) * 8
    img = _shade(base, lum)
    ys, xs = _grid(row0, row1, width)
    mid = (0.5 * (top + bottom))[None, :]  # [1, W]
    thick = max(1.0, 0.08 * float(np.median(bottom - top)))
    dash = rng.uniform(12, 40)
    lane = (np.abs(ys - mid) < thick / 2) & (((xs + rng.uniform(0, dash)) // dash) % 2 == 0)
    if rng.random() < 0.8:
        img = np.where(lane[:, :, None], np.float32(rng.uniform(200, 240)), img)
    return img


def sand(rng, row0, row1, width, top, bottom) -> np.ndarray:
    """Beige grain with oblique dune ripples."""
    base = hsv_color(rng, (0.08, 0.14), (0.2, 0.5), (0.62, 0.9))
    h = row1 - row0
    ys, xs = _grid(row0, row1, width)
    a = rng.uniform(-0.6, 0.6)
    phase = (xs * np.float32(math.sin(a)) + ys * np.float32(math.cos(a))) / np.float32(rng.uniform(10, 30))
    lum = np.sin(2 * np.pi * (phase + smooth_noise(rng, h, width, 0.2 * width) * 0.3)) * np.float32(8)
    lum += rng.standard_normal((h, width), dtype=np.float32) * np.float32(5)
    return _shade(base, lum)


#: texture function of each stuff class: ``f(rng, row0, row1, width, top [W], bottom [W]) -> [r, W, 3]``
#: where ``top`` / ``bottom`` are the band's boundary curves (y per column) in image pixels.
STUFF_TEXTURES = {"sky": sky, "grass": grass, "water": water, "road": road, "sand": sand}


# ----------------------------------------------------------------------------------------------
# things
# ----------------------------------------------------------------------------------------------

def fill(rng: np.random.Generator, h: int, w: int, kind: str, color1: np.ndarray, color2: np.ndarray) -> np.ndarray:
    """Texture ``float32 [h, w, 3]`` of a thing's crop: ``solid`` (with faint mottling), ``gradient``
    (linear, random direction), ``stripes`` (hard two-colour bands) or ``spots`` (thresholded noise)."""
    if kind == "solid":
        return _shade(color1, smooth_noise(rng, h, w, max(3.0, min(h, w) / 4)) * 6)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    a = rng.uniform(0, 2 * np.pi)
    u = xs * np.float32(math.cos(a)) + ys * np.float32(math.sin(a))
    if kind == "gradient":
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        return color1 * (1 - t[:, :, None]) + color2 * t[:, :, None]
    if kind == "stripes":
        period = rng.uniform(0.15, 0.4) * max(h, w, 8)
        t = (np.sin(2 * np.pi * u / np.float32(period)) > 0).astype(np.float32)[:, :, None]
        return color1 * (1 - t) + color2 * t
    if kind == "spots":
        t = (smooth_noise(rng, h, w, max(2.0, min(h, w) / 5)) > 0.4).astype(np.float32)[:, :, None]
        return color1 * (1 - t) + color2 * t
    raise ValueError(f"unknown fill kind {kind!r}; expected one of {FILL_KINDS}")
