"""Trainer: run folder and checkpoint contract, LR per iteration, EMA, best selection, repeatability,
resume from a mid-epoch checkpoint, the time budget (plan, re-plans, continuous LR, resume), and
clear errors."""
from __future__ import annotations

import copy
import csv
import json
import math
import shutil

import pytest
import torch

from engine_helpers import FRCNN, MASK, UNET, tiny_config
from sceneparse.data.layout import load_split
from sceneparse.engine import trainer as trainer_mod
from sceneparse.engine.checkpoint import load_checkpoint, model_from_checkpoint
from sceneparse.engine.evaluator import EvalReport, evaluate_model
from sceneparse.engine.hooks import HookBase
from sceneparse.engine.schedule import lr_factor
from sceneparse.engine.trainer import Trainer
from sceneparse.errors import CheckpointError, ConfigError, DataError


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_run_folder_checkpoints_csv_and_lr_per_iteration(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path / "run")
    res = Trainer(cfg, progress=False).fit()
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "loss_curve.png",
                                                     "metrics.png", "results.csv"]
    assert (res.task, res.epochs, res.iterations, res.primary_metric) == ("semantic", 2, 8, "miou")
    # results.csv: one row per epoch, the losses, the metrics, seconds
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert list(rows[0]) == ["epoch", "iterations", "lr", "loss_ce", "loss", "miou", "pixel_acc", "mean_acc",
                             "fwiou", "seconds"]
    assert [(r["epoch"], r["iterations"]) for r in rows] == [("1", "4"), ("2", "8")]
    assert float(rows[1]["miou"]) == pytest.approx(res.metrics["miou"], rel=1e-5)
    # LR: warm-up over 2 iterations then cosine to 0 at iteration 8, set before every step
    lrs = [e["lr"] for e in load_checkpoint(out / "last.pt")["iteration_log"]]
    expected = [0.02 * lr_factor(i, total_iters=8, warmup_iters=2, warmup_factor=0.001) for i in range(8)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(0.02 * 0.001) and float(rows[1]["lr"]) == pytest.approx(expected[-1], rel=1e-5)
    # last.pt holds the training state; both checkpoints rebuild the model (the colleagues' contract)
    last = load_checkpoint(out / "last.pt")
    assert (last["epoch"], last["epoch_iter"], last["iteration"], last["task"]) == (2, 0, 8, "semantic")
    assert {"optimizer", "scaler", "rng", "history", "plan", "config", "categories"} <= set(last)
    assert last["plan"] == {"epochs": 2, "total_iters": 8, "iters_per_epoch": 4, "lr_anchor": [0, 1.0]}
    loaded = model_from_checkpoint(out / "last.pt")
    assert loaded.task == "semantic" and loaded.class_names == load_split(synth, "val", "semantic").categories.names
    again = evaluate_model(loaded.model, load_split(synth, "val", "semantic"), progress=False)
    assert again.metrics == res.metrics  # the final evaluation was of exactly these weights
    best = model_from_checkpoint(out / "best.pt")
    assert load_checkpoint(out / "best.pt")["best"]["epoch"] == res.best_epoch
    assert best.config["model"]["kwargs"]["min_size"] == 64 and best.model.preprocessor.min_sizes == (64,)
    assert not list(out.glob(".*tmp"))


@pytest.mark.slow
def test_detector_with_ema_saves_and_evaluates_the_ema_weights(synth, tmp_path):
    cfg = tiny_config(synth, tmp_path / "run", "maskrcnn_resnet18_fpn", MASK, "train.epochs=1",
                      "train.max_iters_per_epoch=2", "train.ema=true", "train.ema_decay=0.5")
    res = Trainer(cfg, progress=False).fit()
    assert res.primary_metric == "segm_AP" and {"bbox_AP", "segm_AP50"} <= set(res.metrics)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["ema_updates"] == 2 and not _weights_equal(last["model"], last["train_model"])
    loaded = model_from_checkpoint(tmp_path / "run" / "best.pt")
    things = load_split(synth, "val", "instances", things_only=True)
    assert loaded.task == "instance" and [c["id"] for c in loaded.categories] == things.categories.ids
    assert len(loaded.categories) == 7  # the stuff categories of instances_*.json are not detected
    assert _weights_equal(load_checkpoint(tmp_path / "run" / "best.pt")["model"], last["model"])
    again = evaluate_model(loaded.model, things, progress=False)
    assert again.metrics == res.metrics


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(synth, tmp_path):
    args = ("train.epochs=1", "train.max_iters_per_epoch=2", "train.eval_every=0", "data.scale_jitter=[0.8,1.25]")
    runs = {}
    # "b" loads and augments its images in 2 worker processes: per-sample seeds make that irrelevant
    for name, seed, workers in (("a", 0, 0), ("b", 0, 2), ("c", 1, 0)):
        cfg = tiny_config(synth, tmp_path / name, "fasterrcnn_resnet18_fpn", FRCNN, *args, f"train.seed={seed}",
                          f"data.workers={workers}")
        Trainer(cfg, progress=False).fit()
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")["model"]
    assert _weights_equal(runs["a"], runs["b"])
    assert not _weights_equal(runs["a"], runs["c"])


@pytest.mark.slow
def test_data_cache_trains_the_same_weights_and_reports_every_unreadable_image(synth, tmp_path, monkeypatch):
    args = ("train.epochs=1", "train.max_iters_per_epoch=3", "train.eval_every=1", "data.scale_jitter=[0.8,1.25]")
    runs, reports = {}, {}
    for name, cache in (("disk", False), ("ram", True)):
        trainer = Trainer(tiny_config(synth, tmp_path / name, "unet", None, *args, f"data.cache={cache}"), progress=False)
        reports[name] = trainer.fit().metrics
        runs[name] = load_checkpoint(tmp_path / name / "last.pt")["model"]
        assert trainer.train_set.dataset.cache is cache and trainer.val_set.cache is cache
        if cache:  # every training image held (uint8 pixels and label maps), read before the first step
            assert trainer.train_set.dataset.cache_bytes == 8 * 64 * 64 * 4
    assert _weights_equal(runs["disk"], runs["ram"]) and reports["disk"] == reports["ram"]
    # unreadable training images: all of them named before training starts
    broken = tmp_path / "broken"
    shutil.copytree(synth, broken)
    names = sorted(p.name for p in (broken / "images" / "train").iterdir())
    (broken / "images" / "train" / names[1]).write_bytes(b"no image")
    (broken / "semantic" / "train" / (names[5].rsplit(".", 1)[0] + ".png")).write_bytes(b"\x89PNG broken")
    cfg = tiny_config(broken, tmp_path / "b", "unet", None, *args, "data.cache=true")
    with pytest.raises(DataError, match=rf"(?s)data.cache: 2 of 8 training images could not be read.*{names[1]}.*"
                                        rf"unreadable image.*semantic/train/{names[5][:-4]}.png: image 6: file_name: unreadable"):
        Trainer(cfg, progress=False).fit()
    assert not (tmp_path / "b" / "last.pt").exists()
    # more than half the available memory: a warning and the disk
    monkeypatch.setattr(trainer_mod, "available_memory", lambda: 2 * 8 * 64 * 64 * 4 - 2)
    with pytest.warns(UserWarning, match="need about .* reading them from disk"):
        trainer = Trainer(tiny_config(synth, tmp_path / "small", "unet", None, *args, "data.cache=true"), progress=False)
        trainer.fit()
    assert trainer.train_set.dataset.cache is False
    with pytest.raises(ConfigError, match="data.cache: expected true/false, got 2"):
        tiny_config(synth, tmp_path / "c", "unet", None, "data.cache=2")
    cfg = tiny_config(synth, tmp_path / "c", "unet")
    cfg.data.cache = "yes"  # set in code: checked by the trainer
    with pytest.raises(ConfigError, match="data.cache: must be true or false"):
        Trainer(cfg, progress=False).fit()


@pytest.mark.slow
def test_resume_from_a_mid_epoch_checkpoint_continues_exactly(synth, tmp_path, monkeypatch):
    """R-CNN (random proposal sampling), EMA, flips: an uninterrupted run, and a run resumed from the
    checkpoint its first run wrote after iteration 3 of 4, end with bit-identical weights."""
    snap = tmp_path / "snapshot"
    save = Trainer.save_last

    def save_and_snapshot(self):
        save(self)
        if self.epoch_iter and not snap.exists():
            snap.mkdir()
            shutil.copy(self.out / "last.pt", snap / "last.pt")

    monkeypatch.setattr(Trainer, "save_last", save_and_snapshot)
    args = ("train.checkpoint_every=3", "train.ema=true", "train.ema_decay=0.9", "data.hflip=0.5")
    full = Trainer(tiny_config(synth, tmp_path / "full", "fasterrcnn_resnet18_fpn", FRCNN, *args), progress=False).fit()
    monkeypatch.setattr(Trainer, "save_last", save)
    mid = load_checkpoint(snap / "last.pt")
    assert (mid["epoch"], mid["epoch_iter"], mid["iteration"]) == (0, 3, 3)
    resumed = Trainer(tiny_config(synth, tmp_path / "other", "fasterrcnn_resnet18_fpn", FRCNN, *args),
                      resume=snap / "last.pt", progress=False).fit()
    assert resumed.out == snap and resumed.iterations == full.iterations == 8
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(snap / "last.pt")
    assert _weights_equal(a["model"], b["model"]) and _weights_equal(a["train_model"], b["train_model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])  # same losses and metrics, epoch by epoch
    assert a["iteration_log"] == b["iteration_log"]
    with pytest.raises(ConfigError, match="nothing to resume"):
        Trainer(tiny_config(synth, tmp_path / "x"), resume=snap / "last.pt", progress=False).fit()
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        Trainer(tiny_config(synth, tmp_path / "x"), resume=tmp_path / "full" / "best.pt", progress=False).fit()


@pytest.mark.slow
def test_best_checkpoint_follows_the_primary_metric(synth, tmp_path, monkeypatch):
    scripted = iter([{"miou": 0.2, "pixel_acc": 0.9}, {"miou": 0.5, "pixel_acc": 0.1},
                     {"miou": 0.4, "pixel_acc": 0.3}] * 2)
    seen = []

    def fake_evaluate(model, dataset, **kw):
        seen.append(copy.deepcopy(model.state_dict()))
        return EvalReport("semantic", dict(next(scripted)))

    monkeypatch.setattr(trainer_mod, "evaluate_model", fake_evaluate)
    res = Trainer(tiny_config(synth, tmp_path / "a", "unet", None, "train.epochs=3"), progress=False).fit()
    best = load_checkpoint(tmp_path / "a" / "best.pt")
    assert (res.best_epoch, res.best_value, best["best"]["epoch"], best["metrics"]["miou"]) == (2, 0.5, 2, 0.5)
    assert _weights_equal(best["model"], seen[1]) and not _weights_equal(best["model"], seen[2])
    assert [float(r["miou"]) for r in csv.DictReader(open(tmp_path / "a" / "results.csv"))] == [0.2, 0.5, 0.4]
    res = Trainer(tiny_config(synth, tmp_path / "b", "unet", None, "train.epochs=3",
                              "train.primary_metric=pixel_acc"), progress=False).fit()
    assert (res.best_epoch, res.best_value) == (1, 0.9)
    monkeypatch.setattr(trainer_mod, "evaluate_model", lambda *a, **k: EvalReport("semantic", {"miou": 0.1}))
    with pytest.raises(ConfigError, match="'bbox_AP' is not among the evaluation's metrics: \\['miou'\\]"):
        Trainer(tiny_config(synth, tmp_path / "c", "unet", None, "train.primary_metric=bbox_AP"), progress=False).fit()


class _FakeClock:
    """Time = the sum of ``seconds(k)`` over the iterations k = 1, 2, ... the trainer has done:
    evaluations, saves and everything else take no time, which makes the budget arithmetic exact.
    ``start``: the iteration a resumed run starts from (its clock reads 0 there; the checkpoint
    carries the time spent before)."""

    def __init__(self, seconds=lambda k: 2.0, start: int = 0):
        self.trainer, self.seconds, self.start = None, seconds, start

    def _at(self, n: int) -> float:
        return sum(self.seconds(k) for k in range(1, n + 1))

    def __call__(self) -> float:
        n = self.trainer.iteration if self.trainer is not None else 0
        return self._at(max(n, self.start)) - self._at(self.start)


def _fit_on_clock(cfg, clock: _FakeClock, **kwargs):
    """``Trainer(cfg).fit()`` on ``clock``; returns (result, trainer, messages it logged)."""
    t = Trainer(cfg, progress=False, clock=clock, **kwargs)
    clock.trainer = t
    said = []
    t.log = said.append
    return t.fit(), t, said


def _lrs(run) -> list[float]:
    return [e["lr"] for e in load_checkpoint(run / "last.pt")["iteration_log"]]


def _cosine(i: int, a: int, f: float, total: int) -> float:
    """The re-anchored cosine written out: ``f`` at iteration ``a`` on along the cosine to 0 at ``total``."""
    theta0 = math.acos(2 * f - 1)
    return 0.5 * (1 + math.cos(theta0 + (math.pi - theta0) * (i - a) / (total - a)))


@pytest.mark.slow
def test_time_limit_sets_the_epochs_and_the_lr_schedule_follows(synth, tmp_path):
    clock = _FakeClock()
    cfg = tiny_config(synth, tmp_path / "run", "unet", None, "train.time_limit_min=1", "train.epochs=2")
    res, _, said = _fit_on_clock(cfg, clock)
    # planned after 1 + 3 iterations (8 s spent): 2 s/iteration, free evaluations and saves on this
    # clock, 4 iterations/epoch: E epochs cost 8 E - 8 <= 60 - 8 -> 7 whole epochs (56 s), and the
    # last 4 s buy 2 iterations of an 8th: 30 iterations, 60 s; the steady speed keeps the plan
    # through every re-plan
    assert (res.epochs, res.iterations, res.seconds, res.stopped_by_time_limit) == (8, 30, 60.0, False)
    assert [m for m in said if "->" in m] == [  # one plan, no changes
        "time budget: 2 epochs -> 8 epochs (2 s/it measured; the last epoch cut to 2 of 4 iterations); "
        "1 min, evaluation ~0.0 s"]
    # LR: warm-up with the cosine held at 1 until the plan (train.epochs is only a placeholder with a
    # budget), then the cosine from 1 at iteration 4 to 0 at iteration 30
    before = [0.02 * 0.001, 0.02 * 0.5005, 0.02, 0.02]
    after = [0.02 * _cosine(i, 4, 1.0, 30) for i in range(4, 30)]
    assert _lrs(tmp_path / "run") == pytest.approx(before + after, rel=1e-12)
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    assert [r["planned_epochs"] for r in rows] == ["8"] * 8
    # a budget shorter than one epoch: stop when one more iteration would not fit (6 s: after 3)
    res2, _, _ = _fit_on_clock(tiny_config(synth, tmp_path / "short", "unet", None, "train.time_limit_min=0.1"),
                               _FakeClock())
    assert (res2.epochs, res2.iterations, res2.stopped_by_time_limit) == (1, 3, True)
    assert res2.metrics  # the final evaluation ran


def _slow_then_fast(k: int) -> float:
    return 4.0 if k <= 8 else 1.0  # e.g. other processes on the machine for the first two epochs


@pytest.mark.slow
def test_time_limit_extends_the_run_when_the_machine_gets_faster(synth, tmp_path):
    """4 s/iteration for 8 iterations, then 1 s; 60 s budget, 4 iterations/epoch, free evaluations.
    The first plan (after iteration 4, 16 s spent) fits 11 more iterations: 3 epochs and 3 of 4
    iterations of a 4th; a plan that is never extended would end after 60 s with 15 iterations. The
    quarter-epoch re-plan at iteration 11 measures 1 s/iteration in epoch 3 (35 s spent):
    4 E - 11 <= 25 -> 9 epochs, 36 iterations, exactly 60 s (nothing left for a cut 10th)."""
    cfg = tiny_config(synth, tmp_path / "run", "unet", None, "train.time_limit_min=1")
    res, t, said = _fit_on_clock(cfg, _FakeClock(_slow_then_fast))
    assert (res.epochs, res.iterations, res.stopped_by_time_limit) == (9, 36, False)
    assert res.seconds == 60.0  # within the budget, and no whole epoch of it left
    assert [m for m in said if "->" in m] == [
        "time budget: 2 epochs -> 4 epochs (4 s/it measured; the last epoch cut to 3 of 4 iterations); "
        "1 min, evaluation ~0.0 s",
        "time budget: 4 epochs -> 9 epochs (1 s/it measured)"]
    assert [r["planned_epochs"] for r in res.history] == [4, 4, 9, 9, 9, 9, 9, 9, 9]
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    assert [int(r["planned_epochs"]) for r in rows] == [4, 4, 9, 9, 9, 9, 9, 9, 9]
    # the LR is continuous: the cosine re-anchored at iteration 11 decays from its value there
    # (on the 15-iteration plan) to 0 at iteration 36 instead of jumping up to the 9-epoch cosine
    f11 = _cosine(11, 4, 1.0, 15)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["plan"]["lr_anchor"] == [11, f11]
    lrs = _lrs(tmp_path / "run")
    expected = ([0.02 * 0.001, 0.02 * 0.5005, 0.02, 0.02] + [0.02 * _cosine(i, 4, 1.0, 15) for i in range(4, 11)]
                + [0.02 * _cosine(i, 11, f11, 36) for i in range(11, 36)])
    assert lrs == pytest.approx(expected, rel=1e-12)
    after_warmup = lrs[2:]
    assert all(b <= a for a, b in zip(after_warmup, after_warmup[1:]))  # no upward jump anywhere
    # the last step, written out: one 25th of the remaining phase before pi
    theta11 = math.acos(2 * f11 - 1)
    assert lrs[-1] == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi - (math.pi - theta11) / 25)), rel=1e-12)
    assert t.learning_rate() == 0.0  # the schedule is at its end value (0) where the run ended


