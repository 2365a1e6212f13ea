"""``sceneparse`` command line: a thin shell over the library.

Each mode lives in its own module under ``sceneparse.cli`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed ``argparse.Namespace``
and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: mode name -> module under sceneparse.cli (modes whose module is missing are not offered)
MODES = ("train", "val", "predict", "eval", "export", "convert", "data", "show", "demo")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="sceneparse",
        description="Scene understanding: detection, segmentation, panoptic, pose. Run 'sceneparse MODE --help'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  sceneparse demo --out runs/demo\n  sceneparse data synth --out data/synth --images 200\n"
               "  sceneparse eval --gt instances_val.json --pred results.json --type bbox",
    )
    parser.add_argument("--version", action="version", version=f"sceneparse {__version__}")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    for mode in MODES:
        try:
            module = importlib.import_module(f".{mode}_cmd", __name__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"{mode}_cmd"):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ..errors import SceneparseError

    try:
        return int(args.func(args) or 0)
    except SceneparseError as e:
        print(f"sceneparse {args.mode}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
