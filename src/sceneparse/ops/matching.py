"""Assigning predictions (anchors, proposals, queries) to ground truth, and sampling them for training.

* :class:`Matcher` -- threshold matching of Faster R-CNN / RPN (IoU >= high: foreground, < low:
  background, in between: ignored), optionally with the "low-quality" matches that guarantee every
  ground-truth box at least its best anchor(s). Identical to torchvision's ``Matcher``.
* :class:`BalancedPositiveNegativeSampler` -- a fixed-size minibatch per image with at most a given
  fraction of positives (Fast R-CNN sec. 2.3: 25 % foreground RoIs).
* :func:`hungarian_match` -- the optimal one-to-one assignment used by set prediction (DETR).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["Matcher", "BalancedPositiveNegativeSampler", "hungarian_match"]


class Matcher:
    """Match each of ``N`` predictions to at most one of ``G`` ground-truth elements.

    ``__call__(quality [G, N]) -> matches int64 [N]``: the index of the ground truth with the highest
    quality (IoU) for each prediction if that quality is ``>= high_threshold``,
    :attr:`BETWEEN_THRESHOLDS` (-2) if it lies in ``[low_threshold, high_threshold)`` and
    :attr:`BELOW_LOW_THRESHOLD` (-1) below ``low_threshold``.

    With ``allow_low_quality_matches`` every ground truth also keeps the prediction(s) with which it
    has its highest quality (all ties), even if that is below the thresholds: such a prediction is
    matched to *its own* best ground truth (Faster R-CNN sec. 3.1.2, condition (i)).

    Unlike torchvision, which raises, an empty ground-truth set (``G == 0``) gives all
    :attr:`BELOW_LOW_THRESHOLD` (every prediction is background) and ``N == 0`` an empty result.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False) -> None:
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")

    def __call__(self, quality: Tensor) -> Tensor:
        if quality.ndim != 2:
            raise ValueError(f"quality must be a [G, N] matrix (ground truth x predictions), got {tuple(quality.shape)}")
        G, N = quality.shape
        if G == 0 or N == 0:
            return torch.full((N,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=quality.device)
        best, matches = quality.max(dim=0)
        best_gt = matches.clone()
        matches[best < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(best >= self.low_threshold) & (best < self.high_threshold)] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            best_per_gt = quality.max(dim=1).values
            is_best_for_some_gt = (quality == best_per_gt[:, None]).any(dim=0)
            matches = torch.where(is_best_for_some_gt, best_gt, matches)
        return matches


class BalancedPositiveNegativeSampler:
    """Sample ``batch_size_per_image`` elements per image with at most ``positive_fraction`` positives.

    ``__call__(matched_labels: list[Tensor [N_i]]) -> (pos_masks, neg_masks)``, two lists of bool
    ``[N_i]`` masks. In ``matched_labels`` values ``>= 1`` are positives, ``0`` negatives and ``-1``
    (or any other negative value) ignored. If there are too few positives the remainder is filled
    with negatives; subsets are drawn uniformly with ``torch.randperm`` (the same draws as torchvision
    for the same RNG state). ``generator`` (here or per call) makes the draw reproducible.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float,
                 generator: torch.Generator | None = None) -> None:
        if batch_size_per_image < 1:
            raise ValueError(f"batch_size_per_image must be >= 1, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.generator = generator

    def __repr__(self) -> str:
        return (f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")

    def __call__(self, matched_labels: Sequence[Tensor],
                 generator: torch.Generator | None = None) -> tuple[list[Tensor], list[Tensor]]:
        generator = generator if generator is not None else self.generator
        pos_masks, neg_masks = [], []
        for labels in matched_labels:  # one iteration per image
            positive = torch.where(labels >= 1)[0]
            negative = torch.where(labels == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos = positive[_randperm(positive.numel(), generator, positive.device)[:num_pos]]
            neg = negative[_randperm(negative.numel(), generator, negative.device)[:num_neg]]
            pos_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
            neg_mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
            pos_mask[pos] = True
            neg_mask[neg] = True
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    if generator is None:
        return torch.randperm(n, device=device)
    # A generator lives on one device; draw there and move the (small) permutation.
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment of a ``[N, M]`` cost matrix (Kuhn-Munkres / Jonker-Volgenant).

    Returns ``(rows, cols)``, int64 ``[min(N, M)]`` on the device of ``cost``, rows increasing: row
    ``rows[i]`` is assigned to column ``cols[i]``. Runs ``scipy.optimize.linear_sum_assignment`` on the
    CPU (the cost is detached: the assignment is not differentiable). Non-finite costs are rejected.
    """
    if cost.ndim != 2:
        raise ValueError(f"cost must be a [N, M] matrix, got {tuple(cost.shape)}")
    c = cost.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(c).all():
        bad = np.argwhere(~np.isfinite(c))[0]
        raise ValueError(f"cost matrix has a non-finite entry at {tuple(int(v) for v in bad)}: {c[tuple(bad)]}")
    rows, cols = linear_sum_assignment(c)
    return (torch.as_tensor(rows, dtype=torch.int64, device=cost.device),
            torch.as_tensor(cols, dtype=torch.int64, device=cost.device))
