"""SSD300 (VGG-16): torchvision's state dict loads and gives torchvision's detections; default boxes,
matching and losses (hard negative mining) equal torchvision's; a few steps lower the loss."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import detection as tvd
from torchvision.models.detection._utils import SSDMatcher
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from rcnn_helpers import canonical_order, randomize
from sceneparse.errors import CheckpointError
from sceneparse.models import zoo
from sceneparse.models.one_stage.ssd import DefaultBoxes, ssd_match
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target
from test_one_stage import _structured


@torch.no_grad()
def _tv_ssd(seed: int = 0):
    torch.manual_seed(seed)
    tv = randomize(tvd.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91), seed)
    tv.backbone.scale_weight.uniform_(10.0, 30.0)
    return tv


@pytest.mark.slow  # two VGG-16 SSD300s
def test_ssd300_same_detections_as_torchvision():
    tv = _tv_ssd().eval()
    ours = zoo.build("ssd300_vgg16", weights=tv.state_dict()).eval()
    images = [_structured(480, 640, 1), _structured(750, 1000, 2)]
    with torch.no_grad():
        ref = tv(images)
    got = ours.predict(images)
    total = 0
    for r, o, im in zip(ref, got, images):
        assert o.image_size == tuple(im.shape[-2:]) and len(o) == len(r["boxes"]) > 0
        assert torch.unique(r["scores"]).numel() > 0.95 * len(o) and float(r["scores"].max()) < 0.9999
        ro = canonical_order(r["boxes"], r["scores"], r["labels"] - 1)
        go = canonical_order(o.boxes, o.scores, o.labels)
        assert torch.equal(o.labels[go], r["labels"][ro] - 1)
        torch.testing.assert_close(o.boxes[go], r["boxes"][ro], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(o.scores[go], r["scores"][ro], atol=1e-6, rtol=1e-4)
        total += len(o)
        print(f"ssd300: {len(o)} detections, max |box diff| {float((o.boxes[go] - r['boxes'][ro]).abs().max()):.2e}, "
              f"max |score diff| {float((o.scores[go] - r['scores'][ro]).abs().max()):.2e}")
    info = ours.info
    assert (info.conf, info.iou, info.max_det, info.extra["topk_candidates"]) == \
        (tv.score_thresh, tv.nms_thresh, tv.detections_per_img, tv.topk_candidates)
    assert info.size.fixed_size == (300, 300) == tuple(tv.transform.fixed_size)
    assert info.size.mean == tuple(tv.transform.image_mean) and info.size.std == tuple(tv.transform.image_std)


def test_default_boxes_equal_torchvision():
    tv = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
                             steps=[8, 16, 32, 64, 100, 300])
    ours = DefaultBoxes([[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
                        steps=[8, 16, 32, 64, 100, 300])
    sizes = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    feats = [torch.zeros(1, 1, h, w) for h, w in sizes]
    ref = tv(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]), feats)[0]
    got = torch.cat(ours((300, 300), sizes))
    assert got.shape == (8732, 4)
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    # steps None (SSDlite-style): the grid of each map spans the image
    tv2, ours2 = DefaultBoxGenerator([[2, 3]] * 3, min_ratio=0.2, max_ratio=0.95), DefaultBoxes([[2, 3]] * 3, min_ratio=0.2,
                                                                                               max_ratio=0.95)
    sizes2 = [(20, 20), (10, 10), (5, 5)]
    ref2 = tv2(ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)]), [torch.zeros(1, 1, h, w) for h, w in sizes2])[0]
    torch.testing.assert_close(torch.cat(ours2((320, 320), sizes2)), ref2, atol=0, rtol=0)


def test_ssd_matching_forces_each_ground_truths_best_box():
    g = torch.Generator().manual_seed(0)
    iou = torch.rand(4, 50, generator=g) * 0.6
    iou[2, 7] = 0.3  # box 7: best of nothing above 0.5, forced to ground truth 2 if it is 2's best
    iou[2] = iou[2] * 0.5
    iou[2, 7] = 0.31
    got = ssd_match(iou)
    torch.testing.assert_close(got, SSDMatcher(0.5)(iou.clone()))
    assert got[7] == 2 and set(got[iou.max(dim=1).indices].tolist()) == {0, 1, 2, 3}


def _as_torchvision_keys(state: dict) -> dict:
    """sceneparse SSD keys -> torchvision's (the inverse of TORCHVISION_SSD_KEY_RULES)."""
    out = {}
    for k, v in state.items():
        k = k.replace("backbone.l2norm.weight", "backbone.scale_weight")
        k = k.replace("head.cls_logits.", "head.classification_head.module_list.")
        out[k.replace("head.bbox_pred.", "head.regression_head.module_list.")] = v
    return out


def test_ssd_checkpoint_round_trip_and_misfit():
    """(torchvision's own file is compared in the slow parity test; building its VGG-16 with the
    102 M-parameter classifier it then drops takes minutes on the shared CPUs)"""
    torch.manual_seed(0)
    src = zoo.build("ssd300_vgg16")
    tv_state = _as_torchvision_keys(src.state_dict())
    assert "backbone.extra.0.7.1.weight" in tv_state and "backbone.scale_weight" in tv_state  # fc6, L2Norm
    dst = zoo.build("ssd300_vgg16", weights=tv_state)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    with pytest.raises(CheckpointError, match=r"head\.cls_logits\.0\.weight"):
        zoo.build("ssd300_vgg16", num_classes=20, weights=tv_state)
    del tv_state["backbone.scale_weight"]
    with pytest.raises(CheckpointError, match=r"backbone\.l2norm\.weight"):
        zoo.build("ssd300_vgg16", weights=tv_state)


def _scene():
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i, (h, w, n) in enumerate([(200, 260, 3), (240, 180, 2)]):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.45, h * 0.45]) + 20
        images.append(_structured(h, w, 20 + i))
        targets.append(Target(i, Instances((h, w), boxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, 90, (n,), generator=g))))
    return images, targets


@pytest.mark.slow  # VGG-16 at 300 px, forward + backward
def test_ssd300_losses_equal_torchvision_and_drop():
    tv = _tv_ssd(seed=1).train()
    ours = zoo.build("ssd300_vgg16", weights=tv.state_dict()).train()
    images, targets = _scene()
    ref = tv(images, [{"boxes": t.instances.boxes, "labels": t.instances.labels + 1} for t in targets])
    got = ours.training_losses(images, targets)
    assert set(got) == set(ref) == {"bbox_regression", "classification"}
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-6, msg=f"{k}: {got[k]} vs {ref[k]}")
        assert ref[k] > 0
    opt = torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    history = []
    for _ in range(4):
        losses = ours.training_losses(images, targets)
        total = sum(losses.values())
        history.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert history[-1] < history[0], history