@pytest.mark.slow
def test_time_limit_extends_at_epoch_ends(synth, tmp_path):
    """3 iterations/epoch: the quarter-epoch points fall on epoch ends, so only epoch-end re-plans
    run. 4 s/iteration for 6 iterations, then 1 s; the first plan at the end of epoch 1 (12 s
    spent) fits 5 epochs; epoch 3 is measured at 1 s/iteration (27 s spent at its end):
    3 E - 9 <= 33 -> 14 epochs, 42 iterations, 60 s."""
    cfg = tiny_config(synth, tmp_path / "run", "unet", None, "train.time_limit_min=1", "train.max_iters_per_epoch=3")
    res, _, said = _fit_on_clock(cfg, _FakeClock(lambda k: 4.0 if k <= 6 else 1.0))
    assert (res.epochs, res.iterations, res.seconds, res.stopped_by_time_limit) == (14, 42, 60.0, False)
    assert [r["planned_epochs"] for r in res.history] == [5, 5] + [14] * 12
    assert "time budget: 5 epochs -> 14 epochs (1 s/it measured)" in said
    lrs = _lrs(tmp_path / "run")
    f9 = _cosine(9, 3, 1.0, 15)  # first plan at iteration 3 (end of epoch 1), re-anchored at 9
    assert lrs[3:] == pytest.approx([0.02 * _cosine(i, 3, 1.0, 15) for i in range(3, 9)]
                                    + [0.02 * _cosine(i, 9, f9, 42) for i in range(9, 42)], rel=1e-12)


