"""YOLO txt: hand-computed lines, COCO -> YOLO -> COCO round trips (detect, segment, pose), problems."""
import contextlib
import io

import numpy as np
import pytest
import yaml
from format_fixtures import coco_instances, coco_keypoints, dump, random_coco, write_images
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from sceneparse.data.formats import merge_rings, read_coco, read_yolo, to_coco_dict, write_coco, write_yolo
from sceneparse.data.formats.yolo import default_labels_dir, read_data_yaml
from sceneparse.errors import DataError, FormatError
from sceneparse.structures.keypoints import COCO_PERSON


def _by_file(aset):
    """{file_name: sorted list of (label, bbox)} to compare sets whose ids differ."""
    name = {im.id: im.file_name for im in aset.images}
    out = {}
    for a in aset.annotations:
        out.setdefault(name[a.image_id], []).append(a)
    return out


def test_detect_line_is_hand_computed(tmp_path, image_root):
    data = coco_instances()
    # image 2 is 24x40 (HxW); XYXY (4, 8, 20, 24) -> cx 12/40, cy 16/24, w 16/40, h 16/24
    data["annotations"] = [{"id": 1, "image_id": 2, "category_id": 7, "bbox": [4, 8, 16, 16], "iscrowd": 0}]
    aset = read_coco(dump(data, tmp_path / "a.json"), image_root, strict=True)
    res = write_yolo(aset, tmp_path / "y")
    assert (tmp_path / "y/labels/img_b.txt").read_text() == "2 0.3 0.66666667 0.4 0.66666667\n"
    assert (tmp_path / "y/labels/img_a.txt").read_text() == ""  # background image: empty label file
    assert res.images == 3 and res.objects == 1 and res.lost == []
    meta = yaml.safe_load((tmp_path / "y/data.yaml").read_text())
    assert meta["names"] == {0: "cat", 1: "dog", 2: "car"} and meta["nc"] == 3
    assert meta["category_ids"] == [1, 3, 7]


@pytest.mark.parametrize("make", [coco_instances, random_coco], ids=["hand", "random"])
def test_coco_yolo_coco_boxes_within_1e_3(tmp_path, image_root, make):
    src = make()
    for a in src["annotations"]:
        a.pop("segmentation", None)
        a["iscrowd"] = 0
    aset = read_coco(dump(src, tmp_path / "a.json"), image_root, strict=True)
    write_yolo(aset, tmp_path / "y")
    back = read_yolo(image_root, tmp_path / "y/labels", tmp_path / "y/data.yaml", strict=True)
    assert back.categories.ids == [1, 3, 7] and back.categories.names == ["cat", "dog", "car"]
    a_by, b_by = _by_file(aset), _by_file(back)
    assert sorted(a_by) == sorted(b_by)
    n = 0
    for f in a_by:
        assert [o.label for o in a_by[f]] == [o.label for o in b_by[f]]
        np.testing.assert_allclose(np.stack([o.bbox for o in b_by[f]]), np.stack([o.bbox for o in a_by[f]]), atol=1e-3)
        n += len(a_by[f])
    assert n == len(src["annotations"])
    # and written as COCO again, ids of categories survive
    out = to_coco_dict(back)
    assert sorted({a["category_id"] for a in out["annotations"]}) == sorted({a["category_id"] for a in src["annotations"]})


def test_crowd_regions_are_listed_as_lost(tmp_path, image_root):
    aset = read_coco(dump(coco_instances(), tmp_path / "a.json"), image_root)
    res = write_yolo(aset, tmp_path / "y")
    assert [(p.record, p.field, p.repaired) for p in res.lost] == [("annotation 22", "iscrowd", "not written")]
    assert res.lost[0].file == str(tmp_path / "y/labels/img_b.txt")
    assert res.objects == 4


def test_segment_polygons_survive(tmp_path, image_root):
    src = coco_instances()
    aset = read_coco(dump(src, tmp_path / "a.json"), image_root, strict=True)
    res = write_yolo(aset, tmp_path / "y", task="segment")
    # crowd not written; the compressed RLE (ann 21) is traced to a polygon
    assert sorted((p.record, p.field) for p in res.lost) == [("annotation 21", "segmentation"),
                                                             ("annotation 22", "iscrowd")]
    line = (tmp_path / "y/labels/img_a.txt").read_text().splitlines()[0]
    # ann 11 on the 32x32 image: ring (2.5, 3.25), (12.5, 3.25), ... normalised by 32
    assert line == "0 0.078125 0.1015625 0.390625 0.1015625 0.390625 0.4921875 0.078125 0.4921875"
    back = read_yolo(image_root, tmp_path / "y/labels", tmp_path / "y/data.yaml", task="segment", strict=True)
    out = tmp_path / "back.json"
    write_coco(back, out)
    with contextlib.redirect_stdout(io.StringIO()):
        ref, got = COCO(str(tmp_path / "a.json")), COCO(str(out))
    fname = {im["file_name"]: im["id"] for im in got.dataset["images"]}
    got_by_img = {}
    for a in got.dataset["annotations"]:
        got_by_img.setdefault(a["image_id"], []).append(a)
    for ra in ref.dataset["annotations"]:
        if ra["iscrowd"]:
            continue
        im = ref.imgs[ra["image_id"]]
        cands = got_by_img[fname[im["file_name"]]]
        m_ref = ref.annToMask(ra)
        ious = [(m_ref & got.annToMask(g)).sum() / (m_ref | got.annToMask(g)).sum() for g in cands]
        best = cands[int(np.argmax(ious))]
        if isinstance(ra["segmentation"], list) and len(ra["segmentation"]) == 1:
            # single rings come back exactly (within 1e-3 px) and rasterise identically
            np.testing.assert_allclose(best["segmentation"][0], ra["segmentation"][0], atol=1e-3)
            assert max(ious) == 1.0
        else:
            assert max(ious) >= 0.97, (ra["id"], max(ious))  # merged rings / traced RLE


