"""ONNX / TorchScript export: the exported graphs reproduce the eager models.

Each family is exported from a checkpoint of a randomly initialised model (detectors with a score
threshold at which they keep some detections, a number that changes from input to input), then run
with onnxruntime on *new* inputs -- two sizes of different aspect ratio (and a batch of 2 for
segmentors), not the ones the exporter verified on -- and compared with the public eager API
(``model.predict``) and the eager network:

* detectors: the same number of detections, the same labels, boxes within 1e-3 px, scores within
  1e-5, pasted masks thresholded as ``predict`` does differing on < 0.1 % of pixels (a pixel whose
  probability is within ~1e-6 of the threshold may flip), keypoints within 1e-3 px;
* segmentors: logits within 1e-4 of the eager network; labels equal to ``predict``'s except where the
  two best eager logits are within 1e-4 of each other.
"""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sceneparse.engine.checkpoint import model_from_checkpoint, save_checkpoint
from sceneparse.engine.export import export_onnx, export_torchscript, read_onnx_metadata
from sceneparse.errors import ExportError
from sceneparse.models import zoo
from sceneparse.models.base import ModelInfo, SceneModel, SizePolicy
from sceneparse.models.preprocess import Preprocessor
from sceneparse.models.segmentation.base import SemanticSegmentor

ort = pytest.importorskip("onnxruntime")

#: small, CPU-friendly settings (rebuilt from the checkpoint's config.model.kwargs)
DET_KWARGS = {"min_size": 64, "max_size": 96, "box_score_thresh": 0.0, "box_detections_per_img": 30}
#: name -> (classes, score threshold): thresholds at which these randomly initialised models (seed 0)
#: keep some but not all detections, so that the count differs from image to image and from the
#: traced example (a graph specialised to the example's count would fail)
DETECTORS = {"fasterrcnn_resnet18_fpn": (3, 0.3), "maskrcnn_resnet18_fpn": (3, 0.3),
             "keypointrcnn_resnet18_fpn": (1, 0.5)}
#: ModelInfo.task of each (what the exported metadata says the graph is)
DETECTOR_TASKS = {"fasterrcnn_resnet18_fpn": "detect", "maskrcnn_resnet18_fpn": "instance",
                  "keypointrcnn_resnet18_fpn": "pose"}
SEGMENTORS = ["unet", "fcn8s_resnet18", "deeplabv3_resnet18", "lraspp_mobilenet_v3_large"]
SEG_KWARGS = {"unet": {"base_channels": 8, "depth": 3}}
SIZES = [(64, 80), (90, 50)]  # the second: other aspect ratio, sides not multiples of 32 (padding in the graph)


def _categories(n):
    return [{"id": i + 1, "name": f"thing{i}"} for i in range(n)]


