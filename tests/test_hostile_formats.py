"""Hostile and broken data files (issue 24 sections 1-3, issue 23 section 3): every reproduction of
the issues as a test.

* writers refuse file names from data files that lead outside their output folder (nothing written,
  nothing deleted), naming the record;
* RLE strings pycocotools' C code would read out of bounds never reach it (ground truth and
  predictions), checked in a child process so that a heap corruption fails the test instead of
  killing pytest;
* ground truth with NaN / infinite polygons, boxes or keypoints is refused (evaluation) or repaired
  with a problem (readers), everywhere it is read: eval, show, train (the dataset), convert;
* ``sceneparse eval`` runs the one validation of a COCO file that ``convert`` runs, and every message
  names the file it is about.
"""
from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sceneparse.cli import main
from sceneparse.data.formats import read_coco, read_coco_panoptic, write_coco_panoptic, write_voc, write_yolo
from sceneparse.errors import DataError, FormatError, PredictionError
from sceneparse.evaluation import evaluate_coco, evaluate_panoptic, validate_coco_results
from sceneparse.structures import masks as M
from sceneparse.structures import rle as R

H, W = 40, 50


# --------------------------------------------------------------------------- fixtures
def _rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def _square(h=H, w=W, y0=5, x0=5, y1=20, x1=25) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _coco() -> dict:
    """Two images (a.png, b.png), a polygon and an RLE object, one category."""
    return {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                       {"id": 2, "file_name": "b.png", "height": H, "width": W}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 15], "area": 300.0, "iscrowd": 0,
                 "segmentation": [[5, 5, 25, 5, 25, 20, 5, 20]]},
                {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 15], "area": 300.0, "iscrowd": 0,
                 "segmentation": _rle(_square())}]}


def _results() -> list:
    return [{"image_id": i, "category_id": 1, "score": s, "bbox": [5, 5, 20, 15], "segmentation": _rle(_square())}
            for i, s in ((1, 0.9), (2, 0.8))]


def _images(root: Path, names=("a.png", "b.png")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (90, 120, 150)).save(root / n)
    return root


def _dump(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _limit_memory():  # a child that would allocate gigabytes fails instead of swapping the machine
    resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))


def _isolated(test):
    """Run the test in a forked child with limited memory: code that hands bad data to pycocotools'
    C code (what the issue reproduces) may abort or segfault; then the test fails, pytest goes on."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run the test, report, never return into pytest
            os.close(r)
            code, msg = 0, b""
            try:
                _limit_memory()
                test(*args, **kwargs)
            except BaseException:  # noqa: BLE001 -- everything goes back to the parent
                code, msg = 1, traceback.format_exc().encode()[-30000:]
            os.write(w, msg)
            os.close(w)
            os._exit(code)
        os.close(w)
        out = b""
        while chunk := os.read(r, 1 << 16):
            out += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            pytest.fail(f"the test's process was killed by signal {os.WTERMSIG(status)} (a crash)")
        if os.WEXITSTATUS(status):
            pytest.fail(out.decode(errors="replace"), pytrace=False)
    return run


def _cli(*args, cwd=None, timeout=120, limit=True) -> subprocess.CompletedProcess:
    """``sceneparse ARGS`` in a child process: a crash (abort, segfault) is a return code < 0 here,
    not the end of the test session."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.run([sys.executable, "-m", "sceneparse", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env, preexec_fn=_limit_memory if limit else None)


# --------------------------------------------------------------------------- 1. path traversal
def _traversal_case(tmp_path: Path):
    """COCO file whose file_name climbs out of the image folder to a real file, and victims next to
    the output folder that the old writer overwrote (labels) and deleted (--copy-images)."""
    data_images = _images(tmp_path / "data" / "images")
    Image.new("RGB", (W, H)).save(tmp_path / "victim.png")  # what ../../victim.png names from data/images
    out = tmp_path / "out"
    out.mkdir()
    (out / "victim.txt").write_text("precious\n")  # y/labels/../../victim.txt
    (out / "victim.png").write_text("precious\n")  # y/images/../../victim.png
    coco = _coco()
    coco["images"][0]["file_name"] = "../../victim.png"
    return _dump(coco, tmp_path / "gt.json"), data_images, out


