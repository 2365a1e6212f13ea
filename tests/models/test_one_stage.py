"""RetinaNet and FCOS: torchvision state dicts load and give torchvision's detections; training losses
equal torchvision's on shared weights; property tests of the losses; a few SGD steps lower the loss;
checkpoints that do not fit are CheckpointErrors naming the keys; ONNX export matches predict."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models import resnet18
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from rcnn_helpers import randomize
from sceneparse.errors import CheckpointError
from sceneparse.models import zoo
from sceneparse.models.backbones import ResNetBackbone
from sceneparse.models.one_stage import FCOS, RetinaNet
from sceneparse.models.one_stage.fcos import centerness_target, decode_distances, encode_distances
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target

TV_BUILDERS = {"retinanet_resnet50_fpn": tvd.retinanet_resnet50_fpn,
               "retinanet_resnet50_fpn_v2": tvd.retinanet_resnet50_fpn_v2,
               "fcos_resnet50_fpn": tvd.fcos_resnet50_fpn}


def _structured(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth random colour field with a few flat rectangles (edges and blobs, unlike white noise)."""
    g = torch.Generator().manual_seed(seed)
    img = F.interpolate(torch.rand(1, 3, h // 48 + 2, w // 48 + 2, generator=g), size=(h, w), mode="bilinear",
                        align_corners=False)[0]
    for _ in range(6):
        x0, y0 = int(torch.randint(0, w - 40, (1,), generator=g)), int(torch.randint(0, h - 40, (1,), generator=g))
        x1 = x0 + int(torch.randint(20, max(21, w // 3), (1,), generator=g))
        y1 = y0 + int(torch.randint(20, max(21, h // 3), (1,), generator=g))
        img[:, y0:y1, x0:x1] = torch.rand(3, 1, 1, generator=g)
    return img.clamp(0, 1)


@torch.no_grad()
def _randomize_dense(model: nn.Module, seed: int, cls_gain: float = 1.0) -> nn.Module:
    """BatchNorm statistics / affine and conv biases random (:func:`randomize`), GroupNorm affine random,
    and torchvision's background column (class 0) made hopeless, so that torchvision never reports it
    (sceneparse never reports column 0; released COCO weights never score it high either).
    ``cls_gain`` scales the class logits' weights: random trunks on large structured images drive
    sigmoid scores to exactly 1.0, and exactly tied scores make the top-k / ``max_det`` cut arbitrary."""
    randomize(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    cls = model.head.classification_head
    cls.cls_logits.weight.mul_(cls_gain)
    # class biases spread over N(-2, 2): scores spread over (0, 1), so that exactly equal float32 scores
    # (which two NMS implementations may order differently) are rare among thousands of candidates
    cls.cls_logits.bias.copy_(torch.randn(cls.cls_logits.bias.shape, generator=g) * 2.0 - 2.0)
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    cls.cls_logits.bias.view(cls.num_anchors, cls.num_classes)[:, 0] = -30.0
    return model


def _tv_and_ours(name: str, tmp_path, seed: int = 0, cls_gain: float = 1.0, **kwargs):
    torch.manual_seed(seed)
    tv = _randomize_dense(TV_BUILDERS[name](weights=None, weights_backbone=None, num_classes=91, **kwargs), seed,
                          cls_gain).eval()
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    return tv, zoo.build(name, weights=path, **kwargs).eval()


def _pair(rb, rs, rl, ob, os_, ol) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one pairing of two detection lists (Hungarian on box distance, score difference and a
    large cost for differing labels): two scores within ~1e-7 of each other may sort either way in
    the two implementations, so sorting both lists and comparing by position is not enough."""
    from scipy.optimize import linear_sum_assignment

    cost = (torch.cdist(rb.double(), ob.double(), p=float("inf")) + 1e3 * (rs.double()[:, None] - os_.double()[None]).abs()
            + 1e6 * (rl[:, None] != ol[None]).double())
    ri, oi = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(ri), torch.as_tensor(oi)


def _compare(ref: list[dict], got: list[Instances], margin: float = 0.0) -> tuple[float, float]:
    """Same detections (up to the order of equal scores): returns max abs (box, score) differences.

    ``margin > 0``: only detections scoring more than ``margin`` above the lower of the two lists' last
    kept scores are compared (and must be at least 90 % of them). At 800 px the two implementations
    differ by ~1e-6 in scores and ~1e-3 px in boxes (float rounding in different kernels), which can
    swap which of two near-equal candidates makes the ``max_det`` cut, or flip an NMS decision at IoU
    within ~1e-6 of the threshold, for detections at the very bottom of the list."""
    box_err = score_err = 0.0
    total = 0
    for r, o in zip(ref, got):
        if margin > 0 and len(o) and len(r["scores"]):
            cut = float(min(r["scores"].min(), o.scores.min())) + margin
            keep_r, keep_o = r["scores"] > cut, o.scores > cut
            assert int(keep_o.sum()) >= 0.9 * len(o), "the comparison would skip too many detections"
            r = {k: v[keep_r] for k, v in r.items()}
            o = o[torch.where(keep_o)[0]]
        assert len(o) == len(r["boxes"])
        assert torch.unique(r["scores"]).numel() > 0.95 * len(o), "many exactly tied scores"
        total += len(o)
        ro, go = _pair(r["boxes"], r["scores"], r["labels"] - 1, o.boxes, o.scores, o.labels)
        assert torch.equal(o.labels[go], r["labels"][ro] - 1)  # torchvision's COCO id L = our label L - 1
        scale = max(1.0, float(r["boxes"].abs().max()))
        torch.testing.assert_close(o.boxes[go], r["boxes"][ro], atol=1e-4 * scale, rtol=1e-4)
        torch.testing.assert_close(o.scores[go], r["scores"][ro], atol=1e-5, rtol=1e-4)
        box_err = max(box_err, float((o.boxes[go] - r["boxes"][ro]).abs().max()))
        score_err = max(score_err, float((o.scores[go] - r["scores"][ro]).abs().max()))
    assert total > 0, "no detections: the comparison would be vacuous"
    return box_err, score_err


@pytest.mark.slow  # ResNet-50 detectors (ours and torchvision's) at 800 px on two real-sized images
# RetinaNet is compared at 160-320 px (test_same_detections_small_input_and_settings): at 800 px these
# random-weight RetinaNets give 300 detections of nearly equal scores (one dominant class column), and
# scores that differ by ~1e-6 between the two implementations changed 6 of 271 compared boxes (NMS
# order among near-ties); see the issue note.
@pytest.mark.parametrize("name, cls_gain, margin", [("fcos_resnet50_fpn", 0.1, 0.0)])
def test_same_detections_as_torchvision_real_sized(name, cls_gain, margin, tmp_path):
    tv, ours = _tv_and_ours(name, tmp_path, cls_gain=cls_gain)
    images = [_structured(480, 640, 1), _structured(750, 1000, 2)]
    with torch.no_grad():
        ref = tv(images)
    assert all(float(r["scores"].max()) < 0.9999 for r in ref), "saturated scores: ties would make the cut arbitrary"
    got = ours.predict(images)  # sceneparse's defaults = torchvision's (test_defaults_equal_torchvision)
    assert [o.image_size for o in got] == [(480, 640), (750, 1000)]
    box_err, score_err = _compare(ref, got, margin=margin)
    print(f"{name}: {sum(len(o) for o in got)} detections, max |box diff| {box_err:.2e}, "
          f"max |score diff| {score_err:.2e}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_same_detections_small_input_and_settings(name, tmp_path):
    """The same at 160 px with non-default settings given to predict (conf / iou / max_det)."""
    kw = dict(min_size=160, max_size=224)
    tv, ours = _tv_and_ours(name, tmp_path, seed=3, score_thresh=0.3, nms_thresh=0.4, detections_per_img=40, **kw)
    ours = zoo.build(name, weights=tmp_path / f"{name}.pth", **kw).eval()  # defaults; settings at predict
    images = [_structured(150, 200, 4), _structured(230, 170, 5)]
    with torch.no_grad():
        ref = tv(images)
    _compare(ref, ours.predict(images, conf=0.3, iou=0.4, max_det=40))


def test_defaults_equal_torchvision():
    for name, builder in TV_BUILDERS.items():
        tv = builder(weights=None, weights_backbone=None)
        info = zoo.build(name).info
        assert (info.conf, info.iou, info.max_det) == (tv.score_thresh, tv.nms_thresh, tv.detections_per_img), name
        assert info.extra["topk_candidates"] == tv.topk_candidates
        assert info.size.min_size == tuple(tv.transform.min_size) and info.size.max_size == tv.transform.max_size
        assert info.size.mean == tuple(tv.transform.image_mean) and info.size.std == tuple(tv.transform.image_std)
        assert info.size.size_divisible == tv.transform.size_divisible
        assert info.num_classes == 90 and info.task == "detect" and info.iou_types == ("bbox",)


def test_legacy_retinanet_head_keys_load(tmp_path):
    """The released ``retinanet_resnet50_fpn_coco`` file has the version-1 head layout ``conv.<2i>``."""
    torch.manual_seed(0)
    state = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5).state_dict()
    legacy = {}
    for k, v in state.items():
        for branch in ("classification_head", "regression_head"):
            prefix = f"head.{branch}.conv."
            if k.startswith(prefix):
                i, rest = k[len(prefix):].split(".", 1)
                k = f"{prefix}{2 * int(i)}.{rest[2:]}"  # conv.<i>.0.weight -> conv.<2i>.weight
        legacy[k] = v
    assert "head.classification_head.conv.6.bias" in legacy
    ours = zoo.build("retinanet_resnet50_fpn", num_classes=4, weights=legacy)
    torch.testing.assert_close(ours.head.cls_subnet[3].conv.bias, state["head.classification_head.conv.3.0.bias"])


def test_checkpoint_that_does_not_fit_names_keys():
    torch.manual_seed(0)
    state = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()
    with pytest.raises(CheckpointError) as e:
        zoo.build("retinanet_resnet50_fpn", num_classes=3, weights=state)
    assert "head.cls_logits.weight" in str(e.value) and "(819, 256, 3, 3)" in str(e.value)
    del state["head.regression_head.bbox_reg.bias"]
    with pytest.raises(CheckpointError, match=r"head\.bbox_pred\.bias"):
        zoo.build("retinanet_resnet50_fpn", weights=state)
    with pytest.raises(CheckpointError, match="neck.p6.weight"):  # v1 file into v2: P6 takes C5 (2048 ch)
        zoo.build("retinanet_resnet50_fpn_v2", weights=tvd.retinanet_resnet50_fpn(
            weights=None, weights_backbone=None).state_dict())


# ---- training ------------------------------------------------------------------------------------

SIZES = dict(min_size=96, max_size=128)


def _scene(num_classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i, (h, w, n) in enumerate([(100, 126, 3), (112, 86, 2)]):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.45, h * 0.45]) + 10
        images.append(_structured(h, w, seed * 10 + i))
        targets.append(Target(i, Instances((h, w), boxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, num_classes, (n,), generator=g))))
    return images, targets


def _tv_small(kind: str):
    """torchvision RetinaNet (v1 / v2 head) or FCOS on a ResNet-18 FPN (64 channels) with BatchNorm, 3 + 1 classes."""
    torch.manual_seed(5)
    extra = LastLevelP6P7(512, 64) if kind == "retinanet_v2" else LastLevelP6P7(64, 64)
    backbone = BackboneWithFPN(resnet18(weights=None, norm_layer=nn.BatchNorm2d),
                               {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512], 64, extra_blocks=extra)
    if kind == "fcos":
        return tvd.FCOS(backbone, 4, **SIZES)
    if kind == "retinanet_v2":
        head = RetinaNetHead(64, 9, 4, norm_layer=partial(nn.GroupNorm, 32))
        head.regression_head._loss_type = "giou"
        return tvd.RetinaNet(backbone, 4, head=head, **SIZES)
    return tvd.RetinaNet(backbone, 4, **SIZES)


def _ours_small(kind: str):
    backbone = ResNetBackbone(18, norm="bn", trainable_layers=5, returned_stages=(2, 3, 4))
    if kind == "fcos":
        return FCOS(backbone, 3, fpn_channels=64, **SIZES)
    if kind == "retinanet_v2":
        return RetinaNet(backbone, 3, fpn_channels=64, fpn_extra="p6p7_c5", head_norm_groups=32, head_conv_bias=False,
                         box_loss="giou", **SIZES)
    return RetinaNet(backbone, 3, fpn_channels=64, **SIZES)


@pytest.mark.parametrize("kind", ["retinanet", "retinanet_v2", "fcos"])
def test_losses_equal_torchvision(kind):
    tv = _randomize_dense(_tv_small(kind), seed=6).train()
    ours = _ours_small(kind)
    zoo.load_torchvision_checkpoint(ours, tv.state_dict())
    ours.train()
    images, targets = _scene()
    ref = tv(images, [{"boxes": t.instances.boxes, "labels": t.instances.labels + 1} for t in targets])
    got = ours.training_losses(images, targets)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-6, msg=f"{k}: {got[k]} vs {ref[k]}")
        assert ref[k] > 0
    sum(got.values()).backward()
    assert ours.head.cls_logits.weight.grad.abs().sum() > 0 and ours.backbone.trunk.conv1.weight.grad is not None


@pytest.mark.parametrize("kind", ["retinanet", "fcos"])
def test_empty_and_single_targets(kind):
    torch.manual_seed(0)
    model = _ours_small(kind).train()
    images, targets = _scene()
    empty = [Target(t.image_id, Instances(t.instances.image_size, boxes=torch.zeros(0, 4),
                                          labels=torch.zeros(0, dtype=torch.int64))) for t in targets]
    losses = model.training_losses(images, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["classification"] > 0 and losses["bbox_regression"] == 0
    sum(losses.values()).backward()
    one = [t.select(torch.tensor([0])) for t in targets]
    losses = model.training_losses(images, one)
    assert all(v > 0 for v in losses.values()), losses


def test_fcos_box_coding_and_centerness():
    points = torch.tensor([[46.0, 26.0, 54.0, 34.0], [0.0, 0.0, 16.0, 16.0]])  # centres (50, 30), (8, 8)
    boxes = torch.tensor([[40.0, 20.0, 70.0, 36.0], [2.0, 4.0, 10.0, 20.0]])
    d = encode_distances(points, boxes)
    torch.testing.assert_close(d[0], torch.tensor([10.0, 10.0, 20.0, 6.0]) / 8)
    torch.testing.assert_close(decode_distances(d, points), boxes)
    torch.testing.assert_close(centerness_target(d)[0], torch.tensor(math.sqrt(10 / 20 * 6 / 10)))


def test_fcos_assignment_rules():
    model = FCOS(ResNetBackbone(18, norm="bn", returned_stages=(2, 3, 4)), 2, fpn_channels=64,
                 head_norm_groups=16, **SIZES)
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    refs = torch.cat(model.anchor_generator.grid_anchors(sizes, [(8, 8), (16, 16), (32, 32), (64, 64), (64, 64)]))
    per_level = [h * w for h, w in sizes]
    big = torch.tensor([[0.0, 0.0, 60.0, 60.0]])  # max distance from inner points < 64: level P3 only
    small = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    m = model.assign(torch.cat([big, small]), refs, per_level)
    centres = (refs[:, :2] + refs[:, 2:]) / 2
    # P3 points within 1.5 strides (12 px) of the big box's centre (30, 30), strictly inside
    near_big = ((centres - 30).abs().max(dim=1).values < 12) & (torch.arange(len(refs)) < 64)
    # a point inside both boxes takes the smaller one (smallest area wins)
    inside_small = ((centres > 20) & (centres < 30)).all(dim=1) & (torch.arange(len(refs)) < 64)
    assert inside_small.any()
    assert (m[inside_small] == 1).all()
    assert (m[near_big & ~inside_small] == 0).all() and (m[64:] == -1).all()
    assert (m[~near_big & ~inside_small] == -1).all()


@pytest.mark.slow  # ~10 s per step on the shared 2-core machine
@pytest.mark.parametrize("name", ["retinanet_resnet18_fpn", "fcos_resnet18_fpn"])
def test_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3, fpn_channels=64, **SIZES).train()
    images, targets = _scene(seed=1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(5):
        losses = model.training_losses(images, targets)
        total = sum(losses.values())
        history.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert history[-1] < 0.9 * history[0], history


# ---- export --------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["retinanet_resnet18_fpn", "fcos_resnet18_fpn"])
def test_onnx_export_matches_predict(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from sceneparse.engine.export import export_onnx

    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3, min_size=64, max_size=96, score_thresh=0.3).eval()
    with torch.no_grad():  # class biases spread out, so that some but not all candidates pass 0.3
        model.head.cls_logits.bias.copy_(torch.randn(model.head.cls_logits.bias.shape) * 1.5 - 1.0)
    out = tmp_path / f"{name}.onnx"
    report = export_onnx(model, out, imgsz=(64, 80), name=name)
    assert report.verified and all(c.ok for c in report.cases) and report.checker == "passed"
    assert all(c.detections[0] > 0 for c in report.cases), "verification compared no detections"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    counts = []
    for h, w in [(64, 80), (90, 50), (120, 100)]:
        image = _structured(h, w, h)
        inst = model.predict([image])[0]
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image.numpy()})))
        counts.append(len(inst))
        assert got["boxes"].shape == (len(inst), 4)
        order = np.lexsort((got["boxes"][:, 0], got["labels"], -got["scores"]))
        ref = np.lexsort((inst.boxes[:, 0].numpy(), inst.labels.numpy(), -inst.scores.numpy()))
        np.testing.assert_array_equal(got["labels"][order], inst.labels.numpy()[ref])
        np.testing.assert_allclose(got["boxes"][order], inst.boxes.numpy()[ref], atol=1e-3, rtol=0)
        np.testing.assert_allclose(got["scores"][order], inst.scores.numpy()[ref], atol=1e-5, rtol=0)
    # (every image here reached max_det = 100 detections: the dynamic detection count is exercised by the
    # exporter's own verification at two sizes, not by this loop)
    assert min(counts) > 0, counts
