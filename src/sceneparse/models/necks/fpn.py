"""Feature Pyramid Network (Lin et al., 2017): a top-down pathway with lateral connections.

For backbone maps ``C_1..C_L`` (finest first) every level gets a lateral 1x1 conv to
``out_channels``; going from the coarsest level down, the running top-down map is upsampled by
nearest-neighbour interpolation *to the lateral's exact size* and added to it; each sum passes a
3x3 output conv (to reduce upsampling aliasing) and becomes ``P_i``. Extra coarser levels:

* ``"maxpool"``: ``P_{L+1}`` = ``P_L`` subsampled with stride 2 (1x1 max pool; Faster/Mask R-CNN's
  "pool" level, used by the RPN only);
* ``"p6p7"`` / ``"p6p7_c5"``: RetinaNet's ``P6 = conv3x3/2(P5 or C5)``, ``P7 = conv3x3/2(relu(P6))``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_EXTRAS = (None, "maxpool", "p6p7", "p6p7_c5")


class FPN(nn.Module):
    """``list[Tensor]`` ``[B, C_i, H_i, W_i]`` (finest first) -> ``list[Tensor]`` ``[B, out, H_i, W_i]``
    plus the extra levels.

    Args:
        in_channels: channels of each input level.
        out_channels: channels of every pyramid level (256 in the paper).
        extra: one of ``None``, ``"maxpool"``, ``"p6p7"``, ``"p6p7_c5"`` (see module docstring).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, extra: str | None = "maxpool"):
        super().__init__()
        if extra not in _EXTRAS:
            raise ValueError(f"extra must be one of {_EXTRAS}, got {extra!r}")
        if not in_channels or min(in_channels) <= 0:
            raise ValueError(f"in_channels must be positive channel counts, got {list(in_channels)}")
        self.in_channels = list(in_channels)
        self.out_channels = int(out_channels)
        self.extra = extra
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        convs = list(self.lateral) + list(self.output)
        if extra in ("p6p7", "p6p7_c5"):
            c6 = out_channels if extra == "p6p7" else in_channels[-1]
            self.p6 = nn.Conv2d(c6, out_channels, 3, stride=2, padding=1)
            self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            convs += [self.p6, self.p7]
        for conv in convs:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    @property
    def num_levels(self) -> int:
        return len(self.in_channels) + {None: 0, "maxpool": 1, "p6p7": 2, "p6p7_c5": 2}[self.extra]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.lateral):
            raise ValueError(f"FPN built for {len(self.lateral)} levels, got {len(features)}")
        top = self.lateral[-1](features[-1])
        outs = [self.output[-1](top)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](top))
        if self.extra == "maxpool":
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2, padding=0))
        elif self.extra is not None:
            p6 = self.p6(outs[-1] if self.extra == "p6p7" else features[-1])
            outs += [p6, self.p7(F.relu(p6))]
        return outs


__all__ = ["FPN"]
