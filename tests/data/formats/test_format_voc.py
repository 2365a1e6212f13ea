"""Pascal VOC XML: 1-based inclusive pixels <-> continuous XYXY, flags, round trips, problems."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from format_fixtures import coco_instances, dump, random_coco, write_images

from sceneparse.data.formats import VOC_CLASSES, read_coco, read_voc, to_coco_dict, write_voc
from sceneparse.errors import DataError, FormatError

XML = """<annotation>
  <folder>VOC2007</folder><filename>{name}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  <segmented>1</segmented>
  {objects}
</annotation>"""
OBJ = ("<object><name>{cls}</name><pose>Left</pose><truncated>{t}</truncated><difficult>{d}</difficult>"
       "<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>")


def _voc_root(tmp_path, objects_by_image, sizes=None):
    """VOC root with Annotations/ and JPEGImages/ (PNG files, VOC does not mind)."""
    sizes = sizes or {}
    images = [(f"{stem}.png", *sizes.get(stem, (20, 30))) for stem in objects_by_image]
    write_images(tmp_path / "VOC" / "JPEGImages", images)
    ann = tmp_path / "VOC" / "Annotations"
    ann.mkdir(parents=True)
    for (name, h, w), objs in zip(images, objects_by_image.values()):
        body = "".join(OBJ.format(cls=c, b=b, t=t, d=d) for c, b, t, d in objs)
        (ann / f"{name[:-4]}.xml").write_text(XML.format(name=name, w=w, h=h, objects=body))
    return tmp_path / "VOC"


def test_read_maps_one_based_inclusive_pixels(tmp_path):
    root = _voc_root(tmp_path, {"2007_000001": [("dog", (1, 1, 10, 20), 0, 1), ("person", (5, 3, 30, 7), 1, 0)],
                                "2007_000002": [("cat", (2.5, 3, 4.5, 9), 0, 0)]})
    aset = read_voc(root, strict=True, check_images=True)
    assert aset.image_root == root / "JPEGImages"
    assert aset.categories.names == list(VOC_CLASSES) and aset.categories.ids == list(range(1, 21))
    a = aset.annotations
    # xmin=1 is the first pixel column: it starts at x=0; xmax=10 is the 10th column: it ends at x=10
    np.testing.assert_allclose(a[0].bbox, [0, 0, 10, 20])
    np.testing.assert_allclose(a[1].bbox, [4, 2, 30, 7])
    np.testing.assert_allclose(a[2].bbox, [1.5, 2, 4.5, 9])
    assert [o.label for o in a] == [VOC_CLASSES.index(n) for n in ("dog", "person", "cat")]
    assert a[0].extra == {"difficult": True, "truncated": False, "pose": "Left"}
    assert a[1].extra["truncated"] is True
    assert [im.id for im in aset.images] == [1, 2] and aset.images[0].extra == {"segmented": True}
    assert [o.image_id for o in a] == [1, 1, 2]


def test_write_back_to_one_based(tmp_path):
    root = _voc_root(tmp_path, {"x": [("dog", (1, 1, 10, 20), 0, 1), ("cat", (2.5, 3, 4.5, 9), 1, 0)]})
    aset = read_voc(root, strict=True)
    res = write_voc(aset, tmp_path / "out")
    assert res.files == [tmp_path / "out/x.xml"] and res.objects == 2 and res.lost == []
    xml = ET.parse(tmp_path / "out/x.xml").getroot()
    objs = xml.findall("object")
    assert [[o.find(f"bndbox/{t}").text for t in ("xmin", "ymin", "xmax", "ymax")] for o in objs] == \
        [["1", "1", "10", "20"], ["2.5", "3", "4.5", "9"]]
    assert [o.find("difficult").text for o in objs] == ["1", "0"]
    assert [o.find("truncated").text for o in objs] == ["0", "1"]
    assert xml.find("size/width").text == "30" and xml.find("filename").text == "x.png"
    again = read_voc(tmp_path / "out", tmp_path / "VOC/JPEGImages", strict=True)
    for o1, o2 in zip(aset.annotations, again.annotations):
        np.testing.assert_array_equal(o1.bbox, o2.bbox)
        assert o1.extra == o2.extra and o1.label == o2.label


@pytest.mark.parametrize("make", [coco_instances, random_coco], ids=["hand", "random"])
def test_coco_voc_coco_boxes_within_1e_3(tmp_path, image_root, make):
    src = make()
    aset = read_coco(dump(src, tmp_path / "a.json"), image_root, strict=True)
    res = write_voc(aset, tmp_path / "xml")
    n_masks = sum(a.segmentation is not None for a in aset.annotations)
    assert len(res.lost) == n_masks and all(p.field == "mask" for p in res.lost)
    back = read_voc(tmp_path / "xml", image_root, class_names=aset.categories.names, strict=True)
    assert back.categories.names == ["cat", "dog", "car"]
    name_of = {im.id: im.file_name for im in back.images}
    got = {}
    for o in back.annotations:
        got.setdefault(name_of[o.image_id], []).append(o)
    name_src = {im.id: im.file_name for im in aset.images}
    exp = {}
    for o in aset.annotations:
        exp.setdefault(name_src[o.image_id], []).append(o)
    assert sorted(got) == sorted(exp)
    for f in exp:
        np.testing.assert_allclose(np.stack([o.bbox for o in got[f]]), np.stack([o.bbox for o in exp[f]]), atol=1e-3)
        assert [o.label for o in got[f]] == [o.label for o in exp[f]]
        assert [o.iscrowd for o in got[f]] == [o.iscrowd for o in exp[f]]  # crowd: difficult=1 + <iscrowd>
    coco_back = to_coco_dict(back)
    assert len(coco_back["annotations"]) == len(src["annotations"])


def test_unknown_class_and_inferred_names(tmp_path):
    root = _voc_root(tmp_path, {"a": [("zebra", (1, 1, 5, 5), 0, 0), ("yak", (2, 2, 6, 6), 0, 0)]})
    aset = read_voc(root)
    assert aset.categories.names == ["yak", "zebra"]  # not all VOC classes: sorted names found
    aset = read_voc(root, class_names=["zebra"])
    (p,) = aset.problems
    xml = str(root / "Annotations" / "a.xml")
    assert (p.file, p.record, p.field) == (xml, "object 1", "name") and p.value == "yak"
    assert [o.label for o in aset.annotations] == [0]
    with pytest.raises(DataError, match="object 1: name: unknown class"):
        read_voc(root, class_names=["zebra"], strict=True)


def test_box_problems_name_xml_object_and_bndbox(tmp_path):
    root = _voc_root(tmp_path, {"a": [("dog", (5, 5, 4, 9), 0, 0), ("cat", (20, 2, 40, 8), 0, 0)]})
    aset = read_voc(root)
    xml = str(root / "Annotations" / "a.xml")
    assert [(p.file, p.record, p.field) for p in aset.problems] == [(xml, "object 0", "bndbox"),
                                                                     (xml, "object 1", "bndbox")]
    assert "non-positive" in aset.problems[0].message and "clipped to [19.0, 1.0, 30.0, 8.0]" in aset.problems[1].repaired
    assert len(aset.annotations) == 1


def test_missing_image_is_a_problem(tmp_path):
    root = _voc_root(tmp_path, {"a": [("dog", (1, 1, 5, 5), 0, 0)], "b": [("cat", (1, 1, 5, 5), 0, 0)]})
    (root / "JPEGImages" / "b.png").unlink()
    aset = read_voc(root)
    assert [(p.file, p.record, p.field) for p in aset.problems] == [
        (str(root / "Annotations/b.xml"), "image 2", "filename"), (str(root / "Annotations/b.xml"), "object 0", "image_id")]
    assert len(aset.annotations) == 1


@pytest.mark.parametrize("body, record, field", [
    ("<annotation><filename>a.png</filename><size><width>30</width><height>20</height></size>"
     "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>x</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
     "</annotation>", "object 0", "bndbox"),
    ("<annotation><filename>a.png</filename><size><width>30</width><height>20</height></size>"
     "<object><name>dog</name></object></annotation>", "object 0", "bndbox"),
    ("<annotation><filename>a.png</filename><size><width>30</width><height>20</height></size>"
     "<object><name>dog</name><difficult>maybe</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
     "<ymax>5</ymax></bndbox></object></annotation>", "object 0", "difficult"),
    ("<annotation><filename>a.png</filename><object>", None, None),
    ("<notvoc/>", None, None),
])
def test_malformed_xml_raises_format_error(tmp_path, body, record, field):
    (tmp_path / "x").mkdir()
    (tmp_path / "x/a.xml").write_text(body)
    with pytest.raises(FormatError) as e:
        read_voc(tmp_path / "x")
    p = e.value.problems[0]
    assert (p.file, p.record, p.field) == (str(tmp_path / "x/a.xml"), record, field)


def test_split_and_size_from_image(tmp_path):
    root = _voc_root(tmp_path, {"000012": [("dog", (1, 1, 5, 5), 0, 0)], "000034": [("cat", (1, 1, 5, 5), 0, 0)]},
                     sizes={"000034": (16, 12)})
    x = root / "Annotations/000034.xml"
    x.write_text(x.read_text().replace("<width>12</width><height>16</height>", ""))
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/val.txt").write_text("000034\n")
    aset = read_voc(root, split="val", strict=True)
    assert [(im.id, im.height, im.width) for im in aset.images] == [(34, 16, 12)]  # numeric stem -> id
    assert len(aset.annotations) == 1


def test_write_rejects_duplicate_stems(tmp_path, image_root):
    data = coco_instances()
    data["images"][1]["file_name"] = "sub/img_a.jpg"
    aset = read_coco(dump(data, tmp_path / "a.json"))
    with pytest.raises(FormatError, match="distinct file stems"):
        write_voc(aset, tmp_path / "xml")
