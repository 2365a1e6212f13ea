"""Training: losses equal torchvision's on shared weights (deterministic sampling), property tests of
the losses (empty / one target), typed errors for bad targets, and one SGD step lowering the loss."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from rcnn_helpers import randomize
from sceneparse.errors import DataError
from sceneparse.models import zoo
from sceneparse.models.detectors.rcnn import TORCHVISION_RCNN_KEY_RULES
from sceneparse.models.backbones import ResNetBackbone
from sceneparse.models.detectors import KeypointRCNN, MaskRCNN
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target

# Batch sizes larger than the number of anchors / RoIs: every candidate is sampled, so the sampled
# sets (hence the losses) do not depend on the random draws and can be compared with torchvision.
ALL_SAMPLED = dict(rpn_batch_size_per_image=10**7, box_batch_size_per_image=10**6, box_positive_fraction=0.5)
SIZES = dict(min_size=128, max_size=192)


def _scene(num_classes: int, num_keypoints: int = 0, seed: int = 0):
    """Two images with 3 and 2 objects (boxes, labels 0..C-1, masks inside the boxes, keypoints)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i, (h, w, n) in enumerate([(150, 190, 3), (170, 130, 2)]):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 12
        boxes = torch.cat([xy, xy + wh], 1)
        ys, xs = torch.arange(h)[:, None] + 0.5, torch.arange(w)[None, :] + 0.5
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        rx, ry = (boxes[:, 2] - boxes[:, 0]) / 2, (boxes[:, 3] - boxes[:, 1]) / 2
        masks = ((xs - cx[:, None, None]) / rx[:, None, None]) ** 2 + ((ys - cy[:, None, None]) / ry[:, None, None]) ** 2 < 1
        kw = {}
        if num_keypoints:
            u = torch.rand(n, num_keypoints, 2, generator=g)
            kp = torch.stack([boxes[:, None, 0] + u[..., 0] * (boxes[:, None, 2] - boxes[:, None, 0]),
                              boxes[:, None, 1] + u[..., 1] * (boxes[:, None, 3] - boxes[:, None, 1]),
                              torch.full((n, num_keypoints), 2.0)], dim=2)
            kp[0, 0, 2] = 0  # one unlabeled keypoint
            kw["keypoints"] = kp
        labels = torch.randint(0, num_classes, (n,), generator=g)
        images.append(torch.rand(3, h, w, generator=g))
        targets.append(Target(i, Instances((h, w), boxes=boxes, labels=labels, masks=masks, **kw)))
    return images, targets


def _tv_targets(targets):
    out = []
    for t in targets:
        d = {"boxes": t.instances.boxes, "labels": t.instances.labels + 1, "masks": t.instances.masks.to(torch.uint8)}
        if t.instances.keypoints is not None:
            d["keypoints"] = t.instances.keypoints
        out.append(d)
    return out


def _pair(kind: str):
    """Small torchvision and sceneparse models (ResNet-18 FPN, slim heads) with the same random weights."""
    torch.manual_seed(3)
    backbone = tvd.backbone_utils.resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                                      norm_layer=nn.BatchNorm2d, trainable_layers=5)
    common = dict(**SIZES, **ALL_SAMPLED, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=80)
    ours_common = dict(**SIZES, **ALL_SAMPLED, rpn_pre_nms_top_n=(300, 1000), rpn_post_nms_top_n=(80, 1000))
    if kind == "mask":
        tv = tvd.MaskRCNN(backbone, num_classes=None, box_predictor=FastRCNNPredictor(1024, 4),
                          mask_head=MaskRCNNHeads(256, (32, 32), 1),
                          mask_predictor=MaskRCNNPredictor(32, 32, 4), **common)
        ours = MaskRCNN(ResNetBackbone(18, norm="bn", trainable_layers=5), 3, mask_conv_channels=(32, 32),
                        **ours_common)
    else:
        tv = tvd.KeypointRCNN(backbone, num_classes=2, num_keypoints=None, keypoint_head=KeypointRCNNHeads(256, (32, 32)),
                              keypoint_predictor=KeypointRCNNPredictor(32, 5), **common)
        ours = KeypointRCNN(ResNetBackbone(18, norm="bn", trainable_layers=5), 1, num_keypoints=5,
                            keypoint_conv_channels=(32, 32), **ours_common)
    randomize(tv, seed=3)
    zoo.load_torchvision_checkpoint(ours, tv.state_dict())
    return tv.train(), ours.train()


