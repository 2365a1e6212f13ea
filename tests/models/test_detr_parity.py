"""DETR: equality with Hugging Face's ``DetrForObjectDetection`` (test-only reference) on shared random
weights, in the checkpoint layouts sceneparse loads: (a) Hugging Face (transformers 5 names, the Hub
files' transformers-4 names, timm or transformers ResNet trunk) and (b) the DETR release's ``.pth``
(written here from the HF weights by an independent renaming, the correspondence documented by HF's
conversion script). Nothing is downloaded: the reference is built with random weights."""
from __future__ import annotations

import re

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor  # noqa: E402

from sceneparse.errors import CheckpointError  # noqa: E402
from sceneparse.models import zoo  # noqa: E402
from sceneparse.models.detr import DETR_COCO_CLASS_NAMES, DetrPreprocessor, detr_resized_size  # noqa: E402

SMALL = dict(d_model=64, encoder_ffn_dim=96, decoder_ffn_dim=96, encoder_layers=2, decoder_layers=3,
             encoder_attention_heads=4, decoder_attention_heads=4, num_queries=12, num_labels=7)
SMALL_OURS = dict(dim=64, ffn_dim=96, encoder_layers=2, decoder_layers=3, heads=4, num_queries=12, num_classes=7,
                  min_size=96, max_size=160, norm="frozen_bn")
#: ResNet-18 trunks of both HF kinds: timm's (keys as torchvision's) and transformers' own (basic blocks)
TIMM_R18 = dict(backbone="resnet18")


def _hf_resnet18_config():
    from transformers import ResNetConfig

    return dict(use_timm_backbone=False, backbone_config=ResNetConfig(
        layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], out_features=["stage4"]))


def _hf(seed: int = 0, **cfg) -> DetrForObjectDetection:
    """A random HF DETR (no pretrained trunk) whose frozen BatchNorm statistics are random too."""
    torch.manual_seed(seed)
    model = DetrForObjectDetection(DetrConfig(use_pretrained_backbone=False, dropout=0.0, **cfg)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if "backbone" not in name or buf.ndim != 1:
                continue
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.2 - 0.1)
            elif name.endswith("weight"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.3 + 0.2)
            elif name.endswith("bias"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.2 - 0.1)
        # spread the heads' outputs (random heads give near-equal scores and boxes: a weak comparison)
        model.class_labels_classifier.weight.mul_(20.0)
        model.bbox_predictor.layers[-1].weight.mul_(20.0)
        model.model.query_position_embeddings.weight.normal_(generator=g)  # distinct queries
    return model


@pytest.fixture(scope="module")
def hf_r50():
    return _hf(0, num_labels=91)


@pytest.fixture(scope="module")
def hf_small():
    return _hf(5, **TIMM_R18, **SMALL)


