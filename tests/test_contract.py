"""The model-family contract (issue 22): ModelInfo, settings as arguments, checkpoints that store the
info and old checkpoints that still load, and the engine's side of the tasks whose families are still
to come (pose: OKS; panoptic: PQ; promptable: box-prompted masks), exercised with stand-in models."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.data.datasets import SceneDataset, load_image
from sceneparse.data.layout import load_split
from sceneparse.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from sceneparse.engine.evaluator import evaluate_model
from sceneparse.engine.predictor import Predictor
from sceneparse.errors import CheckpointError, ConfigError, ExportError
from sceneparse.models import zoo
from sceneparse.models.base import ModelInfo, SceneModel, SizePolicy, model_info, resolve_imgsz
from sceneparse.structures.instances import Instances
from sceneparse.structures.keypoints import COCO_PERSON
from sceneparse.structures.prompts import Prompts
from sceneparse.structures.segmaps import PanopticMap
from standin_models import BoxPromptModel, NoGraphModel, OracleModel, image_key

FIXTURES = Path(__file__).parent / "fixtures"
TINY_RCNN = {"min_size": 64, "max_size": 64, "fpn_channels": 16, "box_representation_size": 32,
             "rpn_pre_nms_top_n": [100, 50], "rpn_post_nms_top_n": [50, 20], "box_detections_per_img": 10}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    root = tmp_path_factory.mktemp("synth")
    cfg = SyntheticConfig(height=64, width=64, num_images=10, seed=5, empty_prob=0.0, crowd_prob=0.0)
    write_dataset(root, cfg, splits={"train": 2, "val": 8}, workers=1, progress=False, overwrite=True)
    return root


# ---- ModelInfo ----------------------------------------------------------------------------------
#: zoo models left out of the zoo-wide check: the big twins (built in their family's own tests)
_BIG = re.compile(r"resnet50|mobilenet|vgg|openpose|hourglass104|hourglass8|^yolo(v8|11)[lmx]$")


def test_every_zoo_model_declares_its_info_and_it_round_trips():
    """Every family the same way: a SceneModel whose info survives the checkpoint round trip and fits
    its results (instance-type results export boxes, scores, labels first); the R-CNN family's
    declarations checked by name."""
    import inspect

    expect = {"fasterrcnn": ("detect", ("bbox",)), "maskrcnn": ("instance", ("bbox", "segm")),
              "keypointrcnn": ("pose", ("bbox", "keypoints"))}
    names = [n for n in zoo.available() if not _BIG.search(n)]
    assert len(names) >= 12
    for name in names:
        kw = {"base_channels": 4, "depth": 2} if name == "unet" else {}
        default = inspect.signature(zoo._REGISTRY[name]).parameters["num_classes"].default
        # a builder without a default takes any number of classes; one with a default may fix it (pose: 1)
        m = zoo.build(name, num_classes=3 if default is inspect.Parameter.empty else default, **kw)
        info = m.info
        assert isinstance(m, SceneModel) and ModelInfo.from_dict(info.to_dict()) == info, name
        fam = name.split("_")[0]
        if fam in expect:
            assert (info.task, info.iou_types) == expect[fam], name
        if info.result == "instances" and info.export_outputs:
            assert info.export_outputs[:3] == ("boxes", "scores", "labels"), name
        if info.result == "semantic":
            assert (info.task, info.data, info.primary_metric) == ("semantic", "semantic", "miou"), name
        if info.task == "pose":
            assert info.keypoints is not None and info.primary_metric == "keypoints_AP", name
    kp = zoo.build("keypointrcnn_resnet18_fpn").info
    assert kp.keypoints is COCO_PERSON and kp.primary_metric == "keypoints_AP" and kp.data == "keypoints"


def test_model_info_rejects_inconsistent_declarations():
    with pytest.raises(ValueError, match="task must be one of"):
        ModelInfo("detection", 3)
    with pytest.raises(ValueError, match="keypoint layout"):
        ModelInfo("pose", 1, iou_types=("bbox", "keypoints"))
    with pytest.raises(ValueError, match="no COCO iou types"):
        ModelInfo("semantic", 3, iou_types=("bbox",), data="semantic")
    with pytest.raises(ValueError, match="2 class names for 3"):
        ModelInfo("detect", 3, iou_types=("bbox",), class_names=("a", "b"))
    pan = ModelInfo("panoptic", 4, data="panoptic")
    assert pan.result == "panoptic" and pan.primary_metric == "pq"
    assert ModelInfo("promptable", 1, iou_types=("segm",)).result == "instances"
    with pytest.raises(ConfigError, match="not a sceneparse model"):
        model_info(torch.nn.Conv2d(1, 1, 1))


def test_imgsz_is_the_longer_side_everywhere():
    assert resolve_imgsz(320) == (320, 320) and resolve_imgsz((200, 400)) == (200, 400) and resolve_imgsz(None) is None
    for bad in (8, (300, 200), "x", True):
        with pytest.raises(ConfigError, match="imgsz"):
            resolve_imgsz(bad)
    m = zoo.build("unet", num_classes=2, base_channels=4, depth=2).eval()
    batch, _ = m.prepare([torch.rand(3, 60, 90)], imgsz=48)
    assert batch.image_sizes == [(32, 48)]  # the long side is 48
    assert SizePolicy((800,), 1333).long_side == 1333


# ---- settings are arguments, never patched attributes --------------------------------------------
def test_predict_settings_are_arguments_and_leave_the_model_unchanged():
    torch.manual_seed(0)
    m = zoo.build("fasterrcnn_resnet18_fpn", num_classes=3, **TINY_RCNN).eval()
    images = [torch.rand(3, 64, 80), torch.rand(3, 50, 64)]
    state = {k: v.clone() for k, v in m.state_dict().items()}
    before = m.info
    low = m.predict(images, conf=0.0)
    default = m.predict(images)
    assert m.info == before and all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())
    assert sum(map(len, low)) >= sum(map(len, default))
    hi = float(torch.cat([r.scores for r in low]).median())
    for a, b in zip(m.predict(images, conf=hi), low):
        keep = b.scores > hi
        assert torch.equal(a.scores, b.scores[keep]) and torch.equal(a.boxes, b.boxes[keep])
    for r in m.predict(images, conf=0.0, max_det=3):
        assert len(r) <= 3
    with pytest.raises(ConfigError, match="unknown option"):
        m.predict(images, tile=32)
    with pytest.raises(ConfigError, match="conf must lie"):
        m.predict(images, conf=2.0)


# ---- checkpoints --------------------------------------------------------------------------------
def test_checkpoint_written_before_model_info_still_loads_and_predicts_the_same():
    """``unet_tiny_v0.1.0.pt`` was written by ``sceneparse train`` of sceneparse 0.1.0 (before
    ModelInfo: ``task: "semantic"`` and no ``info``); the expected maps were computed by that code."""
    raw = load_checkpoint(FIXTURES / "unet_tiny_v0.1.0.pt")
    assert raw["task"] == "semantic" and "info" not in raw
    loaded = model_from_checkpoint(FIXTURES / "unet_tiny_v0.1.0.pt")
    assert loaded.task == "semantic" and loaded.info.class_names == tuple(loaded.class_names)
    expected = np.load(FIXTURES / "unet_tiny_v0.1.0_expected.npz")
    image = torch.rand(3, 32, 64, generator=torch.Generator().manual_seed(0))
    got = loaded.model.predict([image], return_scores=True)[0]
    assert np.array_equal(got.labels.numpy(), expected["labels"])
    np.testing.assert_allclose(got.scores.numpy(), expected["scores"], rtol=1e-5, atol=1e-6)


def test_new_checkpoints_store_model_info_and_legacy_detection_checkpoints_load(tmp_path):
    cats = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]
    m = zoo.build("maskrcnn_resnet18_fpn", num_classes=2, **TINY_RCNN)
    cfg = {"model": {"name": "maskrcnn_resnet18_fpn", "kwargs": TINY_RCNN}}
    save_checkpoint(tmp_path / "new.pt", m, config=cfg, categories=cats)
    ck = load_checkpoint(tmp_path / "new.pt")
    info = ModelInfo.from_dict(ck["info"])
    assert ck["task"] == "instance" and info.class_names == ("a", "b") and info.iou_types == ("bbox", "segm")
    assert model_from_checkpoint(tmp_path / "new.pt").info == info
    # what 0.1.0 wrote for a detector: task "detection", no info
    legacy = {k: v for k, v in ck.items() if k != "info"}
    legacy["task"] = "detection"
    torch.save(legacy, tmp_path / "old.pt")
    assert model_from_checkpoint(tmp_path / "old.pt").info == info
    legacy["task"] = "semantic"
    torch.save(legacy, tmp_path / "lie.pt")
    with pytest.raises(CheckpointError, match="says task 'semantic'"):
        model_from_checkpoint(tmp_path / "lie.pt")
    bad = dict(ck, config={"model": {"name": "maskrcnn_resnet18_fpn", "kwargs": {"mask_threshhold": 0.3}}})
    torch.save(bad, tmp_path / "kw.pt")
    with pytest.raises(CheckpointError, match=r"\['mask_threshhold'\] not accepted.*valid keys: .*mask_threshold"):
        model_from_checkpoint(tmp_path / "kw.pt")


def test_model_kwargs_are_checked_against_the_builder_signature():
    zoo.check_kwargs("maskrcnn_resnet18_fpn", {"mask_threshold": 0.3, "box_score_thresh": 0.1, "min_size": 64})
    zoo.check_kwargs("unet", {"base_channels": 8, "ignore_index": 255, "class_weights": [1.0]})
    with pytest.raises(ConfigError, match=r"\['widht'\] not accepted by unet; valid keys: .*base_channels"):
        zoo.check_kwargs("unet", {"widht": 3})
    with pytest.raises(ConfigError, match="unknown model"):
        zoo.check_kwargs("nope", {})


def test_every_family_registers_the_same_way():
    """Family packages register by import: every folder of models/ but the shared parts; zoo.py names no family."""
    src = Path(zoo.__file__).read_text()
    assert "TwoStageDetector" not in src and "FasterRCNN" not in src and "SemanticSegmentor" not in src
    assert set(zoo.family_packages()) >= {"sceneparse.models.detectors", "sceneparse.models.segmentation"}
    import importlib

    for pkg in zoo.family_packages():
        mod = importlib.import_module(pkg)
        assert any(fn.__module__.startswith(mod.__name__) for fn in zoo._REGISTRY.values()), pkg


def test_a_model_without_export_graph_says_so():
    with pytest.raises(ExportError, match="NoGraphModel cannot be exported"):
        NoGraphModel().export_graph()


# ---- pose: OKS through the evaluator and the predictor's files ------------------------------------
def _jittered_people(ds: SceneDataset, seed: int) -> dict[str, Instances]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(len(ds)):
        image, t = ds[i]
        inst = t.instances[~t.iscrowd]
        n = len(inst)
        kp = inst.keypoints.clone()
        kp[..., :2] += torch.randn(kp[..., :2].shape, generator=g) * 0.5
        kp[..., 2] = 2.0
        out[image_key(image)] = Instances(inst.image_size, boxes=inst.boxes, labels=inst.labels,
                                          scores=torch.rand(n, generator=g) * 0.9 + 0.1, keypoints=kp,
                                          keypoint_scores=torch.ones(n, kp.shape[1]))
    return out


def test_pose_results_scored_by_oks_in_memory_and_from_the_predictor_files(synth, tmp_path):
    from sceneparse.evaluation import evaluate_coco
    from sceneparse.evaluation.validate import load_coco_gt, load_coco_results, results_for

    aset = load_split(synth, "val", "keypoints")
    ds = SceneDataset(aset, load_masks=False, load_keypoints=True)
    info = ModelInfo("pose", len(aset.categories), iou_types=("bbox", "keypoints"), data="keypoints",
                     keypoints=COCO_PERSON, conf=0.0)
    model = OracleModel(info, _jittered_people(ds, 0))
    report = evaluate_model(model, ds, batch_size=3, progress=False)
    assert report.task == "pose" and set(report.coco) == {"bbox", "keypoints"}
    assert 0.2 < report.metrics["keypoints_AP"] < 1.0 and report.metrics["bbox_AP"] > 0.9
    # the predictor's files, scored from disk, give the same numbers
    gt_json = synth / "annotations" / "person_keypoints_val.json"
    out = tmp_path / "pred"
    Predictor(model, device="cpu", categories=aset.categories.to_coco(), workers=0).run(
        synth / "images" / "val", out, ann=gt_json, progress=False, verbose=False, save_images=True)
    gt, _ = load_coco_gt(gt_json)
    res, _ = load_coco_results(out / "predictions.json")
    with contextlib.redirect_stdout(io.StringIO()):
        from_files = evaluate_coco(gt, results_for(res, "keypoints"), "keypoints")
    assert from_files.stats[0] == pytest.approx(report.metrics["keypoints_AP"], abs=2e-3)
    assert len(list((out / "images").iterdir())) == len(ds)


# ---- panoptic: PQ through the evaluator and the predictor's files ---------------------------------
def _perturbed_panoptic(ds: SceneDataset, seed: int) -> dict[str, PanopticMap]:
    """Ground truth with one segment per image dropped to void, segments carrying contiguous labels
    (as a model gives them), and ids renumbered."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(len(ds)):
        image, t = ds[i]
        pm = t.panoptic
        segs = [s for s in pm.segments if not s.iscrowd]
        drop = int(torch.randint(0, len(segs), (1,), generator=g)) if len(segs) > 1 else -1
        ids = torch.zeros_like(pm.ids)
        kept = []
        for j, s in enumerate(segs):
            if j == drop:
                continue
            ids[pm.ids == s.id] = len(kept) + 1
            kept.append(type(s)(len(kept) + 1, -1, s.label, s.isthing))
        out[image_key(image)] = PanopticMap(ids, kept)
    return out


