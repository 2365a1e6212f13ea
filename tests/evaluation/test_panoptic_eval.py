import json
import math

import numpy as np
import pytest
from PIL import Image

from sceneparse.conventions import Category, CategoryMap
from sceneparse.errors import DataError, PredictionError
from sceneparse.evaluation.panoptic import PanopticEvaluator, evaluate_panoptic
from sceneparse.structures.segmaps import PanopticMap, SegmentInfo, id2rgb

CATS = CategoryMap.from_categories([
    Category(1, "person", isthing=True), Category(2, "sky", isthing=False),
    Category(3, "car", isthing=True), Category(4, "tree", isthing=False),
])


def _pm(row_ids, segs):
    ids = np.asarray(row_ids, dtype=np.int64)
    if ids.ndim == 1:
        ids = ids[None]
    return PanopticMap(ids, [SegmentInfo(id=i, category_id=c, iscrowd=bool(cr)) for i, c, cr in segs])


def _hand_case():
    gt = np.zeros(40, dtype=np.int64)
    gt[0:10] = 1          # person, 10 px
    gt[10:30] = 2         # sky, 20 px
    gt[30:35] = 3         # car crowd, 5 px
    # 35..39 void
    pred = np.zeros(40, dtype=np.int64)
    pred[0:8] = 11        # person: 8 px on gt 1 ...
    pred[35:37] = 11      # ... + 2 px on void: union = 10 + 10 - 8 - 2 = 10, IoU 0.8
    pred[10:22] = 13      # sky: IoU 12 / 20 = 0.6
    pred[22:30] = 14      # car on sky: unmatched, no void / crowd -> FP car
    pred[30:34] = 15      # car: 4 px on the car crowd region ...
    pred[37:40] = 15      # ... + 3 px void -> 7/7 ignored, not a FP
    pred[34] = 16         # person on the car crowd region: another category's crowd -> FP person
    g = _pm(gt, [(1, 1, 0), (2, 2, 0), (3, 3, 1)])
    p = _pm(pred, [(11, 1, 0), (13, 2, 0), (14, 3, 0), (15, 3, 0), (16, 1, 0)])
    return g, p


def test_hand_made_case_exact_pq_sq_rq():
    g, p = _hand_case()
    ev = PanopticEvaluator(CATS)
    ev.update(g, p)
    r = ev.compute()
    person, sky, car, tree = (r.per_category[i] for i in (1, 2, 3, 4))
    assert (person.tp, person.fp, person.fn) == (1, 1, 0) and person.iou_sum == pytest.approx(0.8)
    assert (sky.tp, sky.fp, sky.fn) == (1, 0, 0) and sky.iou_sum == pytest.approx(0.6)
    assert (car.tp, car.fp, car.fn) == (0, 1, 0)
    assert (tree.tp, tree.fp, tree.fn) == (0, 0, 0)
    assert person.pq == pytest.approx(0.8 / 1.5) and person.sq == pytest.approx(0.8)
    assert person.rq == pytest.approx(1 / 1.5)
    assert r.pq == pytest.approx((0.8 / 1.5 + 0.6 + 0) / 3)
    assert r.sq == pytest.approx((0.8 + 0.6 + 0) / 3)
    assert r.rq == pytest.approx((1 / 1.5 + 1 + 0) / 3)
    assert r.all.n == 3  # tree: no TP/FP/FN, left out
    assert r.things.pq == pytest.approx(0.8 / 1.5 / 2) and r.things.n == 2
    assert r.stuff.pq == pytest.approx(0.6) and r.stuff.rq == 1.0 and r.stuff.n == 1
    assert "Things" in r.summary() and r.to_dict()["pq"] == pytest.approx(r.pq)


def test_iou_exactly_half_is_not_a_match_and_misses_are_fn():
    # gt person 4 px, prediction covers 2 of them + 2 others: IoU = 2 / 6 ; and 4 of 8 px: IoU 0.5 exactly
    gt = np.array([1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2])
    pred = np.array([5, 5, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7])
    # pred 6 (sky) on gt 2 (sky): inter 4, union 6 + 8 - 4 = 10 -> 0.4 ; pred 7 sky: inter 4, union 8 -> 0.5
    ev = PanopticEvaluator(CATS)
    ev.update(_pm(gt, [(1, 1, 0), (2, 2, 0)]), _pm(pred, [(5, 1, 0), (6, 2, 0), (7, 2, 0)]))
    r = ev.compute()
    # pred 5 person on gt 1: inter 2, union 2 + 4 - 2 = 4 -> 0.5: not > 0.5
    assert (r.per_category[1].tp, r.per_category[1].fp, r.per_category[1].fn) == (0, 1, 1)
    assert (r.per_category[2].tp, r.per_category[2].fp, r.per_category[2].fn) == (0, 2, 1)
    assert r.pq == 0.0 and r.things.n == 1 and r.stuff.n == 1
    assert math.isnan(PanopticEvaluator(CATS).compute().pq)  # nothing seen: NaN, not a crash


