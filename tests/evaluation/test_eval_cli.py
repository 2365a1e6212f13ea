import copy
import json
import math

import numpy as np
import pytest
from PIL import Image
from pycoco_reference import pycoco_eval

from sceneparse.cli import main
from sceneparse.errors import PredictionError
from sceneparse.evaluation.validate import validate_coco_results
from sceneparse.structures.segmaps import id2rgb


def _pycoco_stats(gt, res, iou_type):
    return pycoco_eval(gt, res, iou_type).stats


def _det_case(rng, segm=False):
    images, anns, res = [], [], []
    cats = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]
    from pycocotools import mask as mask_utils

    for iid in (4, 7, 9):
        images.append({"id": iid, "height": 48, "width": 64, "file_name": f"{iid}.jpg"})
        for _ in range(4):
            x, y, w, h = rng.uniform(0, 40), rng.uniform(0, 30), rng.uniform(5, 20), rng.uniform(5, 15)
            c = int(rng.choice([1, 3]))
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0, "segmentation": [poly]})
            for s in (0.9, 0.4):
                j = rng.normal(0, 2, 4)
                r = {"image_id": iid, "category_id": c if s > 0.5 else 4 - c, "score": float(s * rng.random())}
                box = [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]
                if segm:
                    rle = mask_utils.merge(mask_utils.frPyObjects(
                        [[box[0], box[1], box[0] + box[2], box[1], box[0] + box[2], box[1] + box[3], box[0],
                          box[1] + box[3]]], 48, 64))
                    rle["counts"] = rle["counts"].decode()
                    r["segmentation"] = rle
                else:
                    r["bbox"] = box
                res.append(r)
    return {"images": images, "annotations": anns, "categories": cats}, res


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_types_report_pycocotools_stats_and_plots(tmp_path, capsys, iou_type):
    gt, res = _det_case(np.random.default_rng(0), segm=iou_type == "segm")
    out = tmp_path / "report" / "r.json"
    rc = main(["eval", "--gt", _write(tmp_path, "gt.json", gt), "--pred", _write(tmp_path, "res.json", res),
               "--type", iou_type, "--json", str(out), "--plots", str(tmp_path / "plots"), "--errors", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in printed
    assert "Dupe" in printed
    report = json.loads(out.read_text())
    np.testing.assert_allclose(report["stats"], _pycoco_stats(gt, res, iou_type), atol=1e-12)
    assert report["errors"]["ap50"] == pytest.approx(report["stats"][1], abs=1e-12)
    cm = np.array(report["confusion"]["matrix"])
    assert cm.shape == (3, 3) and cm[:2].sum() == len(gt["annotations"])  # every object counted once
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == [f"confusion_{iou_type}.png", f"errors_{iou_type}.png", f"pr_{iou_type}_iou50.png",
                     f"pr_{iou_type}_iou75.png"]


def _kp_case(rng):
    k = 17
    cats = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(k)], "skeleton": []}]
    images, anns, res = [], [], []
    for iid in (1, 2):
        images.append({"id": iid, "height": 100, "width": 100, "file_name": f"{iid}.jpg"})
        for _ in range(2):
            x, y = rng.uniform(10, 50, 2)
            kp = np.stack([x + rng.uniform(0, 30, k), y + rng.uniform(0, 40, k), rng.choice([0, 2], k)], 1)
            kp[kp[:, 2] == 0, :2] = 0
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": 1, "keypoints": kp.ravel().tolist(),
                         "num_keypoints": int((kp[:, 2] > 0).sum()), "bbox": [x, y, 30, 40], "area": 1200.0,
                         "iscrowd": 0})
            pred = kp.copy()
            pred[:, :2] += rng.normal(0, 2, (k, 2))
            pred[:, 2] = 1
            res.append({"image_id": iid, "category_id": 1, "keypoints": pred.ravel().tolist(),
                        "score": float(rng.random())})
    return {"images": images, "annotations": anns, "categories": cats}, res


