"""Per-pixel losses for semantic segmentation: cross-entropy with an ignore label, and soft Dice.

Both take ``logits float [B, C, H, W]`` and ``labels int64 [B, H, W]`` whose values are class indices
``0..C-1`` or ``ignore_index`` (void pixels, padding, "don't care" borders): ignored pixels contribute
neither to the loss nor to its normaliser. When *every* pixel is ignored both return a
graph-connected 0 (not NaN, which is what ``F.cross_entropy(reduction="mean")`` gives), so a batch of
unlabelled crops does not poison training.

(The sigmoid Dice of :func:`sceneparse.ops.losses.dice_loss` is for per-instance binary masks; the
one here is its multi-class softmax form over a label map.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...conventions import IGNORE_INDEX

__all__ = ["pixel_cross_entropy", "soft_dice_loss"]


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim != 4 or labels.ndim != 3 or logits.shape[0] != labels.shape[0] \
            or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f"logits must be [B, C, H, W] and labels [B, H, W] of the same B, H, W; got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.dtype != torch.long:
        raise ValueError(f"labels must be int64, got {labels.dtype}")


def pixel_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX,
                        class_weights: Tensor | None = None) -> Tensor:
    """Mean over non-ignored pixels of ``-w[y] log softmax(logits)[y]`` (FCN's per-pixel cross-entropy).

    With ``class_weights`` (``[C]``) the mean is weighted, as ``F.cross_entropy`` defines it:
    ``sum_i w[y_i] l_i / sum_i w[y_i]``. Returns a scalar; 0 (with a gradient of 0) when no pixel counts.
    """
    _check(logits, labels)
    total = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_index, reduction="sum")
    valid = labels != ignore_index
    if class_weights is None:
        denom = valid.sum()
    else:
        denom = class_weights.to(logits.dtype)[labels.clamp(0, logits.shape[1] - 1)][valid].sum()
    return total / denom.to(logits.dtype).clamp(min=torch.finfo(logits.dtype).tiny)


def soft_dice_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, smooth: float = 1.0,
                   present_only: bool = False) -> Tensor:
    """Multi-class soft Dice (Milletari et al., V-Net): ``1 - mean_c (2 |P_c T_c| + s) / (|P_c| + |T_c| + s)``.

    ``P_c`` = softmax probability of class ``c``, ``T_c`` = one-hot ground truth, sums over all valid
    pixels of the batch (batch-level Dice, stable for classes absent from one image). Dice measures
    overlap per class, so small classes weigh as much as large ones -- the complement of the
    pixel-averaged cross-entropy. ``present_only`` averages over the classes present in ``labels``
    only (otherwise absent classes add ``s / (|P_c| + s)``, which pushes their probability to 0).
    """
    _check(logits, labels)
    num_classes = logits.shape[1]
    valid = (labels != ignore_index).unsqueeze(1)  # [B, 1, H, W]
    probs = logits.softmax(dim=1) * valid
    onehot = torch.zeros_like(probs).scatter_(1, labels.clamp(0, num_classes - 1).unsqueeze(1), 1.0) * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    card = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (card + smooth)  # [C]
    if present_only:
        present = onehot.sum(dims) > 0
        if not bool(present.any()):
            return logits.sum() * 0.0
        return 1 - dice[present].mean()
    return 1 - dice.mean()
