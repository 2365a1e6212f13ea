"""Stable colours: one per class label, shades of it per instance, black or white text on top.

Class colours come from golden-ratio hue steps (consecutive labels land far apart on the colour
wheel) with saturation / value alternating across cycles, so label ``k`` has the same colour in
every drawing, run and process, and the first few dozen labels stay distinguishable.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = 0.6180339887498949


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in ``[0, 1]``) -> ``float [..., 3]`` RGB in ``[0, 1]``."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


def palette(n: int, offset: int = 0) -> np.ndarray:
    """``uint8 [n, 3]`` colours of labels ``offset .. offset + n - 1``."""
    k = np.arange(offset, offset + n, dtype=np.float64)
    h = (0.08 + k * _GOLDEN) % 1.0
    cycle = (k // 6).astype(np.int64)
    s = np.where(cycle % 2 == 0, 0.75, 0.55)
    v = np.where((cycle // 2) % 2 == 0, 0.95, 0.75)
    return np.round(_hsv_to_rgb(h, s, v) * 255).astype(np.uint8)


def class_color(label: int) -> tuple[int, int, int]:
    """The colour of one class label, as ``(r, g, b)`` ints."""
    r, g, b = palette(1, int(label))[0]
    return int(r), int(g), int(b)


def class_colors(num_classes: int, colors: "np.ndarray | list | None" = None) -> np.ndarray:
    """``uint8 [C, 3]``: ``colors`` (e.g. the dataset's category colours) where given, else the palette."""
    out = palette(num_classes)
    if colors is not None:
        c = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        out[: min(len(c), num_classes)] = c[:num_classes]
    return out


def instance_shades(color, n: int) -> np.ndarray:
    """``uint8 [n, 3]``: ``n`` shades of ``color`` (lighter and darker, the first is the colour
    itself), to tell instances of one class apart while keeping the class recognisable."""
    base = np.asarray(color, dtype=np.float64).reshape(3)
    if n <= 0:
        return np.zeros((0, 3), dtype=np.uint8)
    k = np.arange(n)
    # 0, +1, -1, +2, -2, ... steps of 0.45 / ceil(n / 2) toward white (+) or black (-)
    step = np.where(k % 2 == 1, (k + 1) // 2, -(k // 2)).astype(np.float64)
    amount = step * (0.45 / max(1, (n + 1) // 2))
    target = np.where(amount[:, None] > 0, 255.0, 0.0)
    out = base + np.abs(amount)[:, None] * (target - base)
    return np.round(out).astype(np.uint8)


def text_color(background) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (Rec. 601 luma threshold)."""
    r, g, b = (float(c) for c in np.asarray(background).reshape(3))
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


__all__ = ["class_color", "class_colors", "instance_shades", "palette", "text_color"]
