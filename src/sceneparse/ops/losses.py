"""Detection and segmentation losses as pure functions.

* :func:`smooth_l1_loss` -- Fast R-CNN's box regression loss (quadratic below ``beta``, linear above).
* :func:`sigmoid_focal_loss` -- RetinaNet's ``-alpha_t (1 - p_t)^gamma log(p_t)`` (Lin et al. 2017).
* :func:`giou_loss`, :func:`diou_loss` -- ``1 - GIoU`` / ``1 - DIoU`` of matched box pairs.
* :func:`dice_loss` -- ``1 - (2 |P.T| + 1) / (|P| + |T| + 1)`` on sigmoid mask probabilities (V-Net,
  used by DETR / Mask2Former).

``reduction`` is ``"none"`` (elementwise / per-instance), ``"mean"`` or ``"sum"``; a mean over nothing is 0
(a graph-connected 0, so ``backward`` still works when an image has no positives).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import distance_box_iou_paired, generalized_box_iou_paired

__all__ = ["smooth_l1_loss", "sigmoid_focal_loss", "giou_loss", "diou_loss", "dice_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else loss.sum() * 0.0
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: input and target must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def smooth_l1_loss(input: Tensor, target: Tensor, beta: float = 1.0 / 9, reduction: str = "sum") -> Tensor:
    """Huber-like loss: ``0.5 d^2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 beta``, ``d = input - target``.

    ``beta = 1/9`` and ``reduction = "sum"`` are the (torchvision) Faster R-CNN settings; the caller
    divides by the number of sampled anchors / RoIs. ``beta = 0`` is the plain L1 loss.
    """
    _same_shape(input, target, "smooth_l1_loss")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    # at least float32: under mixed precision the regression deltas arrive in bfloat16 / float16
    dtype = torch.promote_types(torch.promote_types(input.dtype, target.dtype), torch.float32)
    d = torch.abs(input.to(dtype) - target.to(dtype))
    if beta == 0:
        loss = d
    else:
        loss = torch.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta)
    return _reduce(loss, reduction)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    """Focal loss on independent sigmoid outputs; ``targets`` in ``{0, 1}`` (or soft), same shape.

    ``FL = alpha_t (1 - p_t)^gamma BCE(p, t)`` with ``p_t = p t + (1 - p)(1 - t)`` and
    ``alpha_t = alpha t + (1 - alpha)(1 - t)``; ``alpha < 0`` disables the class weighting. The BCE is
    computed from the logits (log-sum-exp stable). Matches ``torchvision.ops.sigmoid_focal_loss``.
    """
    _same_shape(logits, targets, "sigmoid_focal_loss")
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def giou_loss(a: Tensor, b: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """``1 - GIoU`` of matched XYXY pairs ``a [..., 4]``, ``b [..., 4]`` -> ``[...]`` (before reduction).

    In ``[0, 2]``; gives a gradient even when the boxes do not overlap. Equals
    ``torchvision.ops.generalized_box_iou_loss``.
    """
    return _reduce(1 - generalized_box_iou_paired(a, b, eps=eps), reduction)


def diou_loss(a: Tensor, b: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    """``1 - DIoU`` of matched XYXY pairs; equals ``torchvision.ops.distance_box_iou_loss``."""
    return _reduce(1 - distance_box_iou_paired(a, b, eps=eps), reduction)


def dice_loss(logits: Tensor, targets: Tensor, smooth: float = 1.0, reduction: str = "none") -> Tensor:
    """Soft Dice loss per instance: ``logits``, ``targets`` ``[N, ...]`` (masks) -> ``[N]`` before reduction.

    ``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` over all but the first dimension,
    ``p = sigmoid(logits)``. ``smooth`` (1, as DETR) keeps empty-vs-empty at loss 0 and the gradient finite.
    """
    _same_shape(logits, targets, "dice_loss")
    if logits.ndim < 1:
        raise ValueError("dice_loss needs at least one (instance) dimension")
    p = torch.sigmoid(logits).flatten(1) if logits.ndim > 1 else torch.sigmoid(logits)[:, None]
    t = targets.to(p.dtype).reshape(p.shape)
    num = 2 * (p * t).sum(dim=1) + smooth
    den = p.sum(dim=1) + t.sum(dim=1) + smooth
    return _reduce(1 - num / den, reduction)
