"""Equivalence with torchvision: the same random weights, loaded from torchvision's state-dict file
into sceneparse's models, give the same detections, masks and keypoints on the same images."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import detection as tvd
from torchvision.models.detection._utils import overwrite_eps
from torchvision.ops.misc import FrozenBatchNorm2d

from rcnn_helpers import build_pair, canonical_order, randomize
from sceneparse.models import zoo
from sceneparse.postprocess.detection import paste_masks

pytestmark = pytest.mark.slow  # builds ResNet-50 R-CNNs (ours and torchvision's)

ATOL = 1e-4
SMALL = dict(min_size=160, max_size=240, rpn_post_nms_top_n_test=300)


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 200, 260, generator=g), torch.rand(3, 300, 240, generator=g)]


def _compare(tv, ours, images):
    with torch.no_grad():
        ref = tv(images)
        batch, _ = ours.prepare(images)
        raw = ours(batch)
        got = ours.postprocess(raw, batch)
    assert [o.image_size for o in got] == [tuple(im.shape[-2:]) for im in images]
    total = 0
    for r, o, det in zip(ref, got, raw.detections):
        assert len(o) == len(r["boxes"])
        total += len(o)
        ro = canonical_order(r["boxes"], r["scores"], r["labels"] - 1)
        go = canonical_order(o.boxes, o.scores, o.labels)
        torch.testing.assert_close(o.boxes[go], r["boxes"][ro], atol=ATOL, rtol=0)
        torch.testing.assert_close(o.scores[go], r["scores"][ro], atol=ATOL, rtol=0)
        assert torch.equal(o.labels[go], r["labels"][ro] - 1)  # background convention: tv label 1 = ours 0
        if "masks" in r:
            ref_prob = r["masks"][ro, 0]
            prob = paste_masks(det.mask_probs[go], o.boxes[go], o.image_size)
            torch.testing.assert_close(prob, ref_prob, atol=ATOL, rtol=0)
            decided = (ref_prob - 0.5).abs() > ATOL  # pixels not within rounding of the threshold
            assert o.masks.dtype == torch.bool and o.masks.shape == ref_prob.shape
            assert torch.equal(o.masks[go][decided], (ref_prob > 0.5)[decided])
            assert o.masks.any()
        if "keypoints" in r:
            torch.testing.assert_close(o.keypoints[go], r["keypoints"][ro], atol=ATOL, rtol=0)
            torch.testing.assert_close(o.keypoint_scores[go], r["keypoints_scores"][ro], atol=ATOL, rtol=0)
    assert total > 0, "no detections: the comparison would be vacuous"


@pytest.mark.parametrize("name, tv_kwargs, cls_gain", [
    ("fasterrcnn_resnet50_fpn", dict(box_score_thresh=0.05, box_detections_per_img=30), 1.0),
    ("maskrcnn_resnet50_fpn", dict(box_score_thresh=0.05, box_detections_per_img=20), 1.0),
    ("keypointrcnn_resnet50_fpn", dict(box_score_thresh=0.05, box_detections_per_img=4), 1.0),
    ("fasterrcnn_mobilenet_v3_large_fpn", dict(box_score_thresh=0.05, box_detections_per_img=30), 100.0),
])
def test_same_outputs_as_torchvision(name, tv_kwargs, cls_gain, tmp_path):
    tv, ours = build_pair(name, tmp_path, seed=1, cls_gain=cls_gain, **SMALL, **tv_kwargs)
    _compare(tv, ours, _images())


def test_frozen_batchnorm_default_and_legacy_eps(tmp_path):
    """sceneparse's default FrozenBatchNorm against torchvision's FrozenBatchNorm2d, with ``eps = 0``
    as in torchvision's released COCO_V1 checkpoints (``bn_eps=0.0``)."""
    torch.manual_seed(2)
    backbone = tvd.backbone_utils.resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                                      norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    tv = tvd.FasterRCNN(backbone, num_classes=91, min_size=160, max_size=240, rpn_post_nms_top_n_test=300,
                        box_detections_per_img=30)
    randomize(tv, seed=2)
    overwrite_eps(tv, 0.0)
    tv.eval()
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    ours = zoo.build("fasterrcnn_resnet50_fpn", weights=path, bn_eps=0.0, min_size=160, max_size=240,
                     rpn_post_nms_top_n=(2000, 300), box_detections_per_img=30).eval()
    assert isinstance(ours.backbone.trunk.bn1, FrozenBatchNorm2d) and ours.backbone.trunk.bn1.eps == 0.0
    _compare(tv, ours, _images())
