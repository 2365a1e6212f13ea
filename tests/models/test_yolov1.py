"""YOLO v1: grid target encoding and the sum-squared loss on hand-computed 2 x 2 and 3 x 3 grids, the
responsible predictor (highest IoU; smallest distance when all IoUs are 0), decoding of hand-made
outputs (class-specific confidence, class-wise NMS), empty targets, a few training steps, and the
command line (train + predict + export) on a tiny synthetic dataset."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sceneparse.cli import main
from sceneparse.models import zoo
from sceneparse.models.yolov1 import YOLOv1Raw, decode_grid, encode_grid, yolov1_loss
from sceneparse.structures.batch import ImageBatch
from sceneparse.structures.instances import Instances
from sceneparse.structures.target import Target

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py


def _cell(values):
    return torch.tensor(values, dtype=torch.float64)


def test_encode_one_object_on_a_2x2_grid():
    # image 100 x 100; box centre (30, 50): x / W * S = 0.6 -> column 0, y / H * S = 1.0 -> row 1 (a centre
    # on a cell border belongs to the cell below / to the right)
    t = encode_grid([torch.tensor([[10.0, 20.0, 50.0, 80.0]])], [torch.tensor([2])], [(100, 100)], 2, 3)
    assert t.obj.tolist() == [[[False, False], [True, False]]]
    torch.testing.assert_close(t.box[0, 1, 0], torch.tensor([0.6, 0.0, math.sqrt(0.4), math.sqrt(0.6)]))
    torch.testing.assert_close(t.xyxy[0, 1, 0], torch.tensor([0.1, 0.2, 0.5, 0.8]))
    assert t.cls[0, 1, 0].tolist() == [0.0, 0.0, 1.0] and t.cls.sum() == 1 and t.index[0, 1, 0] == 0
    assert (t.box[0, 0] == 0).all() and (t.index[0].flatten()[[0, 1, 3]] == -1).all()


def test_encode_two_objects_non_square_and_shared_cell():
    # image h 100 x w 200, S = 3: A centre (40, 20) -> column floor(0.6) 0, row floor(0.6) 0;
    # B centre (170, 90) -> column floor(2.55) 2, row floor(2.7) 2
    boxes = torch.tensor([[20.0, 10.0, 60.0, 30.0], [150.0, 80.0, 190.0, 100.0]])
    t = encode_grid([boxes], [torch.tensor([1, 0])], [(100, 200)], 3, 2)
    assert [v.tolist() for v in torch.where(t.obj[0])] == [[0, 2], [0, 2]]
    torch.testing.assert_close(t.box[0, 0, 0], torch.tensor([0.6, 0.6, math.sqrt(0.2), math.sqrt(0.2)]))
    torch.testing.assert_close(t.box[0, 2, 2], torch.tensor([0.55, 0.7, math.sqrt(0.2), math.sqrt(0.2)]))
    assert t.cls[0, 0, 0].tolist() == [0.0, 1.0] and t.cls[0, 2, 2].tolist() == [1.0, 0.0]
    # two centres in one cell: the larger object is the cell's target, whatever the order of annotation
    small, large = [20.0, 10.0, 40.0, 30.0], [5.0, 5.0, 60.0, 30.0]  # centres (30, 20), (32.5, 17.5): cell (0, 0)
    for order in ([small, large], [large, small]):
        labels = torch.tensor([0, 1]) if order[0] is small else torch.tensor([1, 0])
        t = encode_grid([torch.tensor(order)], [labels], [(100, 200)], 3, 2)
        assert int(t.obj.sum()) == 1 and t.cls[0, 0, 0].tolist() == [0.0, 1.0]
        torch.testing.assert_close(t.box[0, 0, 0, 2:], torch.tensor([math.sqrt(55 / 200), math.sqrt(25 / 100)]))
    empty = encode_grid([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)], [(100, 200)], 3, 2)
    assert not empty.obj.any() and (empty.index == -1).all()


def test_loss_one_object_2x2_by_hand():
    """S = 2, B = 2, C = 2, image 100 x 100, one object [0, 0, 50, 50] of class 1: cell (0, 0), target
    (x, y, sqrt w, sqrt h) = (0.5, 0.5, sqrt 0.5, sqrt 0.5)."""
    t = encode_grid([torch.tensor([[0.0, 0.0, 50.0, 50.0]], dtype=torch.float64)], [torch.tensor([1])], [(100, 100)],
                    2, 2)  # float64 boxes: targets in float64
    pred = torch.zeros(1, 2, 2, 12, dtype=torch.float64)
    pred[..., 4] = pred[..., 9] = 0.2  # every predictor's confidence 0.2 ...
    pred[..., 10:] = 0.9  # class values of cells without an object do not count
    # cell (0, 0): predictor 0 centre (0.25, 0.25), size 0.36 -> box [0.07, 0.07, 0.43, 0.43] inside the
    # object: IoU 0.36^2 / 0.25 = 0.5184; predictor 1 centre (0, 0), size 0.25 -> box [-0.125, .., 0.125]:
    # intersection 0.125^2, union 0.0625 + 0.25 - 0.015625: IoU 0.0526 -> predictor 0 is responsible
    pred[0, 0, 0] = _cell([0.5, 0.5, 0.6, 0.6, 0.8, 0.0, 0.0, 0.5, 0.5, 0.3, 0.7, 0.4])
    losses = yolov1_loss(pred, t, 2)
    coord = 5 * ((0.5 - 0.5) ** 2 + (0.5 - 0.5) ** 2 + 2 * (0.6 - math.sqrt(0.5)) ** 2)
    obj = (0.8 - 0.5184) ** 2
    noobj = 0.5 * (0.3 ** 2 + 6 * 0.2 ** 2)
    cls = (0.7 - 0.0) ** 2 + (0.4 - 1.0) ** 2
    expected = {"coord": coord, "object": obj, "no_object": noobj, "class": cls}
    for k, v in expected.items():
        assert float(losses[k]) == pytest.approx(v, rel=1e-9, abs=1e-12), (k, float(losses[k]), v)
    # confidence target 1 instead of the IoU (rescore=False); other weights
    losses = yolov1_loss(pred, t, 2, rescore=False, lambda_coord=1.0, lambda_noobj=1.0)
    assert float(losses["object"]) == pytest.approx((0.8 - 1.0) ** 2)
    assert float(losses["coord"]) == pytest.approx(coord / 5) and float(losses["no_object"]) == pytest.approx(2 * noobj)


def test_loss_two_objects_3x3_by_hand_and_batch_average():
    """S = 3, B = 2, C = 2, image 90 x 90: A [0, 0, 30, 60] (class 0) -> cell (1, 0), target (0.5, 0,
    sqrt 1/3, sqrt 2/3); B [60, 60, 90, 90] (class 1) -> cell (2, 2), target (0.5, 0.5, sqrt 1/3, sqrt 1/3).
    A second image without objects: the loss is the sum over both images' grids / 2."""
    t = encode_grid([torch.tensor([[0.0, 0.0, 30.0, 60.0], [60.0, 60.0, 90.0, 90.0]], dtype=torch.float64),
                     torch.zeros(0, 4, dtype=torch.float64)],
                    [torch.tensor([0, 1]), torch.zeros(0, dtype=torch.int64)], [(90, 90), (90, 90)], 3, 2)
    pred = torch.zeros(2, 3, 3, 12, dtype=torch.float64)
    pred[0, ..., 4] = pred[0, ..., 9] = 0.1
    pred[1, ..., 4] = 0.3  # the empty image: only no-object terms
    # A's cell: predictor 0 centre (1/6, 1/3), w 0.25, h 0.64: inside A (w 1/3, h 2/3): IoU 0.16 / (2/9) = 0.72;
    # predictor 1 centre (0.3, 1.9/3), size 0.09: IoU 0.0274 -> predictor 0 responsible
    pred[0, 1, 0] = _cell([0.5, 0.0, 0.5, 0.8, 0.6, 0.9, 0.9, 0.3, 0.3, 0.4, 0.8, 0.1])
    # B's cell: both boxes miss B (IoU 0): predictor 0 centre (0.5, 0.5) size 0.01, distance^2 to B's
    # (5/6, 5/6, 1/3, 1/3) = 2 (1/3)^2 + 2 (0.3233)^2 = 0.431; predictor 1 centre (3.2/3, 3.2/3) size 0.04:
    # 2 (0.2333)^2 + 2 (0.2933)^2 = 0.281 -> predictor 1 responsible, confidence target its IoU 0
    pred[0, 2, 2] = _cell([-0.5, -0.5, 0.1, 0.1, 0.5, 1.2, 1.2, 0.2, 0.2, 0.7, 0.3, 0.6])
    losses = yolov1_loss(pred, t, 2)
    s3, s23 = math.sqrt(1 / 3), math.sqrt(2 / 3)
    coord = 5 * ((0.5 - s3) ** 2 + (0.8 - s23) ** 2 + 2 * (1.2 - 0.5) ** 2 + 2 * (0.2 - s3) ** 2)
    obj = (0.6 - 0.72) ** 2 + (0.7 - 0.0) ** 2
    noobj = 0.5 * (0.4 ** 2 + 0.5 ** 2 + 14 * 0.1 ** 2 + 9 * 0.3 ** 2)
    cls = (0.8 - 1.0) ** 2 + 0.1 ** 2 + 0.3 ** 2 + (0.6 - 1.0) ** 2
    expected = {"coord": coord / 2, "object": obj / 2, "no_object": noobj / 2, "class": cls / 2}
    for k, v in expected.items():
        assert float(losses[k]) == pytest.approx(v, rel=1e-9, abs=1e-12), (k, float(losses[k]), v)


