"""R-CNN building blocks against torchvision: FPN, backbones (outputs and frozen layers), RPN
proposals, and mask pasting."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet18, resnet34
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from rcnn_helpers import randomize
from sceneparse.models.backbones import MobileNetV3Backbone, ResNetBackbone
from sceneparse.models.heads.rpn import RegionProposalNetwork
from sceneparse.models.necks import FPN
from sceneparse.postprocess.detection import paste_masks


@pytest.mark.parametrize("extra", ["maxpool", "p6p7", "p6p7_c5"])
def test_fpn_equals_torchvision(extra):
    chans = [16, 32, 64]
    blocks = {"maxpool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(8, 8), "p6p7_c5": LastLevelP6P7(64, 8)}
    tv = FeaturePyramidNetwork(chans, 8, extra_blocks=blocks[extra])
    ours = FPN(chans, 8, extra)
    sd = {}
    for k, v in tv.state_dict().items():
        k = k.replace("inner_blocks", "lateral").replace("layer_blocks", "output").replace(".0.", ".")
        sd[k.replace("extra_blocks.", "")] = torch.randn_like(v)  # random biases too
    ours.load_state_dict(sd)
    tv.load_state_dict({k2: sd[k1] for k1, k2 in zip(sd, tv.state_dict())})
    feats = [torch.randn(2, c, 33 // 2**i + 1, 41 // 2**i + 1) for i, c in enumerate(chans)]  # odd sizes
    ref = list(tv({str(i): f for i, f in enumerate(feats)}).values())
    got = ours(feats)
    assert len(got) == len(ref) == ours.num_levels
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depth, tv_fn", [(18, resnet18), (34, resnet34)])
def test_resnet_backbone_equals_torchvision_body(depth, tv_fn):
    torch.manual_seed(0)
    tv = _resnet_fpn_extractor(tv_fn(weights=None), 5).body
    randomize(tv, seed=0)
    ours = ResNetBackbone(depth, norm="bn", trainable_layers=5)
    ours.trunk.load_state_dict(tv.state_dict())
    tv.eval(), ours.eval()
    x = torch.randn(1, 3, 96, 80)
    ref = list(tv(x).values())
    got = ours(x)
    assert ours.out_channels == [r.shape[1] for r in ref] and ours.strides == [4, 8, 16, 32]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    assert [o.shape[1] for o in ResNetBackbone(depth, returned_stages=(2, 4))(x)] == ours.out_channels[1::2]


@pytest.mark.parametrize("layers", [0, 1, 3, 5])
def test_resnet_trainable_layers_freeze_like_torchvision(layers):
    tv = _resnet_fpn_extractor(resnet18(weights=None, norm_layer=FrozenBatchNorm2d), layers).body
    ours = ResNetBackbone(18, trainable_layers=layers)
    want = {k for k, p in tv.named_parameters() if p.requires_grad}
    assert {k.removeprefix("trunk.") for k, p in ours.named_parameters() if p.requires_grad} == want
    assert ours.trunk.bn1.__class__.__name__ == "FrozenBatchNorm2d"  # default: no batch statistics
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())


@pytest.mark.parametrize("layers", [0, 3, 6])
def test_mobilenet_backbone_equals_torchvision_body(layers):
    torch.manual_seed(0)
    tv = _mobilenet_extractor(mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d), True, layers).body
    randomize(tv, seed=1)
    ours = MobileNetV3Backbone(norm="bn", trainable_layers=layers)
    ours.trunk.load_state_dict(tv.state_dict(), strict=False)  # tv's body stops after its last returned block
    assert {k.removeprefix("trunk.") for k, p in ours.named_parameters() if p.requires_grad} == \
           {k for k, p in tv.named_parameters() if p.requires_grad}
    tv.eval(), ours.eval()
    x = torch.randn(1, 3, 128, 96)
    ref = list(tv(x).values())
    got = ours(x)
    assert ours.out_channels == [160, 960] and ours.strides == [32, 32]  # both after the last strided block
    for a, b in zip(got, ref):
        assert a.shape[1:] == (b.shape[1], 128 // 32, 96 // 32)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("training", [False, True])
def test_rpn_proposals_equal_torchvision(training):
    sizes, ratios = ((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3
    torch.manual_seed(0)
    tv = TVRPN(TVAnchorGenerator(sizes, ratios), TVRPNHead(8, 3), 0.7, 0.3, 256, 0.5,
               dict(training=150, testing=60), dict(training=100, testing=40), 0.7, score_thresh=0.2)
    ours = RegionProposalNetwork(8, sizes, ratios, pre_nms_top_n=(150, 60), post_nms_top_n=(100, 40), score_thresh=0.2)
    with torch.no_grad():
        for p in tv.head.parameters():
            p.normal_(0, 0.3)
    ours.head.load_state_dict({"conv.weight": tv.head.conv[0][0].weight, "conv.bias": tv.head.conv[0][0].bias,
                               "objectness.weight": tv.head.cls_logits.weight, "objectness.bias": tv.head.cls_logits.bias,
                               "deltas.weight": tv.head.bbox_pred.weight, "deltas.bias": tv.head.bbox_pred.bias})
    tv.train(training), ours.train(training)
    feats = [torch.randn(2, 8, 96 // s, 128 // s) for s in (8, 16, 32)]
    image_sizes = [(90, 128), (96, 100)]
    with torch.no_grad():
        gt = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]])}] * 2  # torchvision's RPN insists in training
        ref, _ = tv(ImageList(torch.zeros(2, 3, 96, 128), image_sizes), {str(i): f for i, f in enumerate(feats)},
                    gt if training else None)
        out = ours(feats, (96, 128), image_sizes)
    assert sum(out.num_anchors_per_level) == out.anchors.shape[0] == out.objectness.shape[1] == 3 * (12 * 16 + 6 * 8 + 3 * 4)
    for a, b in zip(out.proposals, ref):
        assert 0 < len(a) <= (100 if training else 40)
        torch.testing.assert_close(a, b)
    assert all((s >= 0.2).all() and (s[:-1] >= s[1:]).all() for s in out.scores)  # best first, thresholded


def test_rpn_proposals_per_image_on_threads_equal_the_serial_loop(monkeypatch):
    """The images' NMS runs on the thread pool when there are intra-op threads to spare; the
    proposals are those of the one-thread loop, image by image."""
    import sceneparse.models.heads.rpn as rpn_mod

    torch.manual_seed(1)
    rpn = RegionProposalNetwork(8, ((16,), (32,)), ((0.5, 1.0, 2.0),) * 2, pre_nms_top_n=(200, 100),
                                post_nms_top_n=(80, 50)).eval()
    feats = [torch.randn(3, 8, 64 // s, 64 // s) for s in (4, 8)]
    sizes = [(64, 64), (60, 50), (64, 40)]
    threads = torch.get_num_threads()
    used = []
    real = rpn_mod.cpu_workers
    monkeypatch.setattr(rpn_mod, "cpu_workers", lambda *a: used.append(real(*a)) or used[-1])
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            serial = rpn(feats, (64, 64), sizes)
        torch.set_num_threads(2)
        with torch.no_grad():
            threaded = rpn(feats, (64, 64), sizes)
    finally:
        torch.set_num_threads(threads)
    assert used == [1, 2]
    for a, b, sa, sb in zip(serial.proposals, threaded.proposals, serial.scores, threaded.scores):
        assert len(a) > 0 and torch.equal(a, b) and torch.equal(sa, sb)


def test_paste_masks_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    h, w = 97, 131
    n = 40
    masks = torch.rand(n, 28, 28, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.1, h * 1.1]) - 5
    wh = torch.rand(n, 2, generator=g) * 80
    wh[:6] *= 0.02  # sub-pixel boxes
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)  # detections are clipped to the image
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    boxes[-1] = torch.tensor([0.0, 0.0, w, h])  # the whole image
    ref = paste_masks_in_image(masks[:, None], boxes, (h, w))[:, 0]
    got = paste_masks(masks, boxes, (h, w), chunk=7)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert (ref > 0).any(dim=(1, 2)).sum() > n - 6
    binary = paste_masks(masks, boxes, (h, w), threshold=0.5, chunk=16)
    decided = (ref - 0.5).abs() > 1e-5
    assert binary.dtype == torch.bool and torch.equal(binary[decided], (ref > 0.5)[decided])
    assert paste_masks(masks[:0], boxes[:0], (h, w)).shape == (0, h, w)


def _grid_sample_paste(masks, boxes, h, w):
    """detectron2's paste: every pixel centre samples the mask spanning the float box (zero outside)."""
    n = masks.shape[0]
    ys, xs = torch.arange(h) + 0.5, torch.arange(w) + 0.5
    gy = (ys[None] - boxes[:, 1, None]) / (boxes[:, 3] - boxes[:, 1])[:, None] * 2 - 1
    gx = (xs[None] - boxes[:, 0, None]) / (boxes[:, 2] - boxes[:, 0])[:, None] * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3)
    return torch.nn.functional.grid_sample(masks[:, None], grid, align_corners=False)[:, 0]


