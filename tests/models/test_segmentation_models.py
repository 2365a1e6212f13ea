"""The semantic-segmentation models: shapes, the model protocol (loss / postprocess / predict), property
cases (odd sizes, all-ignore targets, gradients), and the architectures' defining mechanics."""
import pytest
import torch
import torch.nn.functional as F

from sceneparse.errors import DataError
from sceneparse.models import zoo
from sceneparse.models.layers import AtrousConv2d, SeparableConvNormAct
from sceneparse.models.layers.upsampling import interpolate
from sceneparse.models.preprocess import Preprocessor
from sceneparse.models.segmentation import (
    ASPP,
    DeepLabV3,
    DeepLabV3Plus,
    FCNSkip,
    LRASPP,
    SegNet,
    SemanticRaw,
    SemanticSegmentor,
    UNet,
)
from sceneparse.models.segmentation.backbones import build_trunk
from sceneparse.models.segmentation.base import SegmentorGraph
from sceneparse.structures import ImageBatch, Instances, SemanticMap, Target

NC = 4


def _pre(min_size: int):
    """A preprocessor that keeps the size of test images whose short side is ``min_size`` (pads to 8)."""
    return Preprocessor(min_size=min_size, max_size=1000, size_divisible=8)


# small but complete configurations of every architecture
CONFIGS = {
    "unet": lambda **kw: UNet(NC, base_channels=4, depth=3, **kw),
    "unet_bilinear": lambda **kw: UNet(NC, base_channels=4, depth=2, upsampling="bilinear", **kw),
    "segnet": lambda **kw: SegNet(NC, channels=(4, 8, 8), convs_per_stage=(1, 2, 1), **kw),
    "fcn8s": lambda **kw: FCNSkip(NC, variant=8, **kw),
    "fcn16s": lambda **kw: FCNSkip(NC, variant=16, **kw),
    "fcn32s": lambda **kw: FCNSkip(NC, variant=32, **kw),
    "deeplabv3_r18_os16": lambda **kw: DeepLabV3(NC, backbone="resnet18", output_stride=16, aux=True, **kw),
    "deeplabv3_r18_os8": lambda **kw: DeepLabV3(NC, backbone="resnet18", output_stride=8, **kw),
    "deeplabv3plus_r18": lambda **kw: DeepLabV3Plus(NC, depth=18, output_stride=16, **kw),
    "deeplabv3plus_r18_3stages": lambda **kw: DeepLabV3Plus(NC, depth=18, output_stride=16, trunk_stages=3, **kw),
    "lraspp": lambda **kw: LRASPP(NC, **kw),
}


def _target(labels: torch.Tensor, image_id: int = 1, image_size=None) -> Target:
    """A target with a semantic map; ``image_size`` (default: the map's) is the image's own size."""
    size = tuple(labels.shape) if image_size is None else image_size
    return Target(image_id, Instances(size), semantic=SemanticMap(labels), file_name=f"img{image_id}.png")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_size_equals_input_size_for_odd_sizes(name):
    model = CONFIGS[name]().eval()
    with torch.no_grad():
        for h, w in ((37, 53), (33, 29)):
            logits, aux = model.segment(torch.randn(1, 3, h, w))
            assert logits.shape == (1, NC, h, w)
            assert aux is None
            assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_losses_all_ignore_are_finite_and_real_labels_give_gradients_everywhere(name):
    torch.manual_seed(0)
    model = CONFIGS[name](preprocessor=_pre(29), dice_weight=0.5).train()
    images = [torch.rand(3, 35, 29), torch.rand(3, 29, 33)]  # odd sizes, different: padding in the batch
    void = [_target(torch.full((35, 29), 255)), _target(torch.full((29, 33), 255), 2)]
    losses = model.training_losses(images, void)
    assert set(losses) >= {"loss_ce", "loss_dice"}
    for k, v in losses.items():
        assert torch.isfinite(v) and v.item() == 0.0, k
    sum(losses.values()).backward()  # an all-void batch must not break the backward pass
    model.zero_grad(set_to_none=True)

    labelled = [_target(torch.randint(0, NC, (35, 29))), _target(torch.randint(0, NC, (29, 33)), 2)]
    losses = model.training_losses(images, labelled)
    for k, v in losses.items():
        assert torch.isfinite(v) and v.item() > 0, k
    if getattr(model, "aux_head", None) is not None:
        assert "loss_aux" in losses
    sum(losses.values()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), pname
    nonzero = [n for n, p in model.named_parameters() if p.grad.abs().sum() > 0]
    assert len(nonzero) >= 0.9 * len(list(model.parameters()))


