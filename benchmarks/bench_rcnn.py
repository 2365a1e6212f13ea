"""Accuracy on the embedded default: train Faster / Mask / Keypoint R-CNN (ResNet-18 FPN) on the
synthetic scenes with a wall-clock budget and report COCO AP on the held-out split.

Everything goes through the user path: ``sceneparse.data.synthetic`` draws the dataset (once, into
``--data``), :class:`~sceneparse.engine.trainer.Trainer` trains with ``train.time_limit_min`` (the
budget includes the evaluations), and the per-epoch evaluation is sceneparse's own COCO evaluation
(``evaluate_model``, identical to pycocotools). The table prints AP against training time, then the
final AP against the issue's targets (box AP >= 0.50, mask AP >= 0.45, keypoint AP >= 0.40 within
30 minutes each on 2 cores).

    python benchmarks/bench_rcnn.py                                   # 3 x 30 min, 2 threads
    python benchmarks/bench_rcnn.py --models fasterrcnn_resnet18_fpn --minutes 10
    python benchmarks/bench_rcnn.py --images 600 --size 256 --minutes 5 --out /tmp/bench_rcnn
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

TARGETS = {"fasterrcnn_resnet18_fpn": ("bbox_AP", 0.50), "maskrcnn_resnet18_fpn": ("segm_AP", 0.45),
           "keypointrcnn_resnet18_fpn": ("keypoints_AP", 0.40)}


def _dataset(root: Path, images: int, val: int, size: int, seed: int) -> None:
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    marker = root / "dataset.yaml"
    if marker.is_file():
        print(f"using the synthetic dataset in {root}")
        return
    write_dataset(root, SyntheticConfig(height=size, width=size, num_images=images, seed=seed,
                                        val_fraction=val / images),
                  splits={"train": images - val, "val": val}, workers=2, progress=True)


def _config(name: str, root: Path, out: Path, args):
    from sceneparse.config import Config

    cfg = Config()
    cfg.model.name = name
    cfg.model.kwargs = {"min_size": args.size, "max_size": args.size}
    cfg.data.root = str(root)
    cfg.data.batch_size = args.batch
    cfg.data.max_val_images = args.val_eval
    cfg.optim.name = "sgd"
    cfg.optim.lr = args.lr
    cfg.optim.warmup_iters = 100
    cfg.optim.schedule = "cosine"
    cfg.train.out = str(out)
    cfg.train.epochs = 1000  # the time budget decides
    cfg.train.time_limit_min = args.minutes
    cfg.train.eval_every = args.eval_every
    cfg.train.threads = args.threads
    cfg.train.seed = args.seed
    cfg.train.exist_ok = True
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(TARGETS))
    p.add_argument("--minutes", type=float, default=30.0, help="training budget per model (includes evaluations)")
    p.add_argument("--images", type=int, default=1200, help="synthetic images, train + val")
    p.add_argument("--val", type=int, default=200, help="held-out images")
    p.add_argument("--val-eval", type=int, default=None, help="evaluate on the first N held-out images per epoch")
    p.add_argument("--size", type=int, default=320, help="image size (drawn and trained at this size)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--eval-every", type=int, default=2, help="evaluate every N epochs (and at the end)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="runs/bench_rcnn/data", help="dataset folder (drawn if missing)")
    p.add_argument("--out", default="runs/bench_rcnn", help="run folders go here")
    args = p.parse_args(argv)

    from sceneparse.engine.trainer import Trainer

    torch.set_num_threads(args.threads)
    root, out = Path(args.data), Path(args.out)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cpus, load {os.getloadavg()}")
    _dataset(root, args.images, args.val, args.size, args.seed)
    summary = []
    for name in [m for m in args.models.split(",") if m]:
        t0 = time.perf_counter()
        print(f"\n=== {name}: {args.minutes:g} min budget ===", flush=True)
        res = Trainer(_config(name, root, out / name, args)).fit()
        metric, target = TARGETS.get(name, (res.primary_metric, float("nan")))
        print(f"\n{name}: AP against training time (seconds since start, end of epoch)")
        elapsed = 0.0
        for row in res.history:
            elapsed += row["seconds"]
            m = row.get("metrics") or {}
            shown = "  ".join(f"{k} {m[k]:.3f}" for k in ("bbox_AP", "segm_AP", "keypoints_AP", "bbox_AP50")
                              if k in m)
            print(f"  epoch {row['epoch']:3d}  iters {row['iterations']:6d}  {elapsed / 60:6.1f} min  "
                  f"loss {row['loss']:.3f}  {shown}")
        value = res.metrics.get(metric, float("nan"))
        ok = value >= target
        summary.append(dict(model=name, metric=metric, value=value, target=target, passed=ok,
                            minutes=(time.perf_counter() - t0) / 60, epochs=res.epochs, iterations=res.iterations,
                            metrics={k: v for k, v in res.metrics.items() if k.endswith(("_AP", "_AP50"))}))
        print(f"{name}: {metric} {value:.3f} (target {target:.2f}: {'PASS' if ok else 'FAIL'}) after "
              f"{res.iterations} iterations, {summary[-1]['minutes']:.1f} min", flush=True)
    print("\nsummary")
    for s in summary:
        print(f"  {s['model']:28s} {s['metric']:13s} {s['value']:.3f}  target {s['target']:.2f}  "
              f"{'PASS' if s['passed'] else 'FAIL'}  ({s['minutes']:.1f} min, {s['iterations']} it)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
