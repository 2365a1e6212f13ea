"""BoxCoder: identical to torchvision's BoxCoder; round trip; hand-computed deltas; clamping."""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from sceneparse.ops import BoxCoder


def random_boxes(n, dtype=torch.float32):
    xy = torch.rand(n, 2, dtype=dtype) * 200
    wh = torch.rand(n, 2, dtype=dtype) * 100 + 2
    return torch.cat([xy, xy + wh], dim=1)


def test_hand_computed_encode():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    gt = torch.tensor([[5.0, 0.0, 25.0, 10.0]])  # centre (15, 5), 20 x 10
    d = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(gt, anchor)
    expected = torch.tensor([[10 * 10 / 10, 10 * -5 / 20, 5 * math.log(2.0), 5 * math.log(0.5)]])
    torch.testing.assert_close(d, expected)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_identical_to_torchvision(weights):
    anchors, gt = random_boxes(500), random_boxes(500)
    ours, theirs = BoxCoder(weights), TVBoxCoder(weights)
    d = ours.encode(gt, anchors)
    assert torch.equal(d, theirs.encode_single(gt, anchors))
    k = 3
    deltas = torch.randn(500, 4 * k) * 2
    deltas[:5, 2] = 20.0  # beyond bbox_xform_clip
    got = ours.decode(deltas, anchors)
    assert got.shape == (500, k, 4)
    assert torch.equal(got, theirs.decode(deltas, [anchors]))


def test_round_trip_and_clamp():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    anchors, gt = random_boxes(100, torch.float64), random_boxes(100, torch.float64)
    back = coder.decode(coder.encode(gt, anchors), anchors)[:, 0]
    torch.testing.assert_close(back, gt, rtol=0, atol=1e-9)
    # a huge log-width is clamped at log(1000/16): width at most 62.5 x the anchor's
    huge = torch.tensor([[0.0, 0.0, 5 * 50.0, 0.0]])
    box = coder.decode(huge, torch.tensor([[0.0, 0.0, 16.0, 16.0]]))[0, 0]
    assert abs(float(box[2] - box[0]) - 1000.0) < 1e-3
    assert abs(float(box[3] - box[1]) - 16.0) < 1e-5


def test_shape_and_weight_errors():
    with pytest.raises(ValueError, match="4 positive"):
        BoxCoder((1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"\[N, 4\*k\]"):
        BoxCoder().decode(torch.zeros(3, 6), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="same shape"):
        BoxCoder().encode(torch.zeros(3, 4), torch.zeros(2, 4))