@pytest.mark.parametrize("copy_flag", [[], ["--copy-images"], ["--link-images"]])
@_isolated
def test_convert_to_yolo_refuses_file_names_outside_dst(tmp_path, capsys, copy_flag):
    gt, images, out = _traversal_case(tmp_path)
    rc = main(["convert", "--from", "coco", "--to", "yolo", "--src", str(gt), "--images", str(images),
               "--dst", str(out / "y"), *copy_flag])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{gt}: image 1: file_name: refusing a file name that leads outside the output folder" in err
    assert "'../../victim.png'" in err
    assert (out / "victim.txt").read_text() == "precious\n"  # not overwritten
    assert (out / "victim.png").read_text() == "precious\n"  # not deleted
    assert not (out / "y").exists()  # nothing written at all


@_isolated
def test_writers_refuse_absolute_and_climbing_names(tmp_path):
    aset = read_coco(_dump(_coco(), tmp_path / "gt.json"), _images(tmp_path / "images"))
    for bad in ("/etc/passwd", "../x.png", "a/../../x.png", "..", ""):
        aset.images[0].file_name = bad
        with pytest.raises(DataError, match="image 1: file_name: refusing") as e:
            write_yolo(aset, tmp_path / f"y{len(bad)}")
        assert e.value.problems[0].value == bad
        assert not (tmp_path / f"y{len(bad)}").exists()
    aset.images[0].file_name = "sub/../a.png"  # climbs, but stays inside: fine, and normalised
    res = write_yolo(aset, tmp_path / "ok")
    assert tmp_path / "ok" / "labels" / "a.txt" in res.files
    # VOC writes <stem>.xml into the folder: a name's folders never matter
    aset.images[0].file_name = "../../../evil.png"
    res = write_voc(aset, tmp_path / "voc")
    assert {p.parent for p in res.files} == {tmp_path / "voc"}


def test_symlinked_folder_inside_the_output_does_not_lead_out(tmp_path):
    from sceneparse.data.formats._io import inside, output_path

    root = tmp_path / "out"
    (root / "labels").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "labels" / "link")
    assert inside(root / "labels", "link/x.txt") is None
    assert inside(root / "labels", "a/../b.txt") == (root / "labels" / "b.txt").resolve()
    with pytest.raises(DataError, match="refusing"):
        output_path(root / "labels", "link/x.txt", file="f.json", record="image 3")
    assert output_path(root, "a/../b.txt") == root / "b.txt"


@_isolated
def test_voc_filename_with_dots_cannot_write_outside(tmp_path, capsys):
    images = _images(tmp_path / "voc" / "JPEGImages")
    Image.new("RGB", (W, H)).save(tmp_path / "voc" / "up.png")
    (tmp_path / "voc" / "Annotations").mkdir()
    (tmp_path / "voc" / "Annotations" / "a.xml").write_text(
        "<annotation><filename>../up.png</filename><size><width>50</width><height>40</height></size>"
        "<object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
        "</object></annotation>")
    rc = main(["convert", "--from", "voc", "--to", "yolo", "--src", str(tmp_path / "voc"), "--images", str(images),
               "--dst", str(tmp_path / "y"), "--copy-images"])
    assert rc == 1
    assert "image 1: file_name: refusing a file name that leads outside" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


