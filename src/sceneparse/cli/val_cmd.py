"""``sceneparse val``: evaluate a trained checkpoint on a dataset split (COCO AP or mIoU)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError, DataError, Problem

EPILOG = """\
The model is rebuilt from the checkpoint (model_from_checkpoint) and run on every image of the split;
detectors are scored with COCO box AP (+ mask AP with a mask head, + keypoint AP for keypoint models)
against the split's instances / person_keypoints annotations, semantic models with mIoU, pixel
accuracy, mean class accuracy and frequency-weighted IoU against its label PNGs. The data's
categories must be the checkpoint's (same ids, same order). Without --data, the dataset the model was
trained on (the checkpoint's data.root) is used.

DATA is a folder in COCO layout (sceneparse data synth), or a COCO JSON file with --images DIR
(and --semantic DIR for semantic models).

examples:
  sceneparse val --model runs/mask/best.pt --data data/synth
  sceneparse val --model runs/unet/best.pt --data data/synth --split train --json runs/unet/train_metrics.json
  sceneparse val --model runs/kp/best.pt --data person_keypoints_val2017.json --images val2017 --batch 8
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "val", help="evaluate a checkpoint on a dataset split",
        description="Evaluate a sceneparse checkpoint on a dataset split: prints the metrics table and "
                    "optionally writes a JSON report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="CKPT", help="sceneparse checkpoint (best.pt / last.pt)")
    p.add_argument("--data", metavar="DATA", help="dataset folder or COCO JSON (default: the checkpoint's data.root)")
    p.add_argument("--split", default="val", help="split of a dataset folder (default: val)")
    p.add_argument("--images", metavar="DIR", help="image folder (COCO JSON input, or to override DIR/images/SPLIT)")
    p.add_argument("--semantic", metavar="DIR", help="label PNG folder (semantic models with COCO JSON input)")
    p.add_argument("--batch", type=int, default=4, metavar="N", help="images per forward pass (default 4)")
    p.add_argument("--device", default="auto", metavar="D", help="auto, cpu, cuda, cuda:N or N (default auto)")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="DataLoader processes (default 0)")
    p.add_argument("--json", metavar="OUT", help="write the report (metrics, per-class, COCO stats) as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.layout import load_split
    from ..engine.checkpoint import model_from_checkpoint
    from ..engine.evaluator import evaluate_model
    from ..engine.trainer import resolve_device

    if args.batch < 1:
        raise ConfigError(f"--batch must be >= 1 (got {args.batch})")
    loaded = model_from_checkpoint(args.model, device=resolve_device(args.device))
    data, images, semantic = args.data, args.images, args.semantic
    if data is None:  # the dataset the model was trained on
        trained = loaded.config.get("data") or {}
        if trained.get("val_json"):
            data, key = trained["val_json"], "data.val_json"
            images, semantic = images or trained.get("val_images"), semantic or trained.get("val_semantic")
        else:
            data, key = trained.get("root"), "data.root"
        if not data:
            raise ConfigError("--data is needed: the checkpoint does not name its dataset")
        if not Path(data).exists():
            raise ConfigError(f"the dataset the checkpoint was trained on ({key} {data}) is not there (moved, "
                              "deleted, or a relative path of another folder): pass --data DIR (and --images DIR "
                              "for a COCO JSON)")
    kind = loaded.info.data
    aset = load_split(data, args.split, kind, images=images, semantic=semantic,
                      things_only=kind == "instances", max_images=args.max_images)
    mine = [(int(c["id"]), str(c.get("name"))) for c in loaded.categories]
    theirs = [(c.id, c.name) for c in aset.categories.categories]
    if mine != theirs:
        raise DataError(Problem(aset.source or None, None, "categories",
                                f"the data's categories differ from the checkpoint's {mine}", theirs))
    print(f"{loaded!r} on {aset.source}: {len(aset.images)} images")
    report = evaluate_model(loaded.model, aset, batch_size=args.batch, progress=not args.quiet,
                            workers=args.workers)
    print(report.summary())
    if args.json:
        from ..fileio import atomic_write_text

        out = Path(args.json)
        payload = {"checkpoint": str(args.model), "data": str(data), "split": args.split, **report.to_dict()}
        atomic_write_text(out, json.dumps(payload, indent=2, allow_nan=False) + "\n")
        print(f"report written to {out}")
    return 0
