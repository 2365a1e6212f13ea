"""VGG-16 (Simonyan & Zisserman, 2015) as the SSD300 trunk (Liu et al., "SSD: Single Shot MultiBox
Detector", ECCV 2016, sec. 2.2 and 3).

SSD's changes to VGG-16 (configuration D, no BatchNorm):

* ``pool3`` rounds up (``ceil_mode``) so a 300 px input gives a 38x38 ``conv4_3`` map;
* ``conv4_3`` features have a much larger scale than the later ones, so they are L2-normalised per
  location and multiplied by a learned per-channel scale initialised to 20 (ParseNet's L2Norm);
* ``pool5`` becomes 3x3 / stride 1 and the fully-connected ``fc6`` / ``fc7`` become convolutions:
  ``fc6`` a 3x3 conv with 1024 filters and dilation 6 (atrous), ``fc7`` a 1x1 conv with 1024 filters
  (19x19 map);
* extra layers (``conv8_2 .. conv11_2``): 1x1 channel reduction then a 3x3 conv, the first two with
  stride 2 (10x10, 5x5), the last two without padding (3x3, 1x1); the SSD512 variant adds ``conv12_2``.

Six maps feed the detector: ``conv4_3`` (512 ch, L2-normalised), ``fc7`` (1024), ``conv8_2`` (512),
``conv9_2 .. conv11_2`` (256 each). Module names and indices follow torchvision's
``SSDFeatureExtractorVGG`` (``features.<i>``: VGG-16's layers up to ``conv4_3``; ``extra.0``:
``pool4 .. conv5_3`` + ``fc6/fc7``; ``extra.1..4``: the extra layers), so its state dicts fit; the
L2Norm scale is ``l2norm.weight`` (torchvision: ``scale_weight``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: VGG-16's ``features`` (configuration D): channels of each 3x3 conv, ``"M"`` for a 2x2 max pool.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class L2Norm(nn.Module):
    """``x / ||x||_2`` over channels at every location, times a learned per-channel scale (init ``scale``)."""

    def __init__(self, channels: int, scale: float = 20.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.view(1, -1, 1, 1) * F.normalize(x, dim=1)


def _vgg16_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    c = 3
    for v in VGG16_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    for m in layers:
        if isinstance(m, nn.Conv2d):  # VGG's own initialisation (as torchvision's vgg16)
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return layers


def _extra(c_in: int, c_mid: int, c_out: int, *, stride: int, padding: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_mid, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_mid, c_out, kernel, stride=stride, padding=padding), nn.ReLU(inplace=True))


class SSDVGG16Backbone(nn.Module):
    """VGG-16 -> the six (SSD300) or seven (``highres``: SSD512) SSD maps, finest first.

    Args:
        trainable_layers: VGG stages (counted from the top, 0..5) that keep gradients; torchvision's
            default for SSD300 is 4 (``conv1_x`` frozen).
        highres: add ``conv12_2`` (SSD512).

    Attributes:
        out_channels: channels of the returned maps.
    """

    def __init__(self, *, trainable_layers: int = 4, highres: bool = False):
        super().__init__()
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        vgg = _vgg16_layers()
        pools = [i for i, m in enumerate(vgg) if isinstance(m, nn.MaxPool2d)]
        stage_starts = [0] + pools[:-1]
        freeze_before = len(vgg) if trainable_layers == 0 else stage_starts[5 - trainable_layers]
        for m in vgg[:freeze_before]:
            for p in m.parameters():
                p.requires_grad_(False)
        vgg[pools[2]].ceil_mode = True  # pool3: 75 -> 38 px at 300 px input
        self.features = nn.Sequential(*vgg[: pools[3]])  # up to conv4_3 + ReLU
        self.l2norm = L2Norm(512, 20.0)
        fc = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),  # pool5 of SSD
                           nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6), nn.ReLU(inplace=True),  # fc6
                           nn.Conv2d(1024, 1024, kernel_size=1), nn.ReLU(inplace=True))  # fc7
        extras = [_extra(1024, 256, 512, stride=2, padding=1), _extra(512, 128, 256, stride=2, padding=1),
                  _extra(256, 128, 256, stride=1, padding=0), _extra(256, 128, 256, stride=1, padding=0)]
        if highres:
            extras.append(_extra(256, 128, 256, stride=1, padding=0, kernel=4))
        for block in [fc] + extras:  # SSD's added layers: Xavier (uniform), zero bias
            for m in block.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
        self.extra = nn.ModuleList([nn.Sequential(*vgg[pools[3]:-1], fc)] + extras)  # pool4 .. conv5_3, fc6, fc7
        self.out_channels = [512, 1024, 512, 256, 256, 256] + ([256] if highres else [])

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` normalised images -> ``[conv4_3 (L2-normalised), fc7, conv8_2, ...]``."""
        x = self.features(x)
        out = [self.l2norm(x)]
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


__all__ = ["L2Norm", "SSDVGG16Backbone", "VGG16_CONFIG"]
