"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): encoder-decoder with skip concatenation.

The contracting path (two 3x3 conv + ReLU per level, 2x2 max-pool, channels doubling) captures
context; the expanding path upsamples 2x with a 2x2 *up-convolution* that halves the channels,
**concatenates** the encoder features of the same level (the skip that restores localisation lost by
pooling) and refines with two 3x3 convs; a 1x1 conv gives the class scores. Differences from the
paper, as in most modern U-Nets: padded ("same") convolutions, so the output has the input's size and
no cropping of the skip is needed, and BatchNorm after each conv.

Any input size works: max-pooling uses ``ceil_mode`` (an odd size ``n`` pools to ``(n + 1) / 2``, the
last row by a clipped window), so an upsampled map can be one pixel longer than its skip and is
cropped at the bottom/right -- pooled pixel ``i`` covers rows ``2i, 2i + 1`` and upsamples back onto them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers.upsampling import Interpolate, TransposedConv2d
from ..layers.conv import ConvNormAct
from ..zoo import register
from .base import SemanticSegmentor

__all__ = ["DoubleConv", "UNet", "unet"]


class DoubleConv(nn.Sequential):
    """``(3x3 conv -> BN -> ReLU) x 2``, the U-Net building block."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(ConvNormAct(in_channels, out_channels, 3), ConvNormAct(out_channels, out_channels, 3))


def _crop_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return x[..., : ref.shape[-2], : ref.shape[-1]]


class UNet(SemanticSegmentor):
    """U-Net.

    Args:
        num_classes: number of labels.
        base_channels: channels of the first level (64 in the paper); level ``k`` has ``base * 2^k``.
        depth: number of 2x poolings (4 in the paper).
        upsampling: ``"transposed"`` (the paper's learnable 2x2 stride-2 up-convolution) or
            ``"bilinear"`` (fixed bilinear 2x + 1x1 conv; no checkerboard artefacts).
        in_channels: image channels (3).
        **kwargs: :class:`SemanticSegmentor` options (preprocessor, dice_weight, ...); ``size_divisible``
            defaults to ``2 ** depth`` (:attr:`size_multiple`): the batch is padded so that every pooling
            halves exactly.
    """

    def __init__(self, num_classes: int, *, base_channels: int = 64, depth: int = 4, upsampling: str = "transposed",
                 in_channels: int = 3, **kwargs):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        multiple = 2 ** depth
        if kwargs.get("size_divisible") is None:
            kwargs["size_divisible"] = multiple
        super().__init__(num_classes, **kwargs)
        self.size_multiple = multiple
        if upsampling not in ("transposed", "bilinear"):
            raise ValueError(f"upsampling must be 'transposed' or 'bilinear', got {upsampling!r}")
        chans = [base_channels * 2 ** k for k in range(depth + 1)]
        self.encoder = nn.ModuleList([DoubleConv(in_channels, chans[0])] +
                                     [DoubleConv(chans[k - 1], chans[k]) for k in range(1, depth + 1)])
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        ups, decs = [], []
        for k in range(depth, 0, -1):  # from the bottleneck up
            if upsampling == "transposed":
                ups.append(TransposedConv2d(chans[k], chans[k - 1], 2, stride=2))
            else:
                ups.append(nn.Sequential(Interpolate(2.0, mode="bilinear"), nn.Conv2d(chans[k], chans[k - 1], 1)))
            decs.append(DoubleConv(2 * chans[k - 1], chans[k - 1]))
        self.up = nn.ModuleList(ups)
        self.decoder = nn.ModuleList(decs)
        self.classifier = nn.Conv2d(chans[0], num_classes, 1)

    def segment(self, x: torch.Tensor, with_aux: bool = False):
        skips = []
        y = x
        for k, enc in enumerate(self.encoder):
            y = enc(y if k == 0 else self.pool(y))
            skips.append(y)
        y = skips.pop()
        for up, dec in zip(self.up, self.decoder):
            skip = skips.pop()
            y = dec(torch.cat([skip, _crop_to(up(y), skip)], dim=1))
        return self.classifier(y), None


@register("unet")
def unet(num_classes: int = 21, *, base_channels: int = 32, depth: int = 4, upsampling: str = "transposed",
         **kwargs) -> UNet:
    """U-Net with ``base_channels=32`` by default (half the paper's width: CPU-friendly)."""
    return UNet(num_classes, base_channels=base_channels, depth=depth, upsampling=upsampling, **kwargs)
