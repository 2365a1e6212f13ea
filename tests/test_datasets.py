import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from sceneparse.conventions import Category, CategoryMap
from sceneparse.data.datasets import SceneDataset, collate, load_image
from sceneparse.data.records import AnnotationSet, ImageRecord, ObjectRecord, PanopticRecord
from sceneparse.data.transforms import RandomHorizontalFlip
from sceneparse.errors import DataError
from sceneparse.structures.keypoints import COCO_PERSON
from sceneparse.structures.masks import encode_rle, rle_to_uncompressed
from sceneparse.structures.segmaps import id2rgb

H, W = 24, 32


def _cats():
    return CategoryMap.from_categories([Category(1, "person"), Category(3, "car"), Category(7, "sky", isthing=False)])


def _make_set(tmp_path, *, semantic=True, panoptic=True):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    pixels = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img" / "a.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "img" / "b.png")  # grayscale

    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]  # a 10 x 8 rectangle along pixel edges
    rle_mask = np.zeros((H, W), dtype=bool)
    rle_mask[14:20, 20:30] = True
    comp = encode_rle(rle_mask[None])[0]
    unc = rle_to_uncompressed(comp)
    kp = np.zeros((17, 3), dtype=np.float32)
    kp[0] = (5.0, 4.0, 2.0)
    objs = [
        ObjectRecord(1, 1, 0, np.array([2, 2, 12, 10], np.float32), segmentation=poly, keypoints=kp),
        ObjectRecord(2, 1, 1, np.array([20, 14, 30, 20], np.float32), segmentation=comp),
        ObjectRecord(3, 1, 1, np.array([3.4, 12.6, 8.0, 15.0], np.float32), iscrowd=True,
                     extra={"difficult": True}),  # no segmentation -> box mask
        ObjectRecord(4, 2, 1, np.array([20, 14, 30, 20], np.float32), segmentation=unc),
    ]
    images = [ImageRecord(1, "a.png", H, W), ImageRecord(2, "b.png", H, W)]
    kw = {}
    if semantic:
        (tmp_path / "sem").mkdir()
        sem = np.full((H, W), 2, dtype=np.uint8)
        sem[2:10, 2:12] = 0
        sem[0, :] = 255
        Image.fromarray(sem).save(tmp_path / "sem" / "a.png")
        Image.fromarray(sem).save(tmp_path / "sem" / "b.png")
        kw["semantic_root"] = tmp_path / "sem"
    if panoptic:
        (tmp_path / "pan").mkdir()
        ids = np.zeros((H, W), dtype=np.int64)
        ids[2:10, 2:12] = 300
        ids[14:20, 20:30] = 70000
        ids[:2] = 9
        Image.fromarray(id2rgb(ids)).save(tmp_path / "pan" / "a.png")
        Image.fromarray(id2rgb(np.zeros((H, W)))).save(tmp_path / "pan" / "b.png")
        kw["panoptic"] = {
            1: PanopticRecord(1, "a.png", [{"id": 300, "category_id": 1, "iscrowd": 0, "area": 80,
                                            "bbox": [2, 2, 10, 8]},
                                           {"id": 70000, "category_id": 3, "iscrowd": 0, "area": 60},
                                           {"id": 9, "category_id": 7, "iscrowd": 0, "area": 64}]),
            2: PanopticRecord(2, "b.png", []),
        }
        kw["panoptic_root"] = tmp_path / "pan"
    return AnnotationSet(_cats(), images, objs, image_root=tmp_path / "img", keypoint_set=COCO_PERSON,
                         source=str(tmp_path / "ann.json"), **kw), pixels, rle_mask


