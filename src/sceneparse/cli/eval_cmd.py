"""``sceneparse eval``: score predictions in the standard file formats against ground truth."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import IGNORE_INDEX
from ..errors import ConfigError, DataError, Problem

TYPES = ("bbox", "segm", "keypoints", "semantic", "panoptic")

EPILOG = """\
inputs by --type
  bbox | segm | keypoints   --gt: COCO ground-truth JSON; --pred: COCO results JSON (a list of
                            {image_id, category_id, score, bbox | segmentation (RLE) | keypoints}).
                            Prints pycocotools' table; --json holds "stats" in pycocotools' order.
  semantic                  --gt: folder of ground-truth label PNGs (values 0..C-1, 255 = void) and
                            --pred: folder of predicted label PNGs with the same file names; needs
                            --num-classes. Or --gt: a COCO JSON whose categories give C and the class
                            names, with the PNG folders in --gt-png / --pred-png. JSON: "miou", ...
  panoptic                  --gt / --pred: COCO panoptic JSON; the PNG folders are --gt-png / --pred-png
                            (default: the JSON path without ".json"). JSON: "pq", "sq", "rq", ...

--plots DIR writes PR curves (IoU .50 and .75) for COCO types, and for bbox / segm the detection
confusion matrix (--score-threshold) and, with --errors, the TIDE-style error breakdown; per-class
IoU bars for semantic and per-category PQ bars for panoptic.
Malformed predictions stop with an error naming the record (index in the results list, image_id).
The COCO ground truth gets the checks `sceneparse convert` runs on a COCO file (every problem listed,
by file, record and field); masks of both sides are checked before pycocotools reads them.