def test_decode_hand_made_output_and_nms():
    """S = 2, B = 2, C = 2 on a 100 x 200 input. Cell (0, 1), predictor 0: centre ((1 + 0.5) / 2 * 200,
    0.5 / 2 * 100) = (150, 25), size (0.5^2 * 200, 0.4^2 * 100) = (50, 16), confidence 0.9, class values
    (0.8, 0.2): class-specific confidences 0.72 and 0.18. Predictor 1: nearly the same box, confidence
    0.5 (0.4, 0.1): suppressed by class-wise NMS. A third box elsewhere of class 1 only survives."""
    pred = torch.zeros(1, 2, 2, 12)
    pred[0, 0, 1] = torch.tensor([0.5, 0.5, 0.5, 0.4, 0.9, 0.52, 0.5, 0.5, 0.4, 0.5, 0.8, 0.2])
    pred[0, 1, 0] = torch.tensor([0.5, 0.5, 0.3, 0.3, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0, -0.1, 0.5])
    boxes, scores = decode_grid(pred, 2, (100, 200))
    assert boxes.shape == (1, 8, 4) and scores.shape == (1, 8, 2)
    torch.testing.assert_close(boxes[0, 2], torch.tensor([125.0, 17.0, 175.0, 33.0]))  # (row 0, col 1, box 0)
    torch.testing.assert_close(scores[0, 2], torch.tensor([0.72, 0.18]))
    torch.testing.assert_close(scores[0, 3], torch.tensor([0.4, 0.1]))
    torch.testing.assert_close(scores[0, 4], torch.tensor([0.0, 0.3]))  # -0.06 clamped to 0
    torch.testing.assert_close(boxes[0, 4], torch.tensor([50 - 9.0, 75 - 4.5, 50 + 9.0, 75 + 4.5]))

    model = zoo.build("yolov1_resnet18", num_classes=2, grid=2, size=64)
    raw = YOLOv1Raw([(100, 200)], pred)
    det = model.detect(raw, model.settings(conf=0.05, iou=0.5))[0]
    got = sorted(zip(det.scores.tolist(), det.labels.tolist()), reverse=True)
    assert [(round(s, 6), lab) for s, lab in got] == [(0.72, 0), (0.3, 1), (0.18, 1)]
    # in original pixels: an image of 50 x 400 resized to the 100 x 200 input
    batch = ImageBatch(torch.zeros(1, 3, 100, 200), [(100, 200)], [(50, 400)], [(2.0, 0.5)])
    inst = model.postprocess(raw, batch, model.settings(conf=0.5))[0]
    assert inst.image_size == (50, 400) and inst.labels.tolist() == [0]
    torch.testing.assert_close(inst.boxes[0], torch.tensor([250.0, 8.5, 350.0, 16.5]))


