"""Drawings of results and ground truth: instances (boxes, labels, masks, keypoints), semantic and
panoptic maps, heatmaps, a class legend. Every function returns a new ``uint8 [H, W, 3]`` RGB array
and leaves its input alone.

Colour blending is vectorised numpy over the whole image (one "owner" index per pixel, looked up in
a colour table); Pillow's ``ImageDraw`` draws only the vector parts (box outlines, text, skeleton
lines), whose count is the number of shown objects.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..fileio import atomic_open
from ..structures.instances import Instances
from ..structures.keypoints import COCO_PERSON, KeypointSet
from ..structures.segmaps import PanopticMap, SemanticMap
from .colors import class_colors, instance_shades, text_color

#: keypoint / skeleton colours by side, from the keypoint names
LEFT_COLOR = (255, 140, 0)
RIGHT_COLOR = (0, 160, 255)
CENTER_COLOR = (255, 255, 255)


# ---- helpers ---------------------------------------------------------------------------------
def to_uint8_image(image) -> np.ndarray:
    """``uint8 [H, W, 3]`` from a ``float [3, H, W]`` tensor in ``[0, 1]`` (the model input), a
    ``uint8 [3, H, W]`` tensor, or an ``[H, W, 3]`` / ``[H, W]`` array (uint8, or float in ``[0, 1]``)."""
    if isinstance(image, torch.Tensor):  # tensors are channels-first (the model input convention)
        t = image.detach().cpu()
        a = t.permute(1, 2, 0).numpy() if t.ndim == 3 and t.shape[0] in (1, 3, 4) else t.numpy()
    else:  # arrays are channels-last (PIL / OpenCV convention)
        a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image [3, H, W] (tensor) or [H, W, 3] (array), got shape {a.shape}")
    a = a[..., :3]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(a)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in scalable font (readable at any size; no font file needed)."""
    return ImageFont.load_default(size=max(8, int(size)))


def _sizes(h: int, w: int) -> tuple[int, int]:
    """(line width, font size) that read well at this image size."""
    m = min(h, w)
    return max(1, round(m / 240)), max(10, round(m / 32))


def _blend(image: np.ndarray, owner: np.ndarray, table: np.ndarray, alpha: float) -> np.ndarray:
    """Tint pixels with ``owner >= 0`` by ``table[owner]`` at opacity ``alpha`` (float math, then rounded)."""
    out = image.astype(np.float32)
    hit = owner >= 0
    out[hit] = (1.0 - alpha) * out[hit] + alpha * table[owner[hit]].astype(np.float32)
    return np.round(out).astype(np.uint8)


def _edges(owner: np.ndarray) -> np.ndarray:
    """``bool [H, W]``: pixels of a region (``owner >= 0``) whose right / lower / left / upper neighbour
    belongs to another region or to nothing; the image border does not count as an edge."""
    e = np.zeros(owner.shape, dtype=bool)
    dx = owner[:, 1:] != owner[:, :-1]
    dy = owner[1:, :] != owner[:-1, :]
    e[:, :-1] |= dx
    e[:, 1:] |= dx
    e[:-1, :] |= dy
    e[1:, :] |= dy
    return e & (owner >= 0)


def _text_box(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill, fnt, *, above: bool = True,
              size: tuple[int, int] | None = None) -> None:
    """Text on a filled background; placed above ``xy`` when there is room, else below it."""
    l, t, r, b = draw.textbbox((0, 0), text, font=fnt)
    tw, th = r - l + 4, b - t + 2
    x, y = float(xy[0]), float(xy[1])
    y = y - th if above and y - th >= 0 else y
    if size is not None:
        x = min(max(0.0, x), max(0.0, size[1] - tw))
        y = min(max(0.0, y), max(0.0, size[0] - th))
    draw.rectangle((x, y, x + tw, y + th), fill=tuple(int(c) for c in fill))
    draw.text((x + 2 - l, y + 1 - t), text, font=fnt, fill=text_color(fill))