def test_panoptic_results_scored_by_pq_in_memory_and_from_the_predictor_files(synth, tmp_path):
    from sceneparse.evaluation.panoptic import evaluate_panoptic

    aset = load_split(synth, "val", "panoptic")
    ds = SceneDataset(aset, load_masks=False, load_keypoints=False, load_panoptic=True)
    info = ModelInfo("panoptic", len(aset.categories), data="panoptic")
    model = OracleModel(info, _perturbed_panoptic(ds, 1))
    report = evaluate_model(model, ds, batch_size=2, progress=False)
    assert report.task == "panoptic" and report.panoptic is not None
    assert 0.3 < report.metrics["pq"] < 1.0 and 0.5 < report.metrics["sq"] <= 1.0  # a dropped segment: a FN
    out = tmp_path / "pan"
    gt_json = synth / "annotations" / "panoptic_val.json"
    s = Predictor(model, device="cpu", categories=aset.categories.to_coco(), workers=0).run(
        synth / "images" / "val", out, ann=gt_json, progress=False, verbose=False)
    assert s.predicted == len(ds) and s.files["panoptic"].is_dir()
    pred = json.loads((out / "predictions.json").read_text())
    assert len(pred["annotations"]) == len(ds)
    ref = evaluate_panoptic(gt_json, synth / "annotations" / "panoptic_val", out / "predictions.json",
                            out / "panoptic")
    assert ref.pq == pytest.approx(report.metrics["pq"], abs=1e-12)
    assert ref.things.pq == pytest.approx(report.metrics["pq_things"], abs=1e-12)