def test_aligned_paste_equals_grid_sample_on_float_boxes():
    g = torch.Generator().manual_seed(1)
    h, w, n = 61, 83, 50
    masks = torch.rand(n, 28, 28, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w + 20.0, h + 20.0]) - 10  # some across the border
    wh = torch.rand(n, 2, generator=g) * 40 + 0.25
    boxes = torch.cat([xy, xy + wh], 1)
    ref = _grid_sample_paste(masks, boxes, h, w)
    got = paste_masks(masks, boxes, (h, w), chunk=7, aligned=True)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert (ref > 0).any(dim=(1, 2)).sum() > n // 2
    # graph export pastes every mask over the whole image: the same numbers
    traced = torch.jit.trace(lambda m, b: paste_masks(m, b, (h, w), aligned=True), (masks, boxes), check_trace=False)
    torch.testing.assert_close(traced(masks, boxes), ref, atol=1e-5, rtol=0)
    # and it is not torchvision's convention
    assert (paste_masks(masks, boxes, (h, w)) - ref).abs().max() > 0.1


@pytest.mark.parametrize("aligned, low, high", [(True, 0.96, 1.0), (False, 0.70, 0.92)])
def test_mask_target_and_paste_round_trip(aligned, low, high):
    """Ground-truth masks of small objects through the head's training target (28x28) and back through
    the paste of the same convention: the aligned pair keeps them (mean IoU > 0.96); torchvision's
    (unaligned targets, box truncated to integers) loses up to a pixel per side (mean IoU 0.88 here)."""
    from sceneparse.models.heads.proposal_sampler import SampledRoIs
    from sceneparse.models.heads.roi_mask import RoIMaskHead

    g = torch.Generator().manual_seed(0)
    h = w = 64
    n = 60
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    centre = torch.rand(n, 2, generator=g) * 30 + 17
    radius = torch.rand(n, 1, 1, generator=g) * 9 + 4  # discs 8-26 px across
    gt = ((xx - centre[:, 0, None, None]) ** 2 + (yy - centre[:, 1, None, None]) ** 2) < radius ** 2
    ys, xs = gt.any(2), gt.any(1)
    idx = torch.arange(w)
    boxes = torch.stack([torch.where(xs, idx, w).amin(1), torch.where(ys, idx, h).amin(1),
                         torch.where(xs, idx, -1).amax(1) + 1, torch.where(ys, idx, -1).amax(1) + 1], 1).float()
    head = RoIMaskHead(8, 1, aligned=aligned)
    positives = SampledRoIs([boxes], [torch.ones(n, dtype=torch.long)], [torch.arange(n)])
    targets = head.targets(positives, [gt], 28)
    assert targets.shape == (n, 28, 28)
    pasted = paste_masks(targets, boxes, (h, w), threshold=0.5, aligned=aligned)
    iou = (pasted & gt).sum((1, 2)) / (pasted | gt).sum((1, 2))
    assert low < iou.mean() <= high


