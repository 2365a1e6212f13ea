"""COCO JSON: reading into sceneparse's conventions, writing back, and pycocotools as the reference."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from format_fixtures import coco_instances, coco_keypoints, dump, random_coco
from pycocotools.coco import COCO

from sceneparse.data.formats import read_coco, to_coco_dict, write_coco
from sceneparse.errors import FormatError
from sceneparse.structures.keypoints import COCO_PERSON


def _pycoco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_read_converts_boxes_labels_and_keeps_extras(tmp_path, image_root):
    aset = read_coco(dump(coco_instances(), tmp_path / "a.json"), image_root)
    assert aset.problems == []
    assert aset.categories.ids == [1, 3, 7] and aset.categories.names == ["cat", "dog", "car"]
    a = {o.id: o for o in aset.annotations}
    # XYWH (2.5, 3.25, 10, 12.5) -> XYXY (2.5, 3.25, 12.5, 15.75)
    np.testing.assert_allclose(a[11].bbox, [2.5, 3.25, 12.5, 15.75])
    assert a[11].bbox.dtype == np.float32
    assert [a[i].label for i in (11, 12, 21, 22, 31)] == [0, 2, 1, 0, 1]
    assert a[22].iscrowd and not a[21].iscrowd
    assert a[12].extra == {"attributes": {"occluded": True}}
    assert aset.images[0].extra == {"license": 2}
    assert [o.id for o in aset.annotations_of(1)] == [11, 12]
    assert aset.keypoint_set is None


def test_round_trip_boxes_segmentations_against_pycocotools(tmp_path, image_root):
    src = dump(coco_instances(), tmp_path / "a.json")
    out = tmp_path / "out" / "b.json"
    res = write_coco(read_coco(src, image_root, strict=True), out)
    assert res.files == [out] and res.images == 3 and res.objects == 5
    ref, got = _pycoco(src), _pycoco(out)
    assert sorted(ref.getAnnIds()) == sorted(got.getAnnIds())
    kinds = set()
    for aid in ref.getAnnIds():
        ra, ga = ref.anns[aid], got.anns[aid]
        np.testing.assert_allclose(ga["bbox"], ra["bbox"], atol=1e-4)
        assert ga["category_id"] == ra["category_id"] and ga["iscrowd"] == ra["iscrowd"]
        assert ga["area"] == pytest.approx(ra["area"])
        seg = ra["segmentation"]
        kinds.add("poly" if isinstance(seg, list) else type(seg["counts"]).__name__)
        m_ref, m_got = ref.annToMask(ra), got.annToMask(ga)
        assert m_ref.sum() > 0
        np.testing.assert_array_equal(m_got, m_ref)
    assert kinds == {"poly", "str", "list"}  # polygons, compressed and uncompressed RLE all covered


def test_write_computes_area_from_mask_or_box_and_xywh(tmp_path):
    data = coco_instances()
    aset = read_coco(dump(data, tmp_path / "a.json"))
    for o in aset.annotations:
        o.area = None
    out = {a["id"]: a for a in to_coco_dict(aset)["annotations"]}
    ref = _pycoco(tmp_path / "a.json")
    for aid, a in out.items():
        assert a["area"] == pytest.approx(float(ref.annToMask(ref.anns[aid]).sum())), aid
    aset.annotations[0].segmentation = None
    assert to_coco_dict(aset)["annotations"][0]["area"] == pytest.approx(10.0 * 12.5)
    assert "segmentation" not in to_coco_dict(aset)["annotations"][0]


def test_random_boxes_round_trip(tmp_path):
    src = random_coco()
    aset = read_coco(dump(src, tmp_path / "r.json"), strict=True)
    back = to_coco_dict(aset)
    assert len(back["annotations"]) == len(src["annotations"])
    for a, b in zip(src["annotations"], back["annotations"]):
        assert b["id"] == a["id"] and b["category_id"] == a["category_id"]
        np.testing.assert_allclose(b["bbox"], a["bbox"], atol=1e-3)


def test_person_keypoints(tmp_path):
    src = coco_keypoints()
    aset = read_coco(dump(src, tmp_path / "k.json"), strict=True)
    assert aset.keypoint_set == COCO_PERSON
    assert aset.categories.categories[0].keypoints == COCO_PERSON.names
    for o, a in zip(aset.annotations, src["annotations"]):
        assert o.keypoints.shape == (17, 3) and o.keypoints.dtype == np.float32
        np.testing.assert_allclose(o.keypoints.ravel(), a["keypoints"], atol=1e-5)
    out = tmp_path / "k2.json"
    write_coco(aset, out)
    written = json.loads(out.read_text())
    for a, b in zip(src["annotations"], written["annotations"]):
        np.testing.assert_allclose(b["keypoints"], a["keypoints"], atol=1e-4)
        assert b["num_keypoints"] == a["num_keypoints"]
        assert all(isinstance(v, int) for v in b["keypoints"][2::3])
    assert written["categories"][0]["skeleton"] == src["categories"][0]["skeleton"]
    # pycocotools reads it as a keypoint file
    ref = _pycoco(out)
    assert ref.loadCats(1)[0]["keypoints"] == list(COCO_PERSON.names)


def test_custom_keypoint_layout(tmp_path):
    data = {"images": [{"id": 1, "file_name": "x.png", "height": 10, "width": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [1, 1, 5, 5],
                             "keypoints": [1, 2, 2, 3, 4, 1, 0, 0, 0]}],
            "categories": [{"id": 4, "name": "hand", "keypoints": ["left_tip", "right_tip", "palm"],
                            "skeleton": [[1, 3], [2, 3]]}]}
    aset = read_coco(dump(data, tmp_path / "h.json"), strict=True)
    ks = aset.keypoint_set
    assert ks.names == ("left_tip", "right_tip", "palm")
    assert ks.skeleton == ((0, 2), (1, 2))  # 1-based in the file, 0-based in memory
    assert ks.flip_index == (1, 0, 2)


@pytest.mark.parametrize("mutate, record, field", [
    (lambda d: d["annotations"][0].__setitem__("bbox", "1 2 3 4"), "annotation 11", "bbox"),
    (lambda d: d["annotations"][0].__setitem__("bbox", [1, 2, 3]), "annotation 11", "bbox"),
    (lambda d: d["annotations"][1].__setitem__("bbox", [1, 2, "3", 4]), "annotation 12", "bbox"),
    (lambda d: d["annotations"][2].__setitem__("image_id", "2"), "annotation 21", "image_id"),
    (lambda d: d["annotations"][0].__setitem__("segmentation", [[1, 2, None, 4, 5, 6]]), "annotation 11",
     "segmentation[0]"),
    (lambda d: d["annotations"][2]["segmentation"].__setitem__("counts", 5), "annotation 21", "segmentation.counts"),
    (lambda d: d["annotations"][4].__setitem__("iscrowd", 2), "annotation 31", "iscrowd"),
    (lambda d: d["images"][1].__setitem__("height", 24.5), "image 2", "height"),
    (lambda d: d["images"][2].pop("file_name"), "image 3", "file_name"),
    (lambda d: d["categories"][1].__setitem__("id", None), "category #1", "id"),
    (lambda d: d["annotations"].__setitem__(3, [1, 2]), "annotation #3", None),
])
def test_wrong_types_raise_format_error_naming_record_and_field(tmp_path, mutate, record, field):
    data = coco_instances()
    mutate(data)
    path = dump(data, tmp_path / "bad.json")
    with pytest.raises(FormatError) as e:
        read_coco(path)
    p = e.value.problems[0]
    assert (p.file, p.record, p.field) == (str(path), record, field)
    assert str(path) in str(e.value)


def test_bad_json_raises_format_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [ {"id": 1,, }')
    with pytest.raises(FormatError, match="invalid JSON") as e:
        read_coco(path)
    assert e.value.problems[0].file == str(path)
    path.write_text("[1, 2]")
    with pytest.raises(FormatError, match="top level must be a JSON object"):
        read_coco(path)
    with pytest.raises(FormatError, match="file not found"):
        read_coco(tmp_path / "nope.json")


def test_write_is_atomic(tmp_path):
    aset = read_coco(dump(coco_instances(), tmp_path / "a.json"))
    out = tmp_path / "o.json"
    write_coco(aset, out)
    before = out.read_bytes()
    aset.annotations[-1].extra["bad"] = object()  # not JSON-serialisable: fails half-way
    with pytest.raises(TypeError):
        write_coco(aset, out)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.json", "o.json"]  # no temp file left behind
