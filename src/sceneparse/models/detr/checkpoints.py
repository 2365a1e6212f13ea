"""DETR checkpoint layouts -> sceneparse's DETR keys.

sceneparse's DETR keeps the module names of the DETR release (facebookresearch/detr), but for the
trunk (``backbone.trunk.*``, :class:`~sceneparse.models.backbones.ResNetBackbone`) and the decoder's
cross-attention (``cross_attn``, the release's ``multihead_attn``). Two foreign layouts load:

(b) the DETR release's ``.pth`` (``{"model": state_dict}``): ``backbone.0.body.<torchvision ResNet
    key>``, ``transformer.{encoder,decoder}.layers.<i>.{self_attn,multihead_attn}.in_proj_weight``
    (packed ``q | k | v``), ``linear1/2``, ``norm1/2(/3)``, ``transformer.decoder.norm``,
    ``query_embed``, ``input_proj``, ``class_embed``, ``bbox_embed.layers.<i>``: a renaming
    (:data:`DETR_ORIGINAL_KEY_RULES`).
(a) Hugging Face ``DetrForObjectDetection`` (``facebook/detr-resnet-50``): separate ``q_proj`` /
    ``k_proj`` / ``v_proj`` (packed here into ``in_proj_*``), ``o_proj`` (transformers >= 5) or
    ``out_proj`` (the Hub files, transformers 4), ``fc1/fc2`` or ``mlp.fc1/fc2``, the LayerNorms by
    role (``self_attn_layer_norm`` -> ``norm1``; encoder ``final_layer_norm`` -> ``norm2``; decoder
    ``encoder_attn_layer_norm`` -> ``norm2``, ``final_layer_norm`` -> ``norm3``), ``decoder.layernorm``,
    ``query_position_embeddings``, ``input_projection``, ``class_labels_classifier``,
    ``bbox_predictor``; the trunk as timm's ResNet (``model.backbone.conv_encoder.model.*`` in the Hub
    files, ``model.backbone.model.*`` in transformers 5; timm's ResNet keys are torchvision's) or as
    transformers' own ResNet (``embedder`` / ``encoder.stages``). :func:`convert_hf_state_dict`.

The correspondence is the one documented by Hugging Face's conversion script
(``convert_detr_original_pytorch_checkpoint_to_pytorch.py``).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import torch

__all__ = ["DETR_ORIGINAL_KEY_RULES", "is_hf_layout", "convert_hf_state_dict"]


def _sub(fmt: str) -> Callable[[re.Match], str]:
    return lambda m: fmt.format(*m.groups())


#: DETR release key -> sceneparse key (first match wins; keys no rule matches are kept as they are).
DETR_ORIGINAL_KEY_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^backbone\.0\.body\.(.+)$", _sub("backbone.trunk.{0}")),
    (r"^(transformer\.decoder\.layers\.\d+)\.multihead_attn\.(.+)$", _sub("{0}.cross_attn.{1}")),
)

#: transformers' ResNet (``ResNetBackbone``) key -> torchvision's, inside the trunk.
_HF_RESNET_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^embedder\.embedder\.convolution\.(.+)$", _sub("conv1.{0}")),
    (r"^embedder\.embedder\.normalization\.(.+)$", _sub("bn1.{0}")),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.(.+)$",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0.{m[3]}"),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.(.+)$",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1.{m[3]}"),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.convolution\.(.+)$",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}.{m[4]}"),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.(\d+)\.normalization\.(.+)$",
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.{m[4]}"),
)

_ENC_NORMS = {"self_attn_layer_norm": "norm1", "final_layer_norm": "norm2"}
_DEC_NORMS = {"self_attn_layer_norm": "norm1", "encoder_attn_layer_norm": "norm2", "final_layer_norm": "norm3"}


def _layer_key(part: str, layer: str, rest: str) -> str:
    """``rest`` of an HF encoder / decoder layer key -> sceneparse's (q/k/v kept apart for packing)."""
    pre = f"transformer.{part}.layers.{layer}"
    m = re.match(r"^(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|o_proj|out_proj)\.(weight|bias)$", rest)
    if m:
        attn = "self_attn" if m[1] == "self_attn" else "cross_attn"
        proj = "out_proj" if m[2] in ("o_proj", "out_proj") else m[2]
        return f"{pre}.{attn}.{proj}.{m[3]}"
    m = re.match(r"^(?:mlp\.)?fc([12])\.(weight|bias)$", rest)
    if m:
        return f"{pre}.linear{m[1]}.{m[2]}"
    m = re.match(r"^(\w+_layer_norm)\.(weight|bias)$", rest)
    norms = _ENC_NORMS if part == "encoder" else _DEC_NORMS
    if m and m[1] in norms:
        return f"{pre}.{norms[m[1]]}.{m[2]}"
    return f"{pre}.{rest}"  # unknown: kept (reported as unexpected)


def _hf_key(key: str) -> str:
    """One HF ``DetrForObjectDetection`` key -> sceneparse's (q/k/v not yet packed)."""
    m = re.match(r"^model\.backbone\.(?:conv_encoder\.)?model\.(.+)$", key)
    if m:
        trunk = m[1]
        for pattern, fn in _HF_RESNET_RULES:
            r = re.match(pattern, trunk)
            if r:
                trunk = fn(r)
                break
        return f"backbone.trunk.{trunk}"
    m = re.match(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$", key)
    if m:
        return _layer_key(m[1], m[2], m[3])
    fixed = {"model.decoder.layernorm.weight": "transformer.decoder.norm.weight",
             "model.decoder.layernorm.bias": "transformer.decoder.norm.bias",
             "model.query_position_embeddings.weight": "query_embed.weight",
             "model.input_projection.weight": "input_proj.weight",
             "model.input_projection.bias": "input_proj.bias",
             "class_labels_classifier.weight": "class_embed.weight",
             "class_labels_classifier.bias": "class_embed.bias"}
    if key in fixed:
        return fixed[key]
    m = re.match(r"^bbox_predictor\.layers\.(\d+)\.(weight|bias)$", key)
    if m:
        return f"bbox_embed.layers.{m[1]}.{m[2]}"
    return key


def is_hf_layout(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a Hugging Face ``DetrForObjectDetection`` state dict."""
    return "class_labels_classifier.weight" in state or any(k.startswith("model.backbone.") for k in state)


def convert_hf_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """An HF ``DetrForObjectDetection`` state dict -> sceneparse's DETR keys: renamed, and each
    attention's ``q_proj`` / ``k_proj`` / ``v_proj`` packed into ``in_proj_weight`` / ``in_proj_bias``
    (rows ``q | k | v``). An attention missing one of the three keeps them apart (the load then
    names them)."""
    renamed = {_hf_key(k): v for k, v in state.items()}
    out: dict[str, Any] = {}
    for key, value in renamed.items():
        m = re.match(r"^(.+)\.(q_proj|k_proj|v_proj)\.(weight|bias)$", key)
        if not m:
            out[key] = value
            continue
        parts = [renamed.get(f"{m[1]}.{p}.{m[3]}") for p in ("q_proj", "k_proj", "v_proj")]
        if any(p is None for p in parts) or not all(isinstance(p, torch.Tensor) for p in parts):
            out[key] = value
        elif m[2] == "q_proj":
            out[f"{m[1]}.in_proj_{m[3]}"] = torch.cat(parts, dim=0)
    return out
