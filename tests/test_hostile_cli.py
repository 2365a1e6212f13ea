"""Hostile and broken inputs at the command line (issue 24 s2) and a newcomer's CLI (issue 23 s3).

Every reproduction of the issues is here: broken and code-bearing checkpoints, a checkpoint whose
model kwargs are unknown, a full disk, a decompression-bomb PNG, an unexpected exception (a bug),
slow or torch-importing ``--help``, mistyped flags, ``sceneparse models``, a checkpoint's data path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.cli import MODES, build_parser, main
from sceneparse.engine.checkpoint import save_checkpoint
from sceneparse.errors import CheckpointError, DataError
from sceneparse.models import zoo
from test_fileio import full_disk

UNET = {"base_channels": 4, "depth": 2, "min_size": 32, "max_size": 32}
CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def _unet_ckpt(path: Path, kwargs: dict | None = None, config: dict | None = None, **extra) -> Path:
    torch.manual_seed(0)
    model = zoo.build("unet", num_classes=len(CATS), **UNET)
    cfg = config or {"model": {"name": "unet", "kwargs": dict(UNET) if kwargs is None else kwargs}}
    save_checkpoint(path, model, config=cfg, categories=CATS, **extra)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    src = d / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(src / f"img{i}.png")
    good = _unet_ckpt(d / "good.pt")
    blob = good.read_bytes()
    (d / "empty.pt").write_bytes(b"")
    (d / "truncated.pt").write_bytes(blob[:5000])
    (d / "random.pt").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return {"dir": d, "src": src, "good": good}


def _modes(ckpt: Path, d: Path) -> dict[str, list[str]]:
    return {"predict": ["predict", "--model", str(ckpt), "--source", str(d / "src"), "--out", str(d / "p"),
                        "--workers", "0", "--quiet"],
            "val": ["val", "--model", str(ckpt), "--data", str(d / "nodata"), "--quiet"],
            "export": ["export", "--model", str(ckpt), "--out", str(d / "x.onnx"), "--no-verify"],
            "train --resume": ["train", "--resume", str(ckpt), "--quiet"]}


# ---- checkpoints --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, words", [
    ("empty", "empty file (0 bytes)"),
    ("truncated", "truncated or corrupt checkpoint"),
    ("random", "not a PyTorch checkpoint"),
])
def test_broken_checkpoint_is_a_message_naming_the_file_in_every_mode(files, kind, words, capsys):
    path = files["dir"] / f"{kind}.pt"
    for mode, argv in _modes(path, files["dir"]).items():
        assert main(argv) == 1, mode
        err = capsys.readouterr().err
        assert f"{path}: cannot read checkpoint: {words}" in err, (mode, err)
        assert "Traceback" not in err and "IndexError" not in err and "weights_only" not in err
    with pytest.raises(CheckpointError) as e:  # models.build(weights=) reads through zoo._read
        zoo.build("unet", num_classes=2, weights=path, **UNET)
    assert str(path) in str(e.value) and words in str(e.value)


def test_unknown_model_kwarg_in_a_checkpoint_is_a_message_in_every_mode(files, capsys):
    from sceneparse.config import Config

    cfg = Config().to_dict()
    cfg["model"] = {"name": "unet", "weights": None, "kwargs": {**UNET, "bogus_size": 3}}
    path = _unet_ckpt(files["dir"] / "bogus.pt", config=cfg, optimizer={}, iteration=0)  # a training checkpoint
    for mode, argv in _modes(path, files["dir"]).items():
        assert main(argv) == 1, mode
        err = capsys.readouterr().err
        assert "['bogus_size'] not accepted by unet" in err and "valid keys" in err, (mode, err)
        assert "Traceback" not in err and "TypeError" not in err


def test_code_bearing_checkpoint_names_the_global_and_never_runs_it(files, capsys):
    marker = files["dir"] / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    zipped = files["dir"] / "evil.pt"
    torch.save({"model": Evil()}, zipped)
    raw = files["dir"] / "evil_raw.pt"  # a plain pickle: PyTorch stops before naming the global
    import pickle

    raw.write_bytes(pickle.dumps({"model": Evil()}, protocol=4))
    wanted = f"{os.system.__module__}.system"
    for path in (zipped, raw):
        for mode, argv in _modes(path, files["dir"]).items():
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert f"{path}: cannot read checkpoint: the file holds code-bearing objects" in err, (mode, err)
            assert f"asks for the global {wanted}" in err and "will not run it" in err
            assert "weights_only" not in err  # PyTorch's advice would run the code
        with pytest.raises(CheckpointError, match="code-bearing"):
            zoo.build("unet", num_classes=2, weights=path, **UNET)
    assert not marker.exists()


# ---- a full disk --------------------------------------------------------------------------------------------

def _no_temp_files(root: Path) -> None:
    assert not [p for p in root.rglob("*.tmp")], list(root.rglob("*.tmp"))


def _disk_full_message(err: str, mode: str, path: Path) -> None:
    assert f"sceneparse {mode}: error: no space left on device" in err and f"writing {path}" in err, err
    assert "Traceback" not in err and "Errno 28" not in err and "inline_container" not in err


def test_full_disk_in_predict_export_and_data_synth_is_a_message(files, tmp_path, monkeypatch, capsys):
    full_disk(monkeypatch, only="img1.jpg")  # the second drawing
    out = tmp_path / "p"
    assert main(_modes(files["good"], files["dir"])["predict"][:-5] + ["--out", str(out), "--workers", "0",
                                                                       "--quiet"]) == 1
    _disk_full_message(capsys.readouterr().err, "predict", out / "images" / "img1.jpg")
    _no_temp_files(out)
    assert not (out / "images" / "img1.jpg").exists()
    assert json.loads((out / "run.json").read_text())["state"] == "failed"

    full_disk(monkeypatch)
    onnx = tmp_path / "x.onnx"
    assert main(["export", "--model", str(files["good"]), "--out", str(onnx), "--no-verify", "--imgsz", "32"]) == 1
    _disk_full_message(capsys.readouterr().err, "export", onnx)
    assert not onnx.exists()
    _no_temp_files(tmp_path)

    for workers in ("1", "2"):  # in this process, and in forked workers (the error is pickled back)
        synth = tmp_path / f"synth{workers}"
        assert main(["data", "synth", "--out", str(synth), "--images", "4", "--size", "32", "--workers", workers,
                     "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "sceneparse data: error: no space left on device" in err and f"writing {synth}" in err, err
        _no_temp_files(synth)


@pytest.mark.slow
def test_full_disk_in_train_and_show_is_a_message(tmp_path, monkeypatch, capsys):
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    data = tmp_path / "data"
    write_dataset(data, SyntheticConfig(height=32, width=32, num_images=4, seed=0), splits={"train": 2, "val": 2},
                  workers=1, progress=False)
    full_disk(monkeypatch, only="last.pt")  # config.yaml and the log go through; the checkpoint does not
    run = tmp_path / "run"
    argv = ["train", "--model", "unet", "--data", str(data), "--epochs", "1", "--batch", "2", "--out", str(run),
            "--quiet", "model.kwargs={base_channels: 4, depth: 2, min_size: 32, max_size: 32}",
            "train.eval_every=0", "train.threads=1"]
    assert main(argv) == 1
    _disk_full_message(capsys.readouterr().err, "train", run / "last.pt")
    assert not (run / "last.pt").exists()
    _no_temp_files(run)

    full_disk(monkeypatch)
    shown = tmp_path / "shown"
    assert main(["show", str(data), "--out", str(shown), "--num", "1"]) == 1
    err = capsys.readouterr().err
    assert "sceneparse show: error: no space left on device" in err and f"writing {shown}" in err, err
    _no_temp_files(shown) if shown.exists() else None


# ---- a decompression bomb ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """17 KB of PNG declaring 12000 x 12000 = 144 megapixels (5.9 GB once predict had decoded it)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)
    assert path.stat().st_size < 20_000
    return path