@pytest.mark.slow
def test_time_limit_shortens_the_run_when_the_machine_gets_slower(synth, tmp_path):
    """1 s/iteration for 8 iterations, then 3 s; 60 s budget. The first plan fits 15 epochs; the
    re-plan at iteration 11 (17 s spent, 3 s/iteration) cuts it to 14 more iterations (43 s / 3):
    6 epochs and 1 iteration of a 7th, which end at 8 + 17 * 3 = 59 s: the re-plan, not the
    per-iteration guard, ends the run, with the cosine annealed to its end."""
    cfg = tiny_config(synth, tmp_path / "run", "unet", None, "train.time_limit_min=1")
    res, t, said = _fit_on_clock(cfg, _FakeClock(lambda k: 1.0 if k <= 8 else 3.0))
    assert (res.epochs, res.iterations, res.seconds, res.stopped_by_time_limit) == (7, 25, 59.0, False)
    assert [r["planned_epochs"] for r in res.history] == [15, 15, 7, 7, 7, 7, 7]
    assert "time budget: 15 epochs -> 7 epochs (3 s/it measured; the last epoch cut to 1 of 4 iterations)" in said
    lrs = _lrs(tmp_path / "run")
    f11 = _cosine(11, 4, 1.0, 60)
    assert lrs[11:] == pytest.approx([0.02 * _cosine(i, 11, f11, 25) for i in range(11, 25)], rel=1e-12)
    assert lrs[10] == pytest.approx(0.02 * _cosine(10, 4, 1.0, 60), rel=1e-12)
    assert all(b <= a for a, b in zip(lrs[2:], lrs[3:])) and t.learning_rate() == 0.0


