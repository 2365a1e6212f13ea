"""`sceneparse demo` end to end on a tiny budget: data, training, prediction, evaluation, report."""
import json
import re

import pytest
from pycocotools.coco import COCO

from sceneparse.cli import main

pytestmark = pytest.mark.slow  # trains, predicts, evaluates and reports through the CLI


def test_demo_writes_a_complete_report(tmp_path):
    out = tmp_path / "demo"
    # a fixed number of iterations (the same work on a loaded machine), from the shipped weights
    rc = main(["demo", "--out", str(out), "--images", "24", "--val-images", "6", "--size", "128",
               "--iterations", "6", "--batch", "2", "--show", "4", "--quiet"])
    assert rc == 0
    # the COCO results the predictor wrote load in pycocotools against the held-out ground truth
    gt = COCO(str(out / "data" / "annotations" / "instances_val.json"))
    preds = json.loads((out / "predict" / "predictions.json").read_text())
    assert preds and {p["image_id"] for p in preds} <= set(gt.getImgIds())
    dt = gt.loadRes(str(out / "predict" / "predictions.json"))
    assert len(dt.getAnnIds()) == len(preds)
    # metrics come from evaluating that file: AP values are fractions, per-class rows name the classes
    m = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(m["metrics"]) >= {"bbox_AP", "bbox_AP50", "segm_AP"}
    assert all(-1 <= v <= 1 for v in m["metrics"].values() if v is not None)
    names = {c["name"] for c in gt.loadCats(gt.getCatIds())}
    assert {r["class"] for r in m["per_class"]} <= names
    # the report shows every picture it references, and they exist
    html = (out / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert any(s.startswith("report/gallery/") for s in srcs)
    assert any(s.startswith("eval/pr_bbox") for s in srcs) and "eval/confusion.png" in srcs
    assert all((out / s).is_file() for s in srcs)
    assert "box AP" in html and "report/curves.png" in srcs
    # it says where it started from and how those weights were made
    assert "maskrcnn_resnet18_fpn_synthetic.pt" in html and "sceneparse train --model maskrcnn_resnet18_fpn" in html
    assert json.loads((out / "train" / "results.csv").read_text().splitlines()[-1].split(",")[1]) == 6