# ---- promptable: box prompts, masks scored as segm ---------------------------------------------------
def test_promptable_models_are_prompted_with_ground_truth_boxes(synth, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    aset = load_split(synth, "val", "instances", things_only=True)
    ds = SceneDataset(aset, load_masks=False, load_keypoints=False)
    model = BoxPromptModel()
    report = evaluate_model(model, ds, batch_size=2, progress=False)
    assert report.task == "promptable" and set(report.coco) == {"segm"}
    # the reference: the filled ground-truth boxes, category of their box, score 1, by pycocotools
    results = []
    for i in range(len(ds)):
        _, t = ds[i]
        h, w = t.instances.image_size
        r = model.predict([torch.zeros(3, h, w)], prompts=[Prompts(boxes=t.instances.boxes)])[0]
        for m, lab in zip(r.masks.numpy(), t.instances.labels.tolist()):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": t.image_id, "category_id": aset.categories.to_id(lab), "segmentation": rle,
                            "score": 1.0})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(synth / "annotations" / "instances_val.json"))
        e = COCOeval(gt, gt.loadRes(results), "segm")
        e.params.catIds = aset.categories.ids
        e.evaluate(), e.accumulate(), e.summarize()
    assert report.metrics["segm_AP"] == pytest.approx(e.stats[0], abs=1e-12)
    with pytest.raises(ValueError, match="boxes or points"):
        Prompts()
    assert model.predict([torch.rand(3, 20, 30)])[0].masks.shape == (0, 20, 30)  # no prompt, no mask


