import numpy as np
import pytest
import torch

from sceneparse.data.stats import class_pixel_counts, median_frequency_weights


def test_median_frequency_weights_by_hand():
    # map 1 (4 px): 3 x class 0, 1 x class 1; map 2 (4 px, one ignored): 2 x class 0, 1 x class 2
    a = np.array([[0, 0], [0, 1]])
    b = torch.tensor([[0, 2], [0, 255]])
    pixels, image_pixels = class_pixel_counts([a, b], 4)
    assert pixels.tolist() == [5, 1, 1, 0]
    assert image_pixels.tolist() == [7, 4, 3, 0]  # class 0 appears in both maps (4 + 3 valid pixels)
    # frequencies 5/7, 1/4, 1/3; median 1/3 -> weights (1/3)/(5/7), (1/3)/(1/4), 1; absent class: 1
    w = median_frequency_weights([a, b], 4)
    np.testing.assert_allclose(w, [7 / 15, 4 / 3, 1.0, 1.0], rtol=1e-15)


def test_labels_outside_the_classes_are_named():
    with pytest.raises(ValueError, match=r"label map 1: labels \[7\]"):
        class_pixel_counts([np.zeros((2, 2), int), np.full((2, 2), 7)], 3)
