"""NMS variants against slow sequential float64 twins and torchvision."""
import math
import sys

import pytest
import torch
import torchvision

from sceneparse.ops import batched_nms, box_iou, matrix_nms, nms, soft_nms


def clustered_boxes(n, generator, size=300.0, spread=20.0, clusters=8):
    centres = torch.rand(clusters, 2, generator=generator) * size
    pick = torch.randint(0, clusters, (n,), generator=generator)
    c = centres[pick] + torch.randn(n, 2, generator=generator) * spread / 4
    wh = torch.rand(n, 2, generator=generator) * spread + spread
    return torch.cat([c - wh / 2, c + wh / 2], 1)


def iou_scalar(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def ref_nms(boxes, scores, thr, labels=None):
    b, s = boxes.double().tolist(), scores.tolist()
    order = sorted(range(len(s)), key=lambda i: -s[i])
    keep = []
    for i in order:
        if all(iou_scalar(b[i], b[k]) <= thr or (labels is not None and labels[i] != labels[k]) for k in keep):
            keep.append(i)
    return keep


def ref_soft_nms(boxes, scores, method, thr, sigma, score_thr):
    b, cur = boxes.double().tolist(), scores.double().tolist()
    alive = [i for i in range(len(cur)) if cur[i] >= score_thr]
    keep, kept = [], []
    while alive:
        i = max(alive, key=lambda j: (cur[j], -j))
        keep.append(i)
        kept.append(cur[i])
        alive.remove(i)
        for j in list(alive):
            o = iou_scalar(b[i], b[j])
            if method == "linear":
                cur[j] *= (1 - o) if o > thr else 1.0
            else:
                cur[j] *= math.exp(-o * o / sigma)
            if cur[j] < score_thr:
                alive.remove(j)
    return keep, kept


def test_nms_hand_computed():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (half of box 0) has IoU 0.5 with box 0; box 1 has IoU 81/119 = 0.68 with box 0
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # box 0 goes, so box 1 (IoU 36/114 with box 3) survives, ranked by score
    assert nms(boxes, scores, 0.49).tolist() == [3, 1, 2]


def test_nms_matches_reference():
    g = torch.Generator().manual_seed(0)
    boxes = clustered_boxes(300, g)
    scores = torch.rand(300, generator=g)
    for thr in (0.3, 0.5, 0.7):
        keep = nms(boxes, scores, thr)
        assert keep.dtype == torch.int64
        assert keep.tolist() == ref_nms(boxes, scores, thr)
        assert bool((scores[keep][:-1] >= scores[keep][1:]).all())


# 200 boxes: one kernel call here, torchvision's float32 coordinate trick; 3000: one call per class in both
@pytest.mark.parametrize("n", [200, 3000])
def test_batched_nms_matches_torchvision_and_reference(n):
    g = torch.Generator().manual_seed(n)
    boxes = clustered_boxes(n, g) * 4  # COCO-scale coordinates
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 80, (n,), generator=g) * 3 + 7  # sparse, non-contiguous class ids
    keep = batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels, 0.5))
    if n <= 200:
        assert keep.tolist() == ref_nms(boxes, scores, 0.5, labels.tolist())
    # classes really do not suppress each other: with one class, fewer boxes survive
    assert len(nms(boxes, scores, 0.5)) < len(keep)


def test_batched_nms_single_call_and_per_group_paths_agree(monkeypatch):
    nms_module = sys.modules["sceneparse.ops.nms"]  # the package re-exports the function under the same name
    g = torch.Generator().manual_seed(5)
    boxes = clustered_boxes(600, g) * 3
    scores = torch.rand(600, generator=g)
    labels = torch.randint(0, 5, (600,), generator=g)
    monkeypatch.setitem(nms_module._SINGLE_CALL_MAX_BOXES, "cpu", 10**9)
    single = batched_nms(boxes, scores, labels, 0.6)
    monkeypatch.setitem(nms_module._SINGLE_CALL_MAX_BOXES, "cpu", 0)
    per_group = batched_nms(boxes, scores, labels, 0.6)
    assert torch.equal(single, per_group)
    assert single.tolist() == ref_nms(boxes, scores, 0.6, labels.tolist())


def sparse_boxes(n, generator, area_per_box=700.0):
    """Small boxes, log-uniform sides 2..120 px, spread over a large image: most survive NMS."""
    side = (area_per_box * n) ** 0.5
    c = torch.rand(n, 2, generator=generator) * side
    wh = torch.exp(torch.rand(n, 2, generator=generator) * math.log(60)) * 2
    return torch.cat([c - wh / 2, c + wh / 2], 1)


