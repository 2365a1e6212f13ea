"""ResNet trunk (He et al., 2016) returning the stage outputs C2..C5 for a feature pyramid.

The layers are torchvision's ``resnet18/34/50`` definitions (so torchvision/ImageNet checkpoints
fit by name); this module only chooses the normalisation, freezes the early stages and returns the
intermediate feature maps. Stage ``k`` (1..4) is ``layer{k}``; its stride is ``2 ** (k + 1)``.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops.misc import FrozenBatchNorm2d

_DEPTHS = {18: tv_resnet.resnet18, 34: tv_resnet.resnet34, 50: tv_resnet.resnet50}


def norm_layer(norm: str, eps: float):
    """``"frozen_bn"`` (affine + running statistics as constant buffers, the detection default,
    because detection batches are too small for batch statistics) or ``"bn"`` (ordinary BatchNorm)."""
    if norm == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    if norm == "bn":
        return partial(nn.BatchNorm2d, eps=eps)
    raise ValueError(f"norm must be 'frozen_bn' or 'bn', got {norm!r}")


class ResNetBackbone(nn.Module):
    """ResNet-18/34/50 trunk -> ``list[Tensor]`` of the returned stages, finest first.

    Args:
        depth: 18, 34 or 50.
        norm: ``"frozen_bn"`` or ``"bn"`` (see :func:`norm_layer`); ``bn_eps`` is its epsilon
            (torchvision's legacy COCO R-CNN checkpoints were trained with ``0.0``).
        trainable_layers: how many of ``layer4, layer3, layer2, layer1, conv1`` (counted from the
            top) keep gradients; 5 also trains ``bn1``. 0 freezes the whole trunk.
        returned_stages: stages (1..4) whose outputs are returned.

    Attributes:
        out_channels: channels of each returned map; ``strides``: their strides in input pixels.
    """

    def __init__(self, depth: int = 50, *, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                 trainable_layers: int = 3, returned_stages: Sequence[int] = (1, 2, 3, 4)):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        returned_stages = tuple(int(s) for s in returned_stages)
        if not returned_stages or min(returned_stages) < 1 or max(returned_stages) > 4 \
                or list(returned_stages) != sorted(set(returned_stages)):
            raise ValueError(f"returned_stages must be increasing values in 1..4, got {returned_stages}")
        trunk = _DEPTHS[depth](weights=None, norm_layer=norm_layer(norm, bn_eps))
        del trunk.fc, trunk.avgpool  # classification head: not part of a detection backbone
        self.trunk = trunk
        self.depth = depth
        self.returned_stages = returned_stages
        expansion = 4 if depth >= 50 else 1
        self.out_channels = [64 * 2 ** (s - 1) * expansion for s in returned_stages]
        self.strides = [2 ** (s + 1) for s in returned_stages]
        train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            train.append("bn1")
        for name, p in self.trunk.named_parameters():
            if not any(name.startswith(t) for t in train):
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: ``[B, 3, H, W]`` normalised images -> stage outputs ``[B, C_k, H/2^(k+1), W/2^(k+1)]``."""
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        out = []
        for k, layer in enumerate((t.layer1, t.layer2, t.layer3, t.layer4), start=1):
            x = layer(x)
            if k in self.returned_stages:
                out.append(x)
            if k == self.returned_stages[-1]:
                break
        return out


__all__ = ["ResNetBackbone", "norm_layer"]
