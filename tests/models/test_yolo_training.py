"""YOLO training: the task-aligned assigner on hand-computed grids, CIoU against its formula, the
loss properties and a loss that drops in a few steps on a tiny synthetic batch."""
from __future__ import annotations

import math

import pytest
import torch

from sceneparse.models import zoo
from sceneparse.models.yolo.loss import ciou_paired, dfl_loss, task_aligned_assign
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


def _grid(n: int, stride: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    return torch.stack((xs, ys), -1).view(-1, 2) * stride


def test_assigner_hand_computed_case():
    """4x4 grid of stride 8 (centres 4, 12, 20, 28); one gt [2, 2, 22, 22] of class 1 holds the 9 centres
    4/12/20 x 4/12/20. Every prediction is the gt box itself (CIoU 1), so the alignment is sqrt(score):
    with topk 4 the 4 best-scored inside points are positives and their soft targets are
    sqrt(s / s_max) (max IoU 1); the 7 other points are background."""
    anchors = _grid(4, 8.0)
    gt = torch.tensor([[[2.0, 2.0, 22.0, 22.0]]])
    scores = torch.zeros(1, 16, 2)
    s = torch.linspace(0.1, 0.9, 16)
    scores[0, :, 1] = s
    pred = gt[:, :1].expand(1, 16, 4).clone()
    boxes, targets, fg, idx = task_aligned_assign(scores, pred, anchors, torch.tensor([[1]]), gt,
                                                  torch.tensor([[True]]), topk=4, alpha=0.5, beta=6.0)
    inside = [i for i in range(16) if anchors[i, 0] < 22 and anchors[i, 1] < 22]
    assert inside == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    best4 = sorted(inside, key=lambda i: -float(s[i]))[:4]  # 10, 9, 8, 6
    assert sorted(torch.where(fg[0])[0].tolist()) == sorted(best4)
    expect = torch.zeros(16)
    for i in best4:
        expect[i] = math.sqrt(float(s[i]) / float(s[10]))
    assert torch.allclose(targets[0, :, 1], expect, atol=1e-6)
    assert targets[0, :, 0].abs().max() == 0
    assert torch.equal(boxes[0, fg[0]], gt[0].expand(4, 4))


def test_assigner_shared_point_goes_to_the_gt_it_overlaps_most_and_padding_selects_nothing():
    anchors = torch.tensor([[12.0, 12.0], [40.0, 40.0]])
    gts = torch.tensor([[[0.0, 0.0, 24.0, 24.0], [4.0, 4.0, 30.0, 30.0], [0.0, 0.0, 50.0, 50.0]]])
    pred = torch.tensor([[[4.0, 4.0, 29.0, 29.0], [30.0, 30.0, 50.0, 50.0]]])  # point 0 overlaps gt 1 most
    scores = torch.full((1, 2, 1), 0.5)
    valid = torch.tensor([[True, True, False]])  # gt 2 is padding (it would hold both points)
    boxes, targets, fg, idx = task_aligned_assign(scores, pred, anchors, torch.zeros(1, 3, dtype=torch.long), gts,
                                                  valid, topk=10)
    assert fg.tolist() == [[True, False]] and idx[0, 0] == 1
    assert torch.equal(boxes[0, 0], gts[0, 1])


def test_ciou_matches_its_formula_and_dfl_is_the_two_bin_cross_entropy():
    a = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    b = torch.tensor([[5.0, 5.0, 25.0, 15.0]], dtype=torch.float64)
    inter, union = 5 * 10, 200 + 200 - 50
    rho2, c2 = (15 - 5) ** 2 + (10 - 10) ** 2, 25 ** 2 + 20 ** 2
    v = 4 / math.pi ** 2 * (math.atan(20 / 10) - math.atan(10 / 20)) ** 2
    iou = inter / union
    expect = iou - rho2 / c2 - v * v / (v - iou + 1)
    assert abs(ciou_paired(a, b, eps=0.0).item() - expect) < 1e-12
    logits = torch.randn(3, 4, 16)
    target = torch.tensor([[2.25, 0.0, 7.5, 20.0]] * 3)
    logp = logits.log_softmax(-1)
    t = target.clamp(0, 14.99)
    lo = t.floor().long()
    ref = -(logp.gather(-1, lo[..., None])[..., 0] * (lo + 1 - t) + logp.gather(-1, lo[..., None] + 1)[..., 0] * (t - lo))
    assert torch.allclose(dfl_loss(logits, target), ref.mean(-1), atol=1e-6)


def _batch():
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i in range(2):
        im = torch.rand(3, 96, 128, generator=g) * 0.2
        boxes = torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 20.0, 120.0, 80.0]]) - i * 5
        for (x1, y1, x2, y2), c in zip(boxes.long().tolist(), (0.9, 0.6)):
            im[:, y1:y2, x1:x2] = c
        targets.append(Target(i, Instances((96, 128), boxes=boxes, labels=torch.tensor([0, 1]))))
        images.append(im)
    return images, targets


def test_losses_finite_on_empty_targets_and_positive_with_objects():
    model = zoo.build("yolov8n", num_classes=2, imgsz=128)
    images, targets = _batch()
    losses = model.training_losses(images, targets)
    assert set(losses) == {"loss_box", "loss_cls", "loss_dfl"} and all(v.item() > 0 for v in losses.values())
    empty = [Target(t.image_id, Instances(t.image_size, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)))
             for t in targets]
    losses = model.training_losses(images, empty)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_box"].item() == 0
    sum(losses.values()).backward()


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n"])
def test_loss_drops_in_a_few_steps(name):
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=2, imgsz=128).train()
    images, targets = _batch()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(8):
        losses = model.training_losses(images, targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    print(name, [round(h, 2) for h in history])
    assert history[-1] < 0.7 * history[0]
