"""Keypoint sets: COCO's 17 person keypoints (names, skeleton, flip pairs, OKS sigmas) and custom sets.
(COCO's raw tables are plain data in :mod:`sceneparse.conventions`, re-exported here.)

Keypoint arrays are ``float32 [N, K, 3]`` as ``(x, y, v)``: v = 0 unlabeled, 1 labeled but
occluded, 2 visible. Results carry scores in a separate ``keypoint_scores [N, K]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..conventions import COCO_KEYPOINT_NAMES, COCO_OKS_SIGMAS, COCO_SKELETON


@dataclass(frozen=True)
class KeypointSet:
    """A named keypoint layout: names, 0-based skeleton edges, flip permutation and OKS sigmas."""

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]  # 0-based index pairs
    flip_index: tuple[int, ...]  # keypoint i becomes flip_index[i] after a horizontal flip
    sigmas: tuple[float, ...]  # as published (e.g. 0.26 for the nose); pycocotools divides by 10, see ``oks_sigmas``

    def __post_init__(self) -> None:
        k = len(self.names)
        if len(self.flip_index) != k or len(self.sigmas) != k:
            raise ValueError(f"keypoint set of {k} names needs {k} flip indices and {k} sigmas, "
                             f"got {len(self.flip_index)} and {len(self.sigmas)}")
        if sorted(self.flip_index) != list(range(k)):
            raise ValueError("flip_index must be a permutation of 0..K-1")
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"skeleton edge ({a}, {b}) out of range 0..{k - 1}")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def oks_sigmas(self) -> np.ndarray:
        """Sigmas as pycocotools uses them (``sigmas / 10``)."""
        return np.asarray(self.sigmas, dtype=np.float64) / 10.0

    @classmethod
    def from_names(cls, names, skeleton=(), sigmas=None, one_based_skeleton: bool = False) -> "KeypointSet":
        """Build a set, deriving flip pairs from ``left_``/``right_`` name prefixes."""
        names = tuple(names)
        index = {n: i for i, n in enumerate(names)}
        flip = []
        for n in names:
            if n.startswith("left_") and "right_" + n[5:] in index:
                flip.append(index["right_" + n[5:]])
            elif n.startswith("right_") and "left_" + n[6:] in index:
                flip.append(index["left_" + n[6:]])
            else:
                flip.append(index[n])
        sk = tuple((a - 1, b - 1) if one_based_skeleton else (a, b) for a, b in skeleton)
        sig = tuple(sigmas) if sigmas is not None else tuple([0.5] * len(names))
        return cls(names, sk, tuple(flip), sig)


COCO_PERSON = KeypointSet.from_names(COCO_KEYPOINT_NAMES, COCO_SKELETON, COCO_OKS_SIGMAS, one_based_skeleton=True)


def flip_keypoints(keypoints: torch.Tensor, width: int, kset: KeypointSet = COCO_PERSON) -> torch.Tensor:
    """Mirror ``[N, K, 3]`` keypoints horizontally and swap left/right. x' = width - x
    (continuous coordinates, consistent with box flipping)."""
    out = keypoints[:, list(kset.flip_index)].clone()
    out[..., 0] = width - out[..., 0]
    return out


def keypoints_to_boxes(keypoints: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes around labelled (v > 0) keypoints of ``[N, K, 3]``; none labelled -> zeros."""
    if keypoints.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    vis = keypoints[..., 2] > 0
    x, y = keypoints[..., 0], keypoints[..., 1]
    inf = torch.tensor(float("inf"), dtype=keypoints.dtype)
    x0 = torch.where(vis, x, inf).min(1).values
    y0 = torch.where(vis, y, inf).min(1).values
    x1 = torch.where(vis, x, -inf).max(1).values
    y1 = torch.where(vis, y, -inf).max(1).values
    b = torch.stack([x0, y0, x1, y1], 1)
    b[~vis.any(1)] = 0
    return b
