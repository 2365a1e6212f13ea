"""Model zoo: one NAME -> builder registry, and loading of local checkpoints (no downloads).

* ``@register(name)`` adds a builder ``fn(*, num_classes=None, **kw) -> nn.Module``; ``build(name,
  num_classes=..., weights=PATH, **kw)`` calls it and, if ``weights`` is given, loads that file.
* :func:`load_torchvision_checkpoint` loads a *torchvision* state dict (e.g. the released
  ``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``) into a sceneparse model through a key-mapping table
  (:data:`TORCHVISION_RCNN_KEY_RULES` for the R-CNN family; other models may define
  ``torchvision_key_rules()``). Both the current and the legacy torchvision key names are accepted.
* sceneparse's own checkpoints (``{model, config, categories, sceneparse_version}``) load as they are
  (a model may rename keys of an older layout of its own: ``upgrade_state_dict(state) -> state``).

A checkpoint that does not fit raises :class:`~sceneparse.errors.CheckpointError` listing the
missing, unexpected and shape-mismatched keys. Files are read with ``torch.load(...,
weights_only=True)``: a checkpoint cannot run code.

Label convention of torchvision's COCO detectors: their class ``L`` (1..90, 0 = background) is the
COCO category id ``L``; sceneparse reports it as label ``L - 1``, so build them with
``num_classes=90`` (and ``num_classes=1`` for the person keypoint model). torchvision's legacy
``COCO_V1`` R-50 checkpoints were trained with FrozenBatchNorm ``eps = 0``: pass ``bn_eps=0.0`` to
reproduce torchvision's outputs with them.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
#: Packages whose import registers more names (imported lazily by :func:`build` / :func:`available`).
_PLUGIN_PACKAGES = ("sceneparse.models.segmentation",)


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("fcn_resnet50") def build_fcn(*, num_classes=None, **kw) -> nn.Module``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model name {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_plugins() -> None:
    for pkg in _PLUGIN_PACKAGES:
        if importlib.util.find_spec(pkg) is not None:
            importlib.import_module(pkg)


def available() -> list[str]:
    """All registered model names, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def build(name: str, num_classes: int | None = None, weights: str | os.PathLike | Mapping[str, Any] | None = None,
          **kwargs) -> nn.Module:
    """Build the model ``name``; ``num_classes`` = foreground classes (``None``: the builder's default);
    ``weights``: a local checkpoint file (torchvision or sceneparse) or a state dict; other keyword
    arguments go to the builder."""
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = _REGISTRY[name](**kwargs)
    if weights is not None:
        load_checkpoint(model, weights)
    return model


# ---- checkpoint loading -------------------------------------------------------------------------

