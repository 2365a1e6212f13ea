"""Shared by the accuracy benchmarks: draw the synthetic scenes once, train one model with a
wall-clock budget through :class:`~sceneparse.engine.trainer.Trainer`, and print the metric against
training time and against its target."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch


def synthetic_dataset(root: Path, images: int, val: int, size: int, seed: int,
                      thing_classes: tuple[str, ...] | None = None) -> None:
    """Draw ``images`` scenes of ``size`` px (``val`` of them held out) into ``root``, unless a dataset is
    there. ``thing_classes``: only these things (default: all of them)."""
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    meta = root / "dataset.yaml"
    if meta.is_file():
        import yaml

        info = yaml.safe_load(meta.read_text())
        held = ({k: v["num_images"] for k, v in info["splits"].items()}, list(info["image_size"]))
        wanted = ({"train": images - val, "val": val}, [size, size])
        if held != wanted:  # a figure must not come from another dataset than the one asked for
            raise SystemExit(f"{meta}: holds {held[0]} images of {held[1]} px, asked for {wanted[0]} of "
                             f"{wanted[1]} px; choose another --data folder (drawn if missing) or remove it")
        print(f"using the synthetic dataset in {root}")
        return
    things = {"thing_classes": tuple(thing_classes)} if thing_classes else {}
    write_dataset(root, SyntheticConfig(height=size, width=size, num_images=images, seed=seed,
                                        val_fraction=val / images, **things),
                  splits={"train": images - val, "val": val}, workers=2, progress=True)


def budget_config(name: str, root: Path, out: Path, *, size: int, batch: int, minutes: float, threads: int,
                  seed: int, optim: dict[str, Any], eval_every: int, model_kwargs: dict | None = None,
                  max_val_images: int | None = None, amp: bool = False, channels_last: bool = False,
                  cache: bool = False):
    from sceneparse.config import Config

    cfg = Config()
    cfg.model.name = name
    cfg.model.kwargs = {"min_size": size, "max_size": size, **(model_kwargs or {})}
    cfg.data.root = str(root)
    cfg.data.batch_size = batch
    cfg.data.max_val_images = max_val_images
    cfg.data.cache = cache  # decoded images in RAM, read once (inside the budget: setup counts)
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    cfg.train.out = str(out)
    cfg.train.epochs = 1000  # the time budget decides
    cfg.train.time_limit_min = minutes
    cfg.train.eval_every = eval_every
    cfg.train.threads = threads
    cfg.train.seed = seed
    cfg.train.exist_ok = True
    cfg.train.channels_last = channels_last
    cfg.train.amp = amp  # bfloat16 autocast on CPUs with AVX512-BF16 / AMX (float32 elsewhere, with a warning)
    return cfg


def train_and_report(cfg, metric: str, target: float, shown: tuple[str, ...]) -> dict:
    """Train ``cfg``; print ``shown`` metrics per evaluated epoch against elapsed minutes; PASS/FAIL."""
    from sceneparse.engine.trainer import Trainer

    name = cfg.model.name
    t0 = time.perf_counter()
    print(f"\n=== {name}: {cfg.train.time_limit_min:g} min budget, {torch.get_num_threads()} threads, "
          f"load {tuple(round(x, 1) for x in os.getloadavg())} ===", flush=True)
    res = Trainer(cfg).fit()
    print(f"\n{name}: {metric} against training time (minutes since start, end of epoch)")
    elapsed = 0.0
    curve = []
    for row in res.history:
        elapsed += row["seconds"]
        m = row.get("metrics") or {}
        if metric in m:
            curve.append((round(elapsed / 60, 2), m[metric]))
        print(f"  epoch {row['epoch']:3d}  iters {row['iterations']:6d}  {elapsed / 60:6.1f} min  "
              f"loss {row['loss']:.3f}  " + "  ".join(f"{k} {m[k]:.3f}" for k in shown if k in m), flush=True)
    value = float(res.metrics.get(metric, float("nan")))
    minutes = (time.perf_counter() - t0) / 60
    ok = value >= target
    print(f"{name}: {metric} {value:.3f} (target {target:.2f}: {'PASS' if ok else 'FAIL'}) after "
          f"{res.iterations} iterations / {res.epochs} epochs, {minutes:.1f} min", flush=True)
    return dict(model=name, metric=metric, value=value, target=target, passed=ok, minutes=minutes,
                epochs=res.epochs, iterations=res.iterations, curve=curve,
                metrics={k: v for k, v in res.metrics.items() if k in shown})


def print_summary(rows: list[dict]) -> None:
    print("\nsummary")
    for s in rows:
        print(f"  {s['model']:28s} {s['metric']:13s} {s['value']:.3f}  target {s['target']:.2f}  "
              f"{'PASS' if s['passed'] else 'FAIL'}  ({s['minutes']:.1f} min, {s['iterations']} it)")
