"""Non-maximum suppression: greedy (hard), class-aware, soft (Bodla et al. 2017) and matrix (SOLOv2).

* :func:`nms` -- torchvision's compiled greedy kernel: keep the highest-scoring box, drop every box
  with IoU ``> iou_threshold`` to it, repeat.
* :func:`batched_nms` -- the same, independently per class (or image): one kernel call with the
  classes moved apart so that they can never overlap, or one call per class for large inputs;
  same results as ``torchvision.ops.batched_nms``.
* :func:`soft_nms` -- instead of dropping, decay the scores of overlapping boxes, linearly
  ``s (1 - IoU)`` above the threshold or with a Gaussian ``s exp(-IoU^2 / sigma)``. Sequential over the
  picks (each pick depends on the decays of the previous ones); every update is one vectorised step.
* :func:`matrix_nms` -- SOLOv2's fully parallel approximation of soft-NMS: every box's decay is
  computed at once from the IoU matrix, compensated by how suppressed the suppressing box is itself.
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from .boxes import box_iou

__all__ = ["nms", "batched_nms", "soft_nms", "matrix_nms"]


def _check(boxes: Tensor, scores: Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (XYXY), got {tuple(boxes.shape)}")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must be [N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS. Returns the kept indices (int64 ``[K]``) in decreasing order of score.

    A box is suppressed by a higher-scoring kept box when their IoU is strictly greater than
    ``iou_threshold``.
    """
    _check(boxes, scores)
    return torchvision.ops.nms(boxes, scores.to(boxes.dtype), float(iou_threshold))


#: Above this many boxes one NMS per group is faster than one NMS over all groups. The greedy CPU
#: kernel compares every kept box with every later one: O(N^2) when groups never suppress each other,
#: against O(sum N_g^2) plus a fixed cost per call for one call per group. With 80 classes on one
#: CPU thread the two cost the same near 2000 boxes (5000 boxes: ~40 ms single call, ~11 ms per
#: group). The CUDA kernel computes all pairs in parallel, so there the single call wins up to far
#: larger N (torchvision switches at 25000 boxes).
_SINGLE_CALL_MAX_BOXES = {"cpu": 2000}
_SINGLE_CALL_MAX_BOXES_OTHER = 25000


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same ``idxs`` (class or image index).

    Returns the kept indices (int64 ``[K]``) in decreasing order of score; the kept set equals
    running :func:`nms` on each group separately (boxes with exactly equal scores may come out in
    either order, as in torchvision).

    Small inputs run one greedy kernel on all boxes, each group translated by ``rank * (extent + 1)``
    along the diagonal (``rank`` = the group's position among the groups present, ``extent`` = span of
    all coordinates) so that groups never overlap. The translation is done in float64: in float32 the
    translated coordinates lose up to ~1e-2 px at COCO scale, which can flip decisions at the
    threshold. Large inputs run one kernel per group (a loop over groups, not boxes).
    """
    _check(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must be [N] with N = {scores.shape[0]}, got {tuple(idxs.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    groups, rank = torch.unique(idxs, return_inverse=True)
    limit = _SINGLE_CALL_MAX_BOXES.get(boxes.device.type, _SINGLE_CALL_MAX_BOXES_OTHER)
    if n <= limit or len(groups) == 1:
        b = boxes.double()
        lo = b.min()
        extent = b.max() - lo
        shifted = (b - lo) + (rank.double() * (extent + 1))[:, None]
        return torchvision.ops.nms(shifted, scores.double(), float(iou_threshold))
    keep_mask = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    order = torch.argsort(rank, stable=True)
    counts = torch.bincount(rank, minlength=len(groups)).tolist()
    for members in torch.split(order, counts):  # one kernel per group
        keep_mask[members[torchvision.ops.nms(boxes[members], scores[members].to(boxes.dtype),
                                              float(iou_threshold))]] = True
    kept = torch.where(keep_mask)[0]
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


#: soft-NMS precomputes the N x N decays up to this N (16 MB in float32), else computes a row per pick.
_SOFT_NMS_MATRIX_MAX = 2048


def soft_nms(boxes: Tensor, scores: Tensor, *, method: str = "linear", iou_threshold: float = 0.3,
             sigma: float = 0.5, score_threshold: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., ICCV 2017). Returns ``(keep int64 [K], new_scores [K])`` in pick order.

    Repeatedly pick the box with the highest *current* score, then multiply the current score of
    every remaining box ``j`` by ``f(IoU(pick, j))``:

    * ``"linear"``: ``1 - IoU`` if ``IoU > iou_threshold`` (``N_t``) else 1;
    * ``"gaussian"``: ``exp(-IoU^2 / sigma)`` (``iou_threshold`` unused).

    A box whose current score falls below ``score_threshold`` is discarded (also initially), so
    ``new_scores`` are the decayed scores at pick time, non-increasing and ``>= score_threshold``.
    Ties are broken towards the lower index. Cost: ``K`` sequential steps of ``O(N)`` vectorised work.
    """
    _check(boxes, scores)
    if method not in ("linear", "gaussian"):
        raise ValueError(f"method must be 'linear' or 'gaussian', got {method!r}")
    if method == "gaussian" and sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    dtype = torch.promote_types(scores.dtype, torch.float32)
    current = scores.detach().clone().to(dtype)
    active = current >= score_threshold
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=current.device)

    def decay_of(iou: Tensor) -> Tensor:
        iou = iou.to(dtype)
        if method == "linear":
            return torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
        return torch.exp(-(iou * iou) / sigma)

    # The whole decay matrix at once when it is small (one vectorised pass); else one row per pick.
    n = boxes.shape[0]
    decay_matrix = decay_of(box_iou(boxes, boxes)) if n <= _SOFT_NMS_MATRIX_MAX else None
    keep, kept_scores = [], []
    for _ in range(int(active.sum())):  # at most one pick per surviving box
        i = int(torch.where(active, current, neg_inf).argmax())
        if not bool(active[i]):
            break
        keep.append(i)
        kept_scores.append(current[i].clone())  # current is decayed in place below
        active[i] = False
        row = decay_matrix[i] if decay_matrix is not None else decay_of(box_iou(boxes[i : i + 1], boxes)[0])
        current.mul_(row)
        active &= current >= score_threshold
    keep_t = torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)
    new_scores = torch.stack(kept_scores).to(scores.dtype) if kept_scores else scores.new_zeros((0,))
    return keep_t, new_scores


