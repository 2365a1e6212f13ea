"""Fitting a training run into a wall-clock budget (``train.time_limit_min``, like ultralytics' ``time=``).

After a few iterations the trainer knows the seconds per iteration, an evaluation's and a
checkpoint's cost; :func:`plan_time_budget` then picks the number of epochs (more or fewer than
``train.epochs``) so that training, the evaluations it runs and the final one end within the budget.
When not even the current epoch fits, that epoch is cut short. The LR schedule follows the planned
total. The plan is refined at every epoch end with the measured times, and
:func:`must_stop` guards each iteration in case the estimates were too optimistic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimePlan:
    """``epochs`` to run and ``total_iters`` iterations in all (``< epochs * iters_per_epoch`` only
    when the last epoch is cut short)."""

    epochs: int
    total_iters: int


def _evaluations(first: int, last: np.ndarray, eval_every: int) -> np.ndarray:
    """Evaluations in epochs ``first .. last - 1`` (0-based) of a run of ``last`` epochs: every
    ``eval_every``-th epoch plus the final one (none when ``eval_every`` is 0)."""
    if eval_every <= 0:
        return np.zeros_like(last)
    periodic = last // eval_every - first // eval_every  # k in [first, last) with (k + 1) % eval_every == 0
    final_is_periodic = (last % eval_every) == 0
    return periodic + (~final_is_periodic).astype(np.int64)


def plan_time_budget(budget_s: float, *, spent_s: float, epoch: int, done_iters: int, sec_per_iter: float,
                     eval_s: float, save_s: float, iters_per_epoch: int, eval_every: int,
                     max_epochs: int = 100_000) -> TimePlan:
    """The largest run that fits ``budget_s`` seconds.

    Args:
        spent_s: seconds used so far; ``epoch``: index of the current (unfinished) epoch, i.e. the
            number of completed epochs; ``done_iters``: iterations done in all.
        sec_per_iter, eval_s, save_s: measured cost of an iteration, an evaluation, an epoch-end save.
        iters_per_epoch: iterations of a full epoch; ``eval_every``: evaluation period (0: none).

    Returns the largest ``E > epoch`` whose full epochs fit (``spent + (E * ipe - done) * sec_per_iter
    + evaluations * eval_s + (E - epoch) * save_s <= budget``); if not even ``epoch + 1`` fits, a
    last epoch cut to as many iterations as fit (never fewer than ``done_iters``).
    """
    if sec_per_iter <= 0 or not math.isfinite(sec_per_iter):
        raise ValueError(f"sec_per_iter must be positive and finite, got {sec_per_iter}")
    ipe = int(iters_per_epoch)
    left = budget_s - spent_s
    upper = epoch + 1 + min(max_epochs, max(1, math.ceil(left / (ipe * sec_per_iter)) + 1))
    e = np.arange(epoch + 1, upper, dtype=np.int64)
    cost = (e * ipe - done_iters) * sec_per_iter + _evaluations(epoch, e, eval_every) * eval_s + (e - epoch) * save_s
    fits = np.flatnonzero(cost <= left)
    if fits.size:
        epochs = int(e[fits[-1]])
        return TimePlan(epochs, epochs * ipe)
    room = left - (eval_s if eval_every > 0 else 0.0) - save_s
    extra = max(0, int(math.floor(room / sec_per_iter)))
    return TimePlan(epoch + 1, max(done_iters, min(done_iters + extra, (epoch + 1) * ipe)))


def must_stop(budget_s: float, *, spent_s: float, sec_per_iter: float, eval_s: float, save_s: float) -> bool:
    """True when one more iteration, the final evaluation and the save would overrun the budget."""
    return spent_s + sec_per_iter + eval_s + save_s > budget_s


__all__ = ["TimePlan", "must_stop", "plan_time_budget"]
