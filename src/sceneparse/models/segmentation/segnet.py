"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017): an encoder-decoder whose decoder upsamples
by **max unpooling** with the encoder's pooling indices.

Each encoder stage (conv-BN-ReLU blocks of VGG-16) ends with a 2x2 max-pool that *remembers where the
maxima were*. The mirrored decoder stage first unpools -- every value goes back to the position its
maximum came from, zeros elsewhere (a sparse map that keeps boundary locations at the cost of only
the indices, not the encoder features U-Net stores) -- and then densifies it with trainable convs.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers.upsampling import max_pool_with_indices, max_unpool
from ..layers.conv import ConvNormAct
from ..zoo import register
from .base import SemanticSegmentor

__all__ = ["SegNet", "segnet"]

#: VGG-16's conv layout: channels and number of 3x3 convs per stage (the paper's SegNet)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)


class SegNet(SemanticSegmentor):
    """SegNet.

    Args:
        num_classes: number of labels.
        channels: channels per encoder stage (default VGG-16's).
        convs_per_stage: 3x3 conv-BN-ReLU blocks per stage (default VGG-16's).
        in_channels: image channels.
        **kwargs: :class:`SemanticSegmentor` options; ``size_divisible`` defaults to ``2 ** len(channels)``
            (:attr:`size_multiple`): the batch is padded so that every pooling halves exactly.

    Decoder stage ``k`` mirrors encoder stage ``k``: unpool to the size encoder stage ``k`` had before
    pooling (pooling uses ``ceil_mode``, so any input size >= 1 works and comes back exactly), then ``convs_per_stage[k]`` blocks, the last of which maps
    to the channels of stage ``k - 1`` (stage 0: to ``channels[0]``); a 1x1 conv classifies.
    """

    def __init__(self, num_classes: int, *, channels: Sequence[int] = VGG16_CHANNELS,
                 convs_per_stage: Sequence[int] = VGG16_CONVS, in_channels: int = 3, **kwargs):
        channels, convs_per_stage = tuple(channels), tuple(convs_per_stage)
        multiple = 2 ** len(channels)
        if kwargs.get("size_divisible") is None:
            kwargs["size_divisible"] = multiple
        super().__init__(num_classes, **kwargs)
        self.size_multiple = multiple
        if len(channels) != len(convs_per_stage) or not channels or min(convs_per_stage) < 1:
            raise ValueError(f"channels {channels} and convs_per_stage {convs_per_stage} must be equally long "
                             f"and every stage needs >= 1 conv")
        enc, dec = [], []
        cin = in_channels
        for c, n in zip(channels, convs_per_stage):
            enc.append(nn.Sequential(*(ConvNormAct(cin if i == 0 else c, c, 3) for i in range(n))))
            cin = c
        for k, (c, n) in enumerate(zip(channels, convs_per_stage)):
            c_out = channels[k - 1] if k > 0 else channels[0]
            dec.append(nn.Sequential(*(ConvNormAct(c, c if i < n - 1 else c_out, 3) for i in range(n))))
        self.encoder = nn.ModuleList(enc)
        self.decoder = nn.ModuleList(dec)  # decoder[k] mirrors encoder[k]; run from the deepest stage down
        self.classifier = nn.Conv2d(channels[0], num_classes, 1)

    def segment(self, x: torch.Tensor, with_aux: bool = False):
        memo = []  # (indices, size before pooling) per stage
        y = x
        for stage in self.encoder:
            y = stage(y)
            size = y.shape[-2:]
            y, idx = max_pool_with_indices(y, 2, ceil_mode=True)  # odd sizes: the last row is pooled too
            memo.append((idx, size))
        for k in range(len(self.decoder) - 1, -1, -1):
            idx, size = memo[k]
            y = self.decoder[k](max_unpool(y, idx, size))
        return self.classifier(y), None


@register("segnet")
def segnet(num_classes: int = 21, *, channels: Sequence[int] = VGG16_CHANNELS,
           convs_per_stage: Sequence[int] = VGG16_CONVS, **kwargs) -> SegNet:
    """SegNet (VGG-16 layout unless ``channels`` / ``convs_per_stage`` say otherwise)."""
    return SegNet(num_classes, channels=channels, convs_per_stage=convs_per_stage, **kwargs)
