"""Keypoint heatmaps: encoding targets and decoding predictions.

Two families:

* **Keypoint R-CNN** (Mask R-CNN sec. 3, "keypoint detection"): each keypoint is a one-hot
  ``m x m`` mask inside its RoI, trained with a softmax cross-entropy over the ``m^2`` cells.
  :func:`keypoints_to_heatmap_targets` gives the flat target index of every keypoint and
  :func:`heatmaps_to_keypoints` turns predicted maps back into image coordinates; both identical to
  torchvision's ``keypoints_to_heatmap`` / ``heatmaps_to_keypoints``.
* **Heatmap regression** (SimpleBaseline, HRNet): each keypoint is a 2-D Gaussian on a map ``stride``
  times coarser than the image; :func:`gaussian_heatmaps` encodes, :func:`decode_heatmaps` decodes
  with sub-pixel refinement.

Frames: heatmap cell ``(i, j)`` covers image pixels ``[j s, (j+1) s) x [i s, (i+1) s)`` (the project's
pixel rule), so its centre is at ``((j + 0.5) s, (i + 0.5) s)`` and an image point ``x`` sits at the
continuous cell coordinate ``u = x / s - 0.5``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["keypoints_to_heatmap_targets", "heatmaps_to_keypoints", "gaussian_heatmaps", "decode_heatmaps"]


def keypoints_to_heatmap_targets(keypoints: Tensor, rois: Tensor, heatmap_size: int) -> tuple[Tensor, Tensor]:
    """One-hot heatmap targets of keypoints ``[N, K, 3]`` (image px) inside ``rois [N, 4]`` (XYXY).

    Returns ``(index [N, K], valid [N, K])``, both int64: ``index = y * m + x`` of the cell
    ``(floor((x - x1) m / w), floor((y - y1) m / h))`` that holds the keypoint (0 where invalid), and
    ``valid = 1`` for labelled keypoints (``v > 0``) that fall inside the RoI. A keypoint exactly on the
    right/bottom edge goes to the last cell rather than off the map.
    """
    if keypoints.ndim != 3 or keypoints.shape[2] != 3:
        raise ValueError(f"keypoints must be [N, K, 3] (x, y, v), got {tuple(keypoints.shape)}")
    if rois.ndim != 2 or rois.shape != (keypoints.shape[0], 4):
        raise ValueError(f"rois must be [N, 4] with N = {keypoints.shape[0]}, got {tuple(rois.shape)}")
    m = int(heatmap_size)
    x1, y1, x2, y2 = (rois[:, i : i + 1] for i in range(4))
    x, y = keypoints[..., 0], keypoints[..., 1]
    on_right, on_bottom = x == x2, y == y2
    xi = ((x - x1) * (m / (x2 - x1))).floor().long()
    yi = ((y - y1) * (m / (y2 - y1))).floor().long()
    xi = torch.where(on_right, torch.full_like(xi, m - 1), xi)
    yi = torch.where(on_bottom, torch.full_like(yi, m - 1), yi)
    valid = ((xi >= 0) & (yi >= 0) & (xi < m) & (yi < m) & (keypoints[..., 2] > 0)).long()
    return (yi * m + xi) * valid, valid


def heatmaps_to_keypoints(maps: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
    """Keypoints ``[N, K, 3]`` ``(x, y, 1)`` in image px and their scores ``[N, K]`` from RoI heatmaps.

    ``maps [N, K, h, w]`` are the (logit) heatmaps of ``rois [N, 4]``. Each RoI's maps are resized
    bicubically to ``ceil(roi w) x ceil(roi h)`` (at least 1 px), the argmax cell ``(i, j)`` is mapped to
    ``x1 + (j + 0.5) w / ceil(w)`` (Heckbert's discrete-to-continuous ``c = d + 0.5``), and the score
    is the resized map's value there. RoIs of the same rounded size are resized together (one
    ``interpolate`` call per distinct size); the result equals torchvision's RoI-by-RoI loop.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be [N, K, h, w], got {tuple(maps.shape)}")
    if rois.ndim != 2 or rois.shape != (maps.shape[0], 4):
        raise ValueError(f"rois must be [N, 4] with N = {maps.shape[0]}, got {tuple(rois.shape)}")
    N, K = maps.shape[:2]
    device = maps.device
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    w_ceil = widths.ceil()
    h_ceil = heights.ceil()
    x_int = torch.zeros((N, K), dtype=torch.int64, device=device)
    y_int = torch.zeros((N, K), dtype=torch.int64, device=device)
    scores = torch.zeros((N, K), dtype=torch.float32, device=device)
    if torch.jit.is_tracing():  # graph export: one resize per RoI in a graph loop
        x_int, y_int, scores = _argmax_per_roi(maps, h_ceil, w_ceil)
    elif N > 0:
        sizes = torch.stack([h_ceil, w_ceil], dim=1).long()
        unique_sizes, group = torch.unique(sizes, dim=0, return_inverse=True)
        for g, (rh, rw) in enumerate(unique_sizes.tolist()):  # one batched resize per distinct RoI size
            idx = torch.where(group == g)[0]
            up = F.interpolate(maps[idx], size=(rh, rw), mode="bicubic", align_corners=False)  # [n, K, rh, rw]
            flat = up.flatten(2)
            pos = flat.argmax(dim=2)  # first maximal index, as torchvision
            x_int[idx] = pos % rw
            y_int[idx] = torch.div(pos, rw, rounding_mode="floor")
            scores[idx] = torch.gather(flat, 2, pos[..., None])[..., 0].float()
    x = (x_int.float() + 0.5) * (widths / w_ceil)[:, None] + rois[:, 0:1]
    y = (y_int.float() + 0.5) * (heights / h_ceil)[:, None] + rois[:, 1:2]
    keypoints = torch.stack([x, y, torch.ones_like(x)], dim=2).float()
    return keypoints, scores


