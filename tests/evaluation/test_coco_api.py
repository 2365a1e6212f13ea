"""The evaluate_coco API: input forms, the result object (summary, to_dict, per-category numbers,
matches), and the errors malformed input raises."""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sceneparse.errors import DataError, FormatError, PredictionError
from sceneparse.evaluation.coco import (COCOEvalResult, DetectionColumns, evaluate_coco, load_ground_truth)

_spec = importlib.util.spec_from_file_location("_coco_ref", Path(__file__).with_name("test_coco_eval.py"))
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)


@pytest.fixture(scope="module")
def bbox_case():
    return _ref.random_case(11, "bbox", n_images=8, n_cats=4)


@pytest.fixture(scope="module")
def bbox_ref(bbox_case):
    return _ref.pycoco_eval(*bbox_case, "bbox")


# ----------------------------------------------------------------------------- input forms

def test_paths_and_dicts_give_the_same_result(tmp_path, bbox_case, bbox_ref):
    gt, res = bbox_case
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    from_files = evaluate_coco(tmp_path / "gt.json", str(tmp_path / "res.json"), "bbox")
    _ref.assert_same(from_files, bbox_ref)
    table = load_ground_truth(gt, "bbox")  # read once, evaluate several result sets
    _ref.assert_same(evaluate_coco(table, res, "bbox"), bbox_ref)


def test_numpy_rows_like_pycocotools(bbox_case):
    gt, res = bbox_case
    rows = np.array([[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in res], dtype=np.float64)
    with contextlib.redirect_stdout(io.StringIO()):
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(rows), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    _ref.assert_same(evaluate_coco(gt, rows, "bbox"), ev)


def test_columns_equal_dicts_for_boxes(bbox_case, bbox_ref):
    gt, res = bbox_case
    cols = DetectionColumns(image_ids=[r["image_id"] for r in res], category_ids=[r["category_id"] for r in res],
                            scores=[r["score"] for r in res], boxes=[r["bbox"] for r in res])
    _ref.assert_same(evaluate_coco(gt, cols, "bbox"), bbox_ref)


def test_columns_equal_dicts_for_masks_and_keypoints():
    gt, res = _ref.random_case(12, "segm", n_images=5, n_cats=3)
    cols = DetectionColumns(image_ids=[r["image_id"] for r in res], category_ids=[r["category_id"] for r in res],
                            scores=[r["score"] for r in res], segmentations=[r["segmentation"] for r in res])
    _ref.assert_same(evaluate_coco(gt, cols, "segm"), _ref.pycoco_eval(gt, res, "segm"))
    gt, res = _ref.random_case(13, "keypoints", n_images=5)
    kps = np.array([r["keypoints"] for r in res]).reshape(len(res), 17, 3)
    cols = DetectionColumns(image_ids=[r["image_id"] for r in res], category_ids=[r["category_id"] for r in res],
                            scores=[r["score"] for r in res], keypoints=kps)
    _ref.assert_same(evaluate_coco(gt, cols, "keypoints"), _ref.pycoco_eval(gt, res, "keypoints"))


def test_box_results_can_be_evaluated_as_boxes_of_mask_results():
    """bbox evaluation of mask-only results uses the masks' bounding boxes (loadRes' toBbox)."""
    gt, res = _ref.random_case(14, "segm", n_images=5, n_cats=3)
    for a in gt["annotations"]:
        a.setdefault("bbox", [0, 0, 1, 1])
    _ref.check(gt, res, "bbox")


# ----------------------------------------------------------------------------- the result object

def test_summary_is_pycocotools_table(bbox_case, bbox_ref):
    gt, res = bbox_case
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        bbox_ref.summarize()
    assert evaluate_coco(gt, res, "bbox").summary() == printed.getvalue().rstrip("\n")


def test_keypoint_summary_is_pycocotools_table():
    gt, res = _ref.random_case(15, "keypoints", n_images=5)
    ref = _ref.pycoco_eval(gt, res, "keypoints")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ref.summarize()
    ours = evaluate_coco(gt, res, "keypoints")
    assert ours.summary() == printed.getvalue().rstrip("\n")
    assert ours.stat_names == ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]


