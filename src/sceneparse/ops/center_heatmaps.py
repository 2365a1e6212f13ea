"""Objects as points (CenterNet, Zhou et al., 2019): box centres as class heatmap peaks.

Encoding (sec. 3 of the paper): the ground truth of an image ``H x W`` lives on the output map
``H/R x W/R`` (``R`` = output stride, 4). A box ``(x1, y1, x2, y2)`` has the centre
``p = ((x1 + x2) / 2, (y1 + y2) / 2) / R`` and the integer cell ``p~ = floor(p)``; the heatmap of its
class gets a Gaussian ``exp(-((x - p~x)^2 + (y - p~y)^2) / (2 sigma^2))`` around ``p~`` (element-wise
maximum where Gaussians of one class overlap), with ``sigma = (2 r + 1) / 6`` and the radius ``r``
from the box size (:func:`gaussian_radius`: CornerNet's rule, the largest radius at which a box
whose corners move by ``r`` still has IoU >= ``min_overlap`` = 0.7 with the object). At ``p~`` the
network also regresses the size ``(w, h) / R`` and the offset ``p - p~`` lost by the rounding.

Decoding: peaks are the cells equal to the maximum of their 3x3 neighbourhood (a max-pool replaces
NMS), the ``k`` = 100 highest over all classes are kept, and each gives the box
``((x + ox) R - w R / 2, (y + oy) R - h R / 2, ...)``. Decoding exact targets returns the boxes.

Frames: heatmap cell ``(i, j)`` holds the centres in ``[j, j + 1) x [i, i + 1)`` (output-map units).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_radius", "CenterTargets", "encode_centers", "splat_gaussians", "heatmap_peaks",
           "decode_centers", "penalty_reduced_focal_loss"]


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7) -> Tensor:
    """CornerNet / CenterNet's Gaussian radius for boxes of ``height x width`` (any shape, output-map
    units): the smallest of the roots of three quadratics, one per way two corners can move by ``r``
    (both inside, both outside, one of each) keeping IoU >= ``min_overlap``. Written as the reference
    implementation solves them (``(b + sqrt(b^2 - 4 a c)) / 2``), so radii equal its values."""
    h, w = height.double(), width.double()
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3).to(torch.float32)


class CenterTargets:
    """Training targets of one image on an ``h x w`` output map (:func:`encode_centers`).

    Attributes:
        heatmap: ``[C, h, w]`` float32, Gaussian splats with peak 1 at each object's centre cell.
        index: ``[M]`` int64 flat index ``i * w + j`` of each object's centre cell.
        size: ``[M, 2]`` ``(w, h)`` of each box in output-map units.
        offset: ``[M, 2]`` ``(ox, oy)`` in ``[0, 1)``: centre minus its cell.
        radius: ``[M]`` int64 Gaussian radius per object.
    """

    def __init__(self, heatmap: Tensor, index: Tensor, size: Tensor, offset: Tensor, radius: Tensor):
        self.heatmap, self.index, self.size, self.offset, self.radius = heatmap, index, size, offset, radius


def encode_centers(boxes: Tensor, labels: Tensor, num_classes: int, out_size: tuple[int, int], stride: float,
                   min_overlap: float = 0.7) -> CenterTargets:
    """CenterNet targets of one image: ``boxes [M, 4]`` XYXY in input pixels, ``labels [M]`` in
    ``0..C-1``, output map ``out_size = (h, w)`` at ``stride`` input pixels per cell.

    Centres outside the map are dropped. Each Gaussian is ``exp(-(dx^2 + dy^2) / (2 sigma^2))``,
    ``sigma = (2 r + 1) / 6``, truncated to the ``(2 r + 1)^2`` window around the centre cell (values
    below ``eps * max`` set to 0, as the reference), ``r = max(0, floor(gaussian_radius))``.
    """
    h, w = int(out_size[0]), int(out_size[1])
    dev = boxes.device
    b = boxes.float() / stride
    centre = (b[:, :2] + b[:, 2:]) / 2
    cell = centre.floor()
    inside = (cell[:, 0] >= 0) & (cell[:, 0] < w) & (cell[:, 1] >= 0) & (cell[:, 1] < h)
    b, centre, cell, labels = b[inside], centre[inside], cell[inside], labels[inside]
    size = b[:, 2:] - b[:, :2]
    radius = gaussian_radius(size[:, 1], size[:, 0], min_overlap).floor().clamp(min=0).to(torch.int64)
    heatmap = splat_gaussians(cell, radius, labels, num_classes, (h, w))
    index = (cell[:, 1] * w + cell[:, 0]).to(torch.int64)
    return CenterTargets(heatmap, index, size, centre - cell, radius)


def splat_gaussians(cells: Tensor, radius: Tensor, labels: Tensor, num_classes: int, out_size: tuple[int, int]
                    ) -> Tensor:
    """Class heatmaps ``[C, h, w]`` float32 with a Gaussian of peak 1 at each integer cell ``cells [M, 2]``
    ``(x, y)`` (inside the map) in the map of ``labels [M]``: ``exp(-(dx^2 + dy^2) / (2 sigma^2))``,
    ``sigma = (2 r + 1) / 6`` for ``radius [M]`` (int64) ``r``, truncated to the ``(2 r + 1)^2`` window
    (values below float32 ``eps`` set to 0, as the reference), the element-wise maximum where
    Gaussians of one class overlap. CenterNet splats box centres, CornerNet box corners."""
    h, w = int(out_size[0]), int(out_size[1])
    dev = cells.device
    heatmap = torch.zeros(num_classes, h, w, dtype=torch.float32, device=dev)
    if len(cells):
        cells = cells.float()
        sigma = (2 * radius + 1).float() / 6
        xs = torch.arange(w, dtype=torch.float32, device=dev)
        ys = torch.arange(h, dtype=torch.float32, device=dev)
        dx = xs[None, :] - cells[:, :1]  # [M, w]
        dy = ys[None, :] - cells[:, 1:]  # [M, h]
        gx = torch.exp(-dx**2 / (2 * sigma[:, None] ** 2)) * (dx.abs() <= radius[:, None])
        gy = torch.exp(-dy**2 / (2 * sigma[:, None] ** 2)) * (dy.abs() <= radius[:, None])
        g = gy[:, :, None] * gx[:, None, :]  # [M, h, w]
        g = torch.where(g < torch.finfo(torch.float32).eps, torch.zeros_like(g), g)
        flat = heatmap.view(num_classes, -1)
        idx = labels.to(torch.int64)[:, None].expand(-1, h * w)
        flat.scatter_reduce_(0, idx, g.view(len(cells), -1), reduce="amax")
    return heatmap


def heatmap_peaks(heat: Tensor, k: int = 100, kernel: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``k`` best local maxima of ``heat [B, C, h, w]`` (probabilities) over all classes: a cell is
    a peak if it equals the max of its ``kernel x kernel`` neighbourhood (CenterNet's NMS-free
    decoding). Returns ``scores, classes, ys, xs``, each ``[B, k']`` (``k' = min(k, C h w)``)."""
    B, C, h, w = heat.shape
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    peaks = heat * (hmax == heat).to(heat.dtype)
    scores, idx = peaks.flatten(1).topk(min(k, C * h * w), dim=1)
    classes = torch.div(idx, h * w, rounding_mode="floor")
    pos = idx % (h * w)
    return scores, classes, torch.div(pos, w, rounding_mode="floor"), pos % w