def test_bomb_png_is_refused_before_decoding(bomb, monkeypatch):
    from PIL import ImageFile

    from sceneparse.data.images import DEFAULT_MAX_IMAGE_PIXELS, read_image

    assert DEFAULT_MAX_IMAGE_PIXELS <= Image.MAX_IMAGE_PIXELS * 2

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either: one DataError says it
        with pytest.raises(DataError) as e:
            read_image(bomb)
    p = e.value.problems[0]
    assert p.file == str(bomb) and "12000x12000" in p.message and "144.0 megapixels" in p.message
    assert "decoded" not in str(e.value)


def test_pixel_limit_is_a_knob_and_pil_limits_come_out_as_data_errors(bomb, tmp_path, monkeypatch):
    from sceneparse.data import images

    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "1000")  # what DataLoader workers inherit
    with pytest.raises(DataError, match="40x30 .* more than the limit of 0.0 megapixels"):
        images.read_image(small)
    monkeypatch.delenv(images.MAX_PIXELS_ENV)
    assert images.read_image(small).shape == (3, 30, 40)
    # someone set PIL's own limit lower than ours: PIL's warning is that same DataError, not a warning
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="more pixels than PIL allows"):
            images.read_image(small)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # above twice PIL's limit: its DecompressionBombError
    with pytest.raises(DataError, match="more pixels than PIL allows"):
        images.read_image(small)


