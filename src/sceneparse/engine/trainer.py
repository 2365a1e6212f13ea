"""``Trainer(cfg).fit()``: train a model on a dataset split and evaluate it.

The trainer is a short loop with hooks, in the style of detectron2's ``SimpleTrainer``: it sets the
run up (data, model, optimizer, a resumed run's state), then for every epoch iterates over its
batches with :meth:`Trainer.run_step` (set the LR, forward + loss, backward, optimizer step) and calls
its hooks (:mod:`sceneparse.engine.hooks`) before and after every step and epoch. What one run does
(everything under ``cfg.train.out``, written by rank 0, atomically):

* data (the trainer): the training / validation splits in the form the model's
  :class:`~sceneparse.models.base.ModelInfo` asks for (:func:`sceneparse.data.layout.load_split`),
  checked against the model (keypoints for a keypoint model, masks for a mask model, label PNGs
  for a semantic one); the order of the images is a pure function of ``(seed, epoch)``
  (:mod:`.data_order`) and augmentation (``data.hflip``, ``data.scale_jitter``) is seeded per sample;
* optimisation (:meth:`Trainer.run_step`): SGD or AdamW without weight decay on norm layers and
  biases (:mod:`.optim`), the LR set every iteration by :func:`~sceneparse.engine.schedule.lr_factor`
  (warm-up + cosine / wsd / step / constant), gradient clipping, mixed precision (float16 autocast +
  GradScaler on CUDA, bfloat16 autocast on CPUs with AVX512-BF16; ignored with a warning on other CPUs);
* :class:`~.hooks.EMAHook`: optional EMA of the weights (evaluated and saved instead of the raw weights);
* :class:`~.hooks.EvalHook`: evaluation every ``train.eval_every`` epochs and after the last one
  (:func:`~sceneparse.engine.evaluator.evaluate_model`); ``best.pt`` by ``train.primary_metric``
  (``auto``: the model's :attr:`~sceneparse.models.base.ModelInfo.primary_metric`);
* :class:`~.hooks.RunLogger`: the epoch's losses, ``loss_curve.png`` and ``metrics.png`` at the end,
  the progress bar and epoch lines; ``config.yaml`` is written at the start;
* :class:`~.hooks.Checkpointer`: ``last.pt`` at every epoch end and every ``train.checkpoint_every``
  iterations, holding all that ``resume`` needs to continue exactly (optimizer, EMA, GradScaler,
  position in the epoch, RNG states of every process, history, the hooks' state); ``results.csv``
  per epoch;
* :class:`~.hooks.TimeBudget` (``train.time_limit_min``): the number of epochs is planned from
  measured speeds so that the run, its evaluations and the final one end within the budget, and
  re-planned from the recent speed at every epoch end and quarter epoch (extended when the machine
  got faster, shortened when it got slower; one line ``time budget: N epochs -> M epochs (x s/it
  measured)`` per change). The cosine (or wsd) LR is re-anchored at each change so it stays
  continuous and still ends at 0 (:mod:`.budget`, :mod:`.schedule`); the anchor is in ``last.pt`` so
  a resumed run continues exactly. Each ``results.csv`` row then also holds ``planned_epochs``;
* data-parallel under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on CUDA):
  ``data.batch_size`` is the *global* batch, split evenly over the processes.

Checkpoints satisfy :func:`~sceneparse.engine.checkpoint.model_from_checkpoint`: ``model`` (the EMA
weights when EMA is on), ``config`` (``Config.to_dict()``), ``categories`` (label order), ``info``, ``task``.
"""
from __future__ import annotations

import copy
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import Config, config_from_dict, save_config
from ..data.datasets import SceneDataset, collate
from ..data.layout import load_split
from ..data.records import AnnotationSet
from ..data.transforms import RandomHorizontalFlip, RandomScaleCrop
from ..errors import CheckpointError, ConfigError, DataError, Problem
from ..models.base import ModelInfo, model_info
from . import distributed as dist
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data_order import SampleKey, epoch_batches, iters_per_epoch, mix_seed, sample_seed
from .evaluator import EvalReport, evaluate_model
from .hooks import Checkpointer, EMAHook, EvalHook, HookBase, RunLogger, TimeBudget
from .optim import build_optimizer
from .schedule import lr_factor

