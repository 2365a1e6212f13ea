"""Mask overlaps as pycocotools computes them: RLE intersection over union, crowd regions over the
detection's own area, all in pycocotools' C code (``mask.iou`` on run-length encodings).

Conversion to RLE follows ``COCO.annToRLE``: polygons are rasterised with the *image* size and the
parts of one object merged, by :func:`sceneparse.structures.rle.polygons_to_rles` (the one
polygon-to-RLE; numpy and pycocotools only, no torch); uncompressed RLEs are compressed; compressed
RLEs are used as they are. Instead of one pycocotools call per annotation, all polygons (or
uncompressed RLEs) of images of one size go through a single call.
"""
from __future__ import annotations

import operator
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from ...errors import DataError, Problem
from ...structures.rle import polygons_to_rles


#: :func:`segmentation_kinds` codes
COMPRESSED, POLYGONS, UNCOMPRESSED, ODD_POLYGONS, INVALID = 0, 1, 2, 3, -1


def segmentation_kinds(segmentations: Sequence) -> np.ndarray:
    """``int8 [N]`` code per segmentation: compressed RLE (``counts`` str/bytes), polygons (first
    part longer than 4 numbers), uncompressed RLE (``counts`` list), polygons whose first part has
    <= 4 numbers (pycocotools reads those as boxes), or invalid."""
    n = len(segmentations)
    try:  # the common case, JSON RLE results: C-level passes over the dicts, no per-record Python
        sizes = set(map(type, map(_SIZE, segmentations)))
        counts = set(map(type, map(_COUNTS, segmentations)))
    except (KeyError, TypeError, IndexError):  # not all dicts with "size" and "counts"
        sizes = counts = None
    if sizes is not None and n and counts <= {str, bytes} and set(map(type, segmentations)) == {dict}:
        return np.full(n, COMPRESSED, dtype=np.int8)
    if all(type(s) is dict for s in segmentations):  # dicts: classify by the type of "counts"
        code = _COUNTS_KIND.get
        return np.fromiter((code(type(s.get("counts")), INVALID) if "size" in s else INVALID
                            for s in segmentations), dtype=np.int8, count=n)
    kinds = np.full(n, INVALID, dtype=np.int8)
    for i, s in enumerate(segmentations):
        if isinstance(s, dict):
            c = s.get("counts")
            if "size" in s:
                kinds[i] = (COMPRESSED if isinstance(c, (str, bytes)) else
                            UNCOMPRESSED if isinstance(c, list) else INVALID)
        elif isinstance(s, list) and s:
            first = s[0]
            kinds[i] = POLYGONS if isinstance(first, (list, tuple)) and len(first) > 4 else ODD_POLYGONS
    return kinds


_COUNTS_KIND = {str: COMPRESSED, bytes: COMPRESSED, list: UNCOMPRESSED}
_SIZE, _COUNTS = operator.itemgetter("size"), operator.itemgetter("counts")


