"""Detections in the model's (resized) frame -> :class:`Instances` in original image pixels.

* Boxes and keypoints are scaled per axis by ``original / resized`` (the integer sizes, in float32:
  torchvision's ``resize_boxes`` / ``resize_keypoints`` arithmetic).
* RoI masks (``M x M`` probabilities inside each box) are pasted into the image as Mask R-CNN does
  (torchvision's ``paste_masks_in_image``): the mask gets a 1-cell zero border, the box is enlarged by
  the same factor ``(M + 2) / M`` and truncated to integer corners, the padded mask is resized
  bilinearly (``align_corners=False``) to the integer box (``x2 - x1 + 1`` by ``y2 - y1 + 1`` px) and
  written at its place, clipped to the image. Here that resize is done for many masks at once as two
  batched products with sparse interpolation matrices (rows: image pixels, columns: mask cells,
  zero rows outside the box), instead of one ``interpolate`` call per mask.
* With ``aligned=True`` (detectron2's convention, for heads trained on pixel-aligned targets, see
  the R-CNN mask head's ``aligned`` option) the mask's ``M`` cells span the *float*
  box exactly, pixel centres at ``+0.5``: each image pixel samples the mask bilinearly at
  ``u = (x + 0.5 - x1) / (x2 - x1) * M - 0.5`` (zero outside, as ``grid_sample`` with zero padding) --
  no truncation of the box to integers, which costs small objects up to a pixel on each side.
* Labels go from the heads' convention (``1..C``, 0 = background) to sceneparse's ``0..C-1``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..ops.heatmaps import heatmaps_to_keypoints
from ..structures.instances import Instances


def _ratios(src: tuple[int, int], dst: tuple[int, int], device) -> tuple[Tensor, Tensor]:
    """``dst / src`` per axis ``(rh, rw)``, float32 scalars (sizes may be traced 0-dim tensors)."""
    def f(v) -> Tensor:
        if isinstance(v, Tensor):
            return v.to(device=device, dtype=torch.float32)
        return torch.tensor(v, dtype=torch.float32, device=device)

    return f(dst[0]) / f(src[0]), f(dst[1]) / f(src[1])


def rescale_boxes(boxes: Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Tensor:
    """XYXY boxes ``[N, 4]`` from an image of ``src_size`` to one of ``dst_size`` (``(h, w)``)."""
    rh, rw = _ratios(src_size, dst_size, boxes.device)
    return boxes * torch.stack([rw, rh, rw, rh])


def rescale_keypoints(keypoints: Tensor, src_size: tuple[int, int], dst_size: tuple[int, int]) -> Tensor:
    """Keypoints ``[N, K, 3]`` (x, y, v) from ``src_size`` to ``dst_size``; ``v`` is unchanged."""
    rh, rw = _ratios(src_size, dst_size, keypoints.device)
    out = keypoints.clone()
    out[..., 0] *= rw
    out[..., 1] *= rh
    return out


def _interp_matrix(start: Tensor, length: Tensor, first: int, count: int, src: int) -> Tensor:
    """Bilinear (``align_corners=False``) weights ``[N, count, src]`` mapping ``src`` mask cells onto the
    image pixels ``first .. first + count - 1``, for masks resized to ``length [N]`` px starting at
    pixel ``start [N]``. Pixels outside ``[start, start + length)`` get zero rows."""
    n = start.shape[0]
    j = first + torch.arange(count, device=start.device)[None, :] - start[:, None]  # index into the resized mask
    valid = (j >= 0) & (j < length[:, None])
    scale = src / length.to(torch.float32)  # input / output size, as interpolate computes it
    pos = (scale[:, None] * (j.to(torch.float32) + 0.5) - 0.5).clamp(min=0)
    i0 = pos.floor().long().clamp(0, src - 1)
    i1 = (i0 + 1).clamp(max=src - 1)
    l1 = (pos - i0.to(torch.float32)).clamp(0, 1)
    w = torch.zeros((n, count, src), dtype=torch.float32, device=start.device)
    w.scatter_add_(2, i0[..., None], ((1.0 - l1) * valid)[..., None])
    w.scatter_add_(2, i1[..., None], (l1 * valid)[..., None])
    return w


def _aligned_interp_matrix(lo: Tensor, hi: Tensor, first: int, count: int, m: int) -> Tensor:
    """Bilinear weights ``[N, count, m + 2]`` onto a mask of ``m`` cells with a 1-cell zero border that
    spans ``[lo, hi)`` (float image px, pixel ``p`` centred at ``p + 0.5``), for the image pixels
    ``first .. first + count - 1``: ``grid_sample``'s ``align_corners=False`` / zero padding arithmetic."""
    centre = first + torch.arange(count, device=lo.device, dtype=torch.float32)[None, :] + 0.5
    length = (hi - lo).to(torch.float32).clamp(min=1e-6)[:, None]
    v = (centre - lo.to(torch.float32)[:, None]) / length * m + 0.5  # index into the padded mask
    valid = ((v >= 0) & (v <= m + 1)).to(torch.float32)
    i0 = v.floor().clamp(0, m + 1)
    l1 = (v - i0).clamp(0, 1)
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=m + 1)
    w = torch.zeros((lo.shape[0], centre.shape[1], m + 2), dtype=torch.float32, device=lo.device)
    w.scatter_add_(2, i0[..., None], ((1.0 - l1) * valid)[..., None])
    w.scatter_add_(2, i1[..., None], (l1 * valid)[..., None])
    return w


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], *, padding: int = 1,
                threshold: float | None = None, chunk: int = 32, aligned: bool = False) -> Tensor:
    """Paste RoI masks ``[N, M, M]`` (probabilities) at ``boxes [N, 4]`` (XYXY, image px) into an image.

    Returns ``float32 [N, H, W]`` probabilities, or ``bool [N, H, W]`` = ``prob > threshold`` if a
    threshold is given. ``chunk`` masks (in order of their top edge) are resized at a time, over the
    smallest image rectangle that holds all their boxes (so the float intermediate stays small).
    While tracing (graph export) all masks are resized at once over the whole image, whose size may
    then be a pair of traced 0-dim tensors: the same products without data-dependent rectangles.
    ``aligned=True``: the cells span the float boxes exactly (module docstring; ``padding`` is then 1).
    """
    tracing = torch.jit.is_tracing()
    h_img, w_img = (image_size[0], image_size[1]) if tracing else (int(image_size[0]), int(image_size[1]))
    n = masks.shape[0]
    if masks.ndim != 3 or boxes.shape != (n, 4):
        raise ValueError(f"paste_masks needs masks [N, M, M] and boxes [N, 4], got {tuple(masks.shape)} "
                         f"and {tuple(boxes.shape)}")
    if not tracing:
        out = torch.zeros((n, h_img, w_img), dtype=torch.bool if threshold is not None else torch.float32,
                          device=masks.device)
        if n == 0:
            return out
    m = masks.shape[-1]
    padding = 1 if aligned else padding
    padded = torch.nn.functional.pad(masks.to(torch.float32), (padding,) * 4)
    s = m + 2 * padding
    scale = float(s) / m
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    cx = (boxes[:, 2] + boxes[:, 0]) * 0.5
    cy = (boxes[:, 3] + boxes[:, 1]) * 0.5
    outer = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)  # box + one cell each side
    if aligned:
        b = boxes.to(torch.float32)

        def rows(first, count, sl):  # [n, count, s] weights along y
            return _aligned_interp_matrix(b[sl, 1], b[sl, 3], first, count, m)

        def cols(first, count, sl):
            return _aligned_interp_matrix(b[sl, 0], b[sl, 2], first, count, m)
        # pixels whose centre lies in the outer box (with one spare pixel each side)
        ib = torch.cat([outer[:, :2].floor() - 1, outer[:, 2:].ceil()], dim=1).to(torch.int64)
    else:
        ib = outer.to(torch.int64)  # truncation
        width = (ib[:, 2] - ib[:, 0] + 1).clamp(min=1)
        height = (ib[:, 3] - ib[:, 1] + 1).clamp(min=1)

        def rows(first, count, sl):
            return _interp_matrix(ib[sl, 1], height[sl], first, count, s)

        def cols(first, count, sl):
            return _interp_matrix(ib[sl, 0], width[sl], first, count, s)
    if tracing:
        everything = slice(None)
        res = rows(0, h_img, everything) @ padded @ cols(0, w_img, everything).transpose(1, 2)  # [N, H, W]
        return res > threshold if threshold is not None else res
    # the part of the image each mask covers: [y0, y1) x [x0, x1)
    x0, y0 = ib[:, 0].clamp(0, w_img), ib[:, 1].clamp(0, h_img)
    x1, y1 = (ib[:, 2] + 1).clamp(0, w_img), (ib[:, 3] + 1).clamp(0, h_img)
    order = torch.argsort(y0, stable=True)  # chunks of vertically close masks: smaller rectangles
    for c in range(0, n, chunk):
        sl = order[c: c + chunk]
        ya, yb, xa, xb = int(y0[sl].min()), int(y1[sl].max()), int(x0[sl].min()), int(x1[sl].max())
        if yb <= ya or xb <= xa:
            continue
        res = rows(ya, yb - ya, sl) @ padded[sl] @ cols(xa, xb - xa, sl).transpose(1, 2)  # zero outside each box
        out[sl, ya:yb, xa:xb] = res > threshold if threshold is not None else res
    return out


