"""AnchorGenerator: identical to torchvision's, order, hand-computed cell anchors."""
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from sceneparse.ops import AnchorGenerator, octave_sizes


def test_cell_anchors_hand_computed():
    gen = AnchorGenerator(sizes=((32,),), aspect_ratios=((0.5, 1.0, 2.0),))
    cell = gen.cell_anchors(0)
    # ratio h/w = 0.5: w = 32 / sqrt(.5) = 45.25, h = 22.63 -> half sizes 22.63, 11.31 rounded
    expected = torch.tensor([[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]])
    assert torch.equal(cell, expected)
    assert gen.num_anchors_per_location() == [3]


def test_grid_order_location_major():
    gen = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((1.0,),))
    (a,) = gen.grid_anchors([(2, 3)], [(8, 10)])
    assert a.shape == (2 * 3 * 2, 4)
    cell = gen.cell_anchors(0)
    for y in range(2):
        for x in range(3):
            for k in range(2):
                row = (y * 3 + x) * 2 + k
                assert torch.equal(a[row], cell[k] + torch.tensor([x * 10.0, y * 8.0, x * 10.0, y * 8.0]))


@pytest.mark.parametrize("sizes,ratios,image,feats", [
    (((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5, (96, 128),
     [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]),
    (octave_sizes((32, 64, 128)), ((0.5, 1.0, 2.0),) * 3, (100, 75), [(13, 10), (7, 5), (4, 3)]),
    (((128, 256, 512),), ((0.5, 1.0, 2.0),), (64, 64), [(4, 4)]),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_to_torchvision(sizes, ratios, image, feats, dtype):
    ours = AnchorGenerator(sizes, ratios)
    theirs = TVAnchorGenerator(sizes, ratios)
    images = ImageList(torch.zeros(2, 3, *image, dtype=dtype), [image, image])
    fmaps = [torch.zeros(2, 8, h, w, dtype=dtype) for h, w in feats]
    ref = theirs(images, fmaps)
    got = ours(image, feats, dtype=dtype)
    assert [g.shape[0] for g in got] == [h * w * a for (h, w), a in zip(feats, ours.num_anchors_per_location())]
    assert all(g.dtype == dtype for g in got)
    assert torch.equal(torch.cat(got), ref[0])
    assert ours.num_anchors_per_location() == theirs.num_anchors_per_location()


def test_default_is_five_fpn_levels_like_torchvision_fpn():
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location() == [3] * 5
    assert gen.sizes == ((32,), (64,), (128,), (256,), (512,))
    theirs = TVAnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    for level in range(5):
        assert torch.equal(gen.cell_anchors(level), theirs.cell_anchors[level])


def test_octave_sizes_and_errors():
    s = octave_sizes((32,), 3)
    assert s == ((32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)),)
    with pytest.raises(ValueError, match="one entry per level"):
        AnchorGenerator(((32,), (64,)), ((1.0,),) * 3)
    with pytest.raises(ValueError, match="levels"):
        AnchorGenerator(((32,), (64,))).grid_anchors([(2, 2)], [(4, 4)])
    with pytest.raises(ValueError, match="does not fit"):
        AnchorGenerator(((32,),), ((1.0,),))((10, 10), [(20, 20)])
