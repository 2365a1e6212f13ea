"""Object Keypoint Similarity (OKS), COCO's IoU for keypoints, computed as pycocotools computes it.

For a detection d and a ground-truth person g with area ``s`` (the annotation's ``area``) and
per-keypoint constants ``k_i = 2 σ_i`` (pycocotools' ``sigmas`` are the published values / 10)::

    e_i = (dx_i² + dy_i²) / k_i² / (s + eps) / 2          OKS = mean_i exp(-e_i)

where the mean runs over the ground truth's labelled keypoints (``v > 0``). A ground truth with no
labelled keypoint uses, for every keypoint, the distance from the detected point to the box
``[x - w, x + 2w] × [y - h, y + 2h]`` (the annotated box enlarged by its own size on each side),
so detections near an unlabelled person score high. The operations and the summation order are
pycocotools' (pairs with the same number of labelled keypoints are summed together, row by row,
which numpy does in the same order as one 1-D sum), so the values are bit-identical.
"""
from __future__ import annotations

import numpy as np


def oks_pairs(dt_kps: np.ndarray, gt_kps: np.ndarray, gt_boxes: np.ndarray, gt_areas: np.ndarray,
              sigmas: np.ndarray) -> np.ndarray:
    """OKS of paired detections and ground truths.

    ``dt_kps`` / ``gt_kps``: ``float64 [P, 3J]`` flat ``(x, y, v)`` triples; ``gt_boxes`` ``[P, 4]``
    XYWH; ``gt_areas`` ``[P]``; ``sigmas`` ``[J]`` as pycocotools uses them (published / 10).
    Returns ``float64 [P]``.
    """
    p = dt_kps.shape[0]
    out = np.zeros(p, dtype=np.float64)
    if p == 0:
        return out
    variances = (sigmas * 2) ** 2
    xd, yd = dt_kps[:, 0::3], dt_kps[:, 1::3]
    xg, yg, vg = gt_kps[:, 0::3], gt_kps[:, 1::3], gt_kps[:, 2::3]
    visible = vg > 0
    k1 = np.count_nonzero(visible, axis=1)
    unlabelled = k1 == 0
    dx = xd - xg
    dy = yd - yg
    if unlabelled.any():
        b = gt_boxes[unlabelled]
        x0 = (b[:, 0] - b[:, 2])[:, None]
        x1 = (b[:, 0] + b[:, 2] * 2)[:, None]
        y0 = (b[:, 1] - b[:, 3])[:, None]
        y1 = (b[:, 1] + b[:, 3] * 2)[:, None]
        u_xd, u_yd = xd[unlabelled], yd[unlabelled]
        dx[unlabelled] = np.maximum(0, x0 - u_xd) + np.maximum(0, u_xd - x1)
        dy[unlabelled] = np.maximum(0, y0 - u_yd) + np.maximum(0, u_yd - y1)
    e = (dx ** 2 + dy ** 2) / variances / (gt_areas[:, None] + np.spacing(1)) / 2
    terms = np.exp(-e)
    for n in np.unique(k1):
        rows = np.flatnonzero(k1 == n)
        if n == 0:
            out[rows] = np.sum(terms[rows], axis=1) / terms.shape[1]
        else:
            sel = terms[rows][visible[rows]].reshape(rows.size, n)
            out[rows] = np.sum(sel, axis=1) / n
    return out
