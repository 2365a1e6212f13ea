"""Corner pooling (CornerNet): forward and backward of the four directional poolings and the two
corner combinations against explicit float64 loops, gradcheck on distinct values, and the traced
(ONNX-exportable) doubling form equal to the eager one."""
from __future__ import annotations

import pytest
import torch

from sceneparse.ops import corner_pool as cp


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _naive(x: torch.Tensor, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit loops over every pixel: the pooled map and, for an upstream gradient of ones, the
    gradient (each output sends 1 to the location of its maximum)."""
    x = x.detach().double()
    *lead, H, W = x.shape
    flat = x.reshape(-1, H, W)
    out = torch.empty_like(flat)
    grad = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        for i in range(H):
            for j in range(W):
                if direction == "top":
                    cells = [(k, j) for k in range(i, H)]
                elif direction == "bottom":
                    cells = [(k, j) for k in range(0, i + 1)]
                elif direction == "left":
                    cells = [(i, k) for k in range(j, W)]
                else:
                    cells = [(i, k) for k in range(0, j + 1)]
                best = max(cells, key=lambda c: float(flat[n, c[0], c[1]]))
                out[n, i, j] = flat[n, best[0], best[1]]
                grad[n, best[0], best[1]] += 1
    return out.reshape(x.shape), grad.reshape(x.shape)


POOLS = {"top": cp.top_pool, "left": cp.left_pool, "bottom": cp.bottom_pool, "right": cp.right_pool}


def _distinct(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, generator=g).double() / n - 0.5).reshape(shape)


def test_hand_built_column_and_row():
    x = torch.tensor([[1.0, 5.0, 2.0, 4.0, 3.0]])
    assert cp.left_pool(x).tolist() == [[5.0, 5.0, 4.0, 4.0, 3.0]]
    assert cp.right_pool(x).tolist() == [[1.0, 5.0, 5.0, 5.0, 5.0]]
    col = x.T.contiguous()
    assert cp.top_pool(col).T.tolist() == [[5.0, 5.0, 4.0, 4.0, 3.0]]
    assert cp.bottom_pool(col).T.tolist() == [[1.0, 5.0, 5.0, 5.0, 5.0]]


@pytest.mark.parametrize("direction", sorted(POOLS))
def test_forward_and_backward_against_loops(direction):
    x = _distinct((2, 3, 5, 7), seed=1).requires_grad_(True)
    out = POOLS[direction](x)
    ref, ref_grad = _naive(x, direction)
    assert out.dtype == torch.float64 and torch.equal(out, ref)
    out.sum().backward()
    assert torch.equal(x.grad, ref_grad)
    # float32 and another upstream gradient: the gradient is the upstream one routed to the maxima
    x32 = _distinct((1, 2, 6, 4), seed=2).float().requires_grad_(True)
    up = torch.rand(1, 2, 6, 4, generator=torch.Generator().manual_seed(3))
    (POOLS[direction](x32) * up).sum().backward()
    ref32, _ = _naive(x32, direction)
    assert torch.equal(POOLS[direction](x32).double(), ref32)
    expected = torch.zeros(1, 2, 6, 4, dtype=torch.float64)
    for c in range(2):
        for i in range(6):
            for j in range(4):  # the argmax cell of output (i, j): where x equals the pooled value
                hit = (x32[0, c].detach() == ref32[0, c, i, j].float()).nonzero()[0]
                expected[0, c, hit[0], hit[1]] += float(up[0, c, i, j])
    assert torch.allclose(x32.grad.double(), expected, atol=1e-6)


def test_corner_combinations():
    a, b = _distinct((1, 2, 4, 6), 4), _distinct((1, 2, 4, 6), 5)
    tl = cp.top_left_pool(a, b)
    br = cp.bottom_right_pool(a, b)
    assert torch.equal(tl, _naive(a, "top")[0] + _naive(b, "left")[0])
    assert torch.equal(br, _naive(a, "bottom")[0] + _naive(b, "right")[0])
    # a top-left corner at (2, 3) sees the object's left edge below it (column 3) in the first map and
    # its top edge to the right (row 2) in the second, however far away they are
    f_top, f_left = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    f_top[0, 0, 6, 3] = 2.0
    f_left[0, 0, 2, 7] = 1.0
    assert float(cp.top_left_pool(f_top, f_left)[0, 0, 2, 3]) == 3.0
    assert float(cp.top_left_pool(f_top, f_left)[0, 0, 2, 4]) == 1.0  # another column: the top edge only
    assert float(cp.bottom_right_pool(f_top, f_left)[0, 0, 2, 3]) == 0.0  # both lie below / right of it
    assert float(cp.bottom_right_pool(f_top, f_left)[0, 0, 7, 3]) == 2.0


@pytest.mark.parametrize("direction", sorted(POOLS))
def test_gradcheck(direction):
    x = _distinct((1, 2, 4, 5), seed=6).requires_grad_(True)
    assert torch.autograd.gradcheck(POOLS[direction], (x,), eps=1e-6, atol=1e-5)
    a, b = _distinct((1, 1, 3, 4), 7).requires_grad_(True), _distinct((1, 1, 3, 4), 8).requires_grad_(True)
    assert torch.autograd.gradcheck(cp.top_left_pool, (a, b), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(cp.bottom_right_pool, (a, b), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_doubling_form_equals_running_max(n):
    x = _distinct((2, 3, n, n + 2), seed=n).requires_grad_(True)
    for dim in (-1, -2):
        want = x.flip(dim).cummax(dim).values.flip(dim)
        assert torch.equal(cp._suffix_max_doubling(x, dim), want)
        assert torch.equal(cp._suffix_max_doubling(x, dim, cp.TRACED_STEPS), want)  # extra rounds: no-ops
    small = x.detach()[:1, :1, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: cp._suffix_max_doubling(t, -1), (small,), eps=1e-6, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_traced_pooling_uses_the_exportable_form_and_matches():
    x = _distinct((1, 2, 9, 6), seed=9).float()

    def both(t):
        return cp.top_left_pool(t, t * 0.5), cp.bottom_right_pool(t, -t)

    traced = torch.jit.trace(both, (x,))
    graph = str(traced.graph)
    assert "cummax" not in graph and "aten::maximum" in graph
    # traced at 9 x 6, right at other sizes too (no size frozen into the graph)
    for shape, seed in (((1, 2, 9, 6), 10), ((2, 1, 23, 40), 11), ((1, 1, 1, 3), 12)):
        y = _distinct(shape, seed=seed).float()
        for got, want in zip(traced(y), both(y)):
            assert torch.equal(got, want)