def per_group_nms(boxes, scores, labels, thr):
    """The definition: torchvision's kernel on each group alone, the union ordered as torchvision orders it."""
    keep = torch.zeros(len(scores), dtype=torch.bool)
    for g in labels.unique():
        idx = torch.where(labels == g)[0]
        keep[idx[torchvision.ops.nms(boxes[idx], scores[idx], thr)]] = True
    kept = torch.where(keep)[0]
    return kept[scores[kept].sort(descending=True)[1]]


def test_overlap_components_never_separate_boxes_that_can_suppress_each_other(monkeypatch):
    nms_module = sys.modules["sceneparse.ops.nms"]
    monkeypatch.setattr(nms_module, "_MAX_CANDIDATES_PER_BOX", 10**6)
    g = torch.Generator().manual_seed(11)
    boxes = torch.cat([sparse_boxes(2500, g), clustered_boxes(500, g) * 2])  # sides at many size levels
    boxes[:40, 2:] = boxes[:40, :2]  # boxes without area: alone
    labels = torch.randint(0, 2, (3000,), generator=g)
    iou = box_iou(boxes.double(), boxes.double())
    for thr in (0.2, 0.5, 0.9):
        label = nms_module._overlap_components(boxes, labels, thr)
        assert label is not None and bool((label <= torch.arange(3000)).all())
        linked = (iou > thr - nms_module._IOU_SLACK) & (labels[:, None] == labels[None, :])
        linked.fill_diagonal_(False)
        i, j = torch.where(linked)
        assert len(i) > 0 and torch.equal(label[i], label[j])
        assert len(label.unique()) > 1000  # and it does split: mostly small components
        assert bool((label[:40] == torch.arange(40)).all())


def test_batched_nms_large_groups_split_into_components_match_torchvision(monkeypatch):
    nms_module = sys.modules["sceneparse.ops.nms"]
    calls = []
    real = nms_module._overlap_components
    monkeypatch.setattr(nms_module, "_overlap_components", lambda *a: calls.append(real(*a)) or calls[-1])
    monkeypatch.setattr(nms_module, "_GRAPH_MIN_GROUP", 2000)
    g = torch.Generator().manual_seed(12)
    n = 6000
    boxes = sparse_boxes(n, g, area_per_box=300.0)
    # pairs at the threshold: a box and a copy widened so that IoU = 1 / (1 + d) ~ 0.5, d around 1
    k = torch.arange(0, 1500)
    d = 1 + (torch.rand(len(k), generator=g) - 0.5) * 1e-5
    w = boxes[k, 2] - boxes[k, 0]
    boxes[k + 1500] = boxes[k]
    boxes[k + 1500, 2] = boxes[k, 0] + w * (1 + d)
    boxes[:10, 2:] = boxes[:10, :2]  # no area
    boxes[10:20] = boxes[20:30]  # exact duplicates
    scores = torch.rand(n, generator=g)
    labels = torch.where(torch.rand(n, generator=g) < 0.9, 0, 1 + torch.randint(0, 5, (n,), generator=g))
    for thr in (0.7, 0.5):
        keep = batched_nms(boxes, scores, labels, thr)
        assert calls and calls[-1] is not None  # the component path ran
        assert torch.equal(keep, per_group_nms(boxes, scores, labels, thr))
        assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels, thr))
    assert 0 < len(keep) < n - 500  # at 0.5 about half the pairs at the threshold lose a box
    # too many candidate pairs, non-finite boxes: one kernel call per group, the same result
    monkeypatch.setattr(nms_module, "_MAX_CANDIDATES_PER_BOX", 0)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), per_group_nms(boxes, scores, labels, 0.5))
    assert calls[-1] is None
    monkeypatch.setattr(nms_module, "_MAX_CANDIDATES_PER_BOX", 32)
    boxes[-1, 0] = float("nan")
    boxes[-2, 3] = float("inf")
    n_calls = len(calls)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), per_group_nms(boxes, scores, labels, 0.5))
    assert len(calls) == n_calls


def test_batched_nms_empty():
    out = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert out.shape == (0,) and out.dtype == torch.int64


