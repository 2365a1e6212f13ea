"""torchvision checkpoints load into sceneparse's FCN / DeepLabV3 / LR-ASPP and give the same logits.

A torchvision model with random weights (BatchNorm running statistics and affine parameters
randomised too, so that every layer matters) is saved to a file, loaded through the zoo and through
the builders, and both networks run on the same small images.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import mobilenet_v3_large, resnet18
from torchvision.models import segmentation as tvseg

from sceneparse.data.synthetic import SyntheticConfig, generate_scene, image_rng
from sceneparse.errors import CheckpointError
from sceneparse.models import zoo
from sceneparse.models.segmentation import (
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet18,
    deeplabv3_resnet50,
    fcn_resnet50,
    lraspp_mobilenet_v3_large,
)
from sceneparse.structures import ImageBatch

NC = 7
CASES = {  # zoo name -> (torchvision constructor, our builder, has aux head)
    "fcn_resnet50": (tvseg.fcn_resnet50, fcn_resnet50, True),
    "deeplabv3_resnet50": (tvseg.deeplabv3_resnet50, deeplabv3_resnet50, True),
    "deeplabv3_mobilenet_v3_large": (tvseg.deeplabv3_mobilenet_v3_large, deeplabv3_mobilenet_v3_large, True),
    "lraspp_mobilenet_v3_large": (tvseg.lraspp_mobilenet_v3_large, lraspp_mobilenet_v3_large, False),
}


def _randomise_bn(model: torch.nn.Module, seed: int = 1, run=None) -> None:
    """Random affine terms, and running statistics measured on random images with them in place.
    The statistics are then far from the defaults (0 / 1) yet keep every layer's output normalised,
    so every weight still matters downstream (arbitrary random statistics would drown the signal in
    constant BatchNorm shifts, or blow it up layer after layer). ``run``: how to call the model."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.reset_running_stats()
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.momentum = None  # cumulative average: the statistics of the calibration batch
        model.train()
        (run or model)(torch.rand(2, 3, 96, 96, generator=g) * 4 - 2)
        for m, mom in zip(bns, momenta):
            m.momentum = mom
    model.eval()


