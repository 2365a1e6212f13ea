"""Model zoo: registry, torchvision checkpoint loading (key mapping, legacy names) and its errors."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torchvision.models import detection as tvd

from sceneparse.errors import CheckpointError, ConfigError
from sceneparse.models import zoo
from sceneparse.models.detectors.rcnn import TORCHVISION_RCNN_KEY_RULES
from sceneparse.models.backbones import ResNetBackbone
from sceneparse.models.detectors import KeypointRCNN, MaskRCNN

MOBILE = "fasterrcnn_mobilenet_v3_large_fpn"


@pytest.fixture(scope="module")
def mobile_tv_state():
    torch.manual_seed(0)
    return tvd.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()


def test_names_and_builders():
    names = zoo.available()
    for n in ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn", MOBILE,
              "fasterrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn", "keypointrcnn_resnet18_fpn"]:
        assert n in names
    m = zoo.build("maskrcnn_resnet18_fpn", num_classes=4)
    assert isinstance(m, MaskRCNN) and m.num_classes == 4
    assert m.roi_box.predictor.cls_score.out_features == 5  # + background
    assert m.roi_mask.head.logits.out_channels == 5
    assert m.preprocessor.min_sizes == (320,) and m.backbone.depth == 18
    k = zoo.build("keypointrcnn_resnet18_fpn", num_keypoints=5, min_size=200)
    assert isinstance(k, KeypointRCNN) and k.roi_keypoint.head.deconv.out_channels == 5
    assert k.preprocessor.min_sizes == (200,)
    with pytest.raises(ConfigError, match="unknown model 'nope'.*fasterrcnn_resnet50_fpn"):
        zoo.build("nope")


def test_register_decorator():
    @zoo.register("_test_linear")
    def _build(*, num_classes: int = 2, width: int = 3):
        return nn.Linear(width, num_classes)

    try:
        m = zoo.build("_test_linear", num_classes=5, width=7)
        assert (m.in_features, m.out_features) == (7, 5)
        assert zoo.build("_test_linear").out_features == 2
        with pytest.raises(ValueError, match="already registered"):
            zoo.register("_test_linear")(lambda **kw: nn.Identity())
        sd = {"weight": torch.randn(2, 3), "bias": torch.randn(2)}
        m = zoo.build("_test_linear", weights=sd)  # models without a key table load torchvision keys as they are
        assert torch.equal(m.weight, sd["weight"])
    finally:
        zoo._REGISTRY.pop("_test_linear", None)


def test_every_torchvision_key_has_a_rule(mobile_tv_state):
    model = zoo.build(MOBILE, num_classes=90)
    mapped, unmatched = zoo.map_torchvision_keys(mobile_tv_state, TORCHVISION_RCNN_KEY_RULES)
    unmatched = [k for k in unmatched if not k.endswith("num_batches_tracked")]
    assert unmatched == []
    own = model.state_dict()
    assert set(own) == {k for k in mapped if not k.endswith("num_batches_tracked")}
    assert all(own[k].shape == mapped[k].shape for k in own)


def test_load_from_file_copies_every_tensor(mobile_tv_state, tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(mobile_tv_state, path)
    model = zoo.build(MOBILE, num_classes=90, weights=path)
    own = model.state_dict()
    mapped, _ = zoo.map_torchvision_keys(mobile_tv_state, TORCHVISION_RCNN_KEY_RULES)
    for k, v in own.items():
        assert torch.equal(v, mapped[k]), k
    assert torch.equal(own["rpn.head.objectness.weight"], mobile_tv_state["rpn.head.cls_logits.weight"])
    assert torch.equal(own["neck.output.1.bias"], mobile_tv_state["backbone.fpn.layer_blocks.1.0.bias"])


def test_wrong_checkpoints_raise_checkpoint_error_listing_keys(mobile_tv_state, tmp_path):
    with pytest.raises(CheckpointError, match="not found") as e:
        zoo.build(MOBILE, weights=tmp_path / "missing.pth")
    assert "missing.pth" in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read") as e:
        zoo.build(MOBILE, weights=junk)
    assert "junk.pth" in str(e.value)
    # another number of classes: the class-specific layers do not fit
    with pytest.raises(CheckpointError) as e:
        zoo.build(MOBILE, num_classes=10, weights=mobile_tv_state)
    assert sorted(k.split(" ")[0] for k in e.value.mismatched) == [
        "roi_box.predictor.bbox_pred.bias", "roi_box.predictor.bbox_pred.weight",
        "roi_box.predictor.cls_score.bias", "roi_box.predictor.cls_score.weight"]
    assert "(checkpoint (91,) vs model (11,))" in str(e.value)
    # a Faster R-CNN checkpoint for a Mask R-CNN: the mask head is missing
    with pytest.raises(CheckpointError) as e:
        zoo.load_torchvision_checkpoint(MaskRCNN(ResNetBackbone(18), 90),
                                        mobile_tv_state)
    assert "roi_mask.head.logits.weight" in e.value.missing
    assert any(k.startswith("backbone.trunk.16.") for k in e.value.unexpected)  # MobileNet blocks: not a ResNet
    assert "missing keys: " in str(e.value) and "unexpected keys: " in str(e.value)
    # a state dict of something else altogether
    with pytest.raises(CheckpointError, match="unexpected keys: classifier.weight"):
        zoo.build(MOBILE, weights={"classifier.weight": torch.zeros(3)})


def test_non_strict_load_skips_what_does_not_fit(mobile_tv_state):
    model = zoo.build(MOBILE, num_classes=10)
    before = model.roi_box.predictor.cls_score.weight.clone()
    res = zoo.load_torchvision_checkpoint(model, mobile_tv_state, strict=False)
    assert len(res.mismatched) == 4 and not res.missing and not res.unexpected
    assert torch.equal(model.roi_box.predictor.cls_score.weight, before)  # kept its own init
    assert torch.equal(model.roi_box.head.fc6.weight, mobile_tv_state["roi_heads.box_head.fc6.weight"])


@pytest.mark.slow
def test_legacy_torchvision_key_names(tmp_path):
    """torchvision's released checkpoints predate ``Conv2dNormActivation``: ``rpn.head.conv.weight``,
    ``fpn.inner_blocks.0.weight``, ``mask_head.mask_fcn1.weight``. They map to the same modules."""
    torch.manual_seed(0)
    tv = tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()

    def legacy(k: str) -> str:
        k = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", k)
        k = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", k)
        return re.sub(r"^roi_heads\.mask_head\.(\d+)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.", k)

    old = {legacy(k): v for k, v in tv.items()}
    assert "roi_heads.mask_head.mask_fcn4.weight" in old and "rpn.head.conv.weight" in old
    a = zoo.build("maskrcnn_resnet50_fpn", weights=tv).state_dict()
    b = zoo.build("maskrcnn_resnet50_fpn", weights=old).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(b["roi_mask.head.convs.3.weight"], tv["roi_heads.mask_head.3.0.weight"])


def test_sceneparse_checkpoint_round_trip(tmp_path):
    model = zoo.build("fasterrcnn_resnet18_fpn", num_classes=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "config": {"name": "fasterrcnn_resnet18_fpn"}, "categories": [],
                "sceneparse_version": "0.1.0"}, path)
    again = zoo.build("fasterrcnn_resnet18_fpn", num_classes=3, weights=path)
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="sceneparse checkpoint"):
        zoo.load_torchvision_checkpoint(again, path)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        zoo.build("fasterrcnn_resnet18_fpn", num_classes=5, weights=path)
