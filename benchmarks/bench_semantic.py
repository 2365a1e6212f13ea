"""Semantic segmentation: inference speed against torchvision, and a short training run on synthetic scenes.

(a) ``speed`` (default): for ``fcn_resnet50``, ``deeplabv3_resnet50``, ``deeplabv3_mobilenet_v3_large`` and
``lraspp_mobilenet_v3_large`` build torchvision's model with random weights, load its state dict into
sceneparse's model (the checkpoint path users take), check that the logits agree, then time the network
forward on the same batch, torchvision and sceneparse interleaved: minimum over ``--repeats`` of the wall
time and of the process CPU time (all threads; steadier on a shared machine). Like for like:
both in eval mode without the auxiliary head (torchvision runs its aux head in eval too, sceneparse never
does; ``--tv-aux`` times torchvision as users get it). ``ratio = sceneparse / torchvision`` (<= 1: not
slower).

    python benchmarks/bench_semantic.py                          # 1 x 3 x 320 x 320, 2 threads
    python benchmarks/bench_semantic.py --size 520 --repeats 5 --models deeplabv3_mobilenet_v3_large

(b) ``--train``: draws a small synthetic dataset (``sceneparse.data.synthetic``) to a temporary folder,
reads it back with ``read_coco`` + ``SceneDataset(load_semantic=True)``, trains U-Net and DeepLabV3
(ResNet-18, output stride 16) on the semantic maps with a minimal local loop (Adam, ``--iters`` steps,
batch ``--batch``), and reports the loss curve, seconds per step and validation mIoU
(``sceneparse.evaluation.semantic.SemanticEvaluator``). Kept short: the machine is shared.

    python benchmarks/bench_semantic.py --train --iters 150 --images 96 --image-size 128
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SPEED_MODELS = ("fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")


# ------------------------------------------------------------------------------------------ (a) speed
def _timed(fn, x) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call. CPU time (all threads) is the steadier
    measure on a shared machine: other processes stretch the wall time, not the work done."""
    t, c = time.perf_counter(), time.process_time()
    fn(x)
    return time.perf_counter() - t, time.process_time() - c


