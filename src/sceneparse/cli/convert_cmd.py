"""``sceneparse convert``: COCO JSON <-> Pascal VOC XML <-> YOLO txt, with validation."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DataError, Problem


def _load() -> None:
    """The readers and writers (they import torch), imported when the mode runs, not for --help."""
    global read_coco, read_voc, read_yolo, write_coco, write_voc, write_yolo, read_data_yaml
    from ..data.formats import read_coco, read_voc, read_yolo, write_coco, write_voc, write_yolo
    from ..data.formats.yolo import read_data_yaml

FORMATS = ("coco", "voc", "yolo")

EPILOG = """\
sources and destinations:
  coco   --src/--dst is a JSON file; --images is the folder its file_name entries are relative to
  voc    --src is a VOC root (Annotations/, JPEGImages/) or a folder of XMLs; --dst is a folder of XMLs
  yolo   --src is a dataset folder (data.yaml, labels/, and images/ or the folder data.yaml's train
         names) or its data.yaml; --dst is a folder that receives labels/ and data.yaml (and images/
         with --copy-images / --link-images). A YOLO dataset is read through its images: converting
         to YOLO needs --images (data.yaml then points at that folder, or at DST/images with
         --copy-images / --link-images)

Boxes are converted exactly (VOC's 1-based pixels: x_min - 1, y_min - 1); category ids survive a
COCO -> YOLO -> COCO trip through data.yaml's category_ids, and a COCO -> VOC -> COCO trip with
--categories (the original COCO file: its ids and names). What the target cannot hold (crowd
regions in YOLO, masks and keypoints in VOC) is summed up, one line per kind. Problems in the
source are repaired and listed, one per record and field (or, with --strict, stop the conversion
at the first one). File names in the source that would put a file outside DST are refused.

examples:
  sceneparse convert --from coco --to yolo --src instances_val.json --images val2017 --dst yolo_val
  sceneparse convert --from coco --to yolo --task segment --src instances_val.json --images val2017 \\
      --dst yolo_seg --link-images
  sceneparse convert --from coco --to yolo --task pose --src person_keypoints_val.json --images val2017 --dst pose
  sceneparse convert --from yolo --to coco --src yolo_val --dst instances_back.json
  sceneparse convert --from voc --to coco --src VOCdevkit/VOC2012 --dst voc2012.json --strict
  sceneparse convert --from coco --to voc --src instances_val.json --dst voc_xml
  sceneparse convert --from voc --to coco --src voc_xml --images val2017 --categories instances_val.json \
      --dst instances_back.json
  sceneparse convert --from coco --to voc --src instances_val.json --dst voc_xml --check-images --images val2017
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert annotations between COCO, VOC and YOLO",
        description="Convert detection / segmentation / keypoint annotations between COCO JSON, Pascal VOC "
                    "XML and YOLO txt, validating them on the way.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="src_format", required=True, choices=FORMATS, help="source format")
    p.add_argument("--to", dest="dst_format", required=True, choices=FORMATS, help="destination format")
    p.add_argument("--src", required=True, help="source file or folder (see below)")
    p.add_argument("--dst", required=True, help="destination file or folder (see below)")
    p.add_argument("--task", default="detect", choices=("detect", "segment", "pose"),
                   help="YOLO label kind to read / write (default: detect)")
    p.add_argument("--images", help="image folder (COCO image root, VOC JPEGImages, YOLO images/)")
    p.add_argument("--names", help="class names for VOC/YOLO sources: a file (one per line, or a data.yaml) "
                                   "or a comma-separated list")
    p.add_argument("--categories", metavar="FILE",
                   help="VOC/YOLO sources: a COCO JSON whose categories (ids and names) the result keeps, e.g. the "
                        "COCO file a VOC / YOLO set was converted from (every class name must be one of them)")
    p.add_argument("--strict", action="store_true", help="stop at the first problem instead of repairing")
    p.add_argument("--check-images", action="store_true", help="decode every image (slow) to find unreadable ones")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--copy-images", action="store_true", help="YOLO destination: copy images into DST/images")
    g.add_argument("--link-images", action="store_true", help="YOLO destination: symlink images into DST/images")
    p.add_argument("--max-problems", type=int, default=50, help="how many problems to print (default: 50)")
    p.set_defaults(func=run)


def _names(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    path = Path(spec)
    if path.is_file():
        if path.suffix.lower() in (".yaml", ".yml"):
            return read_data_yaml(path).names
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [n.strip() for n in spec.split(",") if n.strip()]


def _coco_categories(spec: str):
    """The categories of a COCO JSON file (``--categories``)."""
    from ..data.formats.coco import load_json, parse_categories
    from ..data.formats.validate import Checker

    path = Path(spec)
    ck = Checker(strict=True)
    return parse_categories(load_json(path).get("categories"), str(path), ck)


def _with_categories(aset, cmap, spec: str):
    """``aset`` relabelled to the categories ``cmap`` (matched by name), which it then carries."""
    import numpy as np

    names = aset.categories.names
    index = {n: i for i, n in enumerate(cmap.names)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise DataError(Problem(spec, None, "categories", f"class names of the source that {spec} does not have",
                                unknown))
    lut = np.asarray([index[n] for n in names], dtype=np.int64)
    for a in aset.annotations:
        a.label = int(lut[a.label])
    aset.categories = cmap
    return aset


def _read(args):
    src = Path(args.src)
    if not src.exists():
        raise DataError(Problem(str(src), None, None, "source not found"))
    fmt = args.src_format
    cmap = None
    if args.categories:
        if fmt == "coco":
            raise DataError(Problem(None, None, "--categories", "only for VOC / YOLO sources (a COCO file has its own)"))
        cmap = _coco_categories(args.categories)
    if fmt == "coco":
        return read_coco(src, args.images, strict=args.strict, check_images=args.check_images)
    if fmt == "voc":
        names = _names(args.names) or (cmap.names if cmap is not None else None)
        aset = read_voc(src, args.images, names, strict=args.strict, check_images=args.check_images, progress=True)
        return aset if cmap is None else _with_categories(aset, cmap, args.categories)
    root = src.parent if src.is_file() else src
    yaml_path = src if src.is_file() else root / "data.yaml"
    names = _names(args.names) if args.names else yaml_path
    if not args.names and not yaml_path.is_file():
        raise DataError(Problem(str(yaml_path), None, None, "no data.yaml; give the class names with --names"))
    if args.images:
        images = Path(args.images)
    elif (root / "images").is_dir() or not yaml_path.is_file():
        images = root / "images"
    else:  # images not copied: data.yaml's train names the folder
        images = read_data_yaml(yaml_path).images or root / "images"
    aset = read_yolo(images, root / "labels", names, args.task, strict=args.strict,
                     check_images=args.check_images, progress=True)
    return aset if cmap is None else _with_categories(aset, cmap, args.categories)


def _write(args, aset):
    dst = Path(args.dst)
    fmt = args.dst_format
    if fmt == "coco":
        if dst.is_dir():
            dst = dst / "annotations.json"
        return dst, write_coco(aset, dst)
    if fmt == "voc":
        return dst, write_voc(aset, dst, progress=True)
    mode = "copy" if args.copy_images else "symlink" if args.link_images else "none"
    if args.task == "pose" and aset.keypoint_set is None:
        raise DataError(Problem(str(args.src), None, "keypoints", "--task pose needs a source with keypoints"))
    if aset.image_root is None:
        raise DataError(Problem(str(args.src), None, "--images", "a YOLO dataset is read through its images: give "
                                "the image folder with --images (data.yaml then points at it; add --copy-images or "
                                "--link-images to put the images into DST/images)"))
    return dst, write_yolo(aset, dst, args.task, images=mode, progress=True)


def _print_problems(title: str, problems: list[Problem], limit: int) -> None:
    """One line per problem (each names its record and field), at most ``limit``."""
    if not problems:
        return
    print(f"{title}: {len(problems)}")
    for p in problems[:limit]:
        print(f"  {p}")
    if len(problems) > limit:
        print(f"  ... and {len(problems) - limit} more")


def _print_summary(title: str, problems: list[Problem], shown: int = 5) -> None:
    """What a writer could not write, one line per kind (field, message, what was done) with the
    number of records and the first few of them -- not one line per annotation."""
    if not problems:
        return
    groups: dict[tuple, list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.field, p.message, p.repaired), []).append(p)
    print(f"{title}: {len(problems)} object(s)")
    for (fld, message, repaired), ps in groups.items():
        records = [p.record for p in ps if p.record]
        names = ", ".join(records[:shown]) + (f", ... ({len(records)} in all)" if len(records) > shown else "")
        what = f" [{repaired}]" if repaired else ""
        print(f"  {fld + ': ' if fld else ''}{message}{what}: {len(ps)} ({names})")


def run(args) -> int:
    _load()
    if args.copy_images or args.link_images:
        if args.dst_format != "yolo":
            raise DataError(Problem(None, None, "--copy-images/--link-images", "only for a YOLO destination"))
    aset = _read(args)
    n_obj = len(aset.annotations)
    kp = f", {aset.keypoint_set.num_keypoints} keypoints per object" if aset.keypoint_set else ""
    print(f"read {args.src_format} {args.src}: {len(aset.images)} images, {n_obj} objects, "
          f"{len(aset.categories)} categories{kp}")
    _print_problems("problems found in the source (repaired as noted)", aset.problems, args.max_problems)
    dst, res = _write(args, aset)
    what = f" ({args.task})" if args.dst_format == "yolo" else ""
    print(f"wrote {args.dst_format}{what} {dst}: {res.images} images, {res.objects} objects, {len(res.files)} files")
    _print_summary(f"not representable in {args.dst_format}", res.lost)
    return 0