def test_soft_nms_hand_computed():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, new = soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    # box 1 overlaps box 0 with IoU 0.5 -> 0.8 * 0.5 = 0.4; box 2 untouched
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.7, 0.4]))
    keep, new = soft_nms(boxes, scores, method="gaussian", sigma=0.5)
    # 0.8 exp(-0.5^2 / 0.5) = 0.485 < 0.7: box 2 is picked before box 1
    torch.testing.assert_close(new, torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)]))
    assert keep.tolist() == [0, 2, 1]
    # the linear kernel leaves overlaps at or below the threshold alone
    keep, new = soft_nms(boxes, scores, method="linear", iou_threshold=0.5)
    assert keep.tolist() == [0, 1, 2] and torch.equal(new, scores)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_reference(method):
    g = torch.Generator().manual_seed(1)
    boxes = clustered_boxes(150, g, clusters=5).double()
    scores = torch.rand(150, generator=g, dtype=torch.float64)
    keep, new = soft_nms(boxes, scores, method=method, iou_threshold=0.3, sigma=0.5, score_threshold=0.05)
    ref_keep, ref_scores = ref_soft_nms(boxes, scores, method, 0.3, 0.5, 0.05)
    assert keep.tolist() == ref_keep
    torch.testing.assert_close(new, torch.tensor(ref_scores, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert bool((new[:-1] >= new[1:]).all()) and bool((new >= 0.05).all())
    # decaying instead of dropping keeps more boxes than hard NMS at the same threshold
    assert len(keep) > len(nms(boxes, scores, 0.3))


def ref_matrix_nms(iou, scores, labels, kernel, sigma):
    n = len(scores)
    order = sorted(range(n), key=lambda i: -float(scores[i]))
    out = [0.0] * n
    f = (lambda x: math.exp(-sigma * x * x)) if kernel == "gaussian" else (lambda x: 1 - x)
    for pj, j in enumerate(order):
        decay = 1.0
        for i in order[:pj]:
            if labels[i] != labels[j]:
                continue
            comp = max([float(iou[k, i]) for k in order[: order.index(i)] if labels[k] == labels[i]], default=0.0)
            decay = min(decay, f(float(iou[i, j])) / f(comp))
        out[j] = float(scores[j]) * decay
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms_boxes_matches_reference(kernel):
    g = torch.Generator().manual_seed(2)
    boxes = clustered_boxes(60, g, clusters=4).double()
    scores = torch.rand(60, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (60,), generator=g)
    got = matrix_nms(boxes, scores, labels, kernel=kernel, sigma=2.0)
    ref = ref_matrix_nms(box_iou(boxes, boxes), scores, labels.tolist(), kernel, 2.0)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    assert bool((got <= scores + 1e-12).all())
    top = scores.argmax()
    assert float(got[top]) == float(scores[top])


def test_matrix_nms_hand_computed_and_masks():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 5]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 1])
    got = matrix_nms(boxes, scores, labels, kernel="gaussian", sigma=2.0)
    # box 1 (IoU 0.5 with box 0, which nobody suppresses): 0.8 exp(-2 * 0.25); box 2 is another class
    torch.testing.assert_close(got, torch.tensor([0.9, 0.8 * math.exp(-0.5), 0.7]))
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0] = True
    masks[1, :5] = True
    masks[2, :5] = True
    torch.testing.assert_close(matrix_nms(masks, scores, labels), got)


def test_matrix_nms_masks_match_reference():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(20, 12, 12, generator=g) > 0.5
    scores = torch.rand(20, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (20,), generator=g)
    m = masks.flatten(1).double()
    inter = torch.tensor([[float((m[i] * m[j]).sum()) for j in range(20)] for i in range(20)])
    union = m.sum(1)[:, None] + m.sum(1)[None] - inter
    ref = ref_matrix_nms(inter / union, scores, labels.tolist(), "linear", 2.0)
    torch.testing.assert_close(matrix_nms(masks, scores, labels, kernel="linear"), ref, rtol=1e-6, atol=1e-7)


def test_errors():
    with pytest.raises(ValueError, match="scores must be"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="method"):
        soft_nms(torch.zeros(1, 4), torch.ones(1), method="hard")
    with pytest.raises(ValueError, match="kernel"):
        matrix_nms(torch.zeros(1, 4), torch.ones(1), torch.zeros(1), kernel="box")


# --- dtypes (issue 22): nms cast the scores to the boxes' dtype and failed on int64 / float16 boxes ----