# ---- a new family touches models/ only: the stand-in panoptic model through every mode -------------
def test_a_registered_panoptic_model_trains_validates_predicts_through_the_engine(synth, tmp_path):
    """Train (the trainer reads panoptic data for a model whose info says so), val and predict from
    the command line, with no engine change: only a SceneModel and a zoo registration."""
    from sceneparse.cli import main
    from sceneparse.config import load_config
    from sceneparse.engine.trainer import Trainer
    from standin_models import register_standins

    register_standins()
    cfg = load_config(None, [f"data.root={synth}", "model.name=standin_panoptic", f"train.out={tmp_path / 'run'}",
                             "data.batch_size=2", "train.epochs=3", "train.threads=1", "optim.name=adamw",
                             "optim.lr=0.01", "optim.warmup_iters=1", "train.log_every=1"])
    result = Trainer(cfg, progress=False).fit()
    assert result.primary_metric == "pq" and 0.0 <= result.metrics["pq"] <= 1.0
    best = tmp_path / "run" / "best.pt"
    loaded = model_from_checkpoint(best)
    assert loaded.task == "panoptic" and load_checkpoint(best)["info"]["task"] == "panoptic"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["val", "--model", str(best), "--data", str(synth), "--json", str(tmp_path / "v.json"),
                     "--quiet"]) == 0
    assert "PQ" in out.getvalue()
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["task"] == "panoptic" and v["metrics"]["pq"] == pytest.approx(result.metrics["pq"], abs=1e-9)
    pred = tmp_path / "pred"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["predict", "--model", str(best), "--source", str(synth / "images" / "val"), "--out", str(pred),
                     "--ann", str(synth / "annotations" / "panoptic_val.json"), "--workers", "0", "--quiet"]) == 0
    from sceneparse.evaluation.panoptic import evaluate_panoptic

    res = evaluate_panoptic(synth / "annotations" / "panoptic_val.json", synth / "annotations" / "panoptic_val",
                            pred / "predictions.json", pred / "panoptic")
    assert res.pq == pytest.approx(result.metrics["pq"], abs=1e-9)
