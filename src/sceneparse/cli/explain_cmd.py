"""``sceneparse explain``: draw a model's explanation pictures (the lecture notes' figures of what it
computes) for one image, as PNGs with captions."""
from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
MODEL is a sceneparse checkpoint (.pt, written by 'sceneparse train'), or a zoo name
('sceneparse models') with --weights FILE (a checkpoint the zoo loads: torchvision and the other
reference layouts) or --random (random weights: the pictures then show an untrained network's numbers).
IMAGE is an image file, or 'synthetic[:SEED]' for one synthetic scene (512 x 512, seed 0 by
default).

Each picture goes to OUT/<image stem>_<view>.png (the synthetic scene's stem is 'synthetic<SEED>');
the command prints every file it wrote with its caption. --what picks one view (default: all of the
model's views; an unknown view is an error that lists the model's views, a model without views an
error that says so). Options a model's pictures do not use (e.g. --query for a model without
queries) are errors too.

examples:
  sceneparse explain --model runs/centernet/best.pt synthetic:3 --out runs/explain
  sceneparse explain --model detr_resnet50 --weights detr-r50-e632da11.pth photo.jpg --what attention --query 7
  sceneparse explain --model centernet_resnet18 --random --num-classes 7 synthetic --imgsz 256
  sceneparse explain --model maskrcnn_resnet18_fpn --random synthetic:3 --what anchor_matching --box 40,60,120,150
  sceneparse explain --model deeplabv3_resnet18 --random synthetic --what aspp --at 256,256
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="draw a model's explanation pictures (the notes' figures) for an image",
        description="Draw what a model computes on one image, as the lecture notes draw it (heatmap peaks and size "
                    "vectors, object queries and their attention, ...), to captioned PNG files.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="NAME|CKPT",
                   help="a sceneparse checkpoint, or a zoo name with --weights FILE or --random")
    p.add_argument("image", metavar="IMAGE", help="an image file, or synthetic[:SEED] for one synthetic scene")
    p.add_argument("--what", metavar="VIEW", help="one view of the model (default: all of its views)")
    p.add_argument("--query", type=int, metavar="Q", help="models that decode object queries: the query whose attention is drawn "
                                                          "(default: the highest-scoring)")
    p.add_argument("--out", default="runs/explain", metavar="DIR", help="output folder (default runs/explain)")
    p.add_argument("--weights", metavar="FILE", help="with a zoo name: the weights to load into it")
    p.add_argument("--random", action="store_true", help="with a zoo name: random weights (seeded by --seed)")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="with a zoo name: foreground classes (default: the builder's, else the synthetic scenes' 7)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random weights (default 0)")
    p.add_argument("--conf", type=float, metavar="X", help="score threshold of the detections drawn (models that "
                                                            "take it; default: the model's)")
    p.add_argument("--max-det", type=int, metavar="N", help="detections drawn at most (models that take it)")
    p.add_argument("--imgsz", type=int, metavar="PX", help="longer side of the network input (default: the model's)")
    p.add_argument("--level", type=int, metavar="L", help="models with a feature pyramid: the level (0 = the finest, "
                                                         "P2 / C2) of the anchors / receptive-field pictures")
    p.add_argument("--at", type=_numbers(2), metavar="X,Y", help="image pixels of the location a picture is about "
                                                                 "(anchors, receptive field, ASPP taps)")
    p.add_argument("--box", type=_numbers(4), metavar="X0,Y0,X1,Y1",
                   help="a ground-truth box in image pixels (anchor matching; default: the best detection)")
    p.add_argument("--roi", type=int, metavar="I", help="two-stage detectors: the RPN proposal (0 = best) whose RoI "
                                                       "Align sampling is drawn")
    p.add_argument("--top-k", type=int, metavar="K", help="how many boxes / candidates / classes a picture draws")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, auto")
    p.set_defaults(func=run)


def _numbers(n: int):
    """An argparse type: ``n`` comma-separated numbers -> a tuple of floats."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"expected {n} comma-separated numbers, got {text!r}")
        return values
    return parse


def _synthetic(spec: str):
    """``synthetic[:SEED]`` -> (image tensor, stem), or ``None`` when ``spec`` names a file."""
    from ..errors import DataError, Problem

    head, _, seed = spec.partition(":")
    if head != "synthetic" or Path(spec).exists():
        return None
    try:
        seed_value = int(seed) if seed else 0
    except ValueError:
        raise DataError(Problem(spec, None, "IMAGE", "synthetic[:SEED] takes an integer seed", seed)) from None
    from ..data.images import pixels_to_tensor
    from ..data.synthetic import SyntheticConfig, generate_scene, image_rng

    scene = generate_scene(image_rng(seed_value, 0), SyntheticConfig(seed=seed_value))
    return pixels_to_tensor(scene.image), f"synthetic{seed_value}"


def _model(args):
    """The model (eval mode, on the device) and a word naming it in messages."""
    import torch

    from ..engine.checkpoint import model_from_checkpoint
    from ..engine.trainer import resolve_device
    from ..errors import ConfigError, DataError, Problem
    from ..models import zoo

    device = resolve_device(args.device)
    path = Path(args.model)
    if path.is_file():
        if args.weights or args.random or args.num_classes is not None:
            raise ConfigError(f"{args.model} is a checkpoint: --weights, --random and --num-classes go with a zoo name")
        return model_from_checkpoint(path, device).model, str(path)
    names = zoo.available()
    if args.model not in names:
        if path.suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors") or path.parent != Path("."):
            raise DataError(Problem(str(path), None, "--model", "checkpoint file not found"))
        raise ConfigError(f"--model {args.model!r} is neither a checkpoint file nor a zoo model; zoo models: "
                          f"{', '.join(names)}")
    if bool(args.weights) == bool(args.random):
        raise ConfigError(f"--model {args.model} is a zoo name: give --weights FILE to load weights, or --random for "
                          "random weights (pictures of an untrained network)")
    if args.weights and not Path(args.weights).is_file():
        raise DataError(Problem(args.weights, None, "--weights", "weights file not found"))
    torch.manual_seed(args.seed)
    try:
        model = zoo.build(args.model, num_classes=args.num_classes, weights=args.weights)
    except TypeError as e:  # the builder has no default class count: the synthetic scenes' things
        if args.num_classes is not None or "num_classes" not in str(e):
            raise
        from ..data.synthetic import THING_NAMES

        model = zoo.build(args.model, num_classes=len(THING_NAMES), weights=args.weights)
        model.class_names = tuple(THING_NAMES)
    return model.to(device).eval(), args.model


def run(args: argparse.Namespace) -> int:
    from ..data.images import read_image
    from ..errors import ConfigError
    from ..viz.explain import write_explanations

    model, label = _model(args)
    synth = _synthetic(args.image)
    if synth is not None:
        image, stem = synth
    else:
        image, stem = read_image(args.image), Path(args.image).stem  # DataError naming the file if unreadable
    options = {k: v for k, v in (("query", args.query), ("conf", args.conf), ("max_det", args.max_det),
                                 ("imgsz", args.imgsz), ("level", args.level), ("at", args.at), ("box", args.box),
                                 ("roi", args.roi), ("top_k", args.top_k)) if v is not None}
    try:
        explanations = model.explain(image.to(model.device), what=args.what, **options)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None
    paths = write_explanations(explanations, args.out, stem)
    for path, e in zip(paths, explanations):
        print(f"{path}: {e.caption}")
    return 0
