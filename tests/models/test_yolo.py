"""YOLOv8 / YOLO11: architecture, ultralytics checkpoint loading and parity with ultralytics
(test-only reference: models built from its YAMLs with random weights, saved as it saves them)."""
from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from sceneparse.errors import CheckpointError
from sceneparse.models import zoo
from sceneparse.models.yolo.detector import YOLODetector

from test_yolo_helpers import save_like_ultralytics, scene, to_tensor, ultralytics_model

pytest.importorskip("ultralytics")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/models/conftest.py

#: gradient-carrying parameters of ultralytics' YAML summaries (nc=80; their totals add the 16 fixed DFL bins)
PARAMS = {"yolov8n": 3157184, "yolov8s": 11166544, "yolov8m": 25902624, "yolov8l": 43691504, "yolov8x": 68229632,
          "yolo11n": 2624064, "yolo11s": 9458736, "yolo11m": 20114672, "yolo11l": 25372144, "yolo11x": 56966160}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_scale_has_ultralytics_parameter_count(name):
    with torch.device("meta"):
        model = zoo.build(name, num_classes=80)
    assert isinstance(model, YOLODetector)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.fixture(scope="module", params=["yolov8", "yolo11"])
def reference(request, tmp_path_factory):
    family = request.param
    model = ultralytics_model(f"{family}n.yaml")
    path = tmp_path_factory.mktemp(family) / f"{family}n.pt"
    names = {i: f"class_{i}" for i in range(80)}
    save_like_ultralytics(model, path, names=names)
    ref = model.half().float().eval()  # the weights the file holds
    return family, ref, str(path)


def test_raw_head_outputs_match(reference):
    family, ref, path = reference
    model = zoo.build(f"{family}n", num_classes=80, weights=path).eval()
    assert model.class_names[:2] == ("class_0", "class_1")
    x = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, preds = ref(x)
        raw = model(type("Batch", (), {"tensor": x})())
    box_diff = (preds["boxes"] - raw.box_logits).abs().max().item()
    cls_diff = (preds["scores"] - raw.cls_logits).abs().max().item()
    print(f"{family}n raw head max abs diff: box {box_diff:.3g}, cls {cls_diff:.3g}")
    assert box_diff < 1e-4 and cls_diff < 1e-4


def _match(ref_dets: torch.Tensor, inst) -> tuple[float, float]:
    """Pair every reference detection with ours (same class, nearest box); return the worst box and score gaps.

    ultralytics' predictor fuses Conv + BN, so its scores differ from ours by ~1e-7: detections whose
    scores tie that closely may swap places, and at the ``max_det`` cut a near-tie may keep another one
    (those within 1e-5 of the last kept score are not required to pair)."""
    assert len(inst) == ref_dets.shape[0]
    gap = (ref_dets[:, None, :4] - inst.boxes[None]).abs().amax(-1)
    gap[ref_dets[:, None, 5].long() != inst.labels[None]] = float("inf")
    firm = ref_dets[:, 4] > ref_dets[:, 4].min() + 1e-5
    gap = gap[firm]
    best = gap.argmin(1)
    assert best.unique().numel() == int(firm.sum()) >= len(inst) - 10  # one-to-one
    return gap.min(1).values.max().item(), (ref_dets[firm, 4] - inst.scores[best]).abs().max().item()


@pytest.mark.parametrize("size", [(480, 640), (750, 1000)])
def test_predict_matches_ultralytics_predict(reference, size):
    from ultralytics import YOLO

    family, _, path = reference
    model = zoo.build(f"{family}n", num_classes=80, weights=path)
    bgr = scene(*size, seed=size[0])
    yolo = YOLO(path, task="detect")
    for conf in (0.05, 0.01):
        ref = yolo.predict(bgr, conf=conf, iou=0.7, imgsz=640, verbose=False)[0].boxes.data
        ours = model.predict([to_tensor(bgr)], conf=conf, iou=0.7)[0]
        assert ours.image_size == size and ref.shape[0] >= 20
        box_gap, score_gap = _match(ref, ours)
        print(f"{family}n {size} conf {conf}: {ref.shape[0]} detections, box {box_gap:.3g} px, score {score_gap:.3g}")
        assert box_gap < 0.5 and score_gap < 1e-4
    # the network input is ultralytics' letterbox, bit for bit (OpenCV's 8-bit bilinear resize, gray 114)
    batch, _ = model.eval().prepare([to_tensor(bgr)])
    assert torch.equal(batch.tensor, yolo.predictor.preprocess([bgr]))