def test_keypoints(tmp_path, capsys):
    gt, res = _kp_case(np.random.default_rng(3))
    out = tmp_path / "kp.json"
    assert main(["eval", "--gt", _write(tmp_path, "gt.json", gt), "--pred", _write(tmp_path, "res.json", res),
                 "--type", "keypoints", "--json", str(out)]) == 0
    stats = json.loads(out.read_text())["stats"]
    assert len(stats) == 10
    np.testing.assert_allclose(stats, _pycoco_stats(gt, res, "keypoints"), atol=1e-12)


@pytest.mark.parametrize("record,field", [
    ({"score": float("nan")}, "score"),
    ({"score": -0.5}, "score"),
    ({"bbox": [1, 1, -3, 4]}, "bbox"),
    ({"image_id": 12345}, "image_id"),
    ({"category_id": 2}, "category_id"),
])
def test_malformed_predictions_name_the_record(tmp_path, capsys, record, field):
    gt, res = _det_case(np.random.default_rng(1))
    res[5].update(record)
    rc = main(["eval", "--gt", _write(tmp_path, "gt.json", gt), "--pred", _write(tmp_path, "res.json", res),
               "--type", "bbox"])
    err = capsys.readouterr().err
    assert rc == 1
    image_id = res[5]["image_id"]
    assert f"res.json: result 5 (image_id {image_id}): {field}:" in err


def test_keypoints_of_wrong_length(tmp_path, capsys):
    gt, res = _kp_case(np.random.default_rng(3))
    res[2]["keypoints"] = res[2]["keypoints"][:-3]
    rc = main(["eval", "--gt", _write(tmp_path, "gt.json", gt), "--pred", _write(tmp_path, "res.json", res),
               "--type", "keypoints"])
    assert rc == 1
    assert "result 2 (image_id 2): keypoints: keypoints must have 3 * 17 = 51 values (got '48 values')" in \
        capsys.readouterr().err


def test_validate_coco_results_cases():
    gt, res = _det_case(np.random.default_rng(2))
    validate_coco_results(gt, res, "bbox")  # valid input passes
    bad = copy.deepcopy(res)
    bad[0]["bbox"] = [0, 0, 1]
    bad[1]["score"] = math.inf
    del bad[2]["category_id"]
    with pytest.raises(PredictionError) as e:
        validate_coco_results(gt, bad, "bbox", file="r.json")
    msgs = [str(p) for p in e.value.problems]
    assert msgs[0].startswith("r.json: result 0 (image_id 4): bbox: bbox must be 4 numbers")
    assert msgs[1].startswith("r.json: result 1 (image_id 4): score")
    assert msgs[2] == "r.json: result 2 (image_id 4): category_id: missing field(s)"
    # numpy rows: image_id, x, y, w, h, score, category_id
    arr = np.array([[4, 0, 0, 5, 5, 0.9, 1], [7, 0, 0, -1, 5, 0.9, 3], [8, 0, 0, 1, 1, 0.5, 1]], dtype=float)
    with pytest.raises(PredictionError) as e:
        validate_coco_results(gt, arr, "bbox")
    assert [p.record for p in e.value.problems] == ["result 1 (image_id 7)", "result 2 (image_id 8)"]
    # segm: RLE of the wrong size, polygons and RLE strings are fine
    from pycocotools import mask as mask_utils

    m = np.zeros((48, 64), np.uint8, order="F")
    m[5:20, 8:30] = 1
    counts = mask_utils.encode(m)["counts"].decode()
    seg = [{"image_id": 4, "category_id": 1, "score": 0.5, "segmentation": {"size": [48, 64], "counts": counts}},
           {"image_id": 4, "category_id": 1, "score": 0.5, "segmentation": [[0, 0, 5, 0, 5, 5]]},
           {"image_id": 4, "category_id": 1, "score": 0.5, "segmentation": {"size": [64, 48], "counts": counts}}]
    with pytest.raises(PredictionError, match=r"result 2 \(image_id 4\): segmentation.size: RLE size differs"):
        validate_coco_results(gt, seg, "segm")
    validate_coco_results(gt, seg[:2], "segm")
    # more problems than listed: the count is given
    many = [dict(r, score=-1.0) for r in res]
    with pytest.raises(PredictionError, match=f"{len(res)} problems in all"):
        validate_coco_results(gt, many, "bbox")


