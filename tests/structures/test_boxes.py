import numpy as np
import pytest
import torch

from sceneparse.conventions import BoxFormat
from sceneparse.structures import boxes as B


def test_convert_hand_made():
    xyxy = torch.tensor([[10.0, 20.0, 40.0, 60.0]])
    assert B.convert(xyxy, "xyxy", "xywh").tolist() == [[10, 20, 30, 40]]
    assert B.convert(xyxy, BoxFormat.XYXY, BoxFormat.CXCYWH).tolist() == [[25, 40, 30, 40]]
    assert B.convert(torch.tensor([[25.0, 40, 30, 40]]), "cxcywh", "xyxy").tolist() == [[10, 20, 40, 60]]


@pytest.mark.parametrize("src", list(BoxFormat))
@pytest.mark.parametrize("dst", list(BoxFormat))
def test_convert_round_trip_tensor_and_numpy(src, dst):
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(50, 2, generator=g) * 100
    wh = torch.rand(50, 2, generator=g) * 50 + 1
    xyxy = torch.cat([xy, xy + wh], 1).double()
    a = B.convert(xyxy, "xyxy", src)
    back = B.convert(B.convert(a, src, dst), dst, "xyxy")
    assert torch.allclose(back, xyxy, atol=1e-9)
    npa = B.convert(xyxy.numpy(), "xyxy", src)
    assert isinstance(npa, np.ndarray)
    np.testing.assert_allclose(npa, a.numpy())


def test_unknown_format_message():
    with pytest.raises(ValueError, match="unknown box format 'xyz'"):
        B.convert(torch.zeros(1, 4), "xyz", "xyxy")


def test_area_clip_scale_valid_normalize():
    b = torch.tensor([[-5.0, 2.0, 15.0, 12.0], [3.0, 3.0, 3.0, 8.0], [0, 0, 1, 1]])
    assert B.area(b).tolist() == [200.0, 0.0, 1.0]  # w*h, no +1
    assert B.clip(b, (10, 12)).tolist() == [[0, 2, 12, 10], [3, 3, 3, 8], [0, 0, 1, 1]]
    assert B.scale(b, 2.0, 0.5)[0].tolist() == [-10, 1, 30, 6]
    assert B.is_valid(b).tolist() == [True, False, True]
    assert B.is_valid(torch.tensor([[0, 0, float("nan"), 1.0]])).tolist() == [False]
    n = B.normalize(b, (10, 20))
    assert torch.allclose(n[0], torch.tensor([-0.25, 0.2, 0.75, 1.2]))
    assert torch.allclose(B.denormalize(n, (10, 20)), b)
    assert B.inside(b, (10, 20)).tolist() == [False, True, True]


def test_hflip_twice_is_identity():
    b = torch.tensor([[1.0, 2.0, 5.0, 9.0]])
    f = B.hflip(b, 10)
    assert f.tolist() == [[5, 2, 9, 9]]
    assert torch.equal(B.hflip(f, 10), b)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_integer_tensor_boxes_are_never_rounded_to_float32(dtype):
    """Issue 22 (the box_area defect's pattern): integer tensors were divided in float32, which
    rounds coordinates past 2**24. Divisions now run in float64 for them (as numpy does for integer
    arrays), and what divides nothing keeps the integer dtype."""
    n = 2**31 - 1
    b = torch.tensor([[1, 2, n, n - 2], [0, 0, 3, 4]], dtype=dtype)
    as_np = b.numpy().astype(np.int64)
    cxcywh = B.convert(b, "xyxy", "cxcywh")
    assert cxcywh.dtype == torch.float64
    assert cxcywh[0].tolist() == [(1 + n) / 2, n / 2, n - 1, n - 4]
    np.testing.assert_array_equal(cxcywh.numpy(), B.convert(as_np, "xyxy", "cxcywh"))
    assert torch.equal(B.convert(cxcywh, "cxcywh", "xyxy"), b.double())
    assert B.convert(b, "xywh", "cxcywh")[0].tolist() == [1 + n / 2, 2 + (n - 2) / 2, n, n - 2]
    assert B.convert(b, "cxcywh", "xyxy")[1].tolist() == [-1.5, -2.0, 1.5, 2.0]
    xywh = B.convert(b, "xyxy", "xywh")
    assert xywh.dtype == dtype and xywh[0].tolist() == [1, 2, n - 1, n - 4]
    assert B.area(b.long()).tolist() == [(n - 1) * (n - 4), 12]
    normalized = B.normalize(b, (n, n))
    assert normalized.dtype == torch.float64 and normalized[0].tolist() == [1 / n, 2 / n, 1.0, (n - 2) / n]
    np.testing.assert_array_equal(normalized.numpy(), B.normalize(as_np, (n, n)))
