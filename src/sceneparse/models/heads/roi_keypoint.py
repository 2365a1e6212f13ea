"""The Keypoint R-CNN head (Mask R-CNN, He et al., 2017, sec. 5 "human pose estimation").

A keypoint is modelled as a one-hot mask: RoIAlign pools 14x14 features, eight 3x3 convs (512
channels, ReLU), a 4x4 stride-2 deconv and a 2x bilinear upsampling give ``K`` heatmaps of 56x56 per
RoI. Training (foreground RoIs only): each labelled keypoint inside its RoI is the single positive
cell of its map and the loss is a softmax cross-entropy over the ``56^2`` cells (so the maps compete
within a keypoint, unlike masks), averaged over the valid keypoints. Inference: see
:func:`sceneparse.ops.heatmaps.heatmaps_to_keypoints` (bicubic upsampling to the box, argmax).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.heatmaps import keypoints_to_heatmap_targets
from ...ops.roi import multiscale_roi_align
from .proposal_sampler import SampledRoIs


class KeypointRCNNHead(nn.Module):
    """``[R, in, 14, 14]`` -> ``[R, K, 56, 56]`` heatmap logits.

    Args:
        in_channels: channels of the pooled features; num_keypoints: ``K``;
        conv_channels: one entry per 3x3 conv (``(512,) * 8`` in the paper).
    """

    def __init__(self, in_channels: int, num_keypoints: int, conv_channels: Sequence[int] = (512,) * 8):
        super().__init__()
        chans = [in_channels, *conv_channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        self.deconv = nn.ConvTranspose2d(chans[-1], num_keypoints, 4, stride=2, padding=1)
        for conv in [*self.convs, self.deconv]:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        x = self.deconv(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False, recompute_scale_factor=False)


class RoIKeypointHead(nn.Module):
    """RoIAlign (``pool_size``, ``sampling_ratio``) + :class:`KeypointRCNNHead`, with the loss."""

    def __init__(self, in_channels: int, num_keypoints: int, *, pool_size: int = 14, sampling_ratio: int = 2,
                 conv_channels: Sequence[int] = (512,) * 8):
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        self.num_keypoints = int(num_keypoints)
        self.pool_size = int(pool_size)
        self.sampling_ratio = int(sampling_ratio)
        self.head = KeypointRCNNHead(in_channels, num_keypoints, conv_channels)

    def forward(self, features: Sequence[Tensor], rois: Sequence[Tensor],
                image_sizes: Sequence[tuple[int, int]]) -> Tensor:
        """Per-image RoIs ``[R_i, 4]`` -> heatmap logits ``[R, K, S, S]`` (``S = 4 * pool_size``)."""
        return self.head(multiscale_roi_align(features, rois, image_sizes, self.pool_size, self.sampling_ratio))

    def loss(self, keypoint_logits: Tensor, positives: SampledRoIs,
             gt_keypoints: Sequence[Tensor]) -> dict[str, Tensor]:
        """``gt_keypoints`` per image ``[G_i, K, 3]`` in the batch frame. ``loss_keypoint``: softmax CE
        over the heatmap cells, mean over labelled keypoints that fall inside their RoI."""
        n, k, h, w = keypoint_logits.shape
        if h != w:
            raise ValueError(f"keypoint heatmaps must be square, got {h}x{w}")
        index, valid = [], []
        for rois, idx, kps in zip(positives.boxes, positives.matched_idxs, gt_keypoints):  # per image
            i, v = keypoints_to_heatmap_targets(kps[idx], rois, h)
            index.append(i.reshape(-1))
            valid.append(v.reshape(-1))
        index, valid = torch.cat(index), torch.where(torch.cat(valid) > 0)[0]
        if valid.numel() == 0:
            return {"loss_keypoint": keypoint_logits.sum() * 0.0}
        return {"loss_keypoint": F.cross_entropy(keypoint_logits.reshape(n * k, h * w)[valid], index[valid])}


__all__ = ["KeypointRCNNHead", "RoIKeypointHead"]
