"""The import graph of ``src/sceneparse``, as ARCHITECTURE.md draws it: a graph, not a line.

:data:`ALLOWED` lists, per top-level package (or top-level module), the sceneparse packages it may
import. Every import counts: ``import x``, ``from x import y``, relative imports (resolved),
imports inside functions and under ``if TYPE_CHECKING:``, and ``importlib.import_module`` with a
literal name. ``from pkg import name`` counts as importing ``pkg.name`` when that is a module.

The layers, lowest first (a package may import the ones below it, never one above)::

    conventions, errors, fileio           (leaves; conventions and fileio may raise errors)
    structures                            (the types every layer speaks)
    ops                                   (pure tensor functions)
    data | postprocess                    (siblings: neither imports the other)
    models                                (its postprocess() calls sceneparse.postprocess, so
                                           postprocess sits BELOW models and never imports them)
    evaluation                            (results in, numbers out)
    viz                                   (draws results and evaluation results)
    config                                (dataclass configs; only engine and cli read them)
    engine
    cli, __main__, the root package       (the shells)

and two rules stated explicitly on top of the graph:

1. ``evaluation`` and ``viz`` never import ``sceneparse.models`` (nor ``engine`` / ``cli`` /
   ``config``): they consume results, whatever model made them.
2. ``engine`` and ``cli`` (and the root package) never import a model family directly. Inside
   ``sceneparse.models`` they may import only :data:`MODELS_GATE`: the package root,
   ``models.base`` (SceneModel / ModelInfo) and ``models.zoo`` (NAME -> builder). Everything else
   under ``models/`` (detectors, segmentation, heads, backbones, necks, layers, pose, preprocess...)
   is a family module. They read a model's ``info`` and call its verbs; they never name a family's
   class nor reach into its submodules, which :func:`test_no_family_names_outside_models` checks
   by text (code, comments and docstrings alike: the rule is zero).
"""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sceneparse"
ROOT = "sceneparse"  # the root package (src/sceneparse/__init__.py) as a node of the graph

_LEAVES = {"conventions", "errors", "fileio"}
_LOW = _LEAVES | {"structures", "ops"}

#: package -> the sceneparse packages it may import (its own package and the root are always allowed)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "conventions": {"errors"},
    "fileio": {"errors"},
    "structures": set(_LEAVES),
    "ops": _LEAVES | {"structures"},
    "data": set(_LOW),
    "postprocess": set(_LOW),
    "models": _LOW | {"postprocess"},
    "evaluation": _LOW | {"data", "postprocess"},  # rule 1: never models, engine, cli, config
    "viz": _LOW | {"data", "postprocess", "evaluation"},  # rule 1 again
    "viewer": _LOW | {"data", "evaluation", "viz"},  # sceneparse view: rule 1 too (never models)
    "config": set(_LEAVES),
    "engine": _LOW | {"data", "postprocess", "models", "evaluation", "viz", "config"},  # rule 2
    "cli": _LOW | {"data", "postprocess", "models", "evaluation", "viz", "config", "engine", "viewer"},  # rule 2
    "__main__": {"cli"},
    # the root: its public names are imported lazily (PEP 562, by string), so eagerly nothing
    ROOT: set(),
}

#: rule 1, spelled out (and checked against ALLOWED below, so the two cannot drift apart)
NEVER: dict[str, set[str]] = {
    "evaluation": {"models", "engine", "cli", "config"},
    "viz": {"models", "engine", "cli", "config"},
}

#: rule 2: the only modules under sceneparse.models that these packages may import
MODELS_GATE = {"sceneparse.models", "sceneparse.models.base", "sceneparse.models.zoo"}
GATED = {"engine", "cli", "__main__", ROOT}

#: family class names and family submodule attributes: zero references outside src/sceneparse/models
FAMILY_NAMES = (
    "TwoStageDetector", "SemanticSegmentor", "FasterRCNN", "MaskRCNN", "KeypointRCNN",
    "roi_box", "roi_mask", "roi_keypoint", "roi_heads", "preprocessor",
)
_TEXT_SUFFIXES = {".py", ".pyi", ".yaml", ".yml", ".json", ".html", ".txt", ".md", ".cfg", ".toml"}