@_isolated
def test_panoptic_png_names_stay_in_their_folder(tmp_path):
    from sceneparse.conventions import id2rgb

    ids = np.zeros((H, W), np.int64)
    ids[5:20, 5:25] = 7
    (tmp_path / "png").mkdir()
    Image.fromarray(id2rgb(ids)).save(tmp_path / "png" / "a.png")
    Image.fromarray(id2rgb(ids)).save(tmp_path / "outside.png")
    seg = {"id": 7, "category_id": 1, "iscrowd": 0}
    pan = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
           "categories": [{"id": 1, "name": "thing", "isthing": 1}],
           "annotations": [{"image_id": 1, "file_name": "../outside.png", "segments_info": [seg]}]}
    aset = read_coco_panoptic(_dump(pan, tmp_path / "pan.json"), tmp_path / "png")
    assert aset.panoptic == {}
    assert "PNG name leads outside the panoptic PNG folder" in str(aset.problems[0])
    # writing: names from the set are refused before anything is written
    pan["annotations"][0]["file_name"] = "a.png"
    aset = read_coco_panoptic(_dump(pan, tmp_path / "pan.json"), tmp_path / "png")
    aset.panoptic[1].file_name = "../../escaped.png"
    with pytest.raises(DataError, match="refusing"):
        write_coco_panoptic(aset, tmp_path / "o" / "p.json", tmp_path / "o" / "p")
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "o").exists()
    # evaluation: a prediction's file_name is not a path out of its folder either
    pred = {"annotations": [{"image_id": 1, "file_name": "../outside.png", "segments_info": [seg]}]}
    gt = {"annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [seg]}],
          "categories": pan["categories"]}
    with pytest.raises(PredictionError, match=r"pred.json: image_id 1: file_name: not a PNG name inside"):
        evaluate_panoptic(_dump(gt, tmp_path / "gt.json"), tmp_path / "png", _dump(pred, tmp_path / "pred.json"),
                          tmp_path / "png")


# --------------------------------------------------------------------------- 1. RLE strings
def _reference_counts(counts: str):
    """rleFrString in Python, with the out-of-bounds reads turned into refusals."""
    b = counts.encode("utf-8", "surrogatepass")
    if any(c < 48 or c > 111 for c in b):
        return None
    out, p = [], 0
    while p < len(b):
        x = k = 0
        more = 1
        while more:
            if p >= len(b):
                return None
            c = b[p] - 48
            x |= (c & 0x1F) << 5 * k
            more = c & 0x20
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if k > R.MAX_CHARS_PER_COUNT:
            return None
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def test_rle_problems_agree_with_a_reference_decoder():
    rng = np.random.default_rng(0)
    items, expect = [], []
    for _ in range(3000):
        n = int(rng.integers(0, 10))
        chars = rng.integers(48, 112, n)
        if n and rng.random() < 0.8:
            chars[-1] = rng.integers(48, 80)  # mostly terminated
        s = bytes(chars.astype(np.uint8)).decode("latin-1")
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        items.append({"size": [h, w], "counts": s})
        c = _reference_counts(s)
        expect.append(c is not None and all(0 <= v < 2 ** 32 for v in c) and len(c) <= h * w + 1
                      and sum(c) == h * w)
    for _ in range(100):  # real encodings (several-byte run lengths, negative deltas) and damaged ones
        h, w = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        m = np.zeros((h, w), bool)
        m[rng.integers(0, h):, rng.integers(0, w):] = True
        m[: rng.integers(0, h), : rng.integers(0, w)] ^= True
        s = _rle(m)["counts"]
        for t in (s, s[:-1], s + "1"):
            items.append({"size": [h, w], "counts": t})
            c = _reference_counts(t)
            expect.append(c is not None and all(v >= 0 for v in c) and sum(c) == h * w)
    got = R.rle_problems(items)
    assert [g is None for g in got] == expect
    assert sum(expect) >= 100  # the valid side is exercised too (the real encodings)
    old = R._CHUNK_BYTES
    try:  # many chunk boundaries: same answers
        R._CHUNK_BYTES = 64
        assert R.rle_problems(items) == got
    finally:
        R._CHUNK_BYTES = old


@pytest.mark.parametrize("counts, why", [
    ("!!", "alphabet"), ("ÿ!!", "alphabet"), ("\ud800", "alphabet"), ("0\x001", "alphabet"),
    ("P", "ends inside a run length"), ("PPPPPPPP0", "longer than 7"), ("", "0 pixels"), ("19", "10 pixels"),
    ("1M", "negative"),
])
@_isolated
def test_bad_rle_strings_are_named(counts, why):
    assert why in R.rle_problems([{"size": [3, 3], "counts": counts}])[0]
    with pytest.raises(ValueError, match=why):
        M.decode_rle({"size": [3, 3], "counts": counts})
    with pytest.raises(ValueError, match=why):
        M.rle_area([{"size": [3, 3], "counts": counts}])


