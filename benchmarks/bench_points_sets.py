"""Detection as points and as sets (issue 27): CenterNet, CornerNet and a small DETR trained on the
synthetic scenes with a wall-clock budget, box AP on the held-out split, and inference time per
image beside Faster R-CNN R18 at the same input size; DETR-R50 against transformers' DETR on the
same weights.

Everything goes through the user path: ``sceneparse.data.synthetic`` draws the dataset (once, into
``--data``), :class:`~sceneparse.engine.trainer.Trainer` trains with ``train.time_limit_min`` (the
budget includes the evaluations and the setup), and the evaluation is sceneparse's COCO evaluation
(identical to pycocotools). Targets (30 minutes each on 2 cores): CenterNet-R18 >= 0.50,
CornerNet-small >= 0.35, small DETR >= 0.30 box AP.

    python benchmarks/bench_points_sets.py                                 # 3 x 30 min + speed
    python benchmarks/bench_points_sets.py --models centernet_resnet18 --minutes 10
    python benchmarks/bench_points_sets.py --models '' --speed-only        # inference figures only
    python benchmarks/bench_points_sets.py --models '' --detr-speed        # DETR-R50 vs transformers

Each model's recipe (optimizer, learning rate, batch, model arguments) is in ``RECIPES`` with the
reason for it; ``--minutes``/``--batch``/``--lr`` override the recipe for all models.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

#: model -> (metric, target)
TARGETS = {"centernet_resnet18_fpn": ("bbox_AP", 0.50), "centernet_resnet18": ("bbox_AP", 0.50), "cornernet_small": ("bbox_AP", 0.35),
           "detr_resnet18": ("bbox_AP", 0.30)}

#: per model: optimizer settings, batch and model arguments. The papers train with Adam / AdamW:
#: CenterNet Adam 5e-4 at batch 128 (ResNet), CornerNet Adam 2.5e-4 at batch 49, DETR AdamW 1e-4 (trunk
#: 1e-5) with gradient clipping at 0.1. Here every trunk starts from random weights (no ImageNet weights
#: offline), so the trunk gets the head's learning rate, and the rates are the largest that stayed stable
#: in short trials at these batch sizes.
RECIPES: dict[str, dict] = {
    "centernet_resnet18": dict(optim=dict(name="adamw", lr=1e-3, momentum=0.9, weight_decay=1e-4, warmup_iters=100,
                                          schedule="wsd", clip_grad_norm=10.0),
                               batch=8, model_kwargs={}, trunk_init=True),
    # the FPN-trunk variant: trunk + pyramid start from the shipped Mask R-CNN's (TRUNK_SOURCE), heads random
    "centernet_resnet18_fpn": dict(optim=dict(name="adamw", lr=1e-3, momentum=0.9, weight_decay=1e-4, warmup_iters=100,
                                              schedule="wsd", clip_grad_norm=10.0),
                                   batch=8, model_kwargs={}, trunk_init=True),
    "cornernet_small": dict(optim=dict(name="adamw", lr=5e-4, momentum=0.9, weight_decay=1e-4, warmup_iters=100,
                                       schedule="wsd", clip_grad_norm=10.0),
                            batch=8, model_kwargs={}),
    # H-DETR's one-to-many branch (extra queries matched to each object k times, no NMS needed at test: only
    # the one-to-one queries predict) gives the decoder many positives per step; DETR's own clip 0.1
    "detr_resnet18": dict(optim=dict(name="adamw", lr=2e-4, momentum=0.9, weight_decay=1e-4, warmup_iters=200,
                                     schedule="wsd", clip_grad_norm=0.1),
                          batch=8, model_kwargs={"one_to_many_queries": 300, "one_to_many_k": 6,
                                                 "num_queries": 50}, trunk_init=True),
}

#: where the ResNet-18 trunks start (``--scratch``: random). The papers start from ImageNet weights, which
#: cannot be downloaded here; the analogue is sceneparse's own pretrained trunk: the stem and stages 1-3 of
#: the demo's shipped Mask R-CNN (trained on 3,000 synthetic scenes of data seed 1000; this benchmark draws
#: seed 0, so no held-out scene was seen), and its FPN for the FPN-trunk models. Stage 4 (absent from that
#: model) starts random.
TRUNK_SOURCE = "maskrcnn_resnet18_fpn_synthetic.pt"


def trunk_init_file(out: Path) -> Path:
    """A checkpoint holding only ``backbone.trunk.*`` and ``neck.*`` (its FPN) of :data:`TRUNK_SOURCE` (the trainer loads
    ``model.weights`` non-strictly and logs how many tensors it took)."""
    from sceneparse import __version__
    from sceneparse.cli.demo_cmd import read_shipped_weights

    state, meta = read_shipped_weights(TRUNK_SOURCE)
    trunk = {k: v for k, v in state.items() if k.startswith(("backbone.trunk.", "neck."))}
    path = out / "trunk_init.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"sceneparse_version": __version__, "model": trunk,
                "meta": {"what": f"backbone.trunk of {TRUNK_SOURCE}: {meta.get('what', '')}"}}, path)
    print(f"trunks start from {path}: {len(trunk)} tensors of {TRUNK_SOURCE} (stem + stages 1-3, FPN)")
    return path


def _median_seconds(fn, images, repeat: int) -> float:
    times = []
    with torch.inference_mode():
        fn(images[:1])  # warm-up (oneDNN primitive creation)
        for _ in range(repeat):
            for im in images:
                t0 = time.perf_counter()
                fn([im])
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inference_speed(checkpoints: dict[str, Path], data: Path, size: int, n: int = 10, repeat: int = 2) -> list[dict]:
    """Seconds per image (median, batch 1, the threads set by the caller) of each trained model on ``n``
    held-out scenes, beside Faster R-CNN R18 FPN (random weights, its proposals fixed at 1,000) at the same
    input size."""
    from sceneparse.data.images import read_image
    from sceneparse.engine.checkpoint import model_from_checkpoint
    from sceneparse.models import zoo

    files = sorted((data / "images" / "val").glob("*"))[:n]
    images = [read_image(f) for f in files]
    rows = []
    models = {name: model_from_checkpoint(p).model for name, p in checkpoints.items()}
    ref = zoo.build("fasterrcnn_resnet18_fpn", num_classes=7, min_size=size, max_size=size).eval()
    models["fasterrcnn_resnet18_fpn (random weights)"] = ref
    for name, m in models.items():
        s = _median_seconds(lambda ims, m=m: m.predict(ims), images, repeat)
        rows.append(dict(model=name, seconds_per_image=s))
        print(f"  {name:42s} {1000 * s:7.1f} ms / image ({size} px)", flush=True)
    return rows


def detr_speed(n_images: int = 4, repeat: int = 3) -> dict:
    """DETR-R50 (800 / 1333 px) forward + post-processing: sceneparse vs transformers'
    ``DetrForObjectDetection`` with the same random weights (loaded from its state dict) on the same
    photo-sized images; each with its own preprocessing (DetrImageProcessor vs sceneparse's)."""
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor

    from sceneparse.models import zoo

    torch.manual_seed(0)
    hf = DetrForObjectDetection(DetrConfig(use_pretrained_backbone=False, dropout=0.0)).eval()
    path = Path("runs/bench_points_sets/hf_detr_r50.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(hf.state_dict(), path)
    ours = zoo.build("detr_resnet50", weights=path).eval()
    g = torch.Generator().manual_seed(0)
    sizes = [(480, 640), (750, 1000), (427, 640), (640, 480)][:n_images]
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    proc = DetrImageProcessor()

    def ref(ims):
        inputs = proc(images=ims, do_rescale=False, return_tensors="pt")
        out = hf(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        return proc.post_process_object_detection(out, threshold=0.5, target_sizes=[im.shape[-2:] for im in ims])

    t_ref = _median_seconds(ref, images, repeat)
    t_ours = _median_seconds(lambda ims: ours.predict(ims, conf=0.5), images, repeat)
    t_ref2 = _median_seconds(ref, images, repeat)  # again: the order must not favour one side
    t_ref = min(t_ref, t_ref2)
    print(f"  DETR-R50 per image: sceneparse {1000 * t_ours:.0f} ms, transformers {1000 * t_ref:.0f} ms, "
          f"ratio {t_ours / t_ref:.2f}x (target <= 1.0x)", flush=True)
    return dict(sceneparse_s=t_ours, transformers_s=t_ref, ratio=t_ours / t_ref)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(TARGETS))
    p.add_argument("--minutes", type=float, default=30.0, help="training budget per model (includes evaluations)")
    p.add_argument("--images", type=int, default=1200, help="synthetic images, train + val")
    p.add_argument("--val", type=int, default=200, help="held-out images")
    p.add_argument("--size", type=int, default=320, help="image size (drawn and trained at this size)")
    p.add_argument("--batch", type=int, default=None, help="override the recipes' batch size")
    p.add_argument("--lr", type=float, default=None, help="override the recipes' learning rate")
    p.add_argument("--model-kwargs", default="{}", help="JSON of extra model arguments for every model")
    p.add_argument("--eval-every", type=int, default=2, help="evaluate every N epochs (and at the end)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="runs/bench_rcnn/data", help="dataset folder (drawn if missing; shared with "
                   "bench_rcnn.py, so the figures compare)")
    p.add_argument("--out", default="runs/bench_points_sets", help="run folders go here")
    p.add_argument("--scratch", action="store_true", help="ResNet trunks from random weights (default: "
                   "TRUNK_SOURCE's trunk)")
    p.add_argument("--speed-only", action="store_true", help="no training: time the best.pt found under --out")
    p.add_argument("--detr-speed", action="store_true", help="also DETR-R50 vs transformers (test-only reference)")
    args = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _budget import budget_config, print_summary, synthetic_dataset, train_and_report

    torch.set_num_threads(args.threads)
    root, out = Path(args.data), Path(args.out)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cpus, "
          f"load {tuple(round(x, 1) for x in os.getloadavg())}")
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in TARGETS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from {tuple(TARGETS)}")
    synthetic_dataset(root, args.images, args.val, args.size, args.seed)
    summary = []
    if not args.speed_only:
        for name in models:
            metric, target = TARGETS[name]
            recipe = RECIPES[name]
            optim = dict(recipe["optim"], **({"lr": args.lr} if args.lr else {}))
            cfg = budget_config(name, root, out / name, size=args.size, batch=args.batch or recipe["batch"],
                                minutes=args.minutes, threads=args.threads, seed=args.seed, optim=optim,
                                eval_every=args.eval_every,
                                model_kwargs={**recipe["model_kwargs"], **json.loads(args.model_kwargs)})
            if recipe.get("trunk_init") and not args.scratch:
                cfg.model.weights = str(trunk_init_file(out))
            summary.append(train_and_report(cfg, metric, target, ("bbox_AP", "bbox_AP50", "bbox_AP75")))
        print_summary(summary)
    report: dict = {"training": summary}
    found = {m: out / m / "best.pt" for m in models if (out / m / "best.pt").is_file()}
    if found:
        print(f"\ninference, batch 1, {args.threads} threads (median over held-out scenes)")
        report["inference"] = inference_speed(found, root, args.size)
    if args.detr_speed:
        print(f"\nDETR-R50 vs transformers, {args.threads} threads")
        report["detr_r50_vs_transformers"] = detr_speed()
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
