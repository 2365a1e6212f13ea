"""evaluate_model: scripted ("oracle") models whose results are perturbed ground truth; the numbers
are compared with pycocotools run on the dataset's own JSON files, and with a NumPy confusion
matrix for semantic segmentation."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from pycocotools import mask as mask_utils
from torch import nn

from sceneparse.data.datasets import SceneDataset
from sceneparse.data.layout import load_split
from sceneparse.engine.evaluator import evaluate_model
from sceneparse.models.base import ModelInfo, SceneModel
from sceneparse.models.segmentation.base import SemanticSegmentor
from sceneparse.structures.instances import Instances
from sceneparse.structures.keypoints import COCO_PERSON
from sceneparse.structures.segmaps import SemanticMap


class _Oracle(SceneModel):
    """Returns prepared results in dataset order, ``len(images)`` at a time; declares the task its
    results need (the evaluator reads nothing else of a model)."""

    def __init__(self, results, masks=False, keypoints=False):
        super().__init__()
        self.results, self.i = results, 0
        types = ("bbox",) + (("segm",) if masks else ()) + (("keypoints",) if keypoints else ())
        self._info = ModelInfo("pose" if keypoints else "instance" if masks else "detect", 5, iou_types=types,
                               data="keypoints" if keypoints else "instances",
                               keypoints=COCO_PERSON if keypoints else None)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def predict(self, images):
        out = self.results[self.i:self.i + len(images)]
        self.i += len(images)
        assert [tuple(im.shape[-2:]) for im in images] == [r.image_size for r in out]
        return out


def _perturbed(ds: SceneDataset, seed: int, masks: bool, keypoints: bool):
    """Ground truth (crowds left out) with jittered boxes, a dropped object per image, a false positive
    per image, random scores; masks: the box masks instead of the shapes; keypoints: jittered."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(len(ds)):
        _, t = ds[i]
        inst = t.instances[~t.iscrowd]
        n = len(inst)
        keep = torch.ones(n, dtype=torch.bool)
        if n > 1:
            keep[torch.randint(0, n, (1,), generator=g)] = False
        inst = inst[keep]
        n = len(inst)
        h, w = inst.image_size
        boxes = inst.boxes + torch.randn(n, 4, generator=g) * 1.5
        boxes = torch.cat([boxes, torch.tensor([[1.0, 1.0, 20.0, 15.0]])]).clamp(0, min(h, w))
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = torch.cat([inst.labels, torch.zeros(1, dtype=torch.long)])
        scores = torch.rand(n + 1, generator=g)
        scores[-1] = 0.05
        fields = dict(boxes=boxes, labels=labels, scores=scores)
        if masks:
            m = torch.zeros(n + 1, h, w, dtype=torch.bool)
            b = boxes.round().long()
            for j in range(n + 1):  # test data, a handful of boxes
                m[j, b[j, 1]:b[j, 3], b[j, 0]:b[j, 2]] = True
            fields["masks"] = m
        if keypoints:
            k = inst.keypoints.shape[1]
            kp = torch.cat([inst.keypoints, torch.zeros(1, k, 3)])
            kp[..., :2] += torch.randn(n + 1, k, 2, generator=g) * 2
            fields["keypoints"] = kp
            fields["keypoint_scores"] = torch.rand(n + 1, k, generator=g)
        out.append(Instances((h, w), **fields))
    return out