def bench_speed(models, size: int, batch: int, repeats: int, tv_aux: bool, num_classes: int = 21) -> list[dict]:
    from torchvision.models import segmentation as tvseg

    from sceneparse.models import zoo

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    rows = []
    for name in models:
        ctor = getattr(tvseg, name)
        kw = {"aux_loss": True} if "lraspp" not in name else {}
        tv = ctor(weights=None, weights_backbone=None, num_classes=num_classes, **kw).eval()
        ours = zoo.build(name, num_classes=num_classes, weights=tv.state_dict()).eval()
        if not tv_aux and getattr(tv, "aux_classifier", None) is not None:
            tv.aux_classifier = None  # like for like: sceneparse does not run the aux head in eval
        with torch.inference_mode():
            diff = (tv(x)["out"] - ours.segment(x)[0]).abs().max().item()  # also the warm-up run
            t_tv, t_ours = [], []
            for r in range(repeats):  # interleaved, alternating who goes first, against drift
                pair = [(t_tv, lambda z: tv(z)["out"]), (t_ours, lambda z: ours.segment(z)[0])]
                for times, fn in (pair if r % 2 == 0 else pair[::-1]):
                    times.append(_timed(fn, x))
        # minima: the least disturbed runs (other processes only ever add time)
        wall_tv, wall_ours = min(t[0] for t in t_tv), min(t[0] for t in t_ours)
        cpu_tv, cpu_ours = min(t[1] for t in t_tv), min(t[1] for t in t_ours)
        row = dict(model=name, torchvision_s=wall_tv, sceneparse_s=wall_ours, ratio=wall_ours / wall_tv,
                   torchvision_cpu_s=cpu_tv, sceneparse_cpu_s=cpu_ours, cpu_ratio=cpu_ours / cpu_tv,
                   max_abs_diff=diff)
        rows.append(row)
        print(f"{name:30s} wall: torchvision {wall_tv * 1e3:7.1f} ms  sceneparse {wall_ours * 1e3:7.1f} ms  ratio "
              f"{row['ratio']:.3f} | CPU: {cpu_tv * 1e3:7.1f} ms vs {cpu_ours * 1e3:7.1f} ms  ratio "
              f"{row['cpu_ratio']:.3f} | max|logit diff| {diff:.1e}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ (b) training
def _synthetic_sets(root: Path, images: int, size: int):
    from sceneparse.data.datasets import SceneDataset
    from sceneparse.data.formats.coco import read_coco
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    cfg = SyntheticConfig(height=size, width=size, num_images=images, val_fraction=0.25, seed=0)
    ds = write_dataset(root, cfg, workers=1, progress=False)
    out = {}
    for split, paths in ds.splits.items():
        aset = read_coco(paths.instances, paths.images)
        aset.semantic_root = paths.semantic
        out[split] = SceneDataset(aset, load_masks=False, load_keypoints=False, load_semantic=True)
    return out, cfg


def _train_one(name: str, model, train_ds, val_ds, iters: int, batch: int, lr: float) -> dict:
    from sceneparse.data.datasets import collate
    from sceneparse.evaluation.semantic import SemanticEvaluator

    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=batch, shuffle=True, collate_fn=collate,
                                         generator=gen, drop_last=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iters, pct_start=0.1)
    model.train()
    losses, step, t0 = [], 0, time.perf_counter()
    while step < iters:
        for images, targets in loader:
            loss = sum(model.training_losses(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if step % max(1, iters // 10) == 0:
                print(f"  {name} step {step:4d}/{iters}  loss {statistics.mean(losses[-10:]):.3f}", flush=True)
            if step >= iters:
                break
    train_s = time.perf_counter() - t0
    ev = SemanticEvaluator(model.num_classes, class_names=train_ds.class_names)
    t0 = time.perf_counter()
    for i in range(len(val_ds)):
        image, target = val_ds[i]
        ev.update(model.predict([image])[0], target.semantic.labels, image=target.image_id)
    res = ev.compute()
    return dict(model=name, params=sum(p.numel() for p in model.parameters()), steps=iters,
                s_per_step=train_s / iters, first_loss=statistics.mean(losses[:5]),
                last_loss=statistics.mean(losses[-5:]), val_miou=res.miou, val_pixel_acc=res.pixel_accuracy,
                val_images=len(val_ds), val_s=time.perf_counter() - t0, summary=res.summary())


def bench_train(iters: int, images: int, size: int, batch: int, lr: float) -> list[dict]:
    from sceneparse.models.preprocess import Preprocessor
    from sceneparse.models.segmentation import deeplabv3_resnet18, unet

    with tempfile.TemporaryDirectory(prefix="sceneparse_bench_semantic_") as tmp:
        t0 = time.perf_counter()
        sets, cfg = _synthetic_sets(Path(tmp) / "synth", images, size)
        train_ds, val_ds = sets["train"], sets["val"]
        nc = len(train_ds.class_names)
        print(f"synthetic scenes: {len(train_ds)} train / {len(val_ds)} val images of {size}x{size}, {nc} classes "
              f"(things + stuff), drawn and read in {time.perf_counter() - t0:.1f} s", flush=True)
        pre = lambda: Preprocessor(min_size=size, max_size=size, size_divisible=16)  # native resolution
        rows = []
        for name, build in (("unet (base 16)", lambda: unet(nc, base_channels=16, depth=4, preprocessor=pre())),
                            ("deeplabv3_resnet18 (os16)", lambda: deeplabv3_resnet18(nc, output_stride=16,
                                                                                     preprocessor=pre()))):
            torch.manual_seed(0)
            row = _train_one(name, build(), train_ds, val_ds, iters, batch, lr)
            rows.append(row)
            print(f"{row['model']:28s} {row['params'] / 1e6:5.2f} M params  {row['s_per_step']:.2f} s/step  loss "
                  f"{row['first_loss']:.3f} -> {row['last_loss']:.3f}  val mIoU {100 * row['val_miou']:.1f}  "
                  f"pixel acc {100 * row['val_pixel_acc']:.1f}", flush=True)
        return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", default=",".join(SPEED_MODELS))
    p.add_argument("--size", type=int, default=320, help="square input size for the speed test")
    p.add_argument("--batch", type=int, default=None, help="images per batch (speed: 1, train: 4)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tv-aux", action="store_true", help="time torchvision with its aux head (its eval default)")
    p.add_argument("--train", action="store_true", help="run (b), the short training run, instead of (a)")
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--show-classes", action="store_true", help="print the per-class table after training")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if args.train:
        rows = bench_train(args.iters, args.images, args.image_size, args.batch or 4, args.lr)
        if args.show_classes:
            for r in rows:
                print(f"\n{r['model']}\n{r['summary']}")
        return 0
    unknown = [m for m in args.models.split(",") if m not in SPEED_MODELS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {SPEED_MODELS}")
    rows = bench_speed(args.models.split(","), args.size, args.batch or 1, args.repeats, args.tv_aux)
    print(f"worst ratio: wall {max(r['ratio'] for r in rows):.3f}, CPU {max(r['cpu_ratio'] for r in rows):.3f} "
          f"(target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