@dataclass
class LoadResult:
    """What a non-strict load did: keys loaded, and those skipped (missing/unexpected/mismatched)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def _read(source, what: str) -> tuple[Any, str | None]:
    if isinstance(source, Mapping):
        return source, None
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} checkpoint file not found", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), path
    except Exception as e:  # unpickling / zip errors: report them as a bad checkpoint, naming the file
        raise CheckpointError(f"cannot read {what} checkpoint ({type(e).__name__}: {e})", path=path) from e


def _is_sceneparse_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "sceneparse_version" in obj and isinstance(obj.get("model"), Mapping)


def load_checkpoint(model: nn.Module, source, *, strict: bool = True) -> LoadResult:
    """Load a sceneparse checkpoint (``{model, ...}``) or, failing that, a torchvision state dict."""
    obj, path = _read(source, "model")
    if _is_sceneparse_checkpoint(obj):
        state = dict(obj["model"])
        upgrade = getattr(model, "upgrade_state_dict", None)  # keys of older sceneparse layouts
        return _load_mapped(model, upgrade(state) if callable(upgrade) else state, path, strict, "sceneparse")
    return load_torchvision_checkpoint(model, obj if path is None else path, strict=strict)


def _sub(fmt: str) -> Callable[[re.Match], str]:
    return lambda m: fmt.format(*m.groups())


#: torchvision R-CNN key -> sceneparse key. Rules are tried in order; the first match wins.
#: Covers Faster/Mask/Keypoint R-CNN with ResNet or MobileNetV3 bodies, current and legacy key names.
TORCHVISION_RCNN_KEY_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^backbone\.body\.(.+)$", _sub("backbone.trunk.{0}")),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)(?:\.0)?\.(weight|bias)$", _sub("neck.lateral.{0}.{1}")),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)(?:\.0)?\.(weight|bias)$", _sub("neck.output.{0}.{1}")),
    (r"^rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)$", _sub("rpn.head.conv.{0}")),
    (r"^rpn\.head\.cls_logits\.(weight|bias)$", _sub("rpn.head.objectness.{0}")),
    (r"^rpn\.head\.bbox_pred\.(weight|bias)$", _sub("rpn.head.deltas.{0}")),
    (r"^roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)$", _sub("roi_box.head.{0}.{1}")),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", _sub("roi_box.predictor.{0}.{1}")),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$", _sub("roi_mask.head.convs.{0}.{1}")),
    (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$",
     lambda m: f"roi_mask.head.convs.{int(m[1]) - 1}.{m[2]}"),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)$", _sub("roi_mask.head.deconv.{0}")),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)$", _sub("roi_mask.head.logits.{0}")),
    (r"^roi_heads\.keypoint_head\.(\d+)\.(weight|bias)$",
     lambda m: f"roi_keypoint.head.convs.{int(m[1]) // 2}.{m[2]}"),
    (r"^roi_heads\.keypoint_predictor\.kps_score_lowres\.(weight|bias)$", _sub("roi_keypoint.head.deconv.{0}")),
)


def _rules_for(model: nn.Module) -> Sequence[tuple[str, Callable[[re.Match], str]]]:
    own = getattr(model, "torchvision_key_rules", None)
    if callable(own):
        return tuple(own())
    from .detectors.two_stage import TwoStageDetector  # local: zoo must import without the detectors

    if isinstance(model, TwoStageDetector):
        return TORCHVISION_RCNN_KEY_RULES
    return ()


def map_torchvision_keys(state_dict: Mapping[str, Any], rules) -> tuple[dict[str, Any], list[str]]:
    """Rename keys by ``rules`` (identity when no rule matches). Returns the mapping and the keys that
    no rule matched (only meaningful when rules are given)."""
    compiled = [(re.compile(p), f) for p, f in rules]
    out, unmatched = {}, []
    for key, value in state_dict.items():
        for pattern, fn in compiled:
            m = pattern.match(key)
            if m:
                out[fn(m)] = value
                break
        else:
            out[key] = value
            if compiled:
                unmatched.append(key)
    return out, unmatched


def load_torchvision_checkpoint(model: nn.Module, source, *, strict: bool = True, rules=None) -> LoadResult:
    """Load torchvision weights (a path or a state dict) into ``model`` via its key-mapping table.

    ``strict=True`` raises :class:`CheckpointError` if any key is missing, unexpected or of another
    shape; ``strict=False`` loads what fits (e.g. a COCO checkpoint into a model with another number
    of classes: the class-specific layers are skipped) and reports the rest in the result.
    """
    obj, path = _read(source, "torchvision")
    if _is_sceneparse_checkpoint(obj):
        raise CheckpointError("this is a sceneparse checkpoint, not a torchvision state dict; "
                              "use load_checkpoint / build(weights=...)", path=path)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping) and not any(
            isinstance(v, torch.Tensor) for v in obj.values()):
        obj = obj["model"]  # torchvision's training references save {"model": state_dict, ...}
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"expected a state dict (str -> Tensor), got {type(obj).__name__}", path=path)
    mapped, _ = map_torchvision_keys(obj, _rules_for(model) if rules is None else rules)
    return _load_mapped(model, mapped, path, strict, "torchvision")


def _load_mapped(model: nn.Module, state: dict[str, Any], path: str | None, strict: bool, kind: str) -> LoadResult:
    own = model.state_dict()
    # BatchNorm's step counter is bookkeeping, not a weight: FrozenBatchNorm has none, and a
    # FrozenBatchNorm checkpoint loaded into BatchNorm keeps the model's own counter.
    state = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)}
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(f"{k} (checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)})"
                        for k, v in state.items()
                        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape))
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(f"{kind} checkpoint does not fit {type(model).__name__}", missing=missing,
                              unexpected=unexpected, mismatched=mismatched, path=path)
    bad = {m.split(" ")[0] for m in mismatched}
    fitting = {k: v for k, v in state.items() if k in own and k not in bad}
    model.load_state_dict(fitting, strict=False)
    return LoadResult(sorted(fitting), missing, unexpected, mismatched)


__all__ = ["register", "build", "available", "load_checkpoint", "load_torchvision_checkpoint",
           "map_torchvision_keys", "LoadResult", "TORCHVISION_RCNN_KEY_RULES"]


# ---- the R-CNN family ---------------------------------------------------------------------------
# Detector classes are imported inside the builders so that importing the zoo (to register other
# models) stays light.

def _resnet(depth: int, norm: str, bn_eps: float, trainable_layers: int):
    from .backbones.resnet import ResNetBackbone

    return ResNetBackbone(depth, norm=norm, bn_eps=bn_eps, trainable_layers=trainable_layers)


@register("fasterrcnn_resnet50_fpn")
def fasterrcnn_resnet50_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                            trainable_layers: int = 3, **kwargs) -> nn.Module:
    """torchvision's ``fasterrcnn_resnet50_fpn`` architecture (800/1333 px, 5 FPN levels)."""
    from .detectors.two_stage import FasterRCNN

    return FasterRCNN(_resnet(50, norm, bn_eps, trainable_layers), num_classes, **kwargs)


