"""``sceneparse`` command line: a thin shell over the library.

Each mode lives in its own module under ``sceneparse.cli`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed ``argparse.Namespace``
and returning an exit code.

Only the module of the mode asked for is imported (``sceneparse --help`` and ``sceneparse MODE
--help`` answer without importing PyTorch: :data:`MODES` holds each mode's one-line help); a mode's
module imports the library inside its ``run``.

At this boundary every exception is one of two kinds: a :class:`~sceneparse.errors.SceneparseError`
(bad input, a full disk, ...) -- or an ``OSError`` naming a file (permissions, a missing folder) --
printed as ``sceneparse MODE: error: MESSAGE`` (exit 1), or a bug, printed as one line saying so and
where to report it (exit 3), with the traceback only under ``--debug`` (or ``SCENEPARSE_DEBUG=1``).
Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

#: mode -> one-line help of ``sceneparse --help`` (the mode's module must say the same; a test checks)
MODES: dict[str, str] = {
    "train": "train a detector or a semantic segmentation model",
    "val": "evaluate a checkpoint on a dataset split",
    "predict": "run a checkpoint on images (COCO results JSON, label PNGs, drawings)",
    "eval": "evaluate predictions (COCO AP, mIoU, PQ) from files",
    "export": "export a model to ONNX or TorchScript (verified against PyTorch)",
    "convert": "convert annotations between COCO, VOC and YOLO",
    "data": "dataset utilities (synthetic scenes)",
    "show": "draw a dataset's annotations to PNG files",
    "demo": "synthesize scenes, train, predict, evaluate and write an HTML report",
    "models": "list the model zoo (task, classes, parameters)",
    "explain": "draw a model's explanation pictures (the notes' figures) for an image",
    "view": "browse a dataset and its predictions in a web browser (local server)",
}

#: where an unexpected exception (a bug) should be reported
BUG_REPORT = "the sceneparse issue tracker"

#: exit codes: SceneparseError (bad input, full disk, ...), a bug, Ctrl-C
EXIT_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 1, 3, 130

_GLOBAL_FLAGS = ("--debug",)


def _mode_module(mode: str):
    """The module of ``mode``, or ``None`` when it is not installed."""
    try:
        return importlib.import_module(f".{mode}_cmd", __name__)
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith(f"{mode}_cmd"):
            return None
        raise


def build_parser(mode: str | None = None) -> argparse.ArgumentParser:
    """The ``sceneparse`` parser. ``mode``: the only mode whose module is imported and whose options
    are registered (the others are listed by name and help); ``"*"``: all of them."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="sceneparse",
        description="Scene understanding: detection, segmentation, panoptic, pose. Run 'sceneparse MODE --help'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  sceneparse demo --out runs/demo\n  sceneparse data synth --out data/synth --images 200\n"
               "  sceneparse eval --gt instances_val.json --pred results.json --type bbox\n"
               "  sceneparse models\n\n"
               "errors in the input end with a message (exit 1); anything else is a bug in sceneparse: one line "
               "says so (exit 3),\n--debug adds the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"sceneparse {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an unexpected error (a bug), print the whole traceback (also SCENEPARSE_DEBUG=1)")
    parser.add_argument("--max-image-pixels", type=int, metavar="N",
                        help="refuse image files declaring more than N pixels, before decoding (default 89478485, "
                             "PIL's limit; also SCENEPARSE_MAX_IMAGE_PIXELS)")
    sub = parser.add_subparsers(dest="mode", metavar="MODE")
    for name, help_text in MODES.items():
        module = _mode_module(name) if mode in (name, "*") else None
        if module is not None:
            module.register(sub)
        elif mode == "*" or name != mode:
            sub.add_parser(name, help=help_text, add_help=False)  # listed only; never parsed
    return parser


def _first_word(argv: list[str]) -> str | None:
    """The first word of ``argv`` that is not a global option or its value: the mode, if any."""
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--max-image-pixels":
            skip = True
            continue
        if a.startswith("-"):
            continue
        return a
    return None


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)parser that parsed the mode's words (``data synth`` -> the ``synth`` parser)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = [a.choices.get(getattr(args, a.dest, None)) for a in subs]
        chosen = [c for c in chosen if c is not None]
        if not chosen:
            return parser
        parser = chosen[0]


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments`` with, for each mistyped flag, the closest one the parser takes."""
    options = sorted(s for s in parser._option_string_actions if s.startswith("--"))
    hints = []
    for word in extras:
        if not word.startswith("-"):
            continue
        flag = word.split("=", 1)[0]
        close = difflib.get_close_matches(flag if flag.startswith("--") else "-" + flag, options, n=1, cutoff=0.6)
        if close:
            hints.append(f"{flag}: did you mean {close[0]}?")
    text = f"unrecognized arguments: {' '.join(extras)}"
    if hints:
        text += " (" + "; ".join(hints) + ")"
    return text + f"; see '{parser.prog} --help'"


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("SCENEPARSE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    if "--" in argv:
        cut = argv.index("--")
        argv = [a for a in argv[:cut] if a not in _GLOBAL_FLAGS] + argv[cut:]
    else:
        argv = [a for a in argv if a not in _GLOBAL_FLAGS]  # --debug is accepted after the mode too
    word = _first_word(argv)
    mode = word if word in MODES else None
    parser = build_parser(mode)
    if word is not None and mode is None:
        close = difflib.get_close_matches(word, list(MODES), n=1, cutoff=0.5)
        parser.error(f"unknown mode {word!r}" + (f"; did you mean '{close[0]}'?" if close else "")
                     + f" (modes: {', '.join(MODES)})")
    args, extras = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        if extras:
            parser.error(_unrecognized(parser, extras))
        parser.print_help()
        return 2
    if extras:
        _innermost(parser, args).error(_unrecognized(_innermost(parser, args), extras))
    return run(args, debug=debug)


def run(args: argparse.Namespace, *, debug: bool = False) -> int:
    """Run the parsed mode; every exception ends here as a message (see the module notes)."""
    prog = f"sceneparse {args.mode}"
    from ..data.images import MAX_PIXELS_ENV, set_max_image_pixels
    from ..errors import SceneparseError
    from ..fileio import DISK_FULL_ERRNOS, DiskFullError

    before = os.environ.get(MAX_PIXELS_ENV)
    try:
        if args.max_image_pixels is not None:
            set_max_image_pixels(args.max_image_pixels)
        return int(args.func(args) or 0)
    except SceneparseError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        if debug:
            import traceback

            traceback.print_exc()
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        if e.filename is None and e.errno not in DISK_FULL_ERRNOS:
            return _bug(prog, e, debug)
        # the file system said no (permissions, a full disk, a missing folder): the environment, not a bug
        if e.errno in DISK_FULL_ERRNOS:
            text = str(DiskFullError.from_oserror(e, e.filename)) if e.filename else f"{e.strerror} (writing a file)"
        else:
            text = f"{e.filename}: {e.strerror or e}"
        print(f"{prog}: error: {text}", file=sys.stderr)
        if debug:
            import traceback

            traceback.print_exc()
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 -- the boundary: anything else is a bug
        return _bug(prog, e, debug)
    finally:
        if args.max_image_pixels is not None:
            set_max_image_pixels(None)
            if before is not None:
                os.environ[MAX_PIXELS_ENV] = before


def _bug(prog: str, e: BaseException, debug: bool) -> int:
    """One line: an unexpected exception is a bug, and where to report it (+ the traceback with --debug)."""
    where = _where(e)
    text = str(e).splitlines()[0][:300] if str(e) else ""
    print(f"{prog}: internal error (a bug in sceneparse, not in your input): {type(e).__name__}"
          f"{': ' + text if text else ''}{where}. Please report it to {BUG_REPORT} with the command line and "
          + ("the traceback below" if debug else "its output with --debug (which prints the traceback)"),
          file=sys.stderr)
    if debug:
        import traceback

        traceback.print_exception(e)
    return EXIT_BUG


def _where(e: BaseException) -> str:
    """`` at FILE:LINE`` of the innermost sceneparse frame of ``e``'s traceback (where to look)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if f"{os.sep}sceneparse{os.sep}" in f.filename]
    f = (mine or frames or [None])[-1]
    if f is None:
        return ""
    name = f.filename
    i = name.rfind(f"{os.sep}sceneparse{os.sep}")
    return f" at {name[i + 1:] if i >= 0 else name}:{f.lineno}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