def _interior_points(owner: np.ndarray, n: int, min_area: int) -> dict[int, tuple[int, int]]:
    """For each region ``0..n-1`` with at least ``min_area`` pixels, the ``(x, y)`` of its pixel
    farthest from its boundary (where a name reads inside the region), via OpenCV's distance transform."""
    import cv2

    counts = np.bincount(owner[owner >= 0].ravel(), minlength=n)
    out = {}
    for k in np.flatnonzero(counts >= max(1, min_area)):
        m = np.pad((owner == k).astype(np.uint8), 1)
        d = cv2.distanceTransform(m, cv2.DIST_L2, 3)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(d)), d.shape)
        out[int(k)] = (int(x), int(y))
    return out


def _name(class_names: Sequence[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else str(label)


# ---- instances -------------------------------------------------------------------------------
def draw_instances(image, instances: Instances, class_names: Sequence[str], *, score_threshold: float = 0.0,
                   alpha: float = 0.5, keypoint_set: KeypointSet | None = COCO_PERSON,
                   keypoint_threshold: float = 0.0, colors=None, show_boxes: bool = True,
                   show_masks: bool = True, show_labels: bool = True, tags: Sequence[str] | None = None
                   ) -> np.ndarray:
    """Boxes with ``"name score"`` labels, masks tinted at ``alpha`` with a solid outline, and
    keypoints with their skeleton, in the colour of each class.

    Instances with ``scores < score_threshold`` are left out; higher scores are drawn on top.
    A keypoint is shown when ``v > 0`` and (for results) ``keypoint_score > keypoint_threshold``;
    a skeleton edge when both ends are shown. Keypoints are coloured by side from their names
    (``left_*`` orange, ``right_*`` blue, others white); occluded ones (``v = 1``) are rings.
    ``colors``: optional ``[C, 3]`` class colours; ``tags``: optional per-instance words appended to
    the label (e.g. ``"crowd"``).
    """
    img = to_uint8_image(image)
    h, w = img.shape[:2]
    inst = instances
    if inst.image_size != (h, w):
        raise ValueError(f"instances are for an image of {inst.image_size} but the image is {(h, w)}")
    n = len(inst)
    keep = np.ones(n, dtype=bool)
    scores = _np(inst.scores).astype(np.float64) if inst.scores is not None else None
    if scores is not None:
        keep &= scores >= score_threshold
    order = np.flatnonzero(keep)
    if scores is not None:
        order = order[np.argsort(scores[order], kind="stable")]  # low scores first, high on top
    labels = _np(inst.labels).astype(np.int64) if inst.labels is not None else np.zeros(n, dtype=np.int64)
    num_c = max(len(class_names), int(labels.max()) + 1 if n else 0)
    table = class_colors(num_c, colors)
    lw, fs = _sizes(h, w)

    if show_masks and inst.masks is not None and len(order):
        m = _np(inst.masks).astype(bool)[order]  # [M, H, W] in drawing order
        if m.shape[1:] != (h, w):
            raise ValueError(f"masks are {m.shape[1:]} but the image is {(h, w)}")
        covered = m.any(0)
        last = m.shape[0] - 1 - np.argmax(m[::-1], axis=0)  # topmost (last drawn) instance per pixel
        owner = np.where(covered, last, -1)
        inst_colors = table[labels[order]]
        img = _blend(img, owner, inst_colors, alpha)
        edge = _edges(owner)
        img[edge] = inst_colors[owner[edge]]

    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    fnt = font(fs)
    boxes = _np(inst.boxes).astype(np.float64) if inst.boxes is not None else None
    if show_boxes and boxes is not None:
        for i in order:
            c = tuple(int(v) for v in table[labels[i]])
            x0, y0, x1, y1 = boxes[i]
            draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=c, width=lw)
    if inst.keypoints is not None and len(order):
        _draw_keypoints(draw, inst, order, keypoint_set, keypoint_threshold, lw)
    if show_labels and boxes is not None:
        for i in order:
            text = _name(class_names, int(labels[i]))
            if scores is not None:
                text += f" {scores[i]:.2f}"
            if tags is not None and tags[i]:
                text += f" {tags[i]}"
            _text_box(draw, (boxes[i, 0], boxes[i, 1]), text, table[labels[i]], fnt, size=(h, w))
    return np.asarray(pil)


def _draw_keypoints(draw: ImageDraw.ImageDraw, inst: Instances, order: np.ndarray, kset: KeypointSet | None,
                    threshold: float, lw: int) -> None:
    kp = _np(inst.keypoints).astype(np.float64)[order]  # [M, K, 3]
    shown = kp[..., 2] > 0
    if inst.keypoint_scores is not None:
        shown &= _np(inst.keypoint_scores)[order] > threshold
    k = kp.shape[1]
    names = kset.names if kset is not None and kset.num_keypoints == k else tuple(str(i) for i in range(k))
    side = np.array([LEFT_COLOR if n.startswith("left") else RIGHT_COLOR if n.startswith("right") else CENTER_COLOR
                     for n in names], dtype=np.int64)
    skeleton = np.asarray(kset.skeleton if kset is not None and kset.num_keypoints == k else (),
                          dtype=np.int64).reshape(-1, 2)
    # dots and lines shrink for small instances (a 40 px person gets 2 px dots, not 4 px blobs)
    y_top = np.where(shown, kp[..., 1], np.inf).min(1, initial=np.inf)
    y_bottom = np.where(shown, kp[..., 1], -np.inf).max(1, initial=-np.inf)
    extent = np.where(shown.any(1), y_bottom - y_top, 0.0)
    for m in range(kp.shape[0]):
        r = float(np.clip(0.04 * extent[m], 1.5, max(2.0, 1.5 * lw)))
        width = max(1, min(lw + 1, round(r)))
        if len(skeleton):
            ok = shown[m, skeleton[:, 0]] & shown[m, skeleton[:, 1]]
            for a, b in skeleton[ok]:
                # an edge takes the side of its end that is not central (limbs), else central
                c = side[a] if names[a].startswith(("left", "right")) else side[b]
                draw.line((kp[m, a, 0], kp[m, a, 1], kp[m, b, 0], kp[m, b, 1]), fill=tuple(int(v) for v in c),
                          width=width)
        for j in np.flatnonzero(shown[m]):
            x, y = kp[m, j, 0], kp[m, j, 1]
            c = tuple(int(v) for v in side[j])
            if kp[m, j, 2] == 1:  # labelled but occluded: a ring
                draw.ellipse((x - r, y - r, x + r, y + r), outline=c, width=max(1, round(r / 2)))
            else:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=c, outline=(0, 0, 0))


