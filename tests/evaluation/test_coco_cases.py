"""Hand-made COCO evaluation cases: expected numbers worked out by hand, and the same cases against
pycocotools (every array element and every per-image match, via test_coco_eval's helpers)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sceneparse.evaluation.coco import evaluate_coco

_spec = importlib.util.spec_from_file_location("_coco_ref", Path(__file__).with_name("test_coco_eval.py"))
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)
check, random_case = _ref.check, _ref.random_case


def dataset(anns, images=((1, 100, 100),), cats=(1,)):
    """COCO dict; ``anns`` are dicts without ids (ids 1.. are added) and with ``area`` = box area by default."""
    out = []
    for i, a in enumerate(anns):
        a = {"id": i + 1, "iscrowd": 0, **a}
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        out.append(a)
    return {"images": [{"id": i, "height": h, "width": w} for i, h, w in images],
            "annotations": out, "categories": [{"id": c, "name": f"c{c}"} for c in cats]}


def box(img, cat, bbox, score):
    return {"image_id": img, "category_id": cat, "bbox": list(bbox), "score": score}


# ----------------------------------------------------------------------------- hand-computed numbers

def test_perfect_detections_give_ap_one():
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                  {"image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40]}])
    res = [box(1, 1, [10, 10, 20, 20], 0.9), box(1, 1, [50, 50, 40, 40], 0.8)]
    ours, _ = check(gt, res, "bbox")
    # AP, AP50, AP75 = 1; small (400 px²) and medium (1600 px²) = 1; no large object -> -1
    # pycocotools' precision at full recall is tp / (tp + fp + eps) = 1 / (1 + eps): one ulp below 1
    np.testing.assert_allclose(ours.stats, [1, 1, 1, 1, 1, -1, 0.5, 1, 1, 1, 1, -1], rtol=0, atol=1e-15)
    assert ours.per_category[1]["AP"] == pytest.approx(1.0, abs=1e-15)


def test_false_positive_first_halves_precision():
    """FP (0.9) then TP (0.8), one GT missed: recall 0.5 at precision 1/2 -> 51 of 101 points at 0.5."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                  {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10]}])
    res = [box(1, 1, [80, 0, 10, 10], 0.9), box(1, 1, [0, 0, 10, 10], 0.8)]
    ours, _ = check(gt, res, "bbox")
    assert ours.stats[0] == pytest.approx(51 * 0.5 / 101, abs=1e-15)
    assert ours.stat("AR100") == 0.5 and ours.stat("AR1") == 0.0  # the best-scored detection is the FP
    np.testing.assert_array_equal(ours.precision[0, :51, 0, 0, 2], 0.5)
    np.testing.assert_array_equal(ours.precision[0, 51:, 0, 0, 2], 0.0)
    # the score at recall threshold 0 is the first detection's (searchsorted finds index 0), then the TP's
    np.testing.assert_array_equal(ours.scores[0, :51, 0, 0, 2], [0.9] + [0.8] * 50)


@pytest.mark.parametrize("tp_first, ap", [(True, 1.0), (False, 0.5)])
def test_exact_score_ties_keep_file_order(tp_first, ap):
    """Equal scores: the detection listed first is ranked first (stable sort), as pycocotools does."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    tp, fp = box(1, 1, [0, 0, 10, 10], 0.5), box(1, 1, [60, 60, 10, 10], 0.5)
    ours, _ = check(gt, [tp, fp] if tp_first else [fp, tp], "bbox")
    assert ours.stats[0] == pytest.approx(ap, abs=1e-15)


def test_iou_ties_go_to_the_later_ground_truth():
    """A detection at equal IoU with two GTs takes the later one (pycocotools keeps replacing on >=)."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                  {"image_id": 1, "category_id": 1, "bbox": [10, 0, 10, 10]}])
    res = [box(1, 1, [5, 0, 10, 10], 0.9)]  # IoU 1/3 with both
    ours, _ = check(gt, res, "bbox", iou_thresholds=[0.3])
    assert ours.matches.gt_ids[ours.matches.dt_gt[0, 0, 0]] == 2


