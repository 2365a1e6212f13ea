"""Learning-rate schedules with linear warm-up, as one pure function of the iteration."""
from __future__ import annotations

import math
from typing import Sequence


def lr_factor(iteration: int, *, total_iters: int, schedule: str = "cosine", warmup_iters: int = 0,
              warmup_factor: float = 0.001, steps: Sequence[int] = (), gamma: float = 0.1,
              iters_per_epoch: int = 1) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based).

    Warm-up ramps linearly from ``warmup_factor`` to 1 over ``warmup_iters``; then ``cosine`` decays
    to 0 at ``total_iters``, ``step`` multiplies by ``gamma`` at each epoch in ``steps``, ``constant`` keeps 1.
    """
    if schedule == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * min(iteration, total_iters) / max(1, total_iters)))
    elif schedule == "step":
        epoch = iteration // max(1, iters_per_epoch)
        f = gamma ** sum(1 for s in steps if epoch >= s)
    elif schedule == "constant":
        f = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}; expected cosine, step or constant")
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        f *= warmup_factor * (1 - alpha) + alpha
    return f
