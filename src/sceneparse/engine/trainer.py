"""``Trainer(cfg).fit()``: train a detector or a semantic model on a dataset split and evaluate it.

What one run does (everything under ``cfg.train.out``, written by rank 0, atomically):

* data: the training / validation splits in the form the model needs (:mod:`sceneparse.engine.tasks`,
  :func:`sceneparse.data.layout.load_split`), checked against the model (a keypoint model needs
  keypoints, a mask head masks, a semantic model label PNGs); the order of the images is a pure
  function of ``(seed, epoch)`` (:mod:`.data_order`) and augmentation (``data.hflip``,
  ``data.scale_jitter``) is seeded per sample;
* optimisation: SGD or AdamW without weight decay on norm layers and biases (:mod:`.optim`), the LR
  set every iteration by :func:`~sceneparse.engine.schedule.lr_factor` (warm-up + cosine / wsd /
  step / constant), gradient clipping, mixed precision (float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPUs with AVX512-BF16; ignored with a
  warning on CPU), optional EMA of the weights (evaluated and saved instead of the raw weights);
* evaluation every ``train.eval_every`` epochs and after the last one
  (:func:`~sceneparse.engine.evaluator.evaluate_model`); ``best.pt`` by ``train.primary_metric``
  (``auto``: keypoints_AP / segm_AP / bbox_AP / miou);
* ``last.pt`` at every epoch end and every ``train.checkpoint_every`` iterations, holding all that
  ``resume`` needs to continue exactly (optimizer, EMA, GradScaler, position in the epoch, RNG
  states of every process, history); ``results.csv`` per epoch; ``loss_curve.png`` and
  ``metrics.png`` at the end; ``config.yaml``;
* ``train.time_limit_min``: the number of epochs is planned from measured speeds so that the run,
  its evaluations and the final one end within the budget, and re-planned from the recent speed at
  every epoch end and quarter epoch (extended when the machine got faster, shortened when it got
  slower; one line ``time budget: N epochs -> M epochs (x s/it measured)`` per change). The cosine
  (or wsd) LR is re-anchored at each change so it stays continuous and still ends at 0 (:mod:`.budget`,
  :mod:`.schedule`); the anchor is in ``last.pt`` so a resumed run continues exactly. Each
  ``results.csv`` row then also holds ``planned_epochs``;
* data-parallel under ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on CUDA):
  ``data.batch_size`` is the *global* batch, split evenly over the processes.

Checkpoints satisfy :func:`~sceneparse.engine.checkpoint.model_from_checkpoint`: ``model`` (the EMA
weights when EMA is on), ``config`` (``Config.to_dict()``), ``categories`` (label order), ``task``.
"""
from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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
from . import distributed as dist
from .budget import must_stop, plan_time_budget
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data_order import SampleKey, epoch_batches, iters_per_epoch, mix_seed, sample_seed
from .ema import ModelEMA
from .evaluator import EvalReport, evaluate_model
from .optim import build_optimizer
from .run_log import plot_loss_curve, plot_metrics, write_results_csv
from .schedule import lr_factor
from .tasks import data_kind, has_keypoints, has_masks, model_task, primary_metric