def _checkpoint(tmp_path, name, num_classes, kwargs, task):
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=num_classes, **kwargs)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, model, config={"model": {"name": name, "kwargs": kwargs}},
                    categories=_categories(num_classes), task=task)
    return path


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _images(sizes, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


def _pair_up(ref_boxes, ref_labels, boxes, labels):
    """Index into the exported detections for each eager one: same label, nearest box (L-inf)."""
    out = []
    for b, lab in zip(ref_boxes, ref_labels):
        d = np.abs(boxes - b).max(axis=1)
        d[labels != lab] = np.inf
        out.append(int(d.argmin()))
    assert len(set(out)) == len(out), "two eager detections matched the same exported one"
    return np.array(out, dtype=np.int64)


# ---- detectors -----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_onnx_matches_predict(tmp_path, name):
    num_classes, thresh = DETECTORS[name]
    kwargs = {"min_size": 64, "max_size": 96, "box_score_thresh": thresh}
    ckpt = _checkpoint(tmp_path, name, num_classes, kwargs, "detection")
    out = tmp_path / "det.onnx"
    report = export_onnx(ckpt, out, imgsz=(64, 80))
    assert report.verified and len(report.cases) == 2 and all(c.ok for c in report.cases)
    assert all(c.detections[0] > 0 for c in report.cases), "verification compared no detections"
    counts = [c.detections[0] for c in report.cases]
    assert report.checker == "passed" and out.is_file() and report.file_bytes == out.stat().st_size

    loaded = model_from_checkpoint(ckpt)
    model = loaded.model
    # the exporter's own second size changes the network input after the in-graph resize + pad
    pre = model.preprocessor
    padded = [tuple(-(-v // 32) * 32 for v in pre.resized_size(tuple(c.input_shape[1:]))) for c in report.cases]
    assert padded[0][0] != padded[1][0] and padded[0][1] != padded[1][1]
    session = _session(out)
    names = [o.name for o in session.get_outputs()]
    assert names[:3] == ["boxes", "scores", "labels"]
    assert [i.name for i in session.get_inputs()] == ["image"]
    for image in _images(SIZES):
        inst = model.predict([image])[0]
        got = dict(zip(names, session.run(None, {"image": image.numpy()})))
        n = len(inst)
        counts.append(n)
        assert n > 0 and got["boxes"].shape == (n, 4) and got["labels"].dtype == np.int64
        idx = _pair_up(inst.boxes.numpy(), inst.labels.numpy(), got["boxes"], got["labels"])
        np.testing.assert_array_equal(got["labels"][idx], inst.labels.numpy())
        np.testing.assert_allclose(got["boxes"][idx], inst.boxes.numpy(), rtol=0, atol=1e-3)
        np.testing.assert_allclose(got["scores"][idx], inst.scores.numpy(), rtol=0, atol=1e-5)
        assert got["boxes"][:, 0::2].max() <= image.shape[2] and got["boxes"][:, 1::2].max() <= image.shape[1]
        if model.roi_mask is not None:
            masks = got["masks"][idx]
            assert masks.shape == (n, *image.shape[1:]) and masks.dtype == np.float32
            flips = (masks > model.mask_threshold) != inst.masks.numpy()
            assert flips.mean() < 1e-3
            assert inst.masks.any()  # the comparison is not vacuous
        if model.roi_keypoint is not None:
            np.testing.assert_allclose(got["keypoints"][idx], inst.keypoints.numpy(), rtol=0, atol=1e-3)
            np.testing.assert_allclose(got["keypoint_scores"][idx], inst.keypoint_scores.numpy(), rtol=0, atol=1e-3)
    assert len(set(counts)) > 1, f"every image gave {counts[0]} detections: the dynamic count was not exercised"

    meta = read_onnx_metadata(out)
    assert meta["task"] == DETECTOR_TASKS[name] == report.task and meta["model"] == name
    assert meta["result"] == "instances"
    info = meta["model_info"]  # the deployed graph says what it is
    assert info["task"] == DETECTOR_TASKS[name] and info["num_classes"] == num_classes
    assert info["class_names"] == meta["class_names"] and info["export_outputs"] == names
    assert meta["class_names"] == [c["name"] for c in _categories(num_classes)]
    assert meta["categories"][0]["id"] == 1
    assert meta["inputs"][0]["name"] == "image" and meta["inputs"][0]["shape"] == [3, "height", "width"]
    assert [o["name"] for o in meta["outputs"]] == names
    assert meta["preprocess"]["min_size"] == 64 and meta["preprocess"]["resize_in_graph"] is True
    if model.roi_mask is not None:
        assert float(meta["mask_threshold"]) == model.mask_threshold


@pytest.mark.parametrize("mask_aligned", [False, True])
def test_detector_graph_eager_equals_predict(mask_aligned):
    """The graph module run eagerly is ``predict`` with mask probabilities instead of masks (so the
    exported-vs-graph verification inside export_onnx is a comparison with predict), in either mask
    convention (torchvision's, or half-pixel aligned)."""
    model = zoo.build("maskrcnn_resnet18_fpn", num_classes=2, mask_aligned=mask_aligned, **DET_KWARGS).eval()
    assert model.mask_aligned is mask_aligned
    image = _images([(70, 60)])[0]
    with torch.no_grad():
        boxes, scores, labels, masks = model.export_graph().eval()(image)
    inst = model.predict([image])[0]
    assert len(inst) > 0
    torch.testing.assert_close(boxes, inst.boxes, rtol=0, atol=0)
    torch.testing.assert_close(scores, inst.scores, rtol=0, atol=0)
    assert torch.equal(labels, inst.labels)
    assert torch.equal(masks > model.mask_threshold, inst.masks)


@pytest.mark.slow
def test_detector_exports_with_no_detection(tmp_path):
    """An image with no detection gives empty outputs (the graph's NMS and mask pasting take 0 boxes)."""
    model = zoo.build("maskrcnn_resnet18_fpn", num_classes=2, **{**DET_KWARGS, "box_score_thresh": 0.99})
    report = export_onnx(model, tmp_path / "none.onnx", imgsz=64)
    assert report.verified and all(c.detections == (0, 0) for c in report.cases)
    assert any("no detections" in note for note in report.notes)
    got = _session(tmp_path / "none.onnx").run(None, {"image": _images([(50, 70)])[0].numpy()})
    assert [a.shape for a in got] == [(0, 4), (0,), (0,), (0, 50, 70)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_roi_levels_stay_dynamic_when_a_level_had_one_roi_in_the_trace(tmp_path):
    """Regression: ``out[idx] = pooled`` was exported specialised to the example's count when an FPN
    level received exactly one RoI, and failed on any other count (seen on Mask R-CNN at 320 px)."""
    from sceneparse.ops.roi import multiscale_roi_align

    feats = [torch.rand(1, 4, 32, 32), torch.rand(1, 4, 16, 16), torch.rand(1, 4, 8, 8)]

    class Pool(nn.Module):
        def forward(self, boxes, a, b, c):
            return multiscale_roi_align([a, b, c], [boxes], [(128, 128)], 7, 2, canonical_scale=64)

    small, mid, big = [[0.0, 0.0, 20.0, 20.0]], [[10.0, 10.0, 80.0, 80.0]], [[0.0, 0.0, 127.0, 127.0]]
    traced_boxes = torch.tensor(small + mid + big * 2)  # one RoI on each of the two finer levels
    path = tmp_path / "pool.onnx"
    torch.onnx.export(Pool(), (traced_boxes, *feats), str(path), dynamo=False, opset_version=17,
                      input_names=["boxes", "a", "b", "c"], dynamic_axes={"boxes": {0: "n"}})
    boxes = torch.tensor(small * 3 + mid * 2 + big)
    got = _session(path).run(None, {"boxes": boxes.numpy(), **{k: f.numpy() for k, f in zip("abc", feats)}})[0]
    np.testing.assert_allclose(got, Pool()(boxes, *feats).numpy(), rtol=0, atol=1e-6)


# ---- segmentors ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs", [(n, SEG_KWARGS.get(n, {})) for n in SEGMENTORS] + [
    ("unet", {**SEG_KWARGS["unet"], "class_weights": [1.0, 2.0, 0.5, 4.0], "logit_adjustment": 1.0})],
    ids=SEGMENTORS + ["unet-logit-adjustment"])
def test_segmentor_onnx_matches_eager(tmp_path, name, kwargs):
    ckpt = _checkpoint(tmp_path, name, 4, kwargs, "semantic")
    loaded = model_from_checkpoint(ckpt)
    model = loaded.model
    model.preprocessor = Preprocessor(min_size=64, max_size=128, size_divisible=8)  # predict resizes to 64
    out = tmp_path / "seg.onnx"
    report = export_onnx(loaded, out, imgsz=(64, 80))
    assert report.verified and [c.input_shape[0] for c in report.cases] == [1, 2]
    assert report.cases[1].input_shape[2] % 8 != 0  # the second verification size needs padding

    session = _session(out)
    assert [i.name for i in session.get_inputs()] == ["images"]
    first, second = _images([SIZES[0]]), _images([SIZES[1]] * 2, seed=3)
    for batch in (torch.stack(first), torch.stack(second)):  # batch 1 at 64x80, batch 2 at 90x50
        logits, labels = session.run(["logits", "labels"], {"images": batch.numpy()})
        assert logits.shape == (batch.shape[0], 4, *batch.shape[2:]) and labels.dtype == np.int64
        pre = model.preprocessor
        with torch.no_grad():
            ref = model.inference_logits(pre.pad(pre.normalize(batch)))[:, :, : batch.shape[2], : batch.shape[3]]
            if model.logit_bias is not None:  # the graph scores what predict scores: segment - tau log w
                raw = model.segment(pre.pad(pre.normalize(batch)))[0][:, :, : batch.shape[2], : batch.shape[3]]
                np.testing.assert_allclose(ref - raw, -torch.tensor(kwargs["class_weights"]).log()[None, :, None, None]
                                           .expand_as(ref), rtol=0, atol=1e-5)
        assert float(ref.std()) > 0  # not a constant map
        np.testing.assert_allclose(logits, ref.numpy(), rtol=0, atol=1e-4)
    # labels == predict's where predict does not resize (short side == min_size)
    labels = session.run(["labels"], {"images": first[0][None].numpy()})[0][0]
    pred = model.predict(first)[0].labels.numpy()
    with torch.no_grad():
        top2 = model.inference_logits(pre.normalize(first[0][None]))[0].topk(2, dim=0).values
    differ = labels != pred
    assert not differ[(top2[0] - top2[1]).numpy() >= 1e-4].any()

    meta = read_onnx_metadata(out)
    assert meta["task"] == "semantic" and meta["model"] == name and meta["result"] == "semantic"
    assert meta["model_info"]["task"] == "semantic" and meta["model_info"]["export_outputs"] == ["logits", "labels"]
    assert meta["class_names"] == [f"thing{i}" for i in range(4)]
    assert meta["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert meta["preprocess"]["resize_in_graph"] is False and meta["preprocess"]["size_divisible"] == 8


@pytest.mark.slow
def test_static_export_fixes_the_input_size(tmp_path):
    model = zoo.build("unet", num_classes=2, base_channels=8, depth=2)
    report = export_onnx(model, tmp_path / "static.onnx", imgsz=(32, 48), dynamic=False)
    assert report.verified and [c.input_shape for c in report.cases] == [[1, 3, 32, 48]]
    session = _session(tmp_path / "static.onnx")
    assert session.get_inputs()[0].shape == [1, 3, 32, 48]
    with pytest.raises(Exception):
        session.run(None, {"images": np.zeros((1, 3, 40, 48), np.float32)})


# ---- torchscript ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_matches_predict(tmp_path):
    ckpt = _checkpoint(tmp_path, "keypointrcnn_resnet18_fpn", 1, {"min_size": 64, "max_size": 96}, "detection")
    out = tmp_path / "kp.torchscript"
    report = export_torchscript(ckpt, out, imgsz=64)
    assert report.verified and report.format == "torchscript" and all(c.detections[0] > 0 for c in report.cases)
    extra = {"sceneparse.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["sceneparse.json"])
    assert meta["task"] == "pose" and meta["num_keypoints"] == "17"
    assert json.loads(meta["model_info"])["keypoints"]["names"][0] == "nose"
    assert json.loads(meta["class_names"]) == ["thing0"]
    model = model_from_checkpoint(ckpt).model
    image = _images([SIZES[1]])[0]
    boxes, scores, labels, keypoints, keypoint_scores = module(image)
    inst = model.predict([image])[0]
    assert len(inst) > 0 and boxes.shape == inst.boxes.shape
    torch.testing.assert_close(boxes, inst.boxes, rtol=0, atol=1e-4)
    torch.testing.assert_close(keypoints, inst.keypoints, rtol=0, atol=1e-4)
    assert torch.equal(labels, inst.labels)


# ---- what cannot be exported ------------------------------------------------------------------------

class _PyramidPooling(SemanticSegmentor):
    """A PSPNet-style head: adaptive average pooling to 3x3 bins, which the ONNX exporter cannot
    express for an input size known only at run time."""

    def __init__(self):
        super().__init__(2)
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def segment(self, x, with_aux=False):
        y = self.conv(x)
        pooled = F.adaptive_avg_pool2d(y, 3)
        return y + F.interpolate(pooled, size=y.shape[-2:], mode="bilinear", align_corners=False), None


class _PythonSize(SemanticSegmentor):
    """Computes an output size in Python (``int(shape)``): the trace freezes it to the example's."""

    def __init__(self):
        super().__init__(2)
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def segment(self, x, with_aux=False):
        y = self.conv(x)
        h, w = int(y.shape[-2]), int(y.shape[-1])  # frozen by the trace
        return F.interpolate(y[..., : h // 2, : w // 2], size=(h, w), mode="nearest"), None


def test_unsupported_operator_raises_export_error_naming_it(tmp_path):
    out = tmp_path / "psp.onnx"
    out.write_bytes(b"previous export")
    with pytest.raises(ExportError) as e:
        export_onnx(_PyramidPooling(), out, imgsz=(40, 56))
    assert "adaptive_avg_pool2d" in str(e.value) and e.value.construct == "operator adaptive_avg_pool2d"
    assert out.read_bytes() == b"previous export"  # nothing (half-)written
    assert [p.name for p in tmp_path.iterdir()] == ["psp.onnx"]


def test_size_frozen_by_the_trace_fails_verification_naming_the_line(tmp_path):
    out = tmp_path / "frozen.onnx"
    with pytest.raises(ExportError) as e:
        export_onnx(_PythonSize(), out, imgsz=(40, 56))
    msg = str(e.value)
    assert "does not reproduce the eager model" in msg and "logits: shape" in msg
    assert "test_export.py" in e.value.construct and "Python integer" in e.value.construct
    assert not out.exists()


class _NoGraph(SceneModel):
    """A sceneparse model whose family has no export graph (SceneModel.export_graph not overridden)."""

    def __init__(self):
        super().__init__()
        self.num_classes = 2
        self.conv = nn.Conv2d(3, 2, 1)

    @property
    def info(self):
        return ModelInfo("detect", 2, iou_types=("bbox",), size=SizePolicy((32,), 64))


def test_export_error_for_a_scene_model_without_an_export_graph(tmp_path):
    for export in (export_onnx, export_torchscript):
        with pytest.raises(ExportError, match=r"no export graph for .*test_export\._NoGraph \(task detect\)") as e:
            export(_NoGraph(), tmp_path / "x.out", name="tiny")
        assert e.value.model == "tiny" and str(e.value).startswith("tiny: ")
    assert not (tmp_path / "x.out").exists()


def test_export_error_for_models_without_a_graph_and_low_opsets(tmp_path):
    with pytest.raises(ExportError, match="no export graph for torch.nn.modules.conv.Conv2d"):
        export_onnx(nn.Conv2d(3, 3, 1), tmp_path / "x.onnx")
    model = zoo.build("maskrcnn_resnet18_fpn", num_classes=2, **DET_KWARGS)
    with pytest.raises(ExportError, match=r"opset 13 is not supported for MaskRCNN: use 16\.\.\d+ \(mask pasting"):
        export_onnx(model, tmp_path / "x.onnx", opset=13)
    with pytest.raises(ExportError, match="2 class names for a model with 3 classes"):
        export_onnx(zoo.build("unet", num_classes=3, base_channels=8, depth=2), tmp_path / "x.onnx",
                    class_names=["a", "b"])
    assert not (tmp_path / "x.onnx").exists()


def test_graph_modules_are_the_exported_wrappers():
    assert isinstance(zoo.build("unet", num_classes=2), SemanticSegmentor)
    seg = zoo.build("unet", num_classes=2, base_channels=8, depth=2).eval().export_graph()
    assert seg.batched and seg.output_names == ("logits", "labels")
    logits, labels = seg(torch.rand(1, 3, 20, 28))  # padding to 8 and cropping back in the graph
    assert logits.shape == (1, 2, 20, 28) and labels.shape == (1, 20, 28)


# ---- CLI -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_export_checkpoint(tmp_path, capsys):
    from sceneparse.cli import main

    ckpt = _checkpoint(tmp_path, "unet", 3, SEG_KWARGS["unet"], "semantic")
    out = tmp_path / "deploy" / "unet.onnx"
    rc = main(["export", "--model", str(ckpt), "--format", "onnx", "--imgsz", "48", "64", "--out", str(out),
               "--json", str(tmp_path / "report.json")])
    assert rc == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "onnx.checker: passed" in text and "verified on [2, 3" in text
    meta = read_onnx_metadata(out)
    assert meta["class_names"] == ["thing0", "thing1", "thing2"] and meta["model"] == "unet"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verified"] is True and report["cases"][0]["ok"] is True

    # default output path: next to the checkpoint
    assert main(["export", "--model", str(ckpt), "--format", "torchscript", "--imgsz", "32", "--no-verify"]) == 0
    assert (tmp_path / "unet.torchscript").is_file()


@pytest.mark.slow
def test_cli_export_zoo_name_and_errors(tmp_path, capsys):
    from sceneparse.cli import main

    out = tmp_path / "u.onnx"
    assert main(["export", "--model", "unet", "--num-classes", "2", "--imgsz", "32", "--out", str(out)]) == 0
    assert read_onnx_metadata(out)["class_names"] == ["class_0", "class_1"]
    assert "randomly initialised" in capsys.readouterr().err

    assert main(["export", "--model", "no_such_model", "--out", str(tmp_path / "n.onnx")]) == 1
    assert "neither a file nor a zoo model" in capsys.readouterr().err
    assert main(["export", "--model", "missing/best.pt"]) == 1
    assert "checkpoint file not found" in capsys.readouterr().err
    assert main(["export", "--model", "fasterrcnn_resnet18_fpn", "--out", str(tmp_path / "f.onnx")]) == 1
    assert "needs --num-classes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["export", "--model", "unet", "--format", "tflite"])
    assert e.value.code == 2
    assert "choose from 'onnx', 'torchscript'" in capsys.readouterr().err