def test_loss_equals_reference_cross_entropy_in_the_batch_frame():
    model = CONFIGS["unet"](preprocessor=Preprocessor(min_size=15, max_size=1000, size_divisible=8)).train()
    images = [torch.rand(3, 30, 40), torch.rand(3, 20, 20)]
    lab0 = torch.randint(0, NC, (30, 40))
    lab0[:5] = 255
    lab1 = torch.randint(0, NC, (15, 15))  # already in the batch (resized) frame
    batch, targets = model.prepare(images, [_target(lab0), _target(lab1, 2, image_size=(20, 20))])
    assert batch.image_sizes == [(15, 20), (15, 15)]
    raw = model(batch)
    assert isinstance(raw, SemanticRaw) and raw.logits.shape == (2, NC, 16, 24)
    ref_labels = torch.full((2, 16, 24), 255)
    ref_labels[0, :15, :20] = F.interpolate(lab0[None, None].float(), size=(15, 20), mode="nearest")[0, 0].long()
    ref_labels[1, :15, :15] = lab1
    ref = F.cross_entropy(raw.logits, ref_labels, ignore_index=255)
    torch.testing.assert_close(model.loss(raw, targets)["loss_ce"], ref)


def test_aux_loss_is_weighted_and_only_in_training():
    model = DeepLabV3(NC, backbone="resnet18", output_stride=16, aux=True, aux_weight=0.25, preprocessor=_pre(24))
    lab = torch.randint(0, NC, (24, 24))
    batch, targets = model.train().prepare([torch.rand(3, 24, 24)] * 2, [_target(lab)] * 2)
    raw = model(batch)
    assert raw.aux_logits is not None and raw.aux_logits.shape == raw.logits.shape
    labels = model.semantic_targets(targets, raw)
    torch.testing.assert_close(model.loss(raw, targets)["loss_aux"],
                               0.25 * F.cross_entropy(raw.aux_logits, labels, ignore_index=255))
    assert model.eval()(batch).aux_logits is None


def test_loss_errors_name_the_image():
    model = CONFIGS["unet"](preprocessor=_pre(16))
    images = [torch.rand(3, 16, 16)]
    with pytest.raises(DataError, match=r"img7.png: image 7: semantic: labels outside 0\.\.3"):
        model.training_losses(images, [_target(torch.full((16, 16), 9), 7)])
    with pytest.raises(DataError, match="img3.png: image 3: semantic: map size"):
        t = _target(torch.zeros(16, 16, dtype=torch.long), 3)
        t.semantic = SemanticMap(torch.zeros(8, 8, dtype=torch.long))
        model.training_losses(images, [t])
    with pytest.raises(DataError, match="no semantic map"):
        model.training_losses(images, [Target(1, Instances((16, 16)))])


def test_target_ignore_index_is_translated():
    model = CONFIGS["unet"](preprocessor=_pre(16)).train()
    lab = torch.randint(0, NC, (16, 16))
    lab[:8] = -1
    t = Target(1, Instances((16, 16)), semantic=SemanticMap(lab, ignore_index=-1))
    batch, targets = model.prepare([torch.rand(3, 16, 16)], [t])
    raw = model(batch)
    labels = model.semantic_targets(targets, raw)
    assert (labels[0, :8] == 255).all() and torch.equal(labels[0, 8:], lab[8:])


def test_postprocess_and_predict_in_original_pixels():
    model = CONFIGS["deeplabv3plus_r18"](preprocessor=Preprocessor(min_size=32, max_size=64, size_divisible=16))
    model.train()
    images = [torch.rand(3, 50, 70), torch.rand(3, 41, 33)]
    maps = model.predict(images)
    assert model.training  # predict restores the mode
    assert [m.image_size for m in maps] == [(50, 70), (41, 33)]
    assert all(m.labels.dtype == torch.int64 and 0 <= m.labels.min() and m.labels.max() < NC for m in maps)
    # the same through the three verbs by hand (one batch per image size: predict never pads an image
    # up to another one's size)
    model.eval()
    by_hand = []
    with torch.no_grad():
        for image in images:
            batch, _ = model.prepare([image])
            raw = model(batch)
            (h, w), (oh, ow) = batch.image_sizes[0], batch.original_sizes[0]
            x = interpolate(raw.logits[:, :, :h, :w], size=(oh, ow))
            by_hand.append(x[0].argmax(0))
    for m, ref in zip(maps, by_hand):
        assert torch.equal(m.labels, ref)
    scored = model.predict(images[:1], return_scores=True)[0]
    assert scored.scores.shape == (NC, 50, 70)


