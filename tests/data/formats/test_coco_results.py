"""COCO results records and the streaming writer: values checked by hand, round trips through
pycocotools' ``loadRes`` / ``COCOeval`` and ``sceneparse.evaluation.evaluate_coco``."""
import contextlib
import copy
import io
import json
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sceneparse.conventions import Category, CategoryMap
from sceneparse.data.formats.coco_results import (CocoResultsWriter, JsonListWriter, category_ids,
                                                  instances_to_coco_results, write_coco_results)
from sceneparse.errors import DataError
from sceneparse.evaluation import evaluate_coco
from sceneparse.structures.instances import Instances
from sceneparse.structures.keypoints import COCO_KEYPOINT_NAMES
from sceneparse.structures.masks import masks_to_boxes

# label order of the "checkpoint": ids deliberately not sorted and not contiguous
CATEGORIES = [{"id": 7, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES)},
              {"id": 3, "name": "ring"}, {"id": 11, "name": "star"}]


def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _rect(h, w, y0, x0, y1, x1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _hand_made_set():
    """Two images with masks, boxes from the masks, and 17 keypoints for the person (label 0).
    Returns (COCO ground-truth dict, [(image_id, Instances equal to the ground truth)])."""
    rng = np.random.default_rng(0)
    specs = {
        5: (40, 56, [(0, _ellipse(40, 56, 20, 15, 12, 9)), (1, _rect(40, 56, 3, 30, 20, 52)),
                     (2, _rect(40, 56, 25, 33, 38, 50))]),
        9: (48, 36, [(2, _ellipse(48, 36, 14, 18, 10, 14)), (0, _rect(48, 36, 28, 4, 46, 30))]),
    }
    gt = {"images": [], "annotations": [], "categories": copy.deepcopy(CATEGORIES)}
    pairs = []
    ann_id = 1
    for image_id, (h, w, objs) in specs.items():
        gt["images"].append({"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w})
        masks = np.stack([m for _, m in objs])
        labels = np.array([lab for lab, _ in objs])
        boxes = masks_to_boxes(torch.from_numpy(masks))
        kps = np.zeros((len(objs), 17, 3), dtype=np.float32)
        for i, (lab, _) in enumerate(objs):
            if lab == 0:
                x0, y0, x1, y1 = boxes[i].tolist()
                kps[i, :, 0] = rng.uniform(x0 + 1, x1 - 1, 17)
                kps[i, :, 1] = rng.uniform(y0 + 1, y1 - 1, 17)
                kps[i, :, 2] = 2
        for i, (lab, m) in enumerate(objs):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            x0, y0, x1, y1 = boxes[i].tolist()
            ann = {"id": ann_id, "image_id": image_id, "category_id": CATEGORIES[lab]["id"], "iscrowd": 0,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(m.sum()), "segmentation": rle}
            ann["keypoints"] = kps[i].ravel().tolist()  # all zeros (unlabelled) but for the person
            ann["num_keypoints"] = int((kps[i, :, 2] > 0).sum())
            gt["annotations"].append(ann)
            ann_id += 1
        inst = Instances((h, w), boxes=boxes, labels=torch.from_numpy(labels),
                         scores=torch.linspace(0.9, 0.6, len(objs)), masks=torch.from_numpy(masks),
                         keypoints=torch.from_numpy(kps), keypoint_scores=torch.full((len(objs), 17), 3.5))
        pairs.append((image_id, inst))
    return gt, pairs


def test_records_hold_the_values_by_hand():
    inst = Instances((10, 12), boxes=torch.tensor([[1.0, 2.0, 5.5, 9.25], [0.0, 0.0, 12.0, 10.0]]),
                     labels=torch.tensor([2, 0]), scores=torch.tensor([0.75, 0.5]),
                     masks=torch.from_numpy(np.stack([_rect(10, 12, 2, 1, 9, 5), _rect(10, 12, 0, 0, 10, 12)])),
                     keypoints=torch.tensor([[[1.0, 2.0, 1.0]], [[3.14159, 4.0, 1.0]]]),
                     keypoint_scores=torch.tensor([[0.25], [-1.5]]))
    recs = instances_to_coco_results(inst, 42, CATEGORIES)
    assert [r["category_id"] for r in recs] == [11, 7]
    assert [r["image_id"] for r in recs] == [42, 42]
    assert recs[0]["bbox"] == [1.0, 2.0, 4.5, 7.25]
    assert recs[1]["bbox"] == [0.0, 0.0, 12.0, 10.0]
    assert recs[0]["score"] == pytest.approx(0.75) and recs[1]["score"] == pytest.approx(0.5)
    assert recs[0]["keypoints"] == [1.0, 2.0, 0.25]
    assert recs[1]["keypoints"] == [3.142, 4.0, -1.5]  # coordinates rounded to 3 decimals, score as is
    assert isinstance(recs[0]["segmentation"]["counts"], str)
    assert recs[0]["segmentation"]["size"] == [10, 12]
    back = mask_utils.decode({"size": [10, 12], "counts": recs[0]["segmentation"]["counts"].encode()})
    assert np.array_equal(back.astype(bool), _rect(10, 12, 2, 1, 9, 5))
    assert mask_utils.area({"size": [10, 12], "counts": recs[1]["segmentation"]["counts"].encode()}) == 120
    # only the fields asked for; the v of the keypoints when there are no keypoint scores
    recs = instances_to_coco_results(Instances((10, 12), labels=torch.tensor([1]), scores=torch.tensor([1.0]),
                                               keypoints=torch.tensor([[[2.0, 3.0, 2.0]]])), 1, CATEGORIES)
    assert recs == [{"image_id": 1, "category_id": 3, "score": 1.0, "keypoints": [2.0, 3.0, 2.0]}]
    assert instances_to_coco_results(Instances.empty((5, 5)), 1, CATEGORIES) == []
    only_box = instances_to_coco_results(inst, 1, CategoryMap([Category(1, "a"), Category(2, "b"), Category(9, "c")]),
                                         fields=["bbox"], decimals=None)
    assert set(only_box[0]) == {"image_id", "category_id", "score", "bbox"} and only_box[0]["category_id"] == 9


def test_category_ids_accepts_maps_dicts_and_ids_and_rejects_bad_ones():
    assert category_ids(CATEGORIES).tolist() == [7, 3, 11]  # label order kept, not sorted
    assert category_ids([4, 2]).tolist() == [4, 2]
    with pytest.raises(DataError, match=r"categories\[1\]: id"):
        category_ids([{"id": 1}, {"name": "x"}])
    with pytest.raises(DataError, match="duplicate"):
        category_ids([1, 1])


@pytest.mark.parametrize("change, match", [
    (dict(labels=torch.tensor([0, 3])), r"file\.png: image 4: labels\[1\]: label outside 0\.\.2"),
    (dict(scores=torch.tensor([0.5, float("nan")])), r"image 4: scores\[1\]: non-finite score"),
    (dict(boxes=torch.tensor([[0.0, 0, 1, 1], [0, float("inf"), 1, 1]])), r"image 4: boxes\[1\]: non-finite box"),
    (dict(scores=None), r"image 4: scores: COCO results need labels and scores"),
    (dict(masks=torch.zeros(2, 3, 3, dtype=torch.bool)), r"image 4: masks: masks are \(3, 3\)"),
])
def test_bad_instances_raise_errors_naming_image_and_field(change, match):
    kw = dict(boxes=torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2]]), labels=torch.tensor([0, 1]),
              scores=torch.tensor([0.5, 0.4]))
    kw.update(change)
    with pytest.raises(DataError, match=match):
        instances_to_coco_results(Instances((4, 4), **kw), 4, CATEGORIES, file="file.png")


