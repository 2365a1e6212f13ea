"""Helpers of the benchmark scripts that compute figures quoted in the notes."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_semantic import resolution_ceiling  # noqa: E402


def test_resolution_ceiling():
    y = torch.zeros(1, 64, 64, dtype=torch.long)
    y[:, :, 32:] = 1  # an edge on every grid's cell boundary: any grid represents it exactly
    assert resolution_ceiling(y, 2, 2) == 1.0 and resolution_ceiling(y, 64, 2) == 1.0
    y = torch.zeros(1, 64, 64, dtype=torch.long)
    y[:, 20:24, 20:24] = 1  # a 4x4 square
    assert resolution_ceiling(y, 64, 2) == 1.0
    # 16 px cells: the square is a sixteenth of one cell's area, and lost
    assert resolution_ceiling(y, 4, 2) == pytest.approx((4096 - 16) / 4096 / 2)
    # 4 px cells: the square is one whole cell, but bilinear upsampling gives its corner pixels
    # 0.625^2 < 0.5 of it (pixel 20's centre lies 3/8 of a cell from the neighbour's): 12 of 16 kept
    assert resolution_ceiling(y, 16, 2) == pytest.approx((4080 / 4084 + 12 / 16) / 2)
    y[:, 0, :] = 255  # ignored pixels are neither scored nor voting
    assert resolution_ceiling(y, 16, 2) == pytest.approx((4016 / 4020 + 12 / 16) / 2)
