"""Imports point one way: conventions/errors <- structures <- ops <- postprocess <- data, models
<- evaluation <- viz <- config <- engine <- cli. (ARCHITECTURE.md put postprocess above models, but
models' own ``postprocess()`` method calls it, so it sits below them and needs only structures/ops.) A module may import only packages of a strictly lower level (or its own)."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sceneparse"
LEVEL = {
    "__init__": 0, "conventions": 0, "errors": 0, "fileio": 0,
    "structures": 1,
    "ops": 2,
    "postprocess": 3,  # models call it from their postprocess(); it needs only structures and ops
    "data": 4, "models": 4,
    "evaluation": 5,
    "viz": 6,
    "config": 6.5,  # read by the engine (trainer); models and data never see a config object
    "engine": 7,
    "cli": 8, "__main__": 8,
}


def _top(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported_tops(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg_parts = list(path.relative_to(SRC).parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "sceneparse" and len(parts) > 1:
                    out.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "sceneparse":
                    if len(parts) > 1:
                        out.add(parts[1])
                    else:
                        out.update(a.name for a in node.names)
            else:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                full = base + (node.module.split(".") if node.module else [])
                if full:
                    out.add(full[0])
                else:
                    out.update(a.name for a in node.names)
    return out


def test_every_top_level_module_has_a_level():
    tops = {_top(p) for p in SRC.rglob("*.py")}
    assert tops <= set(LEVEL), f"add a level for {sorted(tops - set(LEVEL))}"


def test_imports_point_one_way():
    bad = []
    for path in SRC.rglob("*.py"):
        me = _top(path)
        if me in ("__init__", "__main__"):
            continue
        for other in _imported_tops(path):
            if other == me or other == "__version__":
                continue
            if other not in LEVEL:
                continue
            if LEVEL[other] >= LEVEL[me]:
                bad.append(f"{path.relative_to(SRC)} imports sceneparse.{other}")
    assert not bad, "imports against the one-way flow:\n" + "\n".join(bad)
