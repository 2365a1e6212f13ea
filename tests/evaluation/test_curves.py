import numpy as np
import pytest
from pycoco_reference import pycoco_eval

from sceneparse.evaluation import evaluate_coco
from sceneparse.evaluation.curves import precision_recall_curves
from sceneparse.viz.plots import plot_pr_curves, pr_figure

REC = np.linspace(0, 1, 101)


def _case():
    """Category 1: 2 objects; detections TP (.9), FP (.8), TP at IoU 0.6 only (.7).
    Category 2: 1 object, one exact detection. Category 3: no object (no curve)."""
    gt = {"images": [{"id": 1, "height": 100, "width": 100}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "eel"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "area": 100, "iscrowd": 0},
              {"id": 3, "image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "area": 100, "iscrowd": 0},
          ]}
    res = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [80, 80, 10, 10], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [52.5, 50, 10, 10], "score": 0.7},  # IoU 75/125 = 0.6
        {"image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "score": 0.5},
    ]
    return gt, res


def _pycoco(gt, res):
    return pycoco_eval(gt, res, "bbox")


@pytest.mark.parametrize("source", ["pycocotools", "sceneparse"])
def test_curves_are_the_interpolated_precision(source):
    gt, res = _case()
    result = _pycoco(gt, res) if source == "pycocotools" else evaluate_coco(gt, res, "bbox")
    curves = precision_recall_curves(result, iou=0.5)
    assert list(curves) == [1, 2, 3]
    cat = curves[1]
    assert cat.name == "cat"
    np.testing.assert_array_equal(cat.recall, REC)
    # precision 1 up to recall 0.5 (51 points), then 2/3 (TP, FP, TP) up to 1
    expect = np.where(REC <= 0.5, 1.0, 2 / 3)
    np.testing.assert_allclose(cat.precision, expect, atol=1e-12)
    assert cat.ap == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert curves[2].ap == pytest.approx(1.0) and np.isnan(curves[3].ap)
    assert np.isnan(curves[3].precision).all()
    stats = result.stats if source == "sceneparse" else result.stats
    assert np.nanmean([c.ap for c in curves.values()]) == pytest.approx(stats[1], abs=1e-12)  # AP50

    # at IoU 0.75 the 0.6-IoU detection is a false positive: recall stops at 0.5
    c75 = precision_recall_curves(result, iou=0.75)[1]
    np.testing.assert_allclose(c75.precision, np.where(REC <= 0.5, 1.0, 0.0), atol=1e-12)
    assert np.nanmean([c.ap for c in precision_recall_curves(result, iou=0.75).values()]) == \
        pytest.approx(stats[2], abs=1e-12)  # AP75

    # max_dets=1: only the best detection per image and category
    c1 = precision_recall_curves(result, iou=0.5, max_dets=1)[1]
    np.testing.assert_allclose(c1.precision, np.where(REC <= 0.5, 1.0, 0.0), atol=1e-12)


def test_unknown_settings_raise():
    gt, res = _case()
    e = _pycoco(gt, res)
    with pytest.raises(KeyError, match="IoU threshold 0.52"):
        precision_recall_curves(e, iou=0.52)
    with pytest.raises(KeyError, match="area range 'huge'"):
        precision_recall_curves(e, area="huge")
    with pytest.raises(KeyError, match="max_dets 7"):
        precision_recall_curves(e, max_dets=7)


def test_plot_writes_png_with_ap_in_legend(tmp_path):
    gt, res = _case()
    e = _pycoco(gt, res)
    curves = precision_recall_curves(e, names={2: "good dog"})
    fig = pr_figure(curves)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["good dog (AP 1.000)", f"cat (AP {curves[1].ap:.3f})",
                      f"mean (mAP {(curves[1].ap + 1) / 2:.3f})"]
    out = plot_pr_curves(e, tmp_path / "pr" / "pr50.png")
    from PIL import Image

    with Image.open(out) as im:
        arr = np.asarray(im.convert("L"))
    assert im.format == "PNG" and arr.std() > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["pr50.png"]


def test_many_classes_keep_best_and_worst():
    from sceneparse.evaluation.curves import PRCurve

    curves = {i: PRCurve(i, f"c{i}", REC, np.full(101, i / 30), i / 30) for i in range(30)}
    labels = pr_figure(curves, max_classes=4).axes[0].get_legend_handles_labels()[1]
    assert [l.split()[0] for l in labels] == ["c29", "c28", "c1", "c0", "mean"]
