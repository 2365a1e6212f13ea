"""The synthetic scene generator: determinism, COCO layout (checked with pycocotools), occlusion,
keypoint visibility, panoptic / semantic consistency, coverage of classes, sizes, crowds and empties."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sceneparse.cli import main as cli_main
from sceneparse.conventions import CategoryMap
from sceneparse.errors import ConfigError
from sceneparse.structures.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON
from sceneparse.structures.masks import masks_to_boxes
from sceneparse.structures.segmaps import rgb2id
from sceneparse.data.synthetic import (
    STUFF_NAMES, SYNTH_CATEGORIES, THING_NAMES, CrowdSpec, PersonSpec, SceneLayout, ShapeSpec, StuffLayout,
    SyntheticConfig, corner_polygons, generate_scene, image_rng, keypoint_pixels, pose_keypoints, render_scene,
    write_dataset,
)

# small, non-square (catches x/y mix-ups), many crowds and empties so that a few images show them all
CFG = SyntheticConfig(height=112, width=144, num_images=24, val_fraction=0.25, seed=3, empty_prob=0.15,
                      crowd_prob=0.5, image_format="png", size_frac=(0.08, 0.6), person_height_frac=(0.3, 0.9),
                      crowd_size_frac=(0.05, 0.1))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    ds = write_dataset(root, CFG, workers=2, progress=False)
    return ds


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return bgr[:, :, ::-1]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _splits(ds):
    return [(name, p) for name, p in ds.splits.items()]


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_whatever_the_workers(dataset, tmp_path):
    again = write_dataset(tmp_path / "again", CFG, workers=1, progress=False)
    a, b = _hashes(dataset.root), _hashes(again.root)
    assert len(a) == 3 * 24 + 6 + 1  # images, semantic and panoptic PNGs; 3 JSON per split; dataset.yaml
    assert a == b


def test_different_seed_different_data(dataset, tmp_path):
    other = write_dataset(tmp_path / "other", dataclasses.replace(CFG, seed=4), workers=1, progress=False)
    a, b = _hashes(dataset.root), _hashes(other.root)
    assert a.keys() == b.keys()
    images = [k for k in a if k.startswith("images/")]
    assert sum(a[k] != b[k] for k in images) == len(images)
    assert a["annotations/instances_train.json"] != b["annotations/instances_train.json"]


def test_scene_in_memory_is_deterministic_and_matches_files(dataset):
    s1 = generate_scene(image_rng(CFG.seed, 5), CFG)
    s2 = generate_scene(image_rng(CFG.seed, 5), CFG)
    assert np.array_equal(s1.image, s2.image) and np.array_equal(s1.panoptic, s2.panoptic)
    # image index 5 is id 6 of the train split: the PNG holds exactly the in-memory pixels
    p = dataset.splits["train"]
    assert np.array_equal(_read_rgb(p.images / "000006.png"), s1.image)
    assert np.array_equal(cv2.imread(str(p.semantic / "000006.png"), cv2.IMREAD_UNCHANGED), s1.semantic)
    assert np.array_equal(rgb2id(_read_rgb(p.panoptic_root / "000006.png")), s1.panoptic)
    s3 = generate_scene(image_rng(CFG.seed, 6), CFG)
    assert not np.array_equal(s1.image, s3.image)


# ------------------------------------------------------------------------------------------------
# COCO layout, read back with pycocotools
# ------------------------------------------------------------------------------------------------

def test_layout_and_categories(dataset):
    meta = yaml.safe_load(dataset.yaml.read_text())
    assert {s: v["num_images"] for s, v in meta["splits"].items()} == {"train": 18, "val": 6}
    cmap = CategoryMap.from_categories(SYNTH_CATEGORIES)
    assert meta["semantic"]["labels"] == cmap.names == list(THING_NAMES) + list(STUFF_NAMES)
    for name, p in _splits(dataset):
        inst = json.loads(p.instances.read_text())
        cats = {c["name"]: c for c in inst["categories"]}
        assert [c["isthing"] for c in inst["categories"]] == [1] * 7 + [0] * 5
        assert cats["person"]["id"] == 1 and cats["sky"]["id"] == 101
        kp = json.loads(p.person_keypoints.read_text())
        assert [c["name"] for c in kp["categories"]] == ["person"]
        assert kp["categories"][0]["keypoints"] == list(COCO_KEYPOINT_NAMES)
        assert [tuple(e) for e in kp["categories"][0]["skeleton"]] == list(COCO_SKELETON)
        person_ids = {a["id"] for a in inst["annotations"] if a["category_id"] == 1}
        assert {a["id"] for a in kp["annotations"]} == person_ids and person_ids
        pan = json.loads(p.panoptic_json.read_text())
        assert [a["image_id"] for a in pan["annotations"]] == [im["id"] for im in inst["images"]]
        for im in inst["images"]:
            assert (p.images / im["file_name"]).is_file() and (p.semantic / (Path(im["file_name"]).stem + ".png")).is_file()
        assert len(list(p.images.iterdir())) == len(inst["images"]) == meta["splits"][name]["num_images"]


def _panoptic_and_semantic(p, file_name):
    stem = Path(file_name).stem
    ids = rgb2id(_read_rgb(p.panoptic_root / f"{stem}.png"))
    sem = cv2.imread(str(p.semantic / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    return ids, sem


def test_ann_to_mask_equals_panoptic_segment_and_semantic_pixels(dataset):
    cmap = CategoryMap.from_categories(SYNTH_CATEGORIES)
    kinds = {"polygon": 0, "rle": 0, "crowd": 0}
    for _, p in _splits(dataset):
        coco = COCO(str(p.instances))
        pan = {a["image_id"]: a for a in json.loads(p.panoptic_json.read_text())["annotations"]}
        for img_id in coco.getImgIds():
            img = coco.loadImgs(img_id)[0]
            ids, sem = _panoptic_and_semantic(p, img["file_name"])
            assert ids.shape == sem.shape == (CFG.height, CFG.width)
            segs = {s["id"]: s for s in pan[img_id]["segments_info"]}
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None))
            for a in anns:
                m = coco.annToMask(a).astype(bool)
                assert m.sum() == a["area"] > 0
                under = np.unique(ids[m])
                assert len(under) == 1, "an annotation covers more than one panoptic segment"
                seg = segs[int(under[0])]
                assert np.array_equal(ids == under[0], m)  # exactly the segment's pixels
                assert seg["category_id"] == a["category_id"] and seg["iscrowd"] == a["iscrowd"]
                assert seg["area"] == a["area"]
                assert np.all(sem[m] == cmap.to_label(a["category_id"]))
                x, y, w, h = a["bbox"]
                ys, xs = np.nonzero(m)
                assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                if a["iscrowd"]:
                    kinds["crowd"] += 1
                    assert isinstance(a["segmentation"], dict)
                else:
                    kinds["polygon" if isinstance(a["segmentation"], list) else "rle"] += 1
    # polygons for ordinary things, RLE where a mask has a hole (rings, things inside things), crowds RLE
    assert kinds["polygon"] > 50 and kinds["rle"] > 0 and kinds["crowd"] > 0
    assert kinds["polygon"] > 3 * kinds["rle"]


def _eval(gt: COCO, results: list[dict], iou_type: str) -> np.ndarray:
    dt = gt.loadRes(results)
    ev = COCOeval(gt, dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_ground_truth_as_results_scores_ap_one(dataset, iou_type):
    p = dataset.splits["train"]
    gt = COCO(str(p.person_keypoints if iou_type == "keypoints" else p.instances))
    results = []
    for a in gt.loadAnns(gt.getAnnIds(iscrowd=False)):
        r = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0}
        if iou_type == "bbox":
            r["bbox"] = a["bbox"]
        elif iou_type == "segm":
            rle = gt.annToRLE(a)
            r["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]}
        else:
            if a["num_keypoints"] == 0:
                continue
            r["keypoints"] = a["keypoints"]
        results.append(r)
    assert len(results) > 10
    stats = _eval(gt, results, iou_type)
    assert stats[0] == pytest.approx(1.0) and stats[1] == pytest.approx(1.0)
    # a wrong box must not score 1.0 (the check above can fail)
    if iou_type == "bbox":
        shifted = [{**r, "bbox": [r["bbox"][0] + r["bbox"][2] * 0.6] + r["bbox"][1:]} for r in results]
        assert _eval(gt, shifted, "bbox")[0] < 0.5


# ------------------------------------------------------------------------------------------------
# occlusion, keypoint visibility
# ------------------------------------------------------------------------------------------------

def _plain_stuff(width: int, name: str = "grass") -> StuffLayout:
    return StuffLayout((name,), np.zeros((0, width), np.float32))


def _person(h_px: float, foot: tuple[float, float]) -> PersonSpec:
    kp, hc, r = pose_keypoints(h_px, arm_abduction=(1.2, 0.3), elbow=(0.3, 0.2), hip=(0.15, 0.15))
    shift = np.array(foot) - (kp[[15, 16], 0].mean(), kp[[15, 16], 1].max())
    return PersonSpec(keypoints=kp + shift, head_center=tuple(hc + shift), head_radius=r, limb_width=4.0)


def test_keypoint_visibility_rule_on_a_constructed_occlusion():
    cfg = SyntheticConfig(height=96, width=128, thing_classes=("person", "rectangle"), stuff_classes=("grass",),
                          noise_std=0.0)
    # ankles 6 px below the image bottom: both outside (v = 0)
    person = _person(80.0, (64.0, 102.0))
    kp = person.keypoints
    lw = kp[9]  # left wrist
    cover = ShapeSpec("rectangle", center=(float(lw[0]), float(lw[1])), size=6.0, aspect=1.0)
    for other in range(17):  # the occluder covers the left wrist only
        if other != 9:
            assert np.abs(kp[other] - lw).max() > 4.5
    scene = render_scene(np.random.default_rng(0), SceneLayout(_plain_stuff(128), [person, cover]), cfg)
    assert [scene.categories.names[i.label] for i in scene.instances] == ["person", "rectangle"]
    v = scene.instances[0].keypoints
    expect = np.full(17, 2.0)
    expect[9] = 1.0  # covered by the later rectangle
    expect[[15, 16]] = 0.0  # outside the image
    assert np.array_equal(v[:, 2], expect)
    assert np.all(v[[15, 16], :2] == 0)  # unlabeled points are written as (0, 0), as COCO does
    assert np.allclose(v[9, :2], np.round(lw, 2), atol=1e-4)
    # the wrist's pixel shows the rectangle: the mask of the person excludes it
    assert not scene.instances[0].mask[int(lw[1]), int(lw[0])] and scene.instances[1].mask[int(lw[1]), int(lw[0])]

    # drawn first, the same rectangle is behind the person: the wrist is visible again
    behind = render_scene(np.random.default_rng(0), SceneLayout(_plain_stuff(128), [cover, person]), cfg)
    assert behind.instances[1].keypoints[9, 2] == 2.0

    # an occluder that is removed (too few visible pixels) does not occlude
    strict = dataclasses.replace(cfg, min_visible_area=60)
    dropped = render_scene(np.random.default_rng(0), SceneLayout(_plain_stuff(128), [person, cover]), strict)
    assert [dropped.categories.names[i.label] for i in dropped.instances] == ["person"]
    assert dropped.instances[0].keypoints[9, 2] == 2.0
    assert np.array_equal(dropped.semantic[dropped.instances[0].mask], np.zeros(dropped.instances[0].area))


def test_a_keypoint_just_below_a_pixel_edge_lies_in_the_pixel_its_written_coordinates_name():
    # the files hold coordinates rounded to 0.01 px: x = 70.996 is written 71.0, in column 71, and the
    # figure must paint that pixel (it painted column 70, the unrounded one, and generating a dataset
    # of 12,200 images with seed 1 failed on such a point)
    cfg = SyntheticConfig(height=96, width=128, thing_classes=("person",), stuff_classes=("grass",), noise_std=0.0)
    person = _person(40.0, (64.0, 80.0))
    person.limb_width = 1.0
    hx, hy = person.head_center
    ear = np.array([np.floor(hx) + 6.996, np.floor(hy) + 0.5])  # 6-7 px beside the head: off the figure
    person.keypoints[3] = ear
    scene = render_scene(np.random.default_rng(0), SceneLayout(_plain_stuff(128), [person]), cfg)
    kp = scene.instances[0].keypoints
    col, row = int(np.floor(hx)) + 7, int(np.floor(hy))
    assert np.allclose(kp[3], (col, row + 0.5, 2.0), atol=1e-4)  # written 71.00: visible, in column 71
    assert scene.instances[0].mask[row, col] and not scene.instances[0].mask[row, col - 1]
    pix = keypoint_pixels(np.array([[70.996, 3.004], [70.994, -0.004], [0.0, 2.5]]))
    assert pix.tolist() == [[71, 3], [70, 0], [0, 2]]


def test_keypoint_visibility_in_generated_data_follows_the_rule(dataset):
    p = dataset.splits["train"]
    coco = COCO(str(p.person_keypoints))
    pan = {a["image_id"]: a for a in json.loads(p.panoptic_json.read_text())["annotations"]}
    counts = {0: 0, 1: 0, 2: 0}
    for a in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
        img = coco.loadImgs(a["image_id"])[0]
        ids, _ = _panoptic_and_semantic(p, img["file_name"])
        thing_ids = {s["id"] for s in pan[a["image_id"]]["segments_info"] if s["category_id"] <= 7}
        m = coco.annToMask(a).astype(bool)
        kp = np.asarray(a["keypoints"]).reshape(17, 3)
        for x, y, v in kp:
            counts[int(v)] += 1
            if v == 0:
                assert x == 0 and y == 0
                continue
            col, row = int(math.floor(x)), int(math.floor(y))
            assert 0 <= col < CFG.width and 0 <= row < CFG.height
            if v == 2:
                assert m[row, col]
            else:  # occluded: the pixel shows another thing
                assert not m[row, col] and ids[row, col] in thing_ids
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
    assert counts[2] > 50 and counts[1] > 0 and counts[0] > 0


# ------------------------------------------------------------------------------------------------
# content: classes, sizes, crowds, empties, disjoint masks, semantic vs panoptic
# ------------------------------------------------------------------------------------------------

def test_every_category_present_crowds_and_empty_images(dataset):
    seen_things, seen_stuff, empty, crowds = set(), set(), 0, 0
    for _, p in _splits(dataset):
        inst = json.loads(p.instances.read_text())
        per_image = {im["id"]: 0 for im in inst["images"]}
        for a in inst["annotations"]:
            per_image[a["image_id"]] += 1
            crowds += a["iscrowd"]
            if not a["iscrowd"]:
                seen_things.add(a["category_id"])
        empty += sum(n == 0 for n in per_image.values())
        for a in json.loads(p.panoptic_json.read_text())["annotations"]:
            seen_stuff |= {s["category_id"] for s in a["segments_info"] if s["category_id"] > 100}
    assert seen_things == set(range(1, 8))
    assert seen_stuff == set(range(101, 106))
    assert empty >= 1 and crowds >= 2
    assert empty == dataset.empty_images


def test_masks_disjoint_and_semantic_agrees_with_panoptic(dataset):
    cmap = CategoryMap.from_categories(SYNTH_CATEGORIES)
    for _, p in _splits(dataset):
        coco = COCO(str(p.instances))
        pan = {a["image_id"]: a for a in json.loads(p.panoptic_json.read_text())["annotations"]}
        for img in coco.loadImgs(coco.getImgIds()):
            ids, sem = _panoptic_and_semantic(p, img["file_name"])
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"], iscrowd=None))
            if anns:
                stack = np.stack([coco.annToMask(a) for a in anns]).astype(np.int32)
                assert stack.sum(0).max() == 1  # things never share a pixel
            segs = pan[img["id"]]["segments_info"]
            lut = np.full(ids.max() + 1, 254, np.int64)
            for s in segs:
                lut[s["id"]] = cmap.to_label(s["category_id"])
                assert (ids == s["id"]).sum() == s["area"]
            assert (ids > 0).all()  # stuff covers the background: no void
            assert np.array_equal(lut[ids], sem.astype(np.int64))
            assert sum(s["area"] for s in segs) == ids.size


def test_scenes_span_coco_area_ranges_and_targets_agree():
    cfg = SyntheticConfig()  # the defaults: 512 x 512
    areas = []
    for i in range(12):
        scene = generate_scene(image_rng(0, i), cfg)
        t = scene.to_target(image_id=i)
        assert torch.equal(t.instances.boxes, masks_to_boxes(t.instances.masks))
        assert t.instances.masks.sum(0).max() <= 1
        assert torch.equal(t.semantic.labels, torch.from_numpy(scene.semantic.astype(np.int64)))
        assert torch.equal(t.panoptic.semantic().labels, t.semantic.labels)
        for inst in scene.instances:
            if not inst.iscrowd:
                areas.append(inst.area)
    areas = np.asarray(areas)
    assert (areas < 32 ** 2).sum() >= 5 and ((areas >= 32 ** 2) & (areas < 96 ** 2)).sum() >= 5
    assert (areas >= 96 ** 2).sum() >= 3


def test_crowd_region_is_the_union_of_its_members():
    cfg = SyntheticConfig(height=64, width=96, thing_classes=("star",), stuff_classes=("sand",), min_visible_area=1)
    rng = np.random.default_rng(7)
    members = [ShapeSpec("star", center=(float(x), float(y)), size=9.0, inner=0.5) for x, y in
               zip(rng.uniform(20, 70, 7), rng.uniform(15, 45, 7))]
    crowd = render_scene(np.random.default_rng(0), SceneLayout(_plain_stuff(96, "sand"), [CrowdSpec("star", members)]), cfg)
    apart = render_scene(np.random.default_rng(0), SceneLayout(_plain_stuff(96, "sand"), list(members)), cfg)
    assert len(crowd.instances) == 1 and crowd.instances[0].iscrowd and crowd.instances[0].keypoints is None
    assert len(apart.instances) >= 2 and not any(i.iscrowd for i in apart.instances)
    union = np.any(np.stack([i.mask for i in apart.instances]), axis=0)
    assert np.array_equal(crowd.instances[0].mask, union)
    seg = [s for s in crowd.segments if s.id == crowd.instances[0].segment_id][0]
    assert seg.iscrowd and seg.isthing and seg.area == int(union.sum())
    target = crowd.to_target()
    assert target.iscrowd.tolist() == [True]


def test_empty_image_has_stuff_only():
    cfg = SyntheticConfig(height=64, width=80, empty_prob=1.0)
    scene = generate_scene(image_rng(0, 0), cfg)
    assert scene.instances == [] and all(not s.isthing for s in scene.segments)
    assert np.array_equal(scene.semantic, scene.stuff)


# ------------------------------------------------------------------------------------------------
# exact polygons
# ------------------------------------------------------------------------------------------------

def test_corner_polygons_trace_pixel_corners():
    m = np.zeros((5, 6), bool)
    m[1:4, 1:3] = True
    m[3, 3:5] = True  # an L
    (poly,) = corner_polygons(m)
    pts = {tuple(p) for p in np.asarray(poly).reshape(-1, 2)}
    assert pts == {(1, 1), (3, 1), (3, 3), (5, 3), (5, 4), (1, 4)}
    ring = np.zeros((7, 7), bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    assert corner_polygons(ring) is None  # a hole: polygons cannot say it


def test_corner_polygons_rasterise_back_exactly_with_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(60):
        m = np.zeros((40, 48), np.uint8)
        pts = rng.uniform(-5, 50, (int(rng.integers(3, 7)), 2)).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
        cv2.circle(m, (int(rng.integers(0, 48)), int(rng.integers(0, 40))), int(rng.integers(1, 9)), 1, -1)
        polys = corner_polygons(m.astype(bool))
        if not polys:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, 40, 48))
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m.astype(bool))


# ------------------------------------------------------------------------------------------------
# config and CLI
# ------------------------------------------------------------------------------------------------

def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="max_objects"):
        SyntheticConfig(min_objects=5, max_objects=2)
    with pytest.raises(ConfigError, match="thing_classes"):
        SyntheticConfig(thing_classes=("person", "dragon"))
    with pytest.raises(ConfigError, match="image_format"):
        SyntheticConfig(image_format="bmp")
    with pytest.raises(ValueError, match="not selected"):
        render_scene(np.random.default_rng(0), SceneLayout(_plain_stuff(64), [CrowdSpec("star", [])]),
                     SyntheticConfig(height=64, width=64, thing_classes=("person",)))


def test_cli_data_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["data", "synth", "--out", str(out), "--images", "5", "--size", "48x64", "--seed", "1",
            "--val-fraction", "0.4", "--workers", "1", "--no-progress", "--format", "jpg"]
    assert cli_main(argv) == 0
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["image_size"] == [48, 64] and meta["splits"]["val"]["num_images"] == 2
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert "wrote 5 images (train: 3, val: 2) of 48x64" in capsys.readouterr().out
    # a rerun with fewer images replaces the dataset and removes the stale files
    argv[argv.index("5")] = "2"
    assert cli_main(argv) == 0
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["000001.jpg"]
    assert sorted(p.name for p in (out / "semantic" / "val").iterdir()) == ["000002.png"]
    # a folder holding something else is refused, naming the folder
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli_main(["data", "synth", "--out", str(foreign), "--images", "2", "--no-progress"]) == 1
    assert str(foreign) in capsys.readouterr().err
