"""``sceneparse demo``: the whole path in one command, on the built-in synthetic scenes.

1. draw a synthetic dataset (things, stuff, crowds, persons with keypoints) in COCO layout;
2. train a small model on the CPU for a few minutes (``Trainer`` with a time budget);
3. predict the held-out split with the best checkpoint (``Predictor``), writing COCO results JSON
   and drawings;
4. score the results JSON against the held-out ground truth with ``sceneparse.evaluation`` (COCO
   AP, per-class AP, PR curves, confusion matrix, error breakdown; or mIoU for semantic models);
5. write a report folder whose ``index.html`` shows all of it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

EPILOG = """\
examples:
  sceneparse demo                                   # ~4 min on 2 CPU cores: runs/demo/index.html
  sceneparse demo --out runs/demo --minutes 10      # train longer
  sceneparse demo --model fasterrcnn_resnet18_fpn --images 600
  sceneparse demo --model unet --minutes 3          # semantic segmentation (mIoU)

the output folder holds:
  data/          the synthetic dataset (COCO layout; see 'sceneparse data synth --help')
  train/         the training run (best.pt, last.pt, results.csv, loss_curve.png, metrics.png)
  predict/       predictions.json (COCO results) or labels/*.png, and drawn images
  eval/          metrics.json, PR curves, confusion matrix, error breakdown
  index.html     the report
"""

#: model -> (training settings that work for a few CPU minutes)
_DEFAULT_OPTIM = {"detection": dict(name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, warmup_iters=20),
                  "semantic": dict(name="adamw", lr=3e-3, weight_decay=1e-4, warmup_iters=20)}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="synthesize scenes, train, predict, evaluate and write an HTML report",
        description="The main job on the embedded default: draw synthetic scenes, train a small model on the "
                    "CPU for a few minutes, predict the held-out images, evaluate with COCO AP (or mIoU) and "
                    "write a report folder with index.html.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--model", default="maskrcnn_resnet18_fpn",
                   help="model to train (default maskrcnn_resnet18_fpn; any zoo name, e.g. unet)")
    p.add_argument("--images", type=int, default=500, help="synthetic images, train + val (default 500)")
    p.add_argument("--val-images", type=int, default=100, help="of which held out for evaluation (default 100)")
    p.add_argument("--size", type=int, default=256, help="image size (default 256)")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget in minutes (default 4)")
    p.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--show", type=int, default=12, help="predicted images shown in the report (default 12)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _step(n: int, text: str) -> None:
    print(f"\n[{n}/5] {text}", flush=True)


def run(args) -> int:
    from ..config import Config
    from ..data.synthetic import SyntheticConfig, write_dataset
    from ..engine.predictor import Predictor
    from ..models.base import model_info
    from ..engine.trainer import Trainer
    from ..errors import ConfigError
    from ..models import zoo

    if args.model not in zoo.available():
        raise ConfigError(f"unknown model {args.model!r}; available: {', '.join(zoo.available())}")
    if not 0 < args.val_images < args.images:
        raise ConfigError(f"--val-images must lie in 1..{args.images - 1}, got {args.val_images}")
    if args.minutes <= 0:
        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    # 1. data -------------------------------------------------------------------------------------
    _step(1, f"synthetic scenes: {args.images} images of {args.size}x{args.size} -> {out / 'data'}")
    t = time.perf_counter()
    scfg = SyntheticConfig(height=args.size, width=args.size, num_images=args.images,
                           val_fraction=args.val_images / args.images, seed=args.seed)
    write_dataset(out / "data", scfg, splits={"train": args.images - args.val_images, "val": args.val_images},
                  progress=not args.quiet)
    timings["data"] = time.perf_counter() - t

    # 2. train ------------------------------------------------------------------------------------
    _step(2, f"training {args.model} for {args.minutes:g} min -> {out / 'train'}")
    t = time.perf_counter()
    probe = zoo.build(args.model, num_classes=1)
    info = model_info(probe)
    del probe
    if info.result not in ("instances", "semantic"):
        raise ConfigError(f"the demo runs models with instance or semantic results; {args.model} is a {info.task} model")
    task = "detection" if info.result == "instances" else "semantic"  # the demo's two pipelines
    cfg = Config()
    cfg.model.name = args.model
    cfg.model.kwargs = {"min_size": args.size, "max_size": args.size}
    cfg.data.root = str(out / "data")
    cfg.data.batch_size = args.batch
    for k, v in _DEFAULT_OPTIM[task].items():
        setattr(cfg.optim, k, v)
    cfg.optim.schedule = "cosine"
    cfg.train.out = str(out / "train")
    cfg.train.epochs = 100  # the time budget decides how many fit
    cfg.train.time_limit_min = float(args.minutes)
    cfg.train.eval_every = 1000  # evaluate once, at the end (the budget is small)
    cfg.train.seed = args.seed
    cfg.train.device = args.device
    result = Trainer(cfg, progress=not args.quiet).fit()
    timings["train"] = time.perf_counter() - t
    ckpt = result.best or result.last

    # 3. predict ----------------------------------------------------------------------------------
    val_images = out / "data" / "images" / "val"
    _step(3, f"predicting {args.val_images} held-out images with {ckpt}")
    t = time.perf_counter()
    pred_dir = out / "predict"
    if pred_dir.exists():
        shutil.rmtree(pred_dir)
    predictor = Predictor(str(ckpt), device=args.device, batch_size=args.batch)
    ann = out / "data" / "annotations" / "instances_val.json"
    summary = predictor.run(val_images, pred_dir, ann=ann if task == "detection" else None,
                            progress=not args.quiet)
    timings["predict"] = time.perf_counter() - t

    # 4. evaluate ---------------------------------------------------------------------------------
    _step(4, "evaluating the predictions against the held-out ground truth")
    t = time.perf_counter()
    eval_dir = out / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    if task == "detection":
        metrics, tables, figures = _evaluate_detection(ann, pred_dir / "predictions.json", eval_dir,
                                                       predictor.model)
    else:
        metrics, tables, figures = _evaluate_semantic(out / "data", pred_dir / "labels", eval_dir,
                                                      predictor.class_names)
    timings["evaluate"] = time.perf_counter() - t
    _write_json(eval_dir / "metrics.json", {"metrics": metrics, "per_class": tables.get("per class", [])})

    # 5. report -----------------------------------------------------------------------------------
    _step(5, f"report -> {out / 'index.html'}")
    timings["total"] = time.perf_counter() - t_start
    index = _report(out, args, task, result, summary, metrics, tables, figures, timings)
    print("\nheadline: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if _headline(k)))
    print(f"done in {timings['total'] / 60:.1f} min; open {index}")
    return 0


def _headline(name: str) -> bool:
    return name in ("bbox_AP", "bbox_AP50", "segm_AP", "keypoints_AP", "miou", "pixel_acc")


def _write_json(path: Path, obj) -> None:
    from ..fileio import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False, default=lambda o: None))


def _evaluate_detection(gt_json: Path, results_json: Path, eval_dir: Path, model):
    """COCO AP per result type, PR curves, confusion matrix and error breakdown of one results file;
    the ground truth and the results are read once (as ``sceneparse eval`` does)."""
    from ..evaluation import evaluate_coco
    from ..evaluation.confusion import confusion_from_columns
    from ..evaluation.errors import tide_from_columns
    from ..evaluation.validate import coco_columns, load_coco_gt, load_coco_results, results_for
    from ..models.base import model_info
    from ..viz.plots import plot_confusion_matrix, plot_error_breakdown, plot_pr_curves

    kinds = list(model_info(model).iou_types)
    if "keypoints" in kinds:
        gt_json = gt_json.with_name(gt_json.name.replace("instances_", "person_keypoints_"))
    gt, _ = load_coco_gt(gt_json)
    results, _ = load_coco_results(results_json)
    metrics: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    figures: list[tuple[str, str]] = []
    rel = lambda png: str(Path(png).relative_to(eval_dir.parent))  # noqa: E731
    for kind in kinds:
        res = evaluate_coco(gt, results_for(results, kind), kind)
        for stat, value in zip(res.stat_names, res.stats):
            metrics[f"{kind}_{stat}"] = float(value)
        for cat in res.per_category.values():
            per_class.setdefault(cat.name, {})[f"{kind}_AP"] = float(cat["AP"])
        png = plot_pr_curves(res, eval_dir / f"pr_{kind}.png", iou=0.5, title=f"{kind}: precision-recall at IoU 0.5")
        figures.append((rel(png), f"{kind} precision-recall curves (IoU 0.5)"))
    pair = coco_columns(gt, results, "bbox")
    png = plot_confusion_matrix(confusion_from_columns(pair, 0.5, 0.5), eval_dir / "confusion.png")
    figures.append((rel(png), "confusion matrix (IoU 0.5, score > 0.5)"))
    png = plot_error_breakdown(tide_from_columns(pair), eval_dir / "errors.png")
    figures.append((rel(png), "where box AP is lost (TIDE-style dAP)"))
    rows = [{"class": k, **v} for k, v in per_class.items()]
    return metrics, {"per class": rows}, figures


def _evaluate_semantic(data_root: Path, labels_dir: Path, eval_dir: Path, class_names):
    from ..evaluation.semantic import evaluate_label_folders
    from ..viz.plots import plot_class_iou

    res = evaluate_label_folders(data_root / "semantic" / "val", labels_dir, len(class_names),
                                 class_names=class_names)
    metrics = {"miou": float(res.miou), "pixel_acc": float(res.pixel_accuracy),
               "mean_acc": float(res.mean_class_accuracy), "fwiou": float(res.fwiou)}
    png = plot_class_iou(res, eval_dir / "class_iou.png")
    rows = [{"class": n, "iou": float(i), "acc": float(a)} for n, i, a in zip(class_names, res.iou, res.class_accuracy)]
    return metrics, {"per class": rows}, [(str(Path(png).relative_to(eval_dir.parent)), "IoU per class")]


def _report(out: Path, args, task, result, summary, metrics, tables, figures, timings) -> Path:
    from ..viz.report import Report

    r = Report(f"sceneparse demo: {args.model}")
    r.text(f"Trained {args.model} on {args.images - args.val_images} synthetic {args.size}x{args.size} images "
           f"for {result.epochs} epoch(s) / {result.iterations} iterations "
           f"({result.seconds / 60:.1f} min, budget {args.minutes:g} min), then predicted and evaluated "
           f"{args.val_images} held-out images.")
    r.code(f"sceneparse demo --out {args.out} --model {args.model} --images {args.images} "
           f"--val-images {args.val_images} --size {args.size} --minutes {args.minutes:g} --seed {args.seed}")
    r.table("held-out metrics" + (" (COCO)" if task == "detection" else ""),
            {k: v for k, v in metrics.items()})
    r.table("per class", tables.get("per class", []))
    run_dir = Path(result.out)
    plots = [(p, c) for p, c in (("loss_curve.png", "training loss"), ("metrics.png", "validation metrics"))
             if (run_dir / p).is_file()]
    if plots or figures:
        r.heading("curves")
        for p, c in plots:
            r.figure(os.path.relpath(run_dir / p, out), c)
        for p, c in figures:
            r.figure(p, c)
    drawn = sorted((out / "predict" / "images").glob("*"))[: args.show]
    r.gallery([os.path.relpath(p, out) for p in drawn], "predictions on held-out images")
    if summary.failures:
        r.table("images that could not be used", [f.to_dict() for f in summary.failures])
    r.table("wall time (s)", {k: round(v, 1) for k, v in timings.items()}, digits=1)
    return r.write(out)
