"""Fuzzing every reader and validator with mutations of valid files (issue 24, section 5).

A *target* is a reader (or a reader + writer) of one kind of file. Each fuzz case takes a valid seed
file of that kind (made from a small synthetic dataset), applies 1-3 random mutations (types
swapped, keys dropped, NaN / inf, huge numbers, wrong lengths, path strings with ``..`` or absolute,
unicode, truncation, byte flips) and runs the reader in a sandbox. The property:

* the reader returns normally, or raises a :class:`~sceneparse.errors.SceneparseError` whose message
  names the file it was reading (its base name); any other exception is a finding;
* nothing is written outside the output folder (the sandbox's parent tree is compared before/after).

The same targets run with a fixed seed and a small budget in CI (``tests/test_fuzz.py``) and with a
large budget in ``benchmarks/fuzz.py``, which prints inputs tried / handled per target.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: values a hostile or careless file puts where a valid value was
HOSTILE_VALUES: list[Any] = [
    None, "", "..", "../../../escaped.txt", "/tmp/absolute_escape.txt", "a/../../b", "名前", "ÿ!!", "!!", "\x00",
    float("nan"), float("inf"), -float("inf"), -1, 0, 1, -1e9, 2 ** 31, 2 ** 63, 1e308, 1.5, True, False,
    [], {}, [1, 2], [1, 2, 3, 4, 5], [[1, 1, float("nan"), 5, 9, 9]], [[0, 0, 1]], [None], {"counts": "!!", "size": [2, 2]},
    {"counts": [1, 2, 3], "size": [1, 1]}, {"size": [-5, 3], "counts": "0"}, "1" * 40, [float("nan")] * 4,
]


def _walk(doc: Any) -> list[tuple[Any, Any]]:
    """(container, key) pairs of every value in a JSON-like tree."""
    out = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            if isinstance(v, (dict, list)):
                stack.append(v)
    return out


def mutate_tree(doc: Any, rng: random.Random, n: int) -> Any:
    """``n`` random mutations of a JSON-like document (a deep copy)."""
    doc = copy.deepcopy(doc)
    for _ in range(n):
        spots = _walk(doc)
        if not spots:
            return rng.choice(HOSTILE_VALUES)
        node, key = rng.choice(spots)
        op = rng.randrange(6)
        if op == 0 and isinstance(node, dict):
            del node[key]
        elif op == 1 and isinstance(node, list):
            node.append(copy.deepcopy(node[key]))  # a duplicate (same id)
        elif op == 2 and isinstance(node[key], list):
            node[key] = node[key][: rng.randrange(len(node[key]) + 1)]  # truncated
        elif op == 3 and isinstance(node[key], (int, float)) and not isinstance(node[key], bool):
            node[key] = rng.choice([-node[key], node[key] * 1e12, str(node[key]), float("nan")])
        else:
            node[key] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
    return doc


def mutate_text(text: str, rng: random.Random, n: int) -> str:
    """Line / token mutations of a text file (YOLO labels, XML, YAML)."""
    lines = text.splitlines()
    for _ in range(n):
        if not lines:
            lines = [str(rng.choice(HOSTILE_VALUES))]
            continue
        i = rng.randrange(len(lines))
        op = rng.randrange(5)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            toks = lines[i].split(" ")
            j = rng.randrange(len(toks))
            toks[j] = str(rng.choice(HOSTILE_VALUES))
            lines[i] = " ".join(toks)
        elif op == 3:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        else:
            for word in ("nan", "inf", "-1", "..", "../../x", "1e309", "名前", "<", "&"):
                if rng.random() < 0.2:
                    lines[i] = lines[i].replace(rng.choice(lines[i].split() or [" "]), word, 1)
    return "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")


def mutate_bytes(data: bytes, rng: random.Random, n: int) -> bytes:
    """Byte flips, truncation and splices of a binary file (PNG, checkpoint)."""
    b = bytearray(data)
    for _ in range(n):
        if not b:
            break
        op = rng.randrange(4)
        i = rng.randrange(len(b))
        if op == 0:
            b[i] = rng.randrange(256)
        elif op == 1:
            del b[i:]
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        else:
            j = rng.randrange(len(b))
            b[i:i + 4] = b[j:j + 4]
    return bytes(b)


# ---- the sandbox -------------------------------------------------------------------------------------
def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for f in filenames:
            p = Path(dirpath) / f
            try:
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
            except OSError:
                pass
    return out


@dataclass
class Outcome:
    target: str
    kind: str  # "ok" | "error" (a SceneparseError naming the file) | "finding"
    detail: str = ""


@dataclass
class Tally:
    tried: int = 0
    ok: int = 0
    handled: int = 0
    findings: list[str] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.tried += 1
        if o.kind == "ok":
            self.ok += 1
        elif o.kind == "error":
            self.handled += 1
        else:
            self.findings.append(o.detail)


# ---- targets -------------------------------------------------------------------------------------------
@dataclass
class Target:
    """``make(case_dir, rng)`` writes the mutated input(s) into ``case_dir/in`` and returns the path the
    error must name; ``run(case_dir, named)`` reads it (writing only into ``case_dir/out``)."""

    name: str
    make: Callable[[Path, random.Random], Path]
    run: Callable[[Path, Path], Any]


class Seeds:
    """Valid seed files made once from a small synthetic dataset (and a tiny checkpoint)."""

    def __init__(self, root: Path):
        from sceneparse.data.synthetic import SyntheticConfig, write_dataset

        self.root = root
        self.data = root / "synth"
        cfg = SyntheticConfig(height=48, width=48, num_images=4, seed=11, empty_prob=0.0, crowd_prob=0.5)
        write_dataset(self.data, cfg, splits={"train": 2, "val": 2}, workers=1, progress=False, overwrite=True)
        ann = self.data / "annotations"
        self.instances = json.loads((ann / "instances_val.json").read_text())
        self.keypoints = json.loads((ann / "person_keypoints_val.json").read_text())
        self.panoptic = json.loads((ann / "panoptic_val.json").read_text())
        self.panoptic_png = {p.name: p.read_bytes() for p in (ann / "panoptic_val").iterdir()}
        self.semantic_png = {p.name: p.read_bytes() for p in (self.data / "semantic" / "val").iterdir()}
        self.images = self.data / "images" / "val"
        self.results = self._results()
        # YOLO and VOC seeds by sceneparse's own converters
        from sceneparse.data.formats import read_coco, write_voc, write_yolo

        aset = read_coco(ann / "instances_val.json", self.images)
        write_yolo(aset, root / "yolo", "segment")
        write_voc(aset, root / "voc")
        self.yolo_labels = {p.name: p.read_text() for p in (root / "yolo" / "labels").rglob("*.txt")}
        self.data_yaml = (root / "yolo" / "data.yaml").read_text()
        self.voc_xml = {p.name: p.read_text() for p in (root / "voc").rglob("*.xml")}
        self.checkpoint = self._checkpoint()
        self.config_yaml = "model:\n  name: unet\n  kwargs: {base_channels: 4, depth: 2}\ntrain:\n  epochs: 2\n" \
                           "data:\n  batch_size: 2\n"

    def _results(self) -> list[dict]:
        out = []
        for a in self.instances["annotations"]:
            r = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
                 "segmentation": a["segmentation"]}
            out.append(r)
        return out

    def _checkpoint(self) -> bytes:
        import torch

        from sceneparse.engine.checkpoint import save_checkpoint
        from sceneparse.models import zoo

        m = zoo.build("unet", num_classes=2, base_channels=2, depth=1)
        path = self.root / "seed.pt"
        save_checkpoint(path, m, config={"model": {"name": "unet", "kwargs": {"base_channels": 2, "depth": 1}}},
                        categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        del torch
        return path.read_bytes()


def _write_json(path: Path, doc: Any, rng: random.Random) -> None:
    text = json.dumps(doc, allow_nan=True)
    if rng.random() < 0.05:
        text = text[: rng.randrange(len(text) + 1)]  # truncated JSON
    path.write_text(text)


def _folder_with_one_mutated(d: Path, files: dict, rng: random.Random, mutate) -> Path:
    """Write ``files`` (name -> text or bytes) into ``d``, one of them (drawn) mutated; returns it."""
    d.mkdir()
    names = sorted(files)
    victim = rng.choice(names)
    for n in names:
        data = mutate(files[n], rng, rng.randint(1, 3)) if n == victim else files[n]
        (d / n).write_bytes(data if isinstance(data, bytes) else data.encode())
    return d / victim


def targets(seeds: Seeds) -> list[Target]:
    from sceneparse.data import formats as F

    def coco_make(doc_attr: str, name: str):
        def make(case: Path, rng: random.Random) -> Path:
            p = case / "in" / name
            _write_json(p, mutate_tree(getattr(seeds, doc_attr), rng, rng.randint(1, 3)), rng)
            return p
        return make

    def read_coco(case: Path, p: Path):
        F.read_coco(p, seeds.images, strict=False)

    def read_coco_strict(case: Path, p: Path):
        F.read_coco(p, seeds.images, strict=True)

    def convert_coco_to_yolo(case: Path, p: Path):
        aset = F.read_coco(p, seeds.images, strict=False)
        F.write_yolo(aset, case / "out" / "yolo", "segment", images="copy")
        F.write_voc(aset, case / "out" / "voc")
        F.write_coco(aset, case / "out" / "coco.json")

    def eval_gt(case: Path, p: Path):
        from sceneparse.evaluation import evaluate_coco

        evaluate_coco(p, seeds.results, "segm")
        evaluate_coco(p, seeds.results, "bbox")

    def results_make(case: Path, rng: random.Random) -> Path:
        p = case / "in" / "results.json"
        _write_json(p, mutate_tree(seeds.results, rng, rng.randint(1, 3)), rng)
        return p

    def eval_results(case: Path, p: Path):
        from sceneparse.evaluation import evaluate_coco

        gt = seeds.data / "annotations" / "instances_val.json"
        evaluate_coco(gt, p, "segm")
        evaluate_coco(gt, p, "bbox")

    def keypoints_results(case: Path, p: Path):
        F.read_coco(p, seeds.images, strict=False)
        from sceneparse.evaluation import evaluate_coco

        res = [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a.get("keypoints"),
                "score": 1.0} for a in seeds.keypoints["annotations"] if a.get("num_keypoints", 0) > 0]
        if res:
            evaluate_coco(p, res, "keypoints")

    def panoptic_make(case: Path, rng: random.Random) -> Path:
        d = case / "in"
        (d / "png").mkdir()
        for name, data in seeds.panoptic_png.items():
            (d / "png" / name).write_bytes(mutate_bytes(data, rng, 1) if rng.random() < 0.3 else data)
        p = d / "panoptic.json"
        _write_json(p, mutate_tree(seeds.panoptic, rng, rng.randint(1, 3)), rng)
        return p

    def read_panoptic(case: Path, p: Path):
        from sceneparse.data.datasets import SceneDataset

        aset = F.read_coco_panoptic(p, case / "in" / "png", seeds.images)
        ds = SceneDataset(aset, load_masks=False, load_keypoints=False, load_panoptic=True)
        for i in range(len(ds)):
            ds[i]

    def yolo_make(case: Path, rng: random.Random) -> Path:
        victim = _folder_with_one_mutated(case / "in" / "labels", seeds.yolo_labels, rng, mutate_text)
        (case / "in" / "data.yaml").write_text(mutate_text(seeds.data_yaml, rng, 1) if rng.random() < 0.3
                                               else seeds.data_yaml)
        return victim

    def read_yolo(case: Path, p: Path):
        meta = F.read_data_yaml(case / "in" / "data.yaml")
        F.read_yolo(seeds.images, case / "in" / "labels", meta.names, "segment")

    def voc_make(case: Path, rng: random.Random) -> Path:
        return _folder_with_one_mutated(case / "in" / "Annotations", seeds.voc_xml, rng, mutate_text)

    def read_voc(case: Path, p: Path):
        aset = F.read_voc(case / "in" / "Annotations", seeds.images)
        F.write_yolo(aset, case / "out" / "yolo", "detect")

    def png_make(case: Path, rng: random.Random) -> Path:
        return _folder_with_one_mutated(case / "in" / "labels", seeds.semantic_png, rng, mutate_bytes)

    def read_pngs(case: Path, p: Path):
        from sceneparse.data.datasets import SceneDataset

        aset = F.read_semantic_pngs(case / "in" / "labels", seeds.images)
        ds = SceneDataset(aset, load_masks=False, load_keypoints=False, load_semantic=True)
        for i in range(len(ds)):
            ds[i]

    def ckpt_bytes_make(case: Path, rng: random.Random) -> Path:
        p = case / "in" / "model.pt"
        p.write_bytes(mutate_bytes(seeds.checkpoint, rng, rng.randint(1, 3)))
        return p

    def ckpt_tree_make(case: Path, rng: random.Random) -> Path:
        import torch

        ck = torch.load(io.BytesIO(seeds.checkpoint), weights_only=True)
        plain = {k: v for k, v in ck.items() if k != "model"}
        mutated = mutate_tree(plain, rng, rng.randint(1, 3))
        if isinstance(mutated, dict):
            mutated["model"] = ck["model"]
        p = case / "in" / "model.pt"
        torch.save(mutated, p)
        return p

    def load_ckpt(case: Path, p: Path):
        import torch

        from sceneparse.engine.checkpoint import model_from_checkpoint

        m = model_from_checkpoint(p).model
        m.predict([torch.rand(3, 16, 16)])

    def config_make(case: Path, rng: random.Random) -> Path:
        p = case / "in" / "cfg.yaml"
        p.write_text(mutate_text(seeds.config_yaml, rng, rng.randint(1, 3)))
        return p

    def load_cfg(case: Path, p: Path):
        from sceneparse.config import load_config

        rng = random.Random(p.stat().st_size)
        over = [f"{rng.choice(['train.epochs', 'optim.lr', 'data.batch_size', 'model.kwargs', 'nope.x', ''])}="
                f"{rng.choice(['1', 'nan', '-1', '[1, 2', '{a: 1}', '..', '1e400', 'true'])}"]
        load_config(p, over if rng.random() < 0.5 else [])

    return [
        Target("coco_instances", coco_make("instances", "instances.json"), read_coco),
        Target("coco_instances_strict", coco_make("instances", "instances.json"), read_coco_strict),
        Target("coco_convert", coco_make("instances", "instances.json"), convert_coco_to_yolo),
        Target("coco_eval_gt", coco_make("instances", "instances.json"), eval_gt),
        Target("coco_keypoints", coco_make("keypoints", "person_keypoints.json"), keypoints_results),
        Target("coco_results", results_make, eval_results),
        Target("coco_panoptic", panoptic_make, read_panoptic),
        Target("yolo", yolo_make, read_yolo),
        Target("voc", voc_make, read_voc),
        Target("png_masks", png_make, read_pngs),
        Target("checkpoint_bytes", ckpt_bytes_make, load_ckpt),
        Target("checkpoint_fields", ckpt_tree_make, load_ckpt),
        Target("config_yaml", config_make, load_cfg),
    ]


def run_case(target: Target, sandbox: Path, seed: int, rng: random.Random | None = None) -> Outcome:
    """One mutated input through ``target``; classifies the outcome (see the module docstring).
    ``rng``: the mutations' random draws (hypothesis passes its own, so it can shrink a finding);
    default ``random.Random(seed)``."""
    rng = rng if rng is not None else random.Random(seed)
    case = sandbox / "deep" / "er" / f"case{seed}"
    shutil.rmtree(case, ignore_errors=True)
    (case / "in").mkdir(parents=True)
    (case / "out").mkdir()
    before = _snapshot(sandbox, case / "out")
    named = target.make(case, rng)
    before = {k: v for k, v in before.items()} | {k: v for k, v in _snapshot(case / "in", case / "out").items()}
    kind, detail = _isolated(target, case, named)
    if kind == "error":
        outcome = Outcome(target.name, "error") if _names_a_file(detail, named, case) else Outcome(
            target.name, "finding", f"{target.name} seed {seed}: error does not name the file: {detail[:300]}")
    elif kind == "ok":
        outcome = Outcome(target.name, "ok")
    else:
        outcome = Outcome(target.name, "finding", f"{target.name} seed {seed}: {detail}")
    after = _snapshot(sandbox, case / "out")
    escaped = sorted(set(after) - set(before) | {k for k in before if k in after and after[k] != before[k]})
    escaped = [p for p in escaped if not p.startswith(str(case / "in"))]
    if escaped:
        outcome = Outcome(target.name, "finding", f"{target.name} seed {seed}: wrote outside the output folder: "
                          f"{escaped[:3]}")
    shutil.rmtree(case, ignore_errors=True)
    return outcome


#: limits of one case's child process: address space and wall time
CASE_MEMORY_BYTES = 6 * 2 ** 30  # on top of what the child maps when forked
CASE_SECONDS = 60.0


def _mapped_bytes() -> int:
    """This process's virtual address space in bytes (``VmSize``; 0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(target: Target, case: Path, named: Path, conn) -> None:
    import resource
    import warnings

    from sceneparse.errors import SceneparseError

    # the limit is on top of what the forked child already maps: an xdist worker that ran many model tests
    # maps gigabytes of address space (thread arenas, oneDNN caches), and an absolute 6 GiB cap then made a
    # plain convolution fail to allocate ("could not create a primitive") -- a finding of the harness, not
    # of the reader
    resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + CASE_MEMORY_BYTES, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target.run(case, named)
        conn.send(("ok", ""))
    except SceneparseError as e:
        conn.send(("error", str(e)))
    except BaseException as e:  # noqa: BLE001 -- the point of the fuzzer
        conn.send(("exception", f"{type(e).__name__}: {str(e)[:200]}\n{traceback.format_exc(limit=-3)}"))
    finally:
        conn.close()