@pytest.mark.slow
def test_resume_after_a_replan_continues_exactly(synth, tmp_path, monkeypatch):
    """The run of the speed-up test, with a checkpoint every 2 iterations: resumed from the one
    written at iteration 14 (after the re-plan at 11), it ends with the weights, losses, LRs and
    plans of the uninterrupted run; the cosine anchor comes from the checkpoint."""
    snap = tmp_path / "snapshot"
    save = Trainer.save_last

    def save_and_snapshot(self):
        save(self)
        if self.iteration == 14 and not snap.exists():
            snap.mkdir()
            shutil.copy(self.out / "last.pt", snap / "last.pt")

    monkeypatch.setattr(Trainer, "save_last", save_and_snapshot)
    args = ("train.time_limit_min=1", "train.checkpoint_every=2", "train.ema=true", "train.ema_decay=0.9",
            "data.hflip=0.5")
    full, _, _ = _fit_on_clock(tiny_config(synth, tmp_path / "full", "unet", None, *args),
                               _FakeClock(_slow_then_fast))
    monkeypatch.setattr(Trainer, "save_last", save)
    mid = load_checkpoint(snap / "last.pt")
    assert (mid["epoch"], mid["epoch_iter"], mid["iteration"]) == (3, 2, 14)
    assert mid["plan"]["epochs"] == 9 and mid["plan"]["lr_anchor"][0] == 11
    resumed, _, _ = _fit_on_clock(tiny_config(synth, tmp_path / "other", "unet", None, *args),
                                  _FakeClock(_slow_then_fast, start=14), resume=snap / "last.pt")
    assert (full.epochs, full.iterations, full.seconds) == (9, 36, 60.0)
    assert (resumed.epochs, resumed.iterations, resumed.seconds) == (9, 36, 60.0)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(snap / "last.pt")
    assert _weights_equal(a["model"], b["model"]) and _weights_equal(a["train_model"], b["train_model"])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])  # same losses, metrics and planned epochs
    assert a["iteration_log"] == b["iteration_log"]  # same LR at every iteration
    assert a["plan"] == b["plan"]


