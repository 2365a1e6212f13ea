"""Dataset statistics that training recipes use: class frequencies of semantic label maps.

``median_frequency_weights`` is the class balancing of SegNet (Badrinarayanan et al., following
Eigen & Fergus): ``w_c = median(f) / f_c`` with ``f_c`` = pixels of class ``c`` divided by the
pixels of the images in which ``c`` appears. Rare classes (the thing classes of a street or of the
synthetic scenes, a few percent of the pixels) weigh more in the cross-entropy, frequent ones
(road, sky) less; the median class weighs 1. Pass the result as ``class_weights=`` to a semantic
model (``model.kwargs.class_weights`` in a config).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..conventions import IGNORE_INDEX

__all__ = ["class_pixel_counts", "median_frequency_weights"]


def class_pixel_counts(label_maps: Iterable, num_classes: int, ignore_index: int = IGNORE_INDEX
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels [C], image_pixels [C])``, ``int64``: pixels labelled ``c`` over all maps, and the
    valid pixels of the maps that contain ``c``. Maps are ``[H, W]`` integer arrays (or tensors);
    ``ignore_index`` pixels count nowhere; any other label outside ``0..C-1`` is an error."""
    pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for i, m in enumerate(label_maps):
        lab = np.asarray(m.cpu().numpy() if hasattr(m, "cpu") else m).ravel().astype(np.int64)
        lab = lab[lab != ignore_index]
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            bad = np.unique(lab[(lab < 0) | (lab >= num_classes)])[:10].tolist()
            raise ValueError(f"label map {i}: labels {bad} outside 0..{num_classes - 1} and not ignore_index "
                             f"{ignore_index}")
        counts = np.bincount(lab, minlength=num_classes)
        pixels += counts
        image_pixels += np.where(counts > 0, lab.size, 0)
    return pixels, image_pixels


def median_frequency_weights(label_maps: Iterable, num_classes: int, ignore_index: int = IGNORE_INDEX
                             ) -> np.ndarray:
    """``float64 [C]`` median-frequency class weights (module docstring); a class that never appears
    gets weight 1."""
    pixels, image_pixels = class_pixel_counts(label_maps, num_classes, ignore_index)
    present = pixels > 0
    if not present.any():
        return np.ones(num_classes)
    freq = pixels[present] / image_pixels[present]
    weights = np.ones(num_classes)
    weights[present] = np.median(freq) / freq
    return weights