# --------------------------------------------------------------------------- the checker
def _modules(src: Path) -> dict[str, Path]:
    """Dotted module name (``sceneparse.engine.export``; a package by its own name) -> file."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = [src.name, *path.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _node(module: str) -> str:
    """The graph node of a dotted sceneparse module: its top-level package, or ROOT."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _imports(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """``(line, dotted module)`` for every sceneparse module that ``path`` imports."""
    is_pkg = path.name == "__init__.py"
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    root = module.split(".")[0]
    found: list[tuple[int, str]] = []

    def add(line: int, name: str) -> None:
        if name == root or name.startswith(root + "."):
            found.append((line, name))

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(package):
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                base = package[: len(package) - node.level + 1]
            else:
                base = []
            base_name = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:
                sub = f"{base_name}.{alias.name}"
                add(node.lineno, sub if sub in known else base_name)  # a submodule, or a name in base
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                   or isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
            name = node.args[0].value
            if not name.startswith("."):
                add(node.lineno, name)
            elif len(node.args) > 1 and isinstance(node.args[1], ast.Name) and node.args[1].id in (
                    "__name__", "__package__"):
                level = len(name) - len(name.lstrip("."))
                anchor = module.split(".") if node.args[1].id == "__name__" else package
                add(node.lineno, ".".join(anchor[: len(anchor) - level + 1] + [name.lstrip(".")]))
    return found


def import_violations(src: Path, allowed: dict[str, set[str]] = ALLOWED,
                      gate: set[str] = MODELS_GATE, gated: set[str] = GATED) -> list[str]:
    """Every import in the tree under ``src`` that the graph or rule 2 forbids, as readable lines."""
    modules = _modules(src)
    known = set(modules)
    bad = []
    for module, path in modules.items():
        me = _node(module)
        where = path.relative_to(src.parent)
        if me not in allowed:
            bad.append(f"{where}: package {me!r} has no entry in ALLOWED")
            continue
        for line, target in _imports(path, module, known):
            other = _node(target)
            if other not in (me, ROOT) and other not in allowed[me]:
                bad.append(f"{where}:{line} imports {target} ({me} may not import {other})")
            elif (me in gated and other == "models" and target not in gate
                  and not any(target.startswith(g + ".") for g in gate - {f"{src.name}.models"})):
                bad.append(f"{where}:{line} imports {target} (a model family module; "
                           f"{me} may import only {', '.join(sorted(gate))})")
    return bad


def family_name_references(src: Path, names=FAMILY_NAMES) -> list[str]:
    """``file:line: name`` for every textual reference to a family name outside ``src/models``."""
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9_])")
    models = src / "models"
    hits = []
    for path in sorted(src.rglob("*")):
        if (not path.is_file() or path.suffix not in _TEXT_SUFFIXES or "__pycache__" in path.parts
                or models in path.parents):
            continue
        for n, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in pattern.finditer(text):
                hits.append(f"{path.relative_to(src.parent)}:{n}: {m.group(1)}")
    return hits


# --------------------------------------------------------------------------- the graph itself
def test_graph_covers_every_package_and_names_only_real_ones():
    nodes = {_node(m) for m in _modules(SRC)}
    assert nodes <= set(ALLOWED), f"add an ALLOWED entry for {sorted(nodes - set(ALLOWED))}"
    named = set(ALLOWED).union(*ALLOWED.values())
    assert named <= nodes, f"ALLOWED names packages that do not exist: {sorted(named - nodes)}"


def test_graph_is_acyclic():
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 1:
            raise AssertionError("cycle in ALLOWED: " + " -> ".join(trail + [n]))
        if state.get(n) == 2:
            return
        state[n] = 1
        for m in sorted(ALLOWED.get(n, ())):
            visit(m, trail + [n])
        state[n] = 2

    for n in sorted(ALLOWED):
        visit(n, [])


def test_graph_states_the_rules():
    for pkg, never in NEVER.items():
        assert not ALLOWED[pkg] & never, f"ALLOWED lets {pkg} import {sorted(ALLOWED[pkg] & never)}"
    assert "models" not in ALLOWED["postprocess"] and "data" not in ALLOWED["models"]
    assert {p for p, deps in ALLOWED.items() if "config" in deps} == {"engine", "cli"}
    assert {p for p, deps in ALLOWED.items() if "models" in deps} <= GATED


# --------------------------------------------------------------------------- the source tree
def test_imports_follow_the_graph():
    bad = import_violations(SRC)
    assert not bad, "imports against ARCHITECTURE.md's graph:\n" + "\n".join(bad)


def test_evaluation_and_viz_never_import_models():
    bad = [v for v in import_violations(SRC) if v.startswith(("sceneparse/evaluation/", "sceneparse/viz/"))]
    assert not bad, "evaluation / viz must consume results only:\n" + "\n".join(bad)


def test_engine_and_cli_reach_models_only_through_the_gate():
    bad = [v for v in import_violations(SRC) if "model family module" in v]
    assert not bad, ("engine / cli must read ModelInfo and call the verbs, not import a family:\n"
                     + "\n".join(bad))


def test_no_family_names_outside_models():
    hits = family_name_references(SRC)
    assert not hits, (f"{len(hits)} references to model-family names outside src/sceneparse/models "
                      "(code, comments and docstrings count):\n" + "\n".join(hits))


# --------------------------------------------------------------------------- the checker catches
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "sceneparse"
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for d in [src, *(p for p in src.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return src


def test_checker_reports_forbidden_imports(tmp_path):
    src = _tree(tmp_path, {
        "errors.py": "",
        "models/zoo.py": "",
        "models/base.py": "",
        "models/detectors/two_stage.py": "class TwoStageDetector: ...\n",
        "models/heads/rpn.py": "",
        "evaluation/coco.py": """\
            from ..errors import Problem           # fine
            from .. import __version__             # the root: fine

            def score(model):
                from ..models.detectors import two_stage   # rule 1, inside a function
                return two_stage
            """,
        "viz/draw.py": "import sceneparse.models\n",  # rule 1, absolute, the models root
        "engine/export.py": """\
            from ..models import zoo                  # the gate: fine
            from ..models.base import SceneModel      # the gate: fine
            from ..models import detectors            # a family package, via from-import
            import sceneparse.models.heads.rpn        # a family module, absolute
            """,
        "cli/run_cmd.py": """\
            import importlib
            from ..engine import export               # fine
            def run():
                return importlib.import_module("sceneparse.models.detectors.two_stage")
            """,
        "postprocess/detection.py": "from ..models import zoo\n",  # below models: forbidden
        "data/datasets.py": "from . import records\nfrom ..structures import boxes\n",  # fine
        "data/records.py": "",
        "structures/boxes.py": "from ..ops import nms\n",  # upward: forbidden
        "ops/nms.py": "",
    })
    bad = import_violations(src)
    expected = {
        "sceneparse/evaluation/coco.py:5 imports sceneparse.models.detectors.two_stage",
        "sceneparse/viz/draw.py:1 imports sceneparse.models",
        "sceneparse/engine/export.py:3 imports sceneparse.models.detectors",
        "sceneparse/engine/export.py:4 imports sceneparse.models.heads.rpn",
        "sceneparse/cli/run_cmd.py:4 imports sceneparse.models.detectors.two_stage",
        "sceneparse/postprocess/detection.py:1 imports sceneparse.models.zoo",
        "sceneparse/structures/boxes.py:1 imports sceneparse.ops.nms",
    }
    assert {v.split(" (")[0] for v in bad} == expected, "\n".join(bad)
    assert sum("model family module" in v for v in bad) == 3
    assert all("may not import" in v for v in bad if v.startswith(("sceneparse/evaluation", "sceneparse/viz")))


def test_checker_reports_family_names(tmp_path):
    src = _tree(tmp_path, {
        "models/detectors/two_stage.py": "class TwoStageDetector:\n    roi_heads = None\n",  # inside: fine
        "engine/tasks.py": '"""Detects a :class:`MaskRCNN`."""\n\ndef has_masks(m):\n'
                           '    return getattr(m, "roi_mask", None) is not None  # roi_mask_head is not it\n',
        "viz/draw.py": "# the preprocessor's scale\nx = 1\n",
        "evaluation/coco.py": "roi_boxes = my_roi_box_list = 0\n",  # longer identifiers: not references
    })
    assert family_name_references(src) == [
        "sceneparse/engine/tasks.py:1: MaskRCNN",
        "sceneparse/engine/tasks.py:4: roi_mask",
        "sceneparse/viz/draw.py:1: preprocessor",
    ]
