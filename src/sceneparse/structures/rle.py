"""COCO polygons -> run-length encoding: the one implementation, with numpy and pycocotools only.

Every layer rasterises polygons here -- :mod:`.masks` (datasets, format codecs, the synthetic
writer) and :mod:`sceneparse.evaluation` (which must not import torch, so this module never does;
``sceneparse.structures`` itself loads its torch-based types lazily for the same reason).

The rule is pycocotools' ``COCO.annToRLE`` for an object given as polygons: all its rings go
through one ``frPyObjects(rings, height, width)`` call at the *image* size, and the ring RLEs are
merged (union) with ``merge``. Results are pycocotools' compressed form, ``{"size": [h, w],
"counts": bytes}``. Whatever pycocotools does with odd input is kept: a first ring of <= 4 numbers
makes ``frPyObjects`` read the rings as ``[x, y, w, h]`` boxes, exactly as ``annToRLE`` would.
"""
from __future__ import annotations

from typing import Any, Sequence

from pycocotools import mask as mask_utils

Polygons = list[list[float]]
RLE = dict[str, Any]


def _merge(rles: list) -> RLE:
    # pycocotools' merge of a single RLE returns it unchanged (rleMerge copies it): skip the call
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles)


def polygons_to_rles(objects: Sequence[Sequence[Sequence[float]]], height: int, width: int) -> list[RLE]:
    """The polygons of ``N`` objects in one image size -> ``N`` merged RLEs (pycocotools' form).

    Each object is a non-empty list of flat ``[x0, y0, x1, y1, ...]`` rings in absolute pixels.
    ``objects[i]`` gives exactly ``merge(frPyObjects(objects[i], height, width))``; but the rings of
    all objects whose first ring is a polygon (> 4 numbers) go through *one* ``frPyObjects`` call
    (the per-call overhead, not the rasterisation, dominates many small objects), and the others
    through one call each, so that pycocotools reads them as it would on their own.
    """
    h, w = int(height), int(width)
    out: list[Any] = [None] * len(objects)
    batch = [i for i, o in enumerate(objects) if len(o[0]) > 4]
    if batch:
        rles = mask_utils.frPyObjects([ring for i in batch for ring in objects[i]], h, w)
        k = 0
        for i in batch:
            m = len(objects[i])
            out[i] = _merge(rles[k:k + m])
            k += m
    if len(batch) < len(objects):
        chosen = set(batch)
        for i, o in enumerate(objects):
            if i not in chosen:
                out[i] = mask_utils.merge(mask_utils.frPyObjects(list(o), h, w))
    return out


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """One object's COCO polygons -> one merged RLE in pycocotools' form (``counts`` as ``bytes``).

    Rings may be any sequences of numbers (tuples, numpy arrays); they are passed on as lists of
    floats, which pycocotools rasterises exactly as the numbers themselves.
    """
    return polygons_to_rles([[list(map(float, p)) for p in polygons]], height, width)[0]


__all__ = ["Polygons", "RLE", "polygons_to_rle", "polygons_to_rles"]