@pytest.mark.slow
def test_time_limit_on_the_wall_clock(synth, tmp_path):
    limit_min = 0.1  # 6 s
    cfg = tiny_config(synth, tmp_path / "run", "unet", None, f"train.time_limit_min={limit_min}", "train.epochs=1")
    res = Trainer(cfg, progress=False).fit()
    assert res.epochs > 1  # the budget, not train.epochs, set the length
    # 3 s past the budget at most: the last iteration and last.pt (1.5 s was once exceeded by 0.01 s
    # on a 2-core machine running three other training processes)
    assert 0.5 * 60 * limit_min < res.seconds < 60 * limit_min + 3.0


def test_data_that_does_not_fit_the_model_is_a_clear_error(synth, tmp_path):
    no_kp = tmp_path / "no_keypoints"
    shutil.copytree(synth, no_kp)
    (no_kp / "annotations" / "person_keypoints_train.json").unlink()
    with pytest.raises(DataError, match=r"(?s)keypointrcnn_resnet18_fpn \(pose\) trains on person keypoints.*"
                                        r"person_keypoints_train.json not found"):
        Trainer(tiny_config(no_kp, tmp_path / "r", "keypointrcnn_resnet18_fpn", FRCNN), progress=False).fit()
    data = json.loads((no_kp / "annotations" / "instances_train.json").read_text())
    for a in data["annotations"]:
        a.pop("segmentation", None)
    (no_kp / "annotations" / "instances_train.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="has a mask head but no annotation has a segmentation"):
        Trainer(tiny_config(no_kp, tmp_path / "r", "maskrcnn_resnet18_fpn", MASK), progress=False).fit()
    shutil.rmtree(no_kp / "semantic" / "val")
    with pytest.raises(DataError, match=r"(?s)is evaluated on label PNGs.*semantic/val not found"):
        Trainer(tiny_config(no_kp, tmp_path / "r", "unet"), progress=False).fit()
    with pytest.raises(ConfigError, match="not accepted by unet"):
        Trainer(tiny_config(synth, tmp_path / "r", "unet", {"widht": 3}), progress=False).fit()
    with pytest.raises(ConfigError, match="model.kwargs.num_classes"):
        Trainer(tiny_config(synth, tmp_path / "r", "unet", {"num_classes": 3}), progress=False).fit()
    with pytest.raises(ConfigError, match="train.epochs: must be >= 1"):
        Trainer(tiny_config(synth, tmp_path / "r", "unet", None, "train.epochs=0"), progress=False).fit()
    Trainer(tiny_config(synth, tmp_path / "done", "unet", None, "train.epochs=1", "train.eval_every=0",
                        "train.max_iters_per_epoch=1"), progress=False).fit()
    with pytest.raises(ConfigError, match="already holds a training run"):
        Trainer(tiny_config(synth, tmp_path / "done", "unet"), progress=False).fit()


def test_amp_on_cpu_is_bfloat16_where_native_else_a_warning_and_a_nan_loss_names_the_images(synth, tmp_path,
                                                                                             monkeypatch):
    args = ("train.epochs=1", "train.max_iters_per_epoch=1", "train.eval_every=0")
    seen = []
    real_autocast = torch.autocast

    def spy(*a, **kw):
        seen.append((kw.get("device_type"), kw.get("dtype"), kw.get("enabled")))
        return real_autocast(*a, **kw)

    monkeypatch.setattr(trainer_mod.torch, "autocast", spy)
    monkeypatch.setattr(trainer_mod, "cpu_has_fast_bfloat16", lambda: True)
    tr = Trainer(tiny_config(synth, tmp_path / "bf", "unet", None, "train.amp=true", *args), progress=False)
    res = tr.fit()
    assert tr.use_amp and tr.amp_dtype == torch.bfloat16 and not tr.scaler.is_enabled()
    assert seen == [("cpu", torch.bfloat16, True)] and math.isfinite(res.history[-1]["loss"])
    monkeypatch.setattr(trainer_mod, "cpu_has_fast_bfloat16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no fast mixed precision on this cpu .* training in float32"):
        res = Trainer(tiny_config(synth, tmp_path / "a", "unet", None, "train.amp=true", *args), progress=False).fit()
    assert seen[-1] == ("cpu", torch.float32, False)
    assert res.best == tmp_path / "a" / "best.pt"  # without evaluation best.pt holds the final weights
    nan = lambda self, images, targets: {"loss_ce": torch.tensor(float("nan"), requires_grad=True)}  # noqa: E731
    monkeypatch.setattr(trainer_mod._LossStep, "forward", nan)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 1, iteration 0: \{'loss_ce': nan\}; "
                                                 r"images \d+ \(.*\.jpg\)"):
        Trainer(tiny_config(synth, tmp_path / "b", "unet", None, *args), progress=False).fit()