#: iterations timed (after the first, which carries one-off costs) before the time budget is planned;
#: also the fewest timed iterations of an epoch its own speed is trusted from
PLAN_AFTER_ITERS = 3
#: with a time budget, re-plan at every epoch end and every 1/REPLANS_PER_EPOCH of an epoch
REPLANS_PER_EPOCH = 4
#: configuration keys that may differ when a run is resumed (they do not change the numbers)
RUNTIME_KEYS = (("train", "device"), ("train", "threads"), ("data", "workers"), ("data", "cache"))


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` produced.

    Attributes:
        out: the run folder; last / best: checkpoint paths (``best`` is ``None`` on ranks > 0).
        task: ``"detection"`` or ``"semantic"``.
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


class _AugmentedSet(torch.utils.data.Dataset):
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


#: consecutive non-finite losses a mixed-precision run skips before it stops as diverged
MAX_SKIPPED_STEPS = 10


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


class Trainer:
    """Trains ``cfg.model.name`` on ``cfg.data`` (see the module doc).

    Args:
        cfg: the run's :class:`~sceneparse.config.Config`.
        resume: ``True`` (``cfg.train.out/last.pt``) or a checkpoint / run folder: continue that run
            with *its* configuration (only ``train.device``, ``train.threads``, ``data.workers`` and
            ``data.cache`` are taken from ``cfg``) in its folder.
        progress: tqdm bars and per-epoch lines (rank 0).
        clock: seconds, monotonic (``time.perf_counter``); the time budget reads it.
    """

    def __init__(self, cfg: Config, *, resume: str | os.PathLike | bool | None = None, progress: bool = True,
                 clock: Callable[[], float] | None = None):
        self.cfg = copy.deepcopy(cfg)
        self.resume = resume if resume not in (None, False) else None
        self.progress = progress
        self.clock = clock or time.perf_counter
        # progress of the run (all restored by resume)
        self.epoch = 0  # completed epochs = index of the current epoch
        self.epoch_iter = 0  # iterations done in the current epoch
        self.iteration = 0  # iterations done in all
        self.plan_epochs = 0
        self.total_iters = 0
        self.iters_per_epoch = 0
        self.history: list[dict] = []
        self.iteration_log: list[dict] = []
        self.best: dict[str, Any] = {"metric": None, "value": None, "epoch": None}
        self.stopped_by_time_limit = False
        self._running = self._fresh_running()
        self._time = self._fresh_time()
        self._planned = False
        # cosine re-anchor (iteration, factor) of the LR schedule; None: hold at 1 until the first plan
        self._lr_anchor: tuple[int, float] | None = (0, 1.0)
        self._eval_estimate: float | None = None
        self._run_iters_seen = 0  # iterations run by this process (the first one is not timed)
        self._last_lr: float | None = None
        self.last_report: EvalReport | None = None

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _fresh_time() -> dict:
        """Timing state (saved in ``last.pt``): the run's timed iterations, the current epoch's
        (``epoch_iter_*``), the previous epoch's seconds per iteration, the last evaluation / save."""
        return {"spent": 0.0, "iter_seconds": 0.0, "iter_count": 0, "epoch_iter_seconds": 0.0, "epoch_iter_count": 0,
                "last_epoch_spi": None, "eval_s": None, "save_s": 0.0}

    @staticmethod
    def _fresh_running() -> dict:
        return {"epoch_sums": {}, "epoch_count": 0, "win_sums": {}, "win_count": 0, "epoch_seconds": 0.0}

    def log(self, msg: str) -> None:
        if self.progress and self.main:
            tqdm.write(msg, file=sys.stderr)

    def _spent(self) -> float:
        return self._time_before + (self.clock() - self._t0)

    # ---- setup -------------------------------------------------------------------------------
    def _setup(self) -> None:
        ckpt = None
        if self.resume is not None:
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
            self._resume_from = path
        cfg = self.cfg
        _validate(cfg)
        self.device = resolve_device(cfg.train.device)
        self.owns_process_group = dist.init_from_env(self.device) and not getattr(self, "_pg_was_up", False)
        self.rank, self.world, self.main = dist.rank(), dist.world_size(), dist.is_main()
        if cfg.train.threads:
            torch.set_num_threads(int(cfg.train.threads))  # restored when fit() returns
        if cfg.data.batch_size % self.world:
            raise ConfigError(f"data.batch_size {cfg.data.batch_size} (the global batch) must be divisible by the "
                              f"{self.world} processes")
        self.use_amp, self.amp_dtype = _mixed_precision(bool(cfg.train.amp), self.device)
        self.skipped_steps, self._nonfinite_run = 0, 0
        self.out = Path(cfg.train.out)
        if self.main and ckpt is None:
            held = [n for n in ("last.pt", "results.csv") if (self.out / n).exists()]
            if held and not cfg.train.exist_ok:
                raise ConfigError(f"{self.out} already holds a training run ({', '.join(held)}); resume it with "
                                  "--resume, choose another --out, or set train.exist_ok=true to overwrite it")
        self._setup_model_and_data()
        self.optimizer = build_optimizer(self.module, cfg.optim)
        # loss scaling only for float16 (CUDA); bfloat16 has float32's exponent range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.ema = ModelEMA(self.module, decay=cfg.train.ema_decay) if cfg.train.ema else None
        self.primary = cfg.train.primary_metric if cfg.train.primary_metric != "auto" else primary_metric(self.module)
        n_train = len(self.train_set)
        self.iters_per_epoch = iters_per_epoch(n_train, cfg.data.batch_size)
        if cfg.train.max_iters_per_epoch:
            self.iters_per_epoch = min(self.iters_per_epoch, int(cfg.train.max_iters_per_epoch))
        self.plan_epochs = cfg.train.epochs
        self.total_iters = self.plan_epochs * self.iters_per_epoch
        # with a time budget train.epochs is only a placeholder: the cosine waits for the first plan
        self._lr_anchor = None if cfg.train.time_limit_min else (0, 1.0)
        self._time_before = 0.0
        if ckpt is not None:
            self._load_training_state(ckpt)
        elif self.rank > 0:  # rank 0 keeps the single-process random stream; others get their own
            torch.manual_seed(mix_seed(cfg.train.seed, self.rank))
        if self.world > 1:
            self.step_module = nn.parallel.DistributedDataParallel(
                _LossStep(self.module), find_unused_parameters=self.task == "detection")
        else:
            self.step_module = _LossStep(self.module)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            ours = [f".{n}.*.tmp" for n in ("last.pt", "best.pt", "results.csv", "loss_curve.png", "metrics.png")]
            for pattern in ours + [".cfg.*.tmp"]:  # temp files of a process killed while writing
                for stale in self.out.glob(pattern):
                    stale.unlink(missing_ok=True)
            save_config(cfg, self.out / "config.yaml")

    def _load_split(self, train: bool, kind: str) -> AnnotationSet:
        d = self.cfg.data
        json_path, images, semantic = (d.train_json, d.train_images, d.train_semantic) if train else \
            (d.val_json, d.val_images, d.val_semantic)
        split, limit = (d.train_split, d.max_images) if train else (d.val_split, d.max_val_images)
        which = "train" if train else "val"
        if json_path and not images:
            raise ConfigError(f"data.{which}_json needs data.{which}_images (the folder its file names are relative to)")
        aset = load_split(json_path or d.root, split, kind, images=images, semantic=semantic,
                          things_only=kind == "instances", max_images=limit)
        if aset.problems and self.main:
            shown = "\n  ".join(str(p) for p in aset.problems[:5])
            more = f"\n  ... and {len(aset.problems) - 5} more" if len(aset.problems) > 5 else ""
            print(f"{aset.source}: {len(aset.problems)} problem(s) repaired while reading:\n  {shown}{more}",
                  file=sys.stderr)
        if not aset.images:
            raise DataError(Problem(aset.source or None, None, "images", f"the {which} split has no images"))
        return aset

    def _setup_model_and_data(self) -> None:
        from ..models import zoo

        cfg = self.cfg
        name, kwargs = cfg.model.name, dict(cfg.model.kwargs)
        try:
            # what kind of model: task and heads (the class count is not known before the data; a
            # per-class kwarg such as a semantic model's class_weights gives it)
            probe = zoo.build(name, num_classes=len(kwargs.get("class_weights") or [None]), **kwargs)
        except TypeError as e:
            raise ConfigError(f"model.kwargs {kwargs}: not accepted by {name} ({e})") from None
        self.task, kind = model_task(probe), data_kind(probe)
        masks, keypoints = has_masks(probe), has_keypoints(probe)
        n_kp = probe.roi_keypoint.num_keypoints if keypoints else 0
        del probe
        what = {"semantic": "label PNGs (semantic/<split>/)", "keypoints": "person keypoints "
                "(person_keypoints_<split>.json)", "instances": "object annotations (instances_<split>.json)"}[kind]
        try:
            train = self._load_split(True, kind)
        except DataError as e:
            raise DataError([Problem(None, None, "model", f"{name} ({self.task}) trains on {what}"), *e.problems]) \
                from None
        try:
            val = self._load_split(False, kind) if cfg.train.eval_every > 0 else None
        except DataError as e:
            raise DataError([Problem(None, None, "model", f"{name} ({self.task}) is evaluated on {what} of the "
                                     f"validation split (train.eval_every=0 trains without evaluation)"),
                             *e.problems]) from None
        self._check_fits(train, name, kind, masks, keypoints, n_kp)
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
            if self.main:
                self.log(f"weights {cfg.model.weights}: {len(res.loaded)} tensors loaded, {skipped} skipped "
                         f"({len(res.mismatched)} of another shape, e.g. the class layers)")
        self.module = model.to(self.device, memory_format=torch.channels_last if cfg.train.channels_last
                               else torch.preserve_format)
        ds = SceneDataset(train, None, load_masks=masks, load_keypoints=keypoints, load_semantic=kind == "semantic",
                          cache=self._cache_fits(train, kind))
        if ds.cache:
            self._preload(ds)
        self.train_set = _AugmentedSet(ds, seed=cfg.train.seed, hflip=cfg.data.hflip,
                                       scale_jitter=tuple(cfg.data.scale_jitter), keypoint_set=train.keypoint_set)
        self.val_set = SceneDataset(val, None, load_masks=False, load_keypoints=False, load_semantic=kind == "semantic",
                                    cache=ds.cache) if val is not None else None

    def _cache_fits(self, train: AnnotationSet, kind: str) -> bool:
        """``data.cache``, unless the split's pixels (from the records' sizes) would take more than half
        of the memory available now: then a warning and no cache."""
        if not self.cfg.data.cache:
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

    def _preload(self, ds: SceneDataset) -> None:
        t = self.clock()
        problems = ds.preload(progress=self.progress and self.main)
        if problems:
            raise DataError([Problem(None, None, "data.cache", f"{len(problems)} of {len(ds)} training images "
                                     "could not be read"), *problems])
        if self.main:
            self.log(f"data.cache: {len(ds)} training images in RAM ({ds.cache_bytes / 2**20:.0f} MiB, "
                     f"read in {self.clock() - t:.1f} s)")

    def _check_fits(self, aset: AnnotationSet, name: str, kind: str, masks: bool, keypoints: bool, n_kp: int) -> None:
        src = aset.source or None
        if kind == "semantic":
            return  # every image has its label PNG (load_split checked); values are checked when read
        things = [a for a in aset.annotations if not a.iscrowd]
        if not things:
            raise DataError(Problem(src, None, "annotations", f"{name} needs objects to train on; the split has none"))
        if masks and not any(a.segmentation is not None for a in things):
            raise DataError(Problem(src, None, "segmentation", f"{name} has a mask head but no annotation has a "
                                    "segmentation (polygons or RLE)"))
        if keypoints:
            if not any(a.keypoints is not None and (np.asarray(a.keypoints)[:, 2] > 0).any() for a in things):
                raise DataError(Problem(src, None, "keypoints", f"{name} has a keypoint head but no annotation has "
                                        "a labelled keypoint"))
            k = aset.keypoint_set.num_keypoints if aset.keypoint_set is not None else None
            if k is not None and k != n_kp:
                raise DataError(Problem(src, None, "keypoints", f"{name} predicts {n_kp} keypoints but the data "
                                        f"have {k} (set model.kwargs.num_keypoints={k})"))

    # ---- state -------------------------------------------------------------------------------
    def _eval_model(self) -> nn.Module:
        return self.ema.ema if self.ema is not None else self.module

    def _checkpoint_extra(self, epoch: int) -> dict:
        """``epoch``: completed epochs the weights have seen."""
        return {"task": self.task, "epoch": epoch, "iteration": self.iteration, "best": dict(self.best),
                "class_names": list(self.class_names)}

    def _save_last(self) -> None:
        """``last.pt`` (collective: gathers every process's RNG state)."""
        rngs = dist.all_gather_objects(rng_state())
        if self.main:
            extra = self._checkpoint_extra(self.epoch)
            extra.update(
                epoch_iter=self.epoch_iter,
                plan={"epochs": self.plan_epochs, "total_iters": self.total_iters,
                      "iters_per_epoch": self.iters_per_epoch,
                      "lr_anchor": list(self._lr_anchor) if self._lr_anchor is not None else None},
                optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
                history=copy.deepcopy(self.history), iteration_log=copy.deepcopy(self.iteration_log),
                running=copy.deepcopy(self._running), time={**self._time, "spent": self._spent()},
                rng=rngs, world_size=self.world, stopped_by_time_limit=self.stopped_by_time_limit,
                planned=self._planned)
            if self.ema is not None:
                extra["train_model"] = self.module.state_dict()
                extra["ema_updates"] = self.ema.updates
            save_checkpoint(self.out / "last.pt", self._eval_model(), config=self.cfg.to_dict(),
                            categories=self.categories, **extra)
        dist.barrier()

    def _load_training_state(self, ckpt: dict) -> None:
        if [c.get("id") for c in ckpt["categories"]] != [c["id"] for c in self.categories]:
            raise CheckpointError("the checkpoint's categories differ from the data's; resume on the same data",
                                  path=str(self._resume_from))
        self.module.load_state_dict(ckpt["train_model"] if self.ema is not None else ckpt["model"])
        if self.ema is not None:
            self.ema.ema.load_state_dict(ckpt["model"])
            self.ema.updates = int(ckpt["ema_updates"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.epoch_iter, self.iteration = int(ckpt["epoch"]), int(ckpt["epoch_iter"]), int(ckpt["iteration"])
        plan = ckpt["plan"]
        if int(plan["iters_per_epoch"]) != self.iters_per_epoch:
            raise CheckpointError(f"the run had {plan['iters_per_epoch']} iterations per epoch, the data now give "
                                  f"{self.iters_per_epoch}; resume on the same data", path=str(self._resume_from))
        self.plan_epochs, self.total_iters = int(plan["epochs"]), int(plan["total_iters"])
        anchor = plan.get("lr_anchor", [0, 1.0])  # checkpoints before re-anchoring: the plain cosine
        self._lr_anchor = (int(anchor[0]), float(anchor[1])) if anchor is not None else None
        if self.iteration >= self.total_iters:
            raise ConfigError(f"{self._resume_from}: the run finished ({self.iteration} of {self.total_iters} "
                              "iterations); nothing to resume")
        self.best = dict(ckpt["best"])
        self.history = list(ckpt["history"])
        self.iteration_log = list(ckpt["iteration_log"])
        self._running = dict(ckpt["running"])
        self._time = {**self._fresh_time(), **ckpt["time"]}
        self._time_before = float(self._time["spent"])
        self._planned = bool(ckpt.get("planned", False))
        self.stopped_by_time_limit = bool(ckpt.get("stopped_by_time_limit", False))
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
        self.log(f"resuming {self._resume_from}: epoch {self.epoch + 1}, iteration {self.iteration} of "
                 f"{self.total_iters}")

    # ---- the loop ----------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to the end of the plan (or the time budget) and return the :class:`TrainResult`."""
        self._pg_was_up = dist.is_distributed()
        self.owns_process_group = False
        self._t0 = self.clock()
        self._time_before = 0.0
        threads = torch.get_num_threads()
        try:
            self._setup()
            if self.main:
                self.log(f"training {self.cfg.model.name} ({self.task}) on {len(self.train_set)} images, "
                         f"{self.iters_per_epoch} iterations/epoch x {self.plan_epochs} epochs, batch "
                         f"{self.cfg.data.batch_size} on {self.world} process(es), {self.device}; run folder {self.out}")
            while self.epoch < self.plan_epochs and self.iteration < self.total_iters:
                self._run_epoch()
                self._end_epoch()
            if self.main:
                plot_loss_curve(self.iteration_log, self.out / "loss_curve.png")
                plot_metrics(self.history, self.out / "metrics.png")
            dist.barrier()
        finally:
            torch.set_num_threads(threads)
            if self.owns_process_group:
                dist.cleanup()
        final = self.history[-1]["metrics"] if self.history else {}
        best_path = self.out / "best.pt"
        return TrainResult(out=self.out, last=self.out / "last.pt",
                           best=best_path if self.main and best_path.is_file() else None, task=self.task,
                           metrics=dict(final or {}), primary_metric=self.primary, best_value=self.best["value"],
                           best_epoch=self.best["epoch"], history=self.history, epochs=self.epoch,
                           iterations=self.iteration, seconds=self._spent(),
                           stopped_by_time_limit=self.stopped_by_time_limit, final_report=self.last_report)

    def _set_train_mode(self) -> None:
        self.module.train()
        if self.cfg.train.freeze_bn:
            for m in self.module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _lr_factor(self, iteration: int, *, warmup: bool = True) -> float:
        """The schedule's factor at ``iteration`` under the current plan and cosine anchor (without
        the warm-up ramp when ``warmup`` is False)."""
        o = self.cfg.optim
        anchor = self._lr_anchor if self._lr_anchor is not None else (iteration, 1.0)
        return lr_factor(iteration, total_iters=self.total_iters, schedule=o.schedule,
                         warmup_iters=o.warmup_iters if warmup else 0, warmup_factor=o.warmup_factor, steps=o.steps,
                         gamma=o.gamma, iters_per_epoch=self.iters_per_epoch, anchor_iter=anchor[0],
                         anchor_factor=anchor[1], decay_fraction=o.decay_fraction)

    def _lr(self) -> float:
        return self.cfg.optim.lr * self._lr_factor(self.iteration)

    def _epoch_length(self) -> int:
        return max(0, min(self.iters_per_epoch, self.total_iters - self.epoch * self.iters_per_epoch))

    def _run_epoch(self) -> None:
        cfg = self.cfg
        n_this = self._epoch_length()
        # the rest of the whole epoch: a re-plan may lengthen (or cut) this epoch while it runs
        batches = epoch_batches(len(self.train_set), cfg.data.batch_size, seed=cfg.train.seed, epoch=self.epoch,
                                rank=self.rank, world_size=self.world, start=self.epoch_iter,
                                stop=self.iters_per_epoch)
        loader = torch.utils.data.DataLoader(
            self.train_set, batch_sampler=batches, collate_fn=collate, num_workers=cfg.data.workers,
            generator=torch.Generator().manual_seed(mix_seed(cfg.train.seed, self.epoch, 2)))
        self._set_train_mode()
        t_epoch = self.clock()
        bar = tqdm(total=n_this, initial=self.epoch_iter, desc=f"epoch {self.epoch + 1}/{self.plan_epochs}",
                   unit="it", leave=True, disable=not (self.progress and self.main), dynamic_ncols=True)
        clip = cfg.optim.clip_grad_norm
        params = [p for p in self.module.parameters() if p.requires_grad]
        t_prev = self.clock()
        for images, targets in loader:
            lr = self._lr()
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                losses = self.step_module(images, targets)
            loss = sum(losses.values())
            if not bool(torch.isfinite(loss)):
                where = ", ".join(f"{t.image_id} ({t.file_name})" for t in targets)
                shown = {k: round(float(v.detach()), 4) for k, v in losses.items()}
                what = (f"non-finite loss at epoch {self.epoch + 1}, iteration {self.iteration}: {shown}; "
                        f"images {where}")
                self._nonfinite_run += 1
                # mixed precision: skip the step, as GradScaler does for float16 overflows -- unless it
                # keeps happening (then the run has diverged). Single process only: under DDP a rank
                # that skips its backward would leave the others waiting in the gradient all-reduce.
                if not (self.use_amp and self.world == 1) or self._nonfinite_run > MAX_SKIPPED_STEPS:
                    raise FloatingPointError(f"{what}. Lower optim.lr or check these annotations.")
                self.log(f"skipped the step: {what} (mixed precision; {self._nonfinite_run} in a row, "
                         f"the run stops after {MAX_SKIPPED_STEPS})")
                self.skipped_steps += 1
            else:
                self._nonfinite_run = 0
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(params, float(clip))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.ema is not None:
                    self.ema.update(self.module)
            # a skipped step still counts (as a GradScaler-skipped one does): the schedule, the time
            # budget and checkpoint_every move on; only its losses stay out of the averages
            self.iteration += 1
            self.epoch_iter += 1
            if self._nonfinite_run == 0:
                self._record_losses(losses, loss, lr)
            now = self.clock()
            if self._run_iters_seen > 0:  # the run's first iteration carries one-off costs
                for key in ("iter", "epoch_iter"):
                    self._time[f"{key}_seconds"] += now - t_prev
                    self._time[f"{key}_count"] += 1
            self._run_iters_seen += 1
            t_prev = now
            bar.update(1)
            bar.set_postfix_str(self._postfix(lr), refresh=False)
            if cfg.train.time_limit_min and self._time_check():
                n_this = self._epoch_length()
                bar.total = n_this
                bar.set_description_str(f"epoch {self.epoch + 1}/{self.plan_epochs}", refresh=False)
            if self.iteration >= self.total_iters or self.epoch_iter >= n_this:
                break
            if cfg.train.checkpoint_every and self.iteration % cfg.train.checkpoint_every == 0:
                self._running["epoch_seconds"] += self.clock() - t_epoch
                t_epoch = self.clock()
                self._save_last()
        bar.close()
        self._running["epoch_seconds"] += self.clock() - t_epoch

    def _record_losses(self, losses: dict[str, torch.Tensor], loss: torch.Tensor, lr: float) -> None:
        vals = torch.stack([v.detach().float() for v in losses.values()] + [loss.detach().float()])
        vals = dist.reduce_mean(vals).cpu().tolist()
        names = list(losses) + ["loss"]
        r = self._running
        for k, v in zip(names, vals):
            r["epoch_sums"][k] = r["epoch_sums"].get(k, 0.0) + v
            r["win_sums"][k] = r["win_sums"].get(k, 0.0) + v
        r["epoch_count"] += 1
        r["win_count"] += 1
        self._last_lr = lr
        if r["win_count"] >= self.cfg.train.log_every:
            self._flush_window(lr)

    def _flush_window(self, lr: float) -> None:
        r = self._running
        if r["win_count"]:
            self.iteration_log.append({"iteration": self.iteration, "lr": lr,
                                       "losses": {k: v / r["win_count"] for k, v in r["win_sums"].items()}})
        r["win_sums"], r["win_count"] = {}, 0

    def _postfix(self, lr: float) -> str:
        r = self._running
        n = max(1, r["epoch_count"])
        parts = [f"{k.removeprefix('loss_')} {v / n:.3f}" for k, v in r["epoch_sums"].items() if k != "loss"]
        return f"loss {r['epoch_sums'].get('loss', 0.0) / n:.3f} ({', '.join(parts)}) lr {lr:.3g}"

    # ---- time budget --------------------------------------------------------------------------
    def _sec_per_iter(self) -> float | None:
        """Recent seconds per iteration: the current epoch's timed iterations once there are
        ``PLAN_AFTER_ITERS`` of them (at an epoch end: the epoch just finished), else the previous
        epoch's, else the run's so far (``None`` before any iteration was timed)."""
        t = self._time
        if t["epoch_iter_count"] >= PLAN_AFTER_ITERS:
            return t["epoch_iter_seconds"] / t["epoch_iter_count"]
        if t["last_epoch_spi"] is not None:
            return float(t["last_epoch_spi"])
        return t["iter_seconds"] / t["iter_count"] if t["iter_count"] else None

    def _roll_epoch_speed(self) -> None:
        """At an epoch end: the finished epoch's speed becomes the previous epoch's; a new window starts."""
        t = self._time
        if t["epoch_iter_count"]:
            t["last_epoch_spi"] = t["epoch_iter_seconds"] / t["epoch_iter_count"]
        t["epoch_iter_seconds"], t["epoch_iter_count"] = 0.0, 0

    def _eval_seconds(self) -> float:
        """Seconds of one evaluation: the last measured one; before any, the predict time of one
        batch scaled to this process's share of the validation images, plus a quarter for scoring."""
        if self.val_set is None:
            return 0.0
        if self._time["eval_s"] is not None:
            return float(self._time["eval_s"])
        if self._eval_estimate is None:
            mine = math.ceil(len(self.val_set) / self.world)
            n = min(self.cfg.data.batch_size, len(self.val_set))
            images = [self.val_set[i][0] for i in range(n)]
            t = self.clock()
            self._eval_model().predict(images)
            dt = self.clock() - t
            self._set_train_mode()
            self._eval_estimate = 1.25 * dt * math.ceil(mine / n)
        return self._eval_estimate

    def _plan(self) -> None:
        """(Re-)plan the run into the budget from the recent speed (collective: rank 0's measurements
        decide for every process), re-anchor the cosine if the end moved, and say so."""
        budget = float(self.cfg.train.time_limit_min) * 60.0
        spi = self._sec_per_iter()
        plan = eval_s = None
        if spi is not None and spi > 0 and math.isfinite(spi):
            eval_s = self._eval_seconds()
            plan = plan_time_budget(budget, spent_s=self._spent(), epoch=self.epoch, done_iters=self.iteration,
                                    sec_per_iter=spi, eval_s=eval_s, save_s=float(self._time["save_s"]),
                                    iters_per_epoch=self.iters_per_epoch, eval_every=self.cfg.train.eval_every)
        plan, spi, eval_s = dist.all_gather_objects((plan, spi, eval_s))[0]
        if plan is None:
            return
        before = self.plan_epochs
        first = not self._planned
        if first or plan.total_iters != self.total_iters:
            # from here on the cosine decays from its current value to 0 at the new end: no LR jump
            self._lr_anchor = (self.iteration, self._lr_factor(self.iteration, warmup=False))
        changed = (plan.epochs, plan.total_iters) != (self.plan_epochs, self.total_iters)
        self.plan_epochs, self.total_iters = plan.epochs, plan.total_iters
        self._planned = True
        if changed or first:
            in_last = self.total_iters - (self.plan_epochs - 1) * self.iters_per_epoch
            last = (f"; the last epoch cut to {in_last} of {self.iters_per_epoch} iterations"
                    if in_last < self.iters_per_epoch else "")
            self.log(f"time budget: {before} epochs -> {self.plan_epochs} epochs ({spi:.3g} s/it measured{last})"
                     + (f"; {self.cfg.train.time_limit_min:g} min, evaluation ~{eval_s:.1f} s" if first else ""))
        if self.total_iters <= self.iteration:
            self.stopped_by_time_limit = True

    def _replan_due(self) -> bool:
        """A quarter-epoch re-plan point: every ``max(PLAN_AFTER_ITERS, ceil(iters_per_epoch / 4))``
        iterations into the epoch, not at its last iteration (the epoch end re-plans) and not once
        the planned end is reached. A function of the position only, so every process (and a
        resumed run) re-plans at the same iterations."""
        every = max(PLAN_AFTER_ITERS, math.ceil(self.iters_per_epoch / REPLANS_PER_EPOCH))
        return (self.epoch_iter % every == 0 and self.epoch_iter < self._epoch_length()
                and self.iteration < self.total_iters)

    def _time_check(self) -> bool:
        """Plan (once enough iterations are timed), re-plan at the quarter-epoch points, and guard the
        budget; True if the plan changed."""
        before = (self.plan_epochs, self.total_iters)
        if not self._planned:
            if self._time["iter_count"] >= PLAN_AFTER_ITERS:
                self._plan()
        elif self._replan_due():
            self._plan()
        spi = self._sec_per_iter()
        if spi is not None:
            eval_s = self._eval_seconds() if self._planned else 0.0
            stop = must_stop(float(self.cfg.train.time_limit_min) * 60.0, spent_s=self._spent(), sec_per_iter=spi,
                             eval_s=eval_s, save_s=float(self._time["save_s"]))
            if self.world > 1:
                stop = bool(dist.all_gather_objects(stop)[0])
            if stop and self.iteration < self.total_iters:
                self.total_iters = self.iteration
                self.plan_epochs = self.epoch + 1
                self.stopped_by_time_limit = True
                self.log(f"time limit {self.cfg.train.time_limit_min:g} min reached at iteration {self.iteration}: "
                         "stopping after the final evaluation")
        return (self.plan_epochs, self.total_iters) != before

    # ---- epoch end ---------------------------------------------------------------------------
    def _end_epoch(self) -> None:
        cfg = self.cfg
        t_end = self.clock()
        if cfg.train.time_limit_min and self._sec_per_iter() is not None and self.iteration < self.total_iters:
            self._plan()  # with the finished epoch's speed; the planned end, once reached, stays the end
        self._roll_epoch_speed()
        last = self.epoch + 1 >= self.plan_epochs or self.iteration >= self.total_iters
        if self.iteration >= self.total_iters:
            self.plan_epochs = self.epoch + 1
        self._flush_window(self._last_lr)
        report = None
        if cfg.train.eval_every > 0 and ((self.epoch + 1) % cfg.train.eval_every == 0 or last):
            t = self.clock()
            report = evaluate_model(self._eval_model(), self.val_set, task=self.task,
                                    batch_size=cfg.data.batch_size, progress=self.progress, workers=cfg.data.workers)
            self._time["eval_s"] = self.clock() - t
            self.last_report = report
        r = self._running
        n = max(1, r["epoch_count"])
        losses = {k: v / n for k, v in r["epoch_sums"].items() if k != "loss"}
        metrics = dict(report.metrics) if report is not None else {}
        row = {"epoch": self.epoch + 1, "iterations": self.iteration, "lr": self._last_lr,
               "losses": losses, "loss": r["epoch_sums"].get("loss", 0.0) / n, "metrics": metrics,
               "seconds": r["epoch_seconds"] + (self.clock() - t_end)}
        if cfg.train.time_limit_min:
            row["planned_epochs"] = self.plan_epochs
        self.history.append(row)
        t_save = self.clock()
        if self.main:
            if report is not None:
                self._update_best(report)
            elif cfg.train.eval_every == 0 and last:
                self.best = {"metric": None, "value": None, "epoch": self.epoch + 1}
                save_checkpoint(self.out / "best.pt", self._eval_model(), config=cfg.to_dict(),
                                categories=self.categories, **self._checkpoint_extra(self.epoch + 1))
            if self.progress:
                shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k == self.primary or
                                  k in ("miou", "bbox_AP", "segm_AP", "keypoints_AP"))
                self.log(f"epoch {self.epoch + 1}/{self.plan_epochs}: loss {row['loss']:.4f}  {shown}  "
                         f"({row['seconds']:.1f} s)")
        self.epoch += 1
        self.epoch_iter = 0
        self._running = self._fresh_running()
        self._save_last()
        if self.main:
            write_results_csv(self.out / "results.csv", self.history)
        self._time["save_s"] = self.clock() - t_save

    def _update_best(self, report: EvalReport) -> None:
        if self.primary not in report.metrics:
            raise ConfigError(f"train.primary_metric {self.primary!r} is not among the evaluation's metrics: "
                              f"{sorted(report.metrics)}")
        value = float(report.metrics[self.primary])
        value = value if math.isfinite(value) else -math.inf
        if self.best["value"] is None or value > self.best["value"]:
            self.best = {"metric": self.primary, "value": value, "epoch": self.epoch + 1}
            save_checkpoint(self.out / "best.pt", self._eval_model(), config=self.cfg.to_dict(),
                            categories=self.categories, metrics=dict(report.metrics),
                            **self._checkpoint_extra(self.epoch + 1))


def train(cfg: Config, **kwargs) -> TrainResult:
    """``Trainer(cfg, **kwargs).fit()``."""
    return Trainer(cfg, **kwargs).fit()


__all__ = ["TrainResult", "Trainer", "resolve_device", "train"]
