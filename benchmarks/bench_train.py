"""Training speed: wall time per iteration of ``Trainer`` on synthetic scenes, and where it goes.

Draws a synthetic dataset (``--size`` px, ``--images`` training images) into a temporary folder,
then trains each model for ``--iters`` iterations at batch ``--batch`` through the real training
path (``Trainer``: data loading in the main process, augmentation, forward, losses, backward,
gradient clipping, SGD step) without evaluation, and reports the per-iteration wall time: median
and minimum over the iterations after the first (the first pays one-off costs), and the median CPU
time of this process per iteration (all its threads; less sensitive to other processes on a shared
machine: with free cores, wall ~ cpu / threads). The machine load average is printed next to it: on
a shared machine the minimum is the least disturbed wall figure.

``--profile`` adds the top operators by self CPU time over ``--profile-iters`` training steps
(``torch.profiler``), for each model.

    python benchmarks/bench_train.py                                  # R-CNN R18 (320 px), U-Net at 256 px
    python benchmarks/bench_train.py --models unet --unet-size 520    # U-Net at its default input size
    python benchmarks/bench_train.py --threads 1 --iters 6 --profile
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

MODELS = ("fasterrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn", "unet")


def _dataset(root: Path, size: int, images: int) -> None:
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    write_dataset(root, SyntheticConfig(height=size, width=size, num_images=images + 1, seed=0),
                  splits={"train": images, "val": 1}, workers=1, progress=False, overwrite=True)


def _config(root: Path, out: Path, name: str, args):
    from sceneparse.config import load_config

    kwargs = f"{{min_size: {args.unet_size}, max_size: {args.unet_size}}}" if name == "unet" else "{}"
    return load_config(None, [f"data.root={root}", f"model.name={name}", f"model.kwargs={kwargs}",
                              f"train.out={out}", f"data.batch_size={args.batch}", "train.epochs=1",
                              f"train.max_iters_per_epoch={args.iters}", "train.eval_every=0",
                              f"train.threads={args.threads}", "optim.warmup_iters=0", "optim.lr=0.005"])


def time_model(name: str, root: Path, work: Path, args) -> tuple[list[float], list[float]]:
    """Wall and CPU (this process, all threads) seconds of each iteration."""
    from sceneparse.engine.trainer import Trainer

    stamps: list[tuple[float, float]] = []

    class Timed(Trainer):
        def _record_losses(self, *a):  # called once per iteration, right after the optimizer step
            stamps.append((time.perf_counter(), time.process_time()))
            super()._record_losses(*a)

        def _run_epoch(self):
            stamps.append((time.perf_counter(), time.process_time()))  # before the first batch is loaded
            super()._run_epoch()

    Timed(_config(root, work / name, name, args), progress=False).fit()
    pairs = list(zip(stamps[:-1], stamps[1:]))
    return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


def profile_model(name: str, root: Path, args) -> str:
    from torch.profiler import ProfilerActivity, profile

    from sceneparse.data.datasets import SceneDataset
    from sceneparse.data.layout import load_split
    from sceneparse.models.base import model_info
    from sceneparse.models import zoo

    kw = {"min_size": args.unet_size, "max_size": args.unet_size} if name == "unet" else {}
    probe = zoo.build(name, num_classes=1, **kw)
    info = model_info(probe)
    kind = info.data
    aset = load_split(root, "train", kind, things_only=kind == "instances")
    model = zoo.build(name, num_classes=len(aset.categories), **kw).train()
    ds = SceneDataset(aset, load_masks=info.has_masks, load_keypoints=info.num_keypoints > 0,
                      load_semantic=kind == "semantic")
    images, targets = zip(*[ds[i] for i in range(args.batch)])
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

    def step():
        loss = sum(model.training_losses(list(images), list(targets)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_iters):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--size", type=int, default=256, help="synthetic image size (default 256)")
    p.add_argument("--images", type=int, default=24, help="training images drawn (default 24)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iters", type=int, default=6, help="iterations timed per model (+1 warm-up)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--unet-size", type=int, default=256, help="U-Net input size (its default preprocessor: 520)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--profile-iters", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    args.iters += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        _dataset(root, args.size, args.images)
        print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.size}x{args.size} "
              f"synthetic images, {args.iters - 1} timed iterations; load average before: "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(f"{'model':<26} {'median s/it':>11} {'min s/it':>9} {'img/s':>6} {'cpu s/it':>9}   "
              "load average after")
        for name in args.models:
            wall, cpu = time_model(name, root, Path(tmp) / "runs", args)
            wall, cpu = wall[1:], cpu[1:]
            med = statistics.median(wall)
            print(f"{name:<26} {med:>11.3f} {min(wall):>9.3f} {args.batch / med:>6.1f} "
                  f"{statistics.median(cpu):>9.3f}   {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        if args.profile:
            for name in args.models:
                print(f"\n== {name}: top operators by self CPU time over {args.profile_iters} training steps ==")
                print(profile_model(name, root, args))


if __name__ == "__main__":
    main()
