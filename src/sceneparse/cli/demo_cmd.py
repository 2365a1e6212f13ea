"""``sceneparse demo``: the whole path in one command, on the built-in synthetic scenes.

1. draw a synthetic dataset (things, stuff, crowds, persons with keypoints) in COCO layout;
2. train a small model for a fixed number of iterations (the model's :class:`Recipe`: settings chosen
   to give a working model in a few minutes on 2 CPU cores);
3. predict the held-out split with the trained weights (``Predictor``), writing COCO results JSON
   and drawings;
4. score the results JSON against the held-out ground truth with ``sceneparse.evaluation`` (COCO
   AP, per-class AP, PR curves, confusion matrix, error breakdown; or mIoU for semantic models);
5. write a report folder whose ``index.html`` shows all of it.

The run is planned by iterations, not by the clock: a busy machine takes longer but trains as much
(``--minutes`` gives a time budget instead). The estimate printed up front is the recipe's on an
idle 2-core CPU; one progress bar covers the whole job.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

EPILOG = """\
examples:
  sceneparse demo                                   # Mask R-CNN, ~7 min on 2 idle CPU cores: runs/demo/index.html
  sceneparse demo --model unet                      # semantic segmentation (mIoU), ~2.5 min
  sceneparse demo --scratch                         # the same recipe from random weights (learns little)
  sceneparse demo --iterations 3000                 # train longer than the recipe
  sceneparse demo --iterations 20 --images 24 --val-images 6   # a quick smoke run (a model that learned little)
  sceneparse demo --model fasterrcnn_resnet18_fpn --minutes 10 # a time budget instead of iterations