# ---- dense maps ------------------------------------------------------------------------------
def draw_semantic(image, semantic: SemanticMap, class_names: Sequence[str], alpha: float = 0.5, *, colors=None,
                  outline: bool = True, show_names: bool = True, min_name_area: int = 64) -> np.ndarray:
    """Tint every pixel with its class colour at ``alpha`` (``ignore_index`` pixels stay as they are),
    darken class boundaries, and write each class name inside its largest-clearance pixel."""
    img = to_uint8_image(image)
    h, w = img.shape[:2]
    labels = _np(semantic.labels).astype(np.int64)
    if labels.shape != (h, w):
        raise ValueError(f"semantic map is {labels.shape} but the image is {(h, w)}")
    owner = np.where(labels == semantic.ignore_index, -1, labels)
    owner = np.where(owner < 0, -1, owner)
    num_c = max(len(class_names), int(owner.max()) + 1 if owner.size else 0, 1)
    table = class_colors(num_c, colors)
    out = _blend(img, owner, table, alpha)
    if outline:
        edge = _edges(owner)
        out[edge] = (out[edge].astype(np.float32) * 0.35).astype(np.uint8)
    if show_names:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        fnt = font(_sizes(h, w)[1])
        for k, (x, y) in _interior_points(owner, num_c, min_name_area).items():
            _text_box(draw, (x, y), _name(class_names, k), table[k], fnt, above=False, size=(h, w))
        out = np.asarray(pil)
    return out


def panoptic_colors(panoptic: PanopticMap, num_classes: int, colors=None) -> np.ndarray:
    """``uint8 [S, 3]`` colour of each segment (in ``panoptic.segments`` order): stuff in its class
    colour, things in shades of their class colour (one shade per instance of the class)."""
    table = class_colors(max(num_classes, 1 + max((s.label for s in panoptic.segments), default=0)), colors)
    out = np.zeros((len(panoptic.segments), 3), dtype=np.uint8)
    labels = np.array([s.label for s in panoptic.segments], dtype=np.int64)
    thing = np.array([s.isthing for s in panoptic.segments], dtype=bool)
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        out[idx] = table[lab]
        t = idx[thing[idx]]
        if len(t):
            out[t] = instance_shades(table[lab], len(t))
    return out


