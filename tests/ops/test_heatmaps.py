"""Keypoint heatmaps: Keypoint R-CNN targets/decoding against torchvision; Gaussian encode/decode round trips."""
import math

import pytest
import torch
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_heatmaps_to_keypoints
from torchvision.models.detection.roi_heads import keypoints_to_heatmap as tv_keypoints_to_heatmap

from sceneparse.ops import decode_heatmaps, gaussian_heatmaps, heatmaps_to_keypoints, keypoints_to_heatmap_targets


def test_targets_hand_computed():
    rois = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # 20 x 40 px, m = 4: cells 5 x 10 px
    kp = torch.tensor([[[10.0, 20.0, 2], [29.0, 59.0, 1], [30.0, 60.0, 2], [17.0, 45.0, 2],
                        [9.0, 30.0, 2], [15.0, 30.0, 0]]])
    idx, valid = keypoints_to_heatmap_targets(kp, rois, 4)
    # (0,0) -> 0; (3,3) -> 15; right/bottom edge -> last cell 15; (1, 2) -> 9; left of RoI; unlabelled
    assert idx.tolist() == [[0, 15, 15, 9, 0, 0]]
    assert valid.tolist() == [[1, 1, 1, 1, 0, 0]]


def test_targets_identical_to_torchvision():
    g = torch.Generator().manual_seed(0)
    n, k = 30, 17
    xy = torch.rand(n, 2, generator=g) * 100
    rois = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 5], 1)
    kp = torch.rand(n, k, 3, generator=g)
    kp[..., 0] = rois[:, 0:1] - 5 + kp[..., 0] * (rois[:, 2:3] - rois[:, 0:1] + 10)
    kp[..., 1] = rois[:, 1:2] - 5 + kp[..., 1] * (rois[:, 3:4] - rois[:, 1:2] + 10)
    kp[..., 2] = torch.randint(0, 3, (n, k), generator=g).float()
    kp[0, 0, 0], kp[1, 1, 1] = rois[0, 2], rois[1, 3]  # exactly on the far edges
    idx, valid = keypoints_to_heatmap_targets(kp, rois, 56)
    ref_idx, ref_valid = tv_keypoints_to_heatmap(kp, rois, 56)
    assert torch.equal(idx, ref_idx) and torch.equal(valid, ref_valid)
    assert 0.2 < valid.float().mean() < 0.9  # a real mix of valid and invalid keypoints


def test_heatmaps_to_keypoints_identical_to_torchvision():
    g = torch.Generator().manual_seed(1)
    n, k = 12, 5
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 40 + 0.5
    wh[3:6] = torch.tensor([17.3, 9.2])  # RoIs of equal rounded size are resized together
    wh[6] = torch.tensor([0.3, 0.2])  # below one pixel: clamped to 1
    rois = torch.cat([xy, xy + wh], 1)
    maps = torch.randn(n, k, 14, 14, generator=g)
    kp, scores = heatmaps_to_keypoints(maps, rois)
    ref_kp, ref_scores = tv_heatmaps_to_keypoints(maps, rois)
    assert kp.shape == (n, k, 3) and scores.shape == (n, k)
    assert torch.equal(kp, ref_kp) and torch.equal(scores, ref_scores)
    empty_kp, empty_scores = heatmaps_to_keypoints(torch.zeros(0, k, 14, 14), torch.zeros(0, 4))
    assert empty_kp.shape == (0, k, 3) and empty_scores.shape == (0, k)


def test_heatmaps_to_keypoints_one_hot_round_trip():
    # the predicted argmax of a one-hot map returns the keypoint to within one RoI cell
    rois = torch.tensor([[0.0, 0.0, 56.0, 56.0], [100.0, 50.0, 212.0, 162.0]])
    kp = torch.tensor([[[10.0, 30.0, 2]], [[150.0, 80.0, 2]]])
    idx, _ = keypoints_to_heatmap_targets(kp, rois, 56)
    maps = torch.full((2, 1, 56 * 56), -10.0)
    maps[torch.arange(2), 0, idx[:, 0]] = 10.0
    out, _ = heatmaps_to_keypoints(maps.reshape(2, 1, 56, 56), rois)
    cell = ((rois[:, 2] - rois[:, 0]) / 56)[:, None]
    assert ((out[..., :2] - kp[..., :2]).abs() <= cell[..., None]).all()


def test_gaussian_values_and_weights():
    kp = torch.tensor([[[9.0, 5.0, 2], [3.0, 3.0, 0], [100.0, 1.0, 2]]])
    maps, w = gaussian_heatmaps(kp, (6, 8), stride=2.0, sigma=1.5)
    assert maps.shape == (1, 3, 6, 8) and w.tolist() == [[1.0, 0.0, 0.0]]
    u, v = 9.0 / 2 - 0.5, 5.0 / 2 - 0.5  # (4, 2)
    for i, j in [(2, 4), (0, 0), (5, 7), (3, 1)]:
        expected = math.exp(-((j - u) ** 2 + (i - v) ** 2) / (2 * 1.5**2))
        assert abs(float(maps[0, 0, i, j]) - expected) < 1e-6
    assert float(maps[0, 0].max()) == pytest.approx(1.0)
    assert float(maps[0, 1:].abs().sum()) == 0.0


@pytest.mark.parametrize("stride", [1.0, 4.0])
def test_gaussian_round_trip(stride):
    g = torch.Generator().manual_seed(2)
    h, w = 32, 24
    kp = torch.zeros(10, 17, 3)
    kp[..., 0] = (torch.rand(10, 17, generator=g) * (w - 4) + 2) * stride  # away from the border
    kp[..., 1] = (torch.rand(10, 17, generator=g) * (h - 4) + 2) * stride
    kp[..., 2] = 2
    maps, weights = gaussian_heatmaps(kp, (h, w), stride, sigma=2.0)
    assert bool((weights == 1).all())
    errors = {}
    for refine in ("dark", "quarter", "none"):
        dec, scores = decode_heatmaps(maps, stride=stride, refine=refine)
        assert dec.shape == (10, 17, 3) and bool((dec[..., 2] == 1).all())
        errors[refine] = (dec[..., :2] - kp[..., :2]).abs().max().item() / stride
        assert bool((scores > math.exp(-0.25)).all())  # the peak is within half a cell of a cell centre
    assert errors["dark"] < 1e-3  # exact up to float32 for an untruncated Gaussian
    assert errors["none"] <= 0.5 + 1e-5
    assert errors["quarter"] <= 0.5 + 1e-5
    # quarter-offset beats no refinement on average
    q, _ = decode_heatmaps(maps, stride=stride, refine="quarter")
    z, _ = decode_heatmaps(maps, stride=stride, refine="none")
    assert (q[..., :2] - kp[..., :2]).abs().mean() < (z[..., :2] - kp[..., :2]).abs().mean()


def test_decode_border_peak_falls_back():
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 0, 2] = 1.0  # peak on the top border: no y neighbour
    maps[0, 0, 1, 2] = 0.5
    dec, score = decode_heatmaps(maps, refine="dark")
    assert dec[0, 0, :2].tolist() == [2.5, 0.5] and float(score) == 1.0


def test_errors():
    with pytest.raises(ValueError, match="refine"):
        decode_heatmaps(torch.zeros(1, 1, 4, 4), refine="taylor")
    with pytest.raises(ValueError, match=r"\[N, K, 3\]"):
        gaussian_heatmaps(torch.zeros(2, 3), (4, 4), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"rois must be \[N, 4\]"):
        heatmaps_to_keypoints(torch.zeros(2, 1, 4, 4), torch.zeros(3, 4))
