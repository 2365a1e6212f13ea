"""``sceneparse show``: draw a dataset's annotations (instances, keypoints, semantic, panoptic) to PNGs."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, Problem


def _load() -> None:
    """The readers and drawing (they import torch), imported when the mode runs, not for --help."""
    global tqdm, SceneDataset, Resize, read_coco, read_coco_panoptic, load_split, missing, split_files
    global AnnotationSet, draw_instances, draw_legend, draw_panoptic, draw_semantic, save_image
    from tqdm import tqdm

    from ..data.datasets import SceneDataset
    from ..data.formats import read_coco, read_coco_panoptic
    from ..data.layout import load_split, missing, split_files
    from ..data.records import AnnotationSet
    from ..data.transforms import Resize
    from ..viz.draw import draw_instances, draw_legend, draw_panoptic, draw_semantic, save_image

KINDS = ("instances", "keypoints", "semantic", "panoptic")

EPILOG = """\
DATASET is either
  a folder in the synthetic generator's layout (sceneparse data synth):
      DIR/images/SPLIT/                         images
      DIR/annotations/instances_SPLIT.json      boxes, masks, crowd regions      -> instances
      DIR/annotations/person_keypoints_SPLIT.json                                -> keypoints
      DIR/semantic/SPLIT/<stem>.png             label PNGs (255 = void)          -> semantic
      DIR/annotations/panoptic_SPLIT.json + panoptic_SPLIT/  COCO panoptic      -> panoptic
  or a COCO JSON file with --images DIR: an instances / person_keypoints file (kinds instances and
  keypoints; semantic with --semantic DIR), or a panoptic file (name containing "panoptic", or
  --panoptic-root; its PNG folder defaults to the JSON path without ".json").

Each drawing goes to OUT/KIND/<image stem>.png with a legend of the classes it shows. Ground truth
is drawn without scores; crowd regions are tagged "crowd". Small images are enlarged (--min-size)
together with their annotations so that labels stay readable.

examples:
  sceneparse show data/synth --out runs/show
  sceneparse show data/synth --split train --num 4 --kind panoptic --out runs/show
  sceneparse show instances_val2017.json --images val2017 --kind instances --num 8 --out runs/coco
  sceneparse show person_keypoints_val2017.json --images val2017 --kind keypoints --out runs/pose
  sceneparse show panoptic_val2017.json --images val2017 --out runs/pan
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show", help="draw a dataset's annotations to PNG files",
        description="Draw ground-truth annotations (boxes, masks, keypoints, semantic and panoptic maps) of the "
                    "first images of a split to annotated PNGs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="synthetic dataset folder or COCO JSON file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="val", help="split of a dataset folder (default: val)")
    p.add_argument("--num", type=int, default=16, help="number of images to draw (default: 16)")
    p.add_argument("--kind", default="all", choices=KINDS + ("all",),
                   help="what to draw (default: all kinds the dataset has)")
    p.add_argument("--images", help="image folder (COCO file input; overrides DIR/images/SPLIT for folders)")
    p.add_argument("--semantic", help="folder of semantic label PNGs (COCO file input)")
    p.add_argument("--panoptic-root", help="folder of panoptic PNGs (COCO panoptic file input)")
    p.add_argument("--alpha", type=float, default=0.5, help="mask / map opacity (default: 0.5)")
    p.add_argument("--min-size", type=int, default=400,
                   help="enlarge images whose shorter side is below this many pixels before drawing, so that "
                        "labels stay readable (default: 400; 0 draws at the original size)")
    p.add_argument("--strict", action="store_true", help="stop at the first annotation problem")
    p.set_defaults(func=run)


@dataclass
class _Source:
    """One drawable kind: the annotation set to read it from, or why it is not available."""

    aset: AnnotationSet | None = None
    missing: str = ""


def _report(aset: AnnotationSet) -> None:
    if aset.problems:
        shown = "\n  ".join(str(p) for p in aset.problems[:5])
        more = f"\n  ... and {len(aset.problems) - 5} more" if len(aset.problems) > 5 else ""
        print(f"{aset.source}: {len(aset.problems)} problem(s) repaired while reading:\n  {shown}{more}",
              file=sys.stderr)


def _from_folder(root: Path, args) -> dict[str, _Source]:
    files = split_files(root, args.split, images=args.images, semantic=args.semantic)
    out: dict[str, _Source] = {}
    for kind in KINDS:
        why = missing(files, kind)
        out[kind] = _Source(None, why) if why else _Source(load_split(
            root, args.split, kind, images=args.images, semantic=args.semantic, strict=args.strict))
    return out


