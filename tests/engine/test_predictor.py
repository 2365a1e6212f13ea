"""Predictor: equality with ``model.predict``, sources, image modes, bad files, written files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sceneparse.data.datasets import load_image
from sceneparse.data.formats import read_semantic_pngs
from sceneparse.engine.checkpoint import model_from_checkpoint, save_checkpoint
from sceneparse.engine.predictor import Predictor, read_image, resolve_source, to_image_tensor
from sceneparse.errors import ConfigError, DataError
from sceneparse.evaluation import evaluate_coco
from sceneparse.models import zoo

CATEGORIES = [{"id": 7, "name": "person"}, {"id": 3, "name": "ring"}, {"id": 11, "name": "star"}]
SMALL = dict(min_size=64, max_size=96, box_detections_per_img=6, rpn_pre_nms_top_n=(100, 60),
             rpn_post_nms_top_n=(100, 60))


def _ckpt(path, name, task="detection", categories=CATEGORIES, **kwargs):
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=len(categories), **kwargs)
    save_checkpoint(path, model, config={"model": {"name": name, "kwargs": kwargs}}, categories=categories, task=task)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {"mask": _ckpt(d / "mask.pt", "maskrcnn_resnet18_fpn", mask_conv_channels=(16,) * 2, **SMALL),
            "unet": _ckpt(d / "unet.pt", "unet", task="semantic", base_channels=8, depth=2)}


def _scene(h, w, seed):
    """A small image with a few flat shapes (so the drawings and decoders have structure)."""
    rng = np.random.default_rng(seed)
    a = np.full((h, w, 3), rng.integers(40, 90, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        a[y:y + rng.integers(6, h // 2), x:x + rng.integers(6, w // 2)] = rng.integers(120, 255, 3)
    return a


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Five images of several sizes and PIL modes (sorted names a..e)."""
    d = tmp_path_factory.mktemp("images")
    Image.fromarray(_scene(40, 56, 0)).save(d / "a.png")
    Image.fromarray(_scene(48, 36, 1)[..., 0]).save(d / "b.png")  # grayscale L
    Image.fromarray(np.dstack([_scene(40, 40, 2), np.full((40, 40), 128, np.uint8)]), "RGBA").save(d / "c.png")
    Image.fromarray(_scene(32, 48, 3)).convert("P").save(d / "d.png")  # palette
    Image.fromarray(_scene(44, 52, 4)).save(d / "e.jpg", quality=95)
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(b"")
    return d


def _same(a, b):
    assert type(a) is type(b)
    fa = a.fields() if hasattr(a, "fields") else {"labels": a.labels}
    fb = b.fields() if hasattr(b, "fields") else {"labels": b.labels}
    assert fa.keys() == fb.keys()
    for k in fa:
        assert torch.equal(fa[k], fb[k]), k
    assert a.image_size == b.image_size


def test_stream_equals_model_predict_on_the_same_batches(ckpts, image_dir):
    files = sorted(p for p in image_dir.iterdir() if p.suffix in (".png", ".jpg") and not p.name.startswith("."))
    assert [f.name for f in files] == ["a.png", "b.png", "c.png", "d.png", "e.jpg"]
    loaded = model_from_checkpoint(ckpts["mask"])
    model = loaded.model
    images = [load_image(f) for f in files]
    default = model.predict(images)
    assert sum(len(d) for d in default) == 30  # the random model fills the cap of 6 per image at 0.05
    conf = float(torch.cat([d.scores for d in default]).median())
    p = Predictor(loaded, device="cpu", batch_size=2, conf=conf, workers=1)
    preds = list(p.stream(image_dir, keep_images=True))
    assert [pr.path.name for pr in preds] == [f.name for f in files]
    for pr, im in zip(preds, images):
        assert torch.equal(pr.image, im)  # decoded in the worker exactly as load_image does
    assert model.info.conf == 0.05  # the predictor passed conf as an argument; the model is unchanged
    expected = model.predict(images[0:2], conf=conf) + model.predict(images[2:4], conf=conf) + \
        model.predict(images[4:5], conf=conf)
    for pr, e in zip(preds, expected):
        _same(pr.result, e)
        assert bool((e.scores > conf).all()) and e.masks is not None
    # conf reached the model: fewer detections than at the default threshold, but some
    assert 30 > sum(len(pr.result) for pr in preds) > 0