def test_to_dict_is_json_and_in_pycocotools_order(bbox_case, bbox_ref):
    gt, res = bbox_case
    ours = evaluate_coco(gt, res, "bbox")
    d = json.loads(json.dumps(ours.to_dict()))
    np.testing.assert_allclose(d["stats"], bbox_ref.stats, rtol=0, atol=1e-12)
    assert d["stat_names"] == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert d["metrics"]["AP50"] == pytest.approx(bbox_ref.stats[1], abs=1e-12)
    assert set(d["per_category"]) == {str(c["id"]) for c in gt["categories"]}
    assert d["params"]["max_dets"] == [1, 10, 100] and d["params"]["area_ranges"]["small"] == [0, 1024]
    full = json.loads(json.dumps(ours.to_dict(arrays=True)))
    np.testing.assert_array_equal(np.array(full["precision"]), ours.precision)
    assert isinstance(ours, COCOEvalResult)
    assert ours.iou_thresholds.shape == (10,) and ours.rec_thresholds.shape == (101,)
    assert ours.area_names == ["all", "small", "medium", "large"] and ours.max_dets == (1, 10, 100)


def test_per_category_numbers_are_the_slices_of_the_arrays(bbox_case):
    gt, res = bbox_case
    ours = evaluate_coco(gt, res, "bbox")
    t50 = int(np.flatnonzero(ours.iou_thresholds == 0.5)[0])
    for k, cid in enumerate(ours.cat_ids):
        cs = ours.per_category[cid]
        for name, sl in (("AP", ours.precision[:, :, k, 0, 2]), ("AP50", ours.precision[t50, :, k, 0, 2]),
                         ("APs", ours.precision[:, :, k, 1, 2]), ("AR100", ours.recall[:, k, 0, 2]),
                         ("AR1", ours.recall[:, k, 0, 0])):
            valid = sl[sl > -1]
            want = valid.mean() if valid.size else -1.0
            assert cs[name] == pytest.approx(want, abs=1e-14), (cid, name)
        assert cs.name == f"c{cid}" and dict(cs)["AP"] == cs["AP"]
    assert "AP" in ours.per_category_table() and str(ours.cat_ids[0]) in ours.per_category_table()


@pytest.mark.parametrize("iou_type, seed", [("bbox", 16), ("segm", 17), ("keypoints", 18)])
def test_matches_reproduce_the_precision_curves(iou_type, seed):
    """A slow, obvious accumulation from ``matches.category(...)`` equals ``precision``/``recall``."""
    gt, res = _ref.random_case(seed, iou_type, n_images=6, n_cats=3)
    ours = evaluate_coco(gt, res, iou_type)
    rec_thr = ours.rec_thresholds
    for k, cid in enumerate(ours.cat_ids):
        for a, area in enumerate(ours.area_names):
            for mi, md in enumerate(ours.max_dets):
                for t in (0, 5, 9):
                    cm = ours.matches.category(cid, iou_index=t, area=area, max_det=md)
                    if cm.num_gt == 0:
                        assert (ours.precision[t, :, k, a, mi] == -1).all()
                        continue
                    assert np.all(np.diff(cm.scores) <= 0)
                    tp = np.cumsum(cm.tp).astype(float)
                    fp = np.cumsum(cm.fp).astype(float)
                    rc = tp / cm.num_gt
                    pr = tp / (fp + tp + np.spacing(1))
                    env = [max(pr[i:]) for i in range(len(pr))]
                    want = []
                    for r in rec_thr:
                        hit = [i for i in range(len(rc)) if rc[i] >= r]
                        want.append(env[hit[0]] if hit else 0.0)
                    np.testing.assert_array_equal(ours.precision[t, :, k, a, mi], want)
                    assert ours.recall[t, k, a, mi] == (rc[-1] if len(rc) else 0)
                    gt_ids = {int(x) for x in cm.matched_gt_ids[cm.tp]}
                    assert len(gt_ids) == int(cm.tp.sum())  # a regular GT is matched once


# ----------------------------------------------------------------------------- errors

