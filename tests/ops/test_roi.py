"""RoIAlign / RoIPool against slow float64 reference twins; FPN level mapping and multi-scale RoIAlign
against torchvision; gradcheck."""
import math
from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.ops.poolers import LevelMapper

from sceneparse.ops import assign_levels, multiscale_roi_align, roi_align, roi_pool, rois_from_boxes


def ref_bilinear(f, y, x):
    H, W = f.shape
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= H - 1:
        yl = yh = H - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= W - 1:
        xl = xh = W - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * f[yl, xl] + hy * lx * f[yl, xh] + ly * hx * f[yh, xl] + ly * lx * f[yh, xh]


def ref_roi_align(feat, rois, out, scale, sampling, aligned):
    """Mask R-CNN RoIAlign, one sample at a time, float64."""
    ph_n, pw_n = out
    res = torch.zeros(len(rois), feat.shape[1], ph_n, pw_n, dtype=torch.float64)
    off = 0.5 if aligned else 0.0
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sx, y2 * scale - off - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / pw_n, rh / ph_n
        gw = sampling if sampling > 0 else math.ceil(rw / pw_n)
        gh = sampling if sampling > 0 else math.ceil(rh / ph_n)
        count = max(gw * gh, 1)
        for c in range(feat.shape[1]):
            f = feat[int(b), c].double()
            for ph in range(ph_n):
                for pw in range(pw_n):
                    acc = 0.0
                    for iy in range(gh):
                        y = sy + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = sx + pw * bw + (ix + 0.5) * bw / gw
                            acc += float(ref_bilinear(f, y, x))
                    res[r, c, ph, pw] = acc / count
    return res


def ref_roi_pool(feat, rois, out, scale):
    """Fast R-CNN RoIPool: max over quantised bins."""
    ph_n, pw_n = out
    H, W = feat.shape[-2:]
    res = torch.zeros(len(rois), feat.shape[1], ph_n, pw_n, dtype=torch.float64)
    rnd = lambda v: math.floor(v + 0.5)  # C round() for the non-negative coordinates used here
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sw, sh, ew, eh = rnd(x1 * scale), rnd(y1 * scale), rnd(x2 * scale), rnd(y2 * scale)
        rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        bw, bh = rw / pw_n, rh / ph_n
        for ph in range(ph_n):
            hs = min(max(math.floor(ph * bh) + sh, 0), H)
            he = min(max(math.ceil((ph + 1) * bh) + sh, 0), H)
            for pw in range(pw_n):
                ws = min(max(math.floor(pw * bw) + sw, 0), W)
                we = min(max(math.ceil((pw + 1) * bw) + sw, 0), W)
                if he <= hs or we <= ws:
                    continue
                res[r, :, ph, pw] = feat[int(b), :, hs:he, ws:we].double().amax(dim=(-1, -2))
    return res


def random_boxes(n, size, generator=None):
    xy = torch.rand(n, 2, generator=generator) * size * 0.7
    wh = torch.rand(n, 2, generator=generator) * size * 0.5 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("sampling,aligned", [(-1, False), (2, False), (0, True), (3, True)])
def test_roi_align_matches_reference(sampling, aligned):
    feat = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    boxes = [random_boxes(3, 40.0).double(), random_boxes(2, 40.0).double()]
    rois = rois_from_boxes(boxes)
    assert rois[:, 0].tolist() == [0, 0, 0, 1, 1]
    got = roi_align(feat, rois, (2, 3), spatial_scale=0.25, sampling_ratio=sampling, aligned=aligned)
    ref = ref_roi_align(feat, rois, (2, 3), 0.25, sampling, aligned)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    # list-of-boxes input is the same as the [K, 5] form
    torch.testing.assert_close(roi_align(feat, boxes, (2, 3), 0.25, sampling, aligned), got)


def test_roi_pool_matches_reference():
    feat = torch.randn(2, 2, 10, 12, dtype=torch.float64)
    rois = rois_from_boxes([random_boxes(4, 48.0).double(), random_boxes(3, 48.0).double()])
    got = roi_pool(feat, rois, 3, spatial_scale=0.25)
    torch.testing.assert_close(got, ref_roi_pool(feat, rois, (3, 3), 0.25), rtol=0, atol=0)


def test_roi_align_gradcheck():
    feat = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.7, 1.3, 4.2, 5.1], [0, 2.2, 0.4, 5.6, 3.3]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 1.0, 2, True), (feat,))


