"""``sceneparse train`` / ``sceneparse val``: exit codes, files, printed tables, JSON, errors."""
from __future__ import annotations

import json
import shutil

import pytest

from engine_helpers import UNET
from sceneparse.cli import main
from sceneparse.engine.checkpoint import load_checkpoint

KW = "model.kwargs={" + ", ".join(f"{k}: {v}" for k, v in UNET.items() if k not in ("min_size", "max_size")) + "}"


@pytest.mark.slow
def test_train_then_val_from_the_command_line(synth, tmp_path, capsys):
    out = tmp_path / "run"
    # key=value words may come before and after flags
    argv = ["train", "--model", "unet", KW, "--data", str(synth), "--epochs", "2", "--batch", "2", "--imgsz", "64",
            "--out", str(out), "--quiet", "--lr", "0.05", "--cache", "train.threads=1", "optim.warmup_iters=1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained 2 epoch(s), 8 iterations" in printed and f"-> {out / 'best.pt'}" in printed
    for name in ("best.pt", "last.pt", "results.csv", "loss_curve.png", "metrics.png", "config.yaml"):
        assert (out / name).is_file(), name
    last = load_checkpoint(out / "last.pt")
    kwargs = last["config"]["model"]["kwargs"]
    assert (kwargs["min_size"], kwargs["max_size"], kwargs["base_channels"]) == (64, 64, 4)  # --imgsz
    assert last["config"]["optim"]["lr"] == 0.05 and last["config"]["optim"]["warmup_iters"] == 1
    assert last["config"]["data"]["cache"] is True  # --cache

    report = tmp_path / "val.json"
    assert main(["val", "--model", str(out / "last.pt"), "--data", str(synth), "--json", str(report), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "4 images" in printed
    data = json.loads(report.read_text())
    assert data["task"] == "semantic" and data["metrics"] == pytest.approx(last["history"][-1]["metrics"])
    assert set(data["per_class"]) >= {"person", "sky"} and len(data["semantic"]["confusion"]) == 12
    # the checkpoint remembers its dataset: --data may be left out
    assert main(["val", "--model", str(out / "last.pt"), "--split", "train", "--quiet"]) == 0
    assert "8 images" in capsys.readouterr().out

    # resuming a finished run, a checkpoint of other classes, and a missing file are errors (exit 1)
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["val", "--model", str(out / "last.pt"), "--data", str(synth), "--quiet", "--max-images", "0"]) == 1
    assert "max_images: must be at least 1" in capsys.readouterr().err
    assert main(["val", "--model", str(tmp_path / "none.pt"), "--data", str(synth)]) == 1
    assert "checkpoint file not found" in capsys.readouterr().err


def test_train_reports_bad_data_and_keys(synth, tmp_path, capsys):
    no_kp = tmp_path / "data"
    shutil.copytree(synth, no_kp)
    (no_kp / "annotations" / "person_keypoints_train.json").unlink()
    assert main(["train", "--model", "keypointrcnn_resnet18_fpn", "--data", str(no_kp), "--out",
                 str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "trains on person keypoints" in err and "person_keypoints_train.json not found" in err
    assert main(["train", "--model", "unet", "--data", str(synth), "--out", str(tmp_path / "r"), "optim.lrr=1"]) == 1
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helptext = capsys.readouterr().out
    assert "examples:" in helptext and "torchrun --nproc_per_node" in helptext and "--resume" in helptext
    with pytest.raises(SystemExit):
        main(["val", "--help"])
    assert "examples:" in capsys.readouterr().out
