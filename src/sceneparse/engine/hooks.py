"""Hooks of the training loop: everything a run does besides the optimisation step.

:class:`~sceneparse.engine.trainer.Trainer` runs the loop -- for every epoch its batches, and for
every batch :meth:`~sceneparse.engine.trainer.Trainer.run_step` (LR, forward + loss, backward,
optimizer step) -- and calls its hooks at six points, in the style of detectron2's ``SimpleTrainer``
and ``HookBase``. The built-in hooks, in the order the trainer calls them
(:meth:`~sceneparse.engine.trainer.Trainer.build_hooks`):

* :class:`EMAHook` (``train.ema``): the moving average of the weights, evaluated and saved;
* :class:`TimeBudget` (``train.time_limit_min``): plans the run into the budget, re-plans at every
  epoch end and quarter epoch, stops a run about to overrun (:mod:`.budget`);
* :class:`EvalHook`: evaluation every ``train.eval_every`` epochs and after the last; ``best.pt``;
* :class:`RunLogger`: loss averages, the epoch's row, progress bar, epoch lines, ``loss_curve.png``
  and ``metrics.png``;
* the hooks a user registered (``Trainer(cfg, hooks=[...])`` / ``register_hooks``);
* :class:`Checkpointer`: ``last.pt`` (and ``results.csv``) at every epoch end, ``last.pt`` every
  ``train.checkpoint_every`` iterations.

A user hook therefore finds the finished epoch's row complete in ``after_epoch`` (losses, the
evaluation's metrics, seconds), and what it records there
(:meth:`~sceneparse.engine.trainer.Trainer.put_metrics`) is saved with the epoch.
Hooks run on every process of a torchrun launch (``trainer.main`` is True on the one that writes
files); a hook that calls a collective (``trainer.evaluate()``, ``trainer.save_last()``) must do so
on every process at the same point.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ..errors import ConfigError
from . import distributed as dist
from .budget import PLAN_AFTER_ITERS, REPLANS_PER_EPOCH, must_stop, plan_time_budget
from .ema import ModelEMA
from .run_log import plot_loss_curve, plot_metrics, write_results_csv

if TYPE_CHECKING:
    from torch import nn

    from .trainer import Trainer


class HookBase:
    """Base class of the trainer's hooks: override the calling points you need.

    What the trainer's counters read at each point (``trainer.iteration``: iterations done in all,
    ``trainer.epoch``: epochs completed, ``trainer.epoch_iter``: iterations done in the current epoch):

    * ``before_train``: after setup; in a resumed run the position is the checkpoint's;
    * ``before_epoch``: ``epoch`` is the index (0-based) of the epoch about to run; ``epoch_iter`` is 0,
      or the iterations already done when a run resumes mid-epoch;
    * ``before_step``: ``iteration`` is the 0-based index of the step about to run;
    * ``after_step``: ``iteration`` counts this step (one more than in ``before_step``);
      ``trainer.losses`` holds its losses (floats averaged over the processes, with their sum
      ``loss``; ``None`` when a mixed-precision step was skipped) and ``trainer.lr`` its LR;
    * ``after_epoch``: ``epoch`` counts the finished epoch (its 1-based number), ``epoch_iter`` is 0,
      ``trainer.history[-1]`` is its row (``trainer.put_metrics`` adds metrics to it) and
      ``trainer.finished`` says whether it is the run's last;
    * ``after_train``: after the last epoch (not when training raised).

    ``trainer.stop()`` ends the run early (see :meth:`~sceneparse.engine.trainer.Trainer.stop`).

    A hook with state that must survive ``--resume`` returns it from :meth:`state_dict` and reads it
    back in :meth:`load_state_dict`.
    """

    #: the trainer running this hook (set by ``Trainer.fit`` before ``before_train``)
    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Entries for ``last.pt`` (top-level keys, so pick names that cannot clash with the trainer's
        or another hook's: the trainer refuses a clash). Plain types and tensors only (checkpoints are
        read with ``weights_only=True``). Called on every process whenever ``last.pt`` is written."""
        return {}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore from the whole ``last.pt`` dict of a resumed run (after the trainer restored its
        own state, before ``before_train``)."""


class EMAHook(HookBase):
    """An exponential moving average of the weights (:class:`~sceneparse.engine.ema.ModelEMA`),
    updated after every step that was not skipped. It is the model the run evaluates and saves
    (``trainer.eval_model``); ``last.pt`` keeps the raw training weights as ``train_model`` and the
    number of updates as ``ema_updates``."""

    def __init__(self, model: "nn.Module", decay: float):
        self.ema = ModelEMA(model, decay=decay)

    def before_train(self) -> None:
        self.trainer.eval_model = self.ema.ema

    def after_step(self) -> None:
        if self.trainer.losses is not None:
            self.ema.update(self.trainer.module)

    def state_dict(self) -> dict[str, Any]:
        return {"train_model": self.trainer.module.state_dict(), "ema_updates": self.ema.updates}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        # the trainer loaded ``model`` (the average) into its module: the raw weights are ours
        self.ema.ema.load_state_dict(checkpoint["model"])
        self.ema.updates = int(checkpoint["ema_updates"])
        self.trainer.module.load_state_dict(checkpoint["train_model"])


class TimeBudget(HookBase):
    """``train.time_limit_min``: the number of epochs planned from measured speeds so that the run,
    its evaluations and the final one end within the budget, re-planned at every epoch end and quarter
    epoch, and a guard after every step (the rule: :mod:`sceneparse.engine.budget`).

    It times the iterations into ``trainer.timing`` (``iter_*``: the run's timed iterations,
    ``epoch_iter_*``: the current epoch's, ``last_epoch_spi``: the previous epoch's seconds per
    iteration; ``eval_s`` / ``save_s`` come from the evaluation and checkpoint hooks) and changes
    the trainer's plan: ``plan_epochs``, ``total_iters`` and the cosine's ``lr_anchor`` (so the LR
    stays continuous and still ends at 0). Each change logs one line
    ``time budget: N epochs -> M epochs (x s/it measured)``; each epoch row gets ``planned_epochs``.
    """

    def __init__(self, minutes: float):
        self.minutes = minutes
        self.budget_s = float(minutes) * 60.0
        self.planned = False
        self._eval_estimate: float | None = None
        self._seen = 0  # iterations run by this process (its first one carries one-off costs: not timed)
        self._t_prev = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"planned": self.planned}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.planned = bool(checkpoint.get("planned", False))

    def before_epoch(self) -> None:
        self._t_prev = self.trainer.clock()

    def after_step(self) -> None:
        t = self.trainer
        now = t.clock()
        if self._seen > 0:
            for key in ("iter", "epoch_iter"):
                t.timing[f"{key}_seconds"] += now - self._t_prev
                t.timing[f"{key}_count"] += 1
        self._seen += 1
        self._t_prev = now
        if not self.planned:
            if t.timing["iter_count"] >= PLAN_AFTER_ITERS:
                self._plan(t.epoch)
        elif self._replan_due():
            self._plan(t.epoch)
        self._guard()

    def after_epoch(self) -> None:
        t = self.trainer
        if self.sec_per_iter() is not None and t.iteration < t.total_iters:
            # with the finished epoch's speed (its evaluation and save still to come); the planned
            # end, once reached, stays the end
            self._plan(t.epoch - 1)
            if t.iteration >= t.total_iters:
                t.plan_epochs = t.epoch
        self._roll_epoch_speed()
        t.history[-1]["planned_epochs"] = t.plan_epochs

    # ---- measurements -----------------------------------------------------------------------
    def sec_per_iter(self) -> float | None:
        """Recent seconds per iteration: the current epoch's timed iterations once there are
        ``PLAN_AFTER_ITERS`` of them (at an epoch end: the epoch just finished), else the previous
        epoch's, else the run's so far (``None`` before any iteration was timed)."""
        t = self.trainer.timing
        if t["epoch_iter_count"] >= PLAN_AFTER_ITERS:
            return t["epoch_iter_seconds"] / t["epoch_iter_count"]
        if t["last_epoch_spi"] is not None:
            return float(t["last_epoch_spi"])
        return t["iter_seconds"] / t["iter_count"] if t["iter_count"] else None

    def _roll_epoch_speed(self) -> None:
        """At an epoch end: the finished epoch's speed becomes the previous epoch's; a new window starts."""
        t = self.trainer.timing
        if t["epoch_iter_count"]:
            t["last_epoch_spi"] = t["epoch_iter_seconds"] / t["epoch_iter_count"]
        t["epoch_iter_seconds"], t["epoch_iter_count"] = 0.0, 0

    def eval_seconds(self) -> float:
        """Seconds of one evaluation: the last measured one; before any, the predict time of one
        batch scaled to this process's share of the validation images, plus a quarter for scoring."""
        t = self.trainer
        if t.val_set is None:
            return 0.0
        if t.timing["eval_s"] is not None:
            return float(t.timing["eval_s"])
        if self._eval_estimate is None:
            mine = math.ceil(len(t.val_set) / t.world)
            n = min(t.cfg.data.batch_size, len(t.val_set))
            images = [t.val_set[i][0] for i in range(n)]
            start = t.clock()
            t.eval_model.predict(images)
            dt = t.clock() - start
            t.set_train_mode()
            self._eval_estimate = 1.25 * dt * math.ceil(mine / n)
        return self._eval_estimate

    # ---- planning ---------------------------------------------------------------------------
    def _plan(self, epoch: int) -> None:
        """(Re-)plan the run into the budget from the recent speed (collective: rank 0's measurements
        decide for every process), re-anchor the cosine if the end moved, and say so. ``epoch``: the
        index of the epoch the run stands in (at an epoch end: the one just finished)."""
        t = self.trainer
        spi = self.sec_per_iter()
        plan = eval_s = None
        if spi is not None and spi > 0 and math.isfinite(spi):
            eval_s = self.eval_seconds()
            plan = plan_time_budget(self.budget_s, spent_s=t.elapsed(), epoch=epoch, done_iters=t.iteration,
                                    sec_per_iter=spi, eval_s=eval_s, save_s=float(t.timing["save_s"]),
                                    iters_per_epoch=t.iters_per_epoch, eval_every=t.cfg.train.eval_every)
        plan, spi, eval_s = dist.all_gather_objects((plan, spi, eval_s))[0]
        if plan is None:
            return
        before = t.plan_epochs
        first = not self.planned
        if first or plan.total_iters != t.total_iters:
            # from here on the cosine decays from its current value to 0 at the new end: no LR jump
            t.lr_anchor = (t.iteration, t.lr_factor(t.iteration, warmup=False))
        changed = (plan.epochs, plan.total_iters) != (t.plan_epochs, t.total_iters)
        t.plan_epochs, t.total_iters = plan.epochs, plan.total_iters
        self.planned = True
        if changed or first:
            in_last = t.total_iters - (t.plan_epochs - 1) * t.iters_per_epoch
            last = (f"; the last epoch cut to {in_last} of {t.iters_per_epoch} iterations"
                    if in_last < t.iters_per_epoch else "")
            t.log(f"time budget: {before} epochs -> {t.plan_epochs} epochs ({spi:.3g} s/it measured{last})"
                  + (f"; {self.minutes:g} min, evaluation ~{eval_s:.1f} s" if first else ""))
        if t.total_iters <= t.iteration:
            t.stopped_by_time_limit = True

    def _replan_due(self) -> bool:
        """A quarter-epoch re-plan point: every ``max(PLAN_AFTER_ITERS, ceil(iters_per_epoch / 4))``
        iterations into the epoch, not at its last iteration (the epoch end re-plans) and not once
        the planned end is reached. A function of the position only, so every process (and a
        resumed run) re-plans at the same iterations."""
        t = self.trainer
        every = max(PLAN_AFTER_ITERS, math.ceil(t.iters_per_epoch / REPLANS_PER_EPOCH))
        return t.epoch_iter % every == 0 and t.epoch_iter < t.epoch_length() and t.iteration < t.total_iters

    def _guard(self) -> None:
        """Stop after this step when one more, the final evaluation and the save would overrun."""
        t = self.trainer
        spi = self.sec_per_iter()
        if spi is None:
            return
        eval_s = self.eval_seconds() if self.planned else 0.0
        stop = must_stop(self.budget_s, spent_s=t.elapsed(), sec_per_iter=spi, eval_s=eval_s,
                         save_s=float(t.timing["save_s"]))
        if t.world > 1:
            stop = bool(dist.all_gather_objects(stop)[0])
        if stop and t.iteration < t.total_iters:
            t.stopped_by_time_limit = True
            t.stop(f"time limit {self.minutes:g} min reached at iteration {t.iteration}: stopping after the final "
                   "evaluation")


