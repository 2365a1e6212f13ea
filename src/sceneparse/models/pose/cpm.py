"""Convolutional Pose Machines (Wei, Ramakrishna, Kanade, Sheikh, CVPR 2016), top-down.

A sequence of ``T`` stages, each a convolutional network producing belief maps ``b_t`` of the ``P``
parts plus the background at stride 8. Stage 1 sees only image features; stage ``t >= 2`` sees image
features together with the previous stage's beliefs ``b_{t-1}`` (and the Gaussian centre map that tells
which person of the crop is meant), through convolutions with a large receptive field (three ``11 x 11``
layers at 46 x 46 maps in the paper), so a part's belief can use the beliefs of distant parts: the
"increasing context" of later stages. Every stage is supervised (intermediate supervision against
vanishing gradients): ``f_t = sum_p ||b_t^p - b_*^p||^2`` with Gaussian ideal beliefs ``b_*^p``, total
``F = sum_t f_t``. Predictions decode the last stage's part maps (:mod:`sceneparse.ops.keypoint_codec`:
argmax with the quarter shift, or DARK).

Choices made here (the paper's values as options):

* Image features: a ResNet trunk up to ``layer2`` (stride 8, 128 channels for ResNet-18) shared by all
  stages, in place of the paper's VGG-like convolutions; each stage ``t >= 2`` reduces them with its own
  ``3 x 3`` convolution to ``feature_channels`` (32 in the paper) before the concatenation.
* Stages: ``stages=3`` by default on CPU (the paper: 6); ``stage_kernel=7`` at the CPU size (16 x 12
  maps of 128 x 96 crops: three 7 x 7 layers see 19 cells, more than the map), 11 with the paper's
  368 x 368 input (``input_size=(368, 368), stage_kernel=11, stages=6``).
* Loss per stage: the heatmap MSE ``0.5 mean((w (b_t - b_*))^2)`` over parts, background and cells (the
  paper's sum of squares up to a constant factor), reported as ``loss_stage<t>``; their sum is ``F``.
  The background's ideal belief is ``max(0, 1 - max_p b_*^p)``.
* Gaussian sigma: 1 cell at stride 8 (8 px), about the 7 px of the paper's code.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...ops import keypoint_codec
from ...structures.keypoints import COCO_PERSON, KeypointSet
from ..backbones import ResNetBackbone
from ..zoo import register
from .top_down import HeatmapTopDown, PersonCrops

__all__ = ["CPM", "CPMStage", "cpm_resnet18"]


def _conv(cin: int, cout: int, k: int, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class CPMStage(nn.Module):
    """One stage: three ``k x k`` convolutions (``channels``), a ``1 x 1`` to ``channels`` and a ``1 x 1`` to
    ``out_channels`` belief maps (the paper's Mconv1-5 of stages >= 2; stage 1 has the same shape here)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.layers = nn.Sequential(*_conv(in_channels, channels, kernel), *_conv(channels, channels, kernel),
                                    *_conv(channels, channels, kernel), *_conv(channels, channels, 1),
                                    *_conv(channels, out_channels, 1, relu=False))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.layers[-1].weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class CPM(HeatmapTopDown):
    """Convolutional Pose Machine on top-down person crops (module docstring).

    Args:
        num_classes: must be 1 (person).
        depth: ResNet depth of the image-feature trunk (up to ``layer2``, stride 8).
        input_size: ``(H_in, W_in)`` of the crops (multiples of 8); belief maps are 8x smaller.
        stages: ``T`` (>= 1).
        stage_channels, stage_kernel: width and kernel of the stage convolutions.
        feature_channels: channels of the per-stage image features of stages >= 2.
        background: also predict (and supervise) the background belief map.
        sigma: target Gaussian sigma in cells (default 1).
        Others: :class:`~sceneparse.models.pose.top_down.HeatmapTopDown`.
    """

    def __init__(self, num_classes: int = 1, *, depth: int = 18, input_size: Sequence[int] = (128, 96),
                 stages: int = 3, stage_channels: int = 128, stage_kernel: int = 7, feature_channels: int = 32,
                 background: bool = True, keypoint_set: KeypointSet = COCO_PERSON, sigma: float | None = 1.0,
                 padding: float = 1.25, scale_jitter: float = 0.3, rotation: float = 40.0, rotation_prob: float = 0.6,
                 flip_prob: float = 0.5, decode: str = "argmax", flip_test: bool = True, detector: str | None = None,
                 detector_conf: float = 0.3):
        super().__init__(num_classes, stride=8, sigma=sigma, decode=decode, input_size=input_size,
                         keypoint_set=keypoint_set, padding=padding, scale_jitter=scale_jitter, rotation=rotation,
                         rotation_prob=rotation_prob, flip_prob=flip_prob, flip_test=flip_test, detector=detector,
                         detector_conf=detector_conf, size_multiple=8)
        if int(stages) < 1:
            raise ConfigError(f"stages must be >= 1, got {stages}")
        if int(stage_kernel) < 1 or int(stage_kernel) % 2 == 0:
            raise ConfigError(f"stage_kernel must be a positive odd number, got {stage_kernel}")
        K = keypoint_set.num_keypoints
        self.num_stages = int(stages)
        self.background = bool(background)
        self.num_maps = K + int(self.background)
        self.loss_names = tuple(f"loss_stage{t + 1}" for t in range(self.num_stages))
        self.backbone = ResNetBackbone(depth, norm="bn", trainable_layers=5, returned_stages=(2,))
        c = self.backbone.out_channels[-1]
        self.stages = nn.ModuleList([CPMStage(c, stage_channels, self.num_maps, stage_kernel)])
        self.stage_features = nn.ModuleList()
        for _ in range(1, self.num_stages):
            self.stage_features.append(nn.Sequential(*_conv(c, feature_channels, 3)))
            self.stages.append(CPMStage(feature_channels + self.num_maps + 1, stage_channels, self.num_maps,
                                        stage_kernel))
        if self.background:  # start from the prior "background almost everywhere" (bias 1 on its map)
            for stage in self.stages:
                nn.init.ones_(stage.layers[-1].bias[K:])
        # the centre map: a Gaussian at the crop centre (sigma 21 px at the paper's 368 px input, scaled)
        h, w = self.heatmap_size
        s = 21.0 / 368.0 * self.input_size[0] / self.stride
        ys = torch.arange(h, dtype=torch.float32) + 0.5 - h / 2
        xs = torch.arange(w, dtype=torch.float32) + 0.5 - w / 2
        centre = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * s * s))
        self.register_buffer("centre_map", centre[None, None], persistent=False)

    def forward(self, crops: Tensor) -> list[Tensor]:
        """Normalised crops ``[M, 3, H_in, W_in]`` -> the belief maps of every stage, ``T x [M, K (+1), h, w]``
        (parts first, then the background)."""
        x = self.backbone(crops)[-1]
        beliefs = [self.stages[0](x)]
        centre = self.centre_map.expand(x.shape[0], -1, -1, -1)
        for feat, stage in zip(self.stage_features, self.stages[1:]):
            beliefs.append(stage(torch.cat([feat(x), beliefs[-1], centre], dim=1)))
        return beliefs

    def final_heatmaps(self, crops: Tensor) -> Tensor:
        """The last stage's part maps ``[M, K, h, w]`` (what is decoded)."""
        return self(crops)[-1][:, : self.keypoint_set.num_keypoints]

    def targets(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        """Ideal beliefs ``[M, K (+1), h, w]`` and weights ``[M, K (+1)]`` of ``keypoints [M, K, 3]`` (crop px):
        Gaussian peaks (weight 0 for unlabelled parts), then the background ``max(0, 1 - max_p b_*^p)``
        (weight 1)."""
        target, weight = keypoint_codec.encode(keypoints, self.heatmap_size, self.stride, self.sigma)
        if self.background:
            bg = (1 - target.amax(dim=1, keepdim=True)).clamp(min=0) if target.shape[1] else \
                torch.ones_like(target[:, :1])
            target = torch.cat([target, bg], dim=1)
            weight = torch.cat([weight, torch.ones_like(weight[:, :1])], dim=1)
        return target, weight

    def loss(self, beliefs: Sequence[Tensor], keypoints: Tensor) -> dict[str, Tensor]:
        """Intermediate supervision: ``loss_stage<t> = 0.5 mean((w (b_t - b_*))^2)`` for every stage."""
        target, weight = self.targets(keypoints)
        return {f"loss_stage{t + 1}": 0.5 * ((b - target) * weight[..., None, None]).pow(2).mean()
                for t, b in enumerate(beliefs)}

    def crop_losses(self, images: Sequence[Tensor], crops: PersonCrops, keypoints: Tensor) -> dict[str, Tensor]:
        return self.loss(self(crops.tensor), keypoints)


@register("cpm_resnet18")
def cpm_resnet18(*, num_classes: int = 1, input_size: Sequence[int] = (128, 96), stages: int = 3,
                 **kwargs) -> CPM:
    """CPM with ResNet-18 image features (to ``layer2``, stride 8): ``128 x 96`` crops, ``16 x 12`` belief
    maps, 3 stages of 7 x 7 convolutions (the paper: ``input_size=(368, 368), stages=6, stage_kernel=11``)."""
    return CPM(num_classes, depth=18, input_size=input_size, stages=stages, **kwargs)
