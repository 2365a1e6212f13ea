import copy

import numpy as np
import pytest
from pycoco_reference import pycoco_eval

from sceneparse.evaluation.errors import ErrorType, average_precision, tide_errors


def pycoco_ap50(gt, results, iou_type="bbox", max_dets=100):
    """AP@50 (area all, the given maxDets) from pycocotools, overall and per category."""
    e = pycoco_eval(gt, results, iou_type, max_dets=[1, 10, max_dets] if max_dets > 10 else [max_dets],
                    summarize=False)
    p = e.eval["precision"][0, :, :, 0, -1]
    per = {c: p[:, k].mean() for k, c in enumerate(e.params.catIds) if (p[:, k] > -1).all()}
    return float(p[p > -1].mean()), per


def random_coco(rng, n_images=6, n_cats=3, segm=False):
    images, anns, results = [], [], []
    cats = [{"id": c * 2 + 1, "name": f"cat{c}"} for c in range(n_cats)]
    for i in range(n_images):
        iid = 100 + 3 * i
        images.append({"id": iid, "height": 60, "width": 80, "file_name": f"{iid}.jpg"})
        for _ in range(rng.integers(0, 6)):
            x, y, bw, bh = rng.uniform(0, 50), rng.uniform(0, 35), rng.uniform(4, 30), rng.uniform(4, 25)
            c = cats[rng.integers(n_cats)]["id"]
            a = {"id": len(anns) + 1, "image_id": iid, "category_id": c, "bbox": [x, y, bw, bh], "area": bw * bh,
                 "iscrowd": int(rng.random() < 0.1)}
            if segm:
                a["segmentation"] = [[x, y, x + bw, y, x + 0.7 * bw, y + bh, x, y + 0.8 * bh]]
            anns.append(a)
            for _ in range(rng.integers(0, 3)):
                j = rng.normal(0, 4, 4)
                results.append({"image_id": iid, "category_id": c if rng.random() < 0.8 else cats[rng.integers(n_cats)]["id"],
                                "bbox": [x + j[0], y + j[1], max(1, bw + j[2]), max(1, bh + j[3])],
                                "score": float(np.round(rng.random(), 1))})  # rounded: many exact ties
        for _ in range(rng.integers(0, 3)):
            results.append({"image_id": iid, "category_id": cats[rng.integers(n_cats)]["id"],
                            "bbox": [rng.uniform(0, 60), rng.uniform(0, 40), rng.uniform(3, 20), rng.uniform(3, 20)],
                            "score": float(np.round(rng.random(), 1))})
    if segm:
        from pycocotools import mask as mask_utils

        for r in results:
            x, y, bw, bh = r.pop("bbox")
            rle = mask_utils.merge(mask_utils.frPyObjects(
                [[x, y, x + bw, y, x + bw, y + 0.9 * bh, x + 0.2 * bw, y + bh]], 60, 80))
            rle["counts"] = rle["counts"].decode()
            r["segmentation"] = rle
    return {"images": images, "annotations": anns, "categories": cats}, results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_baseline_ap50_equals_pycocotools(iou_type):
    rng = np.random.default_rng(1)
    for trial in range(12):
        gt, res = random_coco(rng, segm=iou_type == "segm")
        if not res:
            continue
        ref, per = pycoco_ap50(gt, res, iou_type)
        r = tide_errors(gt, res, iou_type)
        assert r.ap50 == pytest.approx(ref, abs=1e-12), trial
        assert set(r.per_category_ap50) == set(per)
        for c, v in per.items():
            assert r.per_category_ap50[c] == pytest.approx(v, abs=1e-12)
        # every kept detection has exactly one kind; kinds partition the results
        assert len(r.det_kind) == len(res) and "dropped" not in set(r.det_kind)


def test_max_dets_truncation_and_ties_follow_pycocotools():
    rng = np.random.default_rng(7)
    for _ in range(6):
        gt, res = random_coco(rng, n_images=4, n_cats=2)
        ref, _ = pycoco_ap50(gt, res, max_dets=2)
        r = tide_errors(gt, res, max_dets=2)
        assert r.ap50 == pytest.approx(ref, abs=1e-12)
        kept_per_group = {}
        for d, k in zip(res, r.det_kind):
            if k != "dropped":
                key = (d["image_id"], d["category_id"])
                kept_per_group[key] = kept_per_group.get(key, 0) + 1
        assert max(kept_per_group.values()) <= 2