def test_amp_skips_a_non_finite_step_and_stops_when_it_keeps_happening(synth, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "cpu_has_fast_bfloat16", lambda: True)
    real = trainer_mod._LossStep.forward
    calls = {"n": 0, "bad": {2}}

    def flaky(self, images, targets):
        calls["n"] += 1
        out = real(self, images, targets)
        return {k: v * float("nan") for k, v in out.items()} if calls["n"] in calls["bad"] else out

    monkeypatch.setattr(trainer_mod._LossStep, "forward", flaky)
    args = ("train.epochs=1", "train.max_iters_per_epoch=3", "train.eval_every=0", "train.amp=true")
    tr = Trainer(tiny_config(synth, tmp_path / "a", "unet", None, *args), progress=False)
    res = tr.fit()
    assert tr.skipped_steps == 1 and res.iterations == 3 and math.isfinite(res.history[-1]["loss"])
    calls.update(n=0, bad={2, 3})
    monkeypatch.setattr(trainer_mod, "MAX_SKIPPED_STEPS", 1)
    with pytest.raises(FloatingPointError, match="non-finite loss at epoch 1, iteration 2"):
        Trainer(tiny_config(synth, tmp_path / "b", "unet", None, *args), progress=False).fit()


def test_semantic_class_weights_from_the_config(synth, tmp_path):
    """``model.kwargs.class_weights`` (e.g. median-frequency weights) reach the model; a list of the
    wrong length is refused naming the class count."""
    from sceneparse.data.synthetic import synth_category_map

    n = len(synth_category_map().names)
    weights = [round(0.5 + 0.1 * i, 2) for i in range(n)]
    args = ("train.epochs=1", "train.max_iters_per_epoch=1", "train.eval_every=0")
    tr = Trainer(tiny_config(synth, tmp_path / "w", "unet", {**UNET, "class_weights": weights}, *args), progress=False)
    tr.fit()
    assert tr.module.class_weights.tolist() == pytest.approx(weights)
    with pytest.raises(ValueError, match=f"class_weights must have {n} entries, got \\(3,\\)"):
        Trainer(tiny_config(synth, tmp_path / "x", "unet", {**UNET, "class_weights": [1, 2, 3]}, *args),
                progress=False).fit()


