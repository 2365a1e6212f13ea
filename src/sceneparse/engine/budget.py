"""Fitting a training run into a wall-clock budget (``train.time_limit_min``, like ultralytics' ``time=``).

The rule (carried out by the trainer's :class:`~sceneparse.engine.hooks.TimeBudget` hook):

* **first plan** after :data:`PLAN_AFTER_ITERS` timed iterations (the
  run's first iteration carries one-off costs and is not timed): :func:`plan_time_budget` picks
  the number of epochs (more or fewer than ``train.epochs``) so that training, the evaluations it
  runs and the final one end within the budget. When not even the current epoch fits, that epoch
  is cut short;
* **re-plans** at every epoch end and at every quarter of an epoch (every
  ``max(PLAN_AFTER_ITERS, ceil(iters_per_epoch / 4))`` iterations), with the *recent* speed: the
  seconds per iteration of the current epoch once it has ``PLAN_AFTER_ITERS`` timed iterations
  (at an epoch end: the epoch just finished), else of the previous epoch, else of the run so far;
  and the last measured evaluation and epoch-end save. Each change prints one line
  ``time budget: N epochs -> M epochs (x s/it measured)``. The plan is extended when the machine
  got faster (a slow start on a shared machine no longer ends the run early) and shortened when it
  got slower. The quarter-epoch re-plans matter because a speed-up that only shows in the last
  planned epoch would otherwise come too late: once the planned end is reached the run is over
  (the schedule has decayed to its end value);
* the learning rate stays continuous: the cosine is re-anchored at every change of plan (from the
  re-plan iteration on it decays from its current value to 0 at the new end, see
  :func:`~sceneparse.engine.schedule.lr_factor`); before the first plan its cosine part holds at 1
  (warm-up still applies); step schedules keep their epoch milestones;
* :func:`must_stop` guards every iteration in case the estimates were too optimistic, so a run
  never overshoots its budget (it then ends after the current iteration, the final evaluation
  and the save).

A plan is the whole epochs that fit plus one last epoch cut to the iterations that still fit (with
its evaluation and save), so a run ends within a few iterations of its budget instead of leaving up
to an epoch of it unused (a 3,200-image R-CNN run had left 5 of its 30 minutes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: iterations timed (after the first, which carries one-off costs) before the time budget is planned;
#: also the fewest timed iterations of an epoch its own speed is trusted from
PLAN_AFTER_ITERS = 3
#: with a time budget, re-plan at every epoch end and every 1/REPLANS_PER_EPOCH of an epoch
REPLANS_PER_EPOCH = 4


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
    + evaluations * eval_s + (E - epoch) * save_s <= budget``) followed by epoch ``E + 1`` cut to as
    many iterations as still fit with its own evaluation and save (dropped when none do); if not even
    ``epoch + 1`` fits whole, that epoch cut the same way (never fewer than ``done_iters``).
    """
    if sec_per_iter <= 0 or not math.isfinite(sec_per_iter):
        raise ValueError(f"sec_per_iter must be positive and finite, got {sec_per_iter}")
    ipe = int(iters_per_epoch)
    left = budget_s - spent_s
    upper = epoch + 1 + min(max_epochs, max(1, math.ceil(left / (ipe * sec_per_iter)) + 1))
    e = np.arange(epoch + 1, upper, dtype=np.int64)
    cost = (e * ipe - done_iters) * sec_per_iter + _evaluations(epoch, e, eval_every) * eval_s + (e - epoch) * save_s
    fits = np.flatnonzero(cost <= left)
    full = int(e[fits[-1]]) if fits.size else epoch  # epochs that fit whole
    if fits.size and fits[-1] == e.size - 1:  # capped by max_epochs
        return TimePlan(full, full * ipe)
    # then a cut epoch with whatever the budget has left after its evaluation(s) and save
    last = full + 1
    room = left - int(_evaluations(epoch, np.array([last]), eval_every)[0]) * eval_s - (last - epoch) * save_s
    cut = min(done_iters + max(0, int(math.floor(room / sec_per_iter))), last * ipe)
    if fits.size and cut <= full * ipe:
        return TimePlan(full, full * ipe)
    return TimePlan(last, max(done_iters, cut))


def must_stop(budget_s: float, *, spent_s: float, sec_per_iter: float, eval_s: float, save_s: float) -> bool:
    """True when one more iteration, the final evaluation and the save would overrun the budget."""
    return spent_s + sec_per_iter + eval_s + save_s > budget_s


__all__ = ["PLAN_AFTER_ITERS", "REPLANS_PER_EPOCH", "TimePlan", "must_stop", "plan_time_budget"]