def _isolated(target: Target, case: Path, named: Path) -> tuple[str, str]:
    """Run ``target.run`` in a forked child (a crash, a hang or a runaway allocation in C code is a
    finding, not the end of the fuzzer): ``("ok" | "error" | "exception" | "crash" | "hang", text)``."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(target, case, named, send), daemon=True)
    proc.start()
    send.close()
    got = None
    if recv.poll(CASE_SECONDS):
        try:
            got = recv.recv()
        except EOFError:  # the child died without answering
            got = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if got is not None:
        return got
    if proc.exitcode is None or proc.exitcode == -9:
        return "hang", f"no answer within {CASE_SECONDS:.0f} s (or killed)"
    return "crash", f"the reader crashed the process (exit code {proc.exitcode})"


def _names_a_file(text: str, named: Path, case: Path) -> bool:
    """The message names the mutated file, one of the inputs beside it, or a file of the seed dataset
    (or, for the configuration target, the command-line override it came from)."""
    if named.name in text or str(case / "in") in text or text.startswith("override '"):
        return True
    return any(tok in text for tok in (".json", ".png", ".txt", ".xml", ".yaml", ".pt", ".jpg"))


def fuzz(root: Path, budget: int, seed: int = 0, only: list[str] | None = None) -> dict[str, Tally]:
    """``budget`` cases per target with seeds ``seed .. seed + budget - 1``; returns a tally per target."""
    import torch

    torch.set_num_threads(1)  # no OpenMP pool in the parent: forked children must not inherit one
    seeds = Seeds(root / "seeds")
    sandbox = root / "sandbox"
    sandbox.mkdir(parents=True, exist_ok=True)
    tallies: dict[str, Tally] = {}
    for t in targets(seeds):
        if only and t.name not in only:
            continue
        tally = tallies.setdefault(t.name, Tally())
        for s in range(seed, seed + budget):
            tally.add(run_case(t, sandbox, s))
    return tallies


__all__ = ["HOSTILE_VALUES", "Outcome", "Seeds", "Tally", "Target", "fuzz", "mutate_bytes", "mutate_text",
           "mutate_tree", "run_case", "targets"]
del math