class EvalHook(HookBase):
    """Evaluates ``trainer.eval_model`` on the validation split (:meth:`Trainer.evaluate`) every
    ``eval_every`` epochs and after the last one; the metrics join the epoch's row, the report is
    ``trainer.last_report``, the time ``trainer.timing["eval_s"]``. On rank 0, ``best.pt`` is
    rewritten whenever the primary metric (``train.primary_metric``; ``auto``: the model's
    :attr:`~sceneparse.models.base.ModelInfo.primary_metric`) improves. Without evaluation
    (``eval_every=0``) ``best.pt`` holds the final weights."""

    def __init__(self, eval_every: int):
        self.eval_every = int(eval_every)

    def after_epoch(self) -> None:
        t = self.trainer
        if self.eval_every > 0 and (t.epoch % self.eval_every == 0 or t.finished):
            start = t.clock()
            report = t.evaluate()
            t.timing["eval_s"] = t.clock() - start
            t.last_report = report
            if report is not None:  # rank 0
                t.put_metrics(report.metrics)
                self._update_best(dict(report.metrics))
        elif self.eval_every == 0 and t.finished and t.main:
            t.best = {"metric": None, "value": None, "epoch": t.epoch}
            t.save_model(t.out / "best.pt")

    def _update_best(self, metrics: dict[str, float]) -> None:
        t = self.trainer
        primary = t.primary_metric
        if primary not in metrics:
            raise ConfigError(f"train.primary_metric {primary!r} is not among the evaluation's metrics: "
                              f"{sorted(metrics)}")
        value = float(metrics[primary])
        value = value if math.isfinite(value) else -math.inf
        if t.best["value"] is None or value > t.best["value"]:
            t.best = {"metric": primary, "value": value, "epoch": t.epoch}
            t.save_model(t.out / "best.pt", metrics=metrics)


