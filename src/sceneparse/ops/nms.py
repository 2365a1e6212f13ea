"""Non-maximum suppression: greedy (hard), class-aware, soft (Bodla et al. 2017) and matrix (SOLOv2).

* :func:`nms` -- torchvision's compiled greedy kernel: keep the highest-scoring box, drop every box
  with IoU ``> iou_threshold`` to it, repeat.
* :func:`batched_nms` -- the same, independently per class (or image): one kernel call with the
  classes moved apart so that they can never overlap, or, for large inputs, calls per class (on CPU
  per set of boxes that can suppress each other); same results as ``torchvision.ops.batched_nms``.
* :func:`soft_nms` -- instead of dropping, decay the scores of overlapping boxes, linearly
  ``s (1 - IoU)`` above the threshold or with a Gaussian ``s exp(-IoU^2 / sigma)``. Sequential over the
  picks (each pick depends on the decays of the previous ones); every update is one vectorised step.
* :func:`matrix_nms` -- SOLOv2's fully parallel approximation of soft-NMS: every box's decay is
  computed at once from the IoU matrix, compensated by how suppressed the suppressing box is itself.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor

from .boxes import box_iou, box_iou_paired

__all__ = ["nms", "batched_nms", "soft_nms", "matrix_nms"]


def _check(boxes: Tensor, scores: Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (XYXY), got {tuple(boxes.shape)}")
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must be [N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}")


def _kernel_dtype(boxes: Tensor, scores: Tensor) -> torch.dtype:
    """The one floating type the greedy kernel gets boxes and scores in (it needs both the same, and
    has no integer, nor -- on the CPU -- half variants): each side's exact floating form (float32 /
    float64 as they are, float16 / bfloat16 -> float32, integers -> float64, exact below ``2**53``),
    then the wider of the two. Nothing is rounded on the way: a score cast to a narrower type could
    tie with its neighbour and a half-precision area overflows."""

    def exact(dtype: torch.dtype) -> torch.dtype:
        if dtype in (torch.float32, torch.float64):
            return dtype
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else torch.float64

    return torch.promote_types(exact(boxes.dtype), exact(scores.dtype))


def _as_kernel_inputs(boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    dtype = _kernel_dtype(boxes, scores)
    return boxes.to(dtype), scores.to(dtype)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS. Returns the kept indices (int64 ``[K]``) in decreasing order of score.

    A box is suppressed by a higher-scoring kept box when their IoU is strictly greater than
    ``iou_threshold``.

    Any real dtypes of boxes and scores, as :func:`batched_nms`: float32 or float64 boxes and scores
    of the same type run torchvision's kernel as they are (its keep indices); otherwise both are
    converted to the narrowest floating type that holds each exactly (:func:`_kernel_dtype`: half
    types -> float32, integers -> float64, then the wider of the two), so that e.g. float16 boxes keep
    what their float32 values keep and int64 boxes what their float64 values keep.
    """
    _check(boxes, scores)
    boxes, scores = _as_kernel_inputs(boxes, scores)
    return torchvision.ops.nms(boxes, scores, float(iou_threshold))


#: Up to this many boxes one kernel call runs over all groups (the coordinate trick below); above
#: it, one call per group -- torchvision's switch points (``boxes.numel() > 4000`` on CPU, ``> 100_000``
#: elsewhere), so that above them the kept set is exactly ``torchvision.ops.batched_nms``'s. The CPU
#: greedy kernel compares every kept box with every later box, ``O(N K)``: a single call over groups
#: that can never suppress each other pays for all those pairs, one call per group only for its own.
#: The CUDA kernel computes all pairs in parallel, so there the single call wins up to far larger N.
_SINGLE_CALL_MAX_BOXES = {"cpu": 1000}
_SINGLE_CALL_MAX_BOXES_OTHER = 25000
#: CPU, above the single-call limit: a group of at least this many boxes is split into the components
#: of its overlap graph (:func:`_overlap_components`) before the kernel runs. Building the graph costs
#: a few microseconds per box; the kernel costs ~3 ns per (kept box, later box) pair, so the split pays
#: once a group keeps a few thousand boxes (sparse boxes in large images), and a smaller group is
#: never expensive.
_GRAPH_MIN_GROUP = 4096
#: ... and the components are packed into kernel calls of about this many boxes: a call costs ~10 us
#: plus ``O(M K)`` for ``M`` boxes of which ``K`` are kept (measured with ``benchmarks/bench_ops.py``).
_CPU_BOXES_PER_CALL = 256
#: Margin of the overlap graph: its edges are float64 IoU > threshold - this. The kernel's IoU (in the
#: boxes' dtype, float32 or float64) is within ~1e-6 of the float64 one (one rounding per operation,
#: no cancellation: the union is at least the larger area), so every pair the kernel can suppress is
#: an edge.
_IOU_SLACK = 1e-5
#: The graph is built when it has at most this many candidate pairs per box; boxes piled up more
#: densely keep one kernel call per group.
_MAX_CANDIDATES_PER_BOX = 32


