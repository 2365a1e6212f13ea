import html.parser

import numpy as np
import pytest

from sceneparse.viz.draw import save_image
from sceneparse.viz.report import Report


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.cells, self.imgs = [], [], []
        self._cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._cell = tag in ("td", "th")
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._cell:
            self.cells.append(data)

    def handle_endtag(self, tag):
        self._cell = False


def test_report_tables_figures_and_escaping(tmp_path):
    save_image(tmp_path / "curves" / "pr.png", np.zeros((4, 4, 3), np.uint8))
    save_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    r = Report("run <1>")
    r.table("metrics", {"AP": 0.51234, "AP50": float("nan"), "note": "<b>x</b>"})
    r.table("per class", [{"class": "star", "AP": 0.5}, {"class": "ring", "AP": 0.25, "AR": 1.0}], digits=2)
    r.figure("curves/pr.png", "PR")
    r.gallery(["a.png"], "predictions")
    out = r.write(tmp_path)
    text = out.read_text()
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text and "run &lt;1&gt;" in text
    p = _Collect()
    p.feed(text)
    assert p.imgs == ["curves/pr.png", "a.png"]
    # mapping table: metric/value rows with 3 digits; list table: union of columns, 2 digits, blanks
    assert p.cells[:8] == ["metric", "value", "AP", "0.512", "AP50", "nan", "note", "<b>x</b>"]
    assert p.cells[8:] == ["class", "AP", "AR", "star", "0.50", "ring", "0.25", "1.00"]


def test_report_refuses_missing_images(tmp_path):
    r = Report("x").figure("nope.png", "missing")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        r.write(tmp_path)
    assert not (tmp_path / "index.html").exists()


def test_report_notes_cards_links_contents_and_na(tmp_path):
    save_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "best.pt").write_bytes(b"x")
    r = Report("run")
    r.cards({"box AP": 0.51234, "iterations": "200"})
    r.note("No detection reached 0.25 <b>", kind="warn")
    r.heading("accuracy", anchor="accuracy")
    r.table("metrics", [{"metric": "AP large", "box": None, "mask": 0.25}], footnote="n/a: no large object")
    r.table(None, {"torch": "2.4", "threads": 2}, header=None)
    r.heading("files", anchor="files")
    r.links([("train/best.pt", "best checkpoint")])
    r.figures([("a.png", "one"), ("a.png", "two")], columns=2)
    text = r.write(tmp_path).read_text()
    assert '<a href="#accuracy">accuracy</a>' in text and '<h2 id="accuracy">' in text  # the contents
    assert 'class="note warn"' in text and "&lt;b&gt;" in text
    assert '<div class="v">0.512</div>' in text and '<div class="k">box AP</div>' in text
    p = _Collect()
    p.feed(text)
    # None reads n/a (never -1.000 or None); a header-less key/value table; text cells left-aligned
    assert p.cells[:6] == ["metric", "box", "mask", "AP large", "n/a", "0.250"]
    assert p.cells[6:] == ["torch", "2.4", "threads", "2"]
    assert '<td class="t">2.4</td>' in text and "n/a: no large object" in text
    assert '<a href="train/best.pt">' in text and p.imgs == ["a.png", "a.png"]
    with pytest.raises(ValueError, match="note kind"):
        r.note("x", kind="loud")
    missing = Report("x").links([("train/last.pt", "last")])
    with pytest.raises(FileNotFoundError, match="last.pt"):  # a broken link is an error, as a broken image
        missing.write(tmp_path)


def test_collapsed_wraps_parts():
    r = Report("x")
    with r.collapsed("all COCO numbers"):
        r.text("inside")
    r.text("outside")
    html = r.render()
    assert html.index("<details><summary>all COCO numbers</summary>") < html.index("inside") < html.index(
        "</details>") < html.index("outside")


