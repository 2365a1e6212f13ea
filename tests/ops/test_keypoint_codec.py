"""Keypoint codec: encode/decode round trips with hand-made heatmaps, DARK modulation, soft-argmax,
flip test (SimpleBaseline's flip_back + one-cell shift), against slow float64 references."""
import math

import numpy as np
import pytest
import torch

from sceneparse.ops.keypoint_codec import (
    dark_modulate,
    decode,
    encode,
    flip_back,
    flip_test,
    sigma_for,
    soft_argmax,
)
from sceneparse.structures.keypoints import COCO_PERSON


def _random_keypoints(n: int, k: int, size_hw: tuple[int, int], stride: float, margin: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    H, W = size_hw[0] * stride, size_hw[1] * stride
    kp = torch.zeros(n, k, 3)
    kp[..., 0] = margin + torch.rand(n, k, generator=g) * (W - 2 * margin)
    kp[..., 1] = margin + torch.rand(n, k, generator=g) * (H - 2 * margin)
    kp[..., 2] = 2
    return kp


def test_sigma_per_resolution():
    assert sigma_for((64, 48)) == 2.0 and sigma_for((96, 72)) == 3.0 and sigma_for((32, 24)) == 1.0


def test_encode_hand_computed_and_target_weights():
    # stride 4, keypoint at input (10, 6) -> cell (u, v) = (2.0, 1.0); sigma 1
    kp = torch.tensor([[[10.0, 6.0, 2.0], [10.0, 6.0, 0.0], [100.0, 6.0, 2.0], [10.0, 6.0, 1.0]]])
    maps, w = encode(kp, (8, 6), stride=4, sigma=1.0)
    assert maps.shape == (1, 4, 8, 6) and w.tolist() == [[1.0, 0.0, 0.0, 1.0]]
    assert maps[0, 0, 1, 2] == 1.0 and math.isclose(float(maps[0, 0, 1, 3]), math.exp(-0.5), rel_tol=1e-6)
    assert math.isclose(float(maps[0, 0, 3, 4]), math.exp(-(4 + 4) / 2), rel_tol=1e-6)
    assert maps[0, 1].abs().sum() == 0 and maps[0, 2].abs().sum() == 0  # unlabelled / off the map
    assert torch.equal(maps[0, 3], maps[0, 0])  # occluded keypoints are trained as visible ones


def test_dark_round_trip_within_005px():
    stride, size = 4.0, (64, 48)
    kp = _random_keypoints(20, 17, size, stride, margin=20.0)  # >= 5 cells from the border (kernel 11)
    maps, w = encode(kp, size, stride)
    assert w.min() == 1
    out, scores = decode(maps, stride, "dark")
    err = (out[..., :2] - kp[..., :2]).abs().max().item()
    assert err < 0.05, err
    assert torch.allclose(scores, maps.flatten(2).amax(2))
    # without modulation the Newton step on a pure Gaussian is exact up to one cell from the border
    kp1 = _random_keypoints(20, 17, size, stride, margin=4.0, seed=9)
    out1, _ = decode(encode(kp1, size, stride)[0], stride, "dark", kernel=1)
    assert (out1[..., :2] - kp1[..., :2]).abs().max() < 0.05


def test_argmax_within_its_quantization():
    stride, size = 4.0, (32, 24)
    kp = _random_keypoints(20, 17, size, stride, margin=8.0, seed=1)
    maps, _ = encode(kp, size, stride)
    plain, _ = decode(maps, stride, "none")
    quarter, _ = decode(maps, stride, "argmax")
    e_plain = (plain[..., :2] - kp[..., :2]).abs()
    e_quarter = (quarter[..., :2] - kp[..., :2]).abs()
    assert e_plain.max() <= 0.5 * stride + 1e-4  # nearest cell centre
    # the quarter shift toward the higher neighbour: an offset in [0, 1/2] cell is left with |offset - 1/4|
    assert e_quarter.max() <= 0.25 * stride + 1e-4
    assert e_quarter.mean() < e_plain.mean()
    # hand case: peak cell (2, 3), right neighbour higher -> +0.25 cell
    m = torch.zeros(1, 1, 5, 6)
    m[0, 0, 2, 3], m[0, 0, 2, 4], m[0, 0, 2, 2] = 1.0, 0.6, 0.2
    m[0, 0, 1, 3], m[0, 0, 3, 3] = 0.5, 0.3
    k, s = decode(m, 4.0, "argmax")
    assert k[0, 0].tolist() == [(3 + 0.25 + 0.5) * 4, (2 - 0.25 + 0.5) * 4, 1.0] and s.item() == 1.0


def _blur_reference(m: np.ndarray, kernel: int) -> np.ndarray:
    """Slow 2-D Gaussian blur with zero padding (float64) + max rescaling: DARK's modulation."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = np.arange(-r, r + 1)
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    g /= g.sum()
    h, w = m.shape
    p = np.zeros((h + 2 * r, w + 2 * r))
    p[r:r + h, r:r + w] = m
    out = np.zeros_like(m)
    for i in range(h):
        for j in range(w):
            out[i, j] = (p[i:i + kernel, j:j + kernel] * g).sum()
    return out * (m.max() / out.max())


def test_dark_modulation_matches_slow_reference():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(2, 3, 12, 9, generator=g)
    out = dark_modulate(maps, 5)
    for n in range(2):
        for k in range(3):
            ref = _blur_reference(maps[n, k].double().numpy(), 5)
            assert np.abs(out[n, k].numpy() - ref).max() < 1e-5
    assert torch.allclose(out.flatten(2).amax(2), maps.flatten(2).amax(2))


def test_dark_modulation_helps_on_a_noisy_heatmap():
    stride, size = 4.0, (64, 48)
    kp = _random_keypoints(10, 17, size, stride, margin=16.0, seed=4)
    maps, _ = encode(kp, size, stride)
    noisy = (maps + 0.05 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(5))).clamp(min=0)
    e_mod = (decode(noisy, stride, "dark")[0][..., :2] - kp[..., :2]).abs().mean()
    e_raw = (decode(noisy, stride, "dark", kernel=1)[0][..., :2] - kp[..., :2]).abs().mean()
    assert e_mod < e_raw, (e_mod, e_raw)


def test_soft_argmax_symmetric_peak_and_gradient():
    stride, size = 4.0, (32, 32)
    kp = torch.tensor([[[50.0, 62.0, 2.0], [70.3, 40.9, 2.0]]])
    maps, _ = encode(kp, size, stride, sigma=1.0)
    out, _ = decode(maps, stride, "integral")  # the normalised map's expectation: its centre
    assert (out[..., :2] - kp[..., :2]).abs().max() < 0.05
    # slow reference in float64
    m = maps[0, 1].double()
    p = torch.softmax(3.0 * m.flatten(), 0).reshape(m.shape)
    ii, jj = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64),
                            indexing="ij")
    uv, _ = soft_argmax(maps, beta=3.0)
    assert abs(uv[0, 1, 0].item() - (p * jj).sum().item()) < 1e-4
    assert abs(uv[0, 1, 1].item() - (p * ii).sum().item()) < 1e-4
    x = torch.rand(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_argmax(t, 2.0)[0], (x,))
    assert torch.autograd.gradcheck(lambda t: soft_argmax(t)[0], (x,))


def test_flip_back_swaps_channels_and_shifts():
    m = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    out = flip_back(m, (1, 0))
    assert torch.equal(out[0, 0], m[0, 1].flip(1)) and torch.equal(out[0, 1], m[0, 0].flip(1))
    sh = flip_back(m, (1, 0), shift=True)
    assert torch.equal(sh[..., 1:], out[..., :-1]) and torch.equal(sh[..., 0], out[..., 0])
    with pytest.raises(ValueError):
        flip_back(m, (0,))


def test_flip_test_of_a_symmetric_case():
    """A mirror-symmetric person: the mirrored input's maps flipped back equal the original maps in the
    continuous frame (no shift), so the flip-test average decodes to the same keypoints."""
    stride, size = 4.0, (24, 16)
    W = size[1] * stride
    kp = torch.zeros(1, 17, 3)
    kp[..., 2] = 2
    names = COCO_PERSON.names
    g = torch.Generator().manual_seed(7)
    for k, name in enumerate(names):
        j = COCO_PERSON.flip_index[k]
        if j == k:  # the nose on the axis
            kp[0, k, 0], kp[0, k, 1] = W / 2, 27.3
        elif k < j:  # pairs mirrored about the axis, >= 5 cells inside the map (DARK's blur)
            dx, y = 3 + 7 * torch.rand(1, generator=g).item(), 22 + 50 * torch.rand(1, generator=g).item()
            kp[0, k, :2] = torch.tensor([W / 2 + dx, y])
            kp[0, j, :2] = torch.tensor([W / 2 - dx, y])
    mirrored = kp[:, list(COCO_PERSON.flip_index)].clone()
    mirrored[..., 0] = W - mirrored[..., 0]
    maps, _ = encode(kp, size, stride, sigma=1.0)
    maps_m, _ = encode(mirrored, size, stride, sigma=1.0)
    assert torch.allclose(flip_back(maps_m, COCO_PERSON.flip_index), maps, atol=1e-6)
    avg = flip_test(maps, maps_m, COCO_PERSON.flip_index)
    assert (decode(avg, stride, "dark")[0][..., :2] - kp[..., :2]).abs().max() < 0.05
    # SimpleBaseline's integer-pixel frame: u = x / s, mirror x' = W - 1 - x. The flipped-back map is
    # 1 - 1/s cells left of the truth, and the one-cell shift leaves it 1/s cells right of it.
    def enc_int(k3):  # the integer frame written as the continuous one: x_cont = x_int + s / 2
        q = k3.clone()
        q[..., :2] += stride / 2
        return encode(q, size, stride, sigma=1.0)[0]
    kp_i = kp.clone()
    mir_i = kp_i[:, list(COCO_PERSON.flip_index)].clone()
    mir_i[..., 0] = W - 1 - mir_i[..., 0]
    back = flip_back(enc_int(mir_i), COCO_PERSON.flip_index, shift=True)
    u_back = decode(back, stride, "dark", kernel=1)[0][..., 0] / stride - 0.5  # the integer frame: u = x / s
    u_true = kp_i[..., 0] / stride
    inside = (u_true > 2) & (u_true < size[1] - 3)
    assert torch.allclose(u_back[inside], u_true[inside] + 1 / stride, atol=0.01)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        decode(torch.zeros(2, 3, 4), 1.0)
    with pytest.raises(ValueError):
        decode(torch.zeros(1, 1, 4, 4), 1.0, "median")
    with pytest.raises(ValueError):
        dark_modulate(torch.zeros(1, 1, 4, 4), 4)