def to_rles(segmentations: Sequence, image_ids: np.ndarray, gt, source: str | None = None,
            kinds: np.ndarray | None = None) -> list:
    """``N`` segmentations (polygons / uncompressed RLE / compressed RLE) -> ``N`` pycocotools RLEs.

    ``image_ids [N]`` give each object's image, whose ``height``/``width`` in ``gt`` (a
    :class:`~.tables.GroundTruthTable`) rasterise polygons, as ``annToRLE`` does; ``source`` names
    the file in errors; ``kinds`` are the :func:`segmentation_kinds` codes if already known.
    """
    n = len(segmentations)
    out: list = list(segmentations)
    if n == 0:
        return out
    kind = segmentation_kinds(segmentations) if kinds is None else kinds
    if (kind == INVALID).any():
        i = int(np.flatnonzero(kind == INVALID)[0])
        raise DataError(Problem(source, f"object {i} (image_id {int(image_ids[i])})", "segmentation",
                                "not polygons or an RLE", segmentations[i]))
    todo = np.flatnonzero(kind != COMPRESSED)
    if todo.size == 0:
        return out
    heights, widths = gt.image_sizes(np.asarray(image_ids)[todo])
    if (heights <= 0).any() or (widths <= 0).any():
        i = int(todo[np.flatnonzero((heights <= 0) | (widths <= 0))[0]])
        raise DataError(Problem(source, f"image {int(image_ids[i])}", "height/width",
                                "a mask needs the image size (positive height and width)"))
    size_key = heights * (int(widths.max()) + 1) + widths
    by_size = np.argsort(size_key, kind="stable")
    cuts = np.flatnonzero(np.diff(size_key[by_size])) + 1
    for part in np.split(by_size, cuts):  # one pycocotools call per image size and kind
        sel = todo[part]
        h, w = int(heights[part[0]]), int(widths[part[0]])
        # polygons, and lists whose first part has <= 4 numbers (annToRLE's boxes: polygons_to_rles
        # gives those their own pycocotools call, as annToRLE does)
        polys = sel[(kind[sel] == POLYGONS) | (kind[sel] == ODD_POLYGONS)].tolist()
        if polys:
            for i, r in zip(polys, polygons_to_rles([segmentations[i] for i in polys], h, w)):
                out[i] = r
        unc = sel[kind[sel] == UNCOMPRESSED].tolist()
        if unc:
            for i, r in zip(unc, mask_utils.frPyObjects([segmentations[i] for i in unc], h, w)):
                out[i] = r
    return out


def mask_iou_blocks(dt_rles: list, gt_rles: list, gt_crowd: np.ndarray, dt_bounds: np.ndarray,
                    gt_bounds: np.ndarray, group_images: np.ndarray | None = None) -> np.ndarray:
    """IoU of every detection with every ground truth of the same (image, category) group.

    ``dt_rles`` / ``gt_rles`` are sorted by group; group ``b`` owns detections
    ``dt_bounds[b, 0]:dt_bounds[b, 1]`` and ground truths ``gt_bounds[b, 0]:gt_bounds[b, 1]``.
    Returns the concatenation over groups of the row-major ``[D_b, G_b]`` blocks, ``float64 [P]``;
    a crowd ground truth scores ``|dt ∩ gt| / |dt|``.

    With ``group_images`` (the image of each group; groups sorted by image, then category) the
    groups of one image go through *one* ``mask.iou`` call on all of that image's detections and
    ground truths, and the same-group pairs are picked with a boolean mask: the per-call Python
    overhead, not the C work, dominated one call per group (pycocotools' RLE IoU skips pairs whose
    boxes do not overlap, so the extra cross-category pairs cost little). Row-major order of the
    masked image matrix is exactly the concatenation of its groups' row-major blocks.
    """
    crowd = gt_crowd.astype(np.uint8)
    nb = len(dt_bounds)
    if nb == 0:
        return np.zeros(0, dtype=np.float64)
    if group_images is None:
        parts = []
        for (ds, de), (gs, ge) in zip(dt_bounds.tolist(), gt_bounds.tolist()):
            parts.append(np.asarray(mask_utils.iou(dt_rles[ds:de], gt_rles[gs:ge], crowd[gs:ge]),
                                    dtype=np.float64).ravel())
        return np.concatenate(parts)
    dt_group = np.repeat(np.arange(nb), dt_bounds[:, 1] - dt_bounds[:, 0])
    gt_group = np.repeat(np.arange(nb), gt_bounds[:, 1] - gt_bounds[:, 0])
    group_images = np.asarray(group_images)
    first = np.flatnonzero(np.concatenate([[True], group_images[1:] != group_images[:-1]]))
    last = np.concatenate([first[1:], [nb]]) - 1
    parts = []
    for b0, b1 in zip(first.tolist(), last.tolist()):
        ds, de = int(dt_bounds[b0, 0]), int(dt_bounds[b1, 1])
        gs, ge = int(gt_bounds[b0, 0]), int(gt_bounds[b1, 1])
        m = np.asarray(mask_utils.iou(dt_rles[ds:de], gt_rles[gs:ge], crowd[gs:ge]), dtype=np.float64)
        m = m.reshape(de - ds, ge - gs)
        if b0 == b1:
            parts.append(m.ravel())
        else:
            parts.append(m[dt_group[ds:de, None] == gt_group[None, gs:ge]])
    return np.concatenate(parts)