def _segment_index(panoptic: PanopticMap) -> np.ndarray:
    """``int64 [H, W]``: index into ``panoptic.segments`` of each pixel, -1 for void / unknown ids."""
    ids = _np(panoptic.ids).astype(np.int64)
    if not panoptic.segments:
        return np.full(ids.shape, -1, dtype=np.int64)
    seg_ids = np.array([s.id for s in panoptic.segments], dtype=np.int64)
    order = np.argsort(seg_ids)
    pos = np.searchsorted(seg_ids[order], ids).clip(max=len(seg_ids) - 1)
    found = seg_ids[order][pos] == ids
    return np.where(found, order[pos], -1)


def draw_panoptic(image, panoptic: PanopticMap, class_names: Sequence[str], alpha: float = 0.6, *, colors=None,
                  show_names: bool = True, min_name_area: int = 64) -> np.ndarray:
    """Things in per-instance shades of their class colour, stuff in class colours (tinted at
    ``alpha``; void left as is), white outlines between segments, class names inside segments
    (crowd segments tagged "crowd")."""
    img = to_uint8_image(image)
    h, w = img.shape[:2]
    if panoptic.image_size != (h, w):
        raise ValueError(f"panoptic map is {panoptic.image_size} but the image is {(h, w)}")
    owner = _segment_index(panoptic)
    seg_colors = panoptic_colors(panoptic, len(class_names), colors)
    out = _blend(img, owner, seg_colors, alpha) if len(seg_colors) else img.copy()
    out[_edges(owner)] = 255
    if show_names and panoptic.segments:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        fnt = font(_sizes(h, w)[1])
        for k, (x, y) in _interior_points(owner, len(panoptic.segments), min_name_area).items():
            s = panoptic.segments[k]
            text = _name(class_names, s.label) + (" crowd" if s.iscrowd else "")
            _text_box(draw, (x, y), text, seg_colors[k], fnt, above=False, size=(h, w))
        out = np.asarray(pil)
    return out


def draw_heatmaps(image, heatmaps, *, alpha: float = 0.6, colormap: str = "jet") -> np.ndarray:
    """Overlay ``[K, h, w]`` (or ``[h, w]``) heatmaps covering the whole image: their per-pixel maximum,
    scaled to ``[0, 1]`` (divided by the maximum when it exceeds 1), resized bilinearly to the image,
    coloured with a matplotlib colormap and blended with opacity ``alpha * heat``."""
    from matplotlib import colormaps

    img = to_uint8_image(image)
    h, w = img.shape[:2]
    hm = torch.as_tensor(_np(heatmaps), dtype=torch.float32)
    if hm.ndim == 2:
        hm = hm[None]
    if hm.ndim != 3:
        raise ValueError(f"heatmaps must be [K, h, w] or [h, w], got {tuple(hm.shape)}")
    heat = hm.amax(0).clamp(min=0)
    top = float(heat.max()) if heat.numel() else 0.0
    if top > 1.0:
        heat = heat / top
    heat = torch.nn.functional.interpolate(heat[None, None], size=(h, w), mode="bilinear",
                                           align_corners=False)[0, 0].clamp(0, 1).numpy()
    lut = (np.asarray(colormaps[colormap](np.linspace(0, 1, 256)))[:, :3] * 255).astype(np.float32)
    color = lut[np.round(heat * 255).astype(np.int64)]
    a = (alpha * heat)[..., None]
    return np.round((1 - a) * img.astype(np.float32) + a * color).astype(np.uint8)


