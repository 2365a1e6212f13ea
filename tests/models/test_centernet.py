"""CenterNet ("Objects as Points"): heatmap encoding and peak decoding on hand-built cases, the radius
rule against CornerNet's formula, decode(encode(boxes)) == boxes, the focal loss against its
formula, and the model's losses / predictions / a few training steps."""
from __future__ import annotations

import math

import pytest
import torch

from sceneparse.errors import DataError
from sceneparse.models import zoo
from sceneparse.ops.center_heatmaps import (decode_centers, encode_centers, gaussian_radius, heatmap_peaks,
                                            penalty_reduced_focal_loss)
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target


def _radius(h: float, w: float, o: float = 0.7) -> float:
    """CornerNet's three cases, as its reference code writes them (scalar, float64)."""
    r1 = ((h + w) + math.sqrt((h + w) ** 2 - 4 * w * h * (1 - o) / (1 + o))) / 2
    r2 = (2 * (h + w) + math.sqrt((2 * (h + w)) ** 2 - 16 * (1 - o) * w * h)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def test_gaussian_radius_formula():
    hs = torch.tensor([4.0, 10.0, 3.5, 40.0, 1.0])
    ws = torch.tensor([8.0, 10.0, 20.0, 7.0, 1.0])
    got = gaussian_radius(hs, ws)
    for g, h, w in zip(got, hs.tolist(), ws.tolist()):
        assert abs(float(g) - _radius(h, w)) < 1e-5
    # by hand, h = w = 10: r3 = (-2 * 0.7 * 20 + sqrt(28^2 + 4 * 2.8 * 30)) / 2 = (-28 + sqrt(1120)) / 2 = 2.7332
    # (r1 = 19.07 and r2 = 36.73 are larger)
    assert abs(float(gaussian_radius(torch.tensor(10.0), torch.tensor(10.0))) - 2.7332) < 1e-3


def test_encode_hand_built_box():
    """Box (20, 28, 52, 44) at stride 4 on a 16 x 16 map: centre (9, 9) exactly, size (8, 4), a
    Gaussian of radius floor(r(4, 8)) around cell (9, 9) in its class's map only."""
    boxes = torch.tensor([[20.0, 28.0, 52.0, 44.0]])
    t = encode_centers(boxes, torch.tensor([1]), 3, (16, 16), 4)
    r = int(_radius(4, 8))
    assert t.radius.tolist() == [r] and r == 1
    assert t.index.tolist() == [9 * 16 + 9]
    assert torch.equal(t.size, torch.tensor([[8.0, 4.0]])) and torch.equal(t.offset, torch.zeros(1, 2))
    sigma = (2 * r + 1) / 6
    assert t.heatmap[0].abs().sum() == 0 and t.heatmap[2].abs().sum() == 0
    hm = t.heatmap[1]
    assert hm[9, 9] == 1 and (hm > 0).sum() == (2 * r + 1) ** 2
    assert abs(float(hm[9, 10]) - math.exp(-1 / (2 * sigma**2))) < 1e-6
    assert abs(float(hm[8, 10]) - math.exp(-2 / (2 * sigma**2))) < 1e-6
    # a centre between cells: cell = floor, offset = the rest
    t = encode_centers(torch.tensor([[21.0, 30.0, 55.0, 47.0]]), torch.tensor([0]), 1, (16, 16), 4)
    assert t.index.tolist() == [9 * 16 + 9]
    assert torch.allclose(t.offset, torch.tensor([[0.5, 0.625]]))
    # two objects of one class overlap: element-wise maximum, not a sum
    two = encode_centers(torch.tensor([[20.0, 28.0, 52.0, 44.0], [28.0, 28.0, 60.0, 44.0]]), torch.tensor([0, 0]),
                         1, (16, 16), 4).heatmap[0]
    a = encode_centers(torch.tensor([[20.0, 28.0, 52.0, 44.0]]), torch.tensor([0]), 1, (16, 16), 4).heatmap[0]
    b = encode_centers(torch.tensor([[28.0, 28.0, 60.0, 44.0]]), torch.tensor([0]), 1, (16, 16), 4).heatmap[0]
    assert torch.equal(two, torch.maximum(a, b)) and two.max() == 1
    # centres outside the map are dropped
    out = encode_centers(torch.tensor([[70.0, 10.0, 90.0, 20.0]]), torch.tensor([0]), 1, (16, 16), 4)
    assert len(out.index) == 0 and out.heatmap.sum() == 0


def test_peaks_hand_built_map():
    heat = torch.zeros(1, 2, 5, 5)
    heat[0, 0, 1, 1] = 0.9
    heat[0, 0, 1, 2] = 0.8  # next to a higher cell: suppressed by the 3x3 max-pool
    heat[0, 1, 3, 3] = 0.7
    heat[0, 1, 0, 4] = 0.6  # a lone peak on the border
    scores, classes, ys, xs = heatmap_peaks(heat, k=3)
    assert torch.allclose(scores, torch.tensor([[0.9, 0.7, 0.6]]))
    assert classes.tolist() == [[0, 1, 1]] and ys.tolist() == [[1, 3, 0]] and xs.tolist() == [[1, 3, 4]]


def test_decode_of_encoded_boxes_returns_the_boxes():
    g = torch.Generator().manual_seed(0)
    h, w, stride = 32, 40, 4
    centres = torch.tensor([[3.3, 4.7], [20.2, 10.9], [30.5, 25.1], [11.0, 22.0], [36.9, 2.2]])
    sizes = torch.rand(5, 2, generator=g) * 20 + 4
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1) * stride
    labels = torch.tensor([0, 2, 1, 2, 0])
    t = encode_centers(boxes, labels, 3, (h, w), stride)
    size_map = torch.zeros(1, 2, h * w)
    off_map = torch.zeros(1, 2, h * w)
    size_map[0, :, t.index] = t.size.T
    off_map[0, :, t.index] = t.offset.T
    got, scores, got_labels = decode_centers(t.heatmap[None], size_map.view(1, 2, h, w), off_map.view(1, 2, h, w),
                                             stride, k=5)
    assert torch.equal(scores, torch.ones(1, 5))
    matched = torch.cdist(got[0], boxes).argmin(1)
    assert sorted(matched.tolist()) == list(range(5))
    assert torch.allclose(got[0], boxes[matched], atol=1e-4)
    assert torch.equal(got_labels[0], labels[matched])


