"""``sceneparse predict``: run a trained checkpoint on images and write COCO results, label PNGs and
annotated images."""
from __future__ import annotations

import argparse

EPILOG = """\
what is written into --out (default runs/predict)
  predictions.json   detection checkpoints: COCO results, one record per detection with
                     image_id, category_id, score, bbox (x, y, w, h), segmentation (compressed RLE)
                     for mask models, keypoints (x, y, score) for keypoint models.
                     Image ids: with --ann, those of the images in that COCO JSON, matched by file
                     name (path relative to --source, else the base name); without it, the file
                     stems when all are distinct numbers (000123.jpg -> 123), else 1..N in order.
  images.json        (detection, no --ann) the ids given to the images, with file name, height and
                     width, as a COCO file with empty annotations.
  labels/NAME.png    semantic checkpoints: one label PNG per image, pixel value = class label
                     0..C-1 (255 = void); palette PNG (colours for viewers, values are the labels),
                     what 'sceneparse eval --type semantic' reads.
  images/NAME.jpg    the image with the results drawn (skip with --no-save-images).
  failures.json      [{"path", "reason", "stage"}] for files that could not be read or predicted.
NAME is the file's path relative to --source without its suffix. Unreadable, corrupt, truncated
and empty files are skipped and listed at the end. The exit code is 0 when at least one image was
predicted, 1 when none could be.

examples:
  sceneparse predict --model runs/train/best.pt --source photos/ --out runs/predict
  sceneparse predict --model best.pt --source "data/**/*.jpg" --conf 0.3 --batch 8 --workers 4
  sceneparse predict --model best.pt --source data/synth/images/val \\
      --ann data/synth/annotations/instances_val.json --no-save-images
  sceneparse eval --gt data/synth/annotations/instances_val.json --pred runs/predict/predictions.json --type bbox
  sceneparse predict --model pose.pt --det det.pt --source photos/   # person boxes -> top-down pose
  sceneparse predict --model unet.pt --source data/synth/images/val --out runs/sem
  sceneparse eval --gt data/synth/semantic/val --pred runs/sem/labels --type semantic --num-classes 12
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="run a checkpoint on images (COCO results JSON, label PNGs, drawings)",
        description="Run a sceneparse checkpoint on an image file, a folder or a glob pattern.\n"
                    "Models with instance results (detection, instance segmentation, pose) write COCO results\n"
                    "(predictions.json), semantic models label PNGs, panoptic models COCO panoptic JSON + PNGs;\n"
                    "all draw their results on the images.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="CKPT", help="sceneparse checkpoint (.pt) written by training")
    p.add_argument("--source", required=True, metavar="FILE|DIR|GLOB",
                   help="an image, a folder of images or a glob pattern (quote it: \"dir/**/*.jpg\")")
    p.add_argument("--out", default="runs/predict", metavar="DIR", help="output folder (default runs/predict)")
    p.add_argument("--batch", type=int, default=4, metavar="N", help="images per forward pass (default 4)")
    p.add_argument("--conf", type=float, default=None, metavar="X",
                   help="score threshold: keep score > X (default: the model's, 0.05 for the R-CNNs)")
    p.add_argument("--iou", type=float, default=None, metavar="X",
                   help="NMS IoU threshold (default: the model's)")
    p.add_argument("--max-det", type=int, default=None, metavar="N",
                   help="instances kept per image (default: the model's)")
    p.add_argument("--draw-conf", type=float, default=0.25, metavar="X",
                   help="draw detections with score >= X on the images (default 0.25; the JSON keeps all)")
    p.add_argument("--tile", type=int, default=None, metavar="PX",
                   help="semantic models: sliding-window inference on PX x PX windows (large images)")
    p.add_argument("--tile-overlap", type=float, default=1 / 3, metavar="F",
                   help="overlap of neighbouring windows, fraction of --tile (default 1/3)")
    p.add_argument("--imgsz", type=int, default=None, metavar="PX",
                   help="longer side of the network input, as in train --imgsz (default: the model's); "
                        "results stay in image pixels")
    p.add_argument("--det", default=None, metavar="CKPT",
                   help="detector checkpoint whose boxes feed a model that takes boxes (top-down pose: its person "
                        "detections; every class if none is named like the model's box class)")
    p.add_argument("--det-conf", type=float, default=None, metavar="X",
                   help="with --det: keep detections with score > X (default: the detector's)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--ann", metavar="COCO.json", help="COCO JSON whose image ids to use (matched by file name)")
    p.add_argument("--no-save-images", dest="save_images", action="store_false", help="do not draw the results")
    p.add_argument("--no-save-json", dest="save_json", action="store_false",
                   help="do not write predictions.json / images.json")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="background processes decoding images ahead of the model (default 2; 0: none)")
    p.add_argument("--recursive", action="store_true", help="with a folder --source, include its sub-folders")
    p.add_argument("--image-format", default="jpg", choices=("jpg", "png"), help="format of the drawings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..engine.predictor import Predictor

    predictor = Predictor(args.model, device=args.device, batch_size=args.batch, conf=args.conf, imgsz=args.imgsz,
                          iou=args.iou, max_det=args.max_det,
                          workers=args.workers, tile=args.tile, tile_overlap=args.tile_overlap,
                          det=args.det, det_conf=args.det_conf)
    print(f"{predictor}", file=sys.stderr)
    summary = predictor.run(args.source, args.out, save_json=args.save_json, save_images=args.save_images,
                            ann=args.ann, recursive=args.recursive, image_format=args.image_format,
                            progress=not args.quiet, verbose=True, draw_conf=args.draw_conf)
    if not summary.ok:
        print(f"sceneparse predict: error: none of the {summary.total} image(s) could be predicted "
              f"(reasons in {summary.files.get('failures')})", file=sys.stderr)
        return 1
    return 0
