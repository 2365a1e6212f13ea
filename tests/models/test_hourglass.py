"""The stacked hourglass trunk (shared by CornerNet and the pose model): output shapes and strides, one
feature map per stack, the hourglass's recursion and skip branches, prediction feedback (Newell),
gradients reaching the stem from every stack, and Hourglass-104's size."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sceneparse.models.backbones import StackedHourglass
from sceneparse.models.backbones.hourglass import BasicResidual, BottleneckResidual, Hourglass, hourglass104

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("style", ["newell", "cornernet"])
def test_shapes_and_one_map_per_stack(style):
    trunk = StackedHourglass(3, (16, 24, 32), (1, 1, 2), style=style, feature_channels=20, stem_channels=8)
    assert trunk.size_divisible == 16 and trunk.depth == 2 and trunk.out_channels == 20
    feats = trunk(torch.rand(2, 3, 64, 96))
    assert len(feats) == 3 and all(f.shape == (2, 20, 16, 24) for f in feats)
    # sizes that do not halve exactly: every level is resized back to its skip branch (the stem's
    # max-pool rounds 35 down, CornerNet's strided convolution up)
    feats = trunk(torch.rand(2, 3, 52, 70))
    assert all(f.shape == (2, 20, 13, 17 if style == "newell" else 18) for f in feats)


def test_hourglass_is_recursive_with_a_skip_branch_per_level():
    hg = Hourglass((8, 12, 16, 20), (2, 1, 1, 3), BasicResidual)
    levels, h = [], hg
    while isinstance(h, Hourglass):
        levels.append(h)
        h = h.inner
    assert len(levels) == 3 and len(h) == 3  # depth 3; the innermost level has blocks[-1] residuals
    assert [len(lv.skip) for lv in levels] == [2, 1, 1]
    assert levels[0].down[0].conv1.stride == (2, 2)  # CornerNet: strided residual, no max-pool
    assert Hourglass((8, 8), (1, 1), BottleneckResidual, maxpool=True).pool.kernel_size == 2
    # the output is skip(x) + upsample(low(x)): with the low path zeroed only the skip branch is left
    hg.eval()
    x = torch.rand(1, 8, 16, 16)
    for m in hg.up[-1].modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    # the last up residual now outputs relu(0 + skip-conv(x)); zero that too
    for p in hg.up[-1].skip.parameters():
        nn.init.zeros_(p)
    with torch.no_grad():
        assert torch.allclose(hg(x), hg.skip(x))


def test_prediction_feedback_and_gradients_reach_the_stem():
    torch.manual_seed(0)
    trunk = StackedHourglass(2, (16, 16, 16), (1, 1, 1), style="newell", stem_channels=8, prediction_channels=5)
    heads = nn.ModuleList(nn.Conv2d(16, 5, 1) for _ in range(2))
    x = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="forward_with_head"):
        trunk(x)
    feats, preds = trunk.forward_with_head(x, lambda k, f: heads[k](f))
    assert len(feats) == len(preds) == 2 and preds[1].shape == (2, 5, 16, 16)
    # the second stack sees the first one's predictions: changing the first head changes it
    with torch.no_grad():
        heads[0].bias.add_(1.0)
        feats2, _ = trunk.forward_with_head(x, lambda k, f: heads[k](f))
    assert torch.equal(feats2[0], feats[0]) and not torch.allclose(feats2[1], feats[1])
    # intermediate supervision: a loss on each stack alone reaches the stem
    for k in range(2):
        trunk.zero_grad()
        feats, preds = trunk.forward_with_head(x, lambda i, f: heads[i](f))
        preds[k].square().mean().backward()
        assert trunk.stem[0].weight.grad.abs().sum() > 0
        assert (trunk.hourglasses[1].skip[0].conv1.weight.grad is None) == (k == 0)
    c = StackedHourglass(2, (16, 24), (1, 1), style="cornernet", feature_channels=16, stem_channels=8)
    c(torch.rand(2, 3, 32, 32))[0].sum().backward()
    assert c.stem[0].weight.grad.abs().sum() > 0 and c.merge_residual[0].conv1.weight.grad is None


def test_configurations():
    with pytest.raises(ValueError, match="style"):
        StackedHourglass(2, (8, 8), (1, 1), style="other")
    with pytest.raises(ValueError, match="newell"):
        StackedHourglass(2, (8, 8), (1, 1), style="cornernet", prediction_channels=3)
    with pytest.raises(ValueError, match="levels"):
        Hourglass((8,), (1,))
    # Newell's 8-stack model (256 features, 4 downsamplings, one residual a branch): ~25M parameters
    eight = StackedHourglass(8, (256,) * 5, (1,) * 5, style="newell", prediction_channels=16)
    n = sum(p.numel() for p in eight.parameters())
    assert eight.num_stacks == 8 and 24e6 < n < 27e6, n


@pytest.mark.slow
def test_hourglass104():
    trunk = hourglass104()
    assert sum(p.numel() for p in trunk.parameters()) == 187_700_352
    assert trunk.depth == 5 and trunk.size_divisible == 128
    with torch.no_grad():
        feats = trunk.eval()(torch.rand(1, 3, 128, 128))
    assert len(feats) == 2 and feats[1].shape == (1, 256, 32, 32)