def test_focal_loss_formula():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.9]]]])
    p = logits.sigmoid()
    pos = -(torch.log(p[0, 0, 0, 0]) * (1 - p[0, 0, 0, 0]) ** 2)
    neg = -sum(torch.log(1 - p[0, 0, i, j]) * p[0, 0, i, j] ** 2 * (1 - target[0, 0, i, j]) ** 4
               for i, j in [(0, 1), (1, 0), (1, 1)])
    assert abs(float(penalty_reduced_focal_loss(logits, target)) - float(pos + neg)) < 1e-6
    no_objects = penalty_reduced_focal_loss(logits, torch.zeros_like(target))
    assert torch.isfinite(no_objects) and no_objects > 0


TINY = dict(num_classes=3, up_channels=(32, 32, 32), head_channels=16, min_size=64, max_size=64)


def _scene():
    images, targets = [], []
    g = torch.Generator().manual_seed(1)
    for i, (h, w) in enumerate([(64, 64), (48, 64)]):
        image = torch.full((3, h, w), 0.3)
        b = torch.tensor([[8.0 + 4 * i, 10.0, 36.0 + 4 * i, 34.0]])
        image[:, 10:34, 8 + 4 * i:36 + 4 * i] = torch.rand(3, 1, 1, generator=g)
        images.append(image)
        targets.append(Target(i, Instances((h, w), boxes=b, labels=torch.tensor([i]))))
    return images, targets


def test_centernet_losses_predictions_and_training():
    torch.manual_seed(0)
    model = zoo.build("centernet_resnet18", **TINY)
    images, targets = _scene()
    losses = model.training_losses(images, targets)
    assert set(losses) == {"loss_heatmap", "loss_size", "loss_offset"} and all(float(v) > 0 for v in losses.values())
    empty = [Target(i, Instances(t.image_size, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64)))
             for i, t in enumerate(targets)]
    e = model.training_losses(images, empty)
    assert torch.isfinite(e["loss_heatmap"]) and float(e["loss_size"]) == 0
    bad = [Target(0, Instances((64, 64), boxes=torch.tensor([[5.0, 5.0, 5.0, 9.0]]), labels=torch.tensor([0])))]
    with pytest.raises(DataError, match=r"boxes\[0\]"):
        model.training_losses(images[:1], bad)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(8):
        loss = sum(model.training_losses(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss))
    assert history[-1] < 0.7 * history[0], history
    results = model.predict(images, conf=0.0, max_det=7)
    assert [len(r) for r in results] == [7, 7]
    assert results[1].image_size == (48, 64)
    assert (results[1].boxes[:, 2] <= 64).all() and (results[1].boxes[:, 3] <= 48).all()
    assert model.info.task == "detect" and model.info.iou_types == ("bbox",)


def test_export_graph_equals_predict():
    torch.manual_seed(0)
    model = zoo.build("centernet_resnet18", **TINY).eval()
    image = _scene()[0][1]
    with torch.no_grad():
        boxes, scores, labels = model.export_graph().eval()(image)
    det = model.predict([image], conf=0.0)[0]  # the peaks (score > 0); the graph pads the top-k with zeros
    n = len(det)
    assert 0 < n and torch.equal(scores[:n], det.scores) and torch.equal(labels[:n], det.labels)
    assert torch.allclose(boxes[:n], det.boxes, atol=1e-5) and (scores[n:] == 0).all()


def test_fpn_variant_shares_the_rcnn_trunk_and_pyramid():
    """``centernet_resnet18_fpn``: heads on the FPN's stride-4 level; its trunk + FPN have the R-CNN
    family's names and shapes (a trained Mask R-CNN's load into it), only the heads are its own."""
    torch.manual_seed(0)
    cn = zoo.build("centernet_resnet18_fpn", num_classes=3, min_size=128, max_size=128).eval()
    rcnn = zoo.build("maskrcnn_resnet18_fpn", num_classes=3, trunk_stages=3).state_dict()
    ours = cn.state_dict()
    shared = {k for k in ours if k in rcnn and rcnn[k].shape == ours[k].shape}
    assert shared == {k for k in ours if k.startswith(("backbone.", "neck."))}
    assert all(k.split(".")[0].endswith("_head") for k in set(ours) - shared)
    batch, _ = cn.prepare([torch.rand(3, 100, 128)])
    raw = cn(batch)
    assert raw.heatmap.shape[-2:] == (batch.tensor.shape[-2] // 4, batch.tensor.shape[-1] // 4)
    res = cn.predict([torch.rand(3, 100, 128)], conf=0.0)[0]
    assert len(res) == cn.topk and (res.boxes[:, 2:] >= res.boxes[:, :2]).all()