def _tiny():
    gt = {"images": [{"id": 1, "height": 50, "width": 50, "file_name": "1.jpg"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                           "iscrowd": 0}],
          "categories": [{"id": 1, "name": "a"}]}
    res = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
           {"image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.5}]
    return gt, res


def test_files_read_as_json_reads_them_nan_included(tmp_path):
    """Files are decoded with msgspec; one it refuses (a NaN score written by Python's json) still
    loads through json and gets the record-level error, not a syntax error."""
    gt, res = _tiny()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    a = evaluate_coco(tmp_path / "gt.json", tmp_path / "res.json", "bbox")
    b = evaluate_coco(gt, res, "bbox")
    assert a.stats.tolist() == b.stats.tolist() and a.stats[0] > 0
    res[1]["score"] = float("nan")
    (tmp_path / "res.json").write_text(json.dumps(res))  # "score": NaN
    with pytest.raises(PredictionError, match=r"res.json: result 1 \(image_id 1\): score.*finite"):
        evaluate_coco(tmp_path / "gt.json", tmp_path / "res.json", "bbox")


@pytest.mark.parametrize("mutate, field, text", [
    (lambda r: r[1].update(image_id=999), "image_id", "result 1 (image_id 999)"),
    (lambda r: r[1].pop("score"), "score", "result 1 (image_id 1)"),
    (lambda r: r[1].update(score=float("nan")), "score", "finite"),
    (lambda r: r[1].update(score="high"), "score", "not a number"),
    (lambda r: r[1].update(bbox=[0, 0, 10]), "bbox", "[x, y, w, h]"),
    (lambda r: r[1].update(category_id=1.5), "category_id", "integer"),
])
def test_bad_results_name_the_record(mutate, field, text):
    gt, res = _tiny()
    mutate(res)
    with pytest.raises(PredictionError) as e:
        evaluate_coco(gt, res, "bbox")
    assert field in str(e.value) and text in str(e.value)


def test_keypoints_of_the_wrong_length():
    gt = {"images": [{"id": 1, "height": 50, "width": 50}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                           "keypoints": [1, 1, 2] * 17, "num_keypoints": 17}],
          "categories": [{"id": 1, "name": "person"}]}
    res = [{"image_id": 1, "category_id": 1, "keypoints": [1, 1, 1] * 17, "score": 0.9},
           {"image_id": 1, "category_id": 1, "keypoints": [1, 1, 1] * 16, "score": 0.8}]
    with pytest.raises(PredictionError, match=r"result 1 \(image_id 1\).*keypoints.*length 51"):
        evaluate_coco(gt, res, "keypoints")
    res = [{"image_id": 1, "category_id": 1, "keypoints": [1, 1, 1] * 16, "score": 0.8}]
    with pytest.raises(PredictionError, match="16 keypoints, the ground truth 17"):
        evaluate_coco(gt, res, "keypoints")
    with pytest.raises(DataError, match="17 keypoints but 5 OKS sigmas"):
        evaluate_coco(gt, [{"image_id": 1, "category_id": 1, "keypoints": [1, 1, 1] * 17, "score": 0.8}],
                      "keypoints", sigmas=[0.5] * 5)


def test_bad_ground_truth_names_the_annotation(tmp_path):
    gt, res = _tiny()
    bad = copy.deepcopy(gt)
    bad["annotations"][0].pop("area")
    with pytest.raises(DataError, match=r"<dict>: annotation 1: area: missing"):
        evaluate_coco(bad, res, "bbox")
    bad = copy.deepcopy(gt)
    bad["annotations"].append(dict(bad["annotations"][0]))
    with pytest.raises(DataError, match="annotation 1: id: duplicate annotation id"):
        evaluate_coco(bad, res, "bbox")
    bad = copy.deepcopy(gt)
    del bad["annotations"][0]["bbox"]
    with pytest.raises(DataError, match="bbox"):
        evaluate_coco(bad, res, "bbox")
    path = tmp_path / "gt.json"
    path.write_text("{not json")
    with pytest.raises(FormatError, match="gt.json.*not valid JSON"):
        evaluate_coco(path, res, "bbox")
    with pytest.raises(FileNotFoundError):
        evaluate_coco(tmp_path / "missing.json", res, "bbox")
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(gt, res, "boxes")