def test_dataset_returns_image_and_target_in_conventions(tmp_path):
    aset, pixels, rle_mask = _make_set(tmp_path)
    ds = SceneDataset(aset, load_semantic=True, load_panoptic=True)
    assert len(ds) == 2 and ds.class_names == ["person", "car", "sky"] and ds.image_ids == [1, 2]
    img, t = ds[0]
    assert img.dtype == torch.float32 and img.shape == (3, H, W)
    torch.testing.assert_close(img, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    inst = t.instances
    assert t.image_id == 1 and t.image_size == (H, W) and len(inst) == 3
    assert inst.boxes.dtype == torch.float32 and inst.labels.tolist() == [0, 1, 1]
    assert t.iscrowd.tolist() == [False, False, True]
    assert t.extra["difficult"].tolist() == [False, False, True]
    assert inst.masks.dtype == torch.bool and inst.masks.shape == (3, H, W)
    # polygon: pycocotools' rasterisation is the reference
    ref = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(aset.annotations[0].segmentation, H, W)))
    assert np.array_equal(inst.masks[0].numpy(), ref.astype(bool))
    assert inst.masks[0].sum() == 80
    assert np.array_equal(inst.masks[1].numpy(), rle_mask)
    # box mask of [3.4, 12.6, 8.0, 15.0]: pixel centres x in {3.5..7.5}, y in {13.5, 14.5}
    expect = np.zeros((H, W), dtype=bool)
    expect[13:15, 3:8] = True
    assert np.array_equal(inst.masks[2].numpy(), expect)
    assert inst.keypoints.shape == (3, 17, 3)
    assert inst.keypoints[0, 0].tolist() == [5.0, 4.0, 2.0] and inst.keypoints[1:].abs().sum() == 0
    assert t.semantic.labels.dtype == torch.int64 and t.semantic.labels[0, 0] == 255
    assert t.semantic.labels[5, 5] == 0 and t.semantic.labels[20, 5] == 2
    pan = t.panoptic
    assert pan.ids[5, 5] == 300 and pan.ids[15, 25] == 70000 and pan.ids[0, 0] == 9 and pan.ids[12, 0] == 0
    segs = {s.id: s for s in pan.segments}
    assert (segs[300].label, segs[70000].label, segs[9].label) == (0, 1, 2)
    assert segs[9].isthing is False and segs[300].isthing is True and segs[300].bbox == (2.0, 2.0, 10.0, 8.0)
    assert pan.semantic().labels[15, 25] == 1


def test_uncompressed_rle_and_grayscale_image(tmp_path):
    aset, pixels, rle_mask = _make_set(tmp_path)
    img, t = SceneDataset(aset)[1]
    g = torch.from_numpy(pixels[..., 0]).float() / 255
    assert torch.equal(img[0], g) and torch.equal(img[1], g) and torch.equal(img[2], g)
    assert np.array_equal(t.instances.masks[0].numpy(), rle_mask)
    assert t.semantic is None and t.panoptic is None


def test_switches_and_box_only_sets(tmp_path):
    aset, _, _ = _make_set(tmp_path)
    _, t = SceneDataset(aset, load_masks=False, load_keypoints=False)[0]
    assert t.instances.masks is None and t.instances.keypoints is None
    for a in aset.annotations:
        a.segmentation = None
    aset.keypoint_set = None
    for a in aset.annotations:
        a.keypoints = None
    _, t = SceneDataset(aset)[0]  # nothing to decode: no box-shaped fake masks, no empty keypoints
    assert t.instances.masks is None and t.instances.keypoints is None


def test_transforms_and_collate_with_dataloader(tmp_path):
    aset, _, _ = _make_set(tmp_path)
    ds = SceneDataset(aset, RandomHorizontalFlip(1.0, COCO_PERSON), load_semantic=True)
    images, targets = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)))
    assert isinstance(images, list) and len(images) == 2 and images[0].shape == (3, H, W)
    assert [t.image_id for t in targets] == [1, 2]
    assert targets[0].instances.boxes[0].tolist() == [W - 12.0, 2.0, W - 2.0, 10.0]
    assert targets[0].instances.keypoints[0, 0].tolist() == [W - 5.0, 4.0, 2.0]


def test_load_image_modes(tmp_path):
    a16 = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    t = load_image(tmp_path / "g16.png")
    assert t.shape == (3, 2, 2) and t.dtype == torch.float32
    torch.testing.assert_close(t[1], torch.from_numpy(a16.astype(np.float32) / 65535))
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 10  # nearly transparent: alpha is dropped, colour kept
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    t = load_image(tmp_path / "rgba.png")
    assert t.shape == (3, 2, 3) and torch.allclose(t[0], torch.full((2, 3), 200 / 255)) and t[1:].abs().sum() == 0
    pal = Image.new("P", (4, 2))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.putpixel((1, 0), 2)
    pal.save(tmp_path / "p.png")
    t = load_image(tmp_path / "p.png")
    assert t[:, 0, 1].tolist() == [0.0, 1.0, 0.0] and t[:, 0, 0].tolist() == [0.0, 0.0, 0.0]


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((4, 6, 3), dtype=np.uint8)
    a[0, 0] = 255  # top-left white pixel of the stored image
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.png", exif=exif)
    t = load_image(tmp_path / "r.png")
    assert t.shape == (3, 6, 4)  # displayed upright: stored width becomes height
    assert t[0, 0, 3] == 1.0 and t[0].sum() == 1.0  # stored top-left goes to displayed top-right
    raw = load_image(tmp_path / "r.png", exif=False)
    assert raw.shape == (3, 4, 6) and raw[0, 0, 0] == 1.0
    # a record sized like the stored pixels means "annotated on the stored pixels"
    aset = AnnotationSet(_cats(), [ImageRecord(5, "r.png", 4, 6)], [], image_root=tmp_path)
    assert SceneDataset(aset)[0][0].shape == (3, 4, 6)
    aset.images[0] = ImageRecord(5, "r.png", 6, 4)
    assert SceneDataset(aset)[0][0].shape == (3, 6, 4)