def test_duplicates_are_false_positives():
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}])
    res = [box(1, 1, [0, 0, 40, 40], 0.9), box(1, 1, [0, 0, 40, 40], 0.8), box(1, 1, [0, 0, 40, 40], 0.7)]
    ours, _ = check(gt, res, "bbox")
    assert ours.stats[0] == pytest.approx(1.0, abs=1e-15)  # the duplicates come after full recall
    m = ours.matches
    assert m.tp[:, 0].sum(axis=1).tolist() == [1] * 10 and m.fp[:, 0].sum(axis=1).tolist() == [2] * 10


def test_crowd_region_absorbs_detections_without_penalty():
    """Detections inside a crowd region (IoU = intersection / detection area) are ignored, however many."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                  {"image_id": 1, "category_id": 1, "bbox": [40, 40, 60, 60], "iscrowd": 1}])
    res = [box(1, 1, [0, 0, 10, 10], 0.5)] + [box(1, 1, [45 + 5 * i, 45, 10, 10], 0.9 - 0.01 * i) for i in range(5)]
    ours, _ = check(gt, res, "bbox")
    assert ours.stats[0] == pytest.approx(1.0, abs=1e-15)
    m = ours.matches
    crowd_row = int(np.flatnonzero(m.gt_iscrowd)[0])
    assert (m.dt_gt[:, 0] == crowd_row).sum(axis=1).tolist() == [5] * 10
    assert m.dt_ignore[:, 0].sum(axis=1).tolist() == [5] * 10


def test_regular_ground_truth_is_preferred_over_a_better_crowd_match():
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},
                  {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 1}])
    res = [box(1, 1, [2, 2, 20, 20], 0.9)]  # IoU 0.68 with the regular GT, 0.81 with the crowd
    ours, _ = check(gt, res, "bbox")
    assert ours.matches.gt_ids[ours.matches.dt_gt[0, 0, 0]] == 1
    assert ours.stats[1] == pytest.approx(1.0, abs=1e-15)


def test_ignore_field_has_no_effect_like_pycocotools():
    """pycocotools overwrites an annotation's ``ignore`` with ``iscrowd``: an 'ignored' GT still counts."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                  {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "ignore": 1}])
    res = [box(1, 1, [0, 0, 10, 10], 0.9)]
    ours, _ = check(gt, res, "bbox")
    assert ours.stat("AR100") == 0.5


def test_annotation_id_zero_counts_as_unmatched_like_pycocotools():
    """pycocotools records matches by annotation id and tests them for != 0."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}])
    gt["annotations"][0]["id"] = 0
    ours, _ = check(gt, [box(1, 1, [0, 0, 10, 10], 0.9)], "bbox")
    assert ours.stats[0] == 0.0
    assert not ours.matches.dt_matched.any() and (ours.matches.dt_gt == 0).all()


def test_more_detections_than_max_dets():
    """3 perfect detections of 3 objects: maxDets 1 finds one, 10 all; then 150 better-scored FPs."""
    anns = [{"image_id": 1, "category_id": 1, "bbox": [30 * i, 0, 20, 20]} for i in range(3)]
    res = [box(1, 1, [30 * i, 0, 20, 20], 0.9 - 0.1 * i) for i in range(3)]
    ours, _ = check(dataset(anns), res, "bbox")
    assert ours.stat("AR1") == pytest.approx(1 / 3, abs=1e-15) and ours.stat("AR10") == 1.0
    # 150 false positives above the true ones: with maxDets 100 nothing true survives the cut
    res2 = [box(1, 1, [0, 60, 5, 5], 0.99) for _ in range(150)] + res
    ours2, _ = check(dataset(anns), res2, "bbox")
    assert ours2.stat("AR100") == 0.0 and ours2.matches.dt_ids.size == 100


def test_area_ranges_small_medium_large():
    anns = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},  # 100: small
            {"image_id": 1, "category_id": 1, "bbox": [20, 0, 40, 40]},  # 1600: medium
            {"image_id": 1, "category_id": 1, "bbox": [0, 100, 100, 100]}]  # 10000: large
    res = [box(1, 1, [0, 0, 10, 10], 0.9), box(1, 1, [0, 100, 100, 100], 0.8),
           box(1, 1, [150, 150, 5, 5], 0.95)]  # small FP: counted in "small" and "all" only
    ours, _ = check(dataset(anns, images=((1, 300, 300),)), res, "bbox")
    # small: [FP 0.95, TP 0.9] (the large object's match is ignored) -> precision 1/2 at full recall
    # medium: nothing matches the medium object, every detection is ignored -> 0
    # large: the 0.8 detection matches; the others are ignored -> 1
    np.testing.assert_allclose([ours.stat("APs"), ours.stat("APm"), ours.stat("APl")], [0.5, 0.0, 1.0], atol=1e-15)
    # the unmatched small FP is ignored in "medium" and "large", counted in "small"
    m = ours.matches
    fp_row = int(np.flatnonzero(m.dt_scores == 0.95)[0])
    assert [bool(m.dt_ignore[0, a, fp_row]) for a in range(4)] == [False, False, True, True]


def test_area_is_the_annotation_field_not_the_box():
    """A 40x40 box annotated with area 900 is 'small' (the field decides, as in pycocotools)."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 900}])
    ours, _ = check(gt, [box(1, 1, [0, 0, 40, 40], 0.9)], "bbox")
    assert ours.stat("APs") == pytest.approx(1.0, abs=1e-15) and ours.stat("APm") == -1.0


