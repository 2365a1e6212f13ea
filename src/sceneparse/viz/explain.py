"""Drawing explanation pictures (:mod:`sceneparse.structures.explain`) to PNG files.

One PNG per :class:`~sceneparse.structures.explain.Explanation`: its title on top, its panels side by
side (each with its title, its scalar map resampled onto the image with a colour bar, and its marks),
the caption under them. Small images are enlarged (and huge ones shrunk) so that marks and text stay
readable; marks are scaled with them, so they stay where the model put them.

:func:`explain` is the Python entry point: ``explain(model, image, what=None, out=DIR)`` asks the
model for its pictures (``model.explain``; any object with that method, viz never imports models)
and writes them, atomically, returning the paths.

Importing this module needs numpy and Pillow only (``sceneparse.viz`` re-exports :func:`explain`, and
the torch-free modes of the CLI import ``sceneparse.viz.plots``); the drawing helpers of
:mod:`.draw` (which import torch) are imported when a picture is drawn.
"""
from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError
from ..structures.explain import (ArrowMark, BoxMark, ColorScale, Explanation, Panel, PointMark, ScalarMap,
                                  SegmentMark, TextMark)
from .colors import class_color, text_color

__all__ = ["explain", "explanation_paths", "render_explanation", "render_panel", "save_explanation",
           "write_explanations"]

#: panels are drawn with their short side at least this many pixels and their long side at most ...
MIN_SIDE, MAX_SIDE = 400, 960
_WHITE, _BLACK, _GREY = (255, 255, 255), (0, 0, 0), (90, 90, 90)
_BAR_W, _BAR_GAP, _BAR_LABEL_W = 14, 8, 72
_GAP, _MARGIN = 16, 12


def font(size: int):
    """Pillow's built-in scalable font (:func:`sceneparse.viz.draw.font`)."""
    from .draw import font as _font

    return _font(size)


def _lut(colormap: str) -> np.ndarray:
    """``float32 [256, 3]`` RGB (0..255) of a matplotlib colormap."""
    from matplotlib import colormaps

    if colormap not in colormaps:
        raise ConfigError(f"unknown colormap {colormap!r} in an explanation's colour scale")
    return (np.asarray(colormaps[colormap](np.linspace(0, 1, 256)))[:, :3] * 255).astype(np.float32)


def _scale_factor(h: int, w: int) -> float:
    """Enlarge so the short side reaches :data:`MIN_SIDE`, then shrink so the long side fits :data:`MAX_SIDE`."""
    s = max(1.0, MIN_SIDE / max(1, min(h, w)))
    return min(s, MAX_SIDE / max(h, w))


