"""CornerNet: corner targets (peaks at the corners with the radius of CenterNet's op,
offsets, embedding slots), pull / push losses against hand computation, decoding of hand-made
heatmaps and embeddings (corners grouped by embedding), decode(encode(boxes)) == boxes, the model's
losses (empty targets, intermediate supervision), a few training steps, the export graph, and a
command-line round trip (data synth -> train -> predict -> export)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sceneparse.cli import main
from sceneparse.errors import DataError
from sceneparse.models import zoo
from sceneparse.models.cornernet.codec import decode_corners, embedding_losses, encode_corners, offset_loss
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target

pytestmark = pytest.mark.usefixtures("one_thread")


def _radius(h: float, w: float, o: float) -> float:
    """CornerNet's three cases (the reference's formula), scalar float64."""
    r1 = ((h + w) + math.sqrt((h + w) ** 2 - 4 * w * h * (1 - o) / (1 + o))) / 2
    r2 = (2 * (h + w) + math.sqrt((2 * (h + w)) ** 2 - 16 * (1 - o) * w * h)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def test_encode_hand_built_box():
    """Box (20, 28, 52, 44) at stride 4 on a 16 x 16 map: corners at cells (5, 7) and (13, 11) exactly,
    size 8 x 4 cells; at t = 0.3: r1 = 10.33, r2 = 19.38, r3 = (-7.2 + sqrt(159.36)) / 2 = 2.71 -> r = 2."""
    t = encode_corners(torch.tensor([[20.0, 28.0, 52.0, 44.0]]), torch.tensor([1]), 3, (16, 16), 4, min_overlap=0.3)
    assert abs(_radius(4, 8, 0.3) - 2.712) < 1e-3 and t.radius.tolist() == [2]
    # the default t = 0.7 (the reference code's): r3 = (-16.8 + sqrt(16.8^2 + 4 * 2.8 * 9.6)) / 2 = 1.47 -> 1
    assert encode_corners(torch.tensor([[20.0, 28.0, 52.0, 44.0]]), torch.tensor([1]), 3, (16, 16), 4
                          ).radius.tolist() == [int(_radius(4, 8, 0.7))] == [1]
    assert t.tl_index.tolist() == [7 * 16 + 5] and t.br_index.tolist() == [11 * 16 + 13]
    assert torch.equal(t.tl_offset, torch.zeros(1, 2)) and torch.equal(t.br_offset, torch.zeros(1, 2))
    sigma = 5 / 6
    for hm, (y, x) in ((t.tl_heatmap, (7, 5)), (t.br_heatmap, (11, 13))):
        assert hm[0].sum() == 0 and hm[2].sum() == 0
        assert hm[1, y, x] == 1 and hm[1].max() == 1 and (hm[1] > 0).sum() == 25  # (2 r + 1)^2
        assert abs(float(hm[1, y, x + 1]) - math.exp(-1 / (2 * sigma**2))) < 1e-6
        assert abs(float(hm[1, y - 2, x + 2]) - math.exp(-8 / (2 * sigma**2))) < 1e-6
        assert hm[1, y, x - 3] == 0 and hm[1, y + 3, x] == 0
    # corners between cells: cell = floor, offset = the rest; the size is rounded up for the radius
    t = encode_corners(torch.tensor([[21.0, 30.0, 55.0, 47.0]]), torch.tensor([0]), 1, (16, 16), 4, min_overlap=0.3)
    assert t.tl_index.tolist() == [7 * 16 + 5] and t.br_index.tolist() == [11 * 16 + 13]
    assert torch.allclose(t.tl_offset, torch.tensor([[0.25, 0.5]]))
    assert torch.allclose(t.br_offset, torch.tensor([[0.75, 0.75]]))
    assert t.radius.tolist() == [int(_radius(math.ceil(4.25), math.ceil(8.5), 0.3))]
    # a bottom-right corner on the map's border belongs to the last cell (offset 1): decodes back exactly
    t = encode_corners(torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([0]), 1, (16, 16), 4)
    assert t.tl_index.tolist() == [0] and t.br_index.tolist() == [255]
    assert t.br_offset.tolist() == [[1.0, 1.0]] and t.br_heatmap[0, 15, 15] == 1
    # empty
    e = encode_corners(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 2, (8, 8), 4)
    assert e.tl_heatmap.shape == (2, 8, 8) and e.tl_heatmap.sum() == 0 and len(e.tl_index) == 0


def test_pull_push_hand_computed():
    # image 0: objects with corner embeddings (0.2, 0.4) and (1.0, 1.4): means 0.3 and 1.2
    #   pull = ((0.1^2 + 0.1^2) + (0.2^2 + 0.2^2)) / 2 = 0.05; push = 2 * max(0, 1 - 0.9) / (2 * 1) = 0.1
    # image 1: one object (0.5, -0.5): pull = (0.25 + 0.25) / 1 = 0.5, push = 0 (no pair)
    # a padded slot (mask False) with arbitrary values counts nowhere; the batch sums the images
    tl = torch.tensor([[0.2, 1.0, 7.0], [0.5, 3.0, -2.0]])
    br = torch.tensor([[0.4, 1.4, -7.0], [-0.5, 9.0, 4.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pull, push = embedding_losses(tl, br, mask)
    assert abs(float(pull) - 0.55) < 1e-6 and abs(float(push) - 0.1) < 1e-6
    # objects further apart than the margin are not pushed; identical means are pushed by 1
    far = embedding_losses(torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 2.0]]), torch.ones(1, 2, dtype=torch.bool))
    same = embedding_losses(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2, dtype=torch.bool))
    assert float(far[0]) == 0 and float(far[1]) == 0 and float(same[1]) == 1.0
    none = embedding_losses(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.bool))
    assert float(none[0]) == 0 and float(none[1]) == 0
    # gradients: the pull moves each corner towards the mean, the push moves the means apart
    a = torch.tensor([[0.2, 1.0]], requires_grad=True)
    b = torch.tensor([[0.4, 1.4]], requires_grad=True)
    p, q = embedding_losses(a, b, torch.ones(1, 2, dtype=torch.bool))
    (p + q).backward()
    # d pull / d e_t0 = (2 (e_t0 - e_0) (1/2) + 2 (e_b0 - e_0)(-1/2)) / 2 = (e_t0 - e_b0) / 2 = -0.1
    # d push / d e_t0 = (1/2) * d/d e_0 [2 * (1 - (e_1 - e_0))] / 2 = 0.5
    assert abs(float(a.grad[0, 0]) - (-0.1 + 0.5)) < 1e-6
    # smooth L1 (beta 1) of the offsets, divided by the objects
    sl1 = offset_loss(torch.tensor([[0.0, 0.5], [2.0, 0.0]]), torch.zeros(2, 2), 2)
    assert abs(float(sl1) - (0.5 * 0.25 + 1.5) / 2) < 1e-6


def _maps(C: int, h: int, w: int):
    z = lambda c: torch.zeros(1, c, h, w)  # noqa: E731
    return z(C), z(C), z(1), z(1), z(2), z(2)


def test_decode_groups_corners_by_embedding():
    """Two objects of class 0 whose corners also pair geometrically across objects (A's top-left with
    B's bottom-right, B's top-left with A's bottom-right): only the embeddings tell them apart. A third
    object of class 1 shares A's embedding: the class separates it."""
    tl_h, br_h, tl_e, br_e, tl_o, br_o = _maps(2, 16, 16)
    objs = {"A": (0, (2, 2), (8, 8), 0.0, 0.9, 0.7), "B": (0, (4, 3), (12, 10), 2.0, 0.8, 0.6),
            "C": (1, (1, 9), (6, 14), 0.0, 0.7, 0.5)}
    for c, (x1, y1), (x2, y2), e, s1, s2 in objs.values():
        tl_h[0, c, y1, x1], br_h[0, c, y2, x2] = s1, s2
        tl_e[0, 0, y1, x1], br_e[0, 0, y2, x2] = e, e + 0.3  # within the 0.5 threshold
    tl_o[0, :, 2, 2] = torch.tensor([0.5, 0.25])  # A's top-left at (2.5, 2.25)
    boxes, scores, labels = decode_corners(tl_h, br_h, tl_e, br_e, tl_o, br_o, 4, k=3, max_det=9)
    keep = scores[0] >= 0
    assert int(keep.sum()) == 3
    assert torch.allclose(scores[0, :3], torch.tensor([0.8, 0.7, 0.6])) and labels[0, :3].tolist() == [0, 0, 1]
    assert torch.allclose(boxes[0, :3], torch.tensor([[10.0, 9.0, 32.0, 32.0], [16.0, 12.0, 48.0, 40.0],
                                                      [4.0, 36.0, 24.0, 56.0]]))
    assert (scores[0, 3:] == -1).all()  # the six rejected pairs, last
    # with equal embeddings the cross pairs are boxes too: (0.9 + 0.6) / 2 and (0.8 + 0.7) / 2
    tl_e[0, 0, 3, 4], br_e[0, 0, 10, 12] = 0.0, 0.3
    _, scores2, _ = decode_corners(tl_h, br_h, tl_e, br_e, tl_o, br_o, 4, k=3, max_det=9)
    assert int((scores2[0] >= 0).sum()) == 5 and torch.allclose(scores2[0, :2], torch.tensor([0.8, 0.75]))
    # pairs whose top-left corner lies in the padding (right of / below the image) are rejected
    sizes = torch.tensor([[64, 40]])  # the image covers x < 40 px = 10 cells: B's top-left (4, 3) is in
    _, s3, _ = decode_corners(tl_h, br_h, tl_e, br_e, tl_o, br_o, 4, k=3, max_det=9, image_sizes=sizes)
    assert int((s3[0] >= 0).sum()) == 5
    _, s4, _ = decode_corners(tl_h, br_h, tl_e, br_e, tl_o, br_o, 4, k=3, max_det=9,
                              image_sizes=torch.tensor([[64, 12]]))  # x < 3 cells: A's and C's top-left only
    assert int((s4[0] >= 0).sum()) == 3
    # a bottom-right corner that is not below-right of the top-left one is no box, even alone
    tl_h, br_h, tl_e, br_e, tl_o, br_o = _maps(1, 8, 8)
    tl_h[0, 0, 4, 4], br_h[0, 0, 5, 3] = 0.9, 0.9
    assert decode_corners(tl_h, br_h, tl_e, br_e, tl_o, br_o, 4, k=1, max_det=1)[1].tolist() == [[-1.0]]


def test_decode_of_encoded_boxes_returns_the_boxes():
    h, w, stride = 32, 40, 4
    boxes = torch.tensor([[4.0, 6.0, 60.0, 50.0], [70.5, 10.25, 150.0, 61.0], [20.0, 70.0, 90.75, 127.5],
                          [100.0, 80.0, 160.0, 128.0], [42.0, 30.0, 110.0, 100.0]])
    labels = torch.tensor([0, 2, 1, 2, 0])
    t = encode_corners(boxes, labels, 3, (h, w), stride)
    tl_e, br_e = torch.zeros(1, 1, h * w), torch.zeros(1, 1, h * w)
    tl_o, br_o = torch.zeros(1, 2, h * w), torch.zeros(1, 2, h * w)
    emb = torch.arange(5, dtype=torch.float32) * 2 + 1  # distinct, and far from 0 (the empty cells)
    tl_e[0, 0, t.tl_index], br_e[0, 0, t.br_index] = emb, emb
    tl_o[0, :, t.tl_index], br_o[0, :, t.br_index] = t.tl_offset.T, t.br_offset.T
    got, scores, got_labels = decode_corners(t.tl_heatmap[None], t.br_heatmap[None], tl_e.view(1, 1, h, w),
                                             br_e.view(1, 1, h, w), tl_o.view(1, 2, h, w), br_o.view(1, 2, h, w),
                                             stride)
    exact = scores[0] == 1  # pairs of two true corners (pairs with empty cells score 0.5 or less)
    assert int(exact.sum()) == 5
    matched = torch.cdist(got[0, exact], boxes).argmin(1)
    assert sorted(matched.tolist()) == list(range(5))
    assert torch.allclose(got[0, exact], boxes[matched], atol=1e-4)
    assert torch.equal(got_labels[0, exact], labels[matched])


SMALL = dict(num_classes=3, min_size=64, max_size=64)


def _scene():
    images, targets = [], []
    g = torch.Generator().manual_seed(1)
    for i, (h, w) in enumerate([(64, 64), (48, 64)]):
        image = torch.full((3, h, w), 0.3)
        b = torch.tensor([[8.0 + 4 * i, 10.0, 36.0 + 4 * i, 34.0], [40.0, 4.0, 60.0, 20.0]])
        for x1, y1, x2, y2 in b.int().tolist():
            image[:, y1:y2, x1:x2] = torch.rand(3, 1, 1, generator=g)
        images.append(image)
        targets.append(Target(i, Instances((h, w), boxes=b, labels=torch.tensor([i, 2]))))
    return images, targets


def test_cornernet_losses_and_training():
    torch.manual_seed(0)
    model = zoo.build("cornernet_small", **SMALL)
    assert model.info.task == "detect" and model.info.iou_types == ("bbox",) and model.info.max_det == 100
    images, targets = _scene()
    batch, t = model.prepare(images, targets)
    raw = model(batch, t)
    assert len(raw.tl_heatmap) == 2 and raw.tl_heatmap[0].shape == (2, 3, 16, 16)  # both stacks in training
    assert raw.br_embedding[1].shape == (2, 1, 16, 16) and raw.tl_offset[0].shape == (2, 2, 16, 16)
    losses = model.loss(raw, t)
    assert set(losses) == {"loss_heatmap", "loss_pull", "loss_push", "loss_offset"}
    assert all(float(v.detach()) > 0 for v in losses.values()), losses
    # intermediate supervision: the first stack's heads get gradients from the loss
    sum(losses.values()).backward()
    assert model.top_left[0].heatmap[-1].weight.grad.abs().sum() > 0
    assert model.bottom_right[0].embedding[-1].weight.grad.abs().sum() > 0
    model.zero_grad()
    # empty targets: finite losses, no embedding / offset terms
    empty = [Target(i, Instances(t.image_size, boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64)))
             for i, t in enumerate(targets)]
    with torch.no_grad():
        e = model.training_losses(images, empty)
    assert all(torch.isfinite(v) for v in e.values()) and float(e["loss_heatmap"]) > 0
    assert float(e["loss_pull"]) == 0 and float(e["loss_push"]) == 0 and float(e["loss_offset"]) == 0
    bad = [Target(0, Instances((64, 64), boxes=torch.tensor([[5.0, 5.0, 5.0, 9.0]]), labels=torch.tensor([0])))]
    with pytest.raises(DataError, match=r"boxes\[0\]"):
        model.training_losses(images[:1], bad)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(8):
        loss = sum(model.training_losses(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.7 * history[0], history
    # eval: the last stack only; results in original pixels, rejected pairs left out
    model.eval()
    with torch.no_grad():
        b2, _ = model.prepare(images)
        assert len(model(b2).tl_heatmap) == 1
    results = model.predict(images, conf=0.0, max_det=7)
    assert [len(r) <= 7 for r in results] == [True, True] and results[1].image_size == (48, 64)
    for r in results:
        assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
    assert (results[1].boxes[:, 2] <= 64).all() and (results[1].boxes[:, 3] <= 48).all()


def test_export_graph_equals_predict():
    torch.manual_seed(0)
    model = zoo.build("cornernet_small", **SMALL).eval()
    image = _scene()[0][1]
    with torch.no_grad():
        boxes, scores, labels = model.export_graph().eval()(image)
    det = model.predict([image], conf=0.0)[0]  # the valid pairs (score > 0); the graph pads with zeros
    n = len(det)
    assert 0 < n <= 100 and boxes.shape == (100, 4)
    assert torch.equal(scores[:n], det.scores) and torch.equal(labels[:n], det.labels)
    assert torch.allclose(boxes[:n], det.boxes, atol=1e-5) and (scores[n:] == 0).all()


@pytest.mark.slow
def test_hourglass104_config():
    """The paper's network is buildable: Hourglass-104 (~188M) + 4 corner branches = ~201M parameters
    (the paper's count) with COCO's 80 classes."""
    model = zoo.build("cornernet_hourglass104", num_classes=80)
    n = sum(p.numel() for p in model.parameters())
    trunk = sum(p.numel() for p in model.trunk.parameters())
    assert model.trunk.num_stacks == 2 and model.trunk.depth == 5 and model.trunk.out_channels == 256
    assert model.preprocessor.size_divisible == 128 and model.info.size.min_size == (512,)
    assert 185e6 < trunk < 190e6 and 199e6 < n < 203e6, (trunk, n)


def test_command_line_round_trip(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", "--out", str(data), "--images", "4", "--size", "64", "--val-fraction", "0.5",
                 "--workers", "1", "--no-progress"]) == 0
    assert main(["train", "--model", "cornernet_small", "--data", str(data), "--epochs", "1", "--batch", "2",
                 "--imgsz", "64", "--out", str(run), "--quiet", "--workers", "0", "train.threads=1"]) == 0
    assert "trained 1 epoch(s), 1 iterations" in capsys.readouterr().out
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "last.pt"), "--source", str(data / "images" / "val"),
                 "--out", str(pred), "--quiet", "--no-save-images", "--conf", "0.0"]) == 0
    dets = json.loads((pred / "predictions.json").read_text())
    assert dets and {d["image_id"] for d in dets} <= {1, 2, 3, 4} and all(d["bbox"][2] > 0 for d in dets)
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--model", str(run / "last.pt"), "--imgsz", "64", "--static", "--out", str(onnx)]) == 0
    printed = capsys.readouterr().out
    assert onnx.is_file() and "[ok]" in printed and "detections 100 eager / 100 exported" in printed