the output folder holds:
  data/          the synthetic dataset (COCO layout; see 'sceneparse data synth --help')
  train/         the training run (best.pt, last.pt, results.csv, loss_curve.png)
  predict/       predictions.json (COCO results) or labels/*.png, and drawn images
  eval/          metrics.json, PR curves, confusion matrix, error breakdown
  index.html     the report
"""


@dataclass(frozen=True)
class Recipe:
    """How the demo trains one model: the scenes, the input size, the schedule and the model settings
    chosen so that a few CPU minutes give a working model (each flag of ``sceneparse demo`` overrides
    its part). ``sec_per_iter`` and ``sec_other`` (drawing, setup, prediction, evaluation, report) are
    the seconds they took on an idle 2-core CPU (the estimate printed up front; benchmarks/bench_demo.py)."""

    summary: str  #: one line for the terminal and the report: what was chosen, and why it trains fast
    iterations: int
    images: int = 500
    val_images: int = 100
    size: int = 256
    batch: int = 4
    optim: Mapping[str, Any] = field(default_factory=dict)  #: ``optim.*`` settings
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)  #: on top of ``min_size = max_size = size``
    scenes: Mapping[str, Any] = field(default_factory=dict)  #: :class:`SyntheticConfig` settings
    data: Mapping[str, Any] = field(default_factory=dict)  #: ``data.*`` settings
    class_weights: bool = False  #: median-frequency class weights from the training label maps (semantic)
    sec_per_iter: float = 1.0
    sec_other: float = 60.0
    #: a file of :data:`WEIGHTS_DIR` the model starts from (``--scratch``: random weights instead)
    init_weights: str | None = None


#: weights that sceneparse trained itself on its synthetic scenes and ships with the package (how each
#: file was made is stored in it, ``meta``; ``python benchmarks/make_demo_weights.py`` makes them)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


#: recipes of the demo's models (others get the generic one of their task, ``_GENERIC``). Both start
#: from weights that sceneparse trained on synthetic scenes of another data seed (shipped in
#: :data:`WEIGHTS_DIR`; ``benchmarks/make_demo_weights.py`` makes them) and fine-tune them on the
#: demo's own scenes; ``--scratch`` trains the same recipe from random weights (a model that learns
#: little in these minutes: ~0.01 box AP from scratch after 300 iterations).
RECIPES: dict[str, Recipe] = {
    "maskrcnn_resnet18_fpn": Recipe(
        "fine-tunes a Mask R-CNN (ResNet-18's first 3 stages + FPN, 64-channel mask head) that sceneparse "
        "trained on other synthetic scenes and ships with the package; SGD 0.01, LR held then decayed (wsd)",
        iterations=250, images=500, val_images=100, size=256, batch=4,
        optim=dict(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, warmup_iters=20, schedule="wsd"),
        model_kwargs=dict(trunk_stages=3, mask_conv_channels=[64, 64, 64, 64]),
        sec_per_iter=1.55, sec_other=40.0, init_weights="maskrcnn_resnet18_fpn_synthetic.pt"),
    "unet": Recipe(
        "fine-tunes a U-Net (base 16, whole scenes at 96 px) that sceneparse trained on other synthetic scenes "
        "and ships with the package; cross-entropy with median-frequency class weights + soft Dice, AdamW 1e-3",
        iterations=400, images=500, val_images=100, size=256, batch=8,
        optim=dict(name="adamw", lr=1e-3, weight_decay=1e-4, warmup_iters=20, schedule="wsd"),
        model_kwargs=dict(base_channels=16, min_size=96, max_size=96, dice_weight=1.0), class_weights=True,
        sec_per_iter=0.30, sec_other=25.0, init_weights="unet_synthetic.pt"),
}
_GENERIC = {
    "detection": Recipe("generic detection settings (SGD 0.02, cosine)", iterations=300,
                        optim=dict(name="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4, warmup_iters=50,
                                   schedule="cosine"), sec_per_iter=1.5),
    "semantic": Recipe("generic semantic settings (AdamW 3e-3, cosine)", iterations=500,
                       optim=dict(name="adamw", lr=3e-3, weight_decay=1e-4, warmup_iters=50, schedule="cosine"),
                       sec_per_iter=0.6),
}
#: below this primary metric (box / mask AP, mIoU) the demo says the model has barely learned
POOR_RESULT = 0.05


def recipe_for(model: str, task: str) -> Recipe:
    """The demo's :class:`Recipe` for ``model`` (a zoo name) of ``task`` (``detection`` / ``semantic``)."""
    return RECIPES.get(model) or _GENERIC[task]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="synthesize scenes, train, predict, evaluate and write an HTML report",
        description="The main job on the embedded default: draw synthetic scenes, train a small model for a "
                    "fixed number of iterations (a recipe that gives a working model in a few CPU minutes), "
                    "predict the held-out images, evaluate with COCO AP (or mIoU) and write a report folder "
                    "with index.html. The flags left out take the model's recipe values.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--model", default="maskrcnn_resnet18_fpn",
                   help="model to train (default maskrcnn_resnet18_fpn; any zoo name, e.g. unet)")
    p.add_argument("--iterations", "--iters", dest="iters", type=int, default=None,
                   help="training iterations (default: the recipe's; the same on a busy machine, only slower)")
    p.add_argument("--minutes", type=float, default=None,
                   help="train for this many minutes instead of --iterations (a time budget: a busy machine "
                        "trains less)")
    p.add_argument("--images", type=int, default=None, help="synthetic images, train + val (default: the recipe's)")
    p.add_argument("--val-images", type=int, default=None,
                   help="of which held out for evaluation (default: the recipe's, 100)")
    p.add_argument("--size", type=int, default=None, help="image size, drawn and trained (default: the recipe's)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    p.add_argument("--scratch", action="store_true",
                   help="start from random weights, not from the recipe's shipped pretrained ones (the Mask R-CNN "
                        "recipe starts from a ResNet-18 + FPN that sceneparse trained on its synthetic scenes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--show", type=int, default=12, help="predicted images shown in the report (default 12)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _step(n: int, text: str, job: "_JobProgress | None" = None) -> None:
    line = f"\n[{n}/5] {text}"
    if job is not None:
        job.write(line)
    else:
        print(line, flush=True)


class _JobProgress:
    """One progress bar over the whole demo. Each step weighs its estimated seconds; inside a step
    the bar moves with the units done (images drawn, iterations, images predicted), so the remaining
    time it shows follows this machine's measured pace."""

    def __init__(self, weights: Mapping[str, float], enabled: bool):
        from tqdm import tqdm

        self.weights = {k: max(float(v), 1e-3) for k, v in weights.items()}
        self.bar = tqdm(total=sum(self.weights.values()), disable=not enabled, dynamic_ncols=True, leave=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
        self.base = 0.0  # bar position at the start of the current step
        self.step, self.units, self.done = "", 1, 0

    def start(self, step: str, units: int, desc: str) -> None:
        self.finish()
        self.step, self.units, self.done = step, max(1, int(units)), 0
        self.bar.set_description_str(desc, refresh=True)

    def advance(self, n: int = 1, desc: str | None = None) -> None:
        self.done = min(self.units, self.done + n)
        target = self.base + self.weights.get(self.step, 0.0) * self.done / self.units
        self.bar.update(max(0.0, target - self.bar.n))
        if desc is not None:
            self.bar.set_description_str(desc, refresh=False)

    def finish(self) -> None:
        """Close the current step: the bar at its end."""
        if self.step:
            self.base += self.weights.get(self.step, 0.0)
            self.bar.update(max(0.0, self.base - self.bar.n))
            self.step = ""

    def write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout) if not self.bar.disable else print(text, flush=True)

    def close(self) -> None:
        self.finish()
        self.bar.close()


def _hooks(job: _JobProgress, iterations: int | None):
    """The demo's trainer hooks: the exact iteration count (``iterations``) and the job bar."""
    from ..engine.hooks import HookBase

    class Plan(HookBase):
        """``total_iters = iterations``: the whole epochs that fit, the last one cut (the cosine / wsd
        schedule ends at 0 there). Set before the first step, as the time-budget hook plans."""

        def before_train(self) -> None:
            t = self.trainer
            if iterations is not None:
                t.total_iters = int(iterations)
                t.plan_epochs = math.ceil(t.total_iters / t.iters_per_epoch)

    class Bar(HookBase):
        def before_train(self) -> None:
            t = self.trainer
            job.start("train", t.total_iters, f"train 0/{t.total_iters} it")

        def after_step(self) -> None:
            t = self.trainer
            loss = f", loss {t.losses['loss']:.3f}" if t.losses else ""
            job.units = max(1, t.total_iters)  # a time budget re-plans
            job.advance(1, f"train {t.iteration}/{t.total_iters} it{loss}")

    return [Plan(), Bar()]


def _estimate(recipe: Recipe, iterations: int, size: int, batch: int, images: int) -> dict[str, float]:
    """Seconds of each step on an idle 2-core CPU, scaled from the recipe's reference by pixels per
    iteration and by the number of images drawn / predicted."""
    px = (size / recipe.size) ** 2
    per_image = recipe.sec_other / max(1, recipe.images)
    return {"data": 0.35 * per_image * images * px, "train": iterations * recipe.sec_per_iter * px * batch / recipe.batch,
            "predict": 0.45 * per_image * images * px, "evaluate": 0.2 * per_image * images}


def pack_weights(state: Mapping[str, Any], meta: Mapping[str, Any]) -> dict:
    """A state dict in the shipped form: each float tensor of 2+ dimensions and 1024+ elements (the
    weights of convolutions and linear layers) as ``int8`` with one ``float32`` scale per output
    channel (symmetric, ``w ~ q * scale``: at most half a step, ``max|w| / 254``, off), the other
    float tensors as ``float16``, integer ones as they are. A quarter of the float32 size; the
    fine-tuning that follows makes up for the rounding."""
    import torch

    from .. import __version__

    packed: dict[str, Any] = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.dim() >= 2 and v.numel() >= 1024:
            flat = v.float().reshape(v.shape[0], -1)
            scale = (flat.abs().amax(1) / 127.0).clamp_min(1e-12)
            q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(v.shape)
            packed[k] = {"q": q, "scale": scale}
        elif v.is_floating_point():
            packed[k] = v.half()
        else:
            packed[k] = v
    return {"format": "sceneparse-packed-1", "sceneparse_version": __version__, "meta": dict(meta),
            "packed": packed}


def unpack_weights(obj: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`pack_weights`' form -> a float32 state dict."""
    import torch

    state = {}
    for k, v in obj["packed"].items():
        if isinstance(v, Mapping):
            shape = v["q"].shape
            state[k] = (v["q"].float().reshape(shape[0], -1) * v["scale"].float()[:, None]).reshape(shape)
        elif v.is_floating_point():
            state[k] = v.float()
        else:
            state[k] = v
    return state


def read_shipped_weights(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(float32 state dict, how it was made)`` of the shipped file ``WEIGHTS_DIR / name``."""
    import torch

    from ..errors import CheckpointError

    path = WEIGHTS_DIR / name
    if not path.is_file():
        raise CheckpointError("the demo's shipped weights are missing (a broken install?); pass --scratch to "
                              "train from random weights", path=str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping) or obj.get("format") != "sceneparse-packed-1":
        raise CheckpointError("not a sceneparse packed weights file", path=str(path))
    return unpack_weights(obj), dict(obj.get("meta") or {})


def _median_frequency_weights(data_root: Path, num_classes: int) -> list[float]:
    import numpy as np
    from PIL import Image

    from ..data.stats import median_frequency_weights

    maps = (np.asarray(Image.open(f)) for f in sorted((data_root / "semantic" / "train").glob("*.png")))
    return [round(float(w), 4) for w in median_frequency_weights(maps, num_classes)]


def _load_text() -> str:
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return ""
    cpus = os.cpu_count() or 1
    busy = f"; the machine is busy (load {load:.1f} on {cpus} cores): expect longer" if load > 0.5 * cpus else ""
    return busy


def run(args) -> int:
    from ..config import Config
    from ..data.synthetic import SyntheticConfig, write_dataset
    from ..engine.predictor import Predictor
    from ..engine.trainer import Trainer
    from ..errors import ConfigError
    from ..models import zoo
    from ..models.base import model_info

    if args.model not in zoo.available():
        raise ConfigError(f"unknown model {args.model!r}; available: {', '.join(zoo.available())}")
    probe = zoo.build(args.model, num_classes=1)
    info = model_info(probe)
    del probe
    if info.result not in ("instances", "semantic"):
        raise ConfigError(f"the demo runs models with instance or semantic results; {args.model} is a {info.task} model")
    task = "detection" if info.result == "instances" else "semantic"  # the demo's two pipelines
    recipe = recipe_for(args.model, task)
    # the flags left out take the recipe's values (written back: the report names them)
    for key in ("images", "val_images", "size", "batch"):
        if getattr(args, key) is None:
            setattr(args, key, getattr(recipe, key))
    if args.minutes is not None and args.iters is not None:
        raise ConfigError("give --iterations or --minutes, not both")
    if args.minutes is None and args.iters is None:
        args.iters = recipe.iterations
    if args.iters is not None and args.iters < 1:
        raise ConfigError(f"--iterations must be >= 1, got {args.iters}")
    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    if not 0 < args.val_images < args.images:
        raise ConfigError(f"--val-images must lie in 1..{args.images - 1}, got {args.val_images}")
    if args.size < 32 or args.batch < 1:
        raise ConfigError(f"--size must be >= 32 and --batch >= 1, got {args.size} and {args.batch}")
    args._recipe = recipe.summary  # for the report (not a flag)
    args._init = None  # the shipped weights' record when the run starts from them
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train = args.images - args.val_images

    # the plan, up front
    est = _estimate(recipe, args.iters or 0, args.size, args.batch, args.images)
    if args.minutes is not None:
        est["train"] = 60.0 * args.minutes
    how_long = (f"{args.iters} iterations of batch {args.batch} (~{math.ceil(args.iters * args.batch / n_train)} "
                "epochs)" if args.iters is not None else f"{args.minutes:g} minutes (time budget)")
    print(f"sceneparse demo: {args.model} ({task})\n"
          f"  recipe: {recipe.summary}\n"
          f"  plan: draw {args.images} synthetic {args.size}x{args.size} scenes ({args.val_images} held out), "
          f"train {how_long}, predict and evaluate the held-out images\n"
          f"  estimated {sum(est.values()) / 60:.1f} min on an idle 2-core CPU{_load_text()}", flush=True)
    job = _JobProgress(est, enabled=not args.quiet)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        # 1. data ---------------------------------------------------------------------------------
        _step(1, f"synthetic scenes: {args.images} images of {args.size}x{args.size} -> {out / 'data'}", job)
        job.start("data", 1, "drawing scenes")
        t = time.perf_counter()
        scfg = SyntheticConfig(height=args.size, width=args.size, num_images=args.images,
                               val_fraction=args.val_images / args.images, seed=args.seed, **recipe.scenes)
        write_dataset(out / "data", scfg, splits={"train": n_train, "val": args.val_images}, progress=False)
        timings["data"] = time.perf_counter() - t

        # 2. train --------------------------------------------------------------------------------
        _step(2, f"training {args.model}: {how_long} -> {out / 'train'}", job)
        t = time.perf_counter()
        cfg = Config()
        cfg.model.name = args.model
        kwargs = {"min_size": args.size, "max_size": args.size, **recipe.model_kwargs}
        if recipe.class_weights:
            kwargs["class_weights"] = _median_frequency_weights(out / "data", len(scfg.category_map.names))
            kwargs.setdefault("logit_adjustment", 1.0)
        cfg.model.kwargs = kwargs
        if recipe.init_weights and not args.scratch:
            import torch

            from .. import __version__

            state, meta = read_shipped_weights(recipe.init_weights)
            init = out / "init_weights.pt"  # the config names it (config.yaml: model.weights)
            torch.save({"sceneparse_version": __version__, "model": state, "meta": meta}, init)
            cfg.model.weights = str(init)
            job.write(f"starting from {WEIGHTS_DIR / recipe.init_weights}: {meta.get('what', '')}")
            args._init = {"file": recipe.init_weights, **meta}  # for the report (not a flag)
        cfg.data.root = str(out / "data")
        cfg.data.batch_size = args.batch
        for k, v in recipe.data.items():
            setattr(cfg.data, k, v)
        for k, v in recipe.optim.items():
            setattr(cfg.optim, k, v)
        cfg.train.out = str(out / "train")
        cfg.train.exist_ok = True
        cfg.train.eval_every = 0  # no evaluation inside training: the held-out images are scored once, below
        cfg.train.log_every = 1  # the report's loss curve: every step of a short run
        cfg.train.seed = args.seed
        cfg.train.device = args.device
        if args.iters is not None:
            cfg.train.epochs = math.ceil(args.iters / math.ceil(n_train / args.batch))
        else:
            cfg.train.epochs = 1000  # the time budget decides how many fit
            cfg.train.time_limit_min = float(args.minutes)
        trainer = Trainer(cfg, progress=False, hooks=_hooks(job, args.iters))
        result = trainer.fit()
        timings["train"] = time.perf_counter() - t
        ckpt = result.best or result.last

        # 3. predict ------------------------------------------------------------------------------
        val_images = out / "data" / "images" / "val"
        _step(3, f"predicting {args.val_images} held-out images with {ckpt}", job)
        job.start("predict", args.val_images, "predicting")
        t = time.perf_counter()
        pred_dir = out / "predict"
        if pred_dir.exists():
            shutil.rmtree(pred_dir)
        predictor = Predictor(str(ckpt), device=args.device, batch_size=args.batch, workers=0)
        ann = out / "data" / "annotations" / "instances_val.json"
        summary = predictor.run(val_images, pred_dir, ann=ann if task == "detection" else None, progress=False,
                                verbose=False, on_result=lambda _: job.advance(1))
        timings["predict"] = time.perf_counter() - t
        failed = f", {len(summary.failures)} could not be used (see {pred_dir / 'failures.json'})" \
            if summary.failures else ""
        job.write(f"predicted {summary.predicted} images in {timings['predict']:.1f} s -> {pred_dir}{failed}")

        # 4. evaluate -----------------------------------------------------------------------------
        _step(4, "evaluating the predictions against the held-out ground truth", job)
        job.start("evaluate", 1, "evaluating, writing the report")
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

        # 5. report -------------------------------------------------------------------------------
        _step(5, f"report -> {out / 'index.html'}", job)
        timings["total"] = time.perf_counter() - t_start
        index = _report(out, args, task, result, summary, metrics, tables, figures, timings)
    finally:
        job.close()
    print("\nheadline: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if _headline(k)))
    print(f"trained {result.iterations} iterations in {timings['train'] / 60:.1f} min; "
          f"done in {timings['total'] / 60:.1f} min; open {index}")
    poor = _poor_result(args, recipe, result, metrics, info.primary_metric)
    if poor:
        print(poor, file=sys.stderr)
    return 0


def _poor_result(args, recipe: Recipe, result, metrics: Mapping[str, float], primary: str) -> str | None:
    """What to say when the primary metric is below :data:`POOR_RESULT` (None otherwise)."""
    value = metrics.get(primary)
    if value is None or not math.isfinite(value) or value >= POOR_RESULT:
        return None
    name = {"bbox_AP": "box AP", "segm_AP": "mask AP", "miou": "mIoU"}.get(primary, primary)
    tips = [f"train longer (--iterations {max(2 * result.iterations, recipe.iterations)})"]
    changed = [f"--{k.replace('_', '-')} {getattr(args, k)} (recipe: {getattr(recipe, k)})"
               for k in ("images", "size", "batch") if getattr(args, k) != getattr(recipe, k)]
    if changed:
        tips.append("keep the recipe's data and batch (this run changed " + ", ".join(changed) + ")")
    if args.minutes is not None:
        tips.append("plan by --iterations rather than --minutes (a busy machine trains less in a time budget)")
    tips.append("look at the loss curve in the report: still falling steeply means more iterations will help")
    return (f"\nwarning: the model has barely learned: {name} {value:.3f} (below {POOR_RESULT:g}) after "
            f"{result.iterations} iterations. To do better: " + "; ".join(tips) + ".")


def _headline(name: str) -> bool:
    return name in ("bbox_AP", "bbox_AP50", "segm_AP", "keypoints_AP", "miou", "pixel_acc")


def _write_json(path: Path, obj) -> None:
    from ..fileio import atomic_write_text

    def finite(o):  # NaN (e.g. the IoU of a class absent from the held-out images) is written as null
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [finite(v) for v in o]
        return o

    atomic_write_text(path, json.dumps(finite(obj), indent=1, allow_nan=False, default=lambda o: None))


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
