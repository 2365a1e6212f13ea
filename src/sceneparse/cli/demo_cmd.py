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
    cfg.train.log_every = 1  # the report's loss curve: every step of a short run
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
    """COCO AP per result type, PR curves, precision / recall / F1, confusion matrix and error breakdown
    of one results file, for the classes the model predicts (see :mod:`.demo_report`)."""
    from ..models.base import model_info
    from .demo_report import evaluate_detection

    return evaluate_detection(gt_json, results_json, eval_dir, model_info(model))


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
    """``out/index.html``: the report a person reads (see :mod:`.demo_report`)."""
    from .demo_report import write_report

    return write_report(out, args, task, result, summary, metrics, tables, figures, timings)