def _scene(num_classes: int = 3):
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i, (h, w, n) in enumerate([(100, 126, 3), (112, 86, 2)]):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.45, h * 0.45]) + 10
        images.append(torch.rand(3, h, w, generator=g))
        targets.append(Target(i, Instances((h, w), boxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, num_classes, (n,), generator=g))))
    return images, targets


@pytest.mark.parametrize("head", ["fc", pytest.param("conv", marks=pytest.mark.slow)])
def test_empty_targets_finite_and_a_few_steps_lower_the_loss(head):
    torch.manual_seed(0)
    model = zoo.build("yolov1_resnet18", num_classes=3, size=64, head=head, head_channels=64, hidden=128).train()
    images, targets = _scene()
    empty = [Target(t.image_id, Instances(t.instances.image_size, boxes=torch.zeros(0, 4),
                                          labels=torch.zeros(0, dtype=torch.int64))) for t in targets]
    losses = model.training_losses(images, empty)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["no_object"] > 0
    assert losses["coord"] == losses["object"] == losses["class"] == 0
    sum(losses.values()).backward()
    model.zero_grad()
    one = [t.select(torch.tensor([0])) for t in targets]
    assert all(v > 0 for k, v in model.training_losses(images, one).items() if k != "object")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(6):
        losses = model.training_losses(images, targets)
        total = sum(losses.values())
        history.append(float(total.detach()))
        opt.zero_grad()
        total.backward()
        opt.step()
    assert history[-1] < 0.7 * history[0], history
    out = model.predict(images, conf=0.0)
    assert [o.image_size for o in out] == [(100, 126), (112, 86)] and all(len(o) > 0 for o in out)