def _hand_case():
    gt = {"images": [{"id": 1, "height": 80, "width": 80}],
          "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
          "annotations": [
              {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 12, "image_id": 1, "category_id": 2, "bbox": [40, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 13, "image_id": 1, "category_id": 1, "bbox": [0, 40, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 14, "image_id": 1, "category_id": 1, "bbox": [40, 40, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 15, "image_id": 1, "category_id": 1, "bbox": [60, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 16, "image_id": 1, "category_id": 2, "bbox": [62, 22, 15, 15], "area": 225, "iscrowd": 0},
          ]}
    res = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},    # TP on 11
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20], "score": 0.8},    # Dupe of 11 (IoU .82)
        {"image_id": 1, "category_id": 1, "bbox": [40, 0, 20, 20], "score": 0.7},   # Cls: B object 12, IoU 1
        {"image_id": 1, "category_id": 1, "bbox": [10, 40, 20, 20], "score": 0.6},  # Loc: object 13, IoU 1/3
        {"image_id": 1, "category_id": 2, "bbox": [10, 45, 20, 20], "score": 0.5},  # Both: A object 13, IoU .23
        {"image_id": 1, "category_id": 1, "bbox": [65, 65, 10, 10], "score": 0.4},  # Bkg: touches nothing
        {"image_id": 1, "category_id": 1, "bbox": [60, 0, 20, 20], "score": 0.3},   # TP on 15 (after the errors)
        {"image_id": 1, "category_id": 2, "bbox": [62, 22, 15, 15], "score": 0.2},  # TP on 16
    ]                                                                               # object 14: Miss
    return gt, res


def test_each_error_type_once_with_hand_computed_ap():
    gt, res = _hand_case()
    r = tide_errors(gt, res)
    assert list(r.det_kind) == ["TP", "Dupe", "Cls", "Loc", "Both", "Bkg", "TP", "TP"]
    assert list(r.det_target) == [-1, 11, 12, 13, -1, -1, -1, -1]
    assert r.missed_gt.tolist() == [14]
    assert all(r.counts[t] == 1 for t in ErrorType)
    # A: 4 positives; TPs at ranks 1 and 6 -> precision 1 up to recall .25 (26 of the 101 points), 2/6 up to .5
    # (25 points). B: 2 positives; FP then TP -> precision 1/2 up to recall .5 (51 points).
    ap_a, ap_b = (26 + 25 / 3) / 101, 25.5 / 101
    assert r.ap50 == pytest.approx((ap_a + ap_b) / 2, abs=1e-12)
    # Loc fixed: A's ranks are TP FP FP TP FP TP -> envelope 1 up to recall .25, then 1/2 up to .75 (50 points)
    assert r.delta_ap[ErrorType.LOC] == pytest.approx((51 / 101 + ap_b) / 2 - (ap_a + ap_b) / 2, abs=1e-12)


def test_each_fix_equals_pycocotools_on_the_fixed_data():
    gt, res = _hand_case()
    r = tide_errors(gt, res)
    base, _ = pycoco_ap50(gt, res)

    def fixed(edit_res=None, edit_gt=None):
        g, d = copy.deepcopy(gt), copy.deepcopy(res)
        if edit_res:
            d = edit_res(d)
        if edit_gt:
            g = edit_gt(g)
        return pycoco_ap50(g, d)[0] - base

    expect = {
        ErrorType.DUPE: fixed(lambda d: [x for i, x in enumerate(d) if i != 1]),
        ErrorType.CLS: fixed(lambda d: [dict(x, category_id=2) if i == 2 else x for i, x in enumerate(d)]),
        ErrorType.LOC: fixed(lambda d: [dict(x, bbox=[0, 40, 20, 20]) if i == 3 else x for i, x in enumerate(d)]),
        ErrorType.BOTH: fixed(lambda d: [x for i, x in enumerate(d) if i != 4]),
        ErrorType.BKG: fixed(lambda d: [x for i, x in enumerate(d) if i != 5]),
        ErrorType.MISS: fixed(edit_gt=lambda g: dict(g, annotations=[a for a in g["annotations"] if a["id"] != 14])),
    }
    for t, v in expect.items():
        assert r.delta_ap[t] == pytest.approx(v, abs=1e-12), t
        assert v > 0, t  # every fix matters in this case: the test would catch a no-op
    # bounds: no false positives at all / no missed object at all
    assert r.delta_ap_false_pos == pytest.approx(fixed(lambda d: [d[i] for i in (0, 6, 7)]), abs=1e-12)
    assert r.delta_ap_false_neg == pytest.approx(
        fixed(edit_gt=lambda g: dict(g, annotations=[a for a in g["annotations"] if a["id"] in (11, 15, 16)])),
        abs=1e-12)


