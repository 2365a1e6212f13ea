"""Box overlap measures on XYXY boxes: IoU, generalized IoU (GIoU) and distance IoU (DIoU).

Two families, same formulas:

* **pairwise** ``box_iou(a [..., N, 4], b [..., M, 4]) -> [..., N, M]``: every box of ``a`` against
  every box of ``b`` (matching anchors to ground truth, NMS). Numerically identical to
  ``torchvision.ops.box_iou`` / ``generalized_box_iou`` / ``distance_box_iou``.
* **paired** ``box_iou_paired(a [..., 4], b [..., 4]) -> [...]``: box ``i`` of ``a`` against box ``i``
  of ``b`` only (regression losses on matched pairs). These add ``eps`` to every denominator, exactly
  as ``torchvision.ops.generalized_box_iou_loss`` / ``distance_box_iou_loss`` do, so that the losses
  stay finite for degenerate boxes.

Boxes are expected valid (``x1 <= x2``, ``y1 <= y2``); the area is ``w * h`` (COCO's rule, no ``+1``).
Dtypes: float32 / float64 are computed as they are. Half-precision inputs are computed and returned in
float32 (products of pixel sizes overflow fp16). Integer inputs (any width, bool included) are exact:
widths, areas, intersections and unions in int64 (no int8/int16/int32 overflow, nothing rounded to
float32), so :func:`box_area` returns int64, and every ratio (IoU, GIoU, DIoU) is taken in float64 and
returned as float64 -- one rounding of the exact quantities while they stay below ``2**53``.
(torchvision keeps int32 / int64 and returns its IoUs in float32: exact areas, rounded ratios.)

Formulas (``I`` intersection, ``U`` union, ``C`` area of the smallest enclosing box, ``rho`` the
distance between centres, ``c`` the diagonal of the enclosing box):
``IoU = I / U``, ``GIoU = IoU - (C - U) / C`` (Rezatofighi et al. 2019),
``DIoU = IoU - rho^2 / c^2`` (Zheng et al. 2020).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "box_iou_paired",
    "generalized_box_iou_paired",
    "distance_box_iou_paired",
]


def _check(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4] (XYXY), got {tuple(boxes.shape)}")


def _upcast(t: Tensor) -> Tensor:
    """Float16/bfloat16 -> float32 (areas of pixel boxes overflow fp16); integers -> int64 (exact
    products); float32 / float64 unchanged."""
    if t.is_floating_point():
        return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    return t.long()


def _real(t: Tensor) -> Tensor:
    """An exact integer quantity (int64) as float64 before a division or an ``eps`` (int64 / int64
    and int64 + float would give float32); floating tensors unchanged."""
    return t if t.is_floating_point() else t.double()


def box_area(boxes: Tensor) -> Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of XYXY boxes ``[..., 4] -> [...]`` (no ``+1``, no clamping).

    Integer boxes give the exact int64 area; half types give float32."""
    _check(boxes, "boxes")
    boxes = _upcast(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _pairwise_inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union ``[..., N, M]`` of every pair."""
    area_a = box_area(a)
    area_b = box_area(b)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    return inter, union


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU ``[..., N, M]`` of XYXY boxes ``a [..., N, 4]`` and ``b [..., M, 4]``.

    ``I / U`` without epsilon (as torchvision): two empty boxes give NaN.
    """
    _check(a, "a")
    _check(b, "b")
    a, b = _upcast(a), _upcast(b)
    inter, union = _pairwise_inter_union(a, b)
    return _real(inter) / _real(union)


def _pairwise_iou_enclosing(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """IoU, union and the enclosing box's width and height of every pair, all ``[..., N, M]``, for
    boxes already checked and upcast."""
    inter, union = _pairwise_inter_union(a, b)
    lt = torch.minimum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.maximum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    return _real(inter) / _real(union), union, wh[..., 0], wh[..., 1]


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise GIoU ``[..., N, M]`` in ``[-1, 1]``: ``IoU - (C - U) / C``.

    Unlike IoU it keeps decreasing as disjoint boxes move apart, which is what makes it usable as a
    matching cost and a loss (DETR).
    """
    _check(a, "a")
    _check(b, "b")
    iou, union, ew, eh = _pairwise_iou_enclosing(_upcast(a), _upcast(b))
    enclosing = ew * eh
    return iou - _real(enclosing - union) / _real(enclosing)


def _centres(boxes: Tensor) -> tuple[Tensor, Tensor]:
    boxes = _real(boxes)  # integer boxes: half-integer centres, exact in float64
    return (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2


def distance_box_iou(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise DIoU ``[..., N, M]`` in ``[-1, 1]``: ``IoU - rho^2 / (c^2 + eps)``.

    ``rho`` is the distance between box centres and ``c`` the diagonal of the smallest enclosing box;
    ``eps`` enters the diagonal only (as torchvision's ``distance_box_iou``).
    """
    _check(a, "a")
    _check(b, "b")
    a, b = _upcast(a), _upcast(b)
    iou, _, ew, eh = _pairwise_iou_enclosing(a, b)
    diag2 = _real(ew**2 + eh**2) + eps
    ax, ay = _centres(a)
    bx, by = _centres(b)
    rho2 = (ax[..., :, None] - bx[..., None, :]) ** 2 + (ay[..., :, None] - by[..., None, :]) ** 2
    return iou - rho2 / diag2


# ----------------------------------------------------------------------------------------------
# paired (elementwise) variants, used by the regression losses
# ----------------------------------------------------------------------------------------------

def _check_paired(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    _check(a, "a")
    _check(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired box ops need a and b of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _upcast(a), _upcast(b)


def _paired_inter_union_enclosing(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Intersection, union, enclosing-box width and height, all ``[...]``."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    elt = torch.minimum(a[..., :2], b[..., :2])
    erb = torch.maximum(a[..., 2:], b[..., 2:])
    ewh = erb - elt
    return inter, union, ewh[..., 0], ewh[..., 1]


def box_iou_paired(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of matched pairs: ``a [..., 4]``, ``b [..., 4]`` -> ``[...]``, ``I / (U + eps)``."""
    a, b = _check_paired(a, b)
    inter, union, _, _ = _paired_inter_union_enclosing(a, b)
    return _real(inter) / (_real(union) + eps)


def generalized_box_iou_paired(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """GIoU of matched pairs ``[...]``: ``I / (U + eps) - (C - U) / (C + eps)``.

    ``1 - generalized_box_iou_paired`` equals ``torchvision.ops.generalized_box_iou_loss``.
    """
    a, b = _check_paired(a, b)
    inter, union, ew, eh = _paired_inter_union_enclosing(a, b)
    enclosing = ew * eh
    return _real(inter) / (_real(union) + eps) - _real(enclosing - union) / (_real(enclosing) + eps)


def distance_box_iou_paired(a: Tensor, b: Tensor, eps: float = 1e-7) -> Tensor:
    """DIoU of matched pairs ``[...]``: ``I / (U + eps) - rho^2 / (c^2 + eps)``.

    ``1 - distance_box_iou_paired`` equals ``torchvision.ops.distance_box_iou_loss``.
    """
    a, b = _check_paired(a, b)
    inter, union, ew, eh = _paired_inter_union_enclosing(a, b)
    ax, ay = _centres(a)
    bx, by = _centres(b)
    rho2 = (ax - bx) ** 2 + (ay - by) ** 2
    return _real(inter) / (_real(union) + eps) - rho2 / (_real(ew**2 + eh**2) + eps)