class _Pointwise(SemanticSegmentor):
    """A per-pixel network: tiled inference must reproduce whole-image inference exactly."""

    def __init__(self, **kw):
        super().__init__(NC, **kw)
        self.conv = torch.nn.Conv2d(3, NC, 1)

    def segment(self, x, with_aux=False):
        return self.conv(x), None


def test_predict_tiled_equals_whole_image_for_a_pointwise_network():
    model = _Pointwise(preprocessor=Preprocessor(min_size=40, max_size=200, size_divisible=8))
    images = [torch.rand(3, 75, 101), torch.rand(3, 60, 60)]
    whole = model.predict(images, return_scores=True)
    tiled = model.predict(images, tile=24, tile_overlap=0.25, tile_weighting="gaussian", return_scores=True)
    for a, b in zip(whole, tiled):
        assert a.image_size == b.image_size
        torch.testing.assert_close(a.scores, b.scores)
        assert (a.labels == b.labels).float().mean() > 0.999  # exact up to ties in float rounding


def test_padding_only_where_the_network_needs_it():
    for name in ("fcn8s", "deeplabv3_r18_os16", "deeplabv3plus_r18", "lraspp"):  # take any size: no padding
        assert CONFIGS[name]().preprocessor.size_divisible == 1, name
    assert CONFIGS["unet"]().preprocessor.size_divisible == 8  # 2 ** depth: every pooling halves exactly
    assert CONFIGS["unet_bilinear"]().preprocessor.size_divisible == 4
    assert CONFIGS["segnet"]().preprocessor.size_divisible == 8  # 3 pooling stages
    # an explicit size (a checkpoint's config.model.kwargs) still wins
    assert UNet(NC, base_channels=4, depth=2, size_divisible=32).preprocessor.size_divisible == 32
    assert CONFIGS["lraspp"](size_divisible=8).preprocessor.size_divisible == 8
    assert _Pointwise().preprocessor.size_divisible == 8  # a subclass that declares nothing keeps the old 8


def test_predict_labels_do_not_depend_on_the_other_images():
    # DeepLabV3's image pooling averages the whole map: padding a 48x70 image to its neighbour's 90
    # columns would change every pixel's scores, so predict batches only images of the same size
    torch.manual_seed(0)
    model = CONFIGS["deeplabv3_r18_os16"](min_size=48, max_size=200)
    images = [torch.rand(3, 48, 70), torch.rand(3, 48, 90), torch.rand(3, 48, 70)]
    together = model.predict(images, return_scores=True)
    for image, m in zip(images, together):
        alone = model.predict([image], return_scores=True)[0]
        assert m.image_size == alone.image_size == tuple(image.shape[-2:])
        torch.testing.assert_close(m.scores, alone.scores)
    with pytest.raises(DataError, match="image 2"):  # errors name the index in the call, not in a size group
        model.predict([images[0], images[1], torch.rand(1, 48, 70)])


def test_export_graph_is_predict_without_the_resize():
    torch.manual_seed(0)
    model = CONFIGS["deeplabv3_r18_os16"](min_size=45, max_size=200).eval()
    image = torch.rand(3, 45, 71)  # short side == min_size: predict does not resize
    m = model.predict([image], return_scores=True)[0]
    with torch.no_grad():
        logits, labels = SegmentorGraph(model)(image[None])  # no padding in the graph either
    assert logits.shape == (1, NC, 45, 71)
    torch.testing.assert_close(logits[0].softmax(0), m.scores)
    assert torch.equal(labels[0], m.labels)


def test_predict_tiled_runs_real_models_on_windows():
    model = CONFIGS["lraspp"](preprocessor=Preprocessor(min_size=64, max_size=200, size_divisible=8))
    m = model.predict([torch.rand(3, 64, 100)], tile=48, tile_overlap=0.5)[0]
    assert m.image_size == (64, 100)