class RunLogger(HookBase):
    """What a run reports: per-step losses averaged over each ``log_every`` window (``iteration_log``,
    plotted as ``loss_curve.png``) and over the epoch (the epoch's row: ``lr``, ``losses``, ``loss``,
    ``seconds``, the evaluation included), the tqdm bar and one line per epoch (rank 0, with
    ``progress``), and ``loss_curve.png`` / ``metrics.png`` at the end of the run (:mod:`.run_log`).
    ``last.pt`` carries ``iteration_log`` and the unfinished epoch's sums (``running``), so a resumed
    run logs what the uninterrupted one would have."""

    def __init__(self, log_every: int):
        self.log_every = int(log_every)
        self.iteration_log: list[dict] = []
        self.running = self._fresh()
        self._lr: float | None = None  # LR of the last recorded step
        self._t_epoch: float | None = None  # clock when the epoch's seconds were last added up
        self._bar: tqdm | None = None

    @staticmethod
    def _fresh() -> dict:
        return {"epoch_sums": {}, "epoch_count": 0, "win_sums": {}, "win_count": 0, "epoch_seconds": 0.0}

    def state_dict(self) -> dict[str, Any]:
        if self._t_epoch is not None:  # mid-epoch: the epoch's seconds so far go with the checkpoint
            now = self.trainer.clock()
            self.running["epoch_seconds"] += now - self._t_epoch
            self._t_epoch = now
        return {"iteration_log": copy.deepcopy(self.iteration_log), "running": copy.deepcopy(self.running)}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.iteration_log = list(checkpoint["iteration_log"])
        self.running = dict(checkpoint["running"])

    def before_train(self) -> None:
        t = self.trainer
        t.log(f"training {t.cfg.model.name} ({t.task}) on {len(t.train_set)} images, {t.iters_per_epoch} "
              f"iterations/epoch x {t.plan_epochs} epochs, batch {t.cfg.data.batch_size} on {t.world} process(es), "
              f"{t.device}; run folder {t.out}")

    def before_epoch(self) -> None:
        t = self.trainer
        self._t_epoch = t.clock()
        self._bar = tqdm(total=t.epoch_length(), initial=t.epoch_iter, desc=self._desc(), unit="it", leave=True,
                         disable=not (t.progress and t.main), dynamic_ncols=True)

    def after_step(self) -> None:
        t = self.trainer
        if t.losses is not None:  # a skipped step stays out of the averages
            r = self.running
            for k, v in t.losses.items():
                r["epoch_sums"][k] = r["epoch_sums"].get(k, 0.0) + v
                r["win_sums"][k] = r["win_sums"].get(k, 0.0) + v
            r["epoch_count"] += 1
            r["win_count"] += 1
            self._lr = t.lr
            if r["win_count"] >= self.log_every:
                self._flush_window()
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            if self._bar.total != t.epoch_length():  # the time budget re-planned
                self._bar.total = t.epoch_length()
                self._bar.set_description_str(self._desc(), refresh=False)
            if t.at_epoch_end():  # closed before the evaluation's bar opens
                self._close_bar()

    def after_epoch(self) -> None:
        t = self.trainer
        self._close_bar()
        self._flush_window()
        r = self.running
        n = max(1, r["epoch_count"])
        row = t.history[-1]
        row.update(lr=self._lr, losses={k: v / n for k, v in r["epoch_sums"].items() if k != "loss"},
                   loss=r["epoch_sums"].get("loss", 0.0) / n,
                   seconds=r["epoch_seconds"] + (t.clock() - self._t_epoch))
        shown = "  ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items()
                          if k == t.primary_metric or k in t.info.metrics)
        t.log(f"epoch {t.epoch}/{t.plan_epochs}: loss {row['loss']:.4f}  {shown}  ({row['seconds']:.1f} s)")
        self.running, self._t_epoch = self._fresh(), None

    def after_train(self) -> None:
        t = self.trainer
        if t.main:
            plot_loss_curve(self.iteration_log, t.out / "loss_curve.png")
            plot_metrics(t.history, t.out / "metrics.png")

    def _desc(self) -> str:
        return f"epoch {self.trainer.epoch + 1}/{self.trainer.plan_epochs}"

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _flush_window(self) -> None:
        r = self.running
        if r["win_count"]:
            self.iteration_log.append({"iteration": self.trainer.iteration, "lr": self._lr,
                                       "losses": {k: v / r["win_count"] for k, v in r["win_sums"].items()}})
        r["win_sums"], r["win_count"] = {}, 0

    def _postfix(self) -> str:
        r = self.running
        n = max(1, r["epoch_count"])
        parts = [f"{k.removeprefix('loss_')} {v / n:.3f}" for k, v in r["epoch_sums"].items() if k != "loss"]
        return f"loss {r['epoch_sums'].get('loss', 0.0) / n:.3f} ({', '.join(parts)}) lr {self.trainer.lr:.3g}"


class Checkpointer(HookBase):
    """``last.pt`` (:meth:`Trainer.save_last`) every ``every`` iterations inside an epoch (0: never)
    and at every epoch end, then ``results.csv`` from the same history (rank 0); the epoch-end time is
    ``trainer.timing["save_s"]``. Last in the calling order, so ``last.pt`` holds what every hook did."""

    def __init__(self, every: int):
        self.every = int(every)

    def after_step(self) -> None:
        t = self.trainer
        if self.every and t.iteration % self.every == 0 and not t.at_epoch_end():
            t.save_last()

    def after_epoch(self) -> None:
        t = self.trainer
        start = t.clock()
        t.save_last()
        if t.main:
            write_results_csv(t.out / "results.csv", t.history)
        t.timing["save_s"] = t.clock() - start


__all__ = ["Checkpointer", "EMAHook", "EvalHook", "HookBase", "RunLogger", "TimeBudget"]
