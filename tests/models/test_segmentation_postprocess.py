"""Logits -> SemanticMap in original pixels, and sliding-window (tiled) inference."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from sceneparse.postprocess.semantic import semantic_maps_from_logits, sliding_window_logits, window_starts


def test_crop_then_resize_to_original_pixels():
    # image 0: valid 6x4 of an 8x8 batch frame, original 12x8 (2x); image 1: valid 8x8, original 8x8
    label0 = torch.randint(0, 3, (6, 4))
    label1 = torch.randint(0, 3, (8, 8))
    logits = torch.full((2, 4, 8, 8), -10.0)
    logits[0, 3] = 10.0  # padding region votes for class 3: must not leak in
    logits[0, :, :6, :4] = F.one_hot(label0, 4).permute(2, 0, 1) * 10.0 - 5.0
    logits[1] = F.one_hot(label1, 4).permute(2, 0, 1) * 10.0 - 5.0
    maps = semantic_maps_from_logits(logits, [(6, 4), (8, 8)], [(12, 8), (8, 8)])
    assert maps[0].image_size == (12, 8) and maps[1].image_size == (8, 8)
    # bilinear 2x upsampling of one-hot logits then arg-max == nearest upsampling of the labels
    # (output pixel 2i or 2i+1 samples input row i with weight 3/4 per axis, 9/16 > 7/16 for the rest)
    assert torch.equal(maps[0].labels, label0.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert torch.equal(maps[1].labels, label1)
    assert maps[0].scores is None


def test_scores_are_probabilities():
    logits = torch.randn(1, 5, 9, 7)
    m = semantic_maps_from_logits(logits, [(9, 7)], [(18, 14)], return_scores=True)[0]
    assert m.scores.shape == (5, 18, 14)
    torch.testing.assert_close(m.scores.sum(0), torch.ones(18, 14))
    assert torch.equal(m.scores.argmax(0), m.labels)


def test_semantic_maps_errors():
    with pytest.raises(ValueError, match="image sizes"):
        semantic_maps_from_logits(torch.zeros(2, 3, 4, 4), [(4, 4)], [(4, 4)])
    with pytest.raises(ValueError, match="do not fit"):
        semantic_maps_from_logits(torch.zeros(1, 3, 4, 4), [(5, 4)], [(4, 4)])


@pytest.mark.parametrize("length,window,stride,expected", [
    (10, 4, 3, [0, 3, 6]), (10, 4, 4, [0, 4, 6]), (3, 5, 2, [0]), (9, 4, 2, [0, 2, 4, 5]), (8, 4, 4, [0, 4]),
    (4, 4, 1, [0]),
])
def test_window_starts(length, window, stride, expected):
    assert window_starts(length, window, stride) == expected


def test_window_starts_cover_every_pixel_within_bounds():
    for length, window in itertools.product(range(1, 30), range(1, 12)):
        for stride in range(1, window + 1):
            starts = window_starts(length, window, stride)
            w = min(window, length)
            cover = torch.zeros(length, dtype=torch.int64)
            for s in starts:
                assert 0 <= s and s + w <= length
                cover[s:s + w] += 1
            assert (cover > 0).all()
            assert starts == sorted(set(starts))
    with pytest.raises(ValueError, match="uncovered"):
        window_starts(10, 3, 4)


def test_sliding_window_places_each_window_back_where_it_came_from():
    image = torch.randn(3, 37, 29)
    calls = []

    def identity(tiles):
        calls.append(tiles.shape[0])
        return tiles * 1.0

    for weighting in ("uniform", "gaussian"):
        out = sliding_window_logits(identity, image, 16, overlap=0.5, weighting=weighting)
        torch.testing.assert_close(out, image)  # any blend of identical values is the value
    # 37 rows: starts 0, 8, 16, 21 (4); 29 columns: 0, 8, 13 (3) -> 12 windows in chunks of 4
    assert calls[:3] == [4, 4, 4]


def test_sliding_window_equals_whole_image_for_a_pointwise_network():
    conv = torch.nn.Conv2d(3, 6, 1)
    image = torch.randn(3, 45, 31)
    with torch.no_grad():
        full = conv(image[None])[0]
        for weighting, batch in (("uniform", 1), ("gaussian", 3), ("uniform", 8)):
            tiled = sliding_window_logits(conv, image, (20, 16), overlap=1 / 3, batch_size=batch, weighting=weighting)
            torch.testing.assert_close(tiled, full)


def test_sliding_window_averages_overlapping_windows():
    # each window returns a constant equal to its call index: an overlapped pixel is the mean of the
    # windows covering it (uniform weighting)
    image = torch.zeros(1, 1, 10)
    counter = iter(range(100))

    def const(tiles):
        return torch.stack([torch.full((1,) + tuple(t.shape[1:]), float(next(counter))) for t in tiles])

    out = sliding_window_logits(const, image, (1, 4), stride=(1, 3), batch_size=1)
    # windows (columns): [0,4)=0, [3,7)=1, [6,10)=2
    expected = torch.tensor([0, 0, 0, 0.5, 1, 1, 1.5, 2, 2, 2])
    torch.testing.assert_close(out[0, 0], expected)


def test_sliding_window_small_image_and_errors():
    conv = torch.nn.Conv2d(3, 2, 1)
    image = torch.randn(3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(sliding_window_logits(conv, image, 64), conv(image[None])[0])
    with pytest.raises(ValueError, match="returned"):
        sliding_window_logits(lambda t: t[:, :, :2], image, 4)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_logits(conv, image, 4, overlap=1.0)