examples:
  sceneparse eval --gt instances_val2017.json --pred results.json --type bbox --json bbox.json --plots plots/
  sceneparse eval --gt instances_val2017.json --pred segm.json --type segm --errors
  sceneparse eval --gt person_keypoints_val2017.json --pred kps.json --type keypoints
  sceneparse eval --gt data/synth/semantic/val --pred runs/pred/semantic --type semantic --num-classes 8
  sceneparse eval --gt panoptic_val2017.json --pred panoptic_pred.json --type panoptic \\
      --gt-png panoptic_val2017 --pred-png panoptic_pred --json pq.json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate predictions (COCO AP, mIoU, PQ) from files",
        description="Evaluate predictions stored in standard files: COCO results (bbox, segm, keypoints AP), "
                    "semantic label PNGs (mIoU) or COCO panoptic JSON + PNGs (PQ). Prints a table, optionally "
                    "writes a JSON report and plots.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="ground truth: COCO (panoptic) JSON, or a folder of label PNGs")
    p.add_argument("--pred", required=True, help="predictions: COCO results / panoptic JSON, or a PNG folder")
    p.add_argument("--type", required=True, choices=TYPES, dest="iou_type", help="what to evaluate")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON to OUT")
    p.add_argument("--plots", metavar="DIR", help="write plots (PNG) into DIR")
    p.add_argument("--num-classes", type=int, help="number of classes (semantic)")
    p.add_argument("--ignore-index", type=int, default=IGNORE_INDEX, help="void label of semantic PNGs (default 255)")
    p.add_argument("--gt-png", metavar="DIR", help="ground-truth PNG folder (panoptic; semantic with a JSON --gt)")
    p.add_argument("--pred-png", metavar="DIR", help="prediction PNG folder (panoptic; semantic with a JSON --gt)")
    p.add_argument("--errors", action="store_true", help="bbox/segm: TIDE-style error breakdown (dAP50 per type)")
    p.add_argument("--score-threshold", type=float, default=0.25,
                   help="bbox/segm: minimum score for the confusion matrix (default 0.25)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.iou_type in ("bbox", "segm", "keypoints"):
        report = _run_coco(args)
    elif args.iou_type == "semantic":
        report = _run_semantic(args)
    else:
        report = _run_panoptic(args)
    if args.json:
        _write_json(args.json, report)
        print(f"report written to {args.json}")
    return 0


# ---- COCO ---------------------------------------------------------------------------------
def _run_coco(args) -> dict:
    from ..evaluation import evaluate_coco
    from ..evaluation.coco.tables import load_ground_truth
    from ..evaluation.validate import load_coco_gt, load_coco_results, results_for, validate_coco_results

    # the ground truth gets the checks every command runs on a COCO file, the results theirs; both
    # are read once and every message names the file it comes from
    gt, gt_file = load_coco_gt(args.gt, iou_type=args.iou_type)
    results, res_file = load_coco_results(args.pred)
    results = results_for(results, args.iou_type)  # segm: areas from masks, not from boxes
    validate_coco_results(gt, results, args.iou_type, file=res_file, check_masks=False)  # masks: evaluate_coco
    table = load_ground_truth(gt, args.iou_type, source=gt_file, check=False)
    result = evaluate_coco(table, results, args.iou_type, results_source=res_file)
    print(f"{args.iou_type}: {len(results)} results from {res_file} on {len(gt['images'])} images, "
          f"{len(gt['categories'])} categories of {gt_file}")
    print(result.summary())
    print()
    print(result.per_category_table())
    report = {"type": args.iou_type, **result.to_dict()}
    if args.errors and args.iou_type == "keypoints":
        print("note: --errors applies to bbox and segm only", file=sys.stderr)

    plots = Path(args.plots) if args.plots else None
    if plots:
        from ..viz.plots import plot_pr_curves

        for iou in (0.5, 0.75):
            path = plot_pr_curves(result, plots / f"pr_{args.iou_type}_iou{int(round(iou * 100))}.png", iou=iou,
                                  max_dets=result.max_dets[-1])
            print(f"plot: {path}")
    if args.iou_type in ("bbox", "segm") and (plots or args.errors):
        from ..evaluation.validate import coco_columns

        pair = coco_columns(gt, results, args.iou_type, validate=False, gt_source=gt_file, results_source=res_file)
        if plots:
            from ..evaluation.confusion import confusion_from_columns
            from ..viz.plots import plot_confusion_matrix

            cm = confusion_from_columns(pair, 0.5, args.score_threshold)
            report["confusion"] = cm.to_dict()
            print(f"plot: {plot_confusion_matrix(cm, plots / f'confusion_{args.iou_type}.png')}")
        if args.errors:
            from ..evaluation.errors import tide_from_columns
            from ..viz.plots import plot_error_breakdown

            errs = tide_from_columns(pair)
            print()
            print(errs.summary())
            report["errors"] = errs.to_dict()
            if plots:
                print(f"plot: {plot_error_breakdown(errs, plots / f'errors_{args.iou_type}.png')}")
    return report


# ---- semantic -----------------------------------------------------------------------------
def _run_semantic(args) -> dict:
    from ..evaluation.semantic import evaluate_label_folders

    gt = Path(args.gt)
    names = None
    num_classes = args.num_classes
    if gt.is_file():
        from ..evaluation.coco.tables import load_coco_json

        data = load_coco_json(gt, "ground-truth") if gt.suffix == ".json" else None
        cats = data.get("categories") if isinstance(data, dict) else None
        if not isinstance(cats, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), int) for c in cats):
            raise DataError(Problem(str(gt), None, "categories", "--gt for semantic is a PNG folder or a JSON file "
                                    "with a 'categories' list (objects with an integer 'id')"))
        cats = sorted(cats, key=lambda c: c["id"])
        names = [str(c.get("name", c["id"])) for c in cats]
        num_classes = num_classes or len(cats)
        if num_classes != len(cats):
            raise ConfigError(f"--num-classes {num_classes} differs from the {len(cats)} categories of {gt}")
        if not args.gt_png:
            raise ConfigError("with a JSON --gt, give the ground-truth label PNG folder with --gt-png")
        gt_dir, pred_dir = Path(args.gt_png), Path(args.pred_png or args.pred)
    else:
        gt_dir, pred_dir = gt, Path(args.pred_png or args.pred)
        if not num_classes:
            raise ConfigError("--type semantic with a PNG folder needs --num-classes")
    result = evaluate_label_folders(gt_dir, pred_dir, num_classes, ignore_index=args.ignore_index,
                                    class_names=names, progress=not args.quiet)
    print(result.summary())
    if args.plots:
        from ..viz.plots import plot_class_iou

        print(f"plot: {plot_class_iou(result, Path(args.plots) / 'semantic_iou.png')}")
    return {"type": "semantic", **result.to_dict()}


# ---- panoptic -----------------------------------------------------------------------------
def _run_panoptic(args) -> dict:
    from ..evaluation.panoptic import evaluate_panoptic

    result = evaluate_panoptic(args.gt, args.gt_png, args.pred, args.pred_png, progress=not args.quiet)
    print(result.summary())
    if args.plots:
        from ..viz.plots import plot_pq_per_category

        print(f"plot: {plot_pq_per_category(result, Path(args.plots) / 'panoptic_pq.png')}")
    return {"type": "panoptic", **result.to_dict()}


# ---- output -------------------------------------------------------------------------------
def _finite(obj: Any) -> Any:
    """NaN / inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _write_json(path: str, report: dict) -> None:
    """Atomic (:func:`~sceneparse.fileio.atomic_write_text`): readers never see half a report."""
    from ..fileio import atomic_write_text

    atomic_write_text(path, json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")