def test_nms_float16_case_from_torchvision():
    """torchvision's test_nms_float16 (a CUDA test there): float16 boxes and scores keep what the
    float32 ones keep. The areas (~6e5) overflow float16; sceneparse runs the kernel in float32."""
    boxes = torch.tensor([[285.3538, 185.5758, 1193.5110, 851.4551],
                          [285.1472, 188.7374, 1192.4984, 851.0669],
                          [279.2440, 197.9812, 1189.4746, 849.2019]])
    scores = torch.tensor([0.6370, 0.7569, 0.3966])
    keep32 = torchvision.ops.nms(boxes, scores, 0.2)
    assert torch.equal(nms(boxes.half(), scores.half(), 0.2), keep32)
    assert torch.equal(batched_nms(boxes.half(), scores.half(), torch.zeros(3, dtype=torch.long), 0.2), keep32)


@pytest.mark.parametrize("iou", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nms_half_boxes_keep_their_float32_values_keep(iou, dtype):
    """torchvision's test_autocast_cpu: boxes and scores in ``dtype`` keep what their float32 values
    keep (with 1000 boxes and a pair at IoU ``iou``)."""
    g = torch.Generator().manual_seed(int(iou * 10))
    boxes = torch.rand(1000, 4, generator=g) * 100
    boxes[:, 2:] += boxes[:, :2]
    boxes[-1, :] = boxes[0, :]
    x0, y0, x1, y1 = boxes[-1].tolist()
    boxes[-1, 2] += (x1 - x0) * (1 - iou) / iou  # IoU with box 0 = iou
    scores = torch.rand(1000, generator=g)
    ref = torchvision.ops.nms(boxes.to(dtype).float(), scores.to(dtype).float(), iou)
    assert torch.equal(nms(boxes.to(dtype), scores.to(dtype), iou), ref)
    # batched_nms, one group: the same kept set (it orders exact score ties its own way)
    got = batched_nms(boxes.to(dtype), scores.to(dtype), torch.zeros(1000, dtype=torch.long), iou)
    assert sorted(got.tolist()) == sorted(ref.tolist())


@pytest.mark.parametrize("n", [300, 1500])  # batched_nms: one kernel call / one call per group
@pytest.mark.parametrize("box_dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                       torch.int32, torch.int64])
@pytest.mark.parametrize("score_dtype", [torch.float16, torch.float32, torch.float64])
def test_nms_and_batched_nms_accept_the_same_dtypes(n, box_dtype, score_dtype):
    """Every pair of dtypes: nms gives torchvision's keep indices on the boxes and scores converted to
    the type that holds both exactly (half -> float32, integers -> float64, then the wider), and
    batched_nms with one group keeps the same boxes."""
    nms_module = sys.modules["sceneparse.ops.nms"]
    g = torch.Generator().manual_seed(n)
    boxes = (clustered_boxes(n, g) * 4).round().to(box_dtype)  # integer pixels: every dtype holds them
    scores = (torch.randperm(n, generator=g).double() / n).to(score_dtype)  # no ties, even in float16
    assert len(scores.unique()) == n
    kdt = nms_module._kernel_dtype(boxes, scores)
    assert kdt == torch.promote_types(
        {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.int32: torch.float64,
         torch.int64: torch.float64}.get(box_dtype, box_dtype),
        {torch.float16: torch.float32}.get(score_dtype, score_dtype))
    ref = torchvision.ops.nms(boxes.to(kdt), scores.to(kdt), 0.5)
    keep = nms(boxes, scores, 0.5)
    assert torch.equal(keep, ref) and len(ref) < n
    if box_dtype == score_dtype == torch.float32:  # torchvision takes these as they are
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))
    labels = torch.zeros(n, dtype=torch.long)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5), ref)
    labels = torch.randint(0, 3, (n,), generator=g)
    assert torch.equal(batched_nms(boxes, scores, labels, 0.5),
                       per_group_nms(boxes.to(kdt), scores.to(kdt), labels, 0.5))


def test_nms_does_not_round_scores_to_the_boxes_dtype():
    """Two overlapping boxes whose scores differ below the boxes' precision: the higher score wins
    (casting the scores to the boxes' dtype made them a tie, won by the lower index)."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]])
    s64 = torch.tensor([0.5, 0.5 + 1e-12], dtype=torch.float64)
    assert nms(boxes, s64, 0.5).tolist() == [1]
    assert torchvision.ops.nms(boxes.double(), s64, 0.5).tolist() == [1]
    s32 = torch.tensor([0.5, 0.5001])  # equal in float16
    assert nms(boxes.half(), s32, 0.5).tolist() == [1]
    assert nms(boxes.long(), s32, 0.5).tolist() == [1]
    assert batched_nms(boxes.half(), s32, torch.zeros(2, dtype=torch.long), 0.5).tolist() == [1]
