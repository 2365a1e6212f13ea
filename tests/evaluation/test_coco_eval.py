"""sceneparse's COCO evaluation against pycocotools' COCOeval: every summary number and every element
of the precision / recall / scores arrays, plus every per-image match, on random datasets (fixed
seeds) and hand-made edge cases, for bbox, segm and keypoints."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from pycoco_reference import pycoco_eval  # noqa: F401  (also the reference of test_coco_api / _cases)
from sceneparse.evaluation.coco import evaluate_coco

TOL = 1e-12


# ----------------------------------------------------------------------------- reference

def assert_same(ours, ref: COCOeval, check_matches: bool = True) -> None:
    """All numbers equal: stats, precision, recall, scores, and pycocotools' evalImgs entries."""
    np.testing.assert_allclose(ours.stats, np.asarray(ref.stats), rtol=0, atol=TOL, err_msg="stats")
    for name in ("precision", "recall", "scores"):
        want = ref.eval[name]
        got = getattr(ours, name)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL, err_msg=name)
    assert ours.params.img_ids.tolist() == [int(i) for i in ref.params.imgIds]
    if ref.params.useCats and ours.params.use_cats:
        assert ours.params.cat_ids.tolist() == [int(c) for c in ref.params.catIds]
    if check_matches:
        assert_same_matches(ours, ref)


def assert_same_matches(ours, ref: COCOeval) -> None:
    """Per (image, category, area): the same detections (ids, order), dtMatches, dtIgnore, gtIgnore."""
    m = ours.matches
    p = ref.params
    cat_ids = p.catIds if p.useCats else [-1]
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    key_dt = {}
    for row in range(m.dt_ids.size):
        key_dt.setdefault((int(m.dt_img[row]), int(m.dt_k[row])), []).append(row)
    key_gt = {}
    for row in range(m.gt_ids.size):
        img = int(np.searchsorted(ours.params.img_ids, m.gt_image_ids[row]))
        key_gt.setdefault((img, int(m.gt_k[row])), []).append(row)
    checked = 0
    for k in range(len(cat_ids)):
        for a in range(n_area):
            for i in range(n_img):
                e = ref.evalImgs[k * n_area * n_img + a * n_img + i]
                dts = key_dt.get((i, k), [])
                gts = key_gt.get((i, k), [])
                if e is None:
                    assert not dts and not gts
                    continue
                assert m.dt_ids[dts].tolist() == list(e["dtIds"])
                ig = m.gt_ignore[a, gts]
                gt_order = np.asarray(gts)[np.argsort(ig, kind="mergesort")] if gts else np.zeros(0, int)
                assert m.gt_ids[gt_order].tolist() == list(e["gtIds"])
                np.testing.assert_array_equal(m.gt_ignore[a, gt_order], np.asarray(e["gtIgnore"], bool))
                if dts:
                    got = np.where(m.dt_gt[:, a, dts] >= 0, m.gt_ids[np.maximum(m.dt_gt[:, a, dts], 0)], 0)
                    np.testing.assert_array_equal(got, e["dtMatches"])
                    np.testing.assert_array_equal(m.dt_ignore[:, a, dts], e["dtIgnore"])
                    np.testing.assert_array_equal(m.dt_scores[dts], e["dtScores"])
                if gts:
                    got_g = np.where(m.gt_dt[:, a, gt_order] >= 0, m.dt_ids[np.maximum(m.gt_dt[:, a, gt_order], 0)], 0)
                    np.testing.assert_array_equal(got_g, e["gtMatches"])
                checked += 1
    assert checked > 0 or not m.dt_ids.size


def check(gt, results, iou_type, **kw):
    ref_kw = {}
    if "max_dets" in kw:
        ref_kw["max_dets"] = kw["max_dets"]
    if "area_ranges" in kw:
        ref_kw["area_rng"] = kw["area_ranges"]
    if "iou_thresholds" in kw:
        ref_kw["iou_thrs"] = kw["iou_thresholds"]
    for key in ("img_ids", "cat_ids", "use_cats", "sigmas"):
        if key in kw:
            ref_kw[key] = kw[key]
    gt_before, res_before = copy.deepcopy(gt), copy.deepcopy(results)
    ours = evaluate_coco(gt, results, iou_type, **kw)
    assert gt == gt_before and results == res_before, "evaluate_coco modified its inputs"
    ref = pycoco_eval(gt, results, iou_type, **ref_kw)
    assert_same(ours, ref)
    return ours, ref