@pytest.mark.parametrize("kind", ["mask", "keypoint"])
def test_losses_and_gradients_equal_torchvision(kind):
    tv, ours = _pair(kind)
    images, targets = _scene(3 if kind == "mask" else 1, 5 if kind == "keypoint" else 0)
    ref = tv(images, _tv_targets(targets))
    got = ours.training_losses(images, targets)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-6, msg=f"{k}: {got[k]} vs {ref[k]}")
        assert ref[k] > 0
    sum(ref.values()).backward()
    sum(got.values()).backward()
    ours_params = dict(ours.named_parameters())
    rules = [(re.compile(p), f) for p, f in TORCHVISION_RCNN_KEY_RULES]
    compared = 0
    for name, p in tv.named_parameters():
        mine = next(f(m) for r, f in rules if (m := r.match(name)))
        assert (p.grad is None) == (ours_params[mine].grad is None), name
        if p.grad is not None:  # relative error of the whole gradient (elementwise is noise near 0)
            err = float((ours_params[mine].grad - p.grad).norm() / p.grad.norm().clamp(min=1e-12))
            assert err < 1e-4, (name, err)
            compared += 1
    assert compared == len(ours_params)


SMALL_MODELS = [("fasterrcnn_resnet18_fpn", dict(num_classes=3)), ("maskrcnn_resnet18_fpn", dict(num_classes=3)),
                ("keypointrcnn_resnet18_fpn", dict(num_keypoints=5))]