def test_semantic_folders(tmp_path, capsys):
    rng = np.random.default_rng(4)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gts, preds = [], []
    for i in range(3):
        g = rng.integers(0, 4, (12, 16)).astype(np.uint8)
        g[0] = 255
        p = np.where(rng.random((12, 16)) < 0.7, g, rng.integers(0, 4, (12, 16))).astype(np.uint8)
        p[p == 255] = 1
        Image.fromarray(g).save(tmp_path / "gt" / f"im{i}.png")
        Image.fromarray(p).save(tmp_path / "pred" / f"im{i}.png")
        gts.append(g)
        preds.append(p)
    out = tmp_path / "sem.json"
    assert main(["eval", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--type", "semantic",
                 "--num-classes", "4", "--json", str(out), "--quiet", "--plots", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "semantic_iou.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads(out.read_text())
    g = np.concatenate([x.ravel() for x in gts])
    p = np.concatenate([x.ravel() for x in preds])
    keep = g != 255
    ious = [np.sum((g == c) & (p == c) & keep) / np.sum(((g == c) | (p == c)) & keep) for c in range(4)]
    assert report["miou"] == pytest.approx(np.mean(ious), abs=1e-12)
    assert report["pixel_accuracy"] == pytest.approx(np.mean(g[keep] == p[keep]), abs=1e-12)
    assert "mIoU" in capsys.readouterr().out

    # with a JSON giving the class names
    cats = {"categories": [{"id": 5 + c, "name": n} for c, n in enumerate(["sky", "road", "car", "tree"])]}
    assert main(["eval", "--gt", _write(tmp_path, "cats.json", cats), "--gt-png", str(tmp_path / "gt"),
                 "--pred", str(tmp_path / "pred"), "--type", "semantic", "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["per_class"]["road"]["iou"] == pytest.approx(ious[1], abs=1e-12)

    # a missing prediction file and a bad label value are named
    (tmp_path / "pred" / "im1.png").unlink()
    assert main(["eval", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--type", "semantic",
                 "--num-classes", "4", "--quiet"]) == 1
    assert "im1.png: file not found" in capsys.readouterr().err
    Image.fromarray(np.full((12, 16), 9, np.uint8)).save(tmp_path / "pred" / "im1.png")
    assert main(["eval", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--type", "semantic",
                 "--num-classes", "4", "--quiet"]) == 1
    assert "pred/im1.png: image im1.png: prediction:" in capsys.readouterr().err
    assert main(["eval", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--type", "semantic"]) == 1
    assert "--num-classes" in capsys.readouterr().err


def test_panoptic(tmp_path, capsys):
    cats = [{"id": 1, "name": "person", "isthing": 1}, {"id": 2, "name": "sky", "isthing": 0}]
    gt_ids = np.zeros((10, 10), np.int64)
    gt_ids[:, :5] = 1     # sky, 50 px
    gt_ids[2:6, 6:9] = 2  # person, 12 px
    pred_ids = np.zeros((10, 10), np.int64)
    pred_ids[:, :4] = 7   # sky, 40 px: IoU 40/50 = 0.8
    pred_ids[2:6, 6:8] = 8  # person, 8 px: IoU 8/12 (0.667)
    pred_ids[8:, 8:] = 9  # person on void: 4 px entirely on void -> ignored
    for name, ids, segs in (("gt", gt_ids, [{"id": 1, "category_id": 2, "iscrowd": 0},
                                             {"id": 2, "category_id": 1, "iscrowd": 0}]),
                            ("pred", pred_ids, [{"id": 7, "category_id": 2}, {"id": 8, "category_id": 1},
                                                {"id": 9, "category_id": 1}])):
        (tmp_path / name).mkdir()
        Image.fromarray(id2rgb(ids)).save(tmp_path / name / "a.png")
        data = {"annotations": [{"image_id": 3, "file_name": "a.png", "segments_info": segs}], "categories": cats}
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out = tmp_path / "pq.json"
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                 "--type", "panoptic", "--json", str(out), "--quiet", "--plots", str(tmp_path / "plots")]) == 0
    # (PNG folders by default: the JSON path without .json)
    assert (tmp_path / "plots" / "panoptic_pq.png").read_bytes()[:4] == b"\x89PNG"
    r = json.loads(out.read_text())
    assert r["pq"] == pytest.approx((0.8 + 8 / 12) / 2)
    assert r["sq"] == pytest.approx((0.8 + 8 / 12) / 2) and r["rq"] == 1.0
    assert r["things"]["pq"] == pytest.approx(8 / 12) and r["stuff"]["pq"] == pytest.approx(0.8)
    assert "Things" in capsys.readouterr().out


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_vectorised_screening_finds_every_bad_record():
    """Many records, a few broken in different ways: exactly those are reported, with their field."""
    rng = np.random.default_rng(9)
    gt, _ = _kp_case(rng)
    res = []
    for i in range(300):
        kp = rng.uniform(0, 90, (17, 3))
        res.append({"image_id": int(rng.choice([1, 2])), "category_id": 1, "keypoints": kp.ravel().tolist(),
                    "score": float(rng.random())})
    broken = {17: ("keypoints", lambda r: r["keypoints"].__setitem__(4, float("nan"))),
              40: ("keypoints", lambda r: r.__setitem__("keypoints", r["keypoints"][:-1])),
              41: ("score", lambda r: r.__setitem__("score", float("-inf"))),
              99: ("image_id", lambda r: r.__setitem__("image_id", 3)),
              250: ("category_id", lambda r: r.__setitem__("category_id", 7)),
              299: ("bbox", lambda r: r.__setitem__("bbox", [0, 0, 1, -1]))}
    for i, (_, edit) in broken.items():
        edit(res[i])
    with pytest.raises(PredictionError) as e:
        validate_coco_results(gt, res, "keypoints")
    got = [(int(p.record.split()[1]), p.field) for p in e.value.problems]
    assert got == [(i, f) for i, (f, _) in sorted(broken.items())]


def test_segm_results_use_mask_areas_like_detectron2():
    """A combined record (bbox + segmentation) evaluated as segm: size ranges come from the mask, not the box."""
    import copy

    import numpy as np
    from pycocotools import mask as mask_utils

    from sceneparse.evaluation import evaluate_coco
    from sceneparse.evaluation.validate import results_for

    # a thin diagonal-ish L shape: big box (100x100 = large), small mask area (< 32^2 = small)
    m = np.zeros((128, 128), np.uint8, order="F")
    m[10:110, 10:14] = 1
    m[106:110, 10:110] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    gt = {"images": [{"id": 1, "height": 128, "width": 128}], "categories": [{"id": 1, "name": "l"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rle,
                           "area": float(mask_utils.area(rle)), "bbox": [10, 10, 100, 100]}]}
    res = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 100, 100], "segmentation": rle}]
    mine = evaluate_coco(gt, results_for(res, "segm"), "segm")
    np.testing.assert_allclose(mine.stats, pycoco_eval(gt, results_for(res, "segm"), "segm").stats, atol=1e-12)
    assert abs(mine.stat("APs") - 1.0) < 1e-12 and mine.stat("APl") == -1.0  # the mask is small; nothing is large
    assert results_for(res, "bbox") == res and "bbox" not in results_for(res, "segm")[0]