# ---- architecture mechanics ------------------------------------------------------------------------
def test_fcn_skip_fusion_starts_as_fcn32s_and_uses_finer_stages():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    m8 = FCNSkip(NC, variant=8).eval()
    with torch.no_grad():
        _, c3, c4, c5 = m8.backbone(x)
        # zero-initialised skip scores: FCN-8s starts from the stride-32 scores alone
        s = m8.score32(c5)
        expect = m8.up_final(m8.up16to8(m8.up32to16(s)))[..., :64, :64]
        torch.testing.assert_close(m8.segment(x)[0], expect)
        # with a non-zero stride-8 score, a change at one stride-8 cell moves the output in that cell's
        # 8x8 block (+ the bilinear kernel's reach), not at the far corner
        torch.nn.init.normal_(m8.score8.weight)
        base = m8.segment(x)[0]
        c3b = c3.clone()
        c3b[..., 2, 2] += 10
        s2 = m8.up16to8(m8.up32to16(s)[..., :4, :4] + m8.score16(c4)) + m8.score8(c3b)
        moved = m8.up_final(s2)[..., :64, :64] - base
    changed = moved.abs().sum(1)[0] > 1e-6
    rows, cols = torch.where(changed)
    assert 8 <= rows.min() and rows.max() < 32 and 8 <= cols.min() and cols.max() < 32
    assert changed[16:24, 16:24].all()


def test_fcn_upsamplers_are_exact_multiples_and_bilinear_at_init():
    m = FCNSkip(NC, variant=16)
    assert m.up_final.output_size_for((5, 7)) == (80, 112)
    assert m.up32to16.output_size_for((3, 3)) == (6, 6)
    x = torch.randn(1, NC, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(m.up32to16(x)[..., 2:-2, 2:-2],
                                   interpolate(x, scale_factor=2)[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


def test_unet_skips_are_concatenated():
    m = UNet(NC, base_channels=4, depth=2).eval()
    seen = []
    m.decoder[0].register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].shape))
    m.decoder[1].register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].shape))
    with torch.no_grad():
        m.segment(torch.randn(1, 3, 21, 19))
    # level 1 (11x10): 8 skip + 8 upsampled channels; level 0 (21x19): 4 + 4
    assert seen == [torch.Size([1, 16, 11, 10]), torch.Size([1, 8, 21, 19])]


def test_segnet_decoder_unpools_at_the_encoder_argmax_positions():
    m = SegNet(NC, channels=(4, 4), convs_per_stage=(1, 1)).eval()
    captured = {}
    m.decoder[1].register_forward_pre_hook(lambda mod, inp: captured.setdefault("dec1_in", inp[0]))
    m.encoder[1].register_forward_hook(lambda mod, inp, out: captured.setdefault("enc1_out", out))
    with torch.no_grad():
        m.segment(torch.randn(1, 3, 15, 13))
    enc, dec_in = captured["enc1_out"], captured["dec1_in"]
    assert dec_in.shape == enc.shape == (1, 4, 8, 7)
    # the unpooled map is non-zero exactly at the max positions of each (ceil-mode) 2x2 window
    pooled, idx = F.max_pool2d(enc, 2, ceil_mode=True, return_indices=True)
    expected = torch.zeros_like(enc).flatten(2).scatter(2, idx.flatten(2), 1.0).view_as(enc).bool()
    assert torch.equal(dec_in != 0, expected & (enc != 0))


