"""MobileNetV3-Large trunk (Howard et al., 2019) returning the outputs of some of its stages, for
detection (feature pyramid) and dense prediction (dilated, output stride 16).

The layers are torchvision's ``mobilenet_v3_large(...).features`` (a sequence of inverted-residual
blocks), so torchvision checkpoints fit by index (``trunk.<i>``). A *stage* ends before each strided
block; stage ``k`` is returned as the output of block ``stage_indices[k]`` (torchvision's convention:
block 0, every block with stride > 1, and the last block). ``dilated=True`` is torchvision's
``mobilenet_v3_large(dilated=True)``: the last strided block keeps stride 1 and the blocks from there
on are dilated 2, so the last stages stay at stride 16.

``reduced_tail=True`` is the MobileNetV3 paper's "reduced" last stage (sec. 6.3 / Table 6, used by
SSDLite): the channels of the blocks after the last strided block's input -- its output, the blocks
after it and the final 1x1 conv -- are halved (Large: 160 -> 80 and 960 -> 480; the expansion of the
last strided block itself is unchanged). ``arch="small"`` builds MobileNetV3-Small instead of -Large
(torchvision's ``mobilenet_v3_small(...).features``, the same stage rule).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.models import mobilenetv3 as tv_mobilenet

from .resnet import norm_layer


class MobileNetV3Backbone(nn.Module):
    """MobileNetV3-Large (or -Small) trunk -> ``list[Tensor]`` of the returned stages, finest first.

    Args:
        norm, bn_eps, bn_momentum: see :func:`sceneparse.models.backbones.resnet.norm_layer`
            (torchvision's classification and segmentation MobileNets use BatchNorm with ``1e-3, 0.01``).
        trainable_layers: number of stages, counted from the top, that keep gradients (0..6).
        returned_stages: stage numbers (0..5); default the last two, as torchvision's
            ``fasterrcnn_mobilenet_v3_large_fpn``: the output of the last strided block (160 ch) and of
            the final 1x1 conv (960 ch), *both at stride 32* (a stage is returned at its first block).
            torchvision's segmentation models use ``(2, 5)``: the first block at stride 8 (40 ch) and
            the last conv.
        dilated: output stride 16 instead of 32 (see the module docstring).
        reduced_tail: halve the channels of the last stage (see the module docstring; default off).
        arch: ``"large"`` (default) or ``"small"``.

    Attributes:
        out_channels, strides: channels and strides (input pixels) of the returned maps.
    """

    def __init__(self, *, norm: str = "frozen_bn", bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 trainable_layers: int = 3, returned_stages: Sequence[int] | None = None, dilated: bool = False,
                 reduced_tail: bool = False, arch: str = "large"):
        super().__init__()
        builders = {"large": tv_mobilenet.mobilenet_v3_large, "small": tv_mobilenet.mobilenet_v3_small}
        if arch not in builders:
            raise ValueError(f"arch must be 'large' or 'small', got {arch!r}")
        self.trunk = builders[arch](weights=None, norm_layer=norm_layer(norm, bn_eps, bn_momentum),
                                    dilated=dilated, reduced_tail=reduced_tail).features
        self.dilated = dilated
        self.reduced_tail = bool(reduced_tail)
        self.arch = arch
        blocks = list(self.trunk)
        self.stage_indices = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
        n = len(self.stage_indices)
        if not 0 <= trainable_layers <= n:
            raise ValueError(f"trainable_layers must be in 0..{n}, got {trainable_layers}")
        if returned_stages is None:
            returned_stages = (n - 2, n - 1)
        returned_stages = tuple(int(s) for s in returned_stages)
        if not returned_stages or min(returned_stages) < 0 or max(returned_stages) >= n \
                or list(returned_stages) != sorted(set(returned_stages)):
            raise ValueError(f"returned_stages must be increasing values in 0..{n - 1}, got {returned_stages}")
        self.returned_stages = returned_stages
        self._return_at = [self.stage_indices[s] for s in returned_stages]
        self.out_channels = [blocks[i].out_channels for i in self._return_at]
        stride, strides = 1, []
        for i, b in enumerate(blocks):
            stride *= math.prod(m.stride[0] for m in b.modules() if isinstance(m, nn.Conv2d))
            if i in self._return_at:
                strides.append(stride)
        self.strides = strides
        freeze_before = len(blocks) if trainable_layers == 0 else self.stage_indices[n - trainable_layers]
        for b in blocks[:freeze_before]:
            for p in b.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        last = self._return_at[-1]
        for i, block in enumerate(self.trunk):
            x = block(x)
            if i in self._return_at:
                out.append(x)
            if i == last:
                break
        return out

    def torchvision_module_map(self) -> dict[str, str]:
        """Module names here -> in ``torchvision.models.mobilenet_v3_large().features`` (``trunk.<i>...``
        -> ``<i>...``)."""
        return {f"trunk.{n}": n for n, m in self.trunk.named_modules() if n and not list(m.children())}


__all__ = ["MobileNetV3Backbone"]