#: configuration keys that may differ when a run is resumed (they do not change the numbers)
RUNTIME_KEYS = (("train", "device"), ("train", "threads"), ("data", "workers"), ("data", "cache"))
#: consecutive non-finite losses a mixed-precision run skips before it stops as diverged
MAX_SKIPPED_STEPS = 10
#: what ``last.pt`` holds besides the trainer's and the hooks' state (no hook may use these keys)
_CHECKPOINT_KEYS = frozenset({"model", "config", "categories", "sceneparse_version", "task", "info", "epoch",
                              "iteration", "best", "class_names"})


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` produced.

    Attributes:
        out: the run folder; last / best: checkpoint paths (``best`` is ``None`` on ranks > 0).
        task: the model's :attr:`~sceneparse.models.base.ModelInfo.task` (``detect``, ``instance``,
            ``semantic``, ``pose``, ...).
        metrics: metrics of the final evaluation (empty without evaluation or on ranks > 0).
        primary_metric, best_value, best_epoch: what ``best.pt`` was chosen by, its value, its epoch.
        history: one row per epoch (see :mod:`sceneparse.engine.run_log`).
        epochs, iterations: epochs and iterations run in all (including before a resume).
        seconds: wall time of the whole run (including before a resume).
        stopped_by_time_limit: the time budget ended the run where it stood, not at a planned end: the
            per-iteration guard fired, or a re-plan found that no further iteration fits.
    """

    out: Path
    last: Path
    best: Path | None
    task: str
    metrics: dict[str, float]
    primary_metric: str
    best_value: float | None
    best_epoch: int | None
    history: list[dict]
    epochs: int
    iterations: int
    seconds: float
    stopped_by_time_limit: bool = False
    final_report: EvalReport | None = field(default=None, repr=False)


class _LossStep(nn.Module):
    """``forward(images, targets) -> model.training_losses(...)``, so DistributedDataParallel sees
    the training computation as its wrapped module's forward (and synchronises its gradients)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, targets):
        return self.model.training_losses(images, targets)


class AugmentedSet(torch.utils.data.Dataset):
    """``dataset[(epoch, position, index)]`` -> the sample ``index`` augmented with a generator seeded
    by ``(seed, epoch, position)``: the same bytes whatever the workers or an interruption."""

    def __init__(self, dataset: SceneDataset, *, seed: int, hflip: float, scale_jitter: tuple[float, float],
                 keypoint_set=None):
        self.dataset, self.seed, self.hflip = dataset, int(seed), float(hflip)
        self.scale_jitter = (float(scale_jitter[0]), float(scale_jitter[1]))
        self.keypoint_set = keypoint_set

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey):
        epoch, position, index = key
        image, target = self.dataset[index]
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, position))
        if self.scale_jitter != (1.0, 1.0):
            h, w = image.shape[-2:]
            image, target = RandomScaleCrop((h, w), self.scale_jitter, generator=g)(image, target)
        if self.hflip > 0:
            image, target = RandomHorizontalFlip(self.hflip, self.keypoint_set, generator=g)(image, target)
        return image, target


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable`` of ``/proc/meminfo``; the free
    pages elsewhere), or None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def cpu_has_fast_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _mixed_precision(requested: bool, device: torch.device) -> tuple[bool, torch.dtype]:
    """``train.amp`` -> ``(enabled, autocast dtype)``: float16 + GradScaler on CUDA; bfloat16 on a CPU
    whose oneDNN has native bfloat16 (AVX512-BF16 / AMX: about 1.5-1.8x faster training steps here);
    otherwise a warning and float32 (emulated bfloat16 would be slower than float32)."""
    if not requested:
        return False, torch.float32
    if device.type == "cuda":
        return True, torch.float16
    if device.type == "cpu" and cpu_has_fast_bfloat16():
        return True, torch.bfloat16
    warnings.warn(f"train.amp=true: no fast mixed precision on this {device.type} (CPU bfloat16 needs AVX512-BF16 "
                  "or AMX); training in float32", RuntimeWarning, stacklevel=4)
    return False, torch.float32


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA if available), ``cpu``, ``cuda`` / ``gpu``, ``cuda:N`` or ``N``. Under torchrun,
    ``auto`` / ``cuda`` mean this process's ``cuda:LOCAL_RANK``."""
    s = str(spec).strip().lower()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if s == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s in ("cuda", "gpu"):
        dev = torch.device(f"cuda:{local}")
    elif s.isdigit():
        dev = torch.device(f"cuda:{s}")
    elif s.startswith("cuda:") and s[5:].isdigit():
        dev = torch.device(s)
    else:
        raise ConfigError(f"train.device: {spec!r} is not a device (auto, cpu, cuda, cuda:N or N; several GPUs: "
                          "launch with torchrun --nproc_per_node N)")
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={spec!r} but CUDA is not available on this machine (use cpu)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _validate(cfg: Config) -> None:
    t, d, o = cfg.train, cfg.data, cfg.optim
    checks = [
        (t.epochs >= 1, "train.epochs", "must be >= 1", t.epochs),
        (d.batch_size >= 1, "data.batch_size", "must be >= 1", d.batch_size),
        (d.workers >= 0, "data.workers", "must be >= 0", d.workers),
        (isinstance(d.cache, bool), "data.cache", "must be true or false", d.cache),
        (t.eval_every >= 0, "train.eval_every", "must be >= 0 (0: no evaluation)", t.eval_every),
        (t.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0 (0: at epoch ends only)",
         t.checkpoint_every),
        (t.log_every >= 1, "train.log_every", "must be >= 1", t.log_every),
        (o.lr > 0, "optim.lr", "must be > 0", o.lr),
        (o.warmup_iters >= 0, "optim.warmup_iters", "must be >= 0", o.warmup_iters),
        (t.max_iters_per_epoch is None or (isinstance(t.max_iters_per_epoch, int) and t.max_iters_per_epoch >= 1),
         "train.max_iters_per_epoch", "must be an integer >= 1", t.max_iters_per_epoch),
        (t.threads is None or (isinstance(t.threads, int) and t.threads >= 1), "train.threads",
         "must be an integer >= 1", t.threads),
        (t.time_limit_min is None or (isinstance(t.time_limit_min, (int, float)) and not isinstance(
            t.time_limit_min, bool) and t.time_limit_min > 0), "train.time_limit_min", "must be a number > 0",
         t.time_limit_min),
        (len(d.scale_jitter) == 2 and 0 < float(d.scale_jitter[0]) <= float(d.scale_jitter[1]), "data.scale_jitter",
         "must be [lo, hi] with 0 < lo <= hi", d.scale_jitter),
        (0.0 <= d.hflip <= 1.0, "data.hflip", "must be a probability", d.hflip),
        (o.schedule in ("cosine", "wsd", "step", "constant"), "optim.schedule",
         "must be cosine, wsd, step or constant", o.schedule),
        (0.0 < o.decay_fraction <= 1.0, "optim.decay_fraction", "must be in (0, 1]", o.decay_fraction),
    ]
    bad = [f"{key}: {why} (got {val!r})" for ok, key, why, val in checks if not ok]
    if bad:
        raise ConfigError("; ".join(bad))
    if "num_classes" in cfg.model.kwargs:
        raise ConfigError("model.kwargs.num_classes: the number of classes comes from the data's categories")


def _resume_path(resume: str | os.PathLike | bool, cfg: Config) -> Path:
    p = Path(cfg.train.out) / "last.pt" if resume is True else Path(resume)
    if p.is_dir():
        p = p / "last.pt"
    if not p.is_file():
        raise CheckpointError("nothing to resume: checkpoint not found", path=str(p))
    return p




def _fresh_timing() -> dict:
    """Timing state (saved in ``last.pt`` as ``time``): ``spent`` seconds, the iteration timings of the
    :class:`~.hooks.TimeBudget` hook, the last evaluation's (``eval_s``) and epoch-end save's (``save_s``)."""
    return {"spent": 0.0, "iter_seconds": 0.0, "iter_count": 0, "epoch_iter_seconds": 0.0, "epoch_iter_count": 0,
            "last_epoch_spi": None, "eval_s": None, "save_s": 0.0}


#: what each kind of annotations is, for the errors of data that do not fit the model
_DATA_FILES = {"semantic": "label PNGs (semantic/<split>/)",
               "keypoints": "person keypoints (person_keypoints_<split>.json)",
               "instances": "object annotations (instances_<split>.json)",
               "panoptic": "panoptic segments (panoptic_<split>.json and its PNGs)"}


def read_split(cfg: Config, train: bool, kind: str, main: bool) -> AnnotationSet:
    """The training (``train``) or held-out split of ``cfg.data`` as training reads it (``kind``: the
    model's ``ModelInfo.data``); ``main``: print the problems repaired while reading."""
    d = cfg.data
    json_path, images, semantic = (d.train_json, d.train_images, d.train_semantic) if train else \
        (d.val_json, d.val_images, d.val_semantic)
    split, limit = (d.train_split, d.max_images) if train else (d.val_split, d.max_val_images)
    which = "train" if train else "val"
    if json_path and not images:
        raise ConfigError(f"data.{which}_json needs data.{which}_images (the folder its file names are relative to)")
    aset = load_split(json_path or d.root, split, kind, images=images, semantic=semantic,
                      things_only=kind == "instances", max_images=limit)
    if aset.problems and main:
        shown = "\n  ".join(str(p) for p in aset.problems[:5])
        more = f"\n  ... and {len(aset.problems) - 5} more" if len(aset.problems) > 5 else ""
        print(f"{aset.source}: {len(aset.problems)} problem(s) repaired while reading:\n  {shown}{more}",
              file=sys.stderr)
    if not aset.images:
        raise DataError(Problem(aset.source or None, None, "images", f"the {which} split has no images"))
    return aset


def _check_fits(aset: AnnotationSet, name: str, info: ModelInfo) -> None:
    """The training split has what the model learns from (objects, segmentations, keypoints)."""
    src = aset.source or None
    if info.data == "semantic":
        return  # every image has its label PNG (load_split checked); values are checked when read
    if info.data == "panoptic":
        if not aset.panoptic:
            raise DataError(Problem(src, None, "annotations", f"{name} needs panoptic segments to train on; the "
                                    "split has none"))
        return  # each image's PNG is read (and checked against its segments) when loaded
    things = [a for a in aset.annotations if not a.iscrowd]
    if not things:
        raise DataError(Problem(src, None, "annotations", f"{name} needs objects to train on; the split has none"))
    if info.has_masks and not any(a.segmentation is not None for a in things):
        raise DataError(Problem(src, None, "segmentation", f"{name} has a mask head but no annotation has a "
                                "segmentation (polygons or RLE)"))
    if info.num_keypoints:
        if not any(a.keypoints is not None and (np.asarray(a.keypoints)[:, 2] > 0).any() for a in things):
            raise DataError(Problem(src, None, "keypoints", f"{name} has a keypoint head but no annotation has "
                                    "a labelled keypoint"))
        k = aset.keypoint_set.num_keypoints if aset.keypoint_set is not None else None
        if k is not None and k != info.num_keypoints:
            raise DataError(Problem(src, None, "keypoints", f"{name} predicts {info.num_keypoints} keypoints but "
                                    f"the data have {k} (set model.kwargs.num_keypoints={k})"))


def _cache_fits(cfg: Config, train: AnnotationSet, kind: str) -> bool:
    """``data.cache``, unless the split's pixels (from the records' sizes) would take more than half
    of the memory available now: then a warning and no cache."""
    if not cfg.data.cache:
        return False
    px = sum(int(r.height or 0) * int(r.width or 0) for r in train.images)
    need = px * (3 + (1 if kind == "semantic" else 0))  # uint8 RGB (+ uint8 labels, typically)
    avail = available_memory()
    if avail is not None and need > avail // 2:
        warnings.warn(f"data.cache=true: the {len(train.images)} training images need about {need / 2**30:.1f} "
                      f"GiB, more than half of the {avail / 2**30:.1f} GiB available; reading them from disk "
                      "instead", stacklevel=2)
        return False
    return True


class Trainer:
    """Trains ``cfg.model.name`` on ``cfg.data`` (see the module doc): ``Trainer(cfg).fit()``.

    Args:
        cfg: the run's :class:`~sceneparse.config.Config`.
        resume: ``True`` (``cfg.train.out/last.pt``) or a checkpoint / run folder: continue that run
            with *its* configuration (only ``train.device``, ``train.threads``, ``data.workers`` and
            ``data.cache`` are taken from ``cfg``) in its folder.
        progress: tqdm bars and per-epoch lines (rank 0).
        clock: seconds, monotonic (``time.perf_counter``); the time budget reads it.
        hooks: your own :class:`~sceneparse.engine.hooks.HookBase` objects (or add them with
            :meth:`register_hooks` before :meth:`fit`).

    The loop calls every hook's ``before_train``, ``before_epoch``, ``before_step``, ``after_step``,
    ``after_epoch`` and ``after_train`` (what the counters read at each point: :class:`HookBase`),
    in the order of :meth:`build_hooks`: the built-in EMA, time-budget, evaluation and logging
    hooks, then yours, then the ``last.pt`` one. A hook reads the run through ``self.trainer``:
    the position (``epoch``, ``epoch_iter``, ``iteration``), the plan (``plan_epochs``,
    ``total_iters``), the last step's ``losses`` and ``lr``, ``history`` (one row per epoch, the
    current one last in ``after_epoch``), ``module`` / ``eval_model``, ``cfg``, ``main``. It records
    metrics of an epoch with :meth:`put_metrics` (``after_epoch``: they go to results.csv and
    ``TrainResult.metrics``) and ends the run early with :meth:`stop`::

        class LossGoal(HookBase):
            def after_epoch(self):
                t = self.trainer
                t.put_metrics({"loss_x1000": 1000 * t.history[-1]["loss"]})
                if t.history[-1]["loss"] < 0.05:
                    t.stop("loss below 0.05")

        Trainer(cfg, hooks=[LossGoal()]).fit()

    Hooks run on every process of a torchrun launch; one that must survive ``--resume`` keeps its
    state in ``last.pt`` through ``state_dict`` / ``load_state_dict``.
    """

    def __init__(self, cfg: Config, *, resume: str | os.PathLike | bool | None = None, progress: bool = True,
                 clock: Callable[[], float] | None = None, hooks: Iterable[HookBase] = ()):
        self.cfg = copy.deepcopy(cfg)
        self.resume = resume if resume not in (None, False) else None
        self.progress = progress
        self.clock = clock or time.perf_counter
        self.hooks: list[HookBase] = []  # the run's, in calling order (build_hooks(), when fit() starts)
        self._user_hooks: list[HookBase] = []
        self.register_hooks(hooks)
        # position and plan (restored by resume)
        self.epoch = 0  # completed epochs = index of the current epoch
        self.epoch_iter = 0  # iterations done in the current epoch
        self.iteration = 0  # iterations done in all
        self.iters_per_epoch = self.plan_epochs = self.total_iters = 0
        # the cosine's re-anchor (iteration, factor); None: hold at 1 until the time budget's first plan
        self.lr_anchor: tuple[int, float] | None = (0, 1.0)
        # the last step: its LR and its losses (floats, averaged over the processes; None: skipped)
        self.lr: float | None = None
        self.losses: dict[str, float] | None = None
        self.skipped_steps = 0
        self._nonfinite_run = 0  # consecutive skipped steps
        # what the hooks record (restored by resume; the TrainResult's)
        self.history: list[dict] = []
        self.best: dict[str, Any] = {"metric": None, "value": None, "epoch": None}
        self.last_report: EvalReport | None = None
        self.stopped_by_time_limit = False
        self.timing = _fresh_timing()
        self._in_epoch = False

    # ---- hooks --------------------------------------------------------------------------------
    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Add hooks to the run, called in the order given (after the built-in EMA, time-budget,
        evaluation and logging hooks, before the checkpoint hook). Before :meth:`fit` only."""
        if self.hooks:
            raise RuntimeError("register hooks before fit() starts")
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError(f"a hook must subclass sceneparse.engine.hooks.HookBase, got {type(h).__name__}")
            self._user_hooks.append(h)

    def build_hooks(self) -> list[HookBase]:
        """The run's hooks in calling order: EMA (``train.ema``), time budget
        (``train.time_limit_min``), evaluation + ``best.pt``, logging (losses, progress, plots), the
        registered hooks, then ``last.pt`` + results.csv. Called by :meth:`fit` once the model and
        the data are set up; a subclass may override it."""
        t = self.cfg.train
        early: list[HookBase] = [EMAHook(self.module, t.ema_decay)] if t.ema else []
        if t.time_limit_min:
            early.append(TimeBudget(t.time_limit_min))
        early += [EvalHook(t.eval_every), RunLogger(t.log_every)]
        return [*early, *self._user_hooks, Checkpointer(t.checkpoint_every)]

    def _call(self, point: str) -> None:
        for h in self.hooks:
            getattr(h, point)()

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to the end of the plan (or the time budget, or a hook's :meth:`stop`) and return
        the :class:`TrainResult`."""
        owns_group = not dist.is_distributed()
        self._t0 = self.clock()
        self._time_before = 0.0
        threads = torch.get_num_threads()
        try:
            self._setup()
            self._call("before_train")
            while not self.finished:
                self._run_epoch()
            self._call("after_train")
            dist.barrier()
        finally:
            torch.set_num_threads(threads)
            if owns_group and dist.is_distributed():
                dist.cleanup()
        final = self.history[-1]["metrics"] if self.history else {}
        best = self.out / "best.pt"
        return TrainResult(out=self.out, last=self.out / "last.pt", best=best if self.main and best.is_file() else None,
                           task=self.task, metrics=dict(final or {}), primary_metric=self.primary_metric,
                           best_value=self.best["value"], best_epoch=self.best["epoch"], history=self.history,
                           epochs=self.epoch, iterations=self.iteration, seconds=self.elapsed(),
                           stopped_by_time_limit=self.stopped_by_time_limit, final_report=self.last_report)

    def _run_epoch(self) -> None:
        """The epoch (its rest after a mid-epoch resume), then its ``after_epoch`` with a new row."""
        cfg = self.cfg
        # the batches of the whole epoch: a re-plan may lengthen (or cut) this epoch while it runs
        batches = epoch_batches(len(self.train_set), cfg.data.batch_size, seed=cfg.train.seed, epoch=self.epoch,
                                rank=self.rank, world_size=self.world, start=self.epoch_iter,
                                stop=self.iters_per_epoch)
        loader = torch.utils.data.DataLoader(
            self.train_set, batch_sampler=batches, collate_fn=collate, num_workers=cfg.data.workers,
            generator=torch.Generator().manual_seed(mix_seed(cfg.train.seed, self.epoch, 2)))
        self.set_train_mode()
        self._in_epoch = True
        self._call("before_epoch")
        for images, targets in loader:
            self._call("before_step")
            if self.iteration >= self.total_iters:  # stop() before this step
                break
            self.run_step(images, targets)
            self._call("after_step")
            if self.at_epoch_end():
                break
        self._in_epoch = False
        self.epoch += 1
        self.epoch_iter = 0
        if self.iteration >= self.total_iters:
            self.plan_epochs = self.epoch  # the run ends here (a cut last epoch, a stop)
        self.history.append({"epoch": self.epoch, "iterations": self.iteration, "lr": None, "losses": {},
                             "loss": None, "metrics": {}, "seconds": None})
        self._call("after_epoch")

    def run_step(self, images: list[torch.Tensor], targets: list) -> None:
        """One iteration: the LR of this iteration, forward + loss (autocast with ``train.amp``),
        backward, gradient clipping, optimizer step. Then ``iteration`` / ``epoch_iter`` count it and
        ``lr`` / ``losses`` hold its LR and losses (each averaged over the processes, and their sum
        ``loss``). A non-finite loss raises :class:`FloatingPointError` naming the images, except in
        a single-process mixed-precision run: that skips the step (``losses`` is None; it still
        counts, as a GradScaler-skipped one does) unless it keeps happening."""
        lr = self.learning_rate()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            losses = self.step_module(images, targets)
        loss = sum(losses.values())
        finite = bool(torch.isfinite(loss))
        if finite:
            self._nonfinite_run = 0
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            clip = self.cfg.optim.clip_grad_norm
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_([p for p in self.module.parameters() if p.requires_grad], float(clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            where = ", ".join(f"{t.image_id} ({t.file_name})" for t in targets)
            shown = {k: round(float(v.detach()), 4) for k, v in losses.items()}
            what = f"non-finite loss at epoch {self.epoch + 1}, iteration {self.iteration}: {shown}; images {where}"
            self._nonfinite_run += 1
            # skipped as GradScaler skips float16 overflows -- unless it keeps happening (then the run
            # has diverged). Single process only: under DDP a rank that skips its backward would leave
            # the others waiting in the gradient all-reduce.
            if not (self.use_amp and self.world == 1) or self._nonfinite_run > MAX_SKIPPED_STEPS:
                raise FloatingPointError(f"{what}. Lower optim.lr or check these annotations.")
            self.log(f"skipped the step: {what} (mixed precision; {self._nonfinite_run} in a row, the run stops "
                     f"after {MAX_SKIPPED_STEPS})")
            self.skipped_steps += 1
        self.iteration += 1
        self.epoch_iter += 1
        self.lr = lr
        self.losses = None
        if finite:
            vals = torch.stack([v.detach().float() for v in losses.values()] + [loss.detach().float()])
            self.losses = dict(zip([*losses, "loss"], dist.reduce_mean(vals).cpu().tolist()))

    # ---- what hooks call ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """The run is at its planned end (in ``after_epoch``: the epoch just finished is the last)."""
        return self.epoch >= self.plan_epochs or self.iteration >= self.total_iters

    def epoch_length(self) -> int:
        """Iterations of the current epoch under the plan (the last one may be cut short)."""
        return max(0, min(self.iters_per_epoch, self.total_iters - self.epoch * self.iters_per_epoch))

    def at_epoch_end(self) -> bool:
        """In ``after_step``: this step was the epoch's last."""
        return self.iteration >= self.total_iters or self.epoch_iter >= self.epoch_length()

    def stop(self, reason: str | None = None) -> None:
        """End the run early (``reason`` is logged). Called during an epoch (``before_epoch``,
        ``before_step``, ``after_step``), the epoch ends after the current step and is the last: its
        ``after_epoch`` runs as a planned last epoch's (final evaluation, ``best.pt``, ``last.pt``,
        results.csv). Called from ``after_epoch``, the run ends with that epoch (evaluated if it was
        due). ``last.pt`` then holds a finished run (nothing to resume)."""
        self.total_iters = self.iteration
        self.plan_epochs = self.epoch + 1 if self._in_epoch else self.epoch
        if reason:
            self.log(reason)

    def put_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Record metrics of the epoch that just ended (from ``after_epoch``): they join its row in
        ``history`` (results.csv, metrics.png, ``last.pt``) and, for the last epoch, ``TrainResult.metrics``."""
        if self._in_epoch or not self.history:
            raise RuntimeError("put_metrics() records metrics of an epoch: call it from after_epoch")
        self.history[-1]["metrics"].update(metrics)

    def evaluate(self) -> EvalReport | None:
        """Evaluate :attr:`eval_model` on the validation split (collective under torchrun: each process
        predicts its share; the report on rank 0, None on the others)."""
        if self.val_set is None:
            raise ConfigError("no validation split is loaded (train.eval_every=0)")
        return evaluate_model(self.eval_model, self.val_set, batch_size=self.cfg.data.batch_size,
                              progress=self.progress, workers=self.cfg.data.workers)

    def save_model(self, path: str | os.PathLike, **extra: Any) -> None:
        """Write :attr:`eval_model` as a model checkpoint (what ``model_from_checkpoint`` reads) with the
        run's config, categories, ``epoch`` (completed epochs), ``iteration``, ``best`` and ``extra``.
        Not collective: call it on rank 0 (``self.main``)."""
        base = {"epoch": self.epoch, "iteration": self.iteration, "best": dict(self.best),
                "class_names": list(self.class_names)}
        save_checkpoint(path, self.eval_model, config=self.cfg.to_dict(), categories=self.categories,
                        **{**base, **extra})

    def save_last(self) -> None:
        """Write ``last.pt``: the model and everything ``resume`` needs, the hooks' state included
        (collective: gathers every process's RNG state; rank 0 writes)."""
        rngs = dist.all_gather_objects(rng_state())
        state = {"epoch_iter": self.epoch_iter,
                 "plan": {"epochs": self.plan_epochs, "total_iters": self.total_iters,
                          "iters_per_epoch": self.iters_per_epoch,
                          "lr_anchor": list(self.lr_anchor) if self.lr_anchor is not None else None},
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 "history": copy.deepcopy(self.history), "time": {**self.timing, "spent": self.elapsed()},
                 "rng": rngs, "world_size": self.world, "stopped_by_time_limit": self.stopped_by_time_limit}
        for h in self.hooks:
            extra = h.state_dict()
            clash = set(extra) & (set(state) | _CHECKPOINT_KEYS)
            if clash:
                raise RuntimeError(f"{type(h).__name__}.state_dict(): the key(s) {sorted(clash)} are taken")
            state.update(extra)
        if self.main:
            self.save_model(self.out / "last.pt", **state)
        dist.barrier()

    def lr_factor(self, iteration: int, *, warmup: bool = True) -> float:
        """The schedule's factor at ``iteration`` under the current plan and cosine anchor (without
        the warm-up ramp when ``warmup`` is False)."""
        o = self.cfg.optim
        anchor = self.lr_anchor if self.lr_anchor is not None else (iteration, 1.0)
        return lr_factor(iteration, total_iters=self.total_iters, schedule=o.schedule,
                         warmup_iters=o.warmup_iters if warmup else 0, warmup_factor=o.warmup_factor, steps=o.steps,
                         gamma=o.gamma, iters_per_epoch=self.iters_per_epoch, anchor_iter=anchor[0],
                         anchor_factor=anchor[1], decay_fraction=o.decay_fraction)

    def learning_rate(self, iteration: int | None = None) -> float:
        """The LR of ``iteration`` (default: the next step's) under the current plan."""
        return self.cfg.optim.lr * self.lr_factor(self.iteration if iteration is None else iteration)

    def set_train_mode(self) -> None:
        """The model in training mode (BatchNorm layers in eval mode with ``train.freeze_bn``)."""
        self.module.train()
        if self.cfg.train.freeze_bn:
            for m in self.module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def elapsed(self) -> float:
        """Seconds the run has taken, before a resume included."""
        return self._time_before + (self.clock() - self._t0)

    def log(self, msg: str) -> None:
        if self.progress and self.main:
            tqdm.write(msg, file=sys.stderr)

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def primary_metric(self) -> str:
        """What ``best.pt`` is chosen by (``train.primary_metric``; ``auto``: the model's)."""
        p = self.cfg.train.primary_metric
        return p if p != "auto" else self.info.primary_metric

    # ---- setup --------------------------------------------------------------------------------
    def _setup(self) -> None:
        ckpt, path = self._read_resume()
        cfg = self.cfg
        _validate(cfg)
        self.device = resolve_device(cfg.train.device)
        dist.init_from_env(self.device)
        self.rank, self.world, self.main = dist.rank(), dist.world_size(), dist.is_main()
        if cfg.train.threads:
            torch.set_num_threads(int(cfg.train.threads))  # restored when fit() returns
        if cfg.data.batch_size % self.world:
            raise ConfigError(f"data.batch_size {cfg.data.batch_size} (the global batch) must be divisible by the "
                              f"{self.world} processes")
        self.use_amp, self.amp_dtype = _mixed_precision(bool(cfg.train.amp), self.device)
        self.out = Path(cfg.train.out)
        if self.main and ckpt is None:
            held = [n for n in ("last.pt", "results.csv") if (self.out / n).exists()]
            if held and not cfg.train.exist_ok:
                raise ConfigError(f"{self.out} already holds a training run ({', '.join(held)}); resume it with "
                                  "--resume, choose another --out, or set train.exist_ok=true to overwrite it")
        self._setup_model_and_data()
        self.eval_model: nn.Module = self.module  # what is evaluated and saved (the EMA hook's average)
        self.optimizer = build_optimizer(self.module, cfg.optim)
        # loss scaling only for float16 (CUDA); bfloat16 has float32's exponent range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.iters_per_epoch = iters_per_epoch(len(self.train_set), cfg.data.batch_size)
        if cfg.train.max_iters_per_epoch:
            self.iters_per_epoch = min(self.iters_per_epoch, int(cfg.train.max_iters_per_epoch))
        self.plan_epochs = cfg.train.epochs
        self.total_iters = self.plan_epochs * self.iters_per_epoch
        # with a time budget train.epochs is only a placeholder: the cosine waits for the first plan
        self.lr_anchor = None if cfg.train.time_limit_min else (0, 1.0)
        self.hooks = self.build_hooks()
        for h in self.hooks:
            h.trainer = self
        if ckpt is not None:
            self._restore(ckpt, path)
        elif self.rank > 0:  # rank 0 keeps the single-process random stream; others get their own
            torch.manual_seed(mix_seed(cfg.train.seed, self.rank))
        step = _LossStep(self.module)
        self.step_module = nn.parallel.DistributedDataParallel(
            step, find_unused_parameters=self.info.result == "instances") if self.world > 1 else step
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ours = [f".{n}.*.tmp" for n in ("last.pt", "best.pt", "results.csv", "loss_curve.png", "metrics.png")]
            for pattern in ours + [".cfg.*.tmp"]:  # temp files of a process killed while writing
                for stale in self.out.glob(pattern):
                    stale.unlink(missing_ok=True)
            save_config(cfg, self.out / "config.yaml")

    def _read_resume(self) -> tuple[dict | None, Path | None]:
        """The checkpoint of the run to resume (its configuration becomes ours, but for RUNTIME_KEYS)."""
        if self.resume is None:
            return None, None
        path = _resume_path(self.resume, self.cfg)
        ckpt = load_checkpoint(path)
        if "optimizer" not in ckpt or "iteration" not in ckpt:
            raise CheckpointError("not a training checkpoint (no optimizer state); resume from a run's last.pt",
                                  path=str(path))
        base = config_from_dict(ckpt["config"])
        for section, key in RUNTIME_KEYS:
            setattr(getattr(base, section), key, getattr(getattr(self.cfg, section), key))
        base.train.out = str(path.parent)
        self.cfg = base
        return ckpt, path

    def _setup_model_and_data(self) -> None:
        from ..models import zoo

        cfg = self.cfg
        name, kwargs = cfg.model.name, dict(cfg.model.kwargs)
        zoo.check_kwargs(name, kwargs)  # unknown keys: an error with the valid names, before any work
        try:
            # what kind of model: its info (the class count is not known before the data; a per-class
            # kwarg such as a semantic model's class_weights gives it)
            probe = zoo.build(name, num_classes=len(kwargs.get("class_weights") or [None]), **kwargs)
        except TypeError as e:
            raise ConfigError(f"model.kwargs {kwargs}: not accepted by {name} ({e})") from None
        self.info = info = model_info(probe)
        del probe
        kind, what = info.data, _DATA_FILES.get(info.data, info.data)
        try:
            train = read_split(cfg, True, kind, self.main)
        except DataError as e:
            raise DataError([Problem(None, None, "model", f"{name} ({info.task}) trains on {what}"), *e.problems]) \
                from None
        try:
            val = read_split(cfg, False, kind, self.main) if cfg.train.eval_every > 0 else None
        except DataError as e:
            raise DataError([Problem(None, None, "model", f"{name} ({info.task}) is evaluated on {what} of the "
                                     f"validation split (train.eval_every=0 trains without evaluation)"),
                             *e.problems]) from None
        _check_fits(train, name, info)
        if val is not None:
            mine = [(c.id, c.name) for c in train.categories.categories]
            theirs = [(c.id, c.name) for c in val.categories.categories]
            if mine != theirs:
                raise DataError(Problem(val.source or None, None, "categories",
                                        f"validation categories differ from the training ones ({train.source}: "
                                        f"{mine})", theirs))
        self.categories = train.categories.to_coco()
        self.class_names = train.categories.names
        # the model, seeded: the same seed gives the same initial weights
        random.seed(cfg.train.seed)
        np.random.seed(cfg.train.seed % 2 ** 32)
        torch.manual_seed(cfg.train.seed)
        model = zoo.build(name, num_classes=len(self.categories), **kwargs)
        if cfg.model.weights:
            res = zoo.load_checkpoint(model, cfg.model.weights, strict=False)
            skipped = len(res.missing) + len(res.unexpected) + len(res.mismatched)
            self.log(f"weights {cfg.model.weights}: {len(res.loaded)} tensors loaded, {skipped} skipped "
                     f"({len(res.mismatched)} of another shape, e.g. the class layers)")
        self.module = model.to(self.device, memory_format=torch.channels_last if cfg.train.channels_last
                               else torch.preserve_format)
        ds = SceneDataset(train, None, load_masks=info.has_masks, load_keypoints=info.num_keypoints > 0,
                          load_semantic=kind == "semantic", load_panoptic=kind == "panoptic",
                          cache=_cache_fits(cfg, train, kind))
        if ds.cache:
            t = self.clock()
            problems = ds.preload(progress=self.progress and self.main)
            if problems:
                raise DataError([Problem(None, None, "data.cache", f"{len(problems)} of {len(ds)} training images "
                                         "could not be read"), *problems])
            self.log(f"data.cache: {len(ds)} training images in RAM ({ds.cache_bytes / 2**20:.0f} MiB, "
                     f"read in {self.clock() - t:.1f} s)")
        self.train_set = AugmentedSet(ds, seed=cfg.train.seed, hflip=cfg.data.hflip,
                                       scale_jitter=tuple(cfg.data.scale_jitter), keypoint_set=train.keypoint_set)
        self.val_set = SceneDataset(val, None, load_masks=False, load_keypoints=False, load_semantic=kind == "semantic",
                                    load_panoptic=kind == "panoptic", cache=ds.cache) if val is not None else None

    def _restore(self, ckpt: dict, path: Path) -> None:
        """Continue the run of ``ckpt`` (its ``last.pt``): weights, optimizer, position, plan, what was
        recorded, the hooks' state and, last, the random state of this process."""
        if [c.get("id") for c in ckpt["categories"]] != [c["id"] for c in self.categories]:
            raise CheckpointError("the checkpoint's categories differ from the data's; resume on the same data",
                                  path=str(path))
        self.module.load_state_dict(ckpt["model"])  # a hook saving other weights (EMA) restores its own
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.epoch_iter, self.iteration = int(ckpt["epoch"]), int(ckpt["epoch_iter"]), int(ckpt["iteration"])
        plan = ckpt["plan"]
        if int(plan["iters_per_epoch"]) != self.iters_per_epoch:
            raise CheckpointError(f"the run had {plan['iters_per_epoch']} iterations per epoch, the data now give "
                                  f"{self.iters_per_epoch}; resume on the same data", path=str(path))
        self.plan_epochs, self.total_iters = int(plan["epochs"]), int(plan["total_iters"])
        anchor = plan.get("lr_anchor", [0, 1.0])  # checkpoints before re-anchoring: the plain cosine
        self.lr_anchor = (int(anchor[0]), float(anchor[1])) if anchor is not None else None
        if self.iteration >= self.total_iters:
            raise ConfigError(f"{path}: the run finished ({self.iteration} of {self.total_iters} iterations); "
                              "nothing to resume")
        self.best = dict(ckpt["best"])
        self.history = list(ckpt["history"])
        self.timing = {**_fresh_timing(), **ckpt["time"]}
        self._time_before = float(self.timing["spent"])
        self.stopped_by_time_limit = bool(ckpt.get("stopped_by_time_limit", False))
        for h in self.hooks:
            h.load_state_dict(ckpt)
        rngs = ckpt["rng"]
        if int(ckpt.get("world_size", 1)) == self.world and self.rank < len(rngs):
            set_rng_state(rngs[self.rank])
        else:
            warnings.warn(f"resuming a run of {ckpt.get('world_size')} process(es) on {self.world}: the data order "
                          "is kept but random draws inside the model differ from an uninterrupted run",
                          RuntimeWarning, stacklevel=3)
            set_rng_state(rngs[0])
            if self.rank > 0:
                torch.manual_seed(mix_seed(self.cfg.train.seed, self.rank, self.iteration))
        self.log(f"resuming {path}: epoch {self.epoch + 1}, iteration {self.iteration} of {self.total_iters}")


def train(cfg: Config, **kwargs) -> TrainResult:
    """``Trainer(cfg, **kwargs).fit()``."""
    return Trainer(cfg, **kwargs).fit()


__all__ = ["AugmentedSet", "HookBase", "TrainResult", "Trainer", "read_split", "resolve_device", "train"]