def test_defaults_are_ultralytics():
    info = zoo.build("yolo11n").info
    assert (info.task, info.conf, info.iou, info.max_det, info.size.long_side) == ("detect", 0.25, 0.7, 300, 640)
    assert info.size.mean is None and info.iou_types == ("bbox",)


@pytest.mark.parametrize("src, dst", [((750, 1000), (480, 640)), ((300, 500), (384, 640)), ((333, 517), (412, 640)),
                                      ((100, 37), (640, 237)), ((1080, 1920), (360, 640))])
def test_resize_is_opencv_linear_bit_for_bit(src, dst):
    cv2 = pytest.importorskip("cv2")
    from sceneparse.models.yolo.letterbox import resize_linear_u8

    im = np.random.default_rng(0).integers(0, 256, (*src, 3), dtype=np.uint8)
    ref = cv2.resize(im, dst[::-1], interpolation=cv2.INTER_LINEAR)
    ours = resize_linear_u8(torch.from_numpy(im).permute(2, 0, 1), dst).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, ref)


def test_training_checkpoint_loads_from_ema_and_plain_state_dicts_load(reference, tmp_path):
    family, ref, _ = reference
    path = tmp_path / "last.pt"
    save_like_ultralytics(ref, path, as_ema=True)
    a = zoo.build(f"{family}n", weights=str(path))
    b = zoo.build(f"{family}n", weights=ref.state_dict())
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_wrong_size_says_which_keys_and_which_model(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path / "yolov8s.pt"
    save_like_ultralytics(DetectionModel("yolov8s.yaml", nc=80, verbose=False), path)
    with pytest.raises(CheckpointError) as err:
        zoo.build("yolov8n", weights=str(path))
    text = str(err.value)
    assert "looks like yolov8s (80 classes)" in text and "backbone.layers.0.conv.weight" in text
    assert "shape mismatches" in text
    # a YOLO11 state dict (no yaml to read) into yolov8n: the guess comes from the shapes
    state = DetectionModel("yolo11s.yaml", nc=3, verbose=False).state_dict()
    with pytest.raises(CheckpointError, match=r"looks like yolo11s \(3 classes\)"):
        zoo.build("yolov8n", weights=state)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sceneparse_yolo_pwned",))


def test_pickled_code_is_refused_naming_the_global(tmp_path):
    marker = "/tmp/sceneparse_yolo_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"model": _Evil(), "note": "ultralytics"}, path)
    with zipfile.ZipFile(path) as z:  # the loader only looks at files that name ultralytics
        assert b"ultralytics" in z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    with pytest.raises(CheckpointError, match=r"(posix|os)\.system"):
        zoo.build("yolov8n", weights=str(path))
    assert not os.path.exists(marker)

    from sceneparse.models.yolo.restricted_pickle import load_module_checkpoint

    path2 = tmp_path / "evil2.pt"
    torch.save({"x": pickle.loads(pickle.dumps(eval))}, path2)  # builtins.eval as a value
    with pytest.raises(CheckpointError, match=r"builtins\.eval"):
        load_module_checkpoint(path2)


@pytest.mark.slow
def test_onnx_graph_gives_predict_results(tmp_path):
    """The exported graph (static, traced at 480x640) run by onnxruntime pairs one-to-one with
    ``model.predict`` (near-tied scores may swap places: onnxruntime's arithmetic differs by ~1e-5)."""
    import warnings

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = zoo.build("yolo11n", num_classes=80, weights=ultralytics_state("yolo11n.yaml"), conf=0.05).eval()
    image = to_tensor(scene(480, 640, seed=480))
    path = str(tmp_path / "yolo11n.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.export_graph(), (image,), path, opset_version=17, input_names=["image"],
                          output_names=list(model.info.export_outputs), dynamo=False)
    boxes, scores, labels = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"image": image.numpy()})
    ours = model.predict([image])[0]
    assert len(ours) >= 20
    ref = torch.cat((torch.from_numpy(boxes), torch.from_numpy(scores)[:, None],
                     torch.from_numpy(labels)[:, None].float()), 1)
    box_gap, score_gap = _match(ref, ours)
    print(f"onnx vs eager: {len(ours)} detections, box {box_gap:.3g} px, score {score_gap:.3g}")
    assert box_gap < 0.5 and score_gap < 1e-3


def ultralytics_state(yaml: str) -> dict:
    """The state dict of :func:`ultralytics_model` (its ``model.<i>.`` keys, fp16-rounded as a file holds them)."""
    return {k: v.half().float() if v.is_floating_point() else v for k, v in ultralytics_model(yaml).state_dict().items()}
