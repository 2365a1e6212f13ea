"""``ImageBatch``: images normalised, resized and padded into one tensor, remembering the way back."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageBatch:
    """Attributes:
        tensor: ``float32 [B, 3, H, W]`` normalised, padded images (padding at bottom/right).
        image_sizes: per image ``(h, w)`` after resizing, before padding (the valid region).
        original_sizes: per image ``(h, w)`` as given by the user.
        scales: per image ``(sy, sx)`` = resized / original; results are divided by these.
    """

    tensor: torch.Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]
    scales: list[tuple[float, float]]

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    def to(self, device) -> "ImageBatch":
        return ImageBatch(self.tensor.to(device), self.image_sizes, self.original_sizes, self.scales)