def test_call_takes_tensors_pil_arrays_and_paths(ckpts, image_dir):
    p = Predictor(ckpts["mask"], device="cpu", batch_size=8)
    rgb = _scene(40, 56, 0)
    t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    inputs = [t, torch.from_numpy(rgb).permute(2, 0, 1), Image.fromarray(rgb), rgb, rgb.astype(np.uint16) * 257,
              rgb.astype(np.float32) / 255, str(image_dir / "a.png")]
    out = p(inputs)
    assert len(out) == len(inputs)
    ref = p.model.predict([t] * len(inputs))
    for o, r in zip(out, ref):
        _same(o, r)
    # a single image and a [B, 3, H, W] tensor
    _same(p(t)[0], p.model.predict([t])[0])  # (a batch of one: batched convolutions round differently)
    assert len(p(torch.stack([t, t]))) == 2
    gray = to_image_tensor(rgb[..., 0])
    assert gray.shape == (3, 40, 56) and torch.equal(gray[0], gray[2])
    assert torch.allclose(to_image_tensor(np.dstack([rgb, rgb[..., :1]])), t)  # alpha dropped
    with pytest.raises(DataError, match=r"image 1: values: .*\[0, 1\]"):
        p([t, rgb.astype(np.float32)])
    with pytest.raises(DataError, match=r"image 0: shape"):
        p([torch.rand(5, 8, 8)])
    with pytest.raises(DataError, match=r"missing\.png: file not found"):
        p([str(image_dir / "missing.png")])


