"""Stacked Hourglass pose estimation (Newell, Yang, Deng, *Stacked Hourglass Networks for Human Pose
Estimation*, ECCV 2016), top-down on the shared trunk :class:`~sceneparse.models.backbones.hourglass.StackedHourglass`
(``"newell"`` style: pre-activation bottleneck residual modules, max-pool downsampling, nearest 2x
upsampling added to the skip branches).

Each of the ``N`` stacks ends in a ``1 x 1`` convolution to ``K`` heatmaps at stride 4 (64 x 48 for the
paper's COCO-style 256 x 192 crops); the heatmaps are mapped back by a ``1 x 1`` convolution and added,
with the stack's features, to the next stack's input, and every stack's heatmaps are supervised
(intermediate supervision, the same Gaussian-target MSE at every stack: ``loss_stack<k>``).
Predictions decode the last stack's maps (:mod:`sceneparse.ops.keypoint_codec`, flip test and DARK as
for SimpleBaseline).

Sizes: ``hourglass2_pose`` / ``hourglass8_pose`` are the paper's 2- and 8-stack networks (256 channels,
4 downsamplings per hourglass, one residual module per branch) on 256 x 192 crops; the input must be a
multiple of ``4 * 2^depth`` (64). For CPUs, e.g. ``input_size=(128, 96), channels=128, depth=3``
(32 x 24 heatmaps, multiples of 32).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ...errors import ConfigError
from ...structures.keypoints import COCO_PERSON, KeypointSet
from ..backbones.hourglass import StackedHourglass
from ..zoo import register
from .top_down import HeatmapTopDown, PersonCrops

__all__ = ["StackedHourglassPose", "hourglass2_pose", "hourglass8_pose"]


class StackedHourglassPose(HeatmapTopDown):
    """Stacked Hourglass on top-down person crops (module docstring).

    Args:
        num_classes: must be 1 (person).
        stacks: ``N`` hourglasses.
        channels: channels at every level of the hourglasses (256 in the paper).
        depth: downsamplings per hourglass (4 in the paper).
        blocks: residual modules per branch and level (1 in the paper).
        input_size: ``(H_in, W_in)``, multiples of ``4 * 2^depth``; heatmaps are 4x smaller.
        feed_predictions: add the stack's heatmaps (through a ``1 x 1`` convolution) to the next stack's input.
        sigma: target Gaussian sigma in cells (``None``: 2 at 64 x 48, scaled with the height).
        Others: :class:`~sceneparse.models.pose.top_down.HeatmapTopDown`.
    """

    def __init__(self, num_classes: int = 1, *, stacks: int = 2, channels: int = 256, depth: int = 4, blocks: int = 1,
                 input_size: Sequence[int] = (256, 192), feed_predictions: bool = True,
                 keypoint_set: KeypointSet = COCO_PERSON, sigma: float | None = None, padding: float = 1.25,
                 scale_jitter: float = 0.3, rotation: float = 40.0, rotation_prob: float = 0.6, flip_prob: float = 0.5,
                 decode: str = "argmax", flip_test: bool = True, detector: str | None = None,
                 detector_conf: float = 0.3):
        if int(depth) < 1 or int(stacks) < 1 or int(blocks) < 1:
            raise ConfigError(f"stacks, depth and blocks must be >= 1, got {stacks}, {depth}, {blocks}")
        super().__init__(num_classes, stride=4, sigma=sigma, decode=decode, input_size=input_size,
                         keypoint_set=keypoint_set, padding=padding, scale_jitter=scale_jitter, rotation=rotation,
                         rotation_prob=rotation_prob, flip_prob=flip_prob, flip_test=flip_test, detector=detector,
                         detector_conf=detector_conf, size_multiple=4 * 2 ** int(depth))
        K = keypoint_set.num_keypoints
        self.num_stacks = int(stacks)
        self.loss_names = tuple(f"loss_stack{k + 1}" for k in range(self.num_stacks))
        self.trunk = StackedHourglass(self.num_stacks, (int(channels),) * (int(depth) + 1),
                                      (int(blocks),) * (int(depth) + 1), style="newell",
                                      prediction_channels=K if feed_predictions else 0)
        self.heads = nn.ModuleList(nn.Conv2d(self.trunk.out_channels, K, 1) for _ in range(self.num_stacks))
        for h in self.heads:
            nn.init.normal_(h.weight, std=0.001)
            nn.init.zeros_(h.bias)

    def forward(self, crops: Tensor) -> list[Tensor]:
        """Normalised crops ``[M, 3, H_in, W_in]`` -> every stack's heatmaps, ``N x [M, K, H_in / 4, W_in / 4]``."""
        _, heatmaps = self.trunk.forward_with_head(crops, lambda k, f: self.heads[k](f))
        return heatmaps

    def final_heatmaps(self, crops: Tensor) -> Tensor:
        """The last stack's heatmaps (what is decoded)."""
        return self(crops)[-1]

    def loss(self, heatmaps: Sequence[Tensor], keypoints: Tensor) -> dict[str, Tensor]:
        """Intermediate supervision: :meth:`HeatmapTopDown.heatmap_loss` of every stack's maps."""
        return {f"loss_stack{k + 1}": self.heatmap_loss(h, keypoints) for k, h in enumerate(heatmaps)}

    def crop_losses(self, images: Sequence[Tensor], crops: PersonCrops, keypoints: Tensor) -> dict[str, Tensor]:
        return self.loss(self(crops.tensor), keypoints)


@register("hourglass2_pose")
def hourglass2_pose(*, num_classes: int = 1, input_size: Sequence[int] = (256, 192), **kwargs) -> StackedHourglassPose:
    """2-stack hourglass, 256 channels, 256 x 192 crops -> 64 x 48 heatmaps (``input_size=(128, 96),
    channels=128, depth=3`` for CPUs)."""
    return StackedHourglassPose(num_classes, stacks=2, input_size=input_size, **kwargs)


@register("hourglass8_pose")
def hourglass8_pose(*, num_classes: int = 1, input_size: Sequence[int] = (256, 192), **kwargs) -> StackedHourglassPose:
    """The paper's 8-stack hourglass, 256 channels, 256 x 192 crops -> 64 x 48 heatmaps."""
    return StackedHourglassPose(num_classes, stacks=8, input_size=input_size, **kwargs)