def _from_file(path: Path, args) -> dict[str, _Source]:
    if not args.images:
        raise DataError(Problem(str(path), None, None, "a COCO JSON file needs --images DIR (its image folder)"))
    images = Path(args.images)
    none = {k: _Source(None, f"not in {path.name}") for k in KINDS}
    if args.panoptic_root or "panoptic" in path.name:
        pan_root = Path(args.panoptic_root) if args.panoptic_root else path.with_suffix("")
        return {**none, "panoptic": _Source(read_coco_panoptic(path, pan_root, images, strict=args.strict))}
    aset = read_coco(path, images, strict=args.strict)
    out = {**none, "instances": _Source(aset)}
    if aset.keypoint_set is not None and any(a.keypoints is not None for a in aset.annotations):
        out["keypoints"] = _Source(aset)
    if args.semantic:
        out["semantic"] = _Source(AnnotationSet(aset.categories, aset.images, [], image_root=images,
                                                semantic_root=Path(args.semantic), source=args.semantic))
    else:
        out["semantic"] = _Source(None, "no --semantic DIR given")
    return out


def _present(labels: np.ndarray, num_classes: int) -> list[int]:
    u = np.unique(labels)
    return [int(v) for v in u if 0 <= v < num_classes]


def _draw(kind: str, image, target, aset: AnnotationSet, alpha: float) -> np.ndarray:
    names = aset.categories.names
    if kind == "instances":
        inst = target.instances
        tags = ["crowd" if c else "" for c in target.iscrowd.tolist()]
        out = draw_instances(image, inst, names, alpha=alpha, keypoint_set=aset.keypoint_set, tags=tags)
        return draw_legend(out, names, _present(inst.labels.numpy(), len(names)))
    if kind == "keypoints":
        inst = target.instances
        tags = ["crowd" if c else "" for c in target.iscrowd.tolist()]
        out = draw_instances(image, inst, names, alpha=alpha, keypoint_set=aset.keypoint_set, show_masks=False,
                             tags=tags)
        return draw_legend(out, names, _present(inst.labels.numpy(), len(names)))
    if kind == "semantic":
        out = draw_semantic(image, target.semantic, names, alpha)
        return draw_legend(out, names, _present(target.semantic.labels.numpy(), len(names)))
    pan = target.panoptic
    out = draw_panoptic(image, pan, names, alpha)
    return draw_legend(out, names, sorted({s.label for s in pan.segments}))


def run(args) -> int:
    _load()
    src = Path(args.dataset)
    if not src.exists():
        raise DataError(Problem(str(src), None, None, "dataset not found"))
    if args.num < 1:
        raise DataError(Problem(None, None, "--num", "must be at least 1", args.num))
    sources = _from_folder(src, args) if src.is_dir() else _from_file(src, args)
    kinds = KINDS if args.kind == "all" else (args.kind,)
    if args.kind != "all" and sources[args.kind].aset is None:
        raise DataError(Problem(str(src), None, args.kind, f"cannot draw {args.kind}: {sources[args.kind].missing}"))
    if all(sources[k].aset is None for k in kinds):
        raise DataError([Problem(str(src), None, k, f"cannot draw {k}: {sources[k].missing}") for k in kinds])
    out_root = Path(args.out)
    written = 0
    for kind in kinds:
        s = sources[kind]
        if s.aset is None:
            print(f"skipped {kind}: {s.missing}", file=sys.stderr)
            continue
        _report(s.aset)
        ds = SceneDataset(s.aset, load_masks=kind == "instances", load_keypoints=kind in ("instances", "keypoints"),
                          load_semantic=kind == "semantic", load_panoptic=kind == "panoptic")
        # panoptic sets list only annotated images; other kinds draw the first images of the split
        indices = [i for i, r in enumerate(s.aset.images) if kind != "panoptic" or int(r.id) in s.aset.panoptic]
        indices = indices[: args.num]
        for i in tqdm(indices, desc=f"show {kind}", unit="img"):
            image, target = ds[i]
            if args.min_size > 0 and min(image.shape[-2:]) < args.min_size:
                image, target = Resize(short_side=args.min_size)(image, target)
            drawing = _draw(kind, image, target, s.aset, args.alpha)
            save_image(out_root / kind / f"{Path(s.aset.images[i].file_name).stem}.png", drawing)
            written += 1
    print(f"wrote {written} drawing(s) to {out_root}")
    return 0