def test_empty_images_and_absent_categories():
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]}],
                 images=((1, 100, 100), (2, 100, 100), (3, 100, 100)), cats=(1, 2, 3))
    res = [box(1, 1, [0, 0, 20, 20], 0.9), box(2, 2, [0, 0, 20, 20], 0.8)]  # image 2: dets, no GT
    ours, _ = check(gt, res, "bbox")
    assert ours.per_category[1]["AP"] == pytest.approx(1.0, abs=1e-15)
    assert ours.per_category[2]["AP"] == -1.0 and ours.per_category[3]["AP"] == -1.0  # no GT -> -1
    assert (ours.precision[:, :, 1:] == -1).all() and (ours.recall[:, 1:] == -1).all()
    assert ours.stats[0] == pytest.approx(1.0, abs=1e-15)  # -1 entries are left out of the means


def test_categories_with_ground_truth_but_no_detections_score_zero():
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},
                  {"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20]}], cats=(1, 2))
    ours, _ = check(gt, [box(1, 1, [0, 0, 20, 20], 0.9)], "bbox")
    assert ours.per_category[2]["AP"] == 0.0 and ours.stats[0] == pytest.approx(0.5, abs=1e-15)
    assert (ours.precision[:, :, 1, 0] == 0).all() and (ours.recall[:, 1, 0] == 0).all()


def test_empty_results_evaluate_to_zero():
    """pycocotools cannot load an empty result list; here it is a valid (all-zero) evaluation."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]}], cats=(1, 2))
    ours = evaluate_coco(gt, [], "bbox")
    assert (ours.precision[:, :, 0, :2] == 0).all() and (ours.recall[:, 0, :2] == 0).all()  # all, small
    assert (ours.precision[:, :, 0, 2:] == -1).all() and (ours.precision[:, :, 1] == -1).all()  # no GT there
    np.testing.assert_array_equal(ours.stats, [0, 0, 0, 0, -1, -1, 0, 0, 0, 0, -1, -1])
    assert ours.matches.dt_ids.size == 0


def test_no_ground_truth_at_all_gives_minus_one():
    gt = dataset([], cats=(1,))
    ours = evaluate_coco(gt, [box(1, 1, [0, 0, 20, 20], 0.9)], "bbox")
    assert (ours.stats == -1).all() and (ours.precision == -1).all()


def test_custom_max_dets_area_ranges_and_thresholds():
    gt, res = random_case(7, "bbox", n_images=5, n_cats=3)
    check(gt, res, "bbox", max_dets=[2, 5, 50])
    check(gt, res, "bbox", area_ranges={"all": [0, 1e10], "small": [0, 400], "medium": [400, 3000],
                                        "large": [3000, 1e10], "huge": [20000, 1e10]})
    ours, _ = check(gt, res, "bbox", iou_thresholds=[0.3, 0.5, 0.75, 0.9])
    assert ours.precision.shape[0] == 4


def test_threshold_of_one_still_matches_exact_boxes():
    """pycocotools caps thresholds at 1 - 1e-10, so IoU-1.0 requirements are reachable."""
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]}])
    ours, _ = check(gt, [box(1, 1, [0, 0, 20, 20], 0.9)], "bbox", iou_thresholds=[1.0])
    assert ours.precision[0, 0, 0, 0, 2] == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_subsets_of_images_and_categories(seed):
    gt, res = random_case(300 + seed, "bbox", n_images=8, n_cats=4)
    imgs = [im["id"] for im in gt["images"]]
    cats = [c["id"] for c in gt["categories"]]
    check(gt, res, "bbox", img_ids=imgs[::2])
    check(gt, res, "bbox", cat_ids=cats[1:])
    check(gt, res, "bbox", img_ids=imgs[:3] + [99999], cat_ids=cats[:2] + [777])  # unknown ids: evaluated, empty


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_categories_pooled(seed, iou_type):
    gt, res = random_case(400 + seed, iou_type, n_images=5, n_cats=3)
    ours, _ = check(gt, res, iou_type, use_cats=False)
    assert ours.params.cat_ids.tolist() == [-1] and list(ours.per_category) == [-1]


@pytest.mark.parametrize("seed", range(4))
def test_keypoints_pooled_equal_one_merged_category(seed):
    """pycocotools' computeOks ignores useCats=0 (it looks up ground truth under category -1 and
    finds none), so pooled keypoint AP is always 0 there. Pooling is defined here as for boxes:
    the same as one category holding every annotation, in category order (which is compared)."""
    gt, res = random_case(410 + seed, "keypoints", n_images=6, n_cats=3)
    ours = evaluate_coco(gt, res, "keypoints", use_cats=False)
    cats = sorted(c["id"] for c in gt["categories"])
    rank = {c: i for i, c in enumerate(cats)}
    merged = {**gt, "categories": [{"id": 1, "name": "all"}],
              "annotations": [{**a, "category_id": 1} for a in sorted(gt["annotations"],
                                                                    key=lambda a: rank[a["category_id"]])]}
    res_m = [{**r, "category_id": 1} for r in sorted(res, key=lambda r: rank[r["category_id"]])]
    ref = _ref.pycoco_eval(merged, res_m, "keypoints")
    _ref.assert_same(ours, ref, check_matches=False)
    assert ours.stats[0] > 0


# ----------------------------------------------------------------------------- masks

def _rle(mask: np.ndarray, compressed: bool = True) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": r["size"], "counts": r["counts"].decode()}
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] + counts) if flat[0] else counts}


def test_segm_polygons_uncompressed_and_compressed_rles():
    h, w = 60, 80
    square = np.zeros((h, w), bool)
    square[10:30, 10:30] = True
    blob = np.zeros((h, w), bool)
    blob[35:55, 40:75] = True
    anns = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400,
             "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},  # polygon
            {"image_id": 1, "category_id": 1, "bbox": [40, 35, 35, 20], "area": 700,
             "segmentation": _rle(blob, compressed=False)},  # uncompressed RLE
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 80, 60], "area": 4800, "iscrowd": 1,
             "segmentation": _rle(np.ones((h, w), bool), compressed=False)}]  # crowd over everything
    gt = dataset(anns, images=((1, h, w),))
    shifted = np.roll(square, 2, axis=1)
    res = [{"image_id": 1, "category_id": 1, "segmentation": _rle(shifted), "score": 0.9},
           {"image_id": 1, "category_id": 1, "segmentation": _rle(blob), "score": 0.8},
           {"image_id": 1, "category_id": 1, "segmentation": _rle(np.eye(h, w, dtype=bool)), "score": 0.95}]
    ours, _ = check(gt, res, "segm")
    m = ours.matches
    assert m.dt_ignore[0, 0].sum() == 1  # the diagonal line is absorbed by the crowd region
    assert ours.stat("AP50") == pytest.approx(1.0, abs=1e-15)


def test_segm_results_with_boxes_take_the_box_area_like_loadres():
    """A mask result that also has a 'bbox' goes through loadRes' box branch: area = w * h."""
    gt, res = random_case(150, "segm", n_images=6, n_cats=3)
    for r in res:
        m = mask_utils.decode({"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()})
        r["bbox"] = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m))).tolist()
        r["bbox"][2] *= 3  # make the box area differ from the mask area, so that the branch matters
    ours, _ = check(gt, res, "segm")
    np.testing.assert_array_equal(ours.matches.dt_areas,
                                  [res[i - 1]["bbox"][2] * res[i - 1]["bbox"][3] for i in ours.matches.dt_ids])