def _pycoco_stats(gt: dict, results_path, iou_type: str, cat_ids=None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        res = coco.loadRes(str(results_path))
        ev = COCOeval(coco, res, iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_ground_truth_as_predictions_round_trips_to_ap_one(tmp_path, iou_type):
    gt, pairs = _hand_made_set()
    path = write_coco_results(tmp_path / "pred.json", pairs, CATEGORIES)
    records = json.loads(path.read_text())
    assert len(records) == len(gt["annotations"]) == 5
    assert sorted(r["category_id"] for r in records) == sorted(a["category_id"] for a in gt["annotations"])
    cat_ids = [7] if iou_type == "keypoints" else None  # keypoints: the person category only
    stats = _pycoco_stats(gt, path, iou_type, cat_ids)
    assert stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    assert stats[1] == pytest.approx(1.0)  # AP50
    ours = evaluate_coco(gt, str(path), iou_type, cat_ids=cat_ids)
    np.testing.assert_allclose(ours.stats, stats, atol=1e-12)
    # the mapping back to dataset ids matters: rotate the labels and AP falls to 0
    rotated = [(i, Instances(inst.image_size, boxes=inst.boxes, labels=(inst.labels + 1) % 3, scores=inst.scores,
                             masks=inst.masks, keypoints=inst.keypoints)) for i, inst in pairs]
    bad = write_coco_results(tmp_path / "rotated.json", rotated, CATEGORIES)
    assert _pycoco_stats(gt, bad, iou_type, cat_ids)[0] == pytest.approx(0.0)
    assert evaluate_coco(gt, str(bad), iou_type, cat_ids=cat_ids).stats[0] == pytest.approx(0.0)


def test_writer_is_atomic_and_streams(tmp_path):
    gt, pairs = _hand_made_set()
    path = tmp_path / "out" / "pred.json"
    w = CocoResultsWriter(path, CATEGORIES, fields=["bbox"])
    assert w.add(pairs[0][1], pairs[0][0]) == 3
    w._f.flush()
    temps = [p for p in path.parent.iterdir() if p.name.startswith(".pred.json.")]
    assert not path.exists() and len(temps) == 1 and temps[0].stat().st_size > 100  # written as it goes
    w.add(pairs[1][1], pairs[1][0])
    assert w.close() == path and w.count == 5 and w.num_images == 2
    assert [set(r) for r in json.loads(path.read_text())] == [{"image_id", "category_id", "score", "bbox"}] * 5
    assert os.listdir(path.parent) == ["pred.json"]
    # an error inside the with block keeps the previous file and leaves no temp file
    before = path.read_text()
    with pytest.raises(DataError):
        with CocoResultsWriter(path, CATEGORIES) as w2:
            w2.add(pairs[0][1], 1)
            w2.add(Instances((2, 2), boxes=torch.zeros(1, 4), labels=torch.tensor([5]), scores=torch.ones(1)), 2)
    assert path.read_text() == before and os.listdir(path.parent) == ["pred.json"]
    # an empty results file is a valid empty list
    assert json.loads(write_coco_results(tmp_path / "empty.json", [], CATEGORIES).read_text()) == []


def test_json_list_writer_prefix_suffix_and_nan(tmp_path):
    with JsonListWriter(tmp_path / "doc.json", prefix='{"a": 1, "items": [', suffix="]}") as w:
        w.write({"x": 1})
        w.write([2, 3])
    assert json.loads((tmp_path / "doc.json").read_text()) == {"a": 1, "items": [{"x": 1}, [2, 3]]}
    w = JsonListWriter(tmp_path / "nan.json")
    with pytest.raises(ValueError):
        w.write({"v": float("nan")})
    w.abort()
    assert not (tmp_path / "nan.json").exists() and os.listdir(tmp_path) == ["doc.json"]
