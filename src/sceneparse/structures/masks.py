"""Mask codecs and geometry: bitmaps (``bool [N, H, W]``), polygons and COCO RLE.

RLE encoding/decoding is pycocotools' (``compressed`` = COCO's string form with ``counts: str``;
``uncompressed`` = ``counts: list[int]``, column-major run lengths starting with zeros).
Polygons are COCO's: a list of flat ``[x0, y0, x1, y1, ...]`` rings in absolute pixels; they are
rasterised by :mod:`.rle` (the one polygon-to-RLE, torch-free so that evaluation shares it).

pycocotools' C code trusts its input: an RLE string outside its alphabet, run lengths that do not
add up to ``height * width`` or a ``NaN`` polygon corrupt memory or exhaust it. Every entry point
here that hands RLEs or polygons to it checks them first (:func:`.rle.rle_problems`,
:func:`.rle.ring_problems`) and raises ``ValueError`` saying what is wrong; readers name the file
and record.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils

from . import rle as _rle
from .rle import RLE, Polygons


def _as_numpy_bool(masks) -> np.ndarray:
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    return np.asarray(masks).astype(bool, copy=False)


def encode_rle(masks) -> list[RLE]:
    """``bool [N, H, W]`` (tensor or array) -> list of compressed RLEs (``counts`` as ``str``)."""
    m = _as_numpy_bool(masks)
    if m.ndim == 2:
        m = m[None]
    if m.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def _check_rles(rles: Sequence[RLE]) -> None:
    """``ValueError`` naming the first RLE that pycocotools must not see (see :func:`.rle.rle_problems`)."""
    for i, p in enumerate(_rle.rle_problems(rles)):
        if p is not None:
            raise ValueError(f"invalid RLE{f' {i}' if len(rles) > 1 else ''}: {p}")


def _to_pycoco_rle(rle: RLE) -> RLE:
    """Any RLE form (compressed str/bytes or uncompressed list) -> pycocotools' compressed form."""
    h, w = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def decode_rle(rles: RLE | Sequence[RLE]) -> np.ndarray:
    """RLE (compressed or uncompressed) or a list of them -> ``bool [N, H, W]`` (or ``[H, W]`` for one).
    Raises ``ValueError`` for an invalid RLE (checked before pycocotools decodes it)."""
    if isinstance(rles, dict):
        _check_rles([rles])
        return mask_utils.decode(_to_pycoco_rle(rles)).astype(bool)
    if len(rles) == 0:
        return np.zeros((0, 0, 0), dtype=bool)
    _check_rles(rles)
    out = mask_utils.decode([_to_pycoco_rle(r) for r in rles])
    return out.transpose(2, 0, 1).astype(bool)


def rle_to_uncompressed(rle: RLE) -> RLE:
    """Compressed RLE -> COCO's uncompressed form ``{"size": [h, w], "counts": [int, ...]}``."""
    m = decode_rle(rle)
    flat = np.asfortranarray(m).ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": list(rle["size"]), "counts": [int(c) for c in counts]}


def polygons_to_rle(polygons: Polygons, height: int, width: int) -> RLE:
    """COCO polygons -> one merged compressed RLE with ``counts`` as ``str`` (the rasterisation is
    :func:`.rle.polygons_to_rle`'s, i.e. pycocotools' ``annToRLE``). Raises ``ValueError`` for a ring
    pycocotools must not rasterise (see :func:`.rle.ring_problems`)."""
    for i, p in enumerate(_rle.ring_problems(list(polygons), height, width)):
        if p is not None:
            raise ValueError(f"polygon ring {i}: {p}")
    rle = _rle.polygons_to_rle(polygons, height, width)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def polygons_to_mask(polygons: Polygons, height: int, width: int) -> np.ndarray:
    """COCO polygons -> ``bool [H, W]``."""
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    return decode_rle(polygons_to_rle(polygons, height, width))


def mask_to_polygons(mask, min_area: float = 0.0, tolerance: float = 0.0) -> Polygons:
    """``bool [H, W]`` -> COCO polygons (outer contour of each connected part; holes are not kept).

    OpenCV traces boundary *pixels*; each traced pixel ``(x, y)`` is moved to the pixel corner that
    faces the outside (``x + 1`` when the pixel to its right is background, ``y + 1`` when the one
    below is), so that the polygon follows pixel edges and pycocotools rasterises it back to the
    same pixels for axis-aligned shapes (and to IoU > 0.95 for round ones). ``tolerance`` > 0
    simplifies the contour (Douglas-Peucker, in px); parts with polygon area < ``min_area`` are dropped.
    """
    import cv2

    m = _as_numpy_bool(mask)
    h, w = m.shape
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = m
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys: Polygons = []
    for c in contours:
        if tolerance > 0:
            c = cv2.approxPolyDP(c, tolerance, True)
        pts = c.reshape(-1, 2)
        x, y = pts[:, 0], pts[:, 1]
        dx = ~padded[y + 1, x + 2]  # right neighbour is background
        dy = ~padded[y + 2, x + 1]  # neighbour below is background
        corners = np.stack([x + dx, y + dy], axis=1).astype(np.float64)
        if len(corners) < 3:  # a single pixel or a 1-px line: use its pixel-edge rectangle
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0) + 1
            corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
        xs, ys = corners[:, 0], corners[:, 1]
        poly_area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
        if poly_area < min_area:
            continue
        polys.append(corners.ravel().tolist())
    return polys


def area(masks) -> torch.Tensor | np.ndarray:
    """Pixel count of each mask in ``[N, H, W]`` (type of the input)."""
    if isinstance(masks, torch.Tensor):
        return masks.flatten(-2).sum(-1)
    return np.asarray(masks).reshape(*np.shape(masks)[:-2], -1).sum(-1)


def rle_area(rles: Sequence[RLE]) -> np.ndarray:
    """Pixel count of each RLE (``ValueError`` for an invalid one)."""
    _check_rles(rles)
    return np.asarray(mask_utils.area([_to_pycoco_rle(r) for r in rles]), dtype=np.float64)


def masks_to_boxes(masks) -> torch.Tensor:
    """Tight XYXY boxes around ``bool [N, H, W]`` masks (pixel-edge convention: a single pixel
    at (i, j) gives ``(j, i, j+1, i+1)``). Empty masks give ``(0, 0, 0, 0)``. Vectorised."""
    m = masks if isinstance(masks, torch.Tensor) else torch.as_tensor(np.asarray(masks))
    m = m.bool()
    if m.ndim == 2:
        m = m[None]
    n, h, w = m.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    rows = m.any(dim=2)  # [N, H]
    cols = m.any(dim=1)  # [N, W]
    nonempty = rows.any(dim=1)
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).min(dim=1).values
    y1 = torch.where(rows, ar_h, -1).max(dim=1).values + 1
    x0 = torch.where(cols, ar_w, big).min(dim=1).values
    x1 = torch.where(cols, ar_w, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~nonempty] = 0
    return boxes