def test_assign_levels_hand_computed_and_torchvision():
    boxes = torch.tensor([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448], [0, 0, 10, 10],
                          [0, 0, 5000, 5000], [0, 0, 223, 224]], dtype=torch.float32)
    lv = assign_levels(boxes, 2, 5)
    assert lv.dtype == torch.int64
    assert lv.tolist() == [2, 1, 3, 0, 3, 1]  # levels 4, 3, 5, clamp 2, clamp 5, 3 (just below 224)
    rand = random_boxes(500, 800.0)
    assert torch.equal(assign_levels(rand, 2, 5), LevelMapper(2, 5)([rand]))
    assert torch.equal(assign_levels(rand, 3, 6, canonical_scale=160, canonical_level=5),
                       LevelMapper(3, 6, canonical_scale=160, canonical_level=5)([rand]))


@pytest.mark.parametrize("num_levels", [1, 4])
def test_multiscale_identical_to_torchvision(num_levels):
    image_sizes = [(120, 160), (128, 100)]  # padded batch 128 x 160
    H, W = 128, 160
    feats = [torch.randn(2, 4, H // 2**k, W // 2**k) for k in range(2, 2 + num_levels)]
    g = torch.Generator().manual_seed(3)
    boxes = [random_boxes(40, 120.0, g) * torch.tensor([1.3, 1.0, 1.3, 1.0]), random_boxes(25, 100.0, g)]
    boxes[0][:3] = torch.tensor([[0.0, 0.0, 150.0, 120.0], [5, 5, 9, 9], [10, 10, 60, 70]])
    names = [f"p{k}" for k in range(num_levels)]
    # a small canonical scale spreads these small-image boxes over all four levels
    pooler = torchvision.ops.MultiScaleRoIAlign(names, 7, 2, canonical_scale=32)
    ref = pooler(OrderedDict(zip(names, feats)), boxes, image_sizes)
    got = multiscale_roi_align(feats, boxes, image_sizes, 7, 2, canonical_scale=32)
    assert got.shape == (65, 4, 7, 7)
    assert torch.equal(got, ref)
    if num_levels == 4:  # the boxes really are spread over several levels
        lv = assign_levels(torch.cat(boxes), 2, 5, canonical_scale=32)
        assert torch.unique(lv).tolist() == [0, 1, 2, 3]
        # default canonical scale 224: still identical
        ref = torchvision.ops.MultiScaleRoIAlign(names, (5, 3), 0)(OrderedDict(zip(names, feats)), boxes, image_sizes)
        assert torch.equal(multiscale_roi_align(feats, boxes, image_sizes, (5, 3), 0), ref)


def test_errors():
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        rois_from_boxes([torch.zeros(2, 4), torch.zeros(2, 5)])
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        roi_pool(torch.zeros(4, 4), torch.zeros(1, 5), 2)


def test_parallel_cpu_roi_align_is_torchvisions_kernel(monkeypatch):
    """Enough RoIs for two threads: the chunked call gives torchvision's output bit for bit and its
    input gradient up to the order of the per-chunk sums; float64 passes gradcheck through it."""
    import sceneparse.ops.roi as roi_mod

    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 5, 20, 24, generator=g)
    boxes = [random_boxes(37, 90.0, g), random_boxes(30, 90.0, g)]
    rois = rois_from_boxes(boxes)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert roi_mod._cpu_parts(feat, rois.shape[0]) == 2
        calls = []
        real = roi_mod._CPURoIAlign.apply
        monkeypatch.setattr(roi_mod._CPURoIAlign, "apply", lambda *a: calls.append(a[-1]) or real(*a))
        for sampling, aligned in [(2, False), (-1, True)]:
            f1 = feat.clone().requires_grad_()
            f2 = feat.clone().requires_grad_()
            got = roi_align(f1, rois, (7, 6), 0.25, sampling, aligned)
            ref = torchvision.ops.roi_align(f2, rois, (7, 6), 0.25, sampling, aligned)
            assert torch.equal(got, ref)
            w = torch.randn(got.shape, generator=g)
            (got * w).sum().backward()
            (ref * w).sum().backward()
            torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-5, atol=1e-6)
            assert f1.grad.abs().sum() > 0
        assert calls == [2, 2]  # the chunked path ran
        # bfloat16 autocast: computed in float32 (float32 RoIs as they are), returned in the input's dtype,
        # like torchvision's wrapper
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fb = feat.to(torch.bfloat16)
            got = roi_align(fb, rois, 7, 0.25, 2)
            ref = torchvision.ops.roi_align(fb, rois, (7, 7), 0.25, 2)
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, ref)
        small = torch.randn(1, 2, 7, 7, dtype=torch.float64, requires_grad=True)
        r64 = torch.cat([torch.zeros(40, 1), random_boxes(40, 6.0, g)], 1).double()
        assert torch.autograd.gradcheck(lambda f: roi_align(f, r64, 2, 1.0, 2, True), (small,))
    finally:
        torch.set_num_threads(threads)
    assert roi_mod._cpu_parts(feat, 8) == 1  # few RoIs: one plain kernel call


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_parallel_roi_align_works_in_a_forked_child():
    """A process forked after the thread pool started gets a pool of its own instead of waiting
    forever on the parent's threads (which a child does not have)."""
    import os
    import pickle
    import select
    import signal

    feat = torch.randn(1, 3, 16, 16)
    rois = torch.cat([torch.zeros(64, 1), random_boxes(64, 12.0, torch.Generator().manual_seed(0))], 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = roi_align(feat, rois, 3)  # starts the pool in this process
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.write(write, pickle.dumps(roi_align(feat, rois, 3).tolist()))
            finally:
                os._exit(0)
        os.close(write)
        ready, _, _ = select.select([read], [], [], 60)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        data = b"".join(iter(lambda: os.read(read, 1 << 16), b"")) if ready else b""
        os.close(read)
        os.waitpid(pid, 0)
    finally:
        torch.set_num_threads(threads)
    assert ready, "roi_align in the forked child did not return within 60 s"
    assert torch.equal(torch.tensor(pickle.loads(data)), expected)


@pytest.mark.parametrize("sampling", [1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_sparse_roi_align_backward_is_torchvisions_gradient(sampling, aligned):
    """The CPU backward as a sparse product: torchvision's backward kernel's feature gradient, with
    RoIs inside, across and outside the map, tiny and huge ones, over two images; the sampling map
    also reproduces the forward."""
    import sceneparse.ops.roi as roi_mod

    g = torch.Generator().manual_seed(11)
    b, c, h, w = 2, 6, 13, 17
    xy = torch.rand(60, 2, generator=g) * 90 - 15
    wh = torch.rand(60, 2, generator=g) * torch.tensor([3.0, 70.0])[torch.randint(0, 2, (60, 1), generator=g)]
    rois = torch.cat([torch.randint(0, b, (60, 1), generator=g).float(), xy, xy + wh], 1)
    feat = torch.randn(b, c, h, w, generator=g)
    grad = torch.randn(60, c, 5, 4, generator=g)
    ref = torch.ops.torchvision._roi_align_backward(grad, rois, 0.2, 5, 4, b, c, h, w, sampling, aligned)
    got = roi_mod._sparse_roi_align_backward(grad, rois, 0.2, sampling, aligned, (b, c, h, w))
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=2e-6)
    assert ref.abs().sum() > 0
    index, weight = roi_mod.roi_align_sampling(rois, (h, w), (5, 4), 0.2, sampling, aligned)
    assert index.shape == weight.shape == (60 * 5 * 4, 4 * sampling ** 2)
    fwd = (feat.permute(0, 2, 3, 1).reshape(-1, c)[index] * weight[..., None]).sum(1)
    torch.testing.assert_close(fwd.view(60, 5, 4, c).permute(0, 3, 1, 2),
                               torchvision.ops.roi_align(feat, rois, (5, 4), 0.2, sampling, aligned),
                               rtol=1e-5, atol=1e-6)
    # through roi_align's autograd, one thread included (the sparse backward needs no chunks)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        f = feat.clone().requires_grad_()
        out = roi_align(f, rois, (5, 4), 0.2, sampling, aligned)
        assert out.grad_fn is not None and "_CPURoIAlign" in type(out.grad_fn).__name__
        out.backward(grad)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(f.grad, ref, rtol=1e-6, atol=2e-6)


# --- cases found by running torchvision's own RoIAlign tests against sceneparse (issue 22) ----------

@pytest.mark.parametrize("sampling", [2, -1])
@pytest.mark.parametrize("threads", [1, 2])
def test_roi_align_zero_rois_with_grad_is_empty_like_torchvision(sampling, threads):
    """Zero RoIs, features requiring grad: an empty ``[0, C, oh, ow]`` whose backward gives the
    features a zero gradient, as torchvision -- directly and through a single-level (and a
    multi-level) multiscale_roi_align. (The own CPU path used to raise from ``torch.cat([])``.)"""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        f1 = torch.rand(2, 3, 10, 10, requires_grad=True)
        f2 = f1.detach().clone().requires_grad_()
        got = roi_align(f1, torch.zeros(0, 5), (5, 4), 0.5, sampling)
        ref = torchvision.ops.roi_align(f2, torch.zeros(0, 5), (5, 4), 0.5, sampling)
        assert got.shape == ref.shape == (0, 3, 5, 4) and got.dtype == ref.dtype
        got.sum().backward()
        ref.sum().backward()
        assert torch.equal(f1.grad, f2.grad) and not f1.grad.any()
        # the list-of-boxes form, and the FPN pooler with one level and with two
        feats = [torch.rand(2, 3, 16, 16, requires_grad=True), torch.rand(2, 3, 8, 8, requires_grad=True)]
        empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
        assert roi_align(feats[0], empty, 2, 1.0, sampling).shape == (0, 3, 2, 2)
        for levels in (1, 2):
            names = [f"p{k}" for k in range(levels)]
            out = multiscale_roi_align(feats[:levels], empty, [(64, 64), (64, 64)], 7, sampling)
            tv = torchvision.ops.MultiScaleRoIAlign(names, 7, sampling)(OrderedDict(zip(names, feats)), empty,
                                                                        [(64, 64), (64, 64)])
            assert out.shape == tv.shape == (0, 3, 7, 7)
            out.sum().backward()
            assert all(f.grad is not None and not f.grad.any() for f in feats[:levels])
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sampling", [-1, 2])
def test_roi_align_half_types_give_one_answer_whatever_the_roi_count(dtype, sampling):
    """torchvision's test_forward case in float16 / bfloat16, the RoIs alone (one plain call) and
    repeated 10 times (40 RoIs: the threaded CPU path): float16 used to differ by up to ~1e-3 between
    the two (torchvision's half kernel below 32 RoIs, float32 above) and bfloat16 raised for few RoIs.
    Now both are the float32 computation rounded once: bitwise equal, for any count, within
    torchvision's tolerance of the float64 reference."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 50, 10, 10, generator=g).to(dtype)
    rois = torch.tensor([[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9], [1, 0, 0, 9, 9]], dtype=dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        few = roi_align(x, rois, 5, 1.0, sampling)
        many = roi_align(x, rois.repeat(10, 1), 5, 1.0, sampling)
        singles = torch.cat([roi_align(x, rois[i:i + 1], 5, 1.0, sampling) for i in range(4)])
        x_grad = x.clone().requires_grad_()  # the gradient-carrying path too
        with_grad = roi_align(x_grad, rois.repeat(10, 1), 5, 1.0, sampling)
    finally:
        torch.set_num_threads(threads)
    assert few.dtype == many.dtype == dtype
    for other in (*many.split(4), singles, with_grad.detach()[:4]):
        assert torch.equal(other, few)
    # the rule: float32 features and RoIs, one rounding at the end (= torchvision's autocast wrapper)
    assert torch.equal(few, torchvision.ops.roi_align(x.float(), rois.float(), 5, 1.0, sampling).to(dtype))
    tol = 4e-3 if dtype is torch.float16 else 5e-3
    ref = ref_roi_align(x.double(), rois.double(), (5, 5), 1.0, sampling, False)
    torch.testing.assert_close(few.double(), ref, rtol=tol, atol=tol)
    with_grad.float().sum().backward()
    assert x_grad.grad.dtype == dtype and x_grad.grad.abs().sum() > 0


def test_roi_align_half_features_keep_float32_rois_unrounded():
    """float16 features with float32 RoIs: the RoIs are not rounded to float16 on the way (a box edge
    at 1000.3 px would move by up to 0.25 px), so the output is the float32 one rounded once."""
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 4, 80, 80, generator=g).half()
    rois = torch.cat([torch.zeros(3, 1), random_boxes(3, 1200.0, g)], 1)
    assert not torch.equal(rois.half().float(), rois)
    got = roi_align(feat, rois, 7, 1 / 16, 2)
    assert torch.equal(got, roi_align(feat.float(), rois, 7, 1 / 16, 2).half())
    assert not torch.equal(got, roi_align(feat.float(), rois.half().float(), 7, 1 / 16, 2).half())
