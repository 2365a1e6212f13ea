"""torchvision checkpoints for the segmentation models: key maps for the zoo's loader, ImageNet trunks.

Module names here are chosen for reading (``head.aspp.atrous.0``) and differ from torchvision's
``Sequential`` indices (``classifier.0.convs.1``). Every model with a torchvision twin says how its
modules are called there (``torchvision_module_map()``: module path here -> module path there);
:func:`module_map_rules` turns that into the key-renaming rule that
:func:`sceneparse.models.zoo.load_torchvision_checkpoint` applies (``torch.load(..., weights_only=True)``,
strict: a :class:`~sceneparse.errors.CheckpointError` lists missing, unexpected and mismatched keys).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from ...errors import CheckpointError
from ..backbones import MobileNetV3Backbone
from ..zoo import load_checkpoint, load_torchvision_checkpoint, map_torchvision_keys

__all__ = ["legacy_trunk_module_map", "load_imagenet_trunk", "load_weights", "module_map_rules", "prefixed",
           "upgrade_trunk_keys"]

Rule = tuple[str, Callable[[re.Match], str]]


def prefixed(module_map: Mapping[str, str], mine: str, theirs: str) -> dict[str, str]:
    """Prefix both sides of a module map (``mine`` / ``theirs`` may be empty)."""
    def join(p: str, n: str) -> str:
        return f"{p}.{n}" if p and n else (p or n)
    return {join(mine, k): join(theirs, v) for k, v in module_map.items()}


def module_map_rules(module_map: Mapping[str, str]) -> tuple[Rule, ...]:
    """One zoo key rule: checkpoint key ``<their module>.<tensor>`` -> ``<our module>.<tensor>``.
    Keys of modules we do not have pass through unchanged (and are then reported as unexpected)."""
    theirs_to_ours = {v: k for k, v in module_map.items()}
    if len(theirs_to_ours) != len(module_map):
        raise ValueError("module map is not one-to-one")

    def rename(m: re.Match) -> str:
        ours = theirs_to_ours.get(m[1])
        return f"{ours}.{m[2]}" if ours is not None else m[0]

    return ((r"^(.+)\.([^.]+)$", rename),)


def load_imagenet_trunk(trunk: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> None:
    """Initialise a trunk from a torchvision ImageNet classifier state dict (``resnetXX`` /
    ``mobilenet_v3_large``, file or mapping); the classifier layers (``fc.*`` / ``classifier.*``) are dropped, and
    so are the stages a truncated ResNet trunk does not have."""
    path = None
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = os.fspath(source)
        if not Path(path).is_file():
            raise CheckpointError("backbone checkpoint file not found", path=path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling / zip errors, objects refused by weights_only
            raise CheckpointError(f"cannot read backbone checkpoint ({type(e).__name__}: {e})", path=path) from e
        if not isinstance(state, Mapping):
            raise CheckpointError(f"expected a state dict, got {type(state).__name__}", path=path)
    if isinstance(trunk, MobileNetV3Backbone):
        module_map = prefixed(trunk.torchvision_module_map(), "", "features")
        head = "classifier."
    else:
        module_map = trunk.torchvision_module_map()  # type: ignore[operator]
        head = "fc."
    # the classifier, and the stages a truncated trunk does not build (``ResNetBackbone.dropped_layers``)
    skipped = (head, *(f"{name}." for name in getattr(trunk, "dropped_layers", ())))
    state = {k: v for k, v in state.items() if not k.startswith(skipped)}
    try:
        load_torchvision_checkpoint(trunk, state, rules=module_map_rules(module_map))
    except CheckpointError as e:
        if path is None:
            raise
        raise CheckpointError(f"backbone checkpoint does not fit {type(trunk).__name__}", missing=e.missing,
                              unexpected=e.unexpected, mismatched=e.mismatched, path=path) from None


def load_weights(model: nn.Module, weights=None, weights_backbone=None) -> nn.Module:
    """What the builders' ``weights=`` / ``weights_backbone=`` do: ``weights``, a whole-model checkpoint
    (torchvision or sceneparse, :func:`~sceneparse.models.zoo.load_checkpoint`); else
    ``weights_backbone``, a torchvision ImageNet classifier for ``model.backbone``
    (:func:`load_imagenet_trunk`). Returns ``model``."""
    if weights is not None:
        load_checkpoint(model, weights)
    elif weights_backbone is not None:
        load_imagenet_trunk(model.backbone, weights_backbone)
    return model


def legacy_trunk_module_map(trunk: nn.Module) -> dict[str, str]:
    """Module names of a trunk (``trunk.*``) -> the names sceneparse's segmentation trunks had before
    they were the shared backbones: torchvision's own names for the ResNets (``conv1``, ``layer1.0.conv1``,
    ...); for MobileNetV3-Large ``stem``, ``blocks.<i>.{expand,depthwise,se,project}``, ``last`` with
    ``conv`` / ``bn`` (or ``fc1`` / ``fc2`` in ``se``) inside."""
    if not isinstance(trunk, MobileNetV3Backbone):
        return {ours: theirs for ours, theirs in trunk.torchvision_module_map().items()}
    blocks = list(trunk.trunk)
    out = {}
    for i, block in enumerate(blocks):
        if i in (0, len(blocks) - 1):  # the first and the last conv: Conv2dNormActivation
            name = "stem" if i == 0 else "last"
            out.update({f"trunk.{i}.0": f"{name}.conv", f"trunk.{i}.1": f"{name}.bn"})
            continue
        parts = list(block.block)
        for j, part in enumerate(parts):
            if isinstance(part, SqueezeExcitation):
                out.update({f"trunk.{i}.block.{j}.fc1": f"blocks.{i - 1}.se.fc1",
                            f"trunk.{i}.block.{j}.fc2": f"blocks.{i - 1}.se.fc2"})
                continue
            name = "project" if j == len(parts) - 1 else "depthwise" if part[0].groups > 1 else "expand"
            out.update({f"trunk.{i}.block.{j}.0": f"blocks.{i - 1}.{name}.conv",
                        f"trunk.{i}.block.{j}.1": f"blocks.{i - 1}.{name}.bn"})
    return out


def upgrade_trunk_keys(state: Mapping[str, torch.Tensor], trunk: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the ``backbone.*`` keys of an older sceneparse segmentation checkpoint to ``backbone.trunk.*``
    (:func:`legacy_trunk_module_map`); other keys pass unchanged."""
    rules = module_map_rules(prefixed(legacy_trunk_module_map(trunk), "backbone", "backbone"))
    return map_torchvision_keys(state, rules)[0]