def test_merge_rings_rasterises_to_the_union():
    rings = [np.array([[2, 2], [10, 2], [10, 9], [2, 9]], float),
             np.array([[20, 4], [28, 4], [28, 14], [20, 14]], float),
             np.array([[6, 18], [14, 18], [10, 28]], float)]
    merged = merge_rings(rings)
    assert len(merged) == sum(len(r) for r in rings) + 2 * 2  # each bridge repeats two vertices
    union = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([r.ravel().tolist() for r in rings], 32, 32)))
    one = mask_utils.decode(mask_utils.frPyObjects([merged.ravel().tolist()], 32, 32))[..., 0]
    assert union.sum() > 150
    assert np.abs(union.astype(int) - one).sum() <= 2  # bridges are zero-width


def test_pose_keypoints_survive(tmp_path):
    root = write_images(tmp_path / "images")
    src = coco_keypoints()
    aset = read_coco(dump(src, tmp_path / "k.json"), root, strict=True)
    write_yolo(aset, tmp_path / "y", task="pose")
    meta = yaml.safe_load((tmp_path / "y/data.yaml").read_text())
    assert meta["kpt_shape"] == [17, 3] and meta["flip_idx"] == list(COCO_PERSON.flip_index)
    first = (tmp_path / "y/labels/img_b.txt").read_text().splitlines()[0].split()
    assert len(first) == 5 + 17 * 3
    kp0 = np.asarray(src["annotations"][0]["keypoints"], float).reshape(17, 3)
    np.testing.assert_allclose(np.asarray(first[5::3], float) * 40, kp0[:, 0], atol=1e-4)  # x / W
    np.testing.assert_allclose(np.asarray(first[6::3], float) * 24, kp0[:, 1], atol=1e-4)  # y / H
    back = read_yolo(root, tmp_path / "y/labels", tmp_path / "y/data.yaml", task="pose", strict=True)
    assert back.keypoint_set == COCO_PERSON
    assert len(back.annotations) == 3
    for a, b in zip(aset.annotations, back.annotations):
        np.testing.assert_allclose(b.keypoints[:, :2], a.keypoints[:, :2], atol=1e-3)
        np.testing.assert_array_equal(b.keypoints[:, 2], a.keypoints[:, 2])
        np.testing.assert_allclose(b.bbox, a.bbox, atol=1e-3)


def test_pose_with_two_values_per_keypoint(tmp_path):
    root = write_images(tmp_path / "images", [("1.png", 20, 10)])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/1.txt").write_text("0 0.5 0.5 0.4 0.5 0.1 0.2 0 0 0.9 0.95\n")
    (tmp_path / "data.yaml").write_text("names: [hand]\nkpt_shape: [3, 2]\n")
    aset = read_yolo(root, None, tmp_path / "data.yaml", task="pose", strict=True)
    assert aset.images[0].id == 1  # numeric stem -> id
    kp = aset.annotations[0].keypoints
    np.testing.assert_allclose(kp, [[1.0, 4.0, 2.0], [0.0, 0.0, 0.0], [9.0, 19.0, 2.0]], atol=1e-6)
    np.testing.assert_allclose(aset.annotations[0].bbox, [3.0, 5.0, 7.0, 15.0], atol=1e-6)