def _images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:  # smooth images (what photos are), not white noise
        low = torch.rand(3, h // 16 + 1, w // 16 + 1, generator=g)
        out.append(torch.nn.functional.interpolate(low[None], size=(h, w), mode="bilinear")[0].clamp(0, 1))
    return out


def test_resize_rule_and_pixels_match_the_reference_processor():
    proc = DetrImageProcessor()
    pre = DetrPreprocessor()
    for hw in [(480, 640), (750, 1000), (1080, 1920), (333, 1000), (1000, 333), (800, 800), (612, 459), (50, 70)]:
        image = _images([hw])[0]
        ref = proc(images=[image], do_rescale=False, return_tensors="pt")
        batch, _ = pre([image])
        assert batch.image_sizes[0] == tuple(ref["pixel_values"].shape[-2:]) == detr_resized_size(hw, 800, 1333)
        assert (batch.tensor - ref["pixel_values"]).abs().max() < 1e-5
    # a batch pads to its largest image; the mask is the reference's pixel_mask
    images = _images([(480, 640), (1000, 333)])
    ref = proc(images=images, do_rescale=False, return_tensors="pt")
    model = zoo.build("detr_resnet18", num_classes=3, min_size=800, max_size=1333)
    batch, _ = model.prepare(images)
    assert batch.tensor.shape == ref["pixel_values"].shape
    assert torch.equal(model.valid_mask(batch).long(), ref["pixel_mask"])
    assert (batch.tensor - ref["pixel_values"]).abs().max() < 1e-5


@pytest.mark.slow  # four ResNet-50 DETR passes at 800 x 1066 (~130 s under a load of 7 on 2 cores)
def test_r50_hf_checkpoint_equal_outputs_and_detections(hf_r50, tmp_path):
    """facebook/detr-resnet-50's architecture (timm ResNet-50 trunk, 91 labels): the state dict saved to a
    file loads through the zoo; 640x480 and 1000x750 images give the reference's logits and boxes
    (1e-4) and its post-processed detections."""
    path = tmp_path / "hf_detr.pth"
    torch.save(hf_r50.state_dict(), path)
    model = zoo.build("detr_resnet50", weights=path).eval()
    assert model.info.class_names == DETR_COCO_CLASS_NAMES and model.info.num_classes == 91
    images = _images([(480, 640), (750, 1000)])
    proc = DetrImageProcessor()
    inputs = proc(images=images, do_rescale=False, return_tensors="pt")
    with torch.no_grad():
        ref = hf_r50(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        batch, _ = model.prepare(images)
        raw = model(batch)
    assert (raw.pred_logits - ref.logits).abs().max() < 1e-4
    assert (raw.pred_boxes - ref.pred_boxes).abs().max() < 1e-4
    sizes = [tuple(im.shape[-2:]) for im in images]
    ref_dets = proc.post_process_object_detection(ref, threshold=0.0, target_sizes=sizes)
    ours = model.postprocess(raw, batch)
    for r, o in zip(ref_dets, ours):
        assert torch.equal(o.labels, r["labels"])
        assert (o.scores - r["scores"]).abs().max() < 1e-5
        assert (o.boxes - r["boxes"]).abs().max() < 1e-2  # px at 1000 px: 1e-5 relative


def _v4_names(state: dict) -> dict:
    """transformers 5 key names -> those of the Hub files (transformers 4)."""
    out = {}
    for k, v in state.items():
        k = k.replace("model.backbone.model.", "model.backbone.conv_encoder.model.").replace(".o_proj.", ".out_proj.")
        out[re.sub(r"layers\.(\d+)\.mlp\.fc", r"layers.\1.fc", k)] = v
    return out


def _to_release_layout(state: dict) -> dict:
    """HF DETR -> the DETR release's layout, written independently of sceneparse's loader from HF's
    conversion script's table (reversed): in_proj packs q, k, v."""
    out = {}
    for k, v in state.items():
        if k.startswith("model.backbone.model."):
            out["backbone.0.body." + k[len("model.backbone.model."):]] = v
            continue
        m = re.match(r"model\.(encoder|decoder)\.layers\.(\d+)\.(.+)", k)
        if m:
            part, i, rest = m.groups()
            pre = f"transformer.{part}.layers.{i}."
            attn = re.match(r"(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|o_proj)\.(weight|bias)", rest)
            if attn:
                name = "self_attn" if attn[1] == "self_attn" else "multihead_attn"
                if attn[2] == "o_proj":
                    out[f"{pre}{name}.out_proj.{attn[3]}"] = v
                elif attn[2] == "q_proj":
                    base = f"model.{part}.layers.{i}.{attn[1]}"
                    out[f"{pre}{name}.in_proj_{attn[3]}"] = torch.cat(
                        [state[f"{base}.{p}.{attn[3]}"] for p in ("q_proj", "k_proj", "v_proj")])
                continue
            table = {"mlp.fc1": "linear1", "mlp.fc2": "linear2", "self_attn_layer_norm": "norm1",
                     "final_layer_norm": "norm2" if part == "encoder" else "norm3", "encoder_attn_layer_norm": "norm2"}
            mod, param = rest.rsplit(".", 1)
            out[f"{pre}{table[mod]}.{param}"] = v
            continue
        table = {"model.decoder.layernorm": "transformer.decoder.norm", "model.input_projection": "input_proj",
                 "model.query_position_embeddings": "query_embed", "class_labels_classifier": "class_embed"}
        mod, param = k.rsplit(".", 1)
        if mod in table:
            out[f"{table[mod]}.{param}"] = v
        else:
            assert mod.startswith("bbox_predictor.layers."), k
            out[k.replace("bbox_predictor", "bbox_embed")] = v
    return out


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_hub_names_and_release_layout_load_the_same_weights(hf_small, tmp_path):
    """The Hub files' transformers-4 names and the release's ``{'model': state_dict}`` .pth give the same
    weights as the transformers-5 state dict (hence the same outputs as the reference)."""
    ref = zoo.build("detr_resnet18", weights=hf_small.state_dict(), **SMALL_OURS)
    v4 = zoo.build("detr_resnet18", weights=_v4_names(hf_small.state_dict()), **SMALL_OURS)
    _same_weights(ref, v4)
    path = tmp_path / "detr-release.pth"
    torch.save({"model": _to_release_layout(hf_small.state_dict())}, path)
    release = zoo.build("detr_resnet18", weights=path, **SMALL_OURS)
    _same_weights(ref, release)


@pytest.mark.parametrize("timm", [True, False], ids=["timm_trunk", "transformers_resnet_trunk"])
def test_small_config_both_trunks_and_release_layout_equal_outputs(timm, hf_small):
    """A small transformer on both HF trunk kinds (timm's ResNet-18 and transformers' own ResNet-18):
    equal logits / boxes on a padded batch of two sizes, in the HF and the release layouts."""
    hf = hf_small if timm else _hf(3, **_hf_resnet18_config(), **SMALL)
    images = _images([(96, 128), (120, 80)], seed=1)
    for weights in (hf.state_dict(), {"model": _to_release_layout(hf.state_dict())} if timm else None):
        if weights is None:
            continue
        model = zoo.build("detr_resnet18", weights=weights, **SMALL_OURS).eval()
        with torch.no_grad():
            batch, _ = model.prepare(images)
            raw = model(batch)
            ref = hf(pixel_values=batch.tensor, pixel_mask=model.valid_mask(batch).long())
        assert (~model.valid_mask(batch)).any()  # the padding mask matters
        assert (raw.pred_logits - ref.logits).abs().max() < 1e-4
        assert (raw.pred_boxes - ref.pred_boxes).abs().max() < 1e-4
        # predict = prepare + forward + the reference post-processing, thresholded like it
        sizes = [tuple(im.shape[-2:]) for im in images]
        scores = DetrImageProcessor().post_process_object_detection(ref, threshold=0.0, target_sizes=sizes)[0]["scores"]
        s = scores.sort().values
        gap = int((s[1:] - s[:-1]).argmax())
        conf = float(s[gap] + s[gap + 1]) / 2  # a threshold far from every score
        ref_kept = DetrImageProcessor().post_process_object_detection(ref, threshold=conf, target_sizes=sizes)
        assert len(ref_kept[0]["scores"]) > 0
        for kept, r in zip(model.predict(images, conf=conf), ref_kept):
            assert torch.equal(kept.labels, r["labels"])
            if len(kept):
                assert (kept.boxes - r["boxes"]).abs().max() < 1e-3 and (kept.scores - r["scores"]).abs().max() < 1e-5


def test_checkpoint_that_does_not_fit_names_the_keys(hf_small):
    state = hf_small.state_dict()
    bad = dict(state)
    del bad["model.decoder.layers.2.encoder_attn.k_proj.weight"]  # q/v left unpacked: named
    bad["class_labels_classifier.weight"] = bad["class_labels_classifier.weight"][:5]
    bad["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        zoo.build("detr_resnet18", weights=bad, **SMALL_OURS)
    text = str(e.value)
    assert "transformer.decoder.layers.2.cross_attn.in_proj_weight" in text  # missing
    assert "transformer.decoder.layers.2.cross_attn.q_proj.weight" in text  # unexpected
    assert "class_embed.weight" in text and "model.extra.weight" in text
    # another number of classes: the class head is skipped, the rest loads
    model = zoo.build("detr_resnet18", **{**SMALL_OURS, "num_classes": 5})
    result = zoo.load_checkpoint(model, state, strict=False)
    assert [m.split(" ")[0] for m in result.mismatched] == ["class_embed.bias", "class_embed.weight"]
    assert not result.missing and not result.unexpected