def test_pool_to_grid_is_adaptive_average_pooling():
    import torch.nn.functional as F

    from sceneparse.models.yolov1.yolov1 import pool_to_grid

    g = torch.Generator().manual_seed(0)
    for h, w, s in [(14, 14, 7), (2, 2, 7), (5, 9, 3), (13, 4, 7), (7, 7, 7)]:
        x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
        torch.testing.assert_close(pool_to_grid(x, s), F.adaptive_avg_pool2d(x, s), atol=1e-12, rtol=0)


def test_model_info_and_defaults():
    model = zoo.build("yolov1_resnet18")
    info = model.info
    assert info.num_classes == 20 and info.size.fixed_size == (448, 448) and info.extra["grid"] == 7
    assert (info.conf, info.iou, info.max_det) == (0.05, 0.5, 100) and info.export_outputs == ("boxes", "scores", "labels")
    with torch.no_grad():
        batch, _ = model.eval().prepare([torch.rand(3, 120, 90)])
        assert model(batch).pred.shape == (1, 7, 7, 30)  # the paper's 7 x 7 x 30
    assert (model.lambda_coord, model.lambda_noobj, model.rescore) == (5.0, 0.5, True)


@pytest.mark.slow  # synth + train + predict + ONNX export and verification (~35 s here)
def test_command_line_train_predict_export(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "synth", "--out", str(data), "--images", "4", "--size", "64", "--val-fraction", "0.5",
                 "--workers", "1", "--no-progress"]) == 0
    assert main(["train", "--model", "yolov1_resnet18", "--data", str(data), "--epochs", "1", "--batch", "2",
                 "--out", str(run), "--quiet", "--workers", "0", "train.threads=1", "model.kwargs.size=64",
                 "model.kwargs.head_channels=32", "model.kwargs.hidden=64"]) == 0
    assert "trained 1 epoch(s), 1 iterations" in capsys.readouterr().out
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(run / "last.pt"), "--source", str(data / "images" / "val"),
                 "--out", str(pred), "--quiet", "--no-save-images", "--conf", "0.0"]) == 0
    dets = json.loads((pred / "predictions.json").read_text())
    assert dets and all(d["bbox"][2] >= 0 for d in dets)
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--model", str(run / "last.pt"), "--imgsz", "64", "--out", str(onnx)]) == 0
    printed = capsys.readouterr().out
    assert onnx.is_file() and "[ok]" in printed
