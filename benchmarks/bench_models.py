"""R-CNN inference speed against torchvision, same weights, at 800 px; and where sceneparse spends its time.

For each model (``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, ``keypointrcnn_resnet50_fpn``,
``fasterrcnn_mobilenet_v3_large_fpn``): build torchvision's model with random weights (BatchNorm
statistics and biases randomised, the box classifier sharpened so that there are detections to
segment / locate keypoints in), load its state dict into sceneparse's model through the zoo (the path
users take), check that both give the same detections, then time the full ``images -> results``
call (preprocess, network, postprocess incl. mask pasting) on the same images, torchvision and
sceneparse interleaved. ``ratio = sceneparse / torchvision`` from the minima (the least disturbed runs
on a shared machine); <= 1 means sceneparse is not slower.

``--profile`` adds, for sceneparse, the time per stage (forward hooks on backbone, FPN, RPN, RoI
heads; the box post-processing and the result conversion timed around their calls) and the top
operators by self CPU time from ``torch.profiler``.

    python benchmarks/bench_models.py                               # 1 image 800 x 1067, 3 repeats, 2 threads
    python benchmarks/bench_models.py --models maskrcnn_resnet50_fpn --repeats 5 --profile
    python benchmarks/bench_models.py --models keypointrcnn_resnet50_fpn --detections-per-img 20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))

MODELS = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn",
          "fasterrcnn_mobilenet_v3_large_fpn")
CLS_GAIN = {"fasterrcnn_mobilenet_v3_large_fpn": 100.0}


def _pair(name: str, detections_per_img: int):
    from rcnn_helpers import sceneparse_kwargs, torchvision_model  # the tests' reference builders

    from sceneparse.models import zoo

    kw = dict(box_detections_per_img=detections_per_img)
    tv = torchvision_model(name, seed=0, cls_gain=CLS_GAIN.get(name, 1.0), **kw)
    ours = zoo.build(name, weights=tv.state_dict(), norm="bn", **sceneparse_kwargs(kw)).eval()
    return tv, ours


def _stage_times(model, images, runs: int = 1) -> dict[str, float]:
    """Seconds per stage of ``model.predict(images)`` (mean over ``runs``)."""
    times: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    for name in ("backbone", "neck", "rpn", "roi_box", "roi_mask", "roi_keypoint"):
        mod = getattr(model, name, None)
        if mod is None:
            continue
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda m, a, o, n=name: times.__setitem__(n, times[n] + time.perf_counter() - starts[n])))
    detect, post = model.roi_box.detect, model.postprocess

    def timed(key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            times[key] += time.perf_counter() - t
            return out
        return wrapper

    model.roi_box.detect = timed("box postprocess (decode, NMS)", detect)
    model.postprocess = timed("results (rescale, paste masks, decode keypoints)", post)
    try:
        t0 = time.perf_counter()
        for _ in range(runs):
            model.predict(images)
        total = (time.perf_counter() - t0) / runs
    finally:
        del model.roi_box.detect, model.postprocess
        for h in handles:
            h.remove()
    out = {k: v / runs for k, v in times.items()}
    out["total"] = total
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1067)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--detections-per-img", type=int, default=100,
                    help="box_detections_per_img of both models (the keypoint head costs ~7 GFLOP per detection)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.height, args.width, generator=g) for _ in range(args.images)]
    images = [im.to(args.device) for im in images]
    print(f"{args.images} image(s) {args.height}x{args.width}, {args.threads} threads, device {args.device}, "
          f"torch {torch.__version__}")
    print(f"{'model':36s} {'dets':>5s} {'max|dbox|':>9s} {'tv min':>8s} {'ours min':>8s} {'tv med':>8s} "
          f"{'ours med':>8s} {'ratio':>6s}")
    for name in args.models:
        tv, ours = _pair(name, args.detections_per_img)
        tv.to(args.device), ours.to(args.device)
        with torch.inference_mode():
            ref, got = tv(images), ours.predict(images)  # also the warm-up
            n = sum(len(o) for o in got)
            same = all(len(r["boxes"]) == len(o) for r, o in zip(ref, got))
            diff = max(((r["boxes"].sort(0).values - o.boxes.sort(0).values).abs().max().item() if len(o) else 0.0)
                       for r, o in zip(ref, got)) if same else float("nan")
            t_tv, t_ours = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                tv(images)
                t_tv.append(time.perf_counter() - t)
                t = time.perf_counter()
                ours.predict(images)
                t_ours.append(time.perf_counter() - t)
        ratio = min(t_ours) / min(t_tv)
        print(f"{name:36s} {n:5d} {diff:9.2e} {min(t_tv):8.3f} {min(t_ours):8.3f} {statistics.median(t_tv):8.3f} "
              f"{statistics.median(t_ours):8.3f} {ratio:6.2f}")
        if args.profile:
            with torch.inference_mode():
                stages = _stage_times(ours, images)
                total = stages.pop("total")
                print(f"  sceneparse stages (one run, {total:.3f} s):")
                for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
                    print(f"    {k:50s} {v:7.3f} s  {100 * v / total:5.1f} %")
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    ours.predict(images)
                print("  top operators by self CPU time:")
                for line in prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8).splitlines():
                    print("    " + line)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
