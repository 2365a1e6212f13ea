"""Matcher and sampler against torchvision; Hungarian matching against brute force."""
import itertools

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TVSampler
from torchvision.models.detection._utils import Matcher as TVMatcher

from sceneparse.ops import BalancedPositiveNegativeSampler, Matcher, box_iou, hungarian_match


def test_hand_computed_thresholds():
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.35],
                        [0.2, 0.6, 0.05, 0.1]])
    m = Matcher(0.7, 0.3)(iou)
    assert m.tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD, Matcher.BETWEEN_THRESHOLDS]
    # gt 1's best prediction is 1 (IoU 0.6, between thresholds): low-quality matching gives it to gt 1.
    # gt 0's best (prediction 0) is matched anyway; predictions 2 and 3 are nobody's best and stay.
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert m.tolist() == [0, 1, -1, -2]


@pytest.mark.parametrize("low_quality", [False, True])
@pytest.mark.parametrize("high,low", [(0.7, 0.3), (0.5, 0.5), (0.5, 0.4)])
def test_identical_to_torchvision(low_quality, high, low):
    for trial in range(5):
        g = torch.Generator().manual_seed(trial)
        # quantised qualities so that ties (the subtle part of low-quality matching) happen
        iou = (torch.rand(6, 300, generator=g) * 10).floor() / 10
        ours = Matcher(high, low, low_quality)(iou.clone())
        theirs = TVMatcher(high, low, low_quality)(iou.clone())
        assert ours.dtype == torch.int64
        assert torch.equal(ours, theirs)


def test_on_real_boxes_low_quality_guarantee():
    gt = torch.tensor([[10.0, 10.0, 20.0, 20.0], [50.0, 50.0, 200.0, 200.0]])
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [40.0, 40.0, 190.0, 190.0], [100.0, 0.0, 120.0, 20.0]])
    iou = box_iou(gt, anchors)
    plain = Matcher(0.7, 0.3)(iou)
    assert plain.tolist() == [-1, 1, -1]  # gt 0's best anchor has IoU 36/320 < 0.3
    lq = Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou)
    assert lq.tolist() == [0, 1, -1]


def test_empty_inputs():
    assert Matcher(0.5, 0.4)(torch.zeros(0, 7)).tolist() == [-1] * 7
    assert Matcher(0.5, 0.4, True)(torch.zeros(3, 0)).shape == (0,)
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


def test_sampler_identical_to_torchvision_same_seed():
    labels = [torch.randint(-1, 4, (1000,)), torch.tensor([0] * 50 + [2] * 3 + [-1] * 10)]
    torch.manual_seed(123)
    ours_pos, ours_neg = BalancedPositiveNegativeSampler(256, 0.25)(labels)
    torch.manual_seed(123)
    tv_pos, tv_neg = TVSampler(256, 0.25)(labels)
    for a, b, c, d in zip(ours_pos, tv_pos, ours_neg, tv_neg):
        assert a.dtype == torch.bool
        assert torch.equal(a, b.bool()) and torch.equal(c, d.bool())


def test_sampler_counts_and_generator():
    labels = torch.tensor([1] * 100 + [0] * 1000 + [-1] * 50)
    sampler = BalancedPositiveNegativeSampler(128, 0.25)
    (pos,), (neg,) = sampler([labels], generator=torch.Generator().manual_seed(0))
    assert int(pos.sum()) == 32 and int(neg.sum()) == 96
    assert bool((labels[pos] >= 1).all()) and bool((labels[neg] == 0).all())
    assert not bool((pos & neg).any())
    (pos2,), (neg2,) = sampler([labels], generator=torch.Generator().manual_seed(0))
    assert torch.equal(pos, pos2) and torch.equal(neg, neg2)
    # few positives: the rest is filled with negatives
    few = torch.tensor([1] * 3 + [0] * 500)
    (p,), (n,) = sampler([few])
    assert int(p.sum()) == 3 and int(n.sum()) == 125


def brute_force(cost):
    """Smallest total cost over every injective assignment of the smaller side."""
    n, m = cost.shape
    if n <= m:
        return min(sum(float(cost[i, c]) for i, c in enumerate(cols)) for cols in itertools.permutations(range(m), n))
    return min(sum(float(cost[r, j]) for j, r in enumerate(rows)) for rows in itertools.permutations(range(n), m))


@pytest.mark.parametrize("shape", [(4, 4), (3, 6), (6, 3)])
def test_hungarian_optimal(shape):
    cost = torch.rand(*shape, dtype=torch.float64)
    rows, cols = hungarian_match(cost)
    assert rows.dtype == torch.int64 and len(rows) == min(shape)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert abs(float(cost[rows, cols].sum()) - brute_force(cost)) < 1e-12


def test_hungarian_rejects_nan():
    cost = torch.rand(3, 3)
    cost[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        hungarian_match(cost)
