"""Per-pixel cross-entropy with ignore index and soft Dice: hand-computed cases and torch references."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sceneparse.models.segmentation.losses import pixel_cross_entropy, soft_dice_loss


def _case(b=2, c=4, h=5, w=7, ignore_frac=0.3):
    logits = torch.randn(b, c, h, w, dtype=torch.float64)
    labels = torch.randint(0, c, (b, h, w))
    labels[torch.rand(b, h, w) < ignore_frac] = 255
    return logits, labels


def test_cross_entropy_hand_computed():
    # one valid pixel: logits (0, ln 3) -> p(class 1) = 3/4; a second pixel is ignored
    logits = torch.tensor([[[[0.0, 5.0]], [[math.log(3.0), -5.0]]]])  # [1, 2, 1, 2]
    labels = torch.tensor([[[1, 255]]])
    assert pixel_cross_entropy(logits, labels).item() == pytest.approx(math.log(4 / 3), abs=1e-7)


def test_cross_entropy_matches_torch_mean_over_valid_pixels():
    logits, labels = _case()
    ref = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(pixel_cross_entropy(logits, labels), ref)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    ref_w = F.cross_entropy(logits, labels, weight=w, ignore_index=255)
    torch.testing.assert_close(pixel_cross_entropy(logits, labels, class_weights=w), ref_w)
    # another ignore value
    lab2 = torch.where(labels == 255, torch.full_like(labels, -1), labels)
    torch.testing.assert_close(pixel_cross_entropy(logits, lab2, ignore_index=-1), ref)


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), 255)
    assert torch.isnan(F.cross_entropy(logits, labels, ignore_index=255))  # what we avoid
    loss = pixel_cross_entropy(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def _dice_reference(logits: np.ndarray, labels: np.ndarray, ignore: int, smooth: float, present_only: bool):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    valid = labels != ignore
    dices, present = [], []
    for c in range(logits.shape[1]):
        pc = p[:, c][valid]
        tc = (labels[valid] == c).astype(np.float64)
        dices.append((2 * (pc * tc).sum() + smooth) / (pc.sum() + tc.sum() + smooth))
        present.append(tc.sum() > 0)
    dices = np.array(dices)
    return 1 - (dices[np.array(present)].mean() if present_only else dices.mean())


@pytest.mark.parametrize("present_only", [False, True])
def test_soft_dice_matches_reference(present_only):
    logits, labels = _case(c=5)
    labels[labels == 4] = 0  # class 4 absent
    got = soft_dice_loss(logits, labels, smooth=1.0, present_only=present_only)
    ref = _dice_reference(logits.numpy(), labels.numpy(), 255, 1.0, present_only)
    assert got.item() == pytest.approx(ref, abs=1e-10)


def test_soft_dice_hand_computed_and_limits():
    # 2 pixels, 2 classes, p = (0.5, 0.5) everywhere, labels (0, 1), smooth 0: each class
    # dice = 2 * 0.5 / (1.0 + 1) = 0.5 -> loss 0.5
    logits = torch.zeros(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    assert soft_dice_loss(logits, labels, smooth=0.0).item() == pytest.approx(0.5)
    perfect = F.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, labels, smooth=0.0).item() == pytest.approx(0.0, abs=1e-6)
    # all ignored: 0, and differentiable
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = soft_dice_loss(x, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert soft_dice_loss(x, torch.full((1, 2, 2), 255), present_only=True).item() == 0.0


def test_losses_check_shapes():
    with pytest.raises(ValueError, match="same B, H, W"):
        pixel_cross_entropy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        soft_dice_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.int32))
