"""Box IoU, mask IoU and OKS against pycocotools' own computations, compared for exact equality
(one ulp off can flip an ``iou >= t`` decision)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sceneparse.evaluation.coco import box_iou_pairs, mask_iou_blocks, oks_pairs, to_rles
from sceneparse.evaluation.coco.tables import GroundTruthTable


def _boxes(rng, n):
    xy = rng.uniform(-20, 100, (n, 2))
    wh = rng.uniform(0, 60, (n, 2))
    wh[rng.random(n) < 0.1] = 0  # degenerate boxes
    out = np.concatenate([xy, wh], 1)
    ints = rng.random(n) < 0.3
    out[ints] = np.round(out[ints])
    return out


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_equals_pycocotools_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    d, g = _boxes(rng, 40), _boxes(rng, 30)
    g[:5] = d[:5]  # identical boxes: IoU exactly 1
    crowd = rng.random(30) < 0.3
    want = np.asarray(mask_utils.iou(d.tolist(), g.tolist(), crowd.astype(np.uint8).tolist()))
    di, gi = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    got = box_iou_pairs(d[di.ravel()], g[gi.ravel()], crowd[gi.ravel()]).reshape(40, 30)
    np.testing.assert_array_equal(got, want)
    # identical boxes: 1 up to rounding ((x + w) - x need not be w), hence pycocotools' 1 - 1e-10 cap
    same = got[np.arange(5), np.arange(5)][~crowd[:5] & (d[:5, 2] * d[:5, 3] > 0)]
    np.testing.assert_allclose(same, 1.0, rtol=0, atol=1e-12)


def _mask(rng, h, w):
    m = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(0, h - 5), rng.integers(0, w - 5)
    m[y0:y0 + rng.integers(1, h // 2), x0:x0 + rng.integers(1, w // 2)] = 1
    m &= (rng.random((h, w)) < 0.9).astype(np.uint8)
    return m


def test_mask_iou_blocks_and_rle_conversion_equal_pycocotools():
    rng = np.random.default_rng(0)
    h, w = 40, 50
    table = GroundTruthTable(source="t", img_ids=np.array([7]), img_heights=np.array([h]), img_widths=np.array([w]),
                             cat_ids=np.array([1]), cat_names={}, ids=np.zeros(0, np.int64),
                             image_ids=np.zeros(0, np.int64), category_ids=np.zeros(0, np.int64), areas=np.zeros(0),
                             iscrowd=np.zeros(0, bool), boxes=None, segmentations=[], keypoints=None,
                             num_keypoints=None)
    masks = [_mask(rng, h, w) for _ in range(9)]
    compressed = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
    polys = [[[5, 5, 30, 6, 28, 30, 4, 25]], [[1, 1, 20, 1, 20, 20], [25, 25, 45, 25, 45, 38]]]
    segs = [{"size": c["size"], "counts": c["counts"].decode()} for c in compressed[:5]] + polys
    flat = masks[5].ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    segs.append({"size": [h, w], "counts": ([0] + counts) if flat[0] else counts})  # uncompressed
    rles = to_rles(segs, np.full(len(segs), 7), table, "t")
    want_polys = [mask_utils.merge(mask_utils.frPyObjects(p, h, w)) for p in polys]
    assert [r["counts"] for r in rles[5:7]] == [r["counts"] for r in want_polys]
    assert mask_utils.decode(rles[7]).tolist() == masks[5].tolist()
    dts, gts = rles[:4], rles[4:]
    crowd = np.array([False, True, False, True])
    got = mask_iou_blocks(dts, gts, crowd, np.array([[0, 2], [2, 4]]), np.array([[0, 1], [1, 4]]))
    want = np.concatenate([np.asarray(mask_utils.iou(dts[:2], gts[:1], [0])).ravel(),
                           np.asarray(mask_utils.iou(dts[2:], gts[1:], [1, 0, 1])).ravel()])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_oks_equals_pycocotools_compute_oks(seed):
    """Partially labelled, unlabelled (enlarged-box distance) and fully labelled people."""
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for i in range(6):
        x, y, w, h = rng.uniform(0, 100, 2).tolist() + rng.uniform(10, 80, 2).tolist()
        v = rng.choice([0, 1, 2], 17) if i % 3 else np.zeros(17, int)
        kp = np.stack([x + rng.uniform(0, w, 17), y + rng.uniform(0, h, 17), v], 1)
        kp[v == 0, :2] = 0
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [x, y, w, h], "area": w * h * 0.7,
                     "iscrowd": 0, "keypoints": kp.ravel().tolist(), "num_keypoints": int((v > 0).sum())})
    for j in range(8):
        kp = np.stack([rng.uniform(-50, 250, 17), rng.uniform(-50, 250, 17), np.ones(17)], 1)
        dets.append({"image_id": 1, "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 1 - j / 10})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": 1, "height": 300, "width": 300}], "annotations": anns,
                        "categories": [{"id": 1, "name": "person"}]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "keypoints")
        ev.params.imgIds, ev.params.catIds = [1], [1]
        ev._prepare()
        want = ev.computeOks(1, 1)  # [D, G], detections by descending score
    sig = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0
    g_kp = np.array([a["keypoints"] for a in anns])
    d_kp = np.array([d["keypoints"] for d in dets])
    di, gi = np.meshgrid(np.arange(8), np.arange(6), indexing="ij")
    got = oks_pairs(d_kp[di.ravel()], g_kp[gi.ravel()], np.array([a["bbox"] for a in anns])[gi.ravel()],
                    np.array([a["area"] for a in anns])[gi.ravel()], sig).reshape(8, 6)
    np.testing.assert_array_equal(got, want)
    assert (got > 0.01).any()


def test_segmentation_kinds_fast_and_general_paths_agree():
    from sceneparse.evaluation.coco.mask_iou import (COMPRESSED, INVALID, ODD_POLYGONS, POLYGONS, UNCOMPRESSED,
                                                     segmentation_kinds)

    rle = mask_utils.encode(np.asfortranarray(np.eye(5, dtype=np.uint8)))
    as_str = {"size": rle["size"], "counts": rle["counts"].decode()}
    # all compressed (str and bytes): the C-level fast path
    assert segmentation_kinds([as_str, rle, as_str]).tolist() == [COMPRESSED] * 3
    # mixed: every kind named, including dicts missing "size" or with odd counts, and non-dicts
    mixed = [as_str, {"size": [5, 5], "counts": [0, 25]}, [[0, 0, 4, 0, 4, 4]], [[1, 2, 3, 4]], {"counts": "x"},
             {"size": [5, 5], "counts": 3}, None, "abc", []]
    assert segmentation_kinds(mixed).tolist() == [COMPRESSED, UNCOMPRESSED, POLYGONS, ODD_POLYGONS, INVALID,
                                                  INVALID, INVALID, INVALID, INVALID]
    # dicts only, one without "size": the dict path (not the fast one) flags it
    assert segmentation_kinds([as_str, {"counts": "x"}]).tolist() == [COMPRESSED, INVALID]
    assert segmentation_kinds([]).tolist() == []


def test_gc_paused_restores_the_collector_state_and_decorates():
    import gc

    from sceneparse.evaluation.coco.tables import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()

    @gc_paused()
    def inner():
        return gc.isenabled()

    assert inner() is False and gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's "off" stays off
    finally:
        gc.enable()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("restored on errors too")
    assert gc.isenabled()