def _mask_iou(masks: Tensor) -> Tensor:
    """Pairwise IoU ``[N, N]`` of binary masks ``[N, H, W]`` via one matrix product."""
    m = masks.flatten(1).float()
    inter = m @ m.T
    area = m.sum(dim=1)
    union = area[:, None] + area[None, :] - inter
    return inter / union.clamp(min=1)


def matrix_nms(boxes_or_masks: Tensor, scores: Tensor, labels: Tensor, *, kernel: str = "gaussian",
               sigma: float = 2.0, eps: float = 1e-6) -> Tensor:
    """Matrix NMS (SOLOv2, Wang et al. 2020): decayed scores ``[N]``, in the input order.

    ``boxes_or_masks``: XYXY boxes ``[N, 4]`` or binary masks ``[N, H, W]``; ``labels [N]``: only
    same-label pairs suppress each other. With boxes sorted by decreasing score, ``IoU_ij`` (``i`` above
    ``j``) and ``comp_i = max_k IoU_ki`` (how much box ``i`` is itself overlapped by a higher box), the
    decay of ``j`` is ``min_i f(IoU_ij) / f(comp_i)`` with ``f(x) = exp(-sigma x^2)`` (``"gaussian"``) or
    ``f(x) = 1 - x`` (``"linear"``). The top box of every class keeps its score. The caller thresholds
    and ranks the result. ``O(N^2)`` memory, no sequential step.
    """
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"kernel must be 'gaussian' or 'linear', got {kernel!r}")
    n = scores.shape[0]
    if scores.ndim != 1 or labels.shape != scores.shape or boxes_or_masks.shape[0] != n:
        raise ValueError(f"scores and labels must be [N] and boxes_or_masks [N, ...] with the same N, got "
                         f"{tuple(scores.shape)}, {tuple(labels.shape)} and {tuple(boxes_or_masks.shape)}")
    if n == 0:
        return scores.clone()
    order = torch.argsort(scores, descending=True, stable=True)
    items = boxes_or_masks[order]
    if items.ndim == 2 and items.shape[1] == 4:
        iou = box_iou(items.float() if not items.is_floating_point() else items, items)
    elif items.ndim == 3:
        iou = _mask_iou(items)
    else:
        raise ValueError(f"boxes_or_masks must be [N, 4] boxes or [N, H, W] masks, got {tuple(boxes_or_masks.shape)}")
    sorted_labels = labels[order]
    same = (sorted_labels[:, None] == sorted_labels[None, :]).triu(diagonal=1)
    iou = (iou * same).to(torch.promote_types(scores.dtype, torch.float32))
    comp = iou.max(dim=0).values[:, None]  # [N, 1]: comp_i, broadcast along row i
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * (iou**2 - comp**2))
    else:
        ratio = (1 - iou) / (1 - comp).clamp(min=eps)
    decay = ratio.min(dim=0).values
    out = torch.empty_like(scores)
    out[order] = scores[order] * decay.to(scores.dtype)
    return out