def test_segm_needs_masks_and_image_sizes():
    gt, res = _tiny()
    gt["annotations"][0]["segmentation"] = [[0, 0, 10, 0, 10, 10, 0, 10]]
    m = np.zeros((50, 50), np.uint8, order="F")
    m[:10, :10] = 1
    rle = mask_utils.encode(m)
    seg_res = [{"image_id": 1, "category_id": 1, "score": 0.9,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}]
    assert evaluate_coco(gt, seg_res, "segm").stats[0] == pytest.approx(1.0, abs=1e-15)
    bad = copy.deepcopy(seg_res)
    bad[0]["segmentation"] = {"counts": "abc"}
    with pytest.raises(PredictionError, match=r"result 0 \(image_id 1\).*segmentation"):
        evaluate_coco(gt, bad, "segm")
    no_size = copy.deepcopy(gt)
    del no_size["images"][0]["height"]
    with pytest.raises(DataError, match="height"):
        evaluate_coco(no_size, seg_res, "segm")


def test_unknown_categories_in_results_are_dropped_like_pycocotools():
    gt, res = _tiny()
    res.append({"image_id": 1, "category_id": 42, "bbox": [30, 30, 5, 5], "score": 0.99})
    ours, _ = _ref.check(gt, res, "bbox")
    assert 42 not in ours.matches.dt_category_ids


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_columns_from_instances(iou_type):
    """Model results (Instances, XYXY boxes, contiguous labels) -> the same numbers as the COCO dicts."""
    import torch

    from sceneparse.structures.instances import Instances

    gt, res = _ref.random_case(20, iou_type, n_images=4, n_cats=3)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    per_image = {i: [r for r in res if r["image_id"] == i] for i in sizes}
    image_ids, results = [], []
    for i, rs in per_image.items():
        kw = {}
        if iou_type == "bbox":
            b = np.array([r["bbox"] for r in rs], dtype=np.float64).reshape(-1, 4)
            kw["boxes"] = torch.as_tensor(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1), dtype=torch.float64)
        elif iou_type == "segm":
            kw["masks"] = torch.as_tensor(np.stack([mask_utils.decode({"size": r["segmentation"]["size"],
                                                                      "counts": r["segmentation"]["counts"].encode()})
                                                    for r in rs]) if rs else np.zeros((0, *sizes[i]))).bool()
        else:
            kw["keypoints"] = torch.as_tensor(np.array([r["keypoints"] for r in rs]).reshape(-1, 17, 3))
        image_ids.append(i)
        labels = torch.as_tensor([cat_ids.index(r["category_id"]) for r in rs], dtype=torch.long)
        results.append(Instances(image_size=sizes[i], labels=labels,
                                 scores=torch.as_tensor([r["score"] for r in rs], dtype=torch.float64), **kw))
    cols = DetectionColumns.from_instances(image_ids, results, cat_ids, iou_type)
    ordered = [r for i in image_ids for r in per_image[i]]  # ids follow the columns' order
    assert cols.image_ids.tolist() == [r["image_id"] for r in ordered]
    assert cols.category_ids.tolist() == [r["category_id"] for r in ordered]
    ref_res = [{k: v for k, v in r.items() if k not in ("bbox", "segmentation", "keypoints")} for r in ordered]
    for j, r in enumerate(ref_res):  # the reference sees exactly the columns' values
        if iou_type == "bbox":
            r["bbox"] = cols.boxes[j].tolist()
            np.testing.assert_allclose(cols.boxes[j], ordered[j]["bbox"], atol=1e-9)  # XYXY round trip
        elif iou_type == "segm":
            r["segmentation"] = cols.segmentations[j]
            assert r["segmentation"] == ordered[j]["segmentation"]
        else:
            r["keypoints"] = cols.keypoints[j].tolist()
            np.testing.assert_array_equal(cols.keypoints[j], ordered[j]["keypoints"])
    _ref.assert_same(evaluate_coco(gt, cols, iou_type), _ref.pycoco_eval(gt, ref_res, iou_type))


def test_columns_reject_fractional_ids_and_accept_boolean_crowd_flags():
    gt, res = _tiny()
    cols = DetectionColumns(image_ids=[1.0, 1.5], category_ids=[1, 1], scores=[0.9, 0.5],
                            boxes=[r["bbox"] for r in res])
    with pytest.raises(PredictionError, match="image_ids.*whole numbers"):
        evaluate_coco(gt, cols, "bbox")
    gt["annotations"].append({"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 20, 20], "area": 400,
                              "iscrowd": True})
    ours, _ = _ref.check(gt, res, "bbox")
    assert ours.matches.gt_iscrowd.tolist() == [False, True]