@torch.jit._script_if_tracing
def _argmax_per_roi(maps: Tensor, h_ceil: Tensor, w_ceil: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The argmax cells ``(x_int, y_int)`` and values of each RoI's maps resized bicubically to
    ``h_ceil[i] x w_ceil[i]``, one RoI at a time. Scripted when traced, so that an exported graph
    holds a loop (the output sizes depend on the data); :func:`heatmaps_to_keypoints` uses it only
    then and batches RoIs of equal size eagerly."""
    n, k = maps.shape[0], maps.shape[1]
    # carried through the graph loop as float32 (exact below 2^24; ONNX loops need one type per value)
    x_int = torch.zeros((0, k), dtype=torch.float32, device=maps.device)
    y_int = torch.zeros((0, k), dtype=torch.float32, device=maps.device)
    scores = torch.zeros((0, k), dtype=torch.float32, device=maps.device)
    for i in range(n):
        up = F.interpolate(maps[i:i + 1], size=(int(h_ceil[i]), int(w_ceil[i])), mode="bicubic",
                           align_corners=False)[0]
        width = torch.scalar_tensor(up.size(2), dtype=torch.int64, device=maps.device)  # int64 arithmetic in ONNX
        flat = up.reshape(k, -1)
        pos = flat.argmax(dim=1)
        x = pos % width
        x_int = torch.cat([x_int, x.to(torch.float32)[None]])
        y_int = torch.cat([y_int, ((pos - x) // width).to(torch.float32)[None]])
        scores = torch.cat([scores, torch.gather(flat, 1, pos[:, None])[:, 0].to(torch.float32)[None]])
    return x_int.to(torch.int64), y_int.to(torch.int64), scores


def gaussian_heatmaps(keypoints: Tensor, size: Sequence[int], stride: float, sigma: float) -> tuple[Tensor, Tensor]:
    """Gaussian target heatmaps ``[N, K, h, w]`` and per-keypoint weights ``[N, K]`` (float32).

    ``keypoints [N, K, 3]`` in image px; ``size = (h, w)`` of the heatmap, ``stride`` image px per cell,
    ``sigma`` in cells. Map ``k`` of instance ``n`` is ``exp(-((j - u)^2 + (i - v)^2) / (2 sigma^2))`` with
    ``(u, v) = (x, y) / stride - 0.5`` (peak 1 at the keypoint, untruncated, so that the peak position
    is recoverable to sub-cell precision). Unlabelled keypoints (``v == 0``) and keypoints outside the
    map get an all-zero map and weight 0; the others weight 1.
    """
    if keypoints.ndim != 3 or keypoints.shape[2] != 3:
        raise ValueError(f"keypoints must be [N, K, 3] (x, y, v), got {tuple(keypoints.shape)}")
    if sigma <= 0 or stride <= 0:
        raise ValueError(f"sigma and stride must be positive, got sigma={sigma}, stride={stride}")
    h, w = (int(s) for s in size)
    kp = keypoints.float()
    u = kp[..., 0] / stride - 0.5
    v = kp[..., 1] / stride - 0.5
    inside = (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    weight = ((kp[..., 2] > 0) & inside).float()
    j = torch.arange(w, dtype=torch.float32, device=kp.device)
    i = torch.arange(h, dtype=torch.float32, device=kp.device)
    gx = torch.exp(-((j - u[..., None]) ** 2) / (2 * sigma**2))  # [N, K, w]
    gy = torch.exp(-((i - v[..., None]) ** 2) / (2 * sigma**2))  # [N, K, h]
    maps = gy[..., :, None] * gx[..., None, :] * weight[..., None, None]
    return maps, weight


def decode_heatmaps(maps: Tensor, stride: float = 1.0, refine: str = "dark",
                    eps: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Keypoints ``[N, K, 3]`` ``(x, y, 1)`` in image px and scores ``[N, K]`` (peak values) from ``maps [N, K, h, w]``.

    The peak cell ``(i, j)`` is refined to sub-cell precision, then mapped to the image with
    ``x = (j + dx + 0.5) * stride`` (inverse of :func:`gaussian_heatmaps`):

    * ``"dark"`` (Zhang et al. 2020, DARK): a Newton step on ``log(map)``,
      ``delta = -H^-1 grad`` with central differences -- exact for a Gaussian peak, since its log is
      quadratic. Falls back to no shift where a neighbour is missing (map border), the Hessian is not
      negative definite, or the step would leave the cell's neighbourhood (``|delta| > 1``).
    * ``"quarter"`` (SimpleBaseline / HRNet): shift by ``0.25`` cell towards the higher neighbour.
    * ``"none"``: the cell centre.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be [N, K, h, w], got {tuple(maps.shape)}")
    if refine not in ("dark", "quarter", "none"):
        raise ValueError(f"refine must be 'dark', 'quarter' or 'none', got {refine!r}")
    N, K, h, w = maps.shape
    m = maps.float()
    flat = m.flatten(2)
    if h * w == 0:
        raise ValueError(f"maps must have a non-empty spatial size, got {(h, w)}")
    scores, pos = flat.max(dim=2)
    px = (pos % w).float()
    py = torch.div(pos, w, rounding_mode="floor").float()
    dx = torch.zeros_like(px)
    dy = torch.zeros_like(py)
    if refine != "none":
        # Values at the 3 x 3 neighbourhood of the peak, with border positions clamped (and flagged).
        ox = torch.tensor([-1, 0, 1], device=maps.device)
        xs = pos[..., None] % w + ox  # [N, K, 3]
        ys = torch.div(pos, w, rounding_mode="floor")[..., None] + ox
        interior_x = (xs[..., 0] >= 0) & (xs[..., 2] < w)
        interior_y = (ys[..., 0] >= 0) & (ys[..., 2] < h)
        xs = xs.clamp(0, w - 1)
        ys = ys.clamp(0, h - 1)
        idx = (ys[..., :, None] * w + xs[..., None, :]).flatten(2)  # [N, K, 9], row-major (dy, dx)
        nb = torch.gather(flat, 2, idx).reshape(N, K, 3, 3)
        if refine == "quarter":
            dx = torch.where(interior_x, 0.25 * torch.sign(nb[..., 1, 2] - nb[..., 1, 0]), dx)
            dy = torch.where(interior_y, 0.25 * torch.sign(nb[..., 2, 1] - nb[..., 0, 1]), dy)
        else:
            lg = torch.log(nb.clamp(min=eps))
            gx = 0.5 * (lg[..., 1, 2] - lg[..., 1, 0])
            gy = 0.5 * (lg[..., 2, 1] - lg[..., 0, 1])
            hxx = lg[..., 1, 2] - 2 * lg[..., 1, 1] + lg[..., 1, 0]
            hyy = lg[..., 2, 1] - 2 * lg[..., 1, 1] + lg[..., 0, 1]
            hxy = 0.25 * (lg[..., 2, 2] - lg[..., 2, 0] - lg[..., 0, 2] + lg[..., 0, 0])
            det = hxx * hyy - hxy**2
            # negative definite Hessian (a maximum): hxx < 0 and det > 0
            ok = interior_x & interior_y & (hxx < 0) & (det > 0)
            safe_det = torch.where(ok, det, torch.ones_like(det))
            sx = -(hyy * gx - hxy * gy) / safe_det
            sy = -(hxx * gy - hxy * gx) / safe_det
            ok = ok & (sx.abs() <= 1) & (sy.abs() <= 1)
            dx = torch.where(ok, sx, dx)
            dy = torch.where(ok, sy, dy)
    x = (px + dx + 0.5) * stride
    y = (py + dy + 0.5) * stride
    keypoints = torch.stack([x, y, torch.ones_like(x)], dim=2)
    return keypoints, scores
