import numpy as np
import pytest

from sceneparse.errors import PredictionError
from sceneparse.evaluation import confusion as confusion_mod
from sceneparse.evaluation.confusion import detection_confusion_matrix, greedy_match
from sceneparse.viz.plots import plot_confusion_matrix


def _gt(anns, n_images=1, cats=("A", "B", "C")):
    return {"images": [{"id": i + 1, "height": 100, "width": 100} for i in range(n_images)],
            "categories": [{"id": 10 * (k + 1), "name": n} for k, n in enumerate(cats)],
            "annotations": [dict(id=j + 1, area=a["bbox"][2] * a["bbox"][3], iscrowd=0, **a) for j, a in enumerate(anns)]}


def test_hand_made_matrix():
    gt = _gt([
        {"image_id": 1, "category_id": 10, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "category_id": 20, "bbox": [20, 0, 10, 10]},
        {"image_id": 1, "category_id": 20, "bbox": [40, 0, 10, 10]},   # missed
        {"image_id": 2, "category_id": 30, "bbox": [0, 0, 10, 10]},
    ], n_images=2)
    res = [
        {"image_id": 1, "category_id": 10, "bbox": [0, 0, 10, 10], "score": 0.9},    # A -> A
        {"image_id": 1, "category_id": 10, "bbox": [1, 0, 10, 10], "score": 0.8},    # duplicate: false alarm A
        {"image_id": 1, "category_id": 30, "bbox": [20, 0, 10, 10], "score": 0.7},   # B predicted as C
        {"image_id": 1, "category_id": 20, "bbox": [40, 0, 10, 10], "score": 0.1},   # below the score threshold
        {"image_id": 2, "category_id": 30, "bbox": [0, 0, 10, 9], "score": 0.5},     # C -> C (IoU .9)
        {"image_id": 2, "category_id": 20, "bbox": [80, 80, 10, 10], "score": 0.6},  # false alarm B
    ]
    cm = detection_confusion_matrix(gt, res, iou=0.5, score_threshold=0.25)
    expected = np.array([
        # A  B  C  bg   (columns: predicted; rows: ground truth)
        [1, 0, 0, 0],
        [0, 0, 1, 1],
        [0, 0, 1, 0],
        [1, 1, 0, 0],
    ])
    np.testing.assert_array_equal(np.asarray(cm), expected)
    assert cm.class_names == ["A", "B", "C"] and cm.cat_ids == [10, 20, 30]
    # a lower threshold lets the low-score B detection find the missed object
    low = detection_confusion_matrix(gt, res, score_threshold=0.0)
    assert low.matrix[1, 1] == 1 and low.matrix[1, 3] == 0
    assert "false alarms" in cm.summary()


def test_crowd_regions_absorb_detections_and_are_never_missed():
    gt = _gt([{"image_id": 1, "category_id": 10, "bbox": [0, 0, 50, 50]},
              {"image_id": 1, "category_id": 10, "bbox": [60, 60, 20, 20]}])
    gt["annotations"][0]["iscrowd"] = 1
    res = [{"image_id": 1, "category_id": 20, "bbox": [5, 5, 10, 10], "score": 0.9},  # inside the crowd region
           {"image_id": 1, "category_id": 10, "bbox": [60, 60, 20, 20], "score": 0.8}]
    cm = detection_confusion_matrix(gt, res)
    assert cm.crowd_matches == 1
    assert cm.matrix.sum() == 1 and cm.matrix[0, 0] == 1


def _reference(gt, res, iou_thr, score_thr):
    """Plain loops: per image, detections by descending score take the free object of highest IoU."""
    cats = sorted(c["id"] for c in gt["categories"])
    c = len(cats)
    m = np.zeros((c + 1, c + 1), dtype=np.int64)

    def iou(d, g, crowd):
        iw = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
        ih = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / (d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter)

    for img in gt["images"]:
        gts = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        dts = sorted([r for r in res if r["image_id"] == img["id"] and r["score"] >= score_thr],
                     key=lambda r: -r["score"])
        taken = [False] * len(gts)
        for d in dts:
            best, best_iou = None, iou_thr
            for ignore_pass in (False, True):
                for j, g in enumerate(gts):
                    if bool(g["iscrowd"]) != ignore_pass or (taken[j] and not g["iscrowd"]):
                        continue
                    v = iou(d["bbox"], g["bbox"], g["iscrowd"])
                    if v >= best_iou:
                        best, best_iou = j, v
                if best is not None:
                    break
            if best is None:
                m[c, cats.index(d["category_id"])] += 1
            elif not gts[best]["iscrowd"]:
                taken[best] = True
                m[cats.index(gts[best]["category_id"]), cats.index(d["category_id"])] += 1
        for j, g in enumerate(gts):
            if not taken[j] and not g["iscrowd"]:
                m[cats.index(g["category_id"]), c] += 1
    return m


