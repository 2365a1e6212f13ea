"""The CornerNet family ("Detecting Objects as Paired Keypoints"): boxes as top-left / bottom-right
corner pairs on a stacked hourglass. Importing it registers ``cornernet_hourglass104`` (the paper's
network, Hourglass-104, 511 -> 512 px input) and ``cornernet_small`` (a narrow two-stack hourglass that
trains on the CPU)."""
from __future__ import annotations

from ..zoo import register
from .codec import CornerTargets, decode_corners, embedding_losses, encode_corners
from .cornernet import CornerBranch, CornerNet, CornerNetGraph, CornerNetRaw, CornerPoolModule


@register("cornernet_hourglass104")
def cornernet_hourglass104(*, num_classes: int, **kwargs) -> CornerNet:
    """The paper's CornerNet: Hourglass-104 (2 stacks, channels 256-256-384-384-384-512, residual
    modules 2-2-2-2-2-4, 256 feature channels), corner pooling with 128 channels, heads of 256,
    512 px input (the paper's 511 padded to a multiple of 128); ~201M parameters with 80 classes."""
    from ..backbones.hourglass import hourglass104

    return CornerNet(hourglass104(), num_classes, **kwargs)


#: The small trunk (see cornernet_small). Measured on one thread, 256 px, batch 8, one SGD step:
#: 3.5 s CPU time with these widths (4.0M parameters), 6.6 s with 64-96-128-128 / 64 features / heads
#: of 64 (6.0M), 2.2 s with 32-64-96-128 / 32 features (3.0M).
SMALL = dict(stacks=2, channels=(48, 64, 96, 128), blocks=(1, 1, 1, 2), feature_channels=48, stem_channels=32)


@register("cornernet_small")
def cornernet_small(*, num_classes: int, min_size: int | tuple[int, ...] = 256, max_size: int = 256,
                    **kwargs) -> CornerNet:
    """A small CornerNet for the CPU: the same design (CornerNet-style hourglass, two stacks with
    intermediate supervision, corner pooling, the paper's losses and decoding) made narrow and
    shallow: channels 48-64-96-128 (3 downsamplings: the 64 x 64 map of a 256 px image goes down to
    8 x 8, whose cells see a quarter of the image, enough for the synthetic scenes' objects), one
    residual module per branch (two in the innermost level), 48 feature channels, 32 pooling
    channels, heads of 32, 256 px input: 4.0M parameters (8 classes), ~3.5 s CPU time per training
    step of 8 images at 256 px on one thread, so ~500 steps fit a 30-minute budget on one core."""
    from ..backbones.hourglass import StackedHourglass

    kwargs.setdefault("pool_channels", 32)
    kwargs.setdefault("head_channels", 32)
    trunk = StackedHourglass(SMALL["stacks"], SMALL["channels"], SMALL["blocks"], style="cornernet",
                             feature_channels=SMALL["feature_channels"], stem_channels=SMALL["stem_channels"])
    return CornerNet(trunk, num_classes, min_size=min_size, max_size=max_size, **kwargs)


__all__ = ["CornerBranch", "CornerNet", "CornerNetGraph", "CornerNetRaw", "CornerPoolModule", "CornerTargets",
           "cornernet_hourglass104", "cornernet_small", "decode_corners", "embedding_losses", "encode_corners"]
