"""data.layout: one split of a COCO-layout folder (or a COCO file) as the AnnotationSet of a task."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from sceneparse.data.layout import load_split, missing, split_files
from sceneparse.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from sceneparse.data.synthetic import SyntheticConfig, write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, SyntheticConfig(height=48, width=48, num_images=6, seed=2, empty_prob=0.0, crowd_prob=0.5),
                  splits={"train": 4, "val": 2}, workers=1, progress=False, overwrite=True)
    return out


def test_instances_things_only_keeps_the_dataset_ids(root):
    raw = json.loads((root / "annotations" / "instances_train.json").read_text())
    full = load_split(root, "train", "instances")
    things = load_split(root, "train", "instances", things_only=True)
    assert len(full.categories) == 12 and things.categories.names == ["person", "ellipse", "rectangle", "triangle",
                                                                     "star", "ring", "cross"]
    assert [things.categories.to_id(a.label) for a in things.annotations] == \
        [a["category_id"] for a in raw["annotations"]]
    assert len(things.images) == 4 and things.image_root == root / "images" / "train" and not things.problems


def test_stuff_objects_are_left_out_with_a_recorded_problem(root, tmp_path):
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    data["annotations"].append({**data["annotations"][0], "id": 999, "category_id": 101})  # a "sky" object
    f = tmp_path / "inst.json"
    f.write_text(json.dumps(data))
    things = load_split(f, kind="instances", images=root / "images" / "train", things_only=True)
    assert len(things.annotations) == len(data["annotations"]) - 1
    (p,) = things.problems
    assert (p.record, p.field, p.value) == ("annotation 999", "category_id", 101) and "'sky'" in p.message


def test_keypoints_semantic_panoptic_and_max_images(root):
    kp = load_split(root, "train", "keypoints")
    assert kp.categories.names == ["person"] and kp.keypoint_set.num_keypoints == 17
    assert kp.annotations and all(a.keypoints.shape == (17, 3) for a in kp.annotations)
    sem = load_split(root, "val", "semantic")
    assert len(sem.categories) == 12 and sem.semantic_root == root / "semantic" / "val" and len(sem.images) == 2
    pan = load_split(root, "val", "panoptic")
    assert sorted(pan.panoptic) == sorted(im.id for im in pan.images)
    two = load_split(root, "train", "instances", max_images=2)
    ids = {im.id for im in two.images}
    assert len(ids) == 2 and {a.image_id for a in two.annotations} <= ids
    assert len(two.annotations) == sum(a.image_id in ids for a in load_split(root, "train", "instances").annotations)


def test_missing_label_pngs_and_files_are_named(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    first = sorted((copy / "semantic" / "train").iterdir())[0]
    first.unlink()
    sem = load_split(copy, "train", "semantic")
    assert len(sem.images) == 3 and sem.problems[0].field == "semantic" and "no label PNG" in sem.problems[0].message
    with pytest.raises(DataError, match="no label PNG for this image"):
        load_split(copy, "train", "semantic", strict=True)
    (copy / "annotations" / "person_keypoints_train.json").unlink()
    with pytest.raises(DataError, match=r"cannot load keypoints of split 'train': .*person_keypoints_train.json "
                                        r"not found"):
        load_split(copy, "train", "keypoints")
    assert missing(split_files(copy, "test"), "instances").startswith("image folder")
    with pytest.raises(DataError, match="dataset not found"):
        load_split(tmp_path / "nowhere", "val")
    with pytest.raises(DataError, match="give its image folder"):
        load_split(copy / "annotations" / "instances_val.json")
    assert load_split(copy / "annotations" / "instances_val.json", kind="keypoints",
                      images=copy / "images" / "val").categories.names == ["person"]
    data = json.loads((copy / "annotations" / "instances_val.json").read_text())
    for c in data["categories"]:
        c.pop("keypoints", None), c.pop("skeleton", None)
    (copy / "plain.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="no category has keypoints"):
        load_split(copy / "plain.json", kind="keypoints", images=copy / "images" / "val")


def test_dataset_yaml_split_paths_are_honoured(root, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    (moved / "pics").mkdir()
    shutil.move(moved / "images" / "val", moved / "pics" / "v")
    meta = yaml.safe_load((moved / "dataset.yaml").read_text())
    meta["splits"]["val"]["images"] = "pics/v"
    (moved / "dataset.yaml").write_text(yaml.safe_dump(meta))
    aset = load_split(moved, "val", "instances")
    assert aset.image_root == moved / "pics" / "v" and len(aset.images) == 2 and not aset.problems