def test_tide_order_loc_before_cls_and_fix_only_highest_error_per_object():
    gt = {"images": [{"id": 1, "height": 50, "width": 50}],
          "categories": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 0, 20, 20], "area": 400, "iscrowd": 0},
          ]}
    res = [
        # A-class det: IoU with A object 0.33 (Loc range) and with B object 1.0 -> Loc wins (TIDE's order)
        {"image_id": 1, "category_id": 1, "bbox": [10, 0, 20, 20], "score": 0.9},
        # two Loc errors on the same A object: only the higher one may become its true positive
        {"image_id": 1, "category_id": 1, "bbox": [0, 10, 20, 20], "score": 0.5},
        # crowd-free background far away in a second class
        {"image_id": 1, "category_id": 2, "bbox": [40, 40, 5, 5], "score": 0.3},
    ]
    r = tide_errors(gt, res)
    assert list(r.det_kind) == ["Loc", "Loc", "Bkg"]
    assert r.missed_gt.tolist() == [2]  # the B object: no Cls/Loc error points at it
    # Loc fix: det 0 becomes the TP of object 1 (AP_A = 1), det 1 is suppressed; B stays 0
    assert r.ap50 == 0.0
    assert r.delta_ap[ErrorType.LOC] == pytest.approx(0.5)


def test_crowd_regions_are_ignored_not_errors():
    gt = {"images": [{"id": 1, "height": 50, "width": 50}], "categories": [{"id": 1, "name": "A"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600,
                           "iscrowd": 1},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [42, 42, 8, 8], "area": 64,
                           "iscrowd": 0}]}
    res = [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.9},  # inside the crowd region
           {"image_id": 1, "category_id": 1, "bbox": [42, 42, 8, 8], "score": 0.8}]
    r = tide_errors(gt, res)
    assert list(r.det_kind) == ["ignored", "TP"]
    assert r.ap50 == pytest.approx(pycoco_ap50(gt, res)[0], abs=1e-12) and r.ap50 == pytest.approx(1.0)
    assert sum(r.counts.values()) == 0


def test_average_precision_hand_case():
    # one class, 2 positives: TP (0.9), FP (0.8), TP (0.7): precision 1 up to recall .5, then 2/3 up to 1
    ap, per = average_precision(np.array([0, 0, 0]), np.array([0.9, 0.8, 0.7]), np.array([True, False, True]),
                                np.arange(3), np.array([2, 0]))
    assert per[0] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    assert np.isnan(per[1]) and ap == per[0]
    assert "Miss" in tide_errors(*_hand_case()).summary()


def test_no_detections_or_no_objects():
    gt, res = random_coco(np.random.default_rng(4))
    n_obj = sum(not a["iscrowd"] for a in gt["annotations"])
    r = tide_errors(gt, [])
    assert r.ap50 == 0.0 and r.counts[ErrorType.MISS] == n_obj and len(r.det_kind) == 0
    assert np.isnan(r.delta_ap[ErrorType.MISS])  # no positives left after the fix: AP undefined
    r = tide_errors(dict(gt, annotations=[]), res)
    assert np.isnan(r.ap50) and set(r.det_kind) == {"Bkg"} and r.counts[ErrorType.BKG] == len(res)
    assert r.to_dict()["ap50"] is None


def test_annotations_not_grouped_by_image_give_the_same_errors():
    """COCO files need not group annotations by image (val2017's do not): interleaving the images'
    annotations changes neither the error types nor the confusion matrix (the matching tables once
    assumed grouped rows: an IndexError, or silently overwritten ground truth)."""
    from sceneparse.evaluation.confusion import detection_confusion_matrix

    rng = np.random.default_rng(7)
    gt, res = random_coco(rng, n_images=8)
    shuffled = copy.deepcopy(gt)
    order = rng.permutation(len(gt["annotations"]))
    shuffled["annotations"] = [shuffled["annotations"][i] for i in order]
    assert [a["image_id"] for a in shuffled["annotations"]] != sorted(a["image_id"] for a in shuffled["annotations"])
    # the same order inside each image (pycocotools matches ground truth in file order within an image)
    grouped = copy.deepcopy(gt)
    rank = {a["id"]: k for k, a in enumerate(shuffled["annotations"])}
    grouped["annotations"] = sorted(grouped["annotations"], key=lambda a: (a["image_id"], rank[a["id"]]))
    a, b = tide_errors(grouped, res), tide_errors(shuffled, res)
    assert a.counts == b.counts and a.ap50 == b.ap50
    assert list(a.det_kind) == list(b.det_kind) and list(a.det_target) == list(b.det_target)
    assert sorted(a.missed_gt.tolist()) == sorted(b.missed_gt.tolist())
    assert np.array_equal(detection_confusion_matrix(grouped, res).matrix, detection_confusion_matrix(shuffled, res).matrix)