def test_read_image_modes_16bit_and_exif(tmp_path):
    rgb = np.random.default_rng(5).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    ref = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    Image.fromarray(rgb[..., 1]).save(tmp_path / "l.png")
    assert torch.equal(read_image(tmp_path / "l.png"), ref[1:2].expand(3, -1, -1))
    Image.fromarray(np.dstack([rgb, np.zeros((6, 8), np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(read_image(tmp_path / "rgba.png"), ref)  # alpha dropped, not composited
    pal = Image.fromarray(rgb).convert("P")
    pal.save(tmp_path / "p.png")
    assert torch.equal(read_image(tmp_path / "p.png"), torch.from_numpy(np.array(pal.convert("RGB"))).permute(2, 0, 1) / 255)
    v16 = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1365)
    Image.fromarray(v16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    got = read_image(tmp_path / "g16.png")
    assert torch.allclose(got[0], torch.from_numpy(v16.astype(np.float32) / 65535)) and torch.equal(got[0], got[2])
    # EXIF orientation 6 (rotate 90 clockwise to display): stored 6x8 shows as 8x6
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rot.png", exif=exif)
    shown = read_image(tmp_path / "rot.png")
    assert torch.equal(shown, torch.rot90(ref, k=-1, dims=(1, 2)))
    # an annotation made on the stored pixels keeps them (the SceneDataset rule); another size is an error
    assert torch.equal(read_image(tmp_path / "rot.png", expect=(6, 8)), ref)
    with pytest.raises(DataError, match=r"rot\.png: the image is 8x6 \(HxW\) but the annotation file says 5x5"):
        read_image(tmp_path / "rot.png", expect=(5, 5))


def test_resolve_source(image_dir, tmp_path):
    files, root = resolve_source(image_dir)
    assert [f.name for f in files] == ["a.png", "b.png", "c.png", "d.png", "e.jpg"] and root == image_dir
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    for name in ("z.png", "sub/b.jpg", "sub/deep/a.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [f.name for f in resolve_source(tmp_path)[0]] == ["z.png"]
    assert [f.relative_to(tmp_path).as_posix() for f in resolve_source(tmp_path, recursive=True)[0]] == \
        ["sub/b.jpg", "sub/deep/a.png", "z.png"]
    assert [f.name for f in resolve_source(str(tmp_path / "**" / "*.png"))[0]] == ["a.png", "z.png"]
    assert resolve_source(str(image_dir / "a.png")) == ([image_dir / "a.png"], image_dir)
    with pytest.raises(DataError, match="source not found"):
        resolve_source(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="matches no file"):
        resolve_source(str(tmp_path / "*.bmp"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files in this folder"):
        resolve_source(tmp_path / "empty")


def _bad_files(d):
    Image.fromarray(_scene(40, 48, 7)).save(d / "000005.png")
    (d / "000006.png").write_bytes(b"")  # zero bytes
    buf = d / "000007.jpg"
    Image.fromarray(_scene(64, 64, 8)).save(buf, quality=95)
    data = buf.read_bytes()
    buf.write_bytes(data[: len(data) // 2])  # truncated
    (d / "000008.png").write_bytes(os.urandom(300))  # corrupt
    Image.fromarray(_scene(36, 44, 9)).save(d / "000009.jpg")


def test_run_skips_bad_files_and_writes_evaluable_json(ckpts, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _bad_files(src)
    out = tmp_path / "out"
    p = Predictor(ckpts["mask"], device="cpu", batch_size=2, conf=0.2, workers=1)
    s = p.run(src, out, progress=False, verbose=False)
    assert (s.total, s.predicted) == (5, 2)
    fails = json.loads((out / "failures.json").read_text())
    assert [os.path.basename(f["path"]) for f in fails] == ["000006.png", "000007.jpg", "000008.png"]
    assert "empty file (0 bytes)" in fails[0]["reason"]
    assert "truncated" in fails[1]["reason"] and "unreadable image" in fails[2]["reason"]
    assert {f["stage"] for f in fails} == {"read"}
    preds = json.loads((out / "predictions.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert [(im["id"], im["file_name"], im["height"], im["width"]) for im in images["images"]] == \
        [(5, "000005.png", 40, 48), (9, "000009.jpg", 36, 44)]  # ids from the numeric stems
    assert images["categories"] == CATEGORIES and images["annotations"] == []
    direct = p([src / "000005.png", src / "000009.jpg"])
    assert len(preds) == s.instances == sum(len(r) for r in direct) > 0
    assert sorted({r["image_id"] for r in preds}) == [5, 9]
    assert {r["category_id"] for r in preds} <= {7, 3, 11}
    assert all(isinstance(r["segmentation"]["counts"], str) for r in preds)
    first = [r for r in preds if r["image_id"] == 5]
    b = direct[0].boxes[0].tolist()
    assert first[0]["bbox"] == pytest.approx([b[0], b[1], b[2] - b[0], b[3] - b[1]], abs=1e-3)
    assert first[0]["score"] == pytest.approx(float(direct[0].scores[0]))
    # images.json + the predictions as ground truth -> sceneparse eval scores them (AP 1)
    gt = dict(images)
    gt["annotations"] = [dict(r, id=k + 1, iscrowd=0, area=r["bbox"][2] * r["bbox"][3]) for k, r in enumerate(preds)]
    assert evaluate_coco(gt, preds, "bbox").stats[1] == pytest.approx(1.0)
    assert sorted(f.name for f in (out / "images").iterdir()) == ["000005.jpg", "000009.jpg"]
    with Image.open(out / "images" / "000005.jpg") as im:
        assert im.size == (48, 40)
    assert sorted(os.listdir(out)) == ["failures.json", "images", "images.json", "predictions.json", "run.json"]


def test_run_with_ann_uses_its_ids_and_reports_unmatched_and_wrong_sizes(ckpts, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_scene(40, 48, 1)).save(src / "sub" / "x.png")
    Image.fromarray(_scene(30, 30, 2)).save(src / "y.png")
    Image.fromarray(_scene(30, 30, 3)).save(src / "z.png")
    Image.fromarray(_scene(20, 24, 4)).save(src / "w.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [
        {"id": 101, "file_name": "sub/x.png", "height": 40, "width": 48},
        {"id": 102, "file_name": "other_folder/y.png", "height": 30, "width": 30},  # matched by base name
        {"id": 103, "file_name": "w.png", "height": 99, "width": 24}],  # wrong size
        "annotations": [], "categories": CATEGORIES}))
    p = Predictor(ckpts["mask"], device="cpu", batch_size=4, conf=0.2, workers=0)
    s = p.run(src, tmp_path / "out", ann=ann, recursive=True, save_images=False, progress=False, verbose=False)
    assert (s.total, s.predicted) == (4, 3)
    by_stage = {os.path.basename(f.path): f.stage for f in s.failures}
    assert by_stage == {"w.png": "read", "z.png": "match"}
    assert "annotation file says 99x24" in next(f.reason for f in s.failures if f.stage == "read")
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted({r["image_id"] for r in preds}) == [101, 102]
    assert not (tmp_path / "out" / "images.json").exists() and not (tmp_path / "out" / "images").exists()


def test_semantic_run_writes_label_pngs_equal_to_model_predict(ckpts, image_dir, tmp_path):
    with pytest.warns(UserWarning, match="conf applies to models with instance results"):
        Predictor(ckpts["unet"], device="cpu", conf=0.5)
    p = Predictor(ckpts["unet"], device="cpu", batch_size=3, imgsz=48, workers=1)
    out = tmp_path / "out"
    s = p.run(image_dir, out, progress=False, verbose=False)
    assert (s.task, s.predicted, s.failures) == ("semantic", 5, [])
    model = model_from_checkpoint(ckpts["unet"]).model
    files = sorted(f for f in image_dir.iterdir() if f.suffix in (".png", ".jpg") and not f.name.startswith("."))
    images = [load_image(f) for f in files]
    expected = model.predict(images[:3], imgsz=48) + model.predict(images[3:], imgsz=48)
    for f, e in zip(files, expected):
        with Image.open(out / "labels" / f"{f.stem}.png") as im:
            assert im.mode == "P"
            labels = np.asarray(im)
        assert np.array_equal(labels, e.labels.numpy().astype(np.uint8))
        assert (out / "images" / f"{f.stem}.jpg").is_file()
    aset = read_semantic_pngs(out / "labels", image_root=image_dir, class_names=[c["name"] for c in CATEGORIES],
                              check_images=True)
    assert len(aset.images) == 5 and aset.problems == []
    assert not (out / "predictions.json").exists()


def test_keypoint_model_writes_keypoints_with_scores(tmp_path):
    ck = _ckpt(tmp_path / "kp.pt", "keypointrcnn_resnet18_fpn", categories=[{"id": 1, "name": "person"}],
               keypoint_conv_channels=(16,) * 2, **SMALL)
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(_scene(40, 48, 3)).save(src / "1.png")
    p = Predictor(ck, device="cpu", conf=0.0, workers=0)
    p.run(src, tmp_path / "out", save_images=True, progress=False, verbose=False)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    (res,) = p([src / "1.png"])
    assert len(preds) == len(res) > 0
    kp = np.asarray(preds[0]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(kp[:, :2], res.keypoints[0, :, :2].numpy(), atol=6e-4)
    np.testing.assert_allclose(kp[:, 2], res.keypoint_scores[0].numpy(), rtol=1e-6)


def test_stream_errors_raise_and_bad_arguments(ckpts, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _bad_files(src)
    p = Predictor(ckpts["mask"], device="cpu", workers=0)
    st = p.stream(src)
    assert len([pr for pr in st]) == 2 and len(st.failures) == 3 and st.done == 5
    with pytest.raises(DataError, match=r"000006\.png: empty file"):
        list(p.stream(src, errors="raise"))
    with pytest.raises(ConfigError, match="batch_size"):
        Predictor(ckpts["mask"], batch_size=0)
    with pytest.raises(ConfigError, match="conf"):
        Predictor(ckpts["mask"], conf=1.5)
    with pytest.raises(ConfigError, match="2 categories"):
        Predictor(zoo.build("unet", num_classes=3, base_channels=8, depth=2), categories=CATEGORIES[:2])
    bare = Predictor(zoo.build("unet", num_classes=2, base_channels=8, depth=2), device="cpu", imgsz=(32, 64))
    assert bare.task == "semantic" and [c["id"] for c in bare.categories] == [1, 2] and bare.imgsz == (32, 64)


def test_import_sceneparse_stays_light_and_exports_predictor():
    code = ("import sys, sceneparse; assert 'torch' not in sys.modules, 'torch imported'; "
            "from sceneparse import Predictor; from sceneparse.engine.predictor import Predictor as P; "
            "assert Predictor is P and 'Predictor' in dir(sceneparse); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    import sceneparse

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        sceneparse.Nope


def test_semantic_tiled_prediction_equals_model_sliding_window(ckpts, image_dir):
    from sceneparse.errors import ConfigError

    p = Predictor(ckpts["unet"], device="cpu", batch_size=2, imgsz=64, workers=0, tile=32, tile_overlap=0.25)
    files = sorted(f for f in image_dir.iterdir() if f.suffix in (".png", ".jpg") and not f.name.startswith("."))
    images = [load_image(f) for f in files[:2]]
    seen = []
    real = p.model.predict
    p.model.predict = lambda ims, **kw: (seen.append(kw), real(ims, **kw))[1]
    got = p(images)
    # the settings reach the model as arguments; imgsz=64 is the longer side (min_size = max_size = 64)
    assert seen == [{"conf": None, "iou": None, "max_det": None, "imgsz": (64, 64), "tile": 32, "tile_overlap": 0.25}]
    model = model_from_checkpoint(ckpts["unet"]).model
    tiled = model.predict(images, imgsz=64, tile=32, tile_overlap=0.25)
    for g, t in zip(got, tiled):
        assert torch.equal(g.labels, t.labels)
    assert [tuple(g.labels.shape) for g in got] == [tuple(im.shape[1:]) for im in images]
    with pytest.raises(ConfigError, match="not an option of this instance model"):
        Predictor(ckpts["mask"], device="cpu", tile=64)


def test_drawings_show_only_detections_above_draw_conf(ckpts, image_dir, tmp_path):
    p = Predictor(ckpts["mask"], device="cpu", batch_size=2, conf=0.0, workers=0)
    f = sorted(x for x in image_dir.iterdir() if x.suffix == ".png" and not x.name.startswith("."))[0]
    plain = (load_image(f) * 255).round().byte().permute(1, 2, 0).numpy()
    drawn = {}
    for dc in (0.0, 1.01):
        s = p.run([f], tmp_path / str(dc), image_format="png", progress=False, verbose=False, draw_conf=dc)
        assert s.instances > 0  # the JSON keeps every detection whatever draw_conf
        with Image.open(tmp_path / str(dc) / "images" / f"{f.stem}.png") as im:
            drawn[dc] = np.asarray(im.convert("RGB"))
    assert np.array_equal(drawn[1.01][:, :plain.shape[1]], plain[:drawn[1.01].shape[0]])
    assert not np.array_equal(drawn[0.0][:, :plain.shape[1]], plain[:drawn[0.0].shape[0]])


# ---- Ctrl-C and runs that follow each other (issue 24 s4) -----------------------------------------------------

def test_ctrl_c_keeps_what_was_done_and_the_earlier_run_is_gone(ckpts, image_dir, tmp_path):
    out = tmp_path / "out"
    p = Predictor(ckpts["mask"], device="cpu", batch_size=2, conf=0.2, workers=1)
    # an earlier, complete run over other files: its drawings and JSON must not survive into the new run
    first = p.run(image_dir, out, progress=False, verbose=False)
    assert first.complete and json.loads((out / "run.json").read_text())["complete"] is True
    (out / "images" / "zz_extra.jpg").write_bytes(b"not ours")  # a file the earlier run did not write stays
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        Image.fromarray(_scene(40, 48, 10 + i)).save(src / f"new{i}.png")

    seen = []

    def ctrl_c_after_two(pred):
        seen.append(pred)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        p.run(src, out, progress=False, verbose=False, on_result=ctrl_c_after_two)
    s = p.last_summary
    assert (s.complete, s.total, s.predicted) == (False, 5, 2)
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is False and record["state"] == "interrupted" and record["run_id"] == s.run_id
    assert (record["total"], record["predicted"], record["failed"], record["not_reached"]) == (5, 2, 0, 3)
    # valid JSON, complete so far: every record of the two predicted images and nothing else
    preds = json.loads((out / "predictions.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert images["info"]["run_id"] == s.run_id
    assert [im["file_name"] for im in images["images"]] == ["new0.png", "new1.png"]
    direct = p([src / "new0.png", src / "new1.png"])
    assert len(preds) == sum(len(r) for r in direct) == s.instances
    assert {r["image_id"] for r in preds} == {im["id"] for im in images["images"]}
    assert json.loads((out / "failures.json").read_text()) == []
    # the drawings are this run's (those of the earlier run are removed; foreign files are kept)
    assert sorted(f.name for f in (out / "images").iterdir()) == ["new0.jpg", "new1.jpg", "zz_extra.jpg"]
    assert not [f for f in out.rglob("*.tmp")]


def test_a_run_without_json_removes_the_earlier_runs_json(ckpts, image_dir, tmp_path):
    out = tmp_path / "out"
    p = Predictor(ckpts["mask"], device="cpu", batch_size=4, conf=0.2, workers=0)
    p.run(image_dir, out, progress=False, verbose=False)
    assert (out / "predictions.json").is_file()
    s = p.run(image_dir / "a.png", out, save_json=False, save_images=False, progress=False, verbose=False)
    assert s.complete and sorted(os.listdir(out)) == ["failures.json", "run.json"]  # no stale predictions.json


def test_an_earlier_run_from_before_run_json_is_cleared_with_a_note(ckpts, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "old.jpg").write_bytes(b"x")
    for name in ("predictions.json", "images.json", "failures.json"):
        (out / name).write_text("[]")
    (out / ".predictions.json.abc123.tmp").write_text("[")  # a run killed while writing
    p = Predictor(ckpts["unet"], device="cpu", workers=0)
    p.run(image_dir / "a.png", out, progress=False, verbose=True)
    err = capsys.readouterr().err
    assert "earlier predict run without run.json" in err
    assert sorted(os.listdir(out)) == ["failures.json", "images", "labels", "run.json"]
    assert sorted(os.listdir(out / "images")) == ["a.jpg", "old.jpg"]


def test_an_earlier_run_json_never_removes_files_outside_out(ckpts, image_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    crafted = {"tool": "sceneparse predict", "outputs": {"files": {"a": "../victim{name}", "b": str(victim) + "{name}"},
                                                         "names": [".txt", ""]}}
    (out / "run.json").write_text(json.dumps(crafted))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"epochs": 3}')  # another program's run.json: not ours
    (foreign / "predictions.json").write_text("[]")
    p = Predictor(ckpts["unet"], device="cpu", workers=0)
    p.run(image_dir / "a.png", out, save_images=False, progress=False, verbose=False)
    p.run(image_dir / "a.png", foreign, save_images=False, progress=False, verbose=False)
    assert victim.read_text() == "keep"
    assert (foreign / "predictions.json").read_text() == "[]"  # a semantic run writes none; not ours to remove
    assert json.loads((foreign / "run.json").read_text())["tool"] == "sceneparse predict"