def _pycocotools(gt_json, dataset, results, iou_type) -> np.ndarray:
    ids = dataset.aset.categories.ids
    dets = []
    for rec, r in zip(dataset.aset.images, results):
        for j in range(len(r)):
            d = {"image_id": int(rec.id), "category_id": int(ids[int(r.labels[j])]), "score": float(r.scores[j])}
            x0, y0, x1, y1 = r.boxes[j].tolist()
            d["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            if iou_type == "segm":
                rle = mask_utils.encode(np.asfortranarray(r.masks[j].numpy().astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                d["segmentation"] = rle
                del d["bbox"]
            if iou_type == "keypoints":
                kp = r.keypoints[j].clone()
                kp[:, 2] = r.keypoint_scores[j]
                d["keypoints"] = kp.reshape(-1).tolist()
                del d["bbox"]
            dets.append(d)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("batch_size", [1, 3])
def test_detection_metrics_equal_pycocotools(synth, batch_size):
    aset = load_split(synth, "val", "instances", things_only=True)
    ds = SceneDataset(aset, load_masks=True)
    results = _perturbed(ds, seed=1, masks=True, keypoints=False)
    report = evaluate_model(_Oracle(results, masks=True), ds, batch_size=batch_size, progress=False)
    assert report.task == "instance" and set(report.coco) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        ref = _pycocotools(synth / "annotations" / "instances_val.json", ds, results, iou_type)
        ours = np.array([report.metrics[f"{iou_type}_{n}"] for n in report.coco[iou_type].stat_names])
        np.testing.assert_allclose(ours, ref, atol=1e-12, err_msg=iou_type)
    assert 0.1 < report.metrics["bbox_AP"] < 0.95  # the perturbation makes it a real test
    assert report.metrics["segm_AP"] != report.metrics["bbox_AP"]
    assert set(report.per_class) == set(aset.categories.names)
    d = report.to_dict()
    assert d["metrics"]["bbox_AP"] == report.metrics["bbox_AP"] and "summary" not in d
    assert "Average Precision" in report.summary()


def test_keypoint_metrics_equal_pycocotools(synth):
    aset = load_split(synth, "val", "keypoints")
    assert aset.categories.names == ["person"]
    ds = SceneDataset(aset, load_keypoints=True)
    results = _perturbed(ds, seed=2, masks=False, keypoints=True)
    report = evaluate_model(_Oracle(results, keypoints=True), ds, batch_size=2, progress=False)
    assert set(report.coco) == {"bbox", "keypoints"}
    for iou_type in ("bbox", "keypoints"):
        ref = _pycocotools(synth / "annotations" / "person_keypoints_val.json", ds, results, iou_type)
        ours = np.array([report.metrics[f"{iou_type}_{n}"] for n in report.coco[iou_type].stat_names])
        np.testing.assert_allclose(ours, ref, atol=1e-12, err_msg=iou_type)


class _SemOracle(SemanticSegmentor):
    def __init__(self, maps, num_classes):
        super().__init__(num_classes)
        self.maps, self.i = maps, 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def predict(self, images):
        out = [SemanticMap(m) for m in self.maps[self.i:self.i + len(images)]]
        self.i += len(images)
        return out


def test_semantic_metrics_equal_a_numpy_confusion_matrix(synth):
    aset = load_split(synth, "val", "semantic")
    ds = SceneDataset(aset, load_semantic=True)
    c = len(aset.categories)
    g = torch.Generator().manual_seed(3)
    gts = [ds[i][1].semantic.labels for i in range(len(ds))]
    preds = []
    for gt in gts:
        p = gt.clone()
        flip = torch.rand(gt.shape, generator=g) < 0.3
        p[flip] = torch.randint(0, c, (int(flip.sum()),), generator=g)
        preds.append(p)
    report = evaluate_model(_SemOracle(preds, c), ds, batch_size=3, progress=False)
    gt_all = torch.cat([x.reshape(-1) for x in gts]).numpy()
    pr_all = torch.cat([x.reshape(-1) for x in preds]).numpy()
    valid = gt_all != 255
    cm = np.bincount(gt_all[valid] * c + pr_all[valid], minlength=c * c).reshape(c, c).astype(float)
    tp, gt_n, pr_n = np.diag(cm), cm.sum(1), cm.sum(0)
    union = gt_n + pr_n - tp
    iou = tp[union > 0] / union[union > 0]
    assert report.metrics["miou"] == pytest.approx(iou.mean(), abs=1e-12)
    assert report.metrics["pixel_acc"] == pytest.approx(tp.sum() / cm.sum(), abs=1e-12)
    assert report.metrics["mean_acc"] == pytest.approx((tp[gt_n > 0] / gt_n[gt_n > 0]).mean(), abs=1e-12)
    fw = (gt_n[gt_n > 0] / cm.sum() * tp[gt_n > 0] / union[gt_n > 0]).sum()
    assert report.metrics["fwiou"] == pytest.approx(fw, abs=1e-12)
    assert 0.5 < report.metrics["pixel_acc"] < 0.9
    name = aset.categories.names[int(np.argmax(gt_n))]
    assert report.per_class[name]["iou"] == pytest.approx(tp[np.argmax(gt_n)] / union[np.argmax(gt_n)])
