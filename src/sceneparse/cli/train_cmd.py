"""``sceneparse train``: train a detector or a semantic model (a thin shell over :class:`~sceneparse.engine.trainer.Trainer`)."""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from ..errors import ConfigError

EPILOG = """\
configuration: defaults <- --cfg FILE.yaml <- flags <- key=value overrides (any key of the config:
data.*, model.*, optim.*, train.*; unknown keys are errors). The flags are shortcuts:
  --model NAME   model.name              --data DIR     data.root (a folder in COCO layout)
  --epochs N     train.epochs            --batch N      data.batch_size (global, all processes)
  --imgsz N      model.kwargs.min_size = model.kwargs.max_size = N (longer side of the model input)
  --device D     train.device (auto, cpu, cuda, cuda:N, N)
  --out DIR      train.out (the run folder)      --lr X   optim.lr     --seed N   train.seed
  --workers N    data.workers                    --time-limit MIN   train.time_limit_min
  --cache        data.cache=true (decoded images and label maps kept in RAM, read once up front)

the run folder gets: config.yaml, last.pt (every epoch and every train.checkpoint_every iterations),
best.pt (best train.primary_metric; auto = keypoints_AP / segm_AP / bbox_AP / miou), results.csv,
loss_curve.png, metrics.png. --resume continues the run of OUT/last.pt (or of CKPT) exactly, with
the configuration stored in the checkpoint.

examples:
  sceneparse data synth --out data/synth --images 200 --size 256
  sceneparse train --model maskrcnn_resnet18_fpn --data data/synth --epochs 12 --batch 4 --out runs/mask
  sceneparse train --model unet --data data/synth --imgsz 256 --epochs 30 optim.name=adamw optim.lr=0.001
  sceneparse train --model keypointrcnn_resnet18_fpn --data data/synth --time-limit 30 --out runs/kp
  sceneparse train --cfg my_run.yaml train.checkpoint_every=200 train.ema=true
  sceneparse train --resume --out runs/mask            # continue runs/mask/last.pt
  sceneparse train --resume runs/mask/last.pt
  torchrun --nproc_per_node 4 -m sceneparse train --model maskrcnn_resnet18_fpn --data data/synth --batch 16
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a detector or a semantic segmentation model",
        description="Train a model of the zoo on a dataset in COCO layout (e.g. 'sceneparse data synth'), "
                    "evaluate it every epoch and keep the best and the last checkpoint. Runs data-parallel "
                    "under torchrun.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", metavar="FILE.yaml", help="configuration file (YAML)")
    p.add_argument("--model", metavar="NAME", help="model name (see models.zoo.available())")
    p.add_argument("--data", metavar="DIR", help="dataset folder in COCO layout (or its dataset.yaml)")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--batch", type=int, metavar="N", help="global batch size")
    p.add_argument("--imgsz", type=int, metavar="N", help="model input size (longer side)")
    p.add_argument("--device", metavar="D", help="auto, cpu, cuda, cuda:N or N")
    p.add_argument("--out", metavar="DIR", help="run folder")
    p.add_argument("--lr", type=float, metavar="X", help="base learning rate")
    p.add_argument("--seed", type=int, metavar="N")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader processes")
    p.add_argument("--time-limit", type=float, metavar="MIN", help="wall-clock budget in minutes")
    p.add_argument("--cache", action="store_const", const=True, default=None,
                   help="keep the decoded training images (and label maps) in RAM")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue a run: OUT/last.pt, or the given checkpoint / run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.01")
    p.set_defaults(func=run)
    _accept_overrides_anywhere(p)


_OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=.*")


def _accept_overrides_anywhere(parser: argparse.ArgumentParser) -> None:
    """argparse fills a ``*`` positional once: ``key=value`` words after a later option would be
    "unrecognized". Collect them into ``overrides`` instead (other unknown words stay errors)."""
    plain = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = plain(args, namespace)
        more = [a for a in extras if _OVERRIDE.fullmatch(a)]
        if more:
            ns.overrides = list(getattr(ns, "overrides", None) or []) + more
        return ns, [a for a in extras if not _OVERRIDE.fullmatch(a)]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The flags as ``key=value`` overrides, followed by the explicit ones."""
    out: list[str] = []
    if args.model:
        out.append(f"model.name={args.model}")
    if args.data:
        data = Path(args.data)
        if data.suffix in (".yaml", ".yml") and data.is_file():
            data = data.parent
        elif data.suffix == ".json":
            raise ConfigError(f"--data {args.data}: give a dataset folder; for COCO files use data.train_json=... "
                              "data.train_images=... data.val_json=... data.val_images=...")
        out.append(f"data.root={data}")
    for flag, key in (("epochs", "train.epochs"), ("batch", "data.batch_size"), ("device", "train.device"),
                      ("out", "train.out"), ("lr", "optim.lr"), ("seed", "train.seed"), ("workers", "data.workers"),
                      ("time_limit", "train.time_limit_min"), ("cache", "data.cache")):
        v = getattr(args, flag)
        if v is not None:
            out.append(f"{key}={v}")
    if args.imgsz is not None:
        if args.imgsz < 16:
            raise ConfigError(f"--imgsz must be at least 16 (got {args.imgsz})")
        out += [f"model.kwargs.min_size={args.imgsz}", f"model.kwargs.max_size={args.imgsz}"]
    return out + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..engine.trainer import Trainer

    # "--resume key=value" : argparse hands the override to --resume
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        args.overrides = [args.resume, *args.overrides]
        args.resume = True
    overrides = overrides_from_args(args)
    cfg = load_config(args.cfg, overrides)
    if args.resume is not None:
        ignored = [o.split("=", 1)[0] for o in overrides
                   if o.split("=", 1)[0] not in ("train.device", "train.threads", "data.workers", "data.cache",
                                                   "train.out")]
        if ignored or args.cfg:
            print(f"note: resuming with the checkpoint's configuration; ignored: "
                  f"{', '.join((['--cfg'] if args.cfg else []) + ignored)}", file=sys.stderr)
    result = Trainer(cfg, resume=args.resume, progress=not args.quiet).fit()
    if result.best is None:  # another process of a torchrun launch
        return 0
    value = result.best_value
    shown = "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"
    print(f"trained {result.epochs} epoch(s), {result.iterations} iterations in {result.seconds:.1f} s"
          + (" (stopped by the time limit)" if result.stopped_by_time_limit else ""))
    print(f"best {result.primary_metric or 'checkpoint'}: {shown} (epoch {result.best_epoch}) -> {result.best}")
    print(f"last: {result.last}; log: {result.out / 'results.csv'}")
    return 0
