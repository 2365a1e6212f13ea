import math

import numpy as np
import pytest
import torch

from sceneparse.errors import DataError, PredictionError
from sceneparse.evaluation.semantic import SemanticEvaluator, semantic_metrics


def _reference(preds, gts, num_classes, ignore=255):
    """Brute force in float64: per-class boolean masks over the whole concatenated dataset."""
    p = np.concatenate([x.ravel() for x in preds]).astype(np.float64)
    g = np.concatenate([x.ravel() for x in gts]).astype(np.float64)
    keep = g != ignore
    p, g = p[keep], g[keep]
    ious, accs, weights = [], [], []
    for c in range(num_classes):
        inter = float(np.sum((p == c) & (g == c)))
        union = float(np.sum((p == c) | (g == c)))
        n_gt = float(np.sum(g == c))
        ious.append(inter / union if union else math.nan)
        accs.append(inter / n_gt if n_gt else math.nan)
        weights.append(n_gt / len(g))
    ious, accs, weights = np.array(ious), np.array(accs), np.array(weights)
    present = ~np.isnan(ious)
    has_gt = ~np.isnan(accs)
    return dict(pixel_accuracy=float(np.mean(p == g)), miou=float(np.mean(ious[present])),
                mean_class_accuracy=float(np.mean(accs[has_gt])),
                fwiou=float(np.sum(weights[has_gt] * ious[has_gt])), iou=ious, acc=accs)


def test_hand_computed_example():
    # ground truth / prediction on a 2x4 image, 3 classes, one ignored pixel
    gt = np.array([[0, 0, 1, 1],
                   [0, 255, 1, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 2, 1]])
    ev = SemanticEvaluator(3)
    ev.update(pred, gt)
    r = ev.compute()
    # labelled pixels: 7. correct: (0,0),(1,0) for class 0; (0,2),(0,3),(1,3) for class 1 -> 5
    assert r.pixel_accuracy == pytest.approx(5 / 7)
    # class 0: tp 2, gt 3, pred 2 -> IoU 2/3 ; class 1: tp 3, gt 4, pred 4 -> 3/5 ; class 2: tp 0, gt 0, pred 1 -> 0
    np.testing.assert_allclose(r.iou, [2 / 3, 3 / 5, 0.0])
    assert r.miou == pytest.approx((2 / 3 + 3 / 5 + 0) / 3)
    np.testing.assert_allclose(r.class_accuracy[:2], [2 / 3, 3 / 4])
    assert np.isnan(r.class_accuracy[2])
    assert r.mean_class_accuracy == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert r.fwiou == pytest.approx(3 / 7 * 2 / 3 + 4 / 7 * 3 / 5)
    np.testing.assert_array_equal(r.confusion, [[2, 1, 0], [0, 3, 1], [0, 0, 0]])


def test_absent_class_is_excluded_from_miou_not_counted_as_zero():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 0, 1, 0]])
    ev = SemanticEvaluator(4)  # classes 2 and 3 appear nowhere
    ev.update(pred, gt)
    r = ev.compute()
    assert np.isnan(r.iou[2]) and np.isnan(r.iou[3])
    assert r.miou == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_random_dataset_matches_float64_reference(as_tensor):
    rng = np.random.default_rng(3)
    c = 6
    preds, gts = [], []
    ev = SemanticEvaluator(c, class_names=[f"c{i}" for i in range(c)])
    for i in range(7):
        h, w = rng.integers(5, 40, size=2)
        g = rng.integers(0, c - 1, size=(h, w))  # class 5 never in the GT
        g[rng.random((h, w)) < 0.1] = 255
        p = np.where(rng.random((h, w)) < 0.6, g, rng.integers(0, c, size=(h, w)))
        p = np.where(p == 255, 0, p)
        preds.append(p)
        gts.append(g)
        if as_tensor:
            ev.update(torch.from_numpy(p), torch.from_numpy(g).to(torch.uint8))
        else:
            ev.update(p.astype(np.uint8), g)
    r = ev.compute()
    ref = _reference(preds, gts, c)
    for k in ("pixel_accuracy", "miou", "mean_class_accuracy", "fwiou"):
        assert getattr(r, k) == pytest.approx(ref[k], abs=1e-12), k
    np.testing.assert_allclose(r.iou, ref["iou"], atol=1e-12)
    np.testing.assert_allclose(r.class_accuracy, ref["acc"], atol=1e-12)
    assert r.iou[5] == 0.0  # predicted, never in GT: counts as 0
    # confusion equals a 2-D histogram of the labelled pixels
    p = np.concatenate([x.ravel() for x in preds])
    g = np.concatenate([x.ravel() for x in gts])
    keep = g != 255
    hist, _, _ = np.histogram2d(g[keep], p[keep], bins=c, range=[[0, c], [0, c]])
    np.testing.assert_array_equal(r.confusion, hist.astype(np.int64))
    assert r.num_images == 7
    assert r.to_dict()["per_class"]["c5"]["iou"] == 0.0


def test_batched_update_equals_per_image_updates():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 4, size=(3, 9, 11))
    p = rng.integers(0, 4, size=(3, 9, 11))
    a, b = SemanticEvaluator(4), SemanticEvaluator(4)
    a.update(torch.from_numpy(p), torch.from_numpy(g))
    for i in range(3):
        b.update(p[i], g[i])
    np.testing.assert_array_equal(a.compute().confusion, b.compute().confusion)


def test_custom_ignore_index_and_reset():
    ev = SemanticEvaluator(2, ignore_index=-1)
    ev.update(np.array([1, 1, 0]), np.array([1, -1, 0]))
    assert ev.compute().pixel_accuracy == 1.0
    ev.reset()
    assert np.isnan(ev.compute().pixel_accuracy) and ev.compute().num_pixels == 0


def test_errors_name_the_image_and_value():
    ev = SemanticEvaluator(3)
    with pytest.raises(PredictionError, match=r"image img7.*outside 0\.\.2.*\[3\]"):
        ev.update(np.array([0, 3]), np.array([0, 1]), image="img7")
    # an out-of-range prediction on an ignored pixel is fine
    ev.update(np.array([0, 3]), np.array([0, 255]))
    with pytest.raises(DataError, match="ground truth"):
        ev.update(torch.tensor([0, 1]), torch.tensor([0, 9]))
    with pytest.raises(PredictionError, match="shape"):
        ev.update(np.zeros((2, 3)), np.zeros((3, 2)))


def test_metrics_from_confusion_matrix_directly():
    r = semantic_metrics(np.array([[5, 0], [5, 0]]))
    assert r.miou == pytest.approx((5 / 10 + 0) / 2)
    assert r.fwiou == pytest.approx(0.5 * 0.5)
    assert "mIoU" in r.summary()
