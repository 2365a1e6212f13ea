"""``sceneparse export``: write a model as an ONNX (or TorchScript) inference graph, verified against PyTorch."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

FORMATS = ("onnx", "torchscript")

EPILOG = """\
what the exported graph takes and returns (the model's ModelInfo decides; models without an
export graph stop with an error naming them)
  instance results (tasks detect / instance / pose, e.g. Faster / Mask / Keypoint R-CNN), one image per call:
    image float32 [3, H, W] RGB in [0, 1]  ->  boxes [D, 4] XYXY in input pixels, scores [D],
    labels [D] int64 0..C-1, + masks [D, H, W] probabilities (task instance, keep > mask_threshold),
    + keypoints [D, K, 3] (x, y, 1) and keypoint_scores [D, K] (task pose).
    Normalising, resizing and padding happen inside the graph, as in 'sceneparse predict'.
  semantic results (task semantic, e.g. U-Net, SegNet, FCN, DeepLab, LR-ASPP), a batch per call:
    images float32 [N, 3, H, W] RGB in [0, 1]  ->  logits [N, C, H, W], labels [N, H, W] int64.
    Normalising and padding happen inside the graph; resizing does not (the network runs at the
    size it is given; the metadata's preprocess.min_size is the short side it was trained at).
  H, W (and N) are dynamic unless --static. Metadata (ONNX metadata_props, TorchScript extra file
  sceneparse.json): task, result, model_info (the model's ModelInfo as JSON), model, class_names,
  categories, inputs, outputs, preprocess, imgsz (+ mask_threshold, num_keypoints where they apply).

--model is a sceneparse checkpoint (class names and architecture come from it) or a model name
from the zoo (with --num-classes, and --weights for a torchvision or sceneparse state dict; without
--weights the weights are random). Unless --no-verify, onnxruntime (or the loaded TorchScript
module) runs synthetic scenes at --imgsz and at a second size, and the outputs must match eager
PyTorch within the tolerances of sceneparse.engine.export.TOLERANCES; nothing is written otherwise.
A model that cannot be exported stops with an error naming the operator or construct.

examples:
  sceneparse export --model runs/train/best.pt --format onnx
  sceneparse export --model runs/train/best.pt --format onnx --imgsz 320 --out deploy/det.onnx --json export.json
  sceneparse export --model runs/seg/best.pt --format torchscript --imgsz 512
  sceneparse export --model maskrcnn_resnet50_fpn --weights maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth \\
      --num-classes 90 --format onnx --opset 17
  sceneparse export --model unet --num-classes 12 --format onnx --static --imgsz 256 --no-verify
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a model to ONNX or TorchScript (verified against PyTorch)",
        description="Export a checkpoint or a zoo model as a self-contained inference graph (preprocessing and "
                    "postprocessing included), check it and verify it against eager PyTorch.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="CKPT|NAME",
                   help="sceneparse checkpoint file, or a zoo model name")
    p.add_argument("--weights", metavar="FILE", help="with a model NAME: weights to load (torchvision or sceneparse)")
    p.add_argument("--num-classes", type=int, metavar="N", help="with a model NAME: number of classes")
    p.add_argument("--format", default="onnx", choices=FORMATS,
                   help="output format (default onnx; TorchScript is deprecated by PyTorch but still loads with "
                        "torch.jit.load)")
    p.add_argument("--imgsz", type=int, nargs="+", metavar="PX",
                   help="H [W] of the example image traced and verified (default: the model's min_size); with "
                        "--static the only size the graph accepts")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset (default 17; at least the model's export graph's minimum: 16 for mask "
                        "pasting and keypoint decoding, 11 otherwise)")
    p.add_argument("--out", metavar="FILE",
                   help="output file (default: the checkpoint's path or NAME with .onnx / .torchscript)")
    p.add_argument("--static", action="store_true", help="fixed input size (--imgsz) instead of dynamic axes")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the comparison with eager PyTorch (the ONNX checker still runs)")
    p.add_argument("--json", metavar="FILE", help="also write the export report as JSON")
    p.set_defaults(func=run)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix.lower() in (".pt", ".pth", ".ckpt", ".bin")


def _load(args):
    """(model or checkpoint path, default output stem)."""
    from ..errors import CheckpointError, ConfigError

    if Path(args.model).is_file():
        if args.weights or args.num_classes:
            raise ConfigError("--weights and --num-classes go with a model NAME; a checkpoint already holds both")
        return args.model, Path(args.model).with_suffix("")
    if _looks_like_path(args.model):
        raise CheckpointError("checkpoint file not found", path=args.model)
    from ..models import zoo

    if args.model not in zoo.available():
        raise ConfigError(f"--model {args.model!r} is neither a file nor a zoo model; models: "
                          f"{', '.join(zoo.available())}")
    try:
        model = zoo.build(args.model, num_classes=args.num_classes, weights=args.weights)
    except TypeError as e:
        if "num_classes" in str(e):
            raise ConfigError(f"model {args.model!r} needs --num-classes") from None
        raise
    if not args.weights:
        print(f"sceneparse export: note: no --weights, exporting randomly initialised {args.model}", file=sys.stderr)
    return model, Path(args.model)


def run(args: argparse.Namespace) -> int:
    from ..engine.export import FORMATS as SUFFIX
    from ..engine.export import export_model
    from ..errors import ConfigError

    if args.imgsz is not None and not 1 <= len(args.imgsz) <= 2:
        raise ConfigError(f"--imgsz takes H or H W, got {len(args.imgsz)} values")
    if args.imgsz is not None and min(args.imgsz) < 16:
        raise ConfigError(f"--imgsz must be at least 16 px, got {args.imgsz}")
    model, stem = _load(args)
    out = Path(args.out) if args.out else stem.with_name(stem.name + SUFFIX[args.format])
    imgsz = None if args.imgsz is None else (tuple(args.imgsz) if len(args.imgsz) == 2 else args.imgsz[0])
    kwargs = dict(imgsz=imgsz, dynamic=not args.static, verify=args.verify)
    if args.format == "onnx":
        kwargs["opset"] = args.opset
    name = None if isinstance(model, (str, os.PathLike)) else args.model
    report = export_model(model, out, format=args.format, name=name, **kwargs)
    print(report.summary())
    if args.json:
        report.save_json(args.json)
        print(f"report written to {args.json}")
    return 0
