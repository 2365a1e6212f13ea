"""Data-parallel training under torchrun (2 CPU processes, gloo) against one process with the same
global batch.

The comparison is made meaningful by a setup in which the two computations are the same sums:
a U-Net with ``train.freeze_bn=true`` (BatchNorm in eval mode, so no statistics are computed per
process: each image's output depends on that image only), per-pixel cross-entropy averaged over
images of equal size without void pixels (the mean over the global batch equals the mean of the
per-process means that DDP's gradient all-reduce averages), no random draws inside the model, and
the same data order and per-sample flips in both (functions of seed, epoch and position). What
remains is float32 rounding from summing in a different order, so the weights agree to 1e-6
(observed: ~1e-8) after 3 iterations, not bit for bit. An R-CNN is not compared (its proposal sampling
draws per process), only run, to check that detectors train and evaluate under DDP.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from engine_helpers import FRCNN, UNET, tiny_config
from sceneparse.data.layout import load_split
from sceneparse.engine.checkpoint import load_checkpoint, model_from_checkpoint
from sceneparse.engine.evaluator import evaluate_model
from sceneparse.engine.trainer import Trainer
from sceneparse.models import zoo

pytestmark = pytest.mark.slow  # trains under torchrun (2 processes)


def _kw(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {list(v) if isinstance(v, (list, tuple)) else v}" for k, v in d.items()) + "}"


def _torchrun(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sceneparse", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


SETTINGS = ["--epochs", "1", "--batch", "2", "--quiet", "train.max_iters_per_epoch=3", "train.freeze_bn=true",
            "train.threads=1", "data.hflip=0.5", "optim.warmup_iters=0", "optim.lr=0.05", "train.log_every=1"]


def test_two_processes_match_one_process_with_the_same_global_batch(synth, tmp_path):
    out = tmp_path / "ddp"
    done = _torchrun(["--model", "unet", "--data", str(synth), "--out", str(out), f"model.kwargs={_kw(UNET)}",
                      *SETTINGS])
    assert done.returncode == 0, done.stderr[-3000:]
    single = Trainer(tiny_config(synth, tmp_path / "one", "unet", None, *SETTINGS[5:], "train.epochs=1"),
                     progress=False).fit()
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(out / "last.pt")
    assert (a["iteration"], b["iteration"], b["world_size"], len(b["rng"])) == (3, 3, 2, 2)
    diff = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    torch.manual_seed(0)
    init = zoo.build("unet", num_classes=len(a["categories"]), **UNET).state_dict()
    moved = max((a["model"][k].float() - init[k].float()).abs().max().item() for k in a["model"])
    assert diff < 1e-6 < 1e-3 < moved, (diff, moved)  # training moved the weights far more than the tolerance
    first = [e["losses"]["loss"] for e in a["iteration_log"]]
    assert [e["losses"]["loss"] for e in b["iteration_log"]] == pytest.approx(first, rel=1e-5)  # averaged over ranks
    # the sharded + gathered evaluation scores the DDP weights as one process does
    again = evaluate_model(model_from_checkpoint(out / "last.pt").model, load_split(synth, "val", "semantic"),
                           batch_size=2, progress=False)
    assert b["history"][-1]["metrics"] == pytest.approx(again.metrics, abs=1e-9)
    # rank 0 alone wrote the run folder
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert single.iterations == 3


def test_a_detector_trains_and_evaluates_under_torchrun(synth, tmp_path):
    out = tmp_path / "det"
    done = _torchrun(["--model", "fasterrcnn_resnet18_fpn", "--data", str(synth), "--out", str(out),
                      f"model.kwargs={_kw(FRCNN)}", "--epochs", "1", "--batch", "4", "--quiet",
                      "train.max_iters_per_epoch=2", "train.threads=1"])
    assert done.returncode == 0, done.stderr[-3000:]
    ck = load_checkpoint(out / "last.pt")
    assert ck["iteration"] == 2 and "bbox_AP" in ck["history"][-1]["metrics"]
    again = evaluate_model(model_from_checkpoint(out / "last.pt").model,
                           load_split(synth, "val", "instances", things_only=True), progress=False)
    assert ck["history"][-1]["metrics"] == pytest.approx(again.metrics, abs=1e-9)