def _slow_reference(pairs, cats: CategoryMap):
    """Dictionary-and-loops PQ, panopticapi's rules written out plainly (areas = pixel counts)."""
    stat = {c.id: [0.0, 0, 0, 0] for c in cats.categories}  # iou, tp, fp, fn
    for gt, pred in pairs:
        gseg = {s.id: s for s in gt.segments}
        pseg = {s.id: s for s in pred.segments}
        g = gt.ids.numpy().ravel()
        p = pred.ids.numpy().ravel()
        inter = {}
        for a, b in zip(g.tolist(), p.tolist()):
            inter[(a, b)] = inter.get((a, b), 0) + 1
        garea = {i: int((g == i).sum()) for i in gseg}
        parea = {i: int((p == i).sum()) for i in pseg}
        gm, pm = set(), set()
        for (a, b), n in inter.items():
            if a in gseg and b in pseg and not gseg[a].iscrowd and gseg[a].category_id == pseg[b].category_id:
                iou = n / (parea[b] + garea[a] - n - inter.get((0, b), 0))
                if iou > 0.5:
                    stat[gseg[a].category_id][0] += iou
                    stat[gseg[a].category_id][1] += 1
                    gm.add(a)
                    pm.add(b)
        for a, s in gseg.items():
            if a not in gm and not s.iscrowd:
                stat[s.category_id][3] += 1
        for b, s in pseg.items():
            if b in pm:
                continue
            ign = inter.get((0, b), 0) + sum(n for (a, bb), n in inter.items()
                                             if bb == b and a in gseg and gseg[a].iscrowd
                                             and gseg[a].category_id == s.category_id)
            if ign / parea[b] > 0.5:
                continue
            stat[s.category_id][2] += 1
    out = {}
    for name, keep in (("all", lambda c: True), ("things", lambda c: c.isthing), ("stuff", lambda c: not c.isthing)):
        vals = []
        for c in cats.categories:
            iou, tp, fp, fn = stat[c.id]
            if keep(c) and tp + fp + fn > 0:
                d = tp + fp / 2 + fn / 2
                vals.append((iou / d, iou / tp if tp else 0.0, tp / d))
        out[name] = tuple(np.mean(vals, axis=0)) if vals else (math.nan,) * 3
    return out, stat


