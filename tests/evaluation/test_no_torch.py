"""``sceneparse.evaluation`` scores files with numpy alone: importing it, and scoring COCO bbox / segm /
keypoints JSON, semantic label maps and panoptic PNGs, never imports torch (about 1 s of start-up)."""
import subprocess
import sys

SCRIPT = r"""
import json, sys
from pathlib import Path

import numpy as np
from PIL import Image

import sceneparse.evaluation as ev
from sceneparse.conventions import id2rgb

assert "torch" not in sys.modules, "import sceneparse.evaluation imported torch"

kp = [10, 10, 2] * 17
gt = {"images": [{"id": 1, "height": 40, "width": 50}],
      "categories": [{"id": 1, "name": "person"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400,
                       "iscrowd": 0, "num_keypoints": 17, "keypoints": kp,
                       "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]]}]}
res = [{"image_id": 1, "category_id": 1, "bbox": [6, 5, 20, 20], "score": 0.9, "keypoints": kp,
        "segmentation": [[6, 5, 26, 5, 26, 25, 6, 25]]}]
for iou_type in ("bbox", "segm", "keypoints"):  # keypoints: COCO's OKS sigmas by default
    assert abs(ev.evaluate_coco(gt, res, iou_type).stats[1] - 1.0) < 1e-9, iou_type  # AP50
ev.detection_confusion_matrix(gt, res)
ev.tide_errors(gt, res, "bbox")

sem = ev.SemanticEvaluator(3)
sem.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 255]]))
assert sem.compute().miou == 1.0

root = Path(sys.argv[1])
ids = np.zeros((4, 6), dtype=np.int64)
ids[:2, :3] = 5
for side in ("gt", "pred"):
    (root / side).mkdir()
    Image.fromarray(id2rgb(ids)).save(root / side / "a.png")
    seg = {"id": 5, "category_id": 1, "iscrowd": 0}
    (root / f"{side}.json").write_text(json.dumps({"annotations": [
        {"image_id": 1, "file_name": "a.png", "segments_info": [seg]}]}))
pq = ev.evaluate_panoptic(root / "gt.json", root / "gt", root / "pred.json", root / "pred",
                          categories=[{"id": 1, "name": "thing", "isthing": 1}])
assert pq.pq == 1.0

loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
print("scored without torch")
"""


def test_evaluation_imports_and_scores_files_without_torch(tmp_path):
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "scored without torch" in run.stdout


def test_tensors_and_structures_are_still_accepted():
    import torch

    from sceneparse.evaluation import PanopticEvaluator, SemanticEvaluator
    from sceneparse.structures.segmaps import PanopticMap, SegmentInfo, SemanticMap

    sem = SemanticEvaluator(3)
    sem.update(SemanticMap(torch.tensor([[0, 1], [2, 1]])), torch.tensor([[0, 1], [2, 2]]))
    assert sem.confusion[2].tolist() == [0, 1, 1]
    pan = PanopticEvaluator([{"id": 1, "name": "thing", "isthing": 1}])
    ids = torch.zeros(4, 6, dtype=torch.long)
    ids[:2, :3] = 5
    pmap = PanopticMap(ids, [SegmentInfo(id=5, category_id=1)])
    pan.update(pmap, pmap)
    assert pan.compute().pq == 1.0