@pytest.mark.slow
def test_channels_last_trains_the_same_model(synth, tmp_path):
    """``train.channels_last`` keeps the conv weights in NHWC order through training and changes
    nothing but the layout: same losses and weights as the NCHW run (up to summation order)."""
    args = ("train.epochs=1", "train.max_iters_per_epoch=2", "train.eval_every=0")
    runs = {}
    for cl in (False, True):
        tr = Trainer(tiny_config(synth, tmp_path / str(cl), "unet", UNET, *args, f"train.channels_last={cl}"),
                     progress=False)
        tr.fit()
        convs = [m.weight for m in tr.module.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
        assert all(w.is_contiguous(memory_format=torch.channels_last) == cl for w in convs)
        runs[cl] = load_checkpoint(tmp_path / str(cl) / "last.pt")["model"]
    assert runs[True].keys() == runs[False].keys()
    for k in runs[False]:
        torch.testing.assert_close(runs[True][k], runs[False][k], rtol=1e-4, atol=1e-5, msg=k)


class _Recorder(HookBase):
    """Records every calling point with the trainer's (epoch, epoch_iter, iteration) there."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def _see(self, point: str, **more) -> None:
        t = self.trainer
        self.calls.append((self.name, point, t.epoch, t.epoch_iter, t.iteration, more))

    def before_train(self):
        self._see("before_train")

    def before_epoch(self):
        self._see("before_epoch")

    def before_step(self):
        self._see("before_step")

    def after_step(self):
        t = self.trainer
        self._see("after_step", lr=t.lr == t.learning_rate(t.iteration - 1), losses=sorted(t.losses))

    def after_epoch(self):
        t = self.trainer
        self._see("after_epoch", metrics="miou" in t.history[-1]["metrics"], finished=t.finished)

    def after_train(self):
        self._see("after_train")

    def state_dict(self):
        return {f"recorder_{self.name}": len(self.calls)}  # one key per hook: the trainer refuses a clash


def test_a_hook_from_python_is_called_at_every_point_with_the_iteration_numbers(synth, tmp_path):
    calls: list = []
    args = ("train.max_iters_per_epoch=3", "train.log_every=2")
    trainer = Trainer(tiny_config(synth, tmp_path / "run", "unet", None, *args), progress=False,
                      hooks=[_Recorder("a", calls)])
    trainer.register_hooks([_Recorder("b", calls)])
    with pytest.raises(TypeError, match="must subclass sceneparse.engine.hooks.HookBase"):
        trainer.register_hooks([object()])
    res = trainer.fit()
    assert [type(h).__name__ for h in trainer.hooks] == ["EvalHook", "RunLogger", "_Recorder", "_Recorder",
                                                         "Checkpointer"]
    assert [c[0] for c in calls] == ["a", "b"] * (len(calls) // 2)  # each point: a, then b
    seen = [c[1:] for c in calls if c[0] == "a"]
    step = {"lr": True, "losses": ["loss", "loss_ce"]}
    expected = [("before_train", 0, 0, 0, {}), ("before_epoch", 0, 0, 0, {})]
    for e in range(2):
        for i in range(3):  # before_step: the 0-based index of the step; after_step counts it
            expected += [("before_step", e, i, 3 * e + i, {}), ("after_step", e, i + 1, 3 * e + i + 1, step)]
        # after_epoch: epochs completed, the epoch's row with its evaluation
        expected.append(("after_epoch", e + 1, 0, 3 * e + 3, {"metrics": True, "finished": e == 1}))
        expected.append(("before_epoch", 1, 0, 3, {}) if e == 0 else ("after_train", 2, 0, 6, {}))
    assert seen == expected
    assert (res.epochs, res.iterations) == (2, 6)
    # a hook's state_dict goes into last.pt (written after the hooks' after_epoch)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (last["recorder_a"], last["recorder_b"]) == (len(calls) - 2, len(calls) - 2)
    with pytest.raises(RuntimeError, match="register hooks before fit"):
        trainer.register_hooks([_Recorder("c", calls)])


class _StopAt(HookBase):
    """Records the epoch's mean loss x 10 as a metric; stops the run after ``iteration`` (in
    after_step) or after epoch ``epoch`` (in after_epoch)."""

    def __init__(self, iteration: int | None = None, epoch: int | None = None):
        self.iteration, self.epoch, self.refused = iteration, epoch, None

    def after_step(self):
        t = self.trainer
        try:
            t.put_metrics({"x": 1.0})
        except RuntimeError as e:
            self.refused = str(e)
        if t.iteration == self.iteration:
            t.stop("enough")

    def after_epoch(self):
        t = self.trainer
        t.put_metrics({"loss_x10": 10 * t.history[-1]["loss"]})
        if t.epoch == self.epoch:
            t.stop()


def test_a_hook_can_stop_training_early_and_record_metrics(synth, tmp_path):
    # stopped inside epoch 2 (after iteration 5 of 4 x 3): that epoch is the last, evaluated, saved
    hook = _StopAt(iteration=5)
    res = Trainer(tiny_config(synth, tmp_path / "a", "unet", None, "train.epochs=3"), progress=False,
                  hooks=[hook]).fit()
    assert (res.epochs, res.iterations) == (2, 5) and "call it from after_epoch" in hook.refused
    assert [r["iterations"] for r in res.history] == [4, 5]
    assert {"miou", "loss_x10"} <= set(res.metrics) and res.metrics["loss_x10"] == 10 * res.history[-1]["loss"]
    rows = list(csv.DictReader(open(tmp_path / "a" / "results.csv")))
    assert [float(r["loss_x10"]) for r in rows] == pytest.approx([10 * r["loss"] for r in res.history], rel=1e-5)
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    assert (last["epoch"], last["iteration"], last["plan"]["total_iters"]) == (2, 5, 5)
    assert (tmp_path / "a" / "best.pt").is_file() and res.best_epoch is not None
    with pytest.raises(ConfigError, match="nothing to resume"):
        Trainer(tiny_config(synth, tmp_path / "a"), resume=True, progress=False).fit()
    # stopped from after_epoch: the run ends with that epoch
    res = Trainer(tiny_config(synth, tmp_path / "b", "unet", None, "train.epochs=3", "train.eval_every=0"),
                  progress=False, hooks=[_StopAt(epoch=1)]).fit()
    assert (res.epochs, res.iterations, list(res.metrics)) == (1, 4, ["loss_x10"])
    assert load_checkpoint(tmp_path / "b" / "last.pt")["plan"]["total_iters"] == 4