def test_explain_pairs_are_predicts_detections(tmp_path):
    """The explanation draws predict's detections: same order, scores, labels; each pair's segment
    runs between the corners whose clipped box is predict's box; embeddings within the threshold."""
    from sceneparse.viz.explain import render_explanation

    torch.manual_seed(0)
    model = zoo.build("cornernet_small", **SMALL).eval()
    model.class_names = ("a", "b", "c")
    image = _scene()[0][1]  # 48 x 64
    expl = model.explain(image, conf=0.0, max_det=12)
    assert [e.name for e in expl] == ["cornernet_corners", "cornernet_pairs"]
    r = model.predict([image], conf=0.0, max_det=12)[0]
    d = expl[1].data
    n = len(r)
    assert n > 0 and torch.equal(d["scores"], r.scores) and torch.equal(d["labels"], r.labels)
    assert ((d["tl_embedding"] - d["br_embedding"]).abs() <= 0.5).all()
    box = torch.cat([d["tl_points"], d["br_points"]], 1)
    box = torch.stack([box[:, 0].clamp(0, 64), box[:, 1].clamp(0, 48), box[:, 2].clamp(0, 64), box[:, 3].clamp(0, 48)],
                      1)
    assert torch.allclose(box, r.boxes, atol=1e-4)
    pairs, boxes = expl[1].panels
    assert len(pairs.segments) == n and len(pairs.points) == 2 * n and len(boxes.boxes) == n
    seg = pairs.segments[0]
    assert seg.start == pytest.approx(tuple(d["tl_points"][0].tolist()), abs=1e-4)
    assert seg.end == pytest.approx(tuple(d["br_points"][0].tolist()), abs=1e-4)
    assert seg.label == f"1: e {float(d['tl_embedding'][0]):.2f} / {float(d['br_embedding'][0]):.2f}"
    corners = expl[0].panels
    assert len(corners) == 2 and all(len(p.points) == n for p in corners)
    assert corners[0].overlay.values.shape == (16, 16)  # the stride-4 map of the padded 64 x 64 input
    picture = render_explanation(expl[1])
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 0
    assert model.explain(image, what="pairs", conf=0.99)[0].panels[0].segments == ()


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    from sceneparse.errors import CheckpointError

    torch.manual_seed(0)
    a = zoo.build("cornernet_small", num_classes=4, min_size=64, max_size=64).eval()
    path = tmp_path / "w.pt"
    torch.save(a.state_dict(), path)
    b = zoo.build("cornernet_small", num_classes=4, min_size=64, max_size=64, weights=path).eval()
    image = _scene()[0][0]
    ra, rb = a.predict([image], conf=0.0)[0], b.predict([image], conf=0.0)[0]
    assert len(ra) > 0 and torch.equal(ra.scores, rb.scores) and torch.equal(ra.boxes, rb.boxes)
    with pytest.raises(CheckpointError, match=r"top_left\.0\.heatmap\.2\.weight \(checkpoint \(4, 32, 1, 1\) vs model "
                                              r"\(3, 32, 1, 1\)\)"):
        zoo.build("cornernet_small", num_classes=3, weights=path)
    torch.save({k: v for k, v in a.state_dict().items() if not k.startswith("bottom_right.1.")}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: bottom_right\.1\.embedding"):
        zoo.build("cornernet_small", num_classes=4, weights=path)