def test_dilated_resnet_output_strides_and_receptive_field():
    x = torch.randn(1, 3, 64, 64)
    for os_, strides in ((8, [4, 8, 8, 8]), (16, [4, 8, 16, 16]), (32, [4, 8, 16, 32])):
        r = build_trunk("resnet18", os_).eval()
        assert r.strides == strides
        with torch.no_grad():
            feats = r(x)
        assert [f.shape[-1] for f in feats] == [64 // s for s in strides]
    # the dilated layer4 keeps the weights' shapes (checkpoints stay compatible) but dilates the convs
    r8, r32 = build_trunk("resnet18", 8), build_trunk("resnet18", 32)
    assert [p.shape for p in r8.parameters()] == [p.shape for p in r32.parameters()]
    assert r8.trunk.layer4[1].conv1.dilation == (4, 4) and r8.trunk.layer4[0].conv1.dilation == (2, 2)
    assert r8.trunk.layer4[0].conv1.stride == (1, 1) and r32.trunk.layer4[0].conv1.stride == (2, 2)
    assert r8.trunk.layer4[0].downsample[0].stride == (1, 1) and r8.trunk.layer3[0].conv1.dilation == (1, 1)


def test_segmentation_trunks_are_the_shared_backbones_trainable_with_batchnorm():
    from sceneparse.models.backbones import MobileNetV3Backbone, ResNetBackbone

    r = build_trunk("resnet50", 8)
    assert isinstance(r, ResNetBackbone) and r.out_channels == [256, 512, 1024, 2048]
    mb = build_trunk("mobilenet_v3_large", 16)
    assert isinstance(mb, MobileNetV3Backbone) and mb.out_channels == [40, 960] and mb.strides == [8, 16]
    assert build_trunk("mobilenet_v3_large", 32).strides == [8, 32]
    for trunk in (r, mb):
        assert all(p.requires_grad for p in trunk.parameters())
        bns = [m for m in trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert bns and all(type(m) is torch.nn.BatchNorm2d for m in bns)
    assert {(m.eps, m.momentum) for m in mb.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {(1e-3, 0.01)}
    with pytest.raises(ValueError, match="unknown trunk"):
        build_trunk("vgg16")


def test_resnet_trunk_without_layer4():
    """``stages=3``: layer4 is not built (no parameters, no checkpoint entries), the first three maps are
    the whole trunk's, with the same strides; an ImageNet ResNet-18 still loads (its layer4 skipped)."""
    from torchvision.models import resnet18

    from sceneparse.models.segmentation import load_imagenet_trunk

    full, cut = build_trunk("resnet18", 16).eval(), build_trunk("resnet18", 16, stages=3).eval()
    assert not hasattr(cut.trunk, "layer4") and cut.dropped_layers == ("layer4",)
    assert not any(k.startswith("trunk.layer4.") for k in cut.state_dict())
    n_full, n_cut = (sum(p.numel() for p in t.parameters()) for t in (full, cut))
    assert n_full - n_cut == sum(p.numel() for p in full.trunk.layer4.parameters()) == 8_393_728
    assert cut.out_channels == [64, 128, 256] and cut.strides == [4, 8, 16]
    assert build_trunk("resnet18", 8, stages=3).strides == [4, 8, 8]
    r18 = resnet18(weights=None)
    load_imagenet_trunk(full, r18.state_dict())
    load_imagenet_trunk(cut, r18.state_dict())  # layer4 and fc are skipped, everything else must fit
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(cut(x), full(x)[:3]):
            torch.testing.assert_close(a, b)
    # DeepLabv3+ on it: the ASPP reads layer3 (256 channels at stride 16)
    m = DeepLabV3Plus(NC, depth=18, output_stride=16, trunk_stages=3, channels=16, decoder_channels=8)
    assert m.aspp.conv1x1.conv.in_channels == 256
    with pytest.raises(ValueError, match="3 or 4 stages"):
        build_trunk("resnet18", 16, stages=2)
    with pytest.raises(ValueError, match="output stride 8 or 16"):
        build_trunk("resnet18", 32, stages=3)
    with pytest.raises(ValueError, match="ResNet trunks"):
        build_trunk("mobilenet_v3_large", 16, stages=3)


def test_aspp_branches_and_image_pooling():
    aspp = ASPP(8, (1, 2, 3), out_channels=5).eval()
    assert len(aspp.atrous) == 3 and [c.conv.dilation for c in aspp.atrous] == [(1, 1), (2, 2), (3, 3)]
    assert aspp.project.conv.in_channels == 5 * 5
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        pooled = aspp.image_pool(x)
        ref = aspp.image_pool.block(F.adaptive_avg_pool2d(x, 1))
        assert pooled.shape == (2, 5, 9, 11)
        torch.testing.assert_close(pooled, ref.expand(-1, -1, 9, 11))
        assert aspp(x).shape == (2, 5, 9, 11)


@pytest.mark.parametrize("kernel,dilation,size", [
    (3, 12, (8, 8)),     # both axes within the padding: the centre tap alone (ASPP rate 12 on an 8x8 map)
    (3, 6, (8, 8)),      # taps at +-6 reach some positions: nothing to skip
    (3, 12, (8, 20)),    # rows skipped, columns kept: a 1x3 kernel
    (5, 4, (9, 6)),      # a 5x5 kernel: rows keep all 5 taps, columns keep the inner 3
    (3, 2, (1, 1)),
])
def test_atrous_conv_skips_only_taps_that_read_padding(kernel, dilation, size):
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(6, 4, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=True)
    conv = AtrousConv2d(6, 4, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=True)
    conv.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, *size, dtype=torch.float64, requires_grad=True)
    ref, conv = ref.double(), conv.double()
    calls = []
    orig = F.conv2d
    with pytest.MonkeyPatch.context() as mp:  # the kernel actually convolved
        mp.setattr(F, "conv2d", lambda inp, w, *a: calls.append(tuple(w.shape[-2:])) or orig(inp, w, *a))
        y = conv(x)
    half = (kernel - 1) // 2
    expect = tuple(2 * min(half, (n - 1) // dilation) + 1 for n in size)
    assert calls == [expect]  # the taps that can read the input, no more
    y_ref = ref(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    rx, rw, rb = torch.autograd.grad(y_ref, (x, ref.weight, ref.bias), g)
    for a, b in ((gx, rx), (gw, rw), (gb, rb)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # traced, the full kernel runs: the graph stays right at other sizes
    traced = torch.jit.trace(conv, x.detach())
    big = torch.randn(1, 6, 30, 30, dtype=torch.float64)
    torch.testing.assert_close(traced(big), ref(big), rtol=0, atol=1e-12)


def test_aspp_uses_atrous_convs_and_separable_decoder_option():
    aspp = ASPP(8, (6, 12, 18), out_channels=5).eval()
    assert all(type(c.conv) is AtrousConv2d for c in aspp.atrous) and type(aspp.conv1x1.conv) is torch.nn.Conv2d
    m = DeepLabV3Plus(NC, depth=18, trunk_stages=3, channels=32, decoder_channels=24, separable_decoder=True)
    first, second = m.fuse
    assert isinstance(first, SeparableConvNormAct) and first.depthwise.conv.groups == 32 + 48
    assert first.depthwise.conv.kernel_size == (3, 3) and first.pointwise.conv.weight.shape == (24, 80, 1, 1)
    assert second.pointwise.out_channels == 24
    x = torch.randn(2, 3, 64, 64)
    sep = SeparableConvNormAct(3, 4).eval()
    with torch.no_grad():  # = depthwise conv-BN-ReLU, then pointwise conv-BN-ReLU
        d = F.relu(sep.depthwise.bn(F.conv2d(x, sep.depthwise.conv.weight, padding=1, groups=3)))
        torch.testing.assert_close(sep(x), F.relu(sep.pointwise.bn(F.conv2d(d, sep.pointwise.conv.weight))))
    assert m.segment(x)[0].shape == (2, NC, 64, 64)


def test_deeplab_default_rates_follow_the_output_stride():
    assert [c.conv.dilation[0] for c in DeepLabV3(NC, backbone="resnet18", output_stride=16).head.aspp.atrous] \
        == [6, 12, 18]
    assert [c.conv.dilation[0] for c in DeepLabV3(NC, backbone="resnet18", output_stride=8).head.aspp.atrous] \
        == [12, 24, 36]


def test_a_few_sgd_steps_fit_a_fixed_batch():
    torch.manual_seed(0)
    model = UNet(2, base_channels=8, depth=2, preprocessor=_pre(24)).train()
    images = [torch.rand(3, 24, 24) for _ in range(2)]
    labels = [(im[0] > 0.5).long() for im in images]  # label = "red channel is bright"
    targets = [_target(lab, i) for i, lab in enumerate(labels)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        loss = sum(model.training_losses(images, targets).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    pred = model.predict(images)
    acc = torch.stack([(p.labels == lab).float().mean() for p, lab in zip(pred, labels)]).mean()
    assert acc > 0.9


def test_zoo_builds_every_segmentation_name():
    names = {"fcn_resnet50", "fcn8s_resnet18", "fcn16s_resnet18", "fcn32s_resnet18", "deeplabv3_resnet50",
             "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet18", "deeplabv3plus_resnet18",
             "deeplabv3plus_resnet50", "lraspp_mobilenet_v3_large", "unet", "segnet"}
    assert names <= set(zoo.available())
    m = zoo.build("unet", num_classes=3, base_channels=4, depth=2)
    assert isinstance(m, UNet) and m.classifier.out_channels == 3
    m = zoo.build("segnet", num_classes=5, channels=(4, 8), convs_per_stage=(1, 1))
    assert isinstance(m, SegNet) and m.classifier.out_channels == 5
    m = zoo.build("deeplabv3plus_resnet18", num_classes=2)
    assert isinstance(m, DeepLabV3Plus) and m.classifier.out_channels == 2
    assert m.fuse[0].conv.out_channels == 256 and m.classifier.in_channels == 256  # decoder as wide as ASPP
    m = zoo.build("deeplabv3plus_resnet18", num_classes=2, decoder_channels=96)
    assert m.aspp.out_channels == 256 and m.fuse[0].conv.in_channels == 256 + 48
    assert m.fuse[1].conv.out_channels == 96 and m.classifier.in_channels == 96
    x = torch.randn(1, 3, 64, 64)
    assert m.eval().segment(x)[0].shape == (1, 2, 64, 64)


def test_constructor_checks():
    with pytest.raises(ValueError, match="collides"):
        UNet(300, base_channels=4)
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3(NC, backbone="mobilenet_v3_large", output_stride=8)
    with pytest.raises(ValueError, match="variant"):
        FCNSkip(NC, variant=4)
    with pytest.raises(ValueError, match="class_weights"):
        UNet(NC, base_channels=4, class_weights=[1.0, 2.0])


def test_forward_accepts_an_image_batch_directly():
    model = CONFIGS["segnet"]().eval()
    x = torch.randn(2, 3, 16, 24)
    batch = ImageBatch(x, [(16, 24), (10, 20)], [(16, 24), (20, 40)], [(1.0, 1.0), (0.5, 0.5)])
    with torch.no_grad():
        raw = model(batch)
    maps = model.postprocess(raw, batch)
    assert [m.image_size for m in maps] == [(16, 24), (20, 40)]


def test_train_crop_cuts_images_and_labels_at_the_same_window_after_the_resize():
    """``train_crop``: one random window per image of the *resized* batch, image and labels aligned;
    a window larger than an image is clipped to it; eval sees whole images."""
    torch.manual_seed(0)
    model = CONFIGS["unet"](preprocessor=Preprocessor(min_size=20, max_size=1000, size_divisible=8),
                            train_crop=(16, 24)).train()
    images = [torch.rand(3, 40, 48), torch.rand(3, 20, 20)]  # resized to 20 x 24 and kept at 20 x 20
    labels = [torch.randint(0, NC, (40, 48)), torch.randint(0, NC, (20, 20))]
    targets = [_target(labels[0]), _target(labels[1], 2)]
    full, full_t = model.prepare(images, targets)
    full_labels = model.semantic_targets(full_t, SemanticRaw(full.tensor, None, full.image_sizes,
                                                             full.original_sizes))
    seen = {}
    model.segment = lambda x, with_aux=False: (seen.setdefault("x", x), None)[0][:, :NC]  # noqa: E731
    model.loss_from_labels = lambda raw, lab: seen.update(labels=lab) or {}  # noqa: E731
    model.training_losses(images, targets)
    x, lab = seen["x"], seen["labels"]
    assert x.shape == (2, 3, 16, 24) and lab.shape == (2, 16, 24)
    for i, (h, w) in enumerate([(16, 24), (16, 20)]):  # image 1 is 20 wide: the window is clipped to 20
        hits = [(t, l) for t in range(full.image_sizes[i][0] - h + 1) for l in range(full.image_sizes[i][1] - w + 1)
                if torch.equal(full.tensor[i, :, t:t + h, l:l + w], x[i, :, :h, :w])]
        assert len(hits) == 1
        t, l = hits[0]
        assert torch.equal(lab[i, :h, :w], full_labels[i, t:t + h, l:l + w])
        assert (lab[i, h:] == 255).all() and (lab[i, :, w:] == 255).all() and (x[i, :, :, w:] == 0).all()
    # the windows move with the generator: a second step draws other positions
    windows = set()
    for _ in range(6):
        model.training_losses(images, targets)
        windows.add(tuple(seen.pop("x")[0, 0, 0, :3].tolist()))
        seen.clear()
    assert len(windows) > 1


def test_train_crop_is_validated_and_training_still_learns():
    with pytest.raises(ValueError, match="train_crop"):
        CONFIGS["unet"](train_crop=0)
    model = CONFIGS["unet"](preprocessor=_pre(32), train_crop=16).train()
    lab = torch.randint(0, NC, (32, 32))
    losses = model.training_losses([torch.rand(3, 32, 32)] * 2, [_target(lab)] * 2)
    assert set(losses) == {"loss_ce"} and losses["loss_ce"].requires_grad
    losses["loss_ce"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.eval().predict([torch.rand(3, 32, 32)])[0].labels.shape == (32, 32)


# ---- logit adjustment ------------------------------------------------------------------------------
class _Prior(SemanticSegmentor):
    """Learnable per-class scores, the same at every pixel: weighted cross-entropy has a closed-form optimum."""

    def __init__(self, **kw):
        super().__init__(NC, **kw)
        self.bias = torch.nn.Parameter(torch.zeros(NC))

    def segment(self, x, with_aux=False):
        return self.bias[None, :, None, None].expand(x.shape[0], NC, *x.shape[-2:]), None


def test_logit_adjustment_divides_the_class_weights_back_out():
    freq = torch.tensor([0.5, 0.3, 0.15, 0.05])
    w = torch.tensor([0.2, 1.0, 1.0, 5.0])  # w * freq = [0.1, 0.3, 0.15, 0.25]: the weighted argmax is class 1
    labels = torch.repeat_interleave(torch.arange(NC), (freq * 400).long()).reshape(1, 20, 20)
    model = _Prior(class_weights=w.tolist(), logit_adjustment=1.0, preprocessor=_pre(20))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.zeros(1, 3, 20, 20)
    for _ in range(600):
        loss = model.loss_from_labels(model(ImageBatch(x, [(20, 20)], [(20, 20)], [(1.0, 1.0)])), labels)["loss_ce"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    # weighted CE's optimum: softmax = w_c n_c / sum; the adjusted scores give the class frequencies back
    trained = model.bias.detach().softmax(0)
    torch.testing.assert_close(trained, w * freq / (w * freq).sum(), atol=2e-3, rtol=0)
    model.eval()
    with torch.no_grad():
        raw = model(ImageBatch(x, [(20, 20)], [(20, 20)], [(1.0, 1.0)]))
    torch.testing.assert_close(raw.logits[0, :, 0, 0], model.bias.detach() - w.log())
    torch.testing.assert_close(raw.logits[0, :, 0, 0].softmax(0), freq, atol=2e-3, rtol=0)
    assert model.predict([torch.rand(3, 20, 20)])[0].labels.unique().tolist() == [0]  # the frequent class
    model.logit_bias = None  # tau = 0: the weighted scores
    assert model.predict([torch.rand(3, 20, 20)])[0].labels.unique().tolist() == [1]


def test_logit_adjustment_only_at_inference_and_in_tiled_predict():
    w = [0.5, 1.0, 2.0, 4.0]
    torch.manual_seed(0)
    plain = _Pointwise(preprocessor=Preprocessor(min_size=40, max_size=200, size_divisible=8))
    adjusted = _Pointwise(preprocessor=plain.preprocessor, class_weights=w, logit_adjustment=0.5)
    adjusted.load_state_dict(plain.state_dict())
    batch = ImageBatch(torch.rand(2, 3, 40, 48), [(40, 48)] * 2, [(40, 48)] * 2, [(1.0, 1.0)] * 2)
    torch.testing.assert_close(adjusted.train()(batch).logits, plain.train()(batch).logits)  # training: unchanged
    with torch.no_grad():
        diff = adjusted.eval()(batch).logits - plain.eval()(batch).logits
    torch.testing.assert_close(diff, (-0.5 * torch.tensor(w).log())[None, :, None, None].expand_as(diff))
    images = [torch.rand(3, 75, 101)]
    whole = adjusted.predict(images, return_scores=True)[0]
    tiled = adjusted.predict(images, tile=24, tile_overlap=0.25, return_scores=True)[0]
    torch.testing.assert_close(whole.scores, tiled.scores)
    assert not torch.equal(whole.labels, plain.predict(images)[0].labels)  # the bias changes decisions


def test_logit_adjustment_needs_positive_class_weights():
    with pytest.raises(ValueError, match="logit_adjustment needs class_weights"):
        UNet(NC, base_channels=4, logit_adjustment=1.0)
    with pytest.raises(ValueError, match="positive"):
        UNet(NC, base_channels=4, class_weights=[1.0, 0.0, 1.0, 1.0], logit_adjustment=1.0)
    assert UNet(NC, base_channels=4, class_weights=[1.0, 0.0, 1.0, 1.0]).logit_bias is None
