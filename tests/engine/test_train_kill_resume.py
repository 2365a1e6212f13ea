"""Kill -9 a ``sceneparse train`` process after its first mid-epoch checkpoint, ``--resume`` it, and
compare with an uninterrupted run of the same configuration.

Expected: bit-identical weights (``torch.equal``). Nothing in the run depends on where it was
interrupted: the image order and each sample's augmentation are functions of (seed, epoch,
position), the resumed process restores the model, EMA, optimizer, position in the epoch and the
RNG states saved after the last completed iteration, and CPU kernels with a fixed thread count
(``train.threads=1``) are deterministic.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine_helpers import UNET
from sceneparse.cli import main
from sceneparse.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # two training runs in subprocesses, one killed and resumed


def _argv(synth, out):
    kw = "{" + ", ".join(f"{k}: {v}" for k, v in UNET.items()) + "}"
    return ["train", "--model", "unet", "--data", str(synth), "--out", str(out), "--epochs", "6", "--batch", "2",
            "--quiet", f"model.kwargs={kw}", "train.checkpoint_every=2", "train.threads=1", "data.hflip=0.5",
            "train.ema=true", "train.ema_decay=0.9", "optim.warmup_iters=3", "optim.lr=0.05"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(synth, tmp_path):
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sceneparse", *_argv(synth, run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    try:
        while not (run / "last.pt").exists():  # the first one is written after iteration 2 of 4
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ck = load_checkpoint(run / "last.pt")
    assert ck["iteration"] < 24, "the run ended before it could be killed"
    interrupted_at = (ck["epoch"], ck["epoch_iter"], ck["iteration"])
    resumed = subprocess.run([sys.executable, "-m", "sceneparse", "train", "--resume", str(run / "last.pt"),
                              "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "trained 6 epoch(s), 24 iterations" in resumed.stdout

    assert main(_argv(synth, tmp_path / "straight")) == 0
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(run / "last.pt")
    for key in ("model", "train_model"):  # EMA weights and raw weights
        assert a[key].keys() == b[key].keys()
        bad = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not bad, f"{key} differs after resuming at {interrupted_at}: {bad[:5]}"
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"]) and len(a["history"]) == 6
    assert (run / "results.csv").read_text().count("\n") == 7
    assert not list(run.glob(".*tmp"))  # a file half-written at the kill is cleaned up by the resume
    print("interrupted at (epoch, iteration in epoch, iteration):", interrupted_at)
