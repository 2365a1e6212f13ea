"""``sceneparse predict``: exit codes, files written, failures listed."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.cli import main
from sceneparse.engine.checkpoint import save_checkpoint
from sceneparse.models import zoo

CATEGORIES = [{"id": 1, "name": "ellipse"}, {"id": 4, "name": "star"}]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    kwargs = dict(min_size=64, max_size=96, box_detections_per_img=5, rpn_pre_nms_top_n=(100, 50),
                  rpn_post_nms_top_n=(100, 50))
    torch.manual_seed(0)
    model = zoo.build("fasterrcnn_resnet18_fpn", num_classes=2, **kwargs)
    path = tmp_path_factory.mktemp("ckpt") / "det.pt"
    save_checkpoint(path, model, config={"model": {"name": "fasterrcnn_resnet18_fpn", "kwargs": kwargs}},
                    categories=CATEGORIES, task="detection")
    return path


def _images(d, n=2):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return d


def test_predict_writes_files_lists_failures_and_exits_zero(ckpt, tmp_path, capsys):
    src = _images(tmp_path / "src")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["predict", "--model", str(ckpt), "--source", str(src), "--out", str(out), "--workers", "1",
                 "--batch", "2", "--conf", "0.0", "--quiet"])
    cap = capsys.readouterr()
    assert code == 0
    assert "predicted 2 of 4 images" in cap.out
    assert "2 image(s) with problems" in cap.err and "broken.jpg: unreadable image" in cap.err
    assert "empty.png: empty file (0 bytes)" in cap.err
    assert sorted(os.listdir(out)) == ["failures.json", "images", "images.json", "predictions.json", "run.json"]
    assert sorted(os.listdir(out / "images")) == ["img0.jpg", "img1.jpg"]
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 10 and {r["image_id"] for r in preds} == {3, 4}  # 5 per image (the cap)
    assert {r["category_id"] for r in preds} <= {1, 4} and all("segmentation" not in r for r in preds)
    # ids 1..N follow the sorted source order, failed files included (broken.jpg is 1, empty.png 2)
    ids = {im["file_name"]: im["id"] for im in json.loads((out / "images.json").read_text())["images"]}
    assert ids == {"img0.png": 3, "img1.png": 4}
    fails = json.loads((out / "failures.json").read_text())
    assert sorted(os.path.basename(f["path"]) for f in fails) == ["broken.jpg", "empty.png"]


def test_ids_follow_source_order_and_eval_reads_the_json(ckpt, tmp_path, capsys):
    src = _images(tmp_path / "src", 3)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(ckpt), "--source", str(src / "*.png"), "--out", str(out),
                 "--workers", "0", "--no-save-images", "--quiet"]) == 0
    images = json.loads((out / "images.json").read_text())
    assert [(im["id"], im["file_name"]) for im in images["images"]] == [(1, "img0.png"), (2, "img1.png"),
                                                                        (3, "img2.png")]
    assert not (out / "images").exists()
    # the predictions themselves as ground truth: sceneparse eval reads both files and gives AP50 = 1
    preds = json.loads((out / "predictions.json").read_text())
    images["annotations"] = [dict(r, id=k + 1, iscrowd=0, area=r["bbox"][2] * r["bbox"][3])
                             for k, r in enumerate(preds)]
    (tmp_path / "gt.json").write_text(json.dumps(images))
    capsys.readouterr()
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(out / "predictions.json"), "--type", "bbox",
                 "--json", str(tmp_path / "rep.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "rep.json").read_text())["stats"][1] == pytest.approx(1.0)


def test_predict_exits_nonzero_when_nothing_could_be_predicted(ckpt, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.png").write_bytes(b"garbage")
    code = main(["predict", "--model", str(ckpt), "--source", str(src), "--out", str(tmp_path / "out"),
                 "--workers", "0", "--quiet"])
    cap = capsys.readouterr()
    assert code == 1
    assert "none of the 2 image(s) could be predicted" in cap.err
    assert len(json.loads((tmp_path / "out" / "failures.json").read_text())) == 2
    assert json.loads((tmp_path / "out" / "predictions.json").read_text()) == []


def test_predict_errors_and_help(ckpt, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none.pt"), "--source", str(tmp_path)]) == 1
    assert "checkpoint file not found" in capsys.readouterr().err
    assert main(["predict", "--model", str(ckpt), "--source", str(tmp_path / "nope")]) == 1
    assert "source not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["predict", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "sceneparse predict --model" in text and "failures.json" in text


def test_semantic_predict_writes_label_pngs_that_eval_reads(tmp_path, capsys):
    torch.manual_seed(0)
    model = zoo.build("unet", num_classes=3, base_channels=8, depth=2)
    ck = tmp_path / "unet.pt"
    save_checkpoint(ck, model, config={"model": {"name": "unet", "kwargs": {"base_channels": 8, "depth": 2}}},
                    categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
                    task="semantic")
    src = _images(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(ck), "--source", str(src), "--out", str(out), "--imgsz", "32",
                 "--workers", "0", "--quiet", "--image-format", "png"]) == 0
    assert sorted(os.listdir(out)) == ["failures.json", "images", "labels", "run.json"]
    assert sorted(os.listdir(out / "labels")) == ["img0.png", "img1.png"] == sorted(os.listdir(out / "images"))
    # a perturbed copy as "ground truth": eval reads both folders and the mIoU reflects the change
    gt = tmp_path / "gt"
    gt.mkdir()
    changed = 0
    for name in ("img0.png", "img1.png"):
        with Image.open(out / "labels" / name) as im:
            a = np.array(im)
        assert a.shape == (36, 44) and a.max() <= 2
        if name == "img1.png":
            a[:18] = (a[:18] + 1) % 3  # every pixel of the top half gets another class
            changed = 18 * 44
        Image.fromarray(a).save(gt / name)
    capsys.readouterr()
    assert main(["eval", "--gt", str(gt), "--pred", str(out / "labels"), "--type", "semantic", "--num-classes", "3",
                 "--json", str(tmp_path / "sem.json"), "--quiet"]) == 0
    rep = json.loads((tmp_path / "sem.json").read_text())
    assert rep["pixel_accuracy"] == pytest.approx(1 - changed / (2 * 36 * 44))


def test_ctrl_c_in_predict_writes_the_partial_results_and_exits_130(ckpt, tmp_path, monkeypatch, capsys):
    from sceneparse.engine import predictor

    src = _images(tmp_path / "src", 4)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "predictions.json").write_text('[{"image_id": 99, "stale": true}]')  # an earlier run's
    (out / "failures.json").write_text("[]")
    calls = []
    real = predictor.Predictor._predict_robust

    def interrupted_forward(self, images):  # Ctrl-C arrives while the model runs on the third batch
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(predictor.Predictor, "_predict_robust", interrupted_forward)
    code = main(["predict", "--model", str(ckpt), "--source", str(src), "--out", str(out), "--workers", "0",
                 "--batch", "1", "--conf", "0.0", "--quiet"])
    cap = capsys.readouterr()
    assert code == 130
    assert "interrupted after 2 of 4 images" in cap.err and "sceneparse predict: interrupted" in cap.err
    preds = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in preds} == {1, 2} and len(preds) == 10 and not any("stale" in r for r in preds)
    run = json.loads((out / "run.json").read_text())
    assert (run["complete"], run["predicted"], run["not_reached"]) == (False, 2, 2)
    assert sorted(os.listdir(out / "images")) == ["img0.jpg", "img1.jpg"]
    assert json.loads((out / "failures.json").read_text()) == []