# ---- the demo's report ------------------------------------------------------------------------
def test_precision_recall_f1_from_a_confusion_matrix():
    from sceneparse.cli.demo_report import prf_from_confusion

    # rows: ground truth star, ring, sky, background; columns: predictions
    m = np.array([[3, 1, 0, 2],   # 3 stars found, 1 taken for a ring, 2 missed
                  [0, 4, 0, 0],   # 4 rings found
                  [0, 0, 0, 0],   # sky: a stuff class nobody predicts
                  [1, 2, 0, 0]])  # false alarms: 1 star, 2 rings
    out = prf_from_confusion(m, [0, 1])
    star, ring = out["per_class"]
    assert (star["TP"], star["FP"], star["FN"]) == (3, 1, 3)
    assert star["precision"] == pytest.approx(3 / 4) and star["recall"] == pytest.approx(3 / 6)
    assert star["F1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert (ring["TP"], ring["FP"], ring["FN"]) == (4, 3, 0)
    assert out["all"]["precision"] == pytest.approx(7 / 11) and out["all"]["recall"] == pytest.approx(7 / 10)
    nothing = prf_from_confusion(np.array([[0, 5], [0, 0]]), [0])  # no detection at all: precision n/a
    assert nothing["all"]["precision"] is None and nothing["all"]["recall"] == 0.0 and nothing["all"]["F1"] is None


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A demo output folder as `sceneparse demo` leaves it, without training: synthetic data, a run folder
    whose checkpoint holds the model info, one logged step and one evaluation, and low-score predictions
    (nothing reaches the drawing threshold) on the held-out images."""
    import json

    import torch

    from sceneparse.config import Config, save_config
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset
    from sceneparse.models.base import ModelInfo

    out = tmp_path_factory.mktemp("demo")
    scfg = SyntheticConfig(height=64, width=80, num_images=6, val_fraction=1 / 3, seed=3, empty_prob=0.0)
    write_dataset(out / "data", scfg, splits={"train": 4, "val": 2}, workers=1, progress=False)
    gt = json.loads((out / "data" / "annotations" / "instances_val.json").read_text())
    things = [c for c in gt["categories"] if c.get("isthing", 1)]
    assert len(things) < len(gt["categories"])  # the data has stuff categories the detector never predicts
    info = ModelInfo(task="instance", num_classes=len(things), iou_types=("bbox", "segm"),
                     class_names=tuple(c["name"] for c in things))
    cfg = Config()
    cfg.data.root = str(out / "data")
    cfg.data.batch_size = 2
    cfg.train.out = str(out / "train")
    (out / "train").mkdir()
    ckpt = {"model": {}, "config": cfg.to_dict(), "info": info.to_dict(), "class_names": list(info.class_names),
            "iteration_log": [{"iteration": 1, "lr": 0.01, "losses": {"loss_classifier": 1.5, "loss": 2.5}}],
            "history": [{"epoch": 1, "iterations": 1, "metrics": {"bbox_AP": 0.0123, "segm_AP": 0.004,
                                                                    "bbox_APl": -1.0}}]}
    torch.save(ckpt, out / "train" / "last.pt")
    torch.save(ckpt, out / "train" / "best.pt")
    save_config(cfg, out / "train" / "config.yaml")
    # predictions: every ground-truth box, shifted a little, with a score below the drawing threshold
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [a["bbox"][0] + 1, *a["bbox"][1:]],
              "score": 0.05 + 0.01 * (i % 5)} for i, a in enumerate(gt["annotations"]) if not a.get("iscrowd")]
    (out / "predict").mkdir()
    (out / "predict" / "predictions.json").write_text(json.dumps(preds))
    return out, info, max(p["score"] for p in preds)


def _write_demo_report(out, info):
    import argparse
    from types import SimpleNamespace

    from sceneparse.cli.demo_report import evaluate_detection, write_report

    eval_dir = out / "eval"
    eval_dir.mkdir(exist_ok=True)
    metrics, tables, figures = evaluate_detection(out / "data" / "annotations" / "instances_val.json",
                                                  out / "predict" / "predictions.json", eval_dir, info)
    args = argparse.Namespace(out=str(out), model="maskrcnn_resnet18_fpn", images=6, val_images=2, size=64,
                              minutes=0.1, batch=2, seed=3, device="cpu", show=2, quiet=True)
    result = SimpleNamespace(out=out / "train", last=out / "train" / "last.pt", best=out / "train" / "best.pt",
                             history=[], epochs=1, iterations=1, seconds=3.0)
    index = write_report(out, args, "detection", result, SimpleNamespace(failures=[]), metrics, tables, figures,
                         {"train": 3.0, "total": 5.0})
    return metrics, tables, index.read_text()


def test_demo_report_lists_only_the_model_classes_in_one_unit(demo_run):
    out, info, _ = demo_run
    metrics, tables, html = _write_demo_report(out, info)
    # tables: only the classes the model predicts (no stuff rows), no -1 anywhere on the page
    assert [r["class"] for r in tables["per class"]] == [n for n in info.class_names
                                                         if any(r["class"] == n for r in tables["per class"])]
    assert {r["class"] for r in tables["per class"]} <= set(info.class_names)
    for stuff in ("sky", "grass", "water", "road", "sand"):
        assert f"<td>{stuff}</td>" not in html and f'<td class="t">{stuff}</td>' not in html
    assert "-1.000" not in html and "n/a" in html
    # one unit: fractions in [0, 1] in the tables, in the cards and in the plots' words
    assert all(v is None or 0 <= v <= 1 for r in tables["per class"] for k, v in r.items()
               if k.endswith(("AP", "AP50")) or k in ("precision", "recall", "F1"))
    assert "fractions in [0, 1]" in html
    # precision / recall / F1 at the drawing threshold, with the threshold named
    assert "precision @ score 0.25" in html and "recall" in html and "F1" in html
    assert set(tables["prf"]) >= {"precision", "recall", "F1", "TP", "FP", "FN"}
    assert tables["prf"]["TP"] == 0 and tables["prf"]["FN"] > 0  # every score is below 0.25
    for png in ("eval/pr_bbox.png", "eval/pr_segm.png", "eval/confusion.png", "eval/threshold_sweep.png"):
        assert f'src="{png}"' in html and (out / png).is_file()


def test_demo_report_gallery_shows_ground_truth_beside_top_predictions(demo_run):
    from PIL import Image

    from sceneparse.cli.demo_report import _enlarged
    from sceneparse.data.images import read_image
    from sceneparse.viz.draw import to_uint8_image

    out, info, top = demo_run
    _, _, html = _write_demo_report(out, info)
    # nothing passed the threshold: the page says so, with the threshold and the highest score
    assert "No detection reached the drawing threshold 0.25" in html
    assert f"the highest score is {top:.3f}" in html and "top 5 detections" in html
    shots = sorted((out / "report" / "gallery").glob("*.png"))
    assert len(shots) == 2 and all(f'src="report/gallery/{p.name}"' in html for p in shots)
    for p in shots:
        im = np.asarray(Image.open(p).convert("RGB")).astype(int)
        # the 64 x 80 scene, enlarged to a shorter side of 256 (labels stay small), twice side by side
        raw = read_image(next((out / "data" / "images" / "val").glob(p.stem + ".*")))
        big = to_uint8_image(_enlarged(raw)[0]).astype(int)
        assert big.shape[:2] == (256, 320) and im.shape[1] == 2 * 320 + 6
        bar = im.shape[0] - 256
        gt_half, pred_half = im[bar:, :320], im[bar:, 326:]
        assert np.abs(gt_half - big).sum(-1).mean() > 5  # ground truth drawn on the left
        assert np.abs(pred_half - big).sum(-1).mean() > 1  # the top detections drawn on the right
        assert np.abs(gt_half - pred_half).sum(-1).mean() > 1
    assert "ground truth" in html and "highest score" in html  # captions say what is drawn


def test_demo_report_training_data_files_and_environment(demo_run):
    out, info, _ = demo_run
    _, _, html = _write_demo_report(out, info)
    # one-point curves: drawn as labelled points in the training figure
    assert 'src="report/curves.png"' in html and (out / "report" / "curves.png").is_file()
    assert "training loss (every step)" not in html  # (the panel title is in the picture, not the page)
    # augmented training batches, as the trainer builds them, and the label statistics
    assert 'src="report/train_batch0.png"' in html and 'src="report/label_stats.png"' in html
    assert "objects per class" in html and "train objects" in html and "median size" in html
    # links to the run's files
    for f in ("train/best.pt", "train/last.pt", "train/config.yaml", "predict/predictions.json",
              "eval/metrics.json"):
        if (out / f).is_file():
            assert f'<a href="{f}">' in html
    assert '<a href="train/best.pt">' in html and '<a href="predict/predictions.json">' in html
    # the environment: versions, threads, device, machine load
    for word in ("torch", "torchvision", "numpy", "torch threads", "device", "machine load", "CPU cores"):
        assert word in html, word
    assert "barely learned" in html  # a poor result is said so, with what to change


def test_coco_results_read_back_for_drawing():
    """The predictor's COCO results (boxes, RLE masks, keypoints) come back as the Instances drawn."""
    import torch

    from sceneparse.cli.demo_report import results_by_image
    from sceneparse.conventions import CategoryMap
    from sceneparse.data.formats.coco_results import instances_to_coco_results
    from sceneparse.structures.instances import Instances

    cats = CategoryMap.from_coco([{"id": 7, "name": "star"}, {"id": 9, "name": "ring"}])
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:18, 12:25] = True
    kp = torch.rand(2, 3, 3) * 10
    kp[..., 2] = 2.0
    inst = Instances((20, 30), boxes=torch.tensor([[3.0, 2, 9, 8], [12, 10, 25, 18]]), labels=torch.tensor([1, 0]),
                     scores=torch.tensor([0.9, 0.2]), masks=masks, keypoints=kp,
                     keypoint_scores=torch.tensor([[0.5, 0.6, 0.7], [0.1, 0.2, 0.3]]))
    records = instances_to_coco_results(inst, 5, cats)
    records.append({"image_id": 5, "category_id": 101, "bbox": [0, 0, 1, 1], "score": 0.99})  # not a model class
    back = results_by_image(records, cats, {5: (20, 30), 6: (20, 30)})[5]
    assert len(back) == 2 and back.labels.tolist() == [1, 0]
    torch.testing.assert_close(back.boxes, inst.boxes)
    assert torch.equal(back.masks, masks) and back.scores.tolist() == pytest.approx([0.9, 0.2])
    torch.testing.assert_close(back.keypoints[..., :2], kp[..., :2], atol=0.01, rtol=0)  # written to 2 decimals
    torch.testing.assert_close(back.keypoint_scores, inst.keypoint_scores, atol=1e-4, rtol=0)
    assert len(results_by_image(records, cats, {6: (20, 30)})[6]) == 0  # an image without results: empty


def test_demo_logs_the_loss_every_step(tmp_path, monkeypatch):
    """The demo's run logs every step (its report draws the loss of short runs point by point)."""
    import sceneparse.engine.trainer as trainer_mod
    from sceneparse.cli import main

    seen = {}

    class Recorder:  # stands in for the trainer: records the config, then stops the demo
        def __init__(self, cfg, *a, **k):
            seen["cfg"] = cfg
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "Trainer", Recorder)
    try:
        main(["demo", "--out", str(tmp_path / "d"), "--images", "3", "--val-images", "1", "--size", "32", "--quiet"])
    except (KeyboardInterrupt, SystemExit):
        pass
    assert seen["cfg"].train.log_every == 1