def decode_centers(heat: Tensor, size: Tensor, offset: Tensor, stride: float, k: int = 100
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes from CenterNet's outputs: ``heat [B, C, h, w]`` (probabilities), ``size [B, 2, h, w]``
    ``(w, h)`` and ``offset [B, 2, h, w]`` in output-map units. Returns XYXY boxes ``[B, k, 4]`` in
    input pixels, scores and labels ``[B, k]``, best first. A negative regressed size (an untrained
    or confused head) counts as 0: a box is never inverted."""
    scores, classes, ys, xs = heatmap_peaks(heat, k)
    B, _, h, w = heat.shape
    pos = (ys * w + xs)[:, None, :].expand(-1, 2, -1)
    wh = size.flatten(2).gather(2, pos).transpose(1, 2).clamp(min=0)  # [B, k, 2]
    off = offset.flatten(2).gather(2, pos).transpose(1, 2)
    cx = xs.to(wh.dtype) + off[..., 0]
    cy = ys.to(wh.dtype) + off[..., 1]
    boxes = torch.stack([cx - wh[..., 0] / 2, cy - wh[..., 1] / 2, cx + wh[..., 0] / 2, cy + wh[..., 1] / 2], -1)
    return boxes * stride, scores, classes


def penalty_reduced_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0,
                               eps: float = 1e-4) -> Tensor:
    """CenterNet's pixel-wise logistic regression with focal loss (eq. 1), summed and divided by the
    number of objects (cells where ``target == 1``; an image batch without objects divides by 1):

    ``-1/N sum (1 - p)^alpha log p`` where ``Y = 1``, ``-1/N sum (1 - Y)^beta p^alpha log(1 - p)``
    elsewhere; ``p = sigmoid(logits)`` clamped to ``[eps, 1 - eps]`` (the reference's clamp)."""
    p = logits.float().sigmoid().clamp(eps, 1 - eps)
    pos = target.eq(1).float()
    neg = 1 - pos
    pos_loss = (torch.log(p) * (1 - p) ** alpha * pos).sum()
    neg_loss = (torch.log(1 - p) * p**alpha * (1 - target) ** beta * neg).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1)