def detections_in_original(boxes: Tensor, scores: Tensor, labels: Tensor, resized_size: tuple[int, int],
                           original_size: tuple[int, int], *, mask_probs: Tensor | None = None,
                           keypoint_heatmaps: Tensor | None = None, mask_threshold: float | None = 0.5,
                           label_offset: int = 1, mask_aligned: bool = False) -> dict[str, Tensor]:
    """One image's detections (boxes in the ``resized_size`` frame, labels ``1..C``) mapped to
    ``original_size``: the :class:`Instances` fields as tensors, ``labels - label_offset``, RoI masks
    ``[N, M, M]`` pasted (``bool`` = ``prob > mask_threshold``, or the ``float32`` probabilities when
    ``mask_threshold is None``), keypoint heatmaps ``[N, K, S, S]`` decoded in their boxes
    (:func:`~sceneparse.ops.heatmaps.heatmaps_to_keypoints`) and rescaled. The sizes may be traced
    0-dim tensors (the exported detector graphs call this). ``mask_aligned``: :func:`paste_masks`'s
    ``aligned`` (the mask head's convention)."""
    out_boxes = rescale_boxes(boxes, resized_size, original_size)
    fields = dict(boxes=out_boxes, scores=scores, labels=labels.to(torch.int64) - label_offset)
    if mask_probs is not None:
        fields["masks"] = paste_masks(mask_probs, out_boxes, original_size, threshold=mask_threshold,
                                     aligned=mask_aligned)
    if keypoint_heatmaps is not None:
        keypoints, keypoint_scores = heatmaps_to_keypoints(keypoint_heatmaps, boxes)
        fields["keypoints"] = rescale_keypoints(keypoints, resized_size, original_size)
        fields["keypoint_scores"] = keypoint_scores
    return fields


def detections_to_instances(boxes: Tensor, scores: Tensor, labels: Tensor, resized_size: tuple[int, int],
                            original_size: tuple[int, int], *, mask_probs: Tensor | None = None,
                            keypoint_heatmaps: Tensor | None = None, mask_threshold: float = 0.5,
                            label_offset: int = 1, mask_aligned: bool = False) -> Instances:
    """:func:`detections_in_original` as :class:`Instances` of ``original_size`` (masks thresholded)."""
    return Instances(tuple(original_size), **detections_in_original(
        boxes, scores, labels, resized_size, original_size, mask_probs=mask_probs,
        keypoint_heatmaps=keypoint_heatmaps, mask_threshold=mask_threshold, label_offset=label_offset,
        mask_aligned=mask_aligned))


__all__ = ["paste_masks", "rescale_boxes", "rescale_keypoints", "detections_in_original",
           "detections_to_instances"]