def _overlap_components(boxes: Tensor, group: Tensor, iou_threshold: float) -> Tensor | None:
    """For each box the smallest index of its component (int64 ``[N]``) in the graph joining two boxes
    of one group whose float64 IoU exceeds ``iou_threshold - _IOU_SLACK``; ``None`` when there would
    be more than ``_MAX_CANDIDATES_PER_BOX`` candidate pairs per box.

    Greedy NMS over a group is the union of greedy NMS over these components: a box is only ever
    suppressed by a box it shares an edge with. Candidate pairs come from grids, not from all ``N^2``
    pairs. ``IoU > s`` needs both 1-d IoUs ``> s`` (``I / U <= I_x / U_x``: the intersection is no
    taller than either box), so widths and heights within a factor ``1 / s`` (longer sides too: their
    levels, powers of ``base > 1 / s``, differ by at most one) and centres less than
    ``c = (1 - s) / (1 + s)`` times the larger box's longer side apart, which is less than one cell of
    the grid of that box's level (cells of ``c * base ** (level + 1)``). So each box looks in the
    3 x 3 cells around it in the grids of its own level and the next one up.
    Boxes must be finite; a box without area (IoU 0 or NaN with every box) is alone.
    """
    n = boxes.shape[0]
    dev = boxes.device
    s = iou_threshold - _IOU_SLACK
    b = boxes.double()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    real = torch.where((w > 0) & (h > 0))[0]
    label = torch.arange(n, device=dev)
    if len(real) < 2:
        return label
    b, grp, m = b[real], group[real], torch.maximum(w, h)[real]
    base = 1.0 / (s * (1 - 1e-6))  # the margin keeps rounding from putting similar sides two levels apart
    level = torch.floor(torch.log(m) / math.log(base)).long()
    level += (torch.pow(base, (level + 1).double()) <= m).long() - (torch.pow(base, level.double()) > m).long()
    cell_c = (1 - s) / (1 + s) * (1 + 1e-9)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2

    def grid(lvl: Tensor) -> Tensor:
        """``[3, M]``: level, row and column of every box's centre in the grid of level ``lvl``."""
        size = torch.pow(base, (lvl + 1).double()) * cell_c
        return torch.stack([lvl, torch.floor(cy / size).long(), torch.floor(cx / size).long()])

    cells = torch.stack([grid(level), grid(level + 1)])  # [own / next level, 3, M]
    lo = cells.amin(dim=(0, 2)) - 1
    span = (cells.amax(dim=(0, 2)) + 2 - lo).tolist()
    if (int(group.max()) + 1) * span[0] * span[1] * span[2] >= 2**62:  # keys would overflow int64
        return None
    key = ((grp * span[0] + (cells[:, 0] - lo[0])) * span[1] + (cells[:, 1] - lo[1])) * span[2] \
        + (cells[:, 2] - lo[2])  # [2, M], row-major: the 3 cells of a row are one key range
    table, order = torch.sort(key[0])
    rows = (key[:, None, :] + torch.tensor([-1, 0, 1], device=dev)[:, None] * span[2]).reshape(-1)  # [6 M]
    first = torch.searchsorted(table, rows - 1)
    count = torch.searchsorted(table, rows + 1, right=True) - first
    total = int(count.sum())
    if total > _MAX_CANDIDATES_PER_BOX * len(real):
        return None
    which = torch.repeat_interleave(torch.arange(len(rows), device=dev), count)
    j = order[first[which] + torch.arange(total, device=dev) - (torch.cumsum(count, 0) - count)[which]]
    i = which % len(real)
    same_level = which < 3 * len(real)  # a pair of one level is found from both sides: keep i < j
    pick = torch.where(same_level, i < j, True)
    i, j = i[pick], j[pick]
    edge = box_iou_paired(b[i], b[j], eps=0.0) > s
    i, j = real[i[edge]], real[j[edge]]
    while True:  # smallest index reachable: min-propagation along the edges + pointer jumping
        low = torch.minimum(label[i], label[j])
        new = label.scatter_reduce(0, i, low, "amin").scatter_reduce(0, j, low, "amin")
        new = new[new]
        if torch.equal(new, label):
            return label
        label = new