def test_errors_name_file_record_and_field(tmp_path):
    aset, _, _ = _make_set(tmp_path)
    (tmp_path / "img" / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"a\.png: image 1: file_name: unreadable image"):
        SceneDataset(aset)[0]
    aset.images[1] = ImageRecord(2, "missing.png", H, W)
    with pytest.raises(DataError, match=r"missing\.png: image 2: file_name: image file not found"):
        SceneDataset(aset)[1]
    aset.images[1] = ImageRecord(2, "b.png", H + 1, W)
    with pytest.raises(DataError, match=r"image 2: height/width: image file is 24x32 .* record says 25x32"):
        SceneDataset(aset)[1]
    aset.images[1] = ImageRecord(2, "b.png", H, W)
    aset.annotations[3].segmentation = {"size": [H, W + 1], "counts": aset.annotations[3].segmentation["counts"]}
    with pytest.raises(DataError, match=r"image 2 annotation 4: segmentation.size"):
        SceneDataset(aset)[1]
    aset.annotations[3].segmentation = None
    aset.annotations[3].keypoints = np.zeros((5, 3))
    with pytest.raises(DataError, match=r"image 2 annotation 4: keypoints: expected shape \(17, 3\)"):
        SceneDataset(aset)[1]
    aset.semantic_root = None
    with pytest.raises(DataError, match="semantic_root: load_semantic=True but the annotation set has no"):
        SceneDataset(aset, load_semantic=True)


def test_panoptic_unknown_category_is_an_error(tmp_path):
    aset, _, _ = _make_set(tmp_path)
    aset.panoptic[1].segments_info[0]["category_id"] = 99
    with pytest.raises(DataError, match=r"image 1 segment 300: category_id: unknown category id \(got 99\)"):
        SceneDataset(aset, load_panoptic=True)[0]


def test_cache_returns_what_the_files_give_and_reads_each_file_once(tmp_path):
    aset, _, _ = _make_set(tmp_path, panoptic=False)
    Image.fromarray((np.arange(H * W).reshape(H, W) * 37 % 65536).astype(np.uint16)).save(tmp_path / "img" / "c.png")
    Image.fromarray(np.full((H, W), 1, np.uint8)).save(tmp_path / "sem" / "c.png")
    aset.images.append(ImageRecord(3, "c.png", H, W))  # 16-bit grayscale: kept as the float tensor
    aset.reindex()
    plain = [SceneDataset(aset, load_semantic=True)[i] for i in range(3)]
    assert 0 < float(plain[2][0][0, 0, 1]) < 1 / 255  # really 16-bit (37 / 65535): not quantised to 1/255
    cached = SceneDataset(aset, load_semantic=True, cache=True)
    assert cached.cache_bytes == 0 and cached.preload() == []
    # RGB and 8-bit grey as uint8 HWC, the 16-bit image as float32 CHW, labels (0..255) as uint8
    assert cached.cache_bytes == 2 * H * W * 3 + 3 * H * W * 4 + 3 * H * W
    for f in list((tmp_path / "img").iterdir()) + list((tmp_path / "sem").iterdir()):
        f.unlink()  # from now on only the cache can answer
    for i in range(3):
        (a, ta), (b, tb) = plain[i], cached[i]
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
        assert tb.semantic.labels.dtype == torch.int64 and torch.equal(ta.semantic.labels, tb.semantic.labels)
        assert torch.equal(ta.instances.boxes, tb.instances.boxes) and torch.equal(ta.instances.masks, tb.instances.masks)
        b.fill_(0.5)  # a read is a new tensor: changing it leaves the cache alone
        tb.semantic.labels.fill_(7)
        assert torch.equal(cached[i][0], a) and torch.equal(cached[i][1].semantic.labels, ta.semantic.labels)
    with pytest.raises(ValueError, match="cache=True"):
        SceneDataset(aset).preload()


def test_cache_preload_goes_past_unreadable_files_and_names_them(tmp_path):
    aset, _, _ = _make_set(tmp_path, panoptic=False)
    (tmp_path / "img" / "a.png").write_bytes(b"not a png")
    (tmp_path / "sem" / "b.png").unlink()
    ds = SceneDataset(aset, load_semantic=True, cache=True)
    problems = ds.preload()
    assert [(p.file, p.record, p.field) for p in problems] == [
        (str(tmp_path / "img" / "a.png"), "image 1", "file_name"), (str(tmp_path / "sem" / "b.png"), "image 2", "file_name")]
    assert ds.cache_bytes == H * W * 3  # b's pixels were read; its label map was not
    with pytest.raises(DataError, match="a.png"):
        ds[0]  # still an error when read, as without the cache
