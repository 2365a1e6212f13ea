"""Make the weights that ``sceneparse demo`` starts from: sceneparse trains its demo models on its own
synthetic scenes (a data seed the demo never draws), scores them on held-out scenes of that seed,
and packs them into ``src/sceneparse/weights/`` (int8 weights + one float scale per output channel,
:func:`sceneparse.cli.demo_cmd.pack_weights`) with a record of how they were made: the commands,
the data seed, the iterations, the training time and the held-out scores. The demo then fine-tunes
them on its own scenes (seed 0 by default) and scores its own held-out images.

Everything runs through the CLI a user has, so each step can be rerun by hand:

    sceneparse data synth --out DIR/data --images 3200 --seed SEED --size 256 --val-fraction 0.0625
    sceneparse train --model NAME --data DIR/data ... (the recipe's settings, below)
    sceneparse val --model DIR/run/last.pt --json DIR/val.json

    python benchmarks/make_demo_weights.py                      # both models, into runs/pretrain
    python benchmarks/make_demo_weights.py --models unet        # one of them
    python benchmarks/make_demo_weights.py --pack-only          # pack runs that finished already

A finished run (its ``last.pt`` at the planned iteration) is not trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: the synthetic scenes each model trains on: 3,000 training + 200 held-out 256 px scenes
DATA = dict(images=3200, size=256, val_fraction=0.0625)
#: median-frequency class weights of U-Net's training label maps (seed 1001), as the demo computes them
#: for its own scenes (``demo_cmd._median_frequency_weights``)
UNET_CLASS_WEIGHTS = "[1.0546,1.2295,0.9508,2.6202,2.0701,1.9846,1.6265,0.1002,0.116,0.115,0.1175,0.1157]"
_UNET_FLAGS = [
    "--batch", "8", "--cache", "model.kwargs.base_channels=16", "model.kwargs.min_size=96", "model.kwargs.max_size=96",
    f"model.kwargs.class_weights={UNET_CLASS_WEIGHTS}", "model.kwargs.dice_weight=1.0",
    "model.kwargs.logit_adjustment=1.0", "optim.name=adamw", "optim.lr=0.002", "optim.weight_decay=0.0001",
    "optim.warmup_iters=50", "optim.schedule=wsd", "train.channels_last=true", "train.eval_every=0",
    "train.log_every=20", "train.checkpoint_every=200", "train.threads=1"]


@dataclass(frozen=True)
class Stage:
    """One ``sceneparse train`` run: its folder under ``--out``, planned iterations and flags (after
    ``--data``/``--out``). A later stage starts from the one before (``model.weights=PREV/last.pt``)."""

    run: str
    iterations: int
    flags: list


#: model -> (data seed, data folder under ``--out``, shipped file name, training stages)
RUNS = {
    "maskrcnn_resnet18_fpn": (1000, "data_det", "maskrcnn_resnet18_fpn_synthetic.pt", [Stage("maskrcnn", 2001, [
        "--imgsz", "256", "--batch", "4", "--epochs", "3", "--seed", "1000", "--cache",
        "model.kwargs.trunk_stages=3", "model.kwargs.mask_conv_channels=[64,64,64,64]", "optim.schedule=wsd",
        "optim.warmup_iters=100", "train.max_iters_per_epoch=667", "train.eval_every=0", "train.log_every=20",
        "train.checkpoint_every=100", "train.threads=2"])]),
    # two runs of the same recipe (the second restarts the LR schedule from the first's weights)
    "unet": (1001, "data_sem", "unet_synthetic.pt", [
        Stage("unet", 3000, ["--epochs", "8", "--seed", "1001", *_UNET_FLAGS, "train.amp=true"]),
        Stage("unet2", 2625, ["--epochs", "7", "--seed", "1002", *_UNET_FLAGS])]),
}


def _sh(cmd: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def commands(model: str, out: Path) -> dict[str, list]:
    """The CLI commands that make ``model``'s weights (their text goes into the record): ``data``,
    ``train`` (one per stage) and ``val``."""
    seed, data_dir, _, stages = RUNS[model]
    data = out / data_dir
    train = []
    for i, st in enumerate(stages):
        init = [f"model.weights={out / stages[i - 1].run / 'last.pt'}"] if i else []
        train.append(["sceneparse", "train", "--model", model, "--data", str(data), "--out", str(out / st.run),
                      "--quiet", *st.flags, *init])
    return {
        "data": ["sceneparse", "data", "synth", "--out", str(data), "--images", str(DATA["images"]), "--seed",
                 str(seed), "--size", str(DATA["size"]), "--val-fraction", str(DATA["val_fraction"]), "--no-progress"],
        "train": train,
        "val": ["sceneparse", "val", "--model", str(out / stages[-1].run / "last.pt"), "--json",
                str(out / f"val_{model}.json"), "--quiet"],
    }


def _finished(run: Path, iterations: int) -> bool:
    if not (run / "last.pt").is_file():
        return False
    import torch

    return int(torch.load(run / "last.pt", map_location="cpu", weights_only=True).get("iteration", -1)) >= iterations


def make(model: str, out: Path, pack_only: bool, partial: bool = False, note: str = "") -> Path:
    import io

    import torch

    from sceneparse.cli.demo_cmd import WEIGHTS_DIR, pack_weights
    from sceneparse.fileio import atomic_write_bytes

    seed, data_dir, name, stages = RUNS[model]
    cmds = commands(model, out)
    if not pack_only:
        if not (out / data_dir / "dataset.yaml").is_file():
            _sh(cmds["data"])
        for st, cmd in zip(stages, cmds["train"]):
            if not _finished(out / st.run, st.iterations):
                _sh(cmd + (["--resume"] if (out / st.run / "last.pt").is_file() else []))
    last = out / stages[-1].run
    if not _finished(last, stages[-1].iterations) and not partial:
        raise SystemExit(f"{last} has not finished its {stages[-1].iterations} iterations (--partial packs its last.pt)")
    _sh(cmds["val"])
    metrics = json.loads((out / f"val_{model}.json").read_text())["metrics"]
    ckpts = [torch.load(out / st.run / "last.pt", map_location="cpu", weights_only=True) for st in stages]
    ckpt = ckpts[-1]
    iterations = sum(int(c["iteration"]) for c in ckpts)
    seconds = sum(float((c.get("time") or {}).get("spent") or 0.0) for c in ckpts)
    keep = ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "miou", "pixel_acc")
    meta = {
        "what": (f"{model} trained by sceneparse for {iterations} iterations on 3,000 synthetic 256 px "
                 f"scenes of data seed {seed} (the demo draws seed 0 unless --seed says otherwise); held-out "
                 + ", ".join(f"{k} {metrics[k]:.3f}" for k in keep if k in metrics)
                 + " on 200 scenes of that seed"),
        "model": model, "data_seed": seed, "iterations": iterations,
        "planned_iterations": sum(st.iterations for st in stages), "train_seconds": round(seconds, 1),
        "held_out": {k: round(float(metrics[k]), 4) for k in keep if k in metrics},
        "commands": [" ".join(shlex.quote(c) for c in cmd) for cmd in (cmds["data"], *cmds["train"], cmds["val"])],
        "model_kwargs": (ckpt.get("config") or {}).get("model", {}).get("kwargs", {}),
        "class_names": ckpt.get("class_names"),
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
        "made": time.strftime("%Y-%m-%d"),
        "note": note,
    }
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(pack_weights(ckpt["model"], meta), buf)
    path = WEIGHTS_DIR / name
    atomic_write_bytes(path, buf.getvalue())
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB; {meta['what']}", flush=True)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(RUNS))
    p.add_argument("--out", default="runs/pretrain", help="data and training runs go here")
    p.add_argument("--pack-only", action="store_true", help="only evaluate and pack runs that finished")
    p.add_argument("--partial", action="store_true",
                   help="pack a run's last.pt before it finished (the record says at which iteration of how many; "
                        "the demo's fine-tuning decays the LR to 0 itself)")
    p.add_argument("--note", default="", help="a line for the record (e.g. how busy the machine was)")
    args = p.parse_args(argv)
    for m in args.models.split(","):
        make(m, Path(args.out), args.pack_only, args.partial, args.note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