@register("maskrcnn_resnet50_fpn")
def maskrcnn_resnet50_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                          trainable_layers: int = 3, **kwargs) -> nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` architecture."""
    from .detectors.two_stage import MaskRCNN

    return MaskRCNN(_resnet(50, norm, bn_eps, trainable_layers), num_classes, **kwargs)


@register("keypointrcnn_resnet50_fpn")
def keypointrcnn_resnet50_fpn(*, num_classes: int = 1, num_keypoints: int = 17, norm: str = "frozen_bn",
                              bn_eps: float = 1e-5, trainable_layers: int = 3, **kwargs) -> nn.Module:
    """torchvision's ``keypointrcnn_resnet50_fpn`` architecture (person + 17 COCO keypoints)."""
    from .detectors.two_stage import KeypointRCNN

    return KeypointRCNN(_resnet(50, norm, bn_eps, trainable_layers), num_classes, num_keypoints=num_keypoints,
                        **kwargs)


@register("fasterrcnn_mobilenet_v3_large_fpn")
def fasterrcnn_mobilenet_v3_large_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                                      trainable_layers: int = 3, **kwargs) -> nn.Module:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``: FPN on the stride-16/32 stages + pool
    level, 15 anchors per location (5 sizes x 3 ratios on every level), RPN score threshold 0.05."""
    from .backbones.mobilenet import MobileNetV3Backbone
    from .detectors.two_stage import FasterRCNN

    kwargs.setdefault("anchor_sizes", ((32.0, 64.0, 128.0, 256.0, 512.0),) * 3)
    kwargs.setdefault("aspect_ratios", ((0.5, 1.0, 2.0),) * 3)
    kwargs.setdefault("rpn_score_thresh", 0.05)
    backbone = MobileNetV3Backbone(norm=norm, bn_eps=bn_eps, trainable_layers=trainable_layers)
    return FasterRCNN(backbone, num_classes, **kwargs)


#: Settings of the small CPU-trainable variants (ResNet-18, trainable BatchNorm, 320 px, slimmer heads).
#: The small R-CNN variants run at 320 px, 0.4x torchvision's 800 px, so their anchors are scaled too:
#: 16-256 px instead of 32-512 px per FPN level. With 32 px anchors a 16 px object reaches IoU 0.25 at
#: best and gets only "low-quality" matches. Measured (Faster R-CNN R18, synthetic 256 px scenes, 300
#: iterations, same seed): box AP 0.018 -> 0.038, AP_small 0.035 -> 0.067, AP_large 0.009 -> 0.053.
SMALL_RCNN_SETTINGS: dict[str, Any] = dict(
    fpn_channels=128, min_size=320, max_size=512, rpn_pre_nms_top_n=(1000, 500), rpn_post_nms_top_n=(500, 300),
    box_batch_size_per_image=128, box_representation_size=256,
    anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,), (256.0,)),
)


def _small(kwargs: dict) -> dict:
    return {**SMALL_RCNN_SETTINGS, **kwargs}


@register("fasterrcnn_resnet18_fpn")
def fasterrcnn_resnet18_fpn(*, num_classes: int, norm: str = "bn", bn_eps: float = 1e-5,
                            trainable_layers: int = 5, **kwargs) -> nn.Module:
    """Small Faster R-CNN for CPU training on the synthetic scenes (see :data:`SMALL_RCNN_SETTINGS`)."""
    from .detectors.two_stage import FasterRCNN

    return FasterRCNN(_resnet(18, norm, bn_eps, trainable_layers), num_classes, **_small(kwargs))


@register("maskrcnn_resnet18_fpn")
def maskrcnn_resnet18_fpn(*, num_classes: int, norm: str = "bn", bn_eps: float = 1e-5, trainable_layers: int = 5,
                          **kwargs) -> nn.Module:
    """Small Mask R-CNN (mask head of 4 convs x 128 channels; ``mask_aligned=True``: half-pixel-aligned
    mask features, targets and pasting, detectron2's convention -- +0.04 mask AP on the synthetic
    scenes, +0.06 on small objects, see :mod:`sceneparse.models.heads.roi_mask`)."""
    from .detectors.two_stage import MaskRCNN

    kwargs.setdefault("mask_conv_channels", (128,) * 4)
    kwargs.setdefault("mask_aligned", True)
    return MaskRCNN(_resnet(18, norm, bn_eps, trainable_layers), num_classes, **_small(kwargs))


@register("keypointrcnn_resnet18_fpn")
def keypointrcnn_resnet18_fpn(*, num_classes: int = 1, num_keypoints: int = 17, norm: str = "bn",
                              bn_eps: float = 1e-5, trainable_layers: int = 5, **kwargs) -> nn.Module:
    """Small Keypoint R-CNN (keypoint head of 4 convs x 128 channels, single scale 320 px)."""
    from .detectors.two_stage import KeypointRCNN

    kwargs.setdefault("keypoint_conv_channels", (128,) * 4)
    return KeypointRCNN(_resnet(18, norm, bn_eps, trainable_layers), num_classes, num_keypoints=num_keypoints,
                        **_small(kwargs))