def _random_pair(rng, h, w):
    gt = np.zeros((h, w), dtype=np.int64)
    segs = []
    for sid in range(1, rng.integers(2, 9)):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        y1, x1 = y0 + rng.integers(2, h // 2 + 2), x0 + rng.integers(2, w // 2 + 2)
        gt[y0:y1, x0:x1] = sid * 7
        segs.append((sid * 7, int(rng.integers(1, 5)), int(rng.random() < 0.15)))
    present = set(np.unique(gt).tolist())
    segs = [s for s in segs if s[0] in present]
    # prediction: the ground truth, shifted and partly overwritten, with some categories changed
    pred = np.roll(gt, shift=(int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1)) * 3 + 1000
    pred[gt == 0] = 0 if rng.random() < 0.5 else pred[gt == 0]
    for _ in range(rng.integers(0, 4)):
        y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        pred[y0:y0 + rng.integers(1, h // 2), x0:x0 + rng.integers(1, w // 2)] = int(rng.integers(1, 4)) * 50000
    psegs = []
    for pid in np.unique(pred).tolist():
        if pid == 0:
            continue
        src = (pid - 1000) // 3
        cat = next((c for i, c, _ in segs if i == src), None) if pid < 50000 else None
        if cat is None or rng.random() < 0.2:
            cat = int(rng.integers(1, 5))
        psegs.append((pid, cat, 0))
    return _pm(gt, segs), _pm(pred, psegs)


def test_random_cases_match_slow_reference():
    rng = np.random.default_rng(12)
    for trial in range(25):
        pairs = [_random_pair(rng, int(rng.integers(6, 18)), int(rng.integers(6, 18))) for _ in range(3)]
        ev = PanopticEvaluator(CATS)
        for g, p in pairs:
            ev.update(g, p)
        r = ev.compute()
        ref, stat = _slow_reference(pairs, CATS)
        for cid, (iou, tp, fp, fn) in stat.items():
            c = r.per_category[cid]
            assert (c.tp, c.fp, c.fn) == (tp, fp, fn), (trial, cid)
            assert c.iou_sum == pytest.approx(iou, abs=1e-12)
        for name in ("all", "things", "stuff"):
            got = getattr(r, name)
            np.testing.assert_allclose([got.pq, got.sq, got.rq], ref[name], atol=1e-12, equal_nan=True)


def test_prediction_errors_name_image_and_segment():
    g, p = _hand_case()
    ev = PanopticEvaluator(CATS)
    bad = PanopticMap(p.ids, [s for s in p.segments if s.id != 13])  # id 13 in the PNG, not in segments
    with pytest.raises(PredictionError, match=r"image 5 \(prediction\).*missing from segments_info.*\[13\]"):
        ev.update(g, bad, image_id=5)
    extra = PanopticMap(p.ids, p.segments + [SegmentInfo(id=99, category_id=1)])
    with pytest.raises(PredictionError, match=r"do not appear in the PNG.*\[99\]"):
        ev.update(g, extra, image_id=5)
    unknown = PanopticMap(p.ids, [SegmentInfo(id=s.id, category_id=9 if s.id == 14 else s.category_id)
                                  for s in p.segments])
    with pytest.raises(PredictionError, match=r"segment 14: category_id: unknown category id"):
        ev.update(g, unknown, image_id=5)
    with pytest.raises(PredictionError, match="size"):
        ev.update(g, PanopticMap(np.zeros((2, 40), dtype=np.int64), []))
    assert ev.num_images == 0


def _write_set(root, name, maps, image_ids, categories=None):
    folder = root / name
    folder.mkdir()
    anns = []
    for m, iid in zip(maps, image_ids):
        fn = f"{iid:06d}.png"
        Image.fromarray(id2rgb(m.ids.numpy())).save(folder / fn)
        anns.append({"image_id": iid, "file_name": fn,
                     "segments_info": [dict(s.to_coco(), area=int((m.ids == s.id).sum())) for s in m.segments]})
    data = {"annotations": anns}
    if categories is not None:
        data["categories"] = categories.to_coco()
        data["images"] = [{"id": i, "file_name": f"{i:06d}.jpg", "height": int(m.ids.shape[0]),
                           "width": int(m.ids.shape[1])} for m, i in zip(maps, image_ids)]
    path = root / f"{name}.json"
    path.write_text(json.dumps(data))
    return path, folder


def test_files_give_the_same_numbers_as_memory(tmp_path):
    rng = np.random.default_rng(5)
    pairs = [_random_pair(rng, 12, 15) for _ in range(4)] + [_hand_case()]
    gts, preds = [g for g, _ in pairs], [p for _, p in pairs]
    gt_json, gt_dir = _write_set(tmp_path, "gt", gts, [10, 11, 12, 13, 14], CATS)
    pred_json, pred_dir = _write_set(tmp_path, "pred", preds[::-1], [14, 13, 12, 11, 10])  # order must not matter
    r = evaluate_panoptic(gt_json, gt_dir, pred_json, pred_dir)
    ev = PanopticEvaluator(CATS)
    for g, p in pairs:
        ev.update(g, p)
    m = ev.compute()
    assert r.num_images == 5
    assert (r.pq, r.sq, r.rq) == pytest.approx((m.pq, m.sq, m.rq), abs=1e-12)
    # default PNG folders: the JSON path without .json (panopticapi's rule)
    assert evaluate_panoptic(gt_json, None, pred_json, None).pq == pytest.approx(m.pq, abs=1e-12)


def test_file_errors(tmp_path):
    g, p = _hand_case()
    gt_json, gt_dir = _write_set(tmp_path, "gt", [g, g], [1, 2], CATS)
    pred_json, pred_dir = _write_set(tmp_path, "pred", [p], [1])
    with pytest.raises(PredictionError, match="image_id 2.*no prediction"):
        evaluate_panoptic(gt_json, gt_dir, pred_json, pred_dir)
    pred_json2, pred_dir2 = _write_set(tmp_path, "pred2", [p, p, p], [1, 2, 3])
    with pytest.raises(PredictionError, match="not in the ground truth"):
        evaluate_panoptic(gt_json, gt_dir, pred_json2, pred_dir2)
    (pred_dir2 / "000002.png").unlink()
    pred = json.loads(pred_json2.read_text())
    pred["annotations"] = pred["annotations"][:2]
    pred_json2.write_text(json.dumps(pred))
    with pytest.raises(PredictionError, match="000002.png.*not found"):
        evaluate_panoptic(gt_json, gt_dir, pred_json2, pred_dir2)
    gtd = json.loads(gt_json.read_text())
    gtd["annotations"][0]["segments_info"] = gtd["annotations"][0]["segments_info"][:2]  # drop the crowd region
    gt_json.write_text(json.dumps(gtd))
    with pytest.raises(DataError, match=r"000001.png: image_id 1 \(ground truth\).*\[3\]"):
        evaluate_panoptic(gt_json, gt_dir, pred_json, pred_dir)