def _bilinear(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``values [h, w]`` sampled at every ``(rows[i], cols[j])`` (fractional cell indices, clamped to the
    border cells), bilinear, separable: ``[len(rows), len(cols)]``."""
    def axis(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.clip(c, 0.0, n - 1.0)
        i0 = np.floor(c).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, c - i0

    r0, r1, fr = axis(rows, values.shape[0])
    c0, c1, fc = axis(cols, values.shape[1])
    top = values[r0][:, c0] * (1 - fc) + values[r0][:, c1] * fc
    bottom = values[r1][:, c0] * (1 - fc) + values[r1][:, c1] * fc
    return top * (1 - fr)[:, None] + bottom * fr[:, None]


def _overlay(canvas: np.ndarray, m: ScalarMap, s: float, size: tuple[int, int]) -> np.ndarray:
    """Blend the scalar map onto ``canvas`` (the image scaled by ``s``): every output pixel centre is
    taken back to image pixels, then into the map's grid (its ``extent``), and sampled bilinearly
    (border values outside the cell centres; ``resample="nearest"``: the value of the cell the pixel lies
    in); pixels outside the extent are left alone. Opacity grows
    with the normalised value: ``alpha * (0.2 + 0.8 v)``."""
    H, W = canvas.shape[:2]
    h, w = size
    x0, y0, x1, y1 = m.extent if m.extent is not None else (0.0, 0.0, float(w), float(h))
    gx = (np.arange(W, dtype=np.float64) + 0.5) / s  # pixel centres in image pixels
    gy = (np.arange(H, dtype=np.float64) + 0.5) / s
    mh, mw = m.values.shape
    u = (gx - x0) / (x1 - x0) * mw - 0.5  # map coordinates (cell centres at integers)
    v = (gy - y0) / (y1 - y0) * mh - 0.5
    if m.resample == "nearest":  # flat cells: the cell whose rectangle holds the pixel centre
        rows = np.clip(np.floor(v + 0.5), 0, mh - 1).astype(np.int64)
        cols = np.clip(np.floor(u + 0.5), 0, mw - 1).astype(np.int64)
        vals = m.values.astype(np.float64)[rows][:, cols]
    else:
        vals = _bilinear(m.values.astype(np.float64), v, u)
    gx, gy = 2.0 * (gx - x0) / (x1 - x0) - 1.0, 2.0 * (gy - y0) / (y1 - y0) - 1.0
    inside = (np.abs(gy)[:, None] <= 1.0) & (np.abs(gx)[None, :] <= 1.0)
    v = m.scale.normalise(vals)
    color = _lut(m.scale.colormap)[np.round(v * 255).astype(np.int64)]
    a = (m.alpha * (0.2 + 0.8 * v) * inside)[..., None]
    return np.round((1 - a) * canvas.astype(np.float32) + a * color).astype(np.uint8)


def _mark_color(mark, scale: ColorScale | None, lut: np.ndarray | None) -> tuple[int, int, int]:
    if mark.color is not None:
        return mark.color
    if mark.value is not None and scale is not None and lut is not None:
        c = lut[int(round(float(scale.normalise(mark.value)) * 255))]
        return int(c[0]), int(c[1]), int(c[2])
    if mark.label_index is not None:
        return class_color(mark.label_index)
    return _WHITE


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill, fnt, alpha: int,
           bounds: tuple[int, int]) -> None:
    """``text`` on a box of colour ``fill`` with its top-left at ``xy``, kept inside ``bounds`` (W, H)."""
    if not text:
        return
    l, t, r, b = draw.textbbox((0, 0), text, font=fnt)
    tw, th = r - l + 4, b - t + 2
    x = min(max(0.0, xy[0]), max(0.0, bounds[0] - tw))
    y = min(max(0.0, xy[1]), max(0.0, bounds[1] - th))
    draw.rectangle((x, y, x + tw, y + th), fill=(*fill, alpha))
    draw.text((x + 2 - l, y + 1 - t), text, font=fnt, fill=(*text_color(fill), alpha))


def _dashed(draw: ImageDraw.ImageDraw, p: tuple[float, float], q: tuple[float, float], fill, width: int,
            dash: float = 6.0) -> None:
    length = math.hypot(q[0] - p[0], q[1] - p[1])
    n = max(1, int(length // dash))
    for i in range(0, n, 2):
        a, b = i / n, min(1.0, (i + 1) / n)
        draw.line([(p[0] + a * (q[0] - p[0]), p[1] + a * (q[1] - p[1])),
                   (p[0] + b * (q[0] - p[0]), p[1] + b * (q[1] - p[1]))], fill=fill, width=width)


def _marks(canvas: np.ndarray, panel: Panel, s: float) -> np.ndarray:
    """Draw the panel's marks (coordinates times ``s``) on an RGBA layer composed over ``canvas``;
    faint marks (``alpha < 1``) let the image show through."""
    H, W = canvas.shape[:2]
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = panel.color_scale
    lut = _lut(scale.colormap) if scale is not None else None
    fnt = font(max(10, round(min(H, W) / 36)))
    lw = max(1, round(min(H, W) / 300))
    bounds = (W, H)
    labels: list[tuple[tuple[float, float], str, tuple[int, int, int], int]] = []

    def px(p: tuple[float, float]) -> tuple[float, float]:
        return p[0] * s, p[1] * s

    for m in panel.boxes:
        c, a = _mark_color(m, scale, lut), int(round(m.alpha * 255))
        x0, y0, x1, y1 = (v * s for v in m.box)
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=(*c, a),
                       width=max(1, round(m.width * lw / 2)))
        labels.append(((min(x0, x1), min(y0, y1)), m.label, c, a))
    for m in list(panel.segments) + list(panel.arrows):
        c, a = _mark_color(m, scale, lut), int(round(m.alpha * 255))
        p, q = px(m.start), px(m.end)
        width = max(1, round(m.width * lw / 1.5))
        if isinstance(m, SegmentMark) and m.dashed:
            _dashed(draw, p, q, (*c, a), width)
        else:
            draw.line([p, q], fill=(*c, a), width=width)
        if isinstance(m, ArrowMark):
            length = math.hypot(q[0] - p[0], q[1] - p[1])
            if length > 1e-6:
                head = min(10.0 * lw, max(3.0, 0.35 * length))
                ang = math.atan2(q[1] - p[1], q[0] - p[0])
                for da in (math.radians(150), -math.radians(150)):
                    draw.line([q, (q[0] + head * math.cos(ang + da), q[1] + head * math.sin(ang + da))],
                              fill=(*c, a), width=width)
            labels.append((q, m.label, c, a))
        else:
            labels.append((((p[0] + q[0]) / 2, (p[1] + q[1]) / 2), m.label, c, a))
    for m in panel.points:
        c, a = _mark_color(m, scale, lut), int(round(m.alpha * 255))
        x, y = px(m.xy)
        r = max(2.0, m.radius * lw)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*c, a), outline=(0, 0, 0, a), width=1)
        labels.append(((x + r + 1, y - r), m.label, c, a))
    for m in panel.texts:
        c, a = _mark_color(m, scale, lut), int(round(m.alpha * 255))
        labels.append((px(m.xy), m.label, c, a))
    for xy, text, c, a in labels:  # text last: on top of every line
        _label(draw, xy, text, c, fnt, a, bounds)
    out = Image.alpha_composite(Image.fromarray(canvas).convert("RGBA"), layer)
    return np.asarray(out.convert("RGB"))


def _colorbar(height: int, scale: ColorScale) -> np.ndarray:
    """A vertical colour bar (``vmax`` on top) with its three tick values and title, ``[height, ., 3]``."""
    fnt = font(11)
    width = _BAR_GAP + _BAR_W + _BAR_LABEL_W
    img = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(img)
    top, bottom = 22, height - 8
    n = max(2, bottom - top)
    lut = _lut(scale.colormap)
    ramp = lut[np.round(np.linspace(1, 0, n) * 255).astype(np.int64)].astype(np.uint8)
    bar = np.repeat(ramp[:, None, :], _BAR_W, axis=1)
    img.paste(Image.fromarray(bar), (_BAR_GAP, top))
    draw.rectangle((_BAR_GAP, top, _BAR_GAP + _BAR_W - 1, top + n - 1), outline=_GREY)
    for frac in (0.0, 0.5, 1.0):
        v = scale.vmin + frac * (scale.vmax - scale.vmin)
        y = top + (1 - frac) * (n - 1)
        draw.line([(_BAR_GAP + _BAR_W, y), (_BAR_GAP + _BAR_W + 3, y)], fill=_GREY)
        draw.text((_BAR_GAP + _BAR_W + 5, y - 6), f"{v:.3g}", font=fnt, fill=_BLACK)
    if scale.title:
        draw.text((2, 4), scale.title[:16], font=fnt, fill=_BLACK)
    return np.asarray(img)


def render_panel(panel: Panel) -> np.ndarray:
    """One panel: its image (scaled for readability), the overlay, the marks, the colour bar on its
    right when it has a colour scale, and its title above; ``uint8 [H', W', 3]``."""
    h, w = panel.size
    s = _scale_factor(h, w)
    W, H = max(1, round(w * s)), max(1, round(h * s))
    s_eff = W / w  # the scale the marks use: the one the image was resized with (x)
    img = panel.image if (W, H) == (w, h) else np.asarray(Image.fromarray(panel.image).resize((W, H), Image.BILINEAR))
    if panel.overlay is not None:
        img = _overlay(img, panel.overlay, s_eff, (h, w))
    img = _marks(img, panel, s_eff)
    if panel.color_scale is not None:
        img = np.concatenate([img, _colorbar(H, panel.color_scale)], axis=1)
    fnt = font(15)
    title_h = 26 if panel.title else 0
    out = Image.new("RGB", (img.shape[1], img.shape[0] + title_h), _WHITE)
    out.paste(Image.fromarray(img), (0, title_h))
    if panel.title:
        ImageDraw.Draw(out).text((2, 4), panel.title, font=fnt, fill=_BLACK)
    return np.asarray(out)


def _wrap(text: str, width_px: int, fnt) -> list[str]:
    """``text`` broken into lines of at most ``width_px`` pixels (paragraphs kept)."""
    avg = max(1.0, fnt.getlength("abcdefghijklmnopqrstuvwxyz ") / 27)
    chars = max(20, int(width_px / avg))
    lines: list[str] = []
    for para in text.split("\n"):
        lines.extend(textwrap.wrap(para, chars) or [""])
    return lines


def render_explanation(explanation: Explanation) -> np.ndarray:
    """The whole picture, ``uint8 [H, W, 3]``: title, the panels side by side (top-aligned), caption."""
    panels = [render_panel(p) for p in explanation.panels]
    body_w = sum(p.shape[1] for p in panels) + _GAP * (len(panels) - 1)
    body_h = max(p.shape[0] for p in panels)
    width = body_w + 2 * _MARGIN
    title_font, cap_font = font(20), font(14)
    cap_lines = _wrap(explanation.caption, width - 2 * _MARGIN, cap_font)
    title_h = 34
    cap_h = 10 + 19 * len(cap_lines) + 6
    out = Image.new("RGB", (width, title_h + body_h + cap_h), _WHITE)
    draw = ImageDraw.Draw(out)
    draw.text((_MARGIN, 7), explanation.title, font=title_font, fill=_BLACK)
    x = _MARGIN
    for p in panels:
        out.paste(Image.fromarray(p), (x, title_h))
        x += p.shape[1] + _GAP
    y = title_h + body_h + 10
    for line in cap_lines:
        draw.text((_MARGIN, y), line, font=cap_font, fill=(30, 30, 30))
        y += 19
    return np.asarray(out)


def save_explanation(explanation: Explanation, path: str | os.PathLike) -> Path:
    """Render and write one picture (atomically; the format follows the suffix, ``.png`` usually)."""
    from .draw import save_image

    return save_image(path, render_explanation(explanation))


def explanation_paths(explanations: Sequence[Explanation], out: str | os.PathLike, stem: str) -> list[Path]:
    """``OUT/<stem>_<name>.png`` for each picture (``_2``, ``_3``... when a name repeats)."""
    seen: dict[str, int] = {}
    paths = []
    for e in explanations:
        seen[e.name] = seen.get(e.name, 0) + 1
        suffix = "" if seen[e.name] == 1 else f"_{seen[e.name]}"
        paths.append(Path(out) / f"{stem}_{e.name}{suffix}.png")
    return paths


def write_explanations(explanations: Sequence[Explanation], out: str | os.PathLike, stem: str = "image"
                       ) -> list[Path]:
    """Write each picture to :func:`explanation_paths`; returns the paths in order."""
    paths = explanation_paths(explanations, out, stem)
    for e, p in zip(explanations, paths):
        save_explanation(e, p)
    return paths


def _image_tensor(image: Any) -> tuple[Any, str]:
    """A model input ``float32 [3, H, W]`` and a file stem from a path, a tensor or an ``[H, W, 3]`` array."""
    if isinstance(image, (str, os.PathLike)):
        from ..data.images import read_image

        return read_image(image), Path(image).stem
    import torch

    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        if t.ndim != 3 or t.shape[0] != 3:
            raise ConfigError(f"explain takes an image [3, H, W], got a tensor of shape {tuple(t.shape)}")
        return t.float(), "image"
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ConfigError(f"explain takes an image array [H, W, 3], got shape {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    return (t.float() / 255.0 if a.dtype == np.uint8 else t.float()), "image"


def explain(model: Any, image: Any, what: str | None = None, *, out: str | os.PathLike = "runs/explain",
            stem: str | None = None, **options: Any) -> list[Path]:
    """Draw a model's explanation pictures for one image into ``out``; returns the PNG paths.

    ``model``: any sceneparse model (``model.explain(image, what=..., **options)``; a model without
    views raises :class:`~sceneparse.errors.ConfigError` naming it); ``image``: an image file, a
    ``float [3, H, W]`` tensor in ``[0, 1]`` or an ``[H, W, 3]`` array; ``what``: one view (``None``:
    all); ``stem``: the file-name prefix (default: the file's stem, else ``image``); ``options``: the
    model's explanation options (e.g. ``query=`` for DETR)."""
    if not callable(getattr(model, "explain", None)):
        raise ConfigError(f"{type(model).__name__} is not a sceneparse model with explanation views")
    tensor, default_stem = _image_tensor(image)
    explanations = model.explain(tensor, what=what, **options)
    return write_explanations(explanations, out, stem or default_stem)
