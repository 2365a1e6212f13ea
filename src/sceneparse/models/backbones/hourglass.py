"""The stacked hourglass (Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose Estimation",
ECCV 2016), one implementation for the pose model and for CornerNet's Hourglass-104 (Law and Deng,
"CornerNet", ECCV 2018).

An hourglass of depth ``n`` processes a map at one scale with residual modules (the *skip branch*),
and also downsamples it, recurses (depth ``n - 1``) on the half-resolution map, upsamples the result
by nearest-neighbour 2x and adds it to the skip branch: features at every scale are combined
bottom-up and top-down, and the output has the input's resolution. Stacking ``N`` hourglasses lets
each stack re-evaluate the previous one's estimates; every stack's features get a prediction head
(intermediate supervision is the heads' business; this trunk returns the per-stack features).

The two papers differ in details, selected by ``style``:

``"newell"`` (pose): pre-activation *bottleneck* residual modules (BN-ReLU-1x1 ``c/2``, BN-ReLU-3x3
``c/2``, BN-ReLU-1x1 ``c``); stem 7x7/2 conv (64) + residual (128) + 2x2 max-pool + residual (128)
+ residual (``c``): stride 4; downsampling by 2x2 max-pooling; after each hourglass, residual
modules and a 1x1 conv-BN-ReLU give the stack's features; the next stack's input is
``x + conv1x1(features) + conv1x1(predictions)`` when the heads' predictions are fed back
(:meth:`StackedHourglass.forward_with_head` with ``prediction_channels > 0``), else ``x + conv1x1(features)``.

``"cornernet"`` (Hourglass-104): post-activation *basic* residual modules (two 3x3 convs, as the
reference implementation); stem 7x7/2 conv (128) + residual with stride 2 (``c``): stride 4;
downsampling by the stride 2 of the first residual module of each lower level ("we do not use max
pooling"); after each hourglass a 3x3 conv-BN-ReLU (``feature_channels`` = 256); the next stack's
input is ``residual(ReLU(BN(conv1x1(x)) + BN(conv1x1(features))))``. Hourglass-104 is
``stacks=2, channels=(256, 256, 384, 384, 384, 512), blocks=(2, 2, 2, 2, 2, 4)``: 5 downsamplings,
``blocks[k]`` residual modules per branch at level ``k`` and ``blocks[-1]`` in the innermost
(lowest-resolution) level.

Input sizes: any; each level's upsampled map is resized to its skip branch's size (exact 2x when the
input is a multiple of ``4 * 2^depth``, what :attr:`StackedHourglass.size_divisible` says).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicResidual", "BottleneckResidual", "Hourglass", "StackedHourglass", "hourglass104"]

STYLES = ("newell", "cornernet")


class BasicResidual(nn.Module):
    """CornerNet's residual module: ``ReLU(BN(conv3x3(ReLU(BN(conv3x3_s(x))))) + skip(x))``, the skip a
    1x1 conv (stride ``s``) + BN when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class BottleneckResidual(nn.Module):
    """Newell's pre-activation bottleneck: ``x' + conv1x1(BN-ReLU(conv3x3(BN-ReLU(conv1x1(BN-ReLU(x))))))``
    with ``cout / 2`` inner channels, ``x'`` = ``x`` or a 1x1 conv of it when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        mid = max(cout // 2, 1)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, mid, 1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1)
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return y + self.skip(x)


def _residuals(block: type[nn.Module], cin: int, cout: int, count: int, stride: int = 1) -> nn.Sequential:
    """``count`` residual modules ``cin -> cout`` (the first changes channels / stride)."""
    mods = [block(cin, cout, stride)] + [block(cout, cout) for _ in range(count - 1)]
    return nn.Sequential(*mods)


def _residuals_to(block: type[nn.Module], cin: int, cout: int, count: int) -> nn.Sequential:
    """``count`` residual modules ``cin -> cout``, the *last* changing the channels (the way up)."""
    mods = [block(cin, cin) for _ in range(count - 1)] + [block(cin, cout)]
    return nn.Sequential(*mods)


class Hourglass(nn.Module):
    """One hourglass of depth ``len(channels) - 1`` (recursive).

    Level 0 works at ``channels[0]`` on the input's resolution: ``skip`` (``blocks[0]`` residual
    modules) + ``upsample(up(inner(down(x))))`` where ``down`` halves the resolution (max-pool +
    residuals, or a stride-2 residual first) and goes to ``channels[1]``, ``inner`` is the hourglass
    of ``channels[1:]`` (or ``blocks[-1]`` residual modules at the lowest level), and ``up`` returns
    to ``channels[0]``.
    """

    def __init__(self, channels: Sequence[int], blocks: Sequence[int], block: type[nn.Module] = BasicResidual,
                 maxpool: bool = False):
        super().__init__()
        if len(channels) < 2 or len(blocks) != len(channels):
            raise ValueError(f"an hourglass needs >= 2 levels of channels and one block count per level, "
                             f"got channels {list(channels)} and blocks {list(blocks)}")
        c, c_low = int(channels[0]), int(channels[1])
        n = int(blocks[0])
        self.skip = _residuals(block, c, c, n)
        self.pool = nn.MaxPool2d(2) if maxpool else nn.Identity()
        self.down = _residuals(block, c, c_low, n, stride=1 if maxpool else 2)
        self.inner: nn.Module = (Hourglass(channels[1:], blocks[1:], block, maxpool) if len(channels) > 2
                                 else _residuals(block, c_low, c_low, int(blocks[1])))
        self.up = _residuals_to(block, c_low, c, n)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(x)
        low = self.up(self.inner(self.down(self.pool(x))))
        return skip + F.interpolate(low, size=skip.shape[-2:], mode="nearest")


class StackedHourglass(nn.Module):
    """``N`` stacked hourglasses on a stride-4 stem (see the module docstring for the two styles).

    Args:
        stacks: number of hourglasses ``N``.
        channels: channels per level of each hourglass, ``channels[0]`` at stride 4 (``depth =
            len(channels) - 1`` downsamplings).
        blocks: residual modules per branch and level (``blocks[-1]``: the innermost level).
        style: ``"newell"`` or ``"cornernet"``.
        feature_channels: channels of each stack's output features (``cornernet``: the 3x3 conv after
            the hourglass, 256 in Hourglass-104; ``newell``: ``channels[0]``, the default ``None``).
        stem_channels: channels of the 7x7 stem conv (``None``: 64 ``newell``, 128 ``cornernet``).
        prediction_channels: ``newell``: channels of the heads' predictions fed back into the next
            stack (1x1 conv); 0 feeds back the features only.
        in_channels: image channels (3).

    ``forward(images [B, 3, H, W]) -> list[Tensor]``: ``N`` maps ``[B, feature_channels, H/4, W/4]``,
    the first stack's first. The stem's output stride is :attr:`stride` (4).
    """

    stride = 4

    def __init__(self, stacks: int, channels: Sequence[int], blocks: Sequence[int], *, style: str = "newell",
                 feature_channels: int | None = None, stem_channels: int | None = None, prediction_channels: int = 0,
                 in_channels: int = 3):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        if stacks < 1:
            raise ValueError(f"stacks must be >= 1, got {stacks}")
        if prediction_channels and style != "newell":
            raise ValueError("predictions are fed back into the next stack in the 'newell' style only")
        self.style, self.num_stacks = style, int(stacks)
        self.depth = len(channels) - 1
        c = int(channels[0])
        block = BottleneckResidual if style == "newell" else BasicResidual
        maxpool = style == "newell"
        if style == "newell":
            s = stem_channels or 64
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, s, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(s), nn.ReLU(inplace=True),
                block(s, 2 * s), nn.MaxPool2d(2), block(2 * s, 2 * s), block(2 * s, c))
            feature_channels = c if feature_channels is None else int(feature_channels)
        else:
            s = stem_channels or 128
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, s, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(s), nn.ReLU(inplace=True),
                block(s, c, stride=2))
            feature_channels = 256 if feature_channels is None else int(feature_channels)
        self.out_channels = feature_channels
        self.hourglasses = nn.ModuleList(Hourglass(channels, blocks, block, maxpool) for _ in range(stacks))
        if style == "newell":
            self.post = nn.ModuleList(nn.Sequential(
                _residuals(block, c, c, int(blocks[0])),
                nn.Conv2d(c, feature_channels, 1, bias=False), nn.BatchNorm2d(feature_channels), nn.ReLU(inplace=True))
                for _ in range(stacks))
        else:
            self.post = nn.ModuleList(nn.Sequential(
                nn.Conv2d(c, feature_channels, 3, padding=1, bias=False), nn.BatchNorm2d(feature_channels),
                nn.ReLU(inplace=True)) for _ in range(stacks))
        # re-injection into the next stack (none after the last)
        bn = style == "cornernet"
        def proj(cin: int) -> nn.Module:
            conv = nn.Conv2d(cin, c, 1, bias=not bn)
            return nn.Sequential(conv, nn.BatchNorm2d(c)) if bn else conv
        self.merge_input = nn.ModuleList(proj(c) for _ in range(stacks - 1)) if bn else nn.ModuleList()
        self.merge_features = nn.ModuleList(proj(feature_channels) for _ in range(stacks - 1))
        self.merge_predictions = nn.ModuleList(
            proj(prediction_channels) for _ in range(stacks - 1)) if prediction_channels else nn.ModuleList()
        self.merge_residual = nn.ModuleList(block(c, c) for _ in range(stacks - 1)) if bn else nn.ModuleList()
        self.prediction_channels = int(prediction_channels)

    @property
    def size_divisible(self) -> int:
        """Input sizes that halve exactly at every level: ``4 * 2^depth``."""
        return self.stride * 2 ** self.depth

    def _next_input(self, k: int, x: Tensor, features: Tensor, predictions: Tensor | None) -> Tensor:
        if self.style == "cornernet":
            return self.merge_residual[k](F.relu(self.merge_input[k](x) + self.merge_features[k](features)))
        x = x + self.merge_features[k](features)
        if self.prediction_channels:
            x = x + self.merge_predictions[k](predictions)
        return x

    def forward(self, images: Tensor) -> list[Tensor]:
        if self.prediction_channels:
            raise ValueError("this trunk feeds predictions back: call forward_with_head(images, head)")
        return self.forward_with_head(images, None)[0]

    def forward_with_head(self, images: Tensor, head: Callable[[int, Tensor], Tensor] | None
                          ) -> tuple[list[Tensor], list[Tensor]]:
        """Per-stack features and, with a ``head(stack_index, features) -> predictions [B, P, h, w]``,
        the heads' predictions (fed back into the next stack when ``prediction_channels = P > 0``)."""
        x = self.stem(images)
        features, predictions = [], []
        for k in range(self.num_stacks):
            f = self.post[k](self.hourglasses[k](x))
            features.append(f)
            p = head(k, f) if head is not None else None
            if p is not None:
                predictions.append(p)
            if k < self.num_stacks - 1:
                x = self._next_input(k, x, f, p)
        return features, predictions


def hourglass104(**kwargs) -> StackedHourglass:
    """CornerNet's Hourglass-104: 2 stacks, 5 downsamplings, channels (256, 256, 384, 384, 384, 512),
    residual modules (2, 2, 2, 2, 2, 4), 256 feature channels at stride 4."""
    return StackedHourglass(2, (256, 256, 384, 384, 384, 512), (2, 2, 2, 2, 2, 4), style="cornernet",
                            feature_channels=256, stem_channels=128, **kwargs)