def test_box_results_evaluated_as_masks_use_the_box_polygon():
    gt, _ = random_case(151, "segm", n_images=4, n_cats=2)
    boxes = [box(a["image_id"], a["category_id"], a["bbox"], 0.5 + 0.01 * i) for i, a in enumerate(gt["annotations"])]
    check(gt, boxes, "segm")


# ----------------------------------------------------------------------------- keypoints

def _person(img, kps, bbox, ann_id=None, **kw):
    kp = np.asarray(kps, dtype=float).reshape(-1, 3)
    d = {"image_id": img, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3],
         "keypoints": kp.ravel().tolist(), "num_keypoints": int((kp[:, 2] > 0).sum()), **kw}
    return d


def test_keypoints_partial_and_unlabelled_ground_truth():
    rng = np.random.default_rng(0)
    full = np.concatenate([rng.uniform(20, 80, (17, 2)), np.full((17, 1), 2)], 1)
    partial = full.copy()
    partial[5:, 2] = 0  # only 5 keypoints labelled
    partial[5:, :2] = 0
    none = np.zeros((17, 3))
    anns = [_person(1, full, [20, 20, 60, 60]), _person(1, partial + [100, 0, 0], [120, 20, 60, 60]),
            _person(1, none, [220, 20, 60, 60])]
    gt = dataset(anns, images=((1, 200, 300),))
    det = lambda kp, s: {"image_id": 1, "category_id": 1, "keypoints": kp.ravel().tolist(), "score": s}  # noqa: E731
    noisy = full.copy()
    noisy[:, :2] += rng.normal(0, 2, (17, 2))
    res = [det(noisy, 0.9), det(full + [100, 0, 0], 0.8),
           det(np.concatenate([rng.uniform(200, 280, (17, 2)), np.ones((17, 1))], 1), 0.7)]  # near the unlabelled
    ours, _ = check(gt, res, "keypoints")
    m = ours.matches
    assert m.gt_ignore[0].tolist() == [False, False, True]  # num_keypoints == 0 -> ignored
    assert ours.stat("AP50") == pytest.approx(1.0, abs=1e-15)