def test_uncompressed_and_malformed_rles():
    assert R.rle_problems([{"size": [3, 3], "counts": [4, 5]}, {"size": [3, 3], "counts": [0, 0, 9]}]) == [None, None]
    got = R.rle_problems([{"size": [3, 3], "counts": [4, 6]}, {"size": [3, 3], "counts": [-1, 10]},
                          {"size": [3, 3], "counts": [1.5, 7.5]}, {"size": [1, 1], "counts": [0] * 5 + [1]},
                          {"size": [0, 3], "counts": ""}, {"size": [3], "counts": "9"}, {"size": [3, 3]}, "rle"])
    assert [g is not None for g in got] == [True] * 8
    assert "more than height * width + 1" in got[3]  # pycocotools' merge would overrun its buffer


def _segm_eval_in_child(tmp_path, gt, res):
    return _cli("eval", "--gt", _dump(gt, tmp_path / "gt.json"), "--pred", _dump(res, tmp_path / "res.json"),
                "--type", "segm", "--quiet", cwd=tmp_path)


@pytest.mark.parametrize("counts", ["!!", "ÿ!!", "0", "0!!"])
def test_eval_segm_with_a_hostile_prediction_rle_is_an_error_not_a_heap_corruption(tmp_path, counts):
    res = _results()
    res[0]["segmentation"] = {"size": [H, W], "counts": counts}
    p = _segm_eval_in_child(tmp_path, _coco(), res)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])  # < 0: killed by a signal (abort, segfault)
    assert "res.json: result 0 (image_id 1): segmentation" in p.stderr
    assert "Traceback" not in p.stderr and "double free" not in p.stderr


@pytest.mark.parametrize("counts", ["!!", "ÿ!!"])
def test_eval_with_a_hostile_ground_truth_rle_is_an_error(tmp_path, counts):
    gt = _coco()
    gt["annotations"][1]["segmentation"] = {"size": [H, W], "counts": counts}
    p = _segm_eval_in_child(tmp_path, gt, _results())
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert "gt.json: annotation 2: segmentation: RLE counts string has characters outside" in p.stderr


@_isolated
def test_api_checks_result_masks_before_pycocotools():
    gt = _coco()
    for seg in ({"size": [H, W], "counts": "!!"}, {"size": [H, W], "counts": [5, 5]},
                [[1, 1, float("nan"), 5, 9, 9]], [[1, 1, 1e12, 5, 9, 9]]):
        res = _results()
        res[1]["segmentation"] = seg
        with pytest.raises(PredictionError, match=r"result 1 \(image_id 2\): segmentation"):
            evaluate_coco(gt, [{k: v for k, v in r.items() if k != "bbox"} for r in res], "segm")
        with pytest.raises(PredictionError, match=r"result 1 \(image_id 2\): segmentation"):
            evaluate_coco(gt, res, "segm")  # masks next to boxes: checked as well
        with pytest.raises(PredictionError, match=r"result 1 \(image_id 2\): segmentation"):
            validate_coco_results(gt, res, "segm")


# --------------------------------------------------------------------------- 1. NaN in ground truth
def _nan_polygon() -> dict:
    gt = _coco()
    gt["annotations"][0]["segmentation"] = [[1, 1, float("nan"), 5, 9, 9]]
    return gt


def test_eval_segm_refuses_a_nan_polygon_instead_of_allocating_gigabytes(tmp_path):
    p = _segm_eval_in_child(tmp_path, _nan_polygon(), _results())
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert ("gt.json: annotation 1: segmentation[0]: polygon ring with non-finite coordinates (NaN or infinity)"
            in p.stderr)


@pytest.mark.parametrize("ring", [[1, 1, 1e12, 5, 9, 9], [1, 1, float("inf"), 5, 9, 9], [1, 1, -1e9, 5, 9, 9]])
@_isolated
def test_eval_refuses_absurd_polygons(ring):
    gt = _coco()
    gt["annotations"][0]["segmentation"] = [ring]
    with pytest.raises(DataError, match=r"<dict>: annotation 1: segmentation\[0\]: polygon ring"):
        evaluate_coco(gt, _results(), "segm")