EXPECTED_LOSSES = {
    "fasterrcnn_resnet18_fpn": {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"},
    "maskrcnn_resnet18_fpn": {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"},
    "keypointrcnn_resnet18_fpn": {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                                  "loss_keypoint"},
}


def _small(name, kw):
    return zoo.build(name, min_size=96, max_size=160, **kw).train()


@pytest.mark.parametrize("name, kw", SMALL_MODELS)
def test_losses_finite_for_empty_targets_and_positive_for_one_target(name, kw):
    model = _small(name, kw)
    nk = kw.get("num_keypoints", 0)
    images, targets = _scene(kw.get("num_classes", 1), nk)
    empty = [t.select(torch.zeros(len(t.instances), dtype=torch.bool)) for t in targets]
    losses = model.training_losses(images, empty)
    assert set(losses) == EXPECTED_LOSSES[name]
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_rpn_box_reg"] == 0 and losses["loss_box_reg"] == 0  # no positives to regress
    sum(losses.values()).backward()  # the graph is intact even without positives
    one = [t.select(torch.tensor([True] + [False] * (len(t.instances) - 1))) for t in targets]
    losses = model.training_losses(images, one)
    assert all(v > 0 and torch.isfinite(v) for v in losses.values()), losses


@pytest.mark.slow
@pytest.mark.parametrize("name, kw", SMALL_MODELS)
def test_one_sgd_step_lowers_the_loss(name, kw):
    model = _small(name, kw)
    images, targets = _scene(kw.get("num_classes", 1), kw.get("num_keypoints", 0), seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.005)

    def total():
        torch.manual_seed(7)  # same proposal/anchor sampling before and after the step
        return sum(model.training_losses(images, targets).values())

    model.eval()  # BatchNorm with fixed statistics: the loss is a function of the weights only
    before = total()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = total()
    assert after < before * 0.999, (float(before), float(after))


def test_bad_targets_raise_typed_errors():
    model = _small("maskrcnn_resnet18_fpn", dict(num_classes=3))
    images, targets = _scene(3)
    batch, moved = model.prepare(images, targets)
    with pytest.raises(DataError, match="batch frame"):
        model(batch, targets)  # original-pixel targets with a resized batch
    bad = moved[1].instances.boxes.clone()
    bad[1, 2] = bad[1, 0]  # zero width
    broken = [moved[0], Target(moved[1].image_id, Instances(moved[1].image_size, boxes=bad,
                                                             labels=moved[1].instances.labels,
                                                             masks=moved[1].instances.masks), file_name="b.jpg")]
    with pytest.raises(DataError, match=r"b\.jpg: image 1: boxes\[1\]: box must have positive width"):
        model(batch, broken)
    no_masks = [Target(t.image_id, Instances(t.image_size, boxes=t.instances.boxes, labels=t.instances.labels))
                for t in moved]
    with pytest.raises(DataError, match="masks"):
        model(batch, no_masks)
    wrong_label = [Target(t.image_id, Instances(t.image_size, boxes=t.instances.boxes, masks=t.instances.masks,
                                                labels=t.instances.labels + 3)) for t in moved]
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.2"):
        model(batch, wrong_label)
    with pytest.raises(ValueError, match="needs targets"):
        model(batch)
    model.eval()
    with pytest.raises(ValueError, match="no training RoIs"):
        model.loss(model(batch), moved)


def test_crowd_objects_are_left_out_of_training():
    model = _small("fasterrcnn_resnet18_fpn", dict(num_classes=3))
    images, targets = _scene(3)
    crowd = [Target(t.image_id, t.instances, iscrowd=torch.tensor([False] + [True] * (len(t.instances) - 1)))
             for t in targets]
    first = [t.select(torch.tensor([True] + [False] * (len(t.instances) - 1))) for t in targets]
    torch.manual_seed(5)
    a = model.training_losses(images, crowd)
    torch.manual_seed(5)
    b = model.training_losses(images, first)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


@pytest.mark.parametrize("name, kw", SMALL_MODELS)
def test_predict_returns_instances_in_original_pixels(name, kw):
    model = _small(name, kw)  # training mode: predict() must switch to eval and back
    images, _ = _scene(kw.get("num_classes", 1), kw.get("num_keypoints", 0))
    model.roi_box.score_thresh = 0.0  # untrained: keep low-confidence detections
    out = model.predict(images)
    assert model.training and len(out) == 2
    for inst, im in zip(out, images):
        h, w = im.shape[-2:]
        assert inst.image_size == (h, w) and len(inst) > 0 and not inst.scores.requires_grad
        assert (inst.boxes[:, 0::2] <= w + 1e-4).all() and (inst.boxes[:, 1::2] <= h + 1e-4).all()
        assert (inst.boxes >= 0).all() and (inst.scores[:-1] >= inst.scores[1:]).all()
        assert inst.labels.min() >= 0 and inst.labels.max() < model.num_classes
        if name.startswith("mask"):
            assert inst.masks.dtype == torch.bool and inst.masks.shape == (len(inst), h, w)
            # a pasted mask lies within its (integer-enlarged) box
            ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
            b = inst.boxes
            outside = (xs < b[:, 0, None, None].floor() - 2) | (xs > b[:, 2, None, None].ceil() + 2) | \
                      (ys < b[:, 1, None, None].floor() - 2) | (ys > b[:, 3, None, None].ceil() + 2)
            assert not (inst.masks & outside).any()
        if name.startswith("keypoint"):
            assert inst.keypoints.shape == (len(inst), 5, 3) and inst.keypoint_scores.shape == (len(inst), 5)
            kx, ky = inst.keypoints[..., 0], inst.keypoints[..., 1]
            assert ((kx >= inst.boxes[:, :1] - 1e-3) & (kx <= inst.boxes[:, 2:3] + 1e-3)).all()
            assert ((ky >= inst.boxes[:, 1:2] - 1e-3) & (ky <= inst.boxes[:, 3:4] + 1e-3)).all()
    model.roi_box.score_thresh = 1.0  # nothing passes: empty results keep their shapes
    empty = model.predict(images[:1])[0]
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    if name.startswith("mask"):
        assert empty.masks.shape == (0, *images[0].shape[-2:])
    if name.startswith("keypoint"):
        assert empty.keypoints.shape == (0, 5, 3)


@pytest.mark.slow
def test_bfloat16_autocast_keeps_box_targets_in_float32():
    """Regression: anchors took the features' dtype, so under CPU bfloat16 autocast the boxes matched to
    them were cast to bfloat16 too; a 1 px wide box at x = 319 rounded to width 0 and its RPN
    regression target to -inf (a diverged run). Box coordinates now stay float32."""
    torch.manual_seed(0)
    model = zoo.build("fasterrcnn_resnet18_fpn", num_classes=3).train()
    boxes = torch.tensor([[319.0, 213.0, 320.0, 238.0], [40.0, 50.0, 140.0, 170.0]])
    target = Target(1, Instances((320, 320), boxes=boxes, labels=torch.tensor([0, 1])))
    image = torch.rand(3, 320, 320)
    out = {}
    for bf16 in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out[bf16] = {k: float(v.detach()) for k, v in model.training_losses([image], [target]).items()}
    assert all(torch.isfinite(torch.tensor(v)) for v in out[True].values()), out[True]
    # same sampled anchors and targets: the RPN losses differ only by bfloat16 activations
    for k in ("loss_objectness", "loss_rpn_box_reg"):
        assert abs(out[True][k] - out[False][k]) <= 0.05 * abs(out[False][k]) + 1e-3, (k, out)
