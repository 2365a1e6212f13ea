"""One COCO table reader in evaluation: ``validate.coco_columns`` (confusion matrix, error breakdown,
``sceneparse eval`` / ``demo``) reads through ``coco.tables`` (``load_ground_truth`` / ``load_results``
/ ``load_coco_json``), and its columns are still pycocotools' (``annToRLE`` masks, ``loadRes`` ids)."""
import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sceneparse.errors import DataError, FormatError, PredictionError
from sceneparse.evaluation import validate as V
from sceneparse.evaluation.coco import tables as T

SRC = Path(__file__).resolve().parents[2] / "src" / "sceneparse" / "evaluation"

H, W = 30, 40


def _square(x, y, s):
    return [float(x), float(y), float(x + s), float(y), float(x + s), float(y + s), float(x), float(y + s)]


def _rle_str(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode("ascii")}


def _uncompressed(mask):
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": ([0] if flat[0] else []) + counts}


def _scene():
    blob = np.zeros((H, W), bool)
    blob[3:12, 20:33] = True
    crowd = np.zeros((H, W), bool)
    crowd[15:28, 2:18] = True
    gt = {"images": [{"id": 7, "height": H, "width": W, "file_name": "7.png"},
                     {"id": 3, "height": H, "width": W, "file_name": "3.png"}],
          "categories": [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}],
          "annotations": [
              {"id": 11, "image_id": 7, "category_id": 2, "segmentation": [_square(1, 1, 8), _square(12, 2, 4)],
               "area": 80.0, "bbox": [1, 1, 15, 8], "iscrowd": 0},
              {"id": 12, "image_id": 7, "category_id": 5, "segmentation": _rle_str(blob), "area": float(blob.sum()),
               "bbox": [20, 3, 13, 9], "iscrowd": 0},
              {"id": 13, "image_id": 3, "category_id": 2, "segmentation": _uncompressed(crowd),
               "area": float(crowd.sum()), "bbox": [2, 15, 16, 13], "iscrowd": 1},
              {"id": 14, "image_id": 3, "category_id": 5, "segmentation": [_square(25.5, 4.25, 6.5)], "area": 42.0,
               "bbox": [25.5, 4.25, 6.5, 6.5]}]}
    near = blob.copy()
    near[3:12, 31:33] = False
    res = [{"image_id": 7, "category_id": 2, "segmentation": _rle_str(near), "bbox": [20, 3, 11, 9], "score": 0.9},
           {"image_id": 3, "category_id": 5, "segmentation": _rle_str(crowd), "bbox": [2, 15, 16, 13], "score": 0.4},
           {"image_id": 7, "category_id": 5, "segmentation": _rle_str(blob), "bbox": [20, 3, 13, 9], "score": 0.7}]
    return gt, res


def _pycoco(gt, res):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(res))
    return coco, dt


def _as_bytes(rle):
    c = rle["counts"]
    return c.encode("ascii") if isinstance(c, str) else c