def _pack_parts(part: Tensor, group: Tensor, per_call: int) -> Tensor:
    """Call id per box from part ids (int64 ``[N]``, ``0..P-1``, parts of group ``g`` numbered before
    those of ``g + 1``): the parts of one group are packed, in order, into calls of about ``per_call``
    boxes (a part is never split; a call never mixes groups)."""
    size = torch.bincount(part)
    part_group = torch.zeros_like(size).scatter_(0, part, group)  # all boxes of a part share a group
    start = torch.cumsum(size, 0) - size  # first position of each part, parts laid out in id order
    group_size = torch.bincount(group)
    local = (start - (torch.cumsum(group_size, 0) - group_size)[part_group]) // per_call  # call in group
    new_call = torch.ones_like(part_group, dtype=torch.bool)
    new_call[1:] = (part_group[1:] != part_group[:-1]) | (local[1:] != local[:-1])
    return (torch.cumsum(new_call, 0) - 1)[part]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same ``idxs`` (class or image index).

    Returns the kept indices (int64 ``[K]``) in decreasing order of score; the kept set equals
    running :func:`nms` on each group separately (boxes with exactly equal scores may come out in
    either order, as in torchvision). Accepts the dtypes :func:`nms` accepts.

    Small inputs run one greedy kernel on all boxes, each group translated by ``rank * (extent + 1)``
    along the diagonal (``rank`` = the group's position among the groups present, ``extent`` = span of
    all coordinates) so that groups never overlap. The translation is done in float64: in float32 the
    translated coordinates lose up to ~1e-2 px at COCO scale, which can flip decisions at the
    threshold. Large inputs run the kernel per group, on the boxes as given (torchvision's
    ``batched_nms`` does the same above the same size, so the kept sets are identical); on CPU a group
    of many boxes is also split into the components of its overlap graph (:func:`_overlap_components`),
    packed into calls of about ``_CPU_BOXES_PER_CALL`` boxes: the kernel's ``O(N K)`` cost then only counts pairs
    within a call (``benchmarks/bench_ops.py``). Two overlapping boxes with exactly equal scores are
    ordered by the kernel's sort, so which one survives may differ from a call over the whole group.
    """
    _check(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must be [N] with N = {scores.shape[0]}, got {tuple(idxs.shape)}")
    if torch.jit.is_tracing():
        return _batched_nms_traced(boxes, scores, idxs, iou_threshold)
    n = boxes.shape[0]
    if n == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    _, rank = torch.unique(idxs, return_inverse=True)
    limit = _SINGLE_CALL_MAX_BOXES.get(boxes.device.type, _SINGLE_CALL_MAX_BOXES_OTHER)
    if n <= limit:
        b = boxes.double()
        lo = b.min()
        extent = b.max() - lo
        shifted = (b - lo) + (rank.double() * (extent + 1))[:, None]
        return torchvision.ops.nms(shifted, scores.double(), float(iou_threshold))
    boxes_k, scores_k = _as_kernel_inputs(boxes, scores)  # float32 / float64, as in nms
    call = rank
    size = torch.bincount(rank)
    if boxes.device.type == "cpu" and bool((size >= _GRAPH_MIN_GROUP).any()) and iou_threshold > _IOU_SLACK \
            and bool(torch.isfinite(boxes_k).all()):
        big = torch.where(size[rank] >= _GRAPH_MIN_GROUP)[0]
        label = _overlap_components(boxes_k[big], rank[big], float(iou_threshold))
        if label is not None:
            part = torch.zeros(n, dtype=torch.long, device=boxes.device)
            part[big] = big[label] + 1  # component = its smallest box; 0 for the boxes of small groups
            call = _pack_parts(torch.unique(rank * (n + 1) + part, return_inverse=True)[1], rank,
                               _CPU_BOXES_PER_CALL)
    keep_mask = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    order = torch.argsort(call, stable=True)  # by call, then by index (the kernel's tie order)
    counts = torch.bincount(call).tolist()
    for members in torch.split(order, counts):  # one kernel per call: a loop over calls, not boxes
        keep_mask[members[torchvision.ops.nms(boxes_k[members], scores_k[members], float(iou_threshold))]] = True
    kept = torch.where(keep_mask)[0]
    return kept[scores[kept].sort(descending=True)[1]]  # torchvision's final ordering, ties included


def _batched_nms_traced(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """:func:`batched_nms` in a traced graph (ONNX ``NonMaxSuppression``, graph export): always one
    kernel call, groups moved apart by ``idxs * (extent + 1)`` (``idxs`` integers: class labels or
    levels), no data-dependent branch, valid for zero boxes (a 0 joins the coordinates, so min / max
    never reduce an empty tensor). ONNX's NonMaxSuppression computes in float32, so the translated
    coordinates are rounded to float32: < 1e-2 px on a 1333 px image with 90 classes, which can flip
    a decision only for pairs whose IoU is within ~1e-5 of the threshold."""
    b = boxes.double()
    coords = torch.cat([b.reshape(-1), b.new_zeros(1)])
    lo = coords.min()
    extent = coords.max() - lo
    shifted = (b - lo) + (idxs.double() * (extent + 1))[:, None]
    return torchvision.ops.nms(shifted.float(), scores.float(), float(iou_threshold))


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
