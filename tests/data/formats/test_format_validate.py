"""Validation: every problem names file, record and field; strict raises at the first; lenient
repairs and lists every change; nothing is dropped silently."""
import numpy as np
import pytest
from format_fixtures import coco_instances, coco_keypoints, dump

from sceneparse.conventions import Category, CategoryMap
from sceneparse.data.formats import read_coco, validate_annotation_set
from sceneparse.data.records import AnnotationSet, ImageRecord, ObjectRecord
from sceneparse.errors import DataError, FormatError


def _ann(data, aid):
    return next(a for a in data["annotations"] if a["id"] == aid)


def _set(data, aid, key, value):
    _ann(data, aid)[key] = value


# (mutation, record, field, message fragment, repaired fragment, ids of annotations dropped)
CASES = {
    "non_positive_width": (lambda d: _set(d, 21, "bbox", [5.0, 6.0, 0.0, 9.0]), "annotation 21", "bbox",
                           "non-positive box size", "dropped the object", {21}),
    "negative_height": (lambda d: _set(d, 11, "bbox", [2.0, 3.0, 4.0, -1.0]), "annotation 11", "bbox",
                        "non-positive box size", "dropped the object", {11}),
    "box_outside": (lambda d: _set(d, 31, "bbox", [-2.0, 30.0, 10.0, 20.0]), "annotation 31", "bbox",
                    "outside the 28x40 (WxH) image", "clipped to [0.0, 30.0, 8.0, 40.0]", set()),
    "box_fully_outside": (lambda d: _set(d, 12, "bbox", [40.0, 4.0, 5.0, 5.0]), "annotation 12", "bbox",
                          "outside", "nothing of it lies inside", {12}),
    "non_finite_box": (lambda d: _set(d, 12, "bbox", [1.0, 2.0, float("inf"), 3.0]), "annotation 12", "bbox",
                       "non-finite", "dropped the object", {12}),
    "unknown_category": (lambda d: _set(d, 21, "category_id", 99), "annotation 21", "category_id",
                         "unknown category id", "dropped the annotation", {21}),
    "unknown_image": (lambda d: _set(d, 21, "image_id", 42), "annotation 21", "image_id",
                      "unknown image id", "dropped the object", {21}),
    "duplicate_annotation_id": (lambda d: _set(d, 31, "id", 11), "annotation 11", "id",
                                "duplicate annotation id (first used by annotation 11)", "renumbered to 23", set()),
    "polygon_two_points": (lambda d: _ann(d, 12)["segmentation"].__setitem__(1, [24.0, 14.0, 30.0, 14.0]),
                           "annotation 12", "segmentation[1]", "fewer than 3 points (2)", "dropped the ring", set()),
    "polygon_odd": (lambda d: _set(d, 31, "segmentation", [[1.0, 20.5, 27.0, 20.5, 14.0]]), "annotation 31",
                    "segmentation[0]", "odd number of coordinates", "dropped the ring", {31}),
    "rle_size": (lambda d: _ann(d, 21)["segmentation"].__setitem__("size", [32, 32]), "annotation 21",
                 "segmentation", "RLE size [32, 32] is not the image size [24, 40]", "dropped the object", {21}),
    "keypoints_without_layout": (lambda d: _set(d, 11, "keypoints", [1, 2, 2]), "annotation 11", "keypoints",
                                 "no keypoint layout", "removed the keypoints", set()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_problem_lenient_and_strict(tmp_path, image_root, case):
    mutate, record, field, message, repaired, dropped = CASES[case]
    data = coco_instances()
    mutate(data)
    path = dump(data, tmp_path / "a.json")
    n_in = len(data["annotations"])

    aset = read_coco(path, image_root)
    assert len(aset.problems) == 1 + (case == "polygon_odd"), [str(p) for p in aset.problems]
    p = aset.problems[0]
    assert (p.file, p.record, p.field) == (str(path), record, field)
    assert message in p.message and repaired in p.repaired
    kept = {a.id for a in aset.annotations}
    assert len(kept) == n_in - len(dropped)  # every input annotation is kept or listed as dropped
    assert not (dropped & kept) or case == "duplicate_annotation_id"

    with pytest.raises(DataError) as e:
        read_coco(path, image_root, strict=True)
    assert not isinstance(e.value, FormatError)
    q = e.value.problems[0]
    assert (q.file, q.record, q.field, q.repaired) == (str(path), record, field, None)
    assert message in q.message


def test_lenient_repairs_are_applied(tmp_path, image_root):
    data = coco_instances()
    _set(data, 31, "bbox", [-2.0, 30.0, 10.0, 20.0])  # XYXY (-2, 30, 8, 50) in a 28x40 image
    _ann(data, 12)["segmentation"][1] = [24.0, 14.0, 30.0, 14.0]
    _set(data, 22, "id", 11)
    aset = read_coco(dump(data, tmp_path / "a.json"), image_root)
    a = {o.id: o for o in aset.annotations}
    np.testing.assert_allclose(a[31].bbox, [0.0, 30.0, 8.0, 40.0])
    assert a[12].segmentation == [[16.0, 4.0, 22.0, 4.0, 22.0, 12.0, 16.0, 12.0]]
    assert sorted(a) == [11, 12, 21, 31, 32]  # the second id 11 became max id + 1
    assert a[32].iscrowd and not a[11].iscrowd  # the renumbered one is the former crowd annotation 22


def test_keypoints_wrong_length(tmp_path):
    data = coco_keypoints()
    data["annotations"][1]["keypoints"] = data["annotations"][1]["keypoints"][:-3]  # 16 keypoints
    path = dump(data, tmp_path / "k.json")
    aset = read_coco(path)
    (p,) = aset.problems
    assert (p.file, p.record, p.field) == (str(path), "annotation 2", "keypoints")
    assert "48 values, expected 17 keypoints x 3 = 51" in p.message
    kp = {o.id: o.keypoints for o in aset.annotations}[2]
    assert kp.shape == (17, 3) and not kp.any()
    with pytest.raises(DataError, match="annotation 2: keypoints"):
        read_coco(path, strict=True)


def test_duplicate_image_id(tmp_path, image_root):
    data = coco_instances()
    data["images"][2]["id"] = 2
    _set(data, 31, "image_id", 2)
    path = dump(data, tmp_path / "a.json")
    aset = read_coco(path, image_root)
    p = aset.problems[0]
    assert (p.file, p.record, p.field) == (str(path), "image 2", "id")
    assert "first used by image 2" in p.message and p.repaired == "dropped this image record"
    assert [im.file_name for im in aset.images] == ["img_a.png", "img_b.png"]
    with pytest.raises(DataError, match="duplicate image id"):
        read_coco(path, image_root, strict=True)


def test_missing_image_drops_it_and_lists_each_object(tmp_path, image_root):
    (image_root / "img_b.png").unlink()
    path = dump(coco_instances(), tmp_path / "a.json")
    aset = read_coco(path, image_root)
    first = aset.problems[0]
    assert (first.file, first.record, first.field) == (str(path), "image 2", "file_name")
    assert "image file not found" in first.message
    assert [(p.record, p.field) for p in aset.problems[1:]] == [("annotation 21", "image_id"),
                                                                 ("annotation 22", "image_id")]
    assert {im.id for im in aset.images} == {1, 3}
    assert {a.image_id for a in aset.annotations} == {1, 3}
    with pytest.raises(DataError, match="image file not found"):
        read_coco(path, image_root, strict=True)
    # without an image root, existence is not checked
    assert read_coco(path).problems == []


def test_unreadable_and_wrong_size_images_with_check_images(tmp_path, image_root):
    (image_root / "img_a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    data = coco_instances()
    data["images"][2]["height"] = 41  # file is 40x28
    _set(data, 31, "bbox", [1.0, 20.5, 26.0, 19.5])
    path = dump(data, tmp_path / "a.json")
    assert not any("unreadable" in p.message for p in read_coco(path, image_root).problems)
    aset = read_coco(path, image_root, check_images=True)
    by_record = {(p.record, p.field): p for p in aset.problems}
    p = by_record[("image 1", "file_name")]
    assert p.file == str(path) and "unreadable image" in p.message
    p = by_record[("image 3", "height/width")]
    assert "is 40x28 (HxW) but the record says 41x28" in p.message
    assert [im.id for im in aset.images] == [2]
    assert {("annotation 11", "image_id"), ("annotation 12", "image_id"), ("annotation 31", "image_id")} <= set(by_record)
    with pytest.raises(DataError, match="unreadable image"):
        read_coco(path, image_root, check_images=True, strict=True)


def test_validate_a_set_built_in_code():
    cats = CategoryMap([Category(1, "a"), Category(2, "b")])
    aset = AnnotationSet(cats, images=[ImageRecord(1, "x.png", 10, 20)], source="memory", annotations=[
        ObjectRecord(1, 1, 0, np.array([1, 1, 5, 5], np.float32)),
        ObjectRecord(2, 1, 2, np.array([1, 1, 5, 5], np.float32)),  # label 2 of 2 classes
        ObjectRecord(3, 1, 1, np.array([15, 2, 25, 8], np.float32)),  # x beyond width 20
    ])
    problems = validate_annotation_set(aset)
    assert [(p.file, p.record, p.field) for p in problems] == [("memory", "annotation 2", "category"),
                                                               ("memory", "annotation 3", "bbox")]
    assert aset.problems == problems
    np.testing.assert_allclose(aset.annotations[1].bbox, [15, 2, 20, 8])
    assert [a.id for a in aset.annotations] == [1, 3]


def test_rounding_noise_at_the_border_is_snapped_not_reported():
    cats = CategoryMap([Category(1, "a")])
    aset = AnnotationSet(cats, images=[ImageRecord(1, "x.png", 10, 20)], annotations=[
        ObjectRecord(1, 1, 0, np.array([-1e-9, 2, 20.0004, 10.0], np.float64)),
        ObjectRecord(2, 1, 0, np.array([-0.002, 2, 5, 6], np.float32)),
    ])
    problems = validate_annotation_set(aset, strict=False)
    assert [(p.record, p.field) for p in problems] == [("annotation 2", "bbox")]  # 2e-3 px is beyond 1e-3
    np.testing.assert_array_equal(aset.annotations[0].bbox, np.array([0, 2, 20, 10], np.float32))