def test_box_head_loss_without_any_roi_is_zero_not_a_crash():
    """A batch with no RoI at all (no proposal survived and no ground truth) -- e.g. after a diverged
    step -- gives zero losses with an intact graph instead of a reshape error / NaN."""
    from torchvision.models.detection.roi_heads import fastrcnn_loss

    from sceneparse.models.heads.proposal_sampler import SampledRoIs
    from sceneparse.models.heads.roi_box import RoIBoxHead

    head = RoIBoxHead(8, 3, representation_size=16)
    logits = torch.zeros(0, 4, requires_grad=True)
    deltas = torch.zeros(0, 16, requires_grad=True)
    empty = SampledRoIs([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)])
    losses = head.loss(logits, deltas, empty, [torch.zeros(0, 4)])
    assert losses == {"loss_classifier": 0.0, "loss_box_reg": 0.0}
    sum(losses.values()).backward()
    # with RoIs: torchvision's fastrcnn_loss (mean CE, smooth-L1 sum / RoIs)
    torch.manual_seed(0)
    logits, deltas = torch.randn(6, 4), torch.randn(6, 16)
    rois = torch.tensor([[0., 0, 10, 10], [2, 2, 12, 12], [5, 5, 20, 25], [0, 0, 30, 30], [1, 1, 4, 4], [3, 0, 9, 7]])
    labels = torch.tensor([1, 0, 3, 2, 0, 1])
    gt = torch.tensor([[1., 1, 11, 11], [4, 6, 21, 24], [0, 1, 29, 31]])
    matched = torch.tensor([0, 0, 1, 2, 0, 0])
    ours = head.loss(logits, deltas, SampledRoIs([rois], [labels], [matched]), [gt])
    targets = head.box_coder.encode(gt[matched], rois)
    ref_cls, ref_box = fastrcnn_loss(logits, deltas, [labels], [targets])
    torch.testing.assert_close(ours["loss_classifier"], ref_cls, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours["loss_box_reg"], ref_box, rtol=1e-6, atol=1e-7)