def test_show_with_a_nan_polygon_repairs_or_stops_cleanly(tmp_path):
    images = _images(tmp_path / "images")
    gt = _dump(_nan_polygon(), tmp_path / "gt.json")
    p = _cli("show", gt, "--images", images, "--out", tmp_path / "show", "--kind", "instances", "--min-size", "0",
             limit=False)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])  # a segfault before
    assert "annotation 1: segmentation[0]: polygon ring with non-finite coordinates" in p.stderr
    assert sorted(x.name for x in (tmp_path / "show" / "instances").iterdir()) == ["a.png", "b.png"]
    p = _cli("show", gt, "--images", images, "--out", tmp_path / "show2", "--strict", limit=False)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    assert "gt.json: annotation 1: segmentation[0]: polygon ring with non-finite" in p.stderr


def test_show_with_a_garbage_ground_truth_rle(tmp_path):
    images = _images(tmp_path / "images")
    gt = _coco()
    gt["annotations"][1]["segmentation"] = {"size": [H, W], "counts": "\ud800ÿ!!"}
    path = _dump(gt, tmp_path / "gt.json")
    p = _cli("show", path, "--images", images, "--out", tmp_path / "s", "--kind", "instances", limit=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "gt.json: annotation 2: segmentation: RLE counts string has characters outside" in p.stderr
    assert "Traceback" not in p.stderr
    p = _cli("show", path, "--images", images, "--out", tmp_path / "s2", "--strict", limit=False)
    assert p.returncode == 1 and "annotation 2: segmentation: RLE counts" in p.stderr


@_isolated
def test_dataset_never_hands_bad_ground_truth_to_pycocotools(tmp_path):
    """What train reads: read_coco repairs (the problems listed); a set built by hand is checked again."""
    from sceneparse.data.datasets import SceneDataset

    images = _images(tmp_path / "images")
    gt = _nan_polygon()
    gt["annotations"][1]["keypoints"] = [1, 2, 2] * 16 + [float("nan"), 2, 2]
    aset = read_coco(_dump(gt, tmp_path / "gt.json"), images)
    assert [(p.record, p.field, p.message) for p in aset.problems][:2] == [
        ("annotation 1", "segmentation[0]", "polygon ring with non-finite coordinates (NaN or infinity)"),
        ("annotation 1", "segmentation", "no valid polygon ring left")]
    ds = SceneDataset(aset)
    _, target = ds[1]  # the RLE object of image 2
    assert target.instances.masks.shape == (1, H, W) and target.instances.masks.sum() == 300
    aset.annotations[0].segmentation = {"size": [H, W], "counts": "!!"}
    with pytest.raises(DataError, match=r"image 2 annotation 2: segmentation: RLE counts string"):
        ds[1]
    aset.annotations[0].segmentation = [[1.0, 1.0, float("nan"), 5.0, 9.0, 9.0]]
    with pytest.raises(DataError, match=r"image 2 annotation 2: segmentation: polygon ring 0: polygon ring with "
                                         r"non-finite"):
        ds[1]
    aset.annotations[0].segmentation = None
    aset.annotations[0].bbox = np.array([1, np.nan, 5, 5], np.float32)
    with pytest.raises(DataError, match="image 2 annotation 2: bbox: box with non-finite"):
        ds[1]


@_isolated
def test_nan_boxes_and_keypoints_in_ground_truth(tmp_path):
    kp = [10, 10, 2] * 17
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
          "categories": [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)], "skeleton": []}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 15], "area": 300.0,
                           "iscrowd": 0, "keypoints": kp[:3] + [float("nan")] + kp[4:], "num_keypoints": 17},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, float("nan"), 20, 15],
                           "area": 300.0, "iscrowd": 0, "keypoints": kp, "num_keypoints": 17}]}
    res = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [5, 5, 20, 15], "keypoints": kp}]
    for iou_type in ("bbox", "keypoints"):
        with pytest.raises(DataError) as e:
            evaluate_coco(gt, res, iou_type)
        msg = str(e.value)
        assert "annotation 1: keypoints: keypoints with non-finite values (NaN or infinity)" in msg
        assert "annotation 2: bbox: box has non-finite coordinates" in msg
    aset = read_coco(_dump(gt, tmp_path / "gt.json"))
    assert [a.id for a in aset.annotations] == [1]
    assert np.isfinite(aset.annotations[0].keypoints).all() and aset.annotations[0].keypoints[1, 2] == 0


