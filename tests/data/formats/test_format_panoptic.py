"""COCO panoptic: JSON + RGB-id PNGs, load into PanopticMap, write back, problems."""
import json

import numpy as np
import pytest
import torch
from format_fixtures import write_images
from PIL import Image

from sceneparse.data.formats import load_panoptic_map, read_coco_panoptic, write_coco_panoptic
from sceneparse.data.formats.coco_panoptic import segments_from_map
from sceneparse.errors import DataError
from sceneparse.structures.masks import masks_to_boxes
from sceneparse.structures.segmaps import PanopticMap, SegmentInfo

CATS = [{"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
        {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142]},
        {"id": 50, "name": "sky", "isthing": 0, "color": [70, 130, 180]}]


def _id_map():
    ids = np.zeros((24, 40), np.int64)
    ids[:8, :] = 70000  # sky (stuff); needs the B channel
    ids[10:20, 3:9] = 5  # person
    ids[12:22, 20:37] = 7  # car
    ids[14:16, 25:27] = 0  # void hole
    return ids


def _reference_segments(ids, cats_of):
    """Slow, obvious per-segment area and XYWH bbox."""
    out = []
    for sid, cid in cats_of.items():
        ys, xs = np.nonzero(ids == sid)
        out.append({"id": sid, "category_id": cid, "iscrowd": 0, "area": int(len(xs)),
                    "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]})
    return out


def _dataset(tmp_path, ids=None, segments=None):
    write_images(tmp_path / "images", [("img_b.png", 24, 40)])
    ids = _id_map() if ids is None else ids
    (tmp_path / "pan").mkdir()
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan/img_b.png")
    segs = segments if segments is not None else _reference_segments(ids, {70000: 50, 5: 1, 7: 3})
    data = {"images": [{"id": 9, "file_name": "img_b.png", "height": 24, "width": 40}],
            "annotations": [{"image_id": 9, "file_name": "img_b.png", "segments_info": segs}],
            "categories": CATS}
    (tmp_path / "pan.json").write_text(json.dumps(data))
    return tmp_path / "pan.json", tmp_path / "pan", tmp_path / "images"


def test_read_and_load_map(tmp_path):
    js, png, img = _dataset(tmp_path)
    aset = read_coco_panoptic(js, png, img, strict=True, check_images=True)
    assert aset.panoptic_root == png and aset.annotations == []
    assert aset.categories.thing_labels == [0, 1] and aset.categories.stuff_labels == [2]
    pm = load_panoptic_map(aset, 9)
    np.testing.assert_array_equal(pm.ids.numpy(), _id_map())
    seg = {s.id: s for s in pm.segments}
    assert (seg[5].label, seg[5].isthing, seg[7].label, seg[70000].label, seg[70000].isthing) == (0, True, 1, 2, False)
    assert seg[7].area == 17 * 10 - 4 and seg[7].bbox == (20.0, 12.0, 17.0, 10.0)
    sem = pm.semantic().labels
    assert sem[0, 0] == 2 and sem[10, 3] == 0 and sem[14, 25] == 255


def test_segments_from_map_match_slow_reference_and_masks_to_boxes():
    rng = np.random.default_rng(0)
    ids = rng.choice([0, 11, 12, 900, 70001], size=(30, 25), p=[0.4, 0.1, 0.2, 0.1, 0.2])
    ids[ids == 12] = 0
    segs = [SegmentInfo(id=i, category_id=c, label=l) for i, c, l in ((900, 3, 1), (11, 1, 0), (70001, 50, 2), (12, 1, 0))]
    from sceneparse.conventions import CategoryMap
    got = segments_from_map(PanopticMap(torch.from_numpy(ids), segs), CategoryMap.from_coco(CATS))
    ref = {s["id"]: s for s in _reference_segments(ids, {900: 3, 11: 1, 70001: 50})}
    for g in got[:3]:
        assert g == ref[g["id"]]
    assert got[3] == {"id": 12, "category_id": 1, "iscrowd": 0, "area": 0, "bbox": [0.0, 0.0, 0.0, 0.0]}
    boxes = masks_to_boxes(torch.from_numpy(np.stack([ids == s.id for s in segs[:3]])))
    xywh = [g["bbox"] for g in got[:3]]
    np.testing.assert_allclose(boxes.numpy(), [[x, y, x + w, y + h] for x, y, w, h in xywh])


def test_write_maps_and_read_back(tmp_path):
    js, png, img = _dataset(tmp_path)
    aset = read_coco_panoptic(js, png, img, strict=True)
    pm = load_panoptic_map(aset, 9)
    res = write_coco_panoptic(aset, tmp_path / "out/p.json", tmp_path / "out/png", maps={9: pm})
    assert res.files == [tmp_path / "out/p.json", tmp_path / "out/png/img_b.png"] and res.objects == 3
    back = read_coco_panoptic(tmp_path / "out/p.json", tmp_path / "out/png", img, strict=True, check_images=True)
    pm2 = load_panoptic_map(back, 9)
    np.testing.assert_array_equal(pm2.ids.numpy(), pm.ids.numpy())
    orig = {s["id"]: s for s in json.loads(js.read_text())["annotations"][0]["segments_info"]}
    for s in json.loads((tmp_path / "out/p.json").read_text())["annotations"][0]["segments_info"]:
        assert s == orig[s["id"]]
    # without maps: records written as they are, PNGs copied to the new root
    write_coco_panoptic(back, tmp_path / "copy/p.json", tmp_path / "copy/png")
    assert (tmp_path / "copy/png/img_b.png").read_bytes() == (tmp_path / "out/png/img_b.png").read_bytes()


def _problems(tmp_path, segments=None, ids=None, check=True):
    js, png, img = _dataset(tmp_path, ids=ids, segments=segments)
    aset = read_coco_panoptic(js, png, img, check_images=check)
    return js, aset


def test_unknown_category_drops_the_image_annotation(tmp_path):
    segs = _reference_segments(_id_map(), {70000: 50, 5: 1, 7: 99})
    js, aset = _problems(tmp_path, segs)
    (p,) = aset.problems
    assert (p.file, p.record, p.field) == (str(js), "annotation of image 9 segments_info[2]", "category_id")
    assert p.value == 99 and aset.panoptic == {}
    with pytest.raises(DataError, match="unknown category id"):
        read_coco_panoptic(js, tmp_path / "pan", strict=True)


def test_segment_id_problems(tmp_path):
    segs = _reference_segments(_id_map(), {70000: 50, 5: 1, 7: 3})
    segs.append(dict(segs[1]))  # duplicate id 5
    segs.append({"id": 0, "category_id": 1, "iscrowd": 0})
    segs.append({"id": 123, "category_id": 1, "iscrowd": 0})  # no pixels
    js, aset = _problems(tmp_path, segs)
    assert [(p.record, p.field) for p in aset.problems] == [
        ("annotation of image 9 segments_info[3]", "id"), ("annotation of image 9 segments_info[4]", "id"),
        ("annotation of image 9 segment 123", "id")]
    assert "duplicate segment id" in aset.problems[0].message and "reserved for void" in aset.problems[1].message
    assert "no pixels" in aset.problems[2].message
    assert [s["id"] for s in aset.panoptic[9].segments_info] == [70000, 5, 7]


def test_png_ids_without_segments(tmp_path):
    segs = _reference_segments(_id_map(), {70000: 50, 5: 1})  # id 7 missing from JSON
    js, aset = _problems(tmp_path, segs)
    (p,) = aset.problems
    assert (p.record, p.field, p.value) == ("annotation of image 9", "segments_info", [7])
    assert aset.panoptic == {}
    js, aset = _problems(tmp_path / "b", segs, check=False)  # not decoded: found when loading
    with pytest.raises(DataError, match=r"without a segments_info entry \(got \[7\]\)"):
        load_panoptic_map(aset, 9)


def test_missing_and_wrong_size_png(tmp_path):
    js, png, img = _dataset(tmp_path)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(png / "img_b.png")
    aset = read_coco_panoptic(js, png, img, check_images=True)
    assert "5x5 (HxW) but the image is 24x40" in aset.problems[0].message
    (png / "img_b.png").unlink()
    aset = read_coco_panoptic(js, png, img)
    (p,) = aset.problems
    assert (p.file, p.record, p.field) == (str(js), "annotation of image 9", "file_name")
    assert "not found" in p.message and aset.panoptic == {}