def _torchvision(name: str, num_classes: int = NC, aux: bool = True):
    ctor, _, has_aux = CASES[name]
    kw = {"aux_loss": aux} if has_aux else {}
    torch.manual_seed(3)
    model = ctor(weights=None, weights_backbone=None, num_classes=num_classes, **kw).eval()
    _randomise_bn(model)
    return model


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.rand(2, 3, 160, 160) * 4 - 2  # already "normalised" inputs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_same_logits_as_torchvision(name, images, tmp_path):
    tv = _torchvision(name)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    ours = zoo.build(name, num_classes=NC, weights=path).eval()
    with torch.no_grad():
        ref = tv(images)
        logits, aux = ours.segment(images, with_aux=CASES[name][2])
        raw = ours(ImageBatch(images, [(160, 160)] * 2, [(160, 160)] * 2, [(1.0, 1.0)] * 2))
    assert ref["out"].std() > 1e-2  # a meaningful comparison: outputs vary
    torch.testing.assert_close(logits, ref["out"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(raw.logits, ref["out"], atol=1e-4, rtol=1e-4)
    assert raw.aux_logits is None  # eval mode: the auxiliary head does not run
    if CASES[name][2]:
        torch.testing.assert_close(aux, ref["aux"], atol=1e-4, rtol=1e-4)
    # the builder's own ``weights=`` path loads the same tensors
    ours2 = CASES[name][1](NC, weights=path)
    for (k, v), (k2, v2) in zip(ours.state_dict().items(), ours2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"])
def test_same_logits_on_odd_sizes(name, tmp_path):
    tv = _torchvision(name)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    ours = zoo.build(name, num_classes=NC, weights=path).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        torch.testing.assert_close(ours.segment(x)[0], tv(x)["out"], atol=1e-4, rtol=1e-4)


PRESETS = {  # zoo name -> the weights enum whose ``transforms()`` is torchvision's documented inference preset
    "deeplabv3_resnet50": tvseg.DeepLabV3_ResNet50_Weights,
    "deeplabv3_mobilenet_v3_large": tvseg.DeepLabV3_MobileNet_V3_Large_Weights,
    "fcn_resnet50": tvseg.FCN_ResNet50_Weights,
    "lraspp_mobilenet_v3_large": tvseg.LRASPP_MobileNet_V3_Large_Weights,
}


@pytest.fixture(scope="module")
def photo():
    """A 426 x 640 scene (COCO's typical size; 520 x 781 after the preset's resize: 781 is no multiple of 8)."""
    scene = generate_scene(image_rng(0, 0), SyntheticConfig(height=426, width=640))
    return torch.from_numpy(np.ascontiguousarray(scene.image)).permute(2, 0, 1).float().div(255.0)


def _predict_like_torchvision(model, weights, image: torch.Tensor) -> torch.Tensor:
    """torchvision's documented inference: ``weights.transforms()`` (resize the short side to 520,
    bilinear with antialias; normalise -- the preset object is built locally, nothing is downloaded),
    ``model(batch)["out"]``, logits upsampled bilinearly to the image, argmax. Returns the upsampled logits."""
    preset = weights.DEFAULT.transforms()
    assert preset.resize_size == [520] and preset.antialias
    with torch.no_grad():
        out = model(preset(image)[None])["out"]
    return F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("name,padded_min", [
    pytest.param("deeplabv3_resnet50", 0.002, marks=pytest.mark.slow),
    pytest.param("fcn_resnet50", 0.02, marks=pytest.mark.slow),
    ("deeplabv3_mobilenet_v3_large", 0.003),
    ("lraspp_mobilenet_v3_large", 0.02),
])
def test_predict_gives_torchvisions_label_map(name, padded_min, photo):
    """Default ``predict`` with a torchvision checkpoint = torchvision's inference, pixel for pixel.

    Both pipelines run end to end from the same 426 x 640 image. The resizes differ in float rounding
    only (torchvision resizes, then normalises; sceneparse normalises, then resizes -- an upsampling,
    where antialias changes nothing: the resized inputs agree to 4e-5), so a pixel may differ only where
    the two best classes are that close (measured: 0 px for the DeepLabV3s, 3 px for FCN-R50 and 2 px
    for LR-ASPP, all with a top-2 margin < 3e-5; from the same resized tensor all four agree exactly).

    Before the padding was declared per model, ``predict`` padded 781 to 784 columns: the ASPP's
    image pooling / LR-ASPP's gate averaged over the padding, and the stride-8 logits were upsampled to
    784 columns and cropped instead of to 781 (a sampling grid shifted by up to 3 px at the right). With
    these weights the labels differed on 0.38% (DeepLabV3-R50), 7.5% (FCN-R50), 0.56%
    (DeepLabV3-MobileNetV3) and 4.9% (LR-ASPP) of the pixels; ``padded_min`` is what the padded model
    must still differ by, so the comparison is known to be sensitive.
    """
    tv = _torchvision(name, num_classes=21)
    ref_logits = _predict_like_torchvision(tv, PRESETS[name], photo)
    ref = ref_logits.argmax(0)
    assert ref.unique().numel() >= 4  # random weights, yet a varied label map
    ours = zoo.build(name, num_classes=21, weights=tv.state_dict())
    assert ours.preprocessor.size_divisible == 1  # the dilated twins take any size, as in torchvision
    labels = ours.predict([photo])[0].labels
    assert labels.shape == (426, 640)
    differ = labels != ref
    top2 = ref_logits.topk(2, dim=0).values
    margin = top2[0] - top2[1]
    assert differ.float().mean() < 1e-4, f"{int(differ.sum())} pixels differ"
    assert not differ[margin > 1e-3].any(), margin[differ]  # only float ties may differ
    if padded_min is not None:  # the old default: padded to a multiple of 8
        padded = zoo.build(name, num_classes=21, weights=tv.state_dict(), size_divisible=8)
        before = (padded.predict([photo])[0].labels != ref).float().mean()
        assert before > padded_min, float(before)


def test_a_changed_weight_is_noticed(images, tmp_path):
    # the comparison above would fail if a single tensor were mis-mapped
    tv = _torchvision("lraspp_mobilenet_v3_large")
    path = tmp_path / "tv.pth"
    state = tv.state_dict()
    state["backbone.7.block.1.0.weight"] = state["backbone.7.block.1.0.weight"] * 1.01
    torch.save(state, path)
    ours = zoo.build("lraspp_mobilenet_v3_large", num_classes=NC, weights=path).eval()
    with torch.no_grad():
        diff = (ours.segment(images)[0] - tv(images)["out"]).abs().max()
    assert diff > 1e-3


def test_checkpoint_errors_list_the_keys(tmp_path):
    tv = _torchvision("lraspp_mobilenet_v3_large", num_classes=21)
    state = tv.state_dict()
    path = tmp_path / "c21.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:  # other number of classes
        zoo.build("lraspp_mobilenet_v3_large", num_classes=NC, weights=path)
    assert any("low_classifier.weight" in m for m in e.value.mismatched)
    assert str(path) in str(e.value)

    del state["classifier.cbr.1.running_var"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as e:
        lraspp_mobilenet_v3_large(21, weights=path)
    assert e.value.missing == ["head.high_proj.bn.running_var"]
    assert e.value.unexpected == ["extra.weight"]

    # a torchvision checkpoint with an aux head into a model built without one
    torch.save(_torchvision("deeplabv3_mobilenet_v3_large", aux=True).state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        deeplabv3_mobilenet_v3_large(NC, aux_loss=False, weights=path)
    assert "aux_classifier.0.weight" in e.value.unexpected and not e.value.missing

    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        zoo.build("fcn8s_resnet18", num_classes=NC, weights=bad)
    with pytest.raises(CheckpointError, match="not found"):
        zoo.build("unet", num_classes=NC, weights=tmp_path / "missing.pth")


def test_imagenet_trunks_load_into_the_backbones(tmp_path):
    torch.manual_seed(0)
    r18 = resnet18(weights=None)
    torch.save(r18.state_dict(), tmp_path / "r18.pth")
    model = deeplabv3_resnet18(NC, weights_backbone=tmp_path / "r18.pth")
    for k, v in model.backbone.trunk.state_dict().items():  # torchvision's names under ``trunk.``
        assert torch.equal(v, r18.state_dict()[k])
    mb = mobilenet_v3_large(weights=None, dilated=True)
    torch.save(mb.state_dict(), tmp_path / "mb.pth")
    lr = lraspp_mobilenet_v3_large(NC, weights_backbone=tmp_path / "mb.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(lr.backbone(x)[-1], mb.eval().features(x))
    with pytest.raises(CheckpointError) as e:  # a ResNet-18 file for a MobileNet trunk
        lraspp_mobilenet_v3_large(NC, weights_backbone=tmp_path / "r18.pth")
    assert e.value.missing and e.value.unexpected and str(tmp_path / "r18.pth") in str(e.value)


def test_sceneparse_checkpoints_round_trip(tmp_path):
    model = deeplabv3_resnet18(3)
    _randomise_bn(model, run=model.segment)  # non-default buffers, so a load that kept the defaults would be noticed
    ckpt = {"model": model.state_dict(), "config": {}, "categories": [], "sceneparse_version": "0.1.0"}
    torch.save(ckpt, tmp_path / "sp.pth")
    again = zoo.build("deeplabv3_resnet18", num_classes=3, weights=tmp_path / "sp.pth")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


#: MobileNetV3-Large blocks (Howard et al. 2019, Table 1) with a squeeze-excitation; block 0 has no expansion
_SE_BLOCKS = {3, 4, 5, 10, 11, 12, 13, 14}


def _legacy_key(key: str) -> str:
    """The name a parameter had before the segmentation trunks were the shared backbones: ResNets under
    ``backbone.`` with torchvision's names; MobileNetV3 as ``stem`` / ``blocks.<i>.<part>`` / ``last``."""
    if not key.startswith("backbone.trunk."):
        return key
    rest = key[len("backbone.trunk."):]
    if rest.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
        return "backbone." + rest
    pos, *tail = rest.split(".")
    pos = int(pos)
    if pos in (0, 16):
        part, tensor = tail
        return f"backbone.{'stem' if pos == 0 else 'last'}.{'conv' if part == '0' else 'bn'}.{tensor}"
    i = pos - 1
    parts = (["expand"] if i > 0 else []) + ["depthwise"] + (["se"] if i in _SE_BLOCKS else []) + ["project"]
    _, j, sub, tensor = tail  # block.<j>.<sub>.<tensor>
    name = parts[int(j)]
    inner = sub if name == "se" else ("conv" if sub == "0" else "bn")
    return f"backbone.blocks.{i}.{name}.{inner}.{tensor}"


@pytest.mark.parametrize("name", ["deeplabv3_resnet18", "lraspp_mobilenet_v3_large"])
def test_sceneparse_checkpoints_with_the_older_trunk_keys_still_load(name, tmp_path):
    model = zoo.build(name, num_classes=3)
    _randomise_bn(model, run=model.segment)
    legacy = {_legacy_key(k): v for k, v in model.state_dict().items()}
    assert "backbone.trunk.0.0.weight" not in legacy and len(legacy) == len(model.state_dict())
    if "mobilenet" in name:
        assert {"backbone.stem.conv.weight", "backbone.blocks.0.depthwise.bn.running_var",
                "backbone.blocks.3.se.fc1.weight", "backbone.blocks.14.project.conv.weight",
                "backbone.last.bn.bias"} <= set(legacy)
    else:
        assert {"backbone.conv1.weight", "backbone.layer4.1.bn2.running_mean"} <= set(legacy)
    ckpt = {"model": legacy, "config": {}, "categories": [], "sceneparse_version": "0.1.0"}
    torch.save(ckpt, tmp_path / "old.pth")
    again = zoo.build(name, num_classes=3, weights=tmp_path / "old.pth")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