def test_coco_columns_reads_through_the_table_reader(monkeypatch):
    assert V.load_ground_truth is T.load_ground_truth and V.load_results is T.load_results
    assert V.load_coco_json is T.load_coco_json
    text = (SRC / "validate.py").read_text()
    assert "import json" not in text and "open(" not in text  # no JSON reading of its own
    calls = []
    for name in ("load_ground_truth", "load_results", "load_coco_json"):
        real = getattr(V, name)
        monkeypatch.setattr(V, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    gt, res = _scene()
    V.coco_columns(gt, res, "bbox")
    assert calls == ["load_ground_truth", "load_results"]


def test_segm_columns_are_pycocotools_masks():
    gt, res = _scene()
    pair = V.coco_columns(gt, res, "segm")
    coco, coco_dt = _pycoco(gt, res)
    assert pair.image_ids.tolist() == [3, 7] and pair.cat_ids.tolist() == [2, 5] and pair.cat_names == ["a", "b"]
    assert pair.image_sizes.tolist() == [[H, W], [H, W]]
    want_gt = [coco.annToRLE(a) for a in gt["annotations"]]
    assert [r["counts"] for r in pair.gt.rles] == [_as_bytes(r) for r in want_gt]
    assert all(isinstance(r["counts"], bytes) for r in pair.gt.rles + pair.dt.rles)
    np.testing.assert_array_equal(pair.gt.boxes, mask_utils.toBbox([dict(r, counts=_as_bytes(r)) for r in want_gt]))
    assert pair.gt.image.tolist() == [1, 1, 0, 0] and pair.gt.label.tolist() == [0, 1, 0, 1]
    assert pair.gt.crowd.tolist() == [False, False, True, False] and pair.gt.ids.tolist() == [11, 12, 13, 14]
    dt_anns = [coco_dt.anns[i] for i in sorted(coco_dt.anns)]
    assert pair.dt.ids.tolist() == [a["id"] for a in dt_anns] == [1, 2, 3]
    assert [r["counts"] for r in pair.dt.rles] == [_as_bytes(coco_dt.annToRLE(a)) for a in dt_anns]
    np.testing.assert_array_equal(pair.dt.score, [0.9, 0.4, 0.7])
    assert pair.dt.image.tolist() == [1, 0, 1] and pair.dt.label.tolist() == [0, 1, 1]
    assert not pair.dt.crowd.any()


def test_bbox_columns_keep_the_boxes_and_paths_read_like_dicts(tmp_path):
    gt, res = _scene()
    pair = V.coco_columns(gt, res, "bbox")
    assert pair.gt.rles is None and pair.dt.rles is None
    np.testing.assert_array_equal(pair.gt.boxes, [a["bbox"] for a in gt["annotations"]])
    np.testing.assert_array_equal(pair.dt.boxes, [r["bbox"] for r in res])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    for kind in ("bbox", "segm"):
        a, b = V.coco_columns(gt, res, kind), V.coco_columns(tmp_path / "gt.json", str(tmp_path / "res.json"), kind)
        for side in ("gt", "dt"):
            x, y = getattr(a, side), getattr(b, side)
            for f in ("image", "label", "score", "crowd", "boxes", "index", "ids"):
                np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
            assert x.rles == y.rles


def test_errors_still_name_the_file_record_and_field(tmp_path):
    gt, res = _scene()
    with pytest.raises(FormatError, match=r"nope\.json: ground-truth file not found"):
        V.coco_columns(tmp_path / "nope.json", res)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(PredictionError, match=r"bad\.json: not valid JSON"):
        V.coco_columns(gt, tmp_path / "bad.json")
    with pytest.raises(PredictionError, match=r"missing\.json: results file not found"):
        V.load_coco_results(tmp_path / "missing.json")
    with pytest.raises(FormatError, match=r"bad\.json: not valid JSON"):
        V.load_coco_gt(tmp_path / "bad.json")
    with pytest.raises(FormatError, match="categories"):
        V.load_coco_gt({"images": [], "annotations": []})
    wrong = copy.deepcopy(gt)
    wrong["annotations"][1]["image_id"] = 99
    wrong["annotations"][2]["category_id"] = 98
    (tmp_path / "gt.json").write_text(json.dumps(wrong))
    with pytest.raises(DataError) as e:
        V.coco_columns(tmp_path / "gt.json", res[:1])
    msg = str(e.value)
    assert "gt.json: annotation 12: image_id: unknown image id (got 99)" in msg
    assert "gt.json: annotation 13: category_id: unknown category id (got 98)" in msg
    sizeless = copy.deepcopy(gt)
    sizeless["images"][0]["height"] = 0
    with pytest.raises(DataError, match=r"<dict>: image 7: height/width: image height and width must be positive"):
        V.coco_columns(sizeless, [], "segm")
    with pytest.raises(DataError, match=r"image 7: height/width: mask evaluation needs the image size"):
        V.coco_columns(sizeless, [], "segm", validate=False)  # the columns' own check, without the file's
