"""In-network upsampling, each checked against a hand-computed case from the lecture notes and a
reference (PyTorch's own ops, OpenCV's resize, the lecture's formulas in float64)."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sceneparse.models.layers import (
    BedOfNailsUnpool,
    Interpolate,
    MaxPoolWithIndices,
    MaxUnpool,
    NearestUnpool,
    TransposedConv2d,
    bed_of_nails_unpool,
    bilinear_kernel,
    conv1d_matrix,
    interpolate,
    max_pool_with_indices,
    max_unpool,
    nearest_unpool,
    transposed_conv_output_size,
)

X22 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]  # the lecture's C x 2 x 2 input (C = 1)


# ---- unpooling ----------------------------------------------------------------------------------
def test_bed_of_nails_lecture_case():
    out = bed_of_nails_unpool(X22)
    expected = torch.tensor([[1, 0, 2, 0],
                             [0, 0, 0, 0],
                             [3, 0, 4, 0],
                             [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(BedOfNailsUnpool(2)(X22), out)


def test_bed_of_nails_anisotropic_scale_and_channels():
    x = torch.arange(2 * 3 * 2 * 3, dtype=torch.float32).view(2, 3, 2, 3)
    out = bed_of_nails_unpool(x, (3, 2))
    assert out.shape == (2, 3, 6, 6)
    assert torch.equal(out[..., ::3, ::2], x)
    assert out.sum() == x.sum() and (out != 0).sum() == (x != 0).sum()


def test_nearest_unpool_lecture_case():
    out = nearest_unpool(X22)
    expected = torch.tensor([[1, 1, 2, 2],
                             [1, 1, 2, 2],
                             [3, 3, 4, 4],
                             [3, 3, 4, 4]], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(NearestUnpool(2)(X22), out)
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(nearest_unpool(x, (2, 3)), F.interpolate(x, scale_factor=(2, 3), mode="nearest"))


def test_max_unpooling_lecture_case():
    # "Max Pooling: remember which position had the max" -> rest of net -> "Max Unpooling"
    x = torch.tensor([[1, 2, 6, 3],
                      [3, 5, 2, 1],
                      [1, 2, 2, 1],
                      [7, 3, 4, 8]], dtype=torch.float32)[None, None]
    pooled, idx = max_pool_with_indices(x, 2)
    assert torch.equal(pooled[0, 0], torch.tensor([[5.0, 6.0], [7.0, 8.0]]))
    assert torch.equal(idx[0, 0], torch.tensor([[1 * 4 + 1, 0 * 4 + 2], [3 * 4 + 0, 3 * 4 + 3]]))
    rest_of_net = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    out = max_unpool(rest_of_net, idx, x.shape[-2:])
    expected = torch.tensor([[0, 0, 2, 0],
                             [0, 1, 0, 0],
                             [0, 0, 0, 0],
                             [3, 0, 0, 4]], dtype=torch.float32)
    assert torch.equal(out[0, 0], expected)
    pooled2, idx2 = MaxPoolWithIndices(2)(x)
    assert torch.equal(MaxUnpool()(rest_of_net, idx2, (4, 4)), out)


def test_max_unpool_matches_torch_on_odd_sizes_and_overlapping_windows():
    x = torch.randn(2, 3, 9, 7)
    for k, s in ((2, 2), (3, 2), (3, 3)):
        v, i = max_pool_with_indices(x, k, s)
        ref = F.max_unpool2d(v, i, k, s, output_size=x.shape[-2:])
        assert torch.equal(max_unpool(v, i, x.shape[-2:]), ref)
    # the unpooled map keeps only the maxima, in place
    v, i = max_pool_with_indices(x, 2)
    up = max_unpool(v, i, x.shape[-2:])
    assert torch.equal(up[up != 0], x[up != 0])
    with pytest.raises(ValueError, match="out of range"):
        max_unpool(v, i, (3, 3))


def test_max_unpool_gradient_routes_to_the_max_positions():
    x = torch.randn(1, 2, 6, 6)
    v, i = max_pool_with_indices(x, 2)
    v = v.clone().requires_grad_(True)
    w = torch.randn(1, 2, 6, 6)
    (max_unpool(v, i, (6, 6)) * w).sum().backward()
    assert torch.equal(v.grad, torch.gather(w.flatten(2), 2, i.flatten(2)).view_as(v))


# ---- interpolation ------------------------------------------------------------------------------
def _bilinear_formula(img: np.ndarray, out_h: int, out_w: int, align_corners: bool) -> np.ndarray:
    """The lecture's f(x, y) = sum_ij f_ij max(0, 1-|x-i|) max(0, 1-|y-j|) in float64, with border
    clamping for align_corners=False."""
    h, w = img.shape

    def coords(n_out, n_in):
        o = np.arange(n_out, dtype=np.float64)
        if align_corners:
            return o * (n_in - 1) / max(n_out - 1, 1)
        return np.clip((o + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)

    ys, xs = coords(out_h, h), coords(out_w, w)
    wy = np.maximum(0, 1 - np.abs(ys[:, None] - np.arange(h)[None, :]))  # [out_h, h]
    wx = np.maximum(0, 1 - np.abs(xs[:, None] - np.arange(w)[None, :]))  # [out_w, w]
    return wy @ img @ wx.T


def test_bilinear_lecture_case_align_corners_false():
    out = interpolate(X22, size=(4, 4), mode="bilinear", align_corners=False)
    expected = torch.tensor([[1.00, 1.25, 1.75, 2.00],
                             [1.50, 1.75, 2.25, 2.50],
                             [2.50, 2.75, 3.25, 3.50],
                             [3.00, 3.25, 3.75, 4.00]])
    assert torch.equal(out[0, 0], expected)


def test_bilinear_align_corners_true_reproduces_corners():
    out = interpolate(X22, size=(4, 4), mode="bilinear", align_corners=True)
    third = 1.0 / 3.0
    row0 = torch.tensor([1.0, 1 + third, 1 + 2 * third, 2.0])
    expected = torch.stack([row0, row0 + 2 * third, row0 + 4 * third, row0 + 2.0])
    torch.testing.assert_close(out[0, 0], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_matches_the_lecture_formula_and_opencv(align_corners):
    img = torch.rand(7, 5, dtype=torch.float64)
    out = interpolate(img[None, None], size=(17, 12), align_corners=align_corners)[0, 0]
    ref = _bilinear_formula(img.numpy(), 17, 12, align_corners)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    if not align_corners:  # OpenCV uses pixel-centre alignment, i.e. align_corners=False
        cv = cv2.resize(img.numpy().astype(np.float32), (12, 17), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out.numpy(), cv, atol=1e-5)


def test_bicubic_hand_computed_case():
    # Keys kernel a = -0.75; for [1, 2] upsampled 2x (align_corners=False) the samples sit at
    # x = -0.25, 0.25, 0.75, 1.25 with weights (cubic(1+t), cubic(t), cubic(1-t), cubic(2-t)):
    # cubic(0.25)=0.87890625, cubic(0.75)=0.26171875, cubic(1.25)=-0.10546875, cubic(1.75)=-0.03515625
    u = torch.tensor([0.89453125, 1.2265625, 1.7734375, 2.10546875])  # 1-D result, overshoots [1, 2]
    out = interpolate(X22, size=(4, 4), mode="bicubic")[0, 0]
    expected = 1 + (u[None, :] - 1) + 2 * (u[:, None] - 1)  # separable: columns step 1, rows step 2
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out.min() < 1 and out.max() > 4  # bicubic overshoots, bilinear never does


def test_bicubic_matches_opencv():
    img = np.random.default_rng(0).random((9, 6)).astype(np.float32)
    out = interpolate(torch.from_numpy(img)[None, None], size=(27, 18), mode="bicubic")[0, 0]
    cv = cv2.resize(img, (18, 27), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(out.numpy(), cv, atol=1e-5)


def test_interpolate_module_and_errors():
    m = Interpolate(scale_factor=2, mode="bilinear")
    assert torch.equal(m(X22), interpolate(X22, scale_factor=2))
    # nearest: src = floor((o + 0.5) * in / out): rows 3 <- 2 give (0, 1, 1), columns 5 <- 2 give (0, 0, 1, 1, 1)
    assert torch.equal(Interpolate(size=(3, 5), mode="nearest")(X22)[0, 0],
                       torch.tensor([[1.0, 1, 2, 2, 2], [3, 3, 4, 4, 4], [3, 3, 4, 4, 4]]))
    with pytest.raises(ValueError, match="mode"):
        interpolate(X22, size=(4, 4), mode="area")
    with pytest.raises(ValueError, match="exactly one"):
        interpolate(X22)


# ---- transposed convolution ---------------------------------------------------------------------
def test_transposed_conv_2x2_stride1_lecture_case():
    # "Transpose convolution 2x2 with stride of 1 and padding of 0": input [[2,4],[0,1]],
    # kernel [[3,1],[1,5]]; each input value scales a copy of the kernel, overlaps are summed.
    x = torch.tensor([[2.0, 4.0], [0.0, 1.0]])[None, None]
    conv = TransposedConv2d(1, 1, 2, stride=1, padding=0, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[3.0, 1.0], [1.0, 5.0]])[None, None])
    out = conv(x)
    expected = torch.tensor([[6.0, 2 + 12, 4],
                             [2 + 0, 10 + 4 + 0 + 3, 20 + 1],
                             [0, 0 + 1, 5]])
    assert torch.equal(out[0, 0].detach(), expected)
    assert conv.output_size_for((2, 2)) == (3, 3) == tuple(out.shape[-2:])


def test_transposed_conv_3x3_stride2_trims_to_4x4():
    # Lecture: 3x3 transposed conv, stride 2, 2x2 -> "5x5 output - need to trim one pixel from top and
    # left to give 4x4": padding=1 trims a pixel from every side, output_padding=1 gives back bottom/right.
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]
    w = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    full = torch.zeros(5, 5)
    for i in range(2):  # hand rule: copy the filter weighted by the input, move 2 px per input px
        for j in range(2):
            full[2 * i:2 * i + 3, 2 * j:2 * j + 3] += x[0, 0, i, j] * w[0, 0]
    assert torch.equal(F.conv_transpose2d(x, w, stride=2), full[None, None])
    trimmed = F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert torch.equal(trimmed[0, 0], full[1:, 1:])
    assert transposed_conv_output_size(2, 3, stride=2, padding=1, output_padding=1) == 4


@pytest.mark.parametrize("n,k,s,p,op,expected", [
    (2, 3, 1, 0, 0, 4), (2, 3, 1, 1, 0, 2), (2, 3, 2, 0, 0, 5), (2, 3, 2, 1, 1, 4),
    (7, 4, 2, 1, 0, 14), (5, 64, 32, 16, 0, 160), (3, 16, 8, 4, 0, 24),
])
def test_transposed_conv_output_size_rule(n, k, s, p, op, expected):
    # (in - 1) * stride - 2 * pad + kernel + output_padding
    assert transposed_conv_output_size(n, k, s, p, op) == expected == (n - 1) * s - 2 * p + k + op
    y = F.conv_transpose2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p,
                           output_padding=op)
    assert y.shape[-1] == expected
    with pytest.raises(ValueError):
        transposed_conv_output_size(n, k, s, p, output_padding=max(s, 1))


def test_1d_transposed_convolution_lecture_example():
    # input (a, b), filter (x, y, z), stride 2: output (ax, ay, az + bx, by, bz)
    a, b, x, y, z = 2.0, 3.0, 1.0, 10.0, 100.0
    out = F.conv_transpose1d(torch.tensor([[[a, b]]]), torch.tensor([[[x, y, z]]]), stride=2)
    assert torch.equal(out[0, 0], torch.tensor([a * x, a * y, a * z + b * x, b * y, b * z]))


def test_convolution_matrix_lecture_examples():
    x, y, z = 1.0, 10.0, 100.0
    a, b, c, d = 2.0, 3.0, 5.0, 7.0
    w = torch.tensor([x, y, z])
    vec = torch.tensor([a, b, c, d])
    # kernel 3, stride 1, pad 1: X a = (ay + bz, ax + by + cz, bx + cy + dz, cx + dy)
    X = conv1d_matrix(w, 4, stride=1, padding=1)
    assert torch.equal(X, torch.tensor([[y, z, 0, 0], [x, y, z, 0], [0, x, y, z], [0, 0, x, y]]))
    assert torch.equal(X @ vec, torch.tensor([a * y + b * z, a * x + b * y + c * z,
                                              b * x + c * y + d * z, c * x + d * y]))
    assert torch.equal(X @ vec, F.conv1d(vec[None, None], w[None, None], padding=1)[0, 0])
    # transposed convolution multiplies by X^T (the lecture's 6-vector trimmed by the padding)
    tc = F.conv_transpose1d(vec[None, None], w[None, None], padding=1)[0, 0]
    assert torch.equal(tc, X.T @ vec)
    assert torch.equal(tc, torch.tensor([a * y + b * x, a * z + b * y + c * x, b * z + c * y + d * x,
                                         c * z + d * y]))
    # stride 1: the transpose is a plain convolution with the flipped filter (other padding)
    assert torch.equal(tc, F.conv1d(vec[None, None], w.flip(0)[None, None], padding=1)[0, 0])
    # kernel 3, stride 2, pad 1: X a = (ay + bz, bx + cy + dz); X^T (a, b) = (ay, az + bx, by, bz)
    X2 = conv1d_matrix(w, 4, stride=2, padding=1)
    assert torch.equal(X2 @ vec, torch.tensor([a * y + b * z, b * x + c * y + d * z]))
    ab = torch.tensor([a, b])
    assert torch.equal(X2.T @ ab, torch.tensor([a * y, a * z + b * x, b * y, b * z]))
    tc2 = F.conv_transpose1d(ab[None, None], w[None, None], stride=2, padding=1, output_padding=1)
    assert torch.equal(tc2[0, 0], X2.T @ ab)


@pytest.mark.parametrize("n,k,s,p", [(9, 3, 1, 0), (9, 3, 2, 1), (10, 4, 2, 1), (11, 5, 3, 2), (8, 2, 2, 0)])
def test_transposed_conv_is_the_transpose_of_the_conv_matrix(n, k, s, p):
    w = torch.randn(k, dtype=torch.float64)
    X = conv1d_matrix(w, n, stride=s, padding=p)
    v = torch.randn(n, dtype=torch.float64)
    torch.testing.assert_close(X @ v, F.conv1d(v[None, None], w[None, None], stride=s, padding=p)[0, 0])
    u = torch.randn(X.shape[0], dtype=torch.float64)
    op = n - transposed_conv_output_size(X.shape[0], k, s, p)  # the output_padding recovering length n
    tc = F.conv_transpose1d(u[None, None], w[None, None], stride=s, padding=p, output_padding=op)[0, 0]
    torch.testing.assert_close(tc, X.T @ u)
    # and transposed convolution is exactly the adjoint (the gradient) of convolution
    vv = v.clone().requires_grad_(True)
    (F.conv1d(vv[None, None], w[None, None], stride=s, padding=p)[0, 0] @ u).backward()
    torch.testing.assert_close(vv.grad, tc)


def test_bilinear_kernel_values_and_bilinear_init_matches_interpolation():
    k4 = bilinear_kernel(4)
    torch.testing.assert_close(k4[0], torch.tensor([0.25, 0.75, 0.75, 0.25]) * 0.25)
    torch.testing.assert_close(k4, torch.outer(torch.tensor([0.25, 0.75, 0.75, 0.25]),
                                                torch.tensor([0.25, 0.75, 0.75, 0.25])))
    k3 = bilinear_kernel(3)
    torch.testing.assert_close(k3[1], torch.tensor([0.5, 1.0, 0.5]))
    x = torch.randn(1, 3, 6, 5)
    for f in (2, 3, 4, 8):
        up = TransposedConv2d.upsampling(3, f)
        with torch.no_grad():
            y = up(x)
        assert y.shape[-2:] == (6 * f, 5 * f)
        ref = interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
        m = f  # away from the border the learnable upsampler starts as bilinear interpolation
        torch.testing.assert_close(y[..., m:-m, m:-m], ref[..., m:-m, m:-m], atol=1e-5, rtol=0)
        # channels do not mix
        assert torch.count_nonzero(up.weight[0, 1:]) == 0


def test_transposed_conv_gradcheck():
    conv = TransposedConv2d(2, 3, 3, stride=2, padding=1, output_padding=1).double()
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))
