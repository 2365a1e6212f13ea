"""IoU / GIoU / DIoU: a slow scalar float64 twin, torchvision, hand-computed cases and gradcheck."""
import math

import pytest
import torch
import torchvision

from sceneparse.ops import (
    box_area,
    box_iou,
    box_iou_paired,
    distance_box_iou,
    distance_box_iou_paired,
    generalized_box_iou,
    generalized_box_iou_paired,
)


def random_boxes(n, size=100.0, dtype=torch.float64, generator=None):
    xy = torch.rand(n, 2, dtype=dtype, generator=generator) * size
    wh = torch.rand(n, 2, dtype=dtype, generator=generator) * size / 2 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def ref_pair(a, b):
    """Scalar float64 IoU, GIoU, DIoU of two XYXY boxes, straight from the definitions."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / union
    cw = max(ax2, bx2) - min(ax1, bx1)
    ch = max(ay2, by2) - min(ay1, by1)
    giou = iou - (cw * ch - union) / (cw * ch)
    rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    diou = iou - rho2 / (cw**2 + ch**2)
    return iou, giou, diou


def ref_matrix(a, b, which):
    k = {"iou": 0, "giou": 1, "diou": 2}[which]
    return torch.tensor([[ref_pair(x, y)[k] for y in b] for x in a], dtype=torch.float64)


def test_hand_computed_cases():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 6.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    # overlap 1 px, union 7; disjoint (enclosing 6 x 2 = 12, union 8); identical
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))
    assert torch.allclose(generalized_box_iou(a, b), torch.tensor([[1 / 7 - (9 - 7) / 9, -(12 - 8) / 12, 1.0]]))
    # centres (1,1)-(2,2): rho^2 = 2, enclosing diagonal^2 = 18; (1,1)-(5,1): rho^2 = 16, c^2 = 36 + 4
    expected = torch.tensor([[1 / 7 - 2 / 18, -16 / 40, 1.0]])
    assert torch.allclose(distance_box_iou(a, b, eps=0.0), expected, atol=1e-7)
    assert torch.allclose(box_area(b), torch.tensor([4.0, 4.0, 4.0]))


@pytest.mark.parametrize("which,fn", [("iou", box_iou), ("giou", generalized_box_iou), ("diou", distance_box_iou)])
def test_pairwise_matches_scalar_reference(which, fn):
    a, b = random_boxes(7), random_boxes(5)
    kwargs = {"eps": 0.0} if which == "diou" else {}
    got = fn(a, b, **kwargs)
    assert got.shape == (7, 5) and got.dtype == torch.float64
    assert torch.allclose(got, ref_matrix(a, b, which), rtol=0, atol=1e-12)


@pytest.mark.parametrize("ours,theirs", [
    (box_iou, torchvision.ops.box_iou),
    (generalized_box_iou, torchvision.ops.generalized_box_iou),
    (distance_box_iou, torchvision.ops.distance_box_iou),
])
def test_pairwise_identical_to_torchvision(ours, theirs):
    a, b = random_boxes(60, dtype=torch.float32), random_boxes(40, dtype=torch.float32)
    a[:5] = b[:5]  # exact duplicates: IoU 1
    got, ref = ours(a, b), theirs(a, b)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert torch.allclose(got[range(5), range(5)], torch.ones(5), atol=1e-6)


def test_pairwise_batched_leading_dims():
    a, b = random_boxes(6).reshape(2, 3, 4), random_boxes(8).reshape(2, 4, 4)
    got = generalized_box_iou(a, b)
    assert got.shape == (2, 3, 4)
    for i in range(2):
        assert torch.allclose(got[i], ref_matrix(a[i], b[i], "giou"), atol=1e-12)


def test_half_precision_is_upcast():
    a = torch.tensor([[0.0, 0.0, 300.0, 300.0]], dtype=torch.float16)  # area 9e4 overflows fp16
    b = torch.tensor([[0.0, 0.0, 300.0, 150.0]], dtype=torch.float16)
    out = box_iou(a, b)
    assert out.dtype == torch.float32 and abs(float(out) - 0.5) < 1e-6


def test_paired_equal_diagonal_and_torchvision_losses():
    a, b = random_boxes(30), random_boxes(30)
    a[0] = b[0]
    torch.testing.assert_close(box_iou_paired(a, b, eps=0.0), torch.diagonal(box_iou(a, b)))
    torch.testing.assert_close(generalized_box_iou_paired(a, b, eps=0.0), torch.diagonal(generalized_box_iou(a, b)))
    torch.testing.assert_close(distance_box_iou_paired(a, b, eps=0.0),
                               torch.diagonal(distance_box_iou(a, b, eps=0.0)))
    torch.testing.assert_close(1 - generalized_box_iou_paired(a, b), torchvision.ops.generalized_box_iou_loss(a, b),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(1 - distance_box_iou_paired(a, b), torchvision.ops.distance_box_iou_loss(a, b),
                               rtol=0, atol=1e-12)
    assert abs(float(box_iou_paired(a, b)[0]) - 1.0) < 1e-9


def test_paired_degenerate_boxes_stay_finite():
    z = torch.zeros(2, 4)
    assert torch.isfinite(generalized_box_iou_paired(z, z)).all()
    assert torch.isfinite(distance_box_iou_paired(z, z)).all()


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same shape"):
        box_iou_paired(torch.zeros(3, 4), torch.zeros(2, 4))


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou, distance_box_iou])
def test_pairwise_gradcheck(fn):
    a, b = random_boxes(3), random_boxes(4)
    a[0, :2] = b[0, :2] + 0.3  # make sure some pairs overlap
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (a, b))


@pytest.mark.parametrize("fn", [box_iou_paired, generalized_box_iou_paired, distance_box_iou_paired])
def test_paired_gradcheck(fn):
    b = random_boxes(5)
    a = (b + torch.randn(5, 4, dtype=torch.float64) * 5).detach()
    a[:, 2:] = torch.maximum(a[:, 2:], a[:, :2] + 1)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (a, b))
    # gradient of IoU w.r.t. disjoint boxes is 0, GIoU's is not (the reason GIoU exists)
    far_a = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    far_b = torch.tensor([[5.0, 5.0, 6.0, 6.0]], dtype=torch.float64)
    if fn is not box_iou_paired:
        fn(far_a, far_b).sum().backward()
        assert far_a.grad.abs().sum() > 0
        assert math.isfinite(float(far_a.grad.abs().sum()))


# --- integer boxes, from torchvision's TestBoxArea / TestBoxIou / TestGeneralizedBoxIou /
# TestDistanceBoxIoU cases (issue 22): they used to be computed in float32 ----------------------------

INT_BOXES = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300], [0, 0, 25, 25]]
INT_BOXES2 = [[0, 0, 100, 100], [0, 0, 50, 50], [200, 200, 300, 300]]
INT_EXPECTED = {  # torchvision's expected values (4 decimals)
    box_iou: [[1.0, 0.25, 0.0], [0.25, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0625, 0.25, 0.0]],
    generalized_box_iou: [[1.0, 0.25, -0.7778], [0.25, 1.0, -0.8611], [-0.7778, -0.8611, 1.0],
                          [0.0625, 0.25, -0.8819]],
    distance_box_iou: [[1.0, 0.1875, -0.4444], [0.1875, 1.0, -0.5625], [-0.4444, -0.5625, 1.0],
                       [-0.0781, 0.1875, -0.6267]],
}


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_box_area_integer_boxes_exact(dtype):
    """torchvision's test_int_boxes (int8 included: 100 x 100 overflows int8, so integers widen) and
    the case that found the defect: ``[0, 0, 2**31 - 1, 3]`` was 3 off through float32."""
    area = box_area(torch.tensor([[0, 0, 100, 100], [0, 0, 0, 0]], dtype=dtype))
    assert area.dtype == torch.int64 and area.tolist() == [10000, 0]
    assert torch.equal(area, torchvision.ops.box_area(torch.tensor([[0, 0, 100, 100], [0, 0, 0, 0]])))
    if dtype in (torch.int32, torch.int64):
        big = torch.tensor([[0, 0, 2**31 - 1, 3], [5, 7, 2**31 - 1, 2**31 - 2]], dtype=dtype)
        assert box_area(big).tolist() == [(2**31 - 1) * 3, (2**31 - 6) * (2**31 - 9)]
        assert torch.equal(box_area(big[:1]), torchvision.ops.box_area(big[:1].long()))


@pytest.mark.parametrize("fn", [box_iou, generalized_box_iou, distance_box_iou])
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64])
def test_pairwise_integer_boxes_exact(fn, dtype):
    """torchvision's integer IoU / GIoU / DIoU cases; integer boxes give float64, bitwise the result
    of the same boxes given as float64 (exact integer intermediates, one rounding per ratio)."""
    a, b = torch.tensor(INT_BOXES, dtype=dtype), torch.tensor(INT_BOXES2, dtype=dtype)
    got = fn(a, b)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, torch.tensor(INT_EXPECTED[fn], dtype=torch.float64), rtol=0, atol=1e-4)
    assert torch.equal(got, fn(a.double(), b.double()))
    tv = {box_iou: torchvision.ops.box_iou, generalized_box_iou: torchvision.ops.generalized_box_iou,
          distance_box_iou: torchvision.ops.distance_box_iou}[fn]
    torch.testing.assert_close(got, tv(a.double(), b.double()), rtol=0, atol=1e-15)


def test_integer_boxes_beyond_float32_stay_exact():
    """Coordinates past 2**24: float32 rounds them (IoU 1.0 for boxes that differ); int64 does not."""
    n = 2**31 - 1
    a = torch.tensor([[0, 0, n, 3]])
    b = torch.tensor([[1, 0, n, 3], [0, 0, n, 3]])
    iou = box_iou(a, b)
    assert iou.dtype == torch.float64
    assert iou.tolist() == [[(n - 1) / n, 1.0]]  # Python's float division: correctly rounded
    assert float(box_iou(a.float(), b.float())[0, 0]) == 1.0  # what the float32 upcast gave
    assert box_iou_paired(a.expand(2, 4), b, eps=0.0).tolist() == [(n - 1) / n, 1.0]
    # GIoU: the enclosing box is a itself; DIoU: centres half a pixel apart
    assert generalized_box_iou(a, b)[0, 0].item() == (n - 1) / n
    diag2 = n**2 + 9
    assert distance_box_iou(a, b, eps=0.0)[0, 0].item() == pytest.approx((n - 1) / n - 0.25 / diag2, abs=1e-16)
    assert generalized_box_iou_paired(a, b[:1], eps=0.0).item() == (n - 1) / n
    assert distance_box_iou_paired(a, b[:1], eps=0.0).item() == distance_box_iou(a, b, eps=0.0)[0, 0].item()


@pytest.mark.parametrize("fn", [box_iou_paired, generalized_box_iou_paired, distance_box_iou_paired])
def test_paired_integer_boxes_match_float64(fn):
    a = torch.tensor(INT_BOXES[:3], dtype=torch.int32)
    b = torch.tensor(INT_BOXES2[::-1], dtype=torch.int32)
    got = fn(a, b)
    assert got.dtype == torch.float64 and torch.equal(got, fn(a.double(), b.double()))