def _random(rng, n_images=8):
    anns, res = [], []
    for i in range(1, n_images + 1):
        for _ in range(rng.integers(0, 7)):
            x, y, w, h = rng.integers(0, 70, 2).tolist() + rng.integers(3, 30, 2).tolist()
            anns.append({"image_id": i, "category_id": int(rng.choice([10, 20, 30])), "bbox": [x, y, w, h]})
            for _ in range(rng.integers(0, 3)):
                j = rng.integers(-3, 4, 4)  # integer jitter: exact IoU ties happen
                res.append({"image_id": i, "category_id": int(rng.choice([10, 20, 30])),
                            "bbox": [int(x + j[0]), int(y + j[1]), int(max(1, w + j[2])), int(max(1, h + j[3]))],
                            "score": float(rng.integers(0, 10)) / 10})
        for _ in range(rng.integers(0, 3)):
            res.append({"image_id": i, "category_id": int(rng.choice([10, 20, 30])),
                        "bbox": rng.integers(0, 80, 2).tolist() + rng.integers(2, 20, 2).tolist(),
                        "score": float(rng.random())})
    gt = _gt(anns, n_images)
    for a in gt["annotations"]:
        a["iscrowd"] = int(rng.random() < 0.1)
    return gt, res


@pytest.mark.parametrize("iou_thr,score_thr", [(0.5, 0.25), (0.3, 0.0), (0.75, 0.5)])
def test_random_against_loop_reference(iou_thr, score_thr, monkeypatch):
    rng = np.random.default_rng(int(iou_thr * 100))
    for trial in range(10):
        gt, res = _random(rng)
        cm = detection_confusion_matrix(gt, res, iou=iou_thr, score_threshold=score_thr)
        np.testing.assert_array_equal(cm.matrix, _reference(gt, res, iou_thr, score_thr), err_msg=str(trial))
    # chunking over images must not change anything
    monkeypatch.setattr(confusion_mod, "CHUNK_ELEMENTS", 1)
    np.testing.assert_array_equal(detection_confusion_matrix(gt, res, iou=iou_thr, score_threshold=score_thr).matrix,
                                  _reference(gt, res, iou_thr, score_thr))


def test_segm_confusion_uses_mask_iou():
    # an L-shaped mask (300 px) inside a 400 px square object: box IoU 1 but mask IoU 0.75
    gt = _gt([{"image_id": 1, "category_id": 10, "bbox": [0, 0, 20, 20],
               "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]}])
    from pycocotools import mask as mask_utils

    m = np.zeros((100, 100), dtype=np.uint8, order="F")
    m[0:10, 0:20] = 1
    m[10:20, 0:10] = 1  # 300 px of the 400 px square
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    res = [{"image_id": 1, "category_id": 10, "segmentation": rle, "score": 0.9}]
    assert detection_confusion_matrix(gt, res, iou=0.7, iou_type="segm").matrix[0, 0] == 1  # IoU .75
    assert detection_confusion_matrix(gt, res, iou=0.8, iou_type="segm").matrix[0, 0] == 0


def test_greedy_match_prefers_regular_objects_and_breaks_ties_last():
    iou = np.array([[[0.6, 0.6, 0.9]]])  # one detection; objects 0, 1 tie; object 2 is a crowd region
    allowed = np.ones((1, 1, 3), dtype=bool)
    crowd = np.array([[False, False, True]])
    assert greedy_match(iou, allowed, crowd, crowd, 0.5).tolist() == [[1]]
    assert greedy_match(iou, allowed, crowd, crowd, 0.7).tolist() == [[2]]


def test_invalid_results_raise_and_plot_writes_png(tmp_path):
    gt = _gt([{"image_id": 1, "category_id": 10, "bbox": [0, 0, 10, 10]}])
    with pytest.raises(PredictionError, match=r"result 0 \(image_id 1\): category_id"):
        detection_confusion_matrix(gt, [{"image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1], "score": 1.0}])
    cm = detection_confusion_matrix(gt, [{"image_id": 1, "category_id": 20, "bbox": [0, 0, 10, 10], "score": 1.0}])
    assert cm.matrix[0, 1] == 1
    out = plot_confusion_matrix(cm, tmp_path / "plots" / "confusion.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["confusion.png"]  # no temp file left


def test_no_detections_or_no_objects():
    gt, res = _random(np.random.default_rng(11))
    n_obj = sum(not a["iscrowd"] for a in gt["annotations"])
    cm = detection_confusion_matrix(gt, [])
    assert cm.matrix[:3, 3].sum() == n_obj and cm.matrix.sum() == n_obj
    empty = dict(gt, annotations=[])
    cm = detection_confusion_matrix(empty, res, score_threshold=0.0)
    np.testing.assert_array_equal(cm.matrix[3, :3], np.bincount([r["category_id"] // 10 - 1 for r in res], minlength=3))
    assert cm.matrix.sum() == len(res)