# ----------------------------------------------------------------------------- random datasets

def _polygon(rng, x, y, w, h):
    """A random star-shaped polygon inside the box (flat xy list)."""
    n = int(rng.integers(3, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(0.4, 1.0, n)
    cx, cy = x + w / 2, y + h / 2
    px = cx + np.cos(ang) * rad * w / 2
    py = cy + np.sin(ang) * rad * h / 2
    return np.stack([px, py], 1).ravel().round(2).tolist()


def _box(rng, width, height):
    side = float(np.exp(rng.uniform(np.log(3), np.log(min(width, height) * 0.9))))
    w = side * rng.uniform(0.6, 1.4)
    h = side * rng.uniform(0.6, 1.4)
    x = rng.uniform(-0.05 * width, width - w * 0.5)
    y = rng.uniform(-0.05 * height, height - h * 0.5)
    if rng.random() < 0.3:  # integer boxes: exact IoU ties and exact ones
        return [float(round(x)), float(round(y)), float(max(1, round(w))), float(max(1, round(h)))]
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def _jitter(rng, box, scale):
    x, y, w, h = box
    return [x + rng.normal(0, scale * w), y + rng.normal(0, scale * h), max(0.5, w * (1 + rng.normal(0, scale))),
            max(0.5, h * (1 + rng.normal(0, scale)))]


def _keypoints(rng, box, visible_frac):
    x, y, w, h = box
    kp = []
    for _ in range(17):
        v = int(rng.choice([0, 1, 2])) if rng.random() > visible_frac else 2
        if v == 0:
            kp += [0, 0, 0]
        else:
            kp += [round(float(x + rng.uniform(0, w)), 2), round(float(y + rng.uniform(0, h)), 2), v]
    return kp


def _gt_mask(g, height, width) -> np.ndarray:
    seg = g["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def _det_mask(rng, g, box, height, width) -> dict:
    """A compressed RLE: the ground truth's mask shifted by a few pixels (with a few pixels flipped),
    or a random polygon when there is no ground truth to copy."""
    if g is None or rng.random() < 0.15:
        rle = mask_utils.merge(mask_utils.frPyObjects([_polygon(rng, *box)], height, width))
        m = mask_utils.decode(rle).astype(bool)
    else:
        m = _gt_mask(g, height, width)
        dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
        m = np.roll(np.roll(m, dy, 0), dx, 1)
        ys, xs = np.nonzero(m)
        if ys.size:
            win = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            m[win] ^= rng.random(m[win].shape) < 0.03
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def random_case(seed: int, iou_type: str, n_images: int = 6, n_cats: int = 4):
    rng = np.random.default_rng(seed)
    img_ids = rng.choice(np.arange(1, 500), n_images, replace=False).tolist()
    cat_ids = sorted(rng.choice(np.arange(1, 60), n_cats, replace=False).tolist())
    if iou_type == "keypoints":
        cat_ids = cat_ids[:2]
    images = []
    anns = []
    results = []
    ann_id = int(rng.integers(1, 1000))
    for img_id in img_ids:
        width, height = int(rng.integers(40, 260)), int(rng.integers(40, 260))
        images.append({"id": img_id, "width": width, "height": height, "file_name": f"{img_id}.jpg"})
        n_gt = int(rng.poisson(3)) if rng.random() > 0.15 else 0
        gts = []
        for _ in range(n_gt):
            cat = int(rng.choice(cat_ids[:-1])) if len(cat_ids) > 1 else cat_ids[0]  # the last category: no GT
            box = _box(rng, width, height)
            crowd = int(rng.random() < 0.12)
            ann = {"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": box, "iscrowd": crowd,
                   "area": round(box[2] * box[3] * float(rng.uniform(0.4, 1.1)), 2)}
            ann_id += int(rng.integers(1, 4))
            if rng.random() < 0.2:
                ann["ignore"] = int(rng.integers(0, 2))  # pycocotools overwrites it with iscrowd
            if iou_type == "segm":
                kind = rng.random()
                if kind < 0.55:
                    parts = [_polygon(rng, *box)]
                    if rng.random() < 0.3:  # a second part
                        parts.append(_polygon(rng, *_jitter(rng, box, 0.2)))
                    ann["segmentation"] = parts
                else:
                    rle = mask_utils.merge(mask_utils.frPyObjects([_polygon(rng, *box)], height, width))
                    if kind < 0.8 or crowd:
                        m = mask_utils.decode(rle).ravel(order="F")
                        change = np.flatnonzero(np.diff(m)) + 1
                        counts = np.diff(np.concatenate([[0], change, [m.size]])).tolist()
                        if m[0] == 1:
                            counts = [0] + counts
                        ann["segmentation"] = {"size": [height, width], "counts": counts}
                    else:
                        ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                if rng.random() < 0.7:  # the true mask area (otherwise a box-based number, as files may have)
                    ann["area"] = float(_gt_mask(ann, height, width).sum())
            if iou_type == "keypoints":
                kp = _keypoints(rng, box, 0.5) if rng.random() > 0.2 else [0] * 51
                ann["keypoints"] = kp
                ann["num_keypoints"] = int(np.count_nonzero(np.asarray(kp[2::3]) > 0))
                if rng.random() < 0.05:
                    ann["num_keypoints"] = 0  # inconsistent on purpose: ignored by its count only
            anns.append(ann)
            gts.append(ann)
        n_dt_extra = int(rng.integers(0, 6))
        dets = []
        for g in gts:
            for _ in range(int(rng.integers(0, 4))):
                cat = g["category_id"] if rng.random() > 0.15 else int(rng.choice(cat_ids))
                dets.append((cat, _jitter(rng, g["bbox"], float(rng.choice([0.02, 0.08, 0.2]))), g))
            if rng.random() < 0.1:
                dets.append((g["category_id"], list(g["bbox"]), g))  # exact copy
        for _ in range(n_dt_extra):
            dets.append((int(rng.choice(cat_ids)), _box(rng, width, height), None))
        if dets and rng.random() < 0.2:
            dets += [dets[int(rng.integers(len(dets)))]] * 2  # duplicates
        for cat, box, g in dets:
            score = float(rng.random())
            if rng.random() < 0.4:
                score = round(score, 1)  # exact ties
            r = {"image_id": img_id, "category_id": cat, "score": score}
            if iou_type == "bbox":
                r["bbox"] = [round(v, 3) for v in box]
            elif iou_type == "segm":
                r["segmentation"] = _det_mask(rng, g, box, height, width)
            else:
                base = g["keypoints"] if g is not None and rng.random() < 0.8 else _keypoints(rng, box, 1.0)
                kp = []
                for j in range(17):
                    x, y = base[3 * j], base[3 * j + 1]
                    if x == 0 and y == 0:
                        x, y = box[0] + rng.uniform(0, box[2]), box[1] + rng.uniform(0, box[3])
                    noise = 0.04 * np.sqrt(box[2] * box[3]) * float(rng.choice([0.3, 1, 3]))
                    kp += [round(float(x + rng.normal(0, noise)), 2), round(float(y + rng.normal(0, noise)), 2), 1.0]
                r["keypoints"] = kp
            results.append(r)
    rng.shuffle(results)
    categories = [{"id": c, "name": f"c{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": categories}, results


@pytest.mark.parametrize("seed", range(30))
def test_random_bbox(seed):
    gt, res = random_case(seed, "bbox")
    check(gt, res, "bbox")


@pytest.mark.parametrize("seed", range(30))
def test_random_segm(seed):
    gt, res = random_case(100 + seed, "segm")
    check(gt, res, "segm")


@pytest.mark.parametrize("seed", range(30))
def test_random_keypoints(seed):
    gt, res = random_case(200 + seed, "keypoints")
    check(gt, res, "keypoints")
