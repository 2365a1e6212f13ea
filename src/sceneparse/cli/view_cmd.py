"""``sceneparse view``: browse a dataset and prediction files in a web browser (a local HTTP server)."""
from __future__ import annotations

import argparse

EPILOG = """\
DATASET is a folder in COCO layout (sceneparse data synth: images/SPLIT, annotations/instances_SPLIT.json,
optional person_keypoints, semantic and panoptic maps) or a COCO instances JSON file with --images DIR,
as 'sceneparse show' takes them. Each --pred is a COCO results JSON (image_id, category_id, score, bbox
[, segmentation, keypoints]); a broken file is shown with its error in the page, the others are served.

The server listens on 127.0.0.1 (--host) and prints its address; Ctrl-C stops it. Thumbnails, maps and
plots are made on demand and cached in --cache (default: a temporary folder, removed on exit).

examples:
  sceneparse view data/synth --pred runs/predict/results.json
  sceneparse view instances_val2017.json --images val2017 --pred a.json --pred b.json --port 8000
  sceneparse view data/synth --pred results.json --model runs/train/best.pt   # the 'explain' button
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="browse a dataset and its predictions in a web browser (local server)",
        description="Serve a browser for a COCO-layout dataset and prediction files: a grid drawn in the browser, "
                    "TP / FP / FN and TIDE error types per image and object, sorting and filters, plots.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="dataset folder (COCO layout) or COCO instances JSON file")
    p.add_argument("--pred", action="append", default=[], metavar="JSON",
                   help="COCO results file (repeat for several sources)")
    p.add_argument("--images", help="image folder (COCO file input; overrides DIR/images/SPLIT for folders)")
    p.add_argument("--split", default="val", help="split of a dataset folder (default: val)")
    p.add_argument("--semantic", help="folder of semantic label PNGs (COCO file input)")
    p.add_argument("--panoptic-root", help="folder of panoptic PNGs")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--model", metavar="CKPT", help="checkpoint for the image page's 'explain' button")
    p.add_argument("--iou", type=float, default=0.5, help="IoU of the first matching (default 0.5)")
    p.add_argument("--cache", metavar="DIR", help="cache folder for thumbnails and plots (default: temporary)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from ..errors import DataError, Problem
    from ..viewer import Dataset, Viewer
    from ..viewer.server import ViewServer

    if not 0 < args.iou <= 1:
        raise DataError(Problem(None, None, "--iou", "must be in (0, 1]", args.iou))
    t0 = time.perf_counter()
    ds = Dataset(args.dataset, args.split, images=args.images, semantic=args.semantic,
                 panoptic_root=args.panoptic_root)
    viewer = Viewer(ds, args.pred, cache_dir=args.cache, model=args.model, iou=args.iou)
    try:
        server = ViewServer(viewer, args.host, args.port, verbose=args.verbose)
    except OSError as e:
        viewer.close()
        raise DataError(Problem(None, None, "--port", f"cannot listen on {args.host}:{args.port}: {e.strerror}",
                                args.port)) from None
    viewer.start_loading()
    print(f"sceneparse view: {len(ds)} images, {len(viewer.sources)} prediction file(s), ready in "
          f"{time.perf_counter() - t0:.2f} s (predictions load in the background)")
    print(f"serving at {server.url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
        viewer.close()
    return 0