def test_predict_lists_the_bomb_as_a_failure_and_the_limit_is_a_cli_flag(files, bomb, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bomb.png").write_bytes(bomb.read_bytes())
    Image.open(files["src"] / "img0.png").save(src / "ok.png")
    out = tmp_path / "out"
    argv = ["predict", "--model", str(files["good"]), "--source", str(src), "--out", str(out), "--workers", "1",
            "--quiet", "--no-save-images"]
    assert main(argv) == 0
    fails = json.loads((out / "failures.json").read_text())
    assert [Path(f["path"]).name for f in fails] == ["bomb.png"] and "megapixels" in fails[0]["reason"]
    assert "bomb.png: the image declares 12000x12000" in capsys.readouterr().err
    # --max-image-pixels (a global flag) reaches the worker processes; the environment is restored after
    assert main(["--max-image-pixels", "100"] + argv) == 1
    assert "none of the 2 image(s) could be predicted" in capsys.readouterr().err
    assert "SCENEPARSE_MAX_IMAGE_PIXELS" not in os.environ


# ---- the CLI boundary ------------------------------------------------------------------------------------------

def test_unexpected_exception_is_one_line_and_the_traceback_only_with_debug(files, monkeypatch, capsys):
    from sceneparse.cli import predict_cmd

    # an input problem is a message, with or without --debug
    assert main(["--debug", "predict", "--model", str(files["dir"] / "empty.pt"), "--source", str(files["src"])]) == 1
    assert "internal error" not in capsys.readouterr().err

    def buggy(args):
        return {}["missing"]

    monkeypatch.setattr(predict_cmd, "run", buggy)
    argv = ["predict", "--model", str(files["good"]), "--source", str(files["src"])]
    assert main(argv) == 3
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("sceneparse predict: internal error (a bug in sceneparse") and "KeyError" in err
    assert "report it to" in err and "--debug" in err
    for debug in (["--debug", *argv], [*argv, "--debug"]):
        assert main(debug) == 3
        err = capsys.readouterr().err
        assert "internal error" in err and "Traceback (most recent call last)" in err and "buggy" in err


def test_os_errors_naming_a_file_are_messages(files, monkeypatch, capsys):
    from sceneparse.cli import predict_cmd

    def denied(args):
        raise PermissionError(13, "Permission denied", "/srv/out/predictions.json")

    monkeypatch.setattr(predict_cmd, "run", denied)
    assert main(["predict", "--model", str(files["good"]), "--source", str(files["src"])]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "sceneparse predict: error: /srv/out/predictions.json: Permission denied"


def test_help_answers_without_importing_torch():
    code = ("import sys, time\n"
            "t = time.perf_counter()\n"
            "from sceneparse.cli import main\n"
            "for argv in ([], ['--help'], ['train', '--help'], ['predict', '--help'], ['val', '--help'],\n"
            "             ['export', '--help'], ['data', 'synth', '--help'], ['models', '--help'], ['demo', '--help'],\n"
            "             ['convert', '--help'], ['show', '--help'], ['eval', '--help']):\n"
            "    try:\n"
            "        main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print('SECONDS', time.perf_counter() - t, file=sys.stderr)\n"
            "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "TORCH False" in r.stderr
    seconds = float(r.stderr.split("SECONDS")[1].split()[0])
    assert seconds < 1.0, seconds  # nine helps (without torch ~0.1 s; with it, 2-7 s each)
    assert "sceneparse train" in r.stdout and "key=value" in r.stdout and "MODE" in r.stdout


def test_mode_list_matches_the_modes_modules():
    parser = build_parser("*")
    sub = next(a for a in parser._actions if a.dest == "mode")
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert helps == MODES  # the one-line helps of 'sceneparse --help' are the modules' own
    for mode, p in sub.choices.items():
        assert p.get_default("func") is not None, mode


def test_mistyped_flag_names_the_mode_and_suggests_the_closest(files, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "--model", str(files["good"]), "--source", str(files["src"]), "--confs", "0.3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "sceneparse predict: error: unrecognized arguments: --confs 0.3" in err and "did you mean --conf?" in err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", "x", "--val-frac=0.3", "--sed", "1"])
    err = capsys.readouterr().err
    assert "sceneparse data synth: error" in err and "did you mean --seed?" in err
    with pytest.raises(SystemExit):
        main(["predcit", "--model", "x"])
    assert "unknown mode 'predcit'; did you mean 'predict'?" in capsys.readouterr().err


def test_models_lists_the_zoo_with_task_and_size(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert set(rows) == set(zoo.available())
    assert "semantic" in rows["unet"] and "M" in rows["unet"] and "instance" in rows["maskrcnn_resnet18_fpn"]
    assert main(["models", "--json", "--task", "semantic"]) == 0
    listed = json.loads(capsys.readouterr().out)
    unet = next(r for r in listed if r["name"] == "unet")
    built = zoo.build("unet")
    assert unet["params"] == sum(p.numel() for p in built.parameters()) and unet["classes"] == 21
    assert {r["task"] for r in listed} == {"semantic"}


def test_checkpoint_stores_absolute_data_paths_and_val_says_pass_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = {"model": {"name": "unet", "kwargs": UNET}, "data": {"root": "data/synth", "val_json": None, "batch_size": 2}}
    path = _unet_ckpt(tmp_path / "best.pt", config=cfg)
    stored = torch.load(path, weights_only=True)["config"]["data"]
    assert stored["root"] == str(tmp_path / "data" / "synth") and stored["val_json"] is None
    assert stored["batch_size"] == 2
    assert main(["val", "--model", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"data.root {tmp_path / 'data' / 'synth'}) is not there" in err and "pass --data DIR" in err


# ---- export: a failed verification names the cause and the --static alternative ----------------------------------

def test_failed_dynamic_export_names_the_cause_and_the_static_alternative(tmp_path):
    pytest.importorskip("onnxruntime")
    import torch.nn.functional as F
    from torch import nn

    from sceneparse.engine.export import _count_cause, export_onnx, read_onnx_metadata
    from sceneparse.errors import ExportError
    from sceneparse.models.segmentation import SemanticSegmentor

    class PythonSize(SemanticSegmentor):  # an output size computed in Python: the trace freezes it
        def __init__(self):
            super().__init__(2)
            self.conv = nn.Conv2d(3, 2, 3, padding=1)

        def segment(self, x, with_aux=False):
            y = self.conv(x)
            h, w = int(y.shape[-2]), int(y.shape[-1])
            return F.interpolate(y[..., : h // 2, : w // 2], size=(h, w), mode="nearest"), None

    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError) as e:
        export_onnx(PythonSize(), out, imgsz=(40, 56))
    msg = str(e.value)
    assert "cause: the graph reproduces the model at the traced size [1, 3, 40, 56] but not at another size" in msg
    assert "alternative: --static (dynamic=False)" in msg and not out.exists()
    report = export_onnx(PythonSize(), out, imgsz=(40, 56), dynamic=False)  # the alternative verifies
    assert report.verified and read_onnx_metadata(out)["model"]

    # detection counts that differ say where the scores sit
    at_conf = _count_cause(np.array([0.9, 0.0500004]), np.array([0.9]), 0.05, 100)
    assert "within 1e-3 of the score threshold conf=0.05" in at_conf and "eager 0.050000" in at_conf
    at_cut = _count_cause(np.full(100, 0.3), np.full(99, 0.3), 0.05, 100)
    assert "max_det=100 cut" in at_cut and "tied scores" in at_cut
    assert "NMS decision" in _count_cause(np.array([0.9, 0.6]), np.array([0.9]), 0.05, 100)
    # what a trained Mask R-CNN did at a second size (onnxruntime's resize, amplified): not a threshold matter
    moved = _count_cause(np.array([0.0772, 0.0759, 0.0501]), np.array([0.0791, 0.0765]), 0.05, 100)
    assert "the scores themselves differ (the best 2 by up to 0.0019" in moved


def test_failed_onnx_verification_at_a_resized_size_names_the_resize():
    """A trained Mask R-CNN (64 iterations on synthetic scenes, 128 px) verified at 128x128 (no resize
    in the graph) and failed at 161x97, where onnxruntime's Resize (~1e-5 from PyTorch's) moved its
    scores by 3e-3; TorchScript and --static verified."""
    from types import SimpleNamespace

    from sceneparse.engine.export import ExportReport, VerifyCase, _raise_if_failed
    from sceneparse.errors import ExportError
    from sceneparse.models.base import ModelInfo, SizePolicy

    info = ModelInfo("instance", 7, iou_types=("bbox", "segm"), size=SizePolicy((128,), 128, 32))
    ok = VerifyCase([3, 128, 128], detections=(100, 100))
    bad = VerifyCase([3, 161, 97], detections=(41, 33), failures=["41 detections eagerly, 33 exported; cause: ..."])
    report = ExportReport("m.onnx", "onnx", "m", "instance", [], [], [], {}, True, cases=[ok, bad])
    with pytest.raises(ExportError) as e:
        _raise_if_failed(report, "m", SimpleNamespace(info=info))
    msg = str(e.value)
    assert "cause: at [3, 161, 97] the graph resizes the image, at the traced size [3, 128, 128] it did not" in msg
    assert "onnxruntime's Resize" in msg and "--static" in msg and "--format torchscript" in msg
