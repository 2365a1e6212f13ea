"""Losses against scalar float64 twins, torch / torchvision and gradcheck."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from sceneparse.ops import dice_loss, diou_loss, giou_loss, sigmoid_focal_loss, smooth_l1_loss


def boxes(n):
    xy = torch.rand(n, 2, dtype=torch.float64) * 50
    wh = torch.rand(n, 2, dtype=torch.float64) * 30 + 1
    return torch.cat([xy, xy + wh], 1)


def test_smooth_l1_hand_computed_and_torch():
    x = torch.tensor([0.0, 0.05, -0.5, 2.0], dtype=torch.float64)
    t = torch.zeros(4, dtype=torch.float64)
    beta = 1 / 9
    expected = [0.0, 0.5 * 0.05**2 / beta, 0.5 - 0.5 * beta, 2.0 - 0.5 * beta]
    torch.testing.assert_close(smooth_l1_loss(x, t, reduction="none"), torch.tensor(expected, dtype=torch.float64))
    a, b = torch.randn(50, 4), torch.randn(50, 4)
    for beta in (1 / 9, 1.0):
        for red in ("sum", "mean", "none"):
            torch.testing.assert_close(smooth_l1_loss(a, b, beta, red), F.smooth_l1_loss(a, b, reduction=red, beta=beta))
    torch.testing.assert_close(smooth_l1_loss(a, b, beta=0.0), (a - b).abs().sum())


def ref_focal(x, t, alpha, gamma):
    p = 1 / (1 + math.exp(-x))
    pt = p if t == 1 else 1 - p
    at = alpha if t == 1 else 1 - alpha
    if alpha < 0:
        at = 1.0
    return -at * (1 - pt) ** gamma * math.log(pt)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5)])
def test_focal_scalar_reference_and_torchvision(alpha, gamma):
    x = torch.randn(40, 3, dtype=torch.float64) * 3
    t = (torch.rand(40, 3) > 0.7).double()
    got = sigmoid_focal_loss(x, t, alpha, gamma)
    ref = torch.tensor([[ref_focal(float(x[i, j]), float(t[i, j]), alpha, gamma) for j in range(3)] for i in range(40)],
                       dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha, gamma, "sum"),
                               torchvision.ops.sigmoid_focal_loss(x, t, alpha, gamma, "sum"))
    # gamma = 0, no alpha: plain BCE
    if gamma == 0 and alpha < 0:
        torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(x, t, reduction="none"))


def test_focal_is_stable_for_large_logits():
    x = torch.tensor([100.0, -100.0])
    t = torch.tensor([0.0, 1.0])
    out = sigmoid_focal_loss(x, t, alpha=-1, gamma=0.0)  # BCE: 100 each, not inf
    torch.testing.assert_close(out, torch.tensor([100.0, 100.0]))


def test_box_losses_equal_torchvision():
    a, b = boxes(20), boxes(20)
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(giou_loss(a, b, red), torchvision.ops.generalized_box_iou_loss(a, b, red))
        torch.testing.assert_close(diou_loss(a, b, red), torchvision.ops.distance_box_iou_loss(a, b, red))
    # identical boxes: 0; far apart: close to 2 for GIoU
    assert float(giou_loss(a[:1], a[:1])) < 1e-6
    far = giou_loss(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[1000.0, 1000.0, 1001.0, 1001.0]]))
    assert 1.99 < float(far) <= 2.0


def ref_dice(p_logits, t, smooth=1.0):
    p = [1 / (1 + math.exp(-v)) for v in p_logits]
    inter = sum(pi * ti for pi, ti in zip(p, t))
    return 1 - (2 * inter + smooth) / (sum(p) + sum(t) + smooth)


def test_dice_scalar_reference():
    x = torch.randn(5, 6, 7, dtype=torch.float64)
    t = (torch.rand(5, 6, 7) > 0.5).double()
    t[4] = 0
    got = dice_loss(x, t)
    ref = torch.tensor([ref_dice(x[i].flatten().tolist(), t[i].flatten().tolist()) for i in range(5)],
                       dtype=torch.float64)
    torch.testing.assert_close(got, ref)
    # perfect (saturated) prediction -> ~0; empty vs empty -> 0
    perfect = dice_loss(torch.where(t[:1] > 0, 50.0, -50.0).double(), t[:1])
    assert float(perfect) < 1e-6
    assert float(dice_loss(torch.full((1, 4, 4), -100.0), torch.zeros(1, 4, 4))) < 1e-6
    torch.testing.assert_close(dice_loss(x, t, reduction="mean"), ref.mean())


def test_gradchecks():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(6, 3) > 0.5).double()
    assert torch.autograd.gradcheck(lambda v: sigmoid_focal_loss(v, t), (x,))
    assert torch.autograd.gradcheck(lambda v: dice_loss(v, t), (x,))
    y = torch.randn(6, 3, dtype=torch.float64)
    y = y + torch.sign(y) * 0.2  # keep |x - y| away from beta, where the second derivative jumps
    target = x.detach() + y  # a new tensor: gradcheck perturbs x in place
    assert torch.autograd.gradcheck(lambda v: smooth_l1_loss(v, target, beta=0.1), (x,))
    b = boxes(4)
    a = (b + torch.randn(4, 4, dtype=torch.float64) * 3).detach()
    a[:, 2:] = torch.maximum(a[:, 2:], a[:, :2] + 1)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: giou_loss(v, b, "sum"), (a,))
    assert torch.autograd.gradcheck(lambda v: diou_loss(v, b, "mean"), (a,))


def test_empty_mean_is_zero_and_differentiable():
    x = torch.zeros(0, 4, requires_grad=True)
    out = giou_loss(x, torch.zeros(0, 4), reduction="mean")
    out.backward()
    assert out.item() == 0.0 and x.grad.shape == (0, 4)


def test_errors():
    with pytest.raises(ValueError, match="reduction"):
        smooth_l1_loss(torch.zeros(2), torch.zeros(2), reduction="avg")
    with pytest.raises(ValueError, match="same shape"):
        dice_loss(torch.zeros(2, 3), torch.zeros(2, 4))