def draw_legend(image, class_names: Sequence[str], labels: Sequence[int] | None = None, *, colors=None,
                font_size: int | None = None) -> np.ndarray:
    """The image with a legend panel on its right: a colour swatch and the name of each of ``labels``
    (default: every class), in as many columns as the image height needs."""
    img = to_uint8_image(image)
    h, w = img.shape[:2]
    labels = list(range(len(class_names))) if labels is None else [int(l) for l in labels]
    table = class_colors(max(len(class_names), max(labels, default=-1) + 1, 1), colors)
    fs = font_size or _sizes(h, w)[1]
    fnt = font(fs)
    row = fs + 6
    per_col = max(1, (h - 4) // row)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((measure.textlength(_name(class_names, l), font=fnt) for l in labels), default=0)
    col_w = int(fs + 10 + text_w + 8)
    ncol = max(1, -(-len(labels) // per_col))
    panel_h = max(h, min(len(labels), per_col) * row + 4)
    panel = Image.new("RGB", (col_w * ncol, panel_h), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for i, l in enumerate(labels):
        x, y = (i // per_col) * col_w + 4, (i % per_col) * row + 4
        draw.rectangle((x, y, x + fs, y + fs), fill=tuple(int(c) for c in table[l]), outline=(0, 0, 0))
        draw.text((x + fs + 6, y), _name(class_names, l), font=fnt, fill=(0, 0, 0))
    canvas = np.full((panel_h, w + panel.width, 3), 255, dtype=np.uint8)
    canvas[:h, :w] = img
    canvas[:, w:] = np.asarray(panel)
    return canvas

def detections_to_draw(instances: Instances, score_threshold: float, top_k: int = 5
                       ) -> tuple[Instances, str, bool]:
    """Which detections a picture shows: those with ``score >= score_threshold``; when none reaches
    it, the ``top_k`` highest-scoring ones instead (a blank picture says nothing about what the model
    does). Returns ``(instances to draw, a caption saying what is drawn, fell_back)``; the caption
    names the threshold and, on the fallback, the highest score."""
    n = len(instances)
    if instances.scores is None:
        return instances, f"{n} object(s)", False
    if n == 0:
        return instances, "no detection at all", False
    scores = _np(instances.scores).astype(np.float64)
    keep = np.flatnonzero(scores >= score_threshold)
    if len(keep):
        what = f"{len(keep)} detection(s) with score >= {score_threshold:g}"
        return instances[torch.as_tensor(keep, dtype=torch.long)], what, False
    top = np.argsort(-scores, kind="stable")[:max(1, top_k)]
    what = (f"no detection reached {score_threshold:g} (highest score {scores.max():.3f}); "
            f"the top {len(top)} of {n} drawn")
    return instances[torch.as_tensor(top, dtype=torch.long)], what, True


def tile(images: Sequence, titles: Sequence[str] | None = None, *, columns: int | None = None, gap: int = 6,
         font_size: int | None = None, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Images side by side (``columns``: default all in one row, more wrap to new rows), each under a
    title bar (``titles``; long titles are cut to the image width). Cells are as large as the
    largest image; smaller images sit at their top-left. Returns one ``uint8 [H, W, 3]`` array."""
    imgs = [to_uint8_image(im) for im in images]
    if not imgs:
        raise ValueError("tile: no images")
    cols = max(1, min(len(imgs), columns or len(imgs)))
    rows = -(-len(imgs) // cols)
    ch = max(im.shape[0] for im in imgs)
    cw = max(im.shape[1] for im in imgs)
    fs = font_size or max(11, min(18, round(cw / 22)))
    bar = (fs + 8) if titles is not None else 0
    canvas = np.empty((rows * (ch + bar) + (rows - 1) * gap, cols * cw + (cols - 1) * gap, 3), dtype=np.uint8)
    canvas[:] = background
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        y, x = r * (ch + bar + gap) + bar, c * (cw + gap)
        canvas[y:y + im.shape[0], x:x + im.shape[1]] = im
    if titles is not None:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        fnt = font(fs)
        for i, t in enumerate(titles):
            r, c = divmod(i, cols)
            y, x = r * (ch + bar + gap), c * (cw + gap)
            text = str(t)
            while text and draw.textlength(text, font=fnt) > cw - 4:
                text = text[:-2] + "\u2026" if len(text) > 2 else ""
            draw.text((x + 2, y + 3), text, font=fnt, fill=(30, 30, 30))
        canvas = np.asarray(pil)
    return canvas


def save_image(path: str | os.PathLike, array) -> Path:
    """Write an image atomically (temp file in the same folder, then ``os.replace``); the format
    follows the suffix (``.png``, ``.jpg``, ...). Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(to_uint8_image(array))
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r}")
    with atomic_open(path, "wb") as f:
        img.save(f, format=fmt)
    return path


__all__ = ["detections_to_draw", "draw_heatmaps", "draw_instances", "draw_legend", "draw_panoptic", "draw_semantic",
           "font", "panoptic_colors", "save_image", "tile", "to_uint8_image"]