def test_oks_by_hand():
    """One labelled keypoint at distance d: OKS = exp(-d² / (2 s (2σ)²))."""
    sigma = 0.5  # as published, pycocotools uses sigma / 10
    k = [0, 0, 0] * 16
    gt = dataset([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400,
                   "keypoints": [10, 10, 2] + k, "num_keypoints": 1}])
    d = 1.5
    res = [{"image_id": 1, "category_id": 1, "keypoints": [10 + d, 10, 1] + [10, 10, 1] * 16, "score": 1.0}]
    sigmas = [sigma] + [0.3] * 16
    ours, _ = check(gt, res, "keypoints", sigmas=sigmas)
    oks = np.exp(-d ** 2 / (2 * (400 + np.spacing(1)) * (2 * sigma / 10) ** 2))
    assert oks == pytest.approx(np.exp(-0.28125), abs=1e-12)  # 2.25 / 0.01 / 400 / 2
    # matched at thresholds <= oks, not above
    matched = ours.matches.dt_matched[:, 0, 0]
    np.testing.assert_array_equal(matched, ours.params.iou_thresholds <= oks)


def test_keypoint_results_with_boxes_take_the_box_area():
    gt, res = random_case(250, "keypoints", n_images=5)
    for r in res:
        x, y = r["keypoints"][0::3], r["keypoints"][1::3]
        r["bbox"] = [min(x), min(y), 2 * (max(x) - min(x)), max(y) - min(y)]
    check(gt, res, "keypoints")