def test_problems_name_label_file_and_line(tmp_path):
    root = write_images(tmp_path / "images", [("a.png", 10, 20), ("b.png", 10, 20)])
    lab = tmp_path / "labels"
    lab.mkdir()
    (lab / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n\n3 0.5 0.5 0.2 0.2\n1 0.95 0.5 0.2 0.4\n1 0.5 0.5 0 0.4\n")
    (lab / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    aset = read_yolo(root, lab, ["x", "y"])
    got = [(p.file, p.record, p.field) for p in aset.problems]
    assert got == [(str(lab / "a.txt"), "line 3", "class"),
                   (str(lab / "orphan.txt"), None, None),
                   (str(lab / "a.txt"), "line 4", "box"),
                   (str(lab / "a.txt"), "line 5", "box")]
    assert "outside" in aset.problems[2].message and "clipped to [17.0, 3.0, 20.0, 7.0]" in aset.problems[2].repaired
    assert "non-positive box size" in aset.problems[3].message
    assert len(aset.annotations) == 2 and [im.file_name for im in aset.images] == ["a.png", "b.png"]
    assert [im.id for im in aset.images] == [1, 2]
    with pytest.raises(DataError) as e:
        read_yolo(root, lab, ["x", "y"], strict=True)
    assert e.value.problems[0].record == "line 3"


def test_segment_polygon_with_two_points(tmp_path):
    root = write_images(tmp_path / "images", [("a.png", 10, 20)])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.9\n0 0.1 0.1 0.5 0.9\n")
    aset = read_yolo(root, None, ["x"], task="segment")
    (p,) = aset.problems
    assert (p.file, p.record, p.field) == (str(tmp_path / "labels/a.txt"), "line 2", "polygon")
    assert "fewer than 3 points (2)" in p.message
    assert aset.annotations[0].segmentation == [[2.0, 1.0, 10.0, 1.0, 10.0, 9.0]]
    np.testing.assert_allclose(aset.annotations[0].bbox, [2, 1, 10, 9])


def test_pose_wrong_length_is_repaired(tmp_path):
    root = write_images(tmp_path / "images", [("a.png", 10, 20)])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text("0 0.5 0.5 0.5 0.5 0.1 0.1 2 0.2 0.2\n")
    aset = read_yolo(root, None, ["p"], task="pose", keypoint_set=COCO_PERSON)
    (p,) = aset.problems
    assert (p.record, p.field) == ("line 1", "keypoints") and "5 values, expected 17 keypoints x 3" in p.message
    assert aset.annotations[0].keypoints.shape == (17, 3)


@pytest.mark.parametrize("text, task, record, field", [
    ("0 0.5 0.5 0.2\n", "detect", "line 1", None),
    ("0 0.5 0.5 0.2 0.2 0.3 0.3\n", "detect", "line 1", None),
    ("0 0.5 0.5 0.2 0.2\n1 0.5 abc 0.2 0.2\n", "detect", "line 2", "value"),
    ("1.5 0.5 0.5 0.2 0.2\n", "detect", "line 1", "class"),
    ("0 0.1 0.1 0.5 0.1 0.5\n", "segment", "line 1", "polygon"),
])
def test_malformed_lines_raise_format_error(tmp_path, text, task, record, field):
    root = write_images(tmp_path / "images", [("a.png", 10, 20)])
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text(text)
    with pytest.raises(FormatError) as e:
        read_yolo(root, None, ["x", "y"], task=task)
    p = e.value.problems[0]
    assert (p.file, p.record, p.field) == (str(tmp_path / "labels/a.txt"), record, field)


def test_data_yaml_forms(tmp_path):
    y = tmp_path / "d.yaml"
    y.write_text("names: {0: a, 1: b}\nnc: 2\n")
    assert read_data_yaml(y).names == ["a", "b"]
    y.write_text("names: {0: a, 2: b}\n")
    with pytest.raises(FormatError, match="0..C-1"):
        read_data_yaml(y)
    y.write_text("names: [a, b]\nnc: 3\n")
    with pytest.raises(FormatError, match="nc=3"):
        read_data_yaml(y)
    y.write_text("names: [a\n")
    with pytest.raises(FormatError, match="invalid YAML"):
        read_data_yaml(y)
    assert str(default_labels_dir(tmp_path / "ds/images/train")) == str(tmp_path / "ds/labels/train")


def test_unreadable_image_is_listed(tmp_path):
    root = write_images(tmp_path / "images", [("a.png", 10, 20)])
    (root / "b.png").write_bytes(b"garbage")
    aset = read_yolo(root, None, ["x"])
    (p,) = aset.problems
    assert (p.file, p.record, p.field) == (str(root / "b.png"), "image 2", "image")
    assert [im.file_name for im in aset.images] == ["a.png"]


def test_image_size_follows_exif_orientation(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 10 high, displayed rotated: 10 wide x 20 high
    Image.new("RGB", (20, 10)).save(root / "r.jpg", exif=exif)
    Image.new("RGB", (20, 10)).save(root / "s.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/r.txt").write_text("0 0.5 0.5 0.4 0.5\n")
    aset = read_yolo(root, None, ["x"], strict=True, check_images=True)
    assert [(im.file_name, im.height, im.width) for im in aset.images] == [("r.jpg", 20, 10), ("s.jpg", 10, 20)]
    np.testing.assert_allclose(aset.annotations[0].bbox, [3.0, 5.0, 7.0, 15.0])
