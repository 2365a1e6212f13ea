"""``sceneparse models``: the model zoo, with each model's task, classes and size."""
from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
Each model is built on PyTorch's meta device (shapes only, no memory, no weights) to read its
ModelInfo and count its parameters. The size depends on the number of classes: models whose builder
has no default are counted at 80 classes (COCO's things); 'sceneparse train' sizes them from the data.

examples:
  sceneparse models
  sceneparse models --task semantic
  sceneparse models --json > models.json
"""

#: classes to count a model at when its builder has no default
DEFAULT_CLASSES = 80


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the model zoo (task, classes, parameters)",
        description="List the models of the zoo (the names 'train --model' and 'export --model' take) with "
                    "their task, input size, number of classes and number of parameters.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", metavar="TASK", help="only models of this task (detect, instance, semantic, "
                   "panoptic, pose, promptable)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def describe(name: str) -> dict:
    """``{name, task, classes, params, input, note}`` of zoo model ``name``, built on the meta device."""
    import torch

    from ..models import zoo
    from ..models.base import model_info

    note = None
    with torch.device("meta"):
        try:
            model = zoo.build(name)
        except TypeError as e:
            if "num_classes" not in str(e):
                raise
            model = zoo.build(name, num_classes=DEFAULT_CLASSES)
            note = f"counted at {DEFAULT_CLASSES} classes: its builder has no default"
    info = model_info(model)
    size = info.size
    if size is None:
        shape = None
    elif size.fixed_size:
        shape = f"{size.fixed_size[0]}x{size.fixed_size[1]}"
    else:
        shape = f"short {size.min_size[-1]}, long <= {size.max_size}"
    return {"name": name, "task": info.task, "classes": info.num_classes,
            "params": sum(p.numel() for p in model.parameters()), "input": shape, "note": note}


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..models import zoo
    from ..models.base import TASKS

    if args.task is not None and args.task not in TASKS:
        raise ConfigError(f"--task {args.task!r}: tasks are {', '.join(TASKS)}")
    rows = []
    for name in zoo.available():
        try:
            row = describe(name)
        except Exception as e:  # noqa: BLE001 -- one model that cannot be built is listed as such
            row = {"name": name, "task": None, "classes": None, "params": None, "input": None,
                   "note": f"cannot be built without arguments ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
                   if str(e) else type(e).__name__}
        if args.task is None or row["task"] == args.task:
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no model of task {args.task!r}", file=sys.stderr)
        return 1
    width = max(len(r["name"]) for r in rows)
    print(f"{'model':<{width}}  {'task':<10} {'classes':>7} {'params':>9}  input")
    for r in rows:
        params = "?" if r["params"] is None else f"{r['params'] / 1e6:.1f} M"
        classes = "?" if r["classes"] is None else str(r["classes"])
        line = f"{r['name']:<{width}}  {r['task'] or '?':<10} {classes:>7} {params:>9}  {r['input'] or '-'}"
        print(line + (f"  ({r['note']})" if r["note"] else ""))
    print(f"{len(rows)} model(s); 'sceneparse train --model NAME' sets the classes from the data")
    return 0