@_isolated
def test_convert_never_writes_nan_into_yolo_labels(tmp_path, capsys):
    images = _images(tmp_path / "images")
    gt = _dump(_nan_polygon(), tmp_path / "gt.json")
    rc = main(["convert", "--from", "coco", "--to", "yolo", "--task", "segment", "--src", str(gt),
               "--images", str(images), "--dst", str(tmp_path / "y")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "annotation 1: segmentation[0]: polygon ring with non-finite coordinates" in out
    labels = "".join(p.read_text() for p in (tmp_path / "y" / "labels").rglob("*.txt"))
    assert "nan" not in labels.lower() and "inf" not in labels.lower()
    assert labels.count("\n") == 1  # the RLE object of b.png, traced
    rc = main(["convert", "--from", "coco", "--to", "yolo", "--task", "segment", "--src", str(gt),
               "--images", str(images), "--dst", str(tmp_path / "z"), "--strict"])
    assert rc == 1 and not (tmp_path / "z").exists()


# --------------------------------------------------------------------------- 2. tracebacks -> messages
@_isolated
def test_predictions_file_of_numbers(tmp_path, capsys):
    for iou_type in ("segm", "bbox", "keypoints"):
        rc = main(["eval", "--gt", str(_dump(_coco(), tmp_path / "gt.json")),
                   "--pred", str(_dump([1, 2, 3], tmp_path / "nums.json")), "--type", iou_type])
        err = capsys.readouterr().err
        assert rc == 1, err
        assert "nums.json: a COCO results file holds a list of result objects" in err


@pytest.mark.parametrize("ring, points", [([1, 1, 5, 5], 2), ([1, 1], 1), ([1, 1, 5, 5, 9], None)])
@_isolated
def test_ground_truth_polygon_with_fewer_than_3_points(tmp_path, capsys, ring, points):
    gt = _coco()
    gt["annotations"][0]["segmentation"] = [ring]
    rc = main(["eval", "--gt", str(_dump(gt, tmp_path / "gt.json")), "--pred",
               str(_dump(_results(), tmp_path / "res.json")), "--type", "segm"])
    err = capsys.readouterr().err
    assert rc == 1
    want = f"fewer than 3 points ({points})" if points else "odd number of coordinates (5)"
    assert f"gt.json: annotation 1: segmentation[0]: polygon ring with {want}" in err


# --------------------------------------------------------------------------- 3. one validation
#: (mutation of the ground truth, the record, the field, words of the message): what convert rejects
GT_DEFECTS = {
    "negative bbox width": (lambda d: d["annotations"][0].__setitem__("bbox", [5, 5, -20, 15]),
                            "annotation 1", "bbox", "non-positive box size"),
    "string bbox element": (lambda d: d["annotations"][1].__setitem__("bbox", [5, "5", 20, 15]),
                            "annotation 2", "bbox", "expected a list of numbers"),
    "undeclared category_id": (lambda d: d["annotations"][1].__setitem__("category_id", 9),
                               "annotation 2", "category_id", "unknown category id"),
    "RLE size differs": (lambda d: d["annotations"][1]["segmentation"].__setitem__("size", [W, H]),
                         "annotation 2", "segmentation", "RLE size [50, 40] is not the image size [40, 50]"),
    "negative image height": (lambda d: d["images"][0].__setitem__("height", -40),
                              "image 1", "height/width", "image height and width must be positive"),
    "missing file_name": (lambda d: d["images"][1].pop("file_name"), "image 2", "file_name", "missing required"),
    "duplicate image ids": (lambda d: d["images"][1].__setitem__("id", 1), "image 1", "id", "duplicate image id"),
}


@pytest.mark.parametrize("defect", sorted(GT_DEFECTS))
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@_isolated
def test_eval_rejects_what_convert_rejects(tmp_path, capsys, defect, iou_type):
    mutate, record, field, words = GT_DEFECTS[defect]
    gt = _coco()
    mutate(gt)
    gt_path = _dump(gt, tmp_path / "gt.json")
    images = _images(tmp_path / "images")
    rc = main(["convert", "--from", "coco", "--to", "voc", "--src", str(gt_path), "--images", str(images),
               "--dst", str(tmp_path / "voc"), "--strict"])
    convert_err = capsys.readouterr().err
    assert rc == 1 and f"{gt_path}: {record}: {field}: {words}" in convert_err
    rc = main(["eval", "--gt", str(gt_path), "--pred", str(_dump(_results(), tmp_path / "res.json")),
               "--type", iou_type])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"{gt_path}: {record}: {field}: {words}" in err  # the ground truth is blamed, by its file name
    assert "res.json" not in err and "<dict>" not in err and "<results>" not in err


@_isolated
def test_every_problem_is_counted_per_annotation(tmp_path, capsys):
    gt = _coco()
    gt["annotations"].append(dict(gt["annotations"][0], id=3))
    for a in gt["annotations"]:
        del a["bbox"]
    path = _dump(gt, tmp_path / "gt.json")
    with pytest.raises(FormatError) as e:
        read_coco(path)
    assert [(p.record, p.field) for p in e.value.problems] == [("annotation 1", "bbox"), ("annotation 2", "bbox"),
                                                                ("annotation 3", "bbox")]
    assert str(e.value).startswith("3 problem(s)")
    rc = main(["eval", "--gt", str(path), "--pred", str(_dump(_results(), tmp_path / "r.json")), "--type", "bbox"])
    assert rc == 1 and "3 problem(s)" in capsys.readouterr().err
    # fields of every list in one error: images and annotations together
    gt = _coco()
    del gt["images"][0]["height"]
    gt["annotations"][0]["iscrowd"] = 2
    gt["annotations"][1]["image_id"] = "2"
    with pytest.raises(FormatError) as e:
        read_coco(_dump(gt, tmp_path / "b.json"))
    assert [(p.record, p.field) for p in e.value.problems] == [
        ("image 1", "height"), ("annotation 1", "iscrowd"), ("annotation 2", "image_id")]


@_isolated
def test_eval_names_the_files_it_read(tmp_path, capsys):
    gt, res = _dump(_coco(), tmp_path / "gt.json"), _dump(_results(), tmp_path / "res.json")
    assert main(["eval", "--gt", str(gt), "--pred", str(res), "--type", "segm"]) == 0
    out = capsys.readouterr().out
    assert f"segm: 2 results from {res} on 2 images, 1 categories of {gt}" in out
    bad = _results()
    bad[1]["score"] = "high"
    rc = main(["eval", "--gt", str(gt), "--pred", str(_dump(bad, tmp_path / "bad.json")), "--type", "segm",
               "--plots", str(tmp_path / "plots")])
    err = capsys.readouterr().err
    assert rc == 1 and f"{tmp_path / 'bad.json'}: result 1 (image_id 2): score" in err


# --------------------------------------------------------------------------- issue 23 s3: convert as the help shows
def test_coco_yolo_coco_round_trip_as_the_help_shows(tmp_path, capsys):
    """``--from coco --to yolo --src X --images DIR --dst Y`` then ``--from yolo --to coco --src Y``:
    data.yaml points at the image folder, so the YOLO set reads back without --images."""
    images = _images(tmp_path / "val2017")
    src = _dump(_coco(), tmp_path / "instances_val.json")
    assert main(["convert", "--from", "coco", "--to", "yolo", "--src", str(src), "--images", str(images),
                 "--dst", str(tmp_path / "yolo_val")]) == 0
    import yaml

    meta = yaml.safe_load((tmp_path / "yolo_val" / "data.yaml").read_text())
    assert Path(meta["train"]) == images.resolve() and Path(meta["path"], meta["train"]).is_dir()
    assert main(["convert", "--from", "yolo", "--to", "coco", "--src", str(tmp_path / "yolo_val"),
                 "--dst", str(tmp_path / "back.json")]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    orig = _coco()
    assert [im["file_name"] for im in back["images"]] == [im["file_name"] for im in orig["images"]]
    assert [c["id"] for c in back["categories"]] == [1]
    np.testing.assert_allclose([a["bbox"] for a in back["annotations"]], [a["bbox"] for a in orig["annotations"]],
                               atol=1e-3)
    capsys.readouterr()
    # without --images there is nothing data.yaml could point at: say so instead of writing a broken set
    rc = main(["convert", "--from", "coco", "--to", "yolo", "--src", str(src), "--dst", str(tmp_path / "nope")])
    assert rc == 1 and "give the image folder with --images" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_voc_to_coco_keeps_coco_category_ids_with_categories(tmp_path, capsys):
    images = _images(tmp_path / "images")
    coco = _coco()
    coco["categories"] = [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]
    coco["annotations"][0]["category_id"] = 18
    coco["annotations"][1]["category_id"] = 3
    src = _dump(coco, tmp_path / "instances.json")
    assert main(["convert", "--from", "coco", "--to", "voc", "--src", str(src), "--images", str(images),
                 "--dst", str(tmp_path / "xml")]) == 0
    out = capsys.readouterr().out
    # masks VOC cannot hold: one summary line, not one per annotation
    assert "not representable in voc: 2 object(s)" in out
    assert out.count("VOC XML cannot hold mask") == 1
    assert "mask: VOC XML cannot hold mask [written without them]: 2 (annotation 1, annotation 2)" in out
    assert main(["convert", "--from", "voc", "--to", "coco", "--src", str(tmp_path / "xml"), "--images", str(images),
                 "--categories", str(src), "--dst", str(tmp_path / "back.json")]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert {c["id"]: c["name"] for c in back["categories"]} == {3: "car", 18: "dog"}
    assert sorted(a["category_id"] for a in back["annotations"]) == [3, 18]
    by_file = {im["id"]: im["file_name"] for im in back["images"]}
    assert {by_file[a["image_id"]]: a["category_id"] for a in back["annotations"]} == {"a.png": 18, "b.png": 3}
    # without it: VOC has only names, the ids are VOC's own (dog and car are VOC classes)
    assert main(["convert", "--from", "voc", "--to", "coco", "--src", str(tmp_path / "xml"), "--images", str(images),
                 "--dst", str(tmp_path / "plain.json")]) == 0
    plain = {c["name"]: c["id"] for c in json.loads((tmp_path / "plain.json").read_text())["categories"]}
    assert (plain["dog"], plain["car"]) == (12, 7)
    capsys.readouterr()
    coco["categories"] = [{"id": 3, "name": "car"}]
    # objects of classes the categories file does not have: problems of their records, as with --names
    rc = main(["convert", "--from", "voc", "--to", "coco", "--src", str(tmp_path / "xml"), "--images", str(images),
               "--categories", str(_dump(coco, tmp_path / "cars.json")), "--dst", str(tmp_path / "x.json")])
    assert rc == 0 and "a.xml: object 0: name: unknown class (known: car) (got 'dog')" in capsys.readouterr().out
    assert [a["category_id"] for a in json.loads((tmp_path / "x.json").read_text())["annotations"]] == [3]


def test_fuzzer_findings_rle_size_inf_and_ragged_result_ids(tmp_path):
    """benchmarks/fuzz.py seeds 5098 (coco_keypoints) and 5172 (coco_results)."""
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
                           "segmentation": {"size": [float("inf"), 4], "counts": "04"}}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(DataError, match=r"gt\.json.*segmentation\.size"):
        read_coco(path, strict=True)
    gt["annotations"][0]["segmentation"] = [[0, 0, 2, 0, 2, 2]]
    path.write_text(json.dumps(gt))
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": [1, 2], "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5},
                               {"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5}]))
    with pytest.raises(PredictionError, match=r"res\.json"):
        evaluate_coco(path, res, "bbox")
