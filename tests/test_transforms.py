import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from sceneparse.data.transforms import (GEOMETRY_KEY, ColorJitter, Compose, GeometryRecord, Letterbox, RandomCrop,
                                        RandomHorizontalFlip, RandomScaleCrop, Resize, crop, hflip, resize,
                                        resize_nearest)
from sceneparse.structures import Instances, PanopticMap, SegmentInfo, SemanticMap, Target
from sceneparse.structures.keypoints import COCO_KEYPOINT_NAMES, KeypointSet
from sceneparse.structures.masks import masks_to_boxes


def rect_masks(boxes, h, w):
    """bool [N, H, W] with exactly the integer XYXY boxes filled."""
    m = torch.zeros((len(boxes), h, w), dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = True
    return m


def make_target(h=10, w=20, boxes=((2, 3, 7, 8),), *, kps=None, semantic=True, panoptic=False, extra=None):
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    n = len(boxes_t)
    fields = dict(boxes=boxes_t, labels=torch.arange(n), masks=rect_masks(boxes, h, w))
    if kps is not None:
        fields["keypoints"] = kps
    sem = None
    if semantic:
        sem = SemanticMap(torch.arange(h * w).reshape(h, w) % 7)
    pan = None
    if panoptic:
        ids = torch.zeros((h, w), dtype=torch.long)
        segs = []
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            ids[y0:y1, x0:x1] = 10 + i
            segs.append(SegmentInfo(id=10 + i, category_id=1, label=0, area=(x1 - x0) * (y1 - y0)))
        pan = PanopticMap(ids, segs)
    return Target(7, Instances((h, w), **fields), iscrowd=torch.zeros(n, dtype=torch.bool), semantic=sem,
                  panoptic=pan, extra=extra or {})


def coco_kps(n, points):
    """[n, 17, 3] zeros with (index -> (x, y, v)) set for instance 0."""
    kp = torch.zeros(n, 17, 3)
    for k, xyv in points.items():
        kp[0, k] = torch.tensor(xyv, dtype=torch.float32)
    return kp


# ---- flip ----------------------------------------------------------------------------------
def test_hflip_exact_boxes_keypoints_masks_and_maps():
    kp = coco_kps(1, {5: (4.0, 5.0, 2.0), 0: (6.5, 3.0, 1.0)})  # left_shoulder, nose
    img = torch.rand(3, 10, 20)
    t = make_target(kps=kp)
    fi, ft = RandomHorizontalFlip(1.0)(img, t)
    assert ft.instances.boxes.tolist() == [[13.0, 3.0, 18.0, 8.0]]
    k = ft.instances.keypoints[0]
    assert k[6].tolist() == [16.0, 5.0, 2.0]  # became right_shoulder, x' = 20 - 4
    assert k[5].tolist() == [0.0, 0.0, 0.0]  # right_shoulder was unlabeled: stays (0, 0, 0)
    assert k[0].tolist() == [13.5, 3.0, 1.0]  # nose keeps its index
    assert torch.equal(fi, img.flip(-1))
    assert torch.equal(ft.semantic.labels, t.semantic.labels.flip(-1))
    # the mask moves with the box: its tight box is the flipped box
    assert masks_to_boxes(ft.instances.masks).tolist() == ft.instances.boxes.tolist()
    # torchvision's reference flip agrees on boxes
    ref = TF.horizontal_flip(tv_tensors.BoundingBoxes(t.instances.boxes, format="XYXY", canvas_size=(10, 20)))
    assert torch.equal(ft.instances.boxes, ref.as_subclass(torch.Tensor))


def test_flip_twice_is_identity_for_every_field():
    kp = coco_kps(2, {1: (3.0, 4.0, 2.0), 2: (5.0, 4.0, 1.0), 16: (9.0, 9.0, 2.0)})
    img = torch.rand(3, 12, 16)
    t = make_target(12, 16, ((1, 1, 6, 5), (8, 2, 15, 11)), kps=kp, panoptic=True)
    fi, ft = hflip(*hflip(img, t))
    assert torch.equal(fi, img)
    for name in ("boxes", "masks", "keypoints", "labels"):
        assert torch.equal(getattr(ft.instances, name), getattr(t.instances, name)), name
    assert torch.equal(ft.semantic.labels, t.semantic.labels)
    assert torch.equal(ft.panoptic.ids, t.panoptic.ids)
    assert [(s.id, s.area, s.bbox) for s in ft.panoptic.segments] == [(10, 20, (1.0, 1.0, 5.0, 4.0)),
                                                                       (11, 63, (8.0, 2.0, 7.0, 9.0))]
    g = ft.extra[GEOMETRY_KEY]
    assert g.scale == (1.0, 1.0) and g.offset == (0.0, 0.0)


def test_flip_swaps_left_right_names_of_a_custom_set():
    kset = KeypointSet.from_names(["head", "left_paw", "right_paw", "tail"])
    kp = torch.tensor([[[5.0, 1.0, 2.0], [2.0, 6.0, 2.0], [8.0, 6.0, 1.0], [5.0, 9.0, 2.0]]])
    t = Target(1, Instances((10, 10), boxes=torch.tensor([[1.0, 1.0, 9.0, 9.0]]), labels=torch.tensor([0]),
                            keypoints=kp))
    _, ft = RandomHorizontalFlip(1.0, kset)(torch.zeros(3, 10, 10), t)
    by_name = dict(zip(kset.names, ft.instances.keypoints[0].tolist()))
    # the mirrored animal's left paw is the old right paw (x=8, v=1) seen at 10 - 8 = 2, and vice versa
    assert by_name["right_paw"] == [8.0, 6.0, 2.0]
    assert by_name["left_paw"] == [2.0, 6.0, 1.0]
    assert by_name["head"] == [5.0, 1.0, 2.0] and by_name["tail"] == [5.0, 9.0, 2.0]
    with pytest.raises(ValueError, match="K=4"):
        RandomHorizontalFlip(1.0)(torch.zeros(3, 10, 10), t)  # COCO's 17-point set does not fit


def test_flip_probability_and_seed_reproducibility():
    img = torch.rand(3, 4, 6)
    t = make_target(4, 6, ((0, 0, 2, 2),))
    tr = RandomHorizontalFlip(0.5, generator=123)
    a = [bool(tr(img, t)[1].instances.boxes[0, 0] > 0) for _ in range(400)]
    tr2 = RandomHorizontalFlip(0.5, generator=123)
    b = [bool(tr2(img, t)[1].instances.boxes[0, 0] > 0) for _ in range(400)]
    assert a == b
    assert 150 < sum(a) < 250
    assert not RandomHorizontalFlip(0.0, generator=0)(img, t)[1].extra  # p=0: untouched target


# ---- resize --------------------------------------------------------------------------------
def test_resize_exact_sizes_boxes_keypoints():
    kp = coco_kps(1, {0: (3.0, 4.0, 2.0)})
    img = torch.rand(3, 10, 20)
    t = make_target(kps=kp, boxes=((2, 4, 12, 8),))
    ri, rt = Resize(short_side=5)(img, t)
    assert ri.shape == (3, 5, 10) and rt.image_size == (5, 10)
    assert rt.instances.boxes.tolist() == [[1.0, 2.0, 6.0, 4.0]]
    assert rt.instances.keypoints[0, 0].tolist() == [1.5, 2.0, 2.0]
    assert rt.instances.keypoints[0, 1].tolist() == [0.0, 0.0, 0.0]
    assert masks_to_boxes(rt.instances.masks).tolist() == [[1.0, 2.0, 6.0, 4.0]]
    # short side 20 would make the long side 40 > 30: the long side wins
    assert Resize(short_side=20, max_size=30).output_size(10, 20) == (15, 30)
    assert Resize(short_side=800, max_size=1333).output_size(480, 640) == (800, 1067)
    assert Resize(max_size=64).output_size(10, 20) == (32, 64)
    assert Resize(size=(40, 30)).output_size(10, 20) == (15, 30)
    # keep_ratio=False: boxes scale by the realised per-axis ratios
    _, st = Resize(size=(7, 9), keep_ratio=False)(img, t)
    assert st.image_size == (7, 9)
    torch.testing.assert_close(st.instances.boxes, torch.tensor([[2 * 9 / 20, 4 * 7 / 10, 12 * 9 / 20, 8 * 7 / 10]]))
    ref = TF.resize(tv_tensors.BoundingBoxes(t.instances.boxes, format="XYXY", canvas_size=(10, 20)), [7, 9])
    torch.testing.assert_close(st.instances.boxes, ref.as_subclass(torch.Tensor))


def test_resize_multiscale_draws_from_the_list_reproducibly():
    r1 = Resize(short_side=(8, 12, 16), generator=5)
    r2 = Resize(short_side=(8, 12, 16), generator=5)
    s1 = [r1.output_size(10, 20)[0] for _ in range(60)]
    assert s1 == [r2.output_size(10, 20)[0] for _ in range(60)]
    assert set(s1) == {8, 12, 16}


def test_resize_image_matches_torchvision_bilinear_antialias():
    img = torch.rand(3, 37, 53)
    for size in ((20, 29), (70, 101)):
        t = make_target(37, 53, ((3, 4, 20, 30),), semantic=False)
        ri, _ = resize(img, t, size)
        ref = TF.resize(img, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        torch.testing.assert_close(ri, ref.clamp(0, 1), atol=1e-5, rtol=0)


def test_nearest_resampling_matches_interpolate_and_torchvision():
    x = torch.rand(2, 13, 17)
    for size in ((5, 7), (13, 17), (29, 40), (26, 34)):
        ref = F.interpolate(x[None], size=size, mode="nearest-exact")[0]
        assert torch.equal(resize_nearest(x, size), ref), size
        m = x > 0.5
        tv = TF.resize(tv_tensors.Mask(m), list(size), interpolation=InterpolationMode.NEAREST_EXACT)
        assert torch.equal(resize_nearest(m, size), tv.as_subclass(torch.Tensor)), size
    ids = torch.tensor([[5_000_000, 16_777_215]])  # panoptic ids beyond float32's exact range survive
    assert resize_nearest(ids, (2, 4)).unique().tolist() == [5_000_000, 16_777_215]


def test_semantic_map_resized_nearest_keeps_labels_and_ignore():
    img = torch.rand(3, 2, 2)
    t = Target(1, Instances((2, 2), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)),
               semantic=SemanticMap(torch.tensor([[0, 1], [2, 255]])))
    _, rt = resize(img, t, (4, 4))
    assert rt.semantic.labels.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]
    _, dt = resize(img, t, (4, 6))
    assert dt.semantic.labels.tolist()[0] == [0, 0, 0, 1, 1, 1] and dt.semantic.labels.dtype == torch.int64


def test_resize_moves_panoptic_ids_and_refreshes_segments():
    img = torch.rand(3, 3, 4)
    ids = torch.tensor([[0, 10, 10, 0],
                        [0, 10, 10, 0],
                        [21, 0, 0, 0]])
    segs = [SegmentInfo(id=10, category_id=1, label=0, area=4), SegmentInfo(id=21, category_id=2, label=1, area=1)]
    t = Target(1, Instances((3, 4), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)),
               semantic=SemanticMap(torch.tensor([[255, 0, 0, 255], [255, 0, 0, 255], [1, 255, 255, 255]])),
               panoptic=PanopticMap(ids, segs))
    _, up = resize(img, t, (6, 8))
    assert torch.equal(up.panoptic.ids, ids.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert [(s.id, s.area, s.bbox) for s in up.panoptic.segments] == [(10, 16, (2.0, 0.0, 4.0, 4.0)),
                                                                     (21, 4, (0.0, 4.0, 2.0, 2.0))]
    assert up.panoptic.segments[1].category_id == 2 and up.panoptic.segments[1].label == 1
    assert torch.equal(up.semantic.labels, t.semantic.labels.repeat_interleave(2, 0).repeat_interleave(2, 1))
    # shrinking to 2 x 2 samples source rows 0, 2 (pixel centres 0.75, 2.25) and columns 1, 3: id 21 and
    # the void columns survive, the segment is listed with its new area
    _, down = resize(img, t, (2, 2))
    assert down.panoptic.ids.tolist() == [[10, 0], [0, 0]]
    assert [(s.id, s.area, s.bbox) for s in down.panoptic.segments] == [(10, 1, (0.0, 0.0, 1.0, 1.0))]
    assert down.semantic.labels.tolist() == [[0, 255], [255, 255]] and down.semantic.ignore_index == 255


# ---- crop ----------------------------------------------------------------------------------
def test_crop_clips_boxes_and_drops_degenerate_objects_with_their_fields():
    boxes = ((2, 2, 8, 8), (15, 15, 19, 19), (9, 1, 12, 18))
    kp = torch.zeros(3, 17, 3)
    kp[0, 0] = torch.tensor([6.0, 6.0, 2.0])  # inside the crop -> (1, 1)
    kp[0, 1] = torch.tensor([3.0, 3.0, 2.0])  # outside (left/top) -> (0, 0, 0)
    kp[1, 0] = torch.tensor([16.0, 16.0, 2.0])  # its object is dropped
    kp[2, 3] = torch.tensor([10.0, 16.0, 1.0])  # below the crop -> (0, 0, 0)
    kp[2, 4] = torch.tensor([10.0, 14.5, 1.0])  # inside -> (5, 9.5)
    t = make_target(20, 20, boxes, kps=kp, extra={"difficult": torch.tensor([False, True, True])})
    t.iscrowd = torch.tensor([False, False, True])
    img = torch.rand(3, 20, 20)
    ci, ct = crop(img, t, top=5, left=5, height=10, width=10)
    assert torch.equal(ci, img[:, 5:15, 5:15])
    # object 1 ([15,15,19,19] -> [10,10,10,10]) has zero width and is dropped with everything it owns
    assert ct.instances.boxes.tolist() == [[0.0, 0.0, 3.0, 3.0], [4.0, 0.0, 7.0, 10.0]]
    assert ct.instances.labels.tolist() == [0, 2]
    assert ct.iscrowd.tolist() == [False, True]
    assert ct.extra["difficult"].tolist() == [False, True]
    assert ct.instances.masks.shape == (2, 10, 10)
    assert masks_to_boxes(ct.instances.masks).tolist() == ct.instances.boxes.tolist()
    k = ct.instances.keypoints
    assert k[0, 0].tolist() == [1.0, 1.0, 2.0] and k[0, 1].tolist() == [0.0, 0.0, 0.0]
    assert k[1, 3].tolist() == [0.0, 0.0, 0.0] and k[1, 4].tolist() == [5.0, 9.5, 1.0]
    assert torch.equal(ct.semantic.labels, t.semantic.labels[5:15, 5:15])
    # torchvision's reference crop agrees on the surviving boxes (it clamps, we clamp)
    ref = TF.crop(tv_tensors.BoundingBoxes(t.instances.boxes, format="XYXY", canvas_size=(20, 20)), 5, 5, 10, 10)
    assert ref.as_subclass(torch.Tensor)[[0, 2]].tolist() == ct.instances.boxes.tolist()


def test_crop_drops_object_whose_visible_mask_is_gone():
    # an L-shaped object: its box overlaps the crop window, its pixels do not
    m = torch.zeros(1, 20, 20, dtype=torch.bool)
    m[0, 0:4, 0:20] = True  # top bar
    m[0, 0:20, 0:4] = True  # left bar
    keep_m = torch.zeros(1, 20, 20, dtype=torch.bool)
    keep_m[0, 10:12, 10:12] = True
    t = Target(1, Instances((20, 20), boxes=torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 12.0, 12.0]]),
                            labels=torch.tensor([3, 4]), masks=torch.cat([m, keep_m])))
    _, ct = crop(torch.rand(3, 20, 20), t, 6, 6, 10, 10)
    assert ct.instances.labels.tolist() == [4]
    assert ct.instances.boxes.tolist() == [[4.0, 4.0, 6.0, 6.0]]


def test_crop_window_beyond_image_pads_with_fill_ignore_and_void():
    img = torch.rand(3, 4, 4)
    t = make_target(4, 4, ((1, 1, 3, 3),), panoptic=True)
    ci, ct = crop(img, t, -2, -1, 8, 6, fill=(0.1, 0.2, 0.3))
    assert ci.shape == (3, 8, 6)
    assert torch.equal(ci[:, 2:6, 1:5], img)
    assert torch.allclose(ci[:, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert (ct.semantic.labels[:2] == 255).all() and (ct.semantic.labels[:, 5] == 255).all()
    assert torch.equal(ct.semantic.labels[2:6, 1:5], t.semantic.labels)
    assert (ct.panoptic.ids[:2] == 0).all() and ct.panoptic.ids[3, 2].item() == 10
    assert ct.instances.boxes.tolist() == [[2.0, 3.0, 4.0, 5.0]]
    assert ct.panoptic.segments[0].bbox == (2.0, 3.0, 2.0, 2.0) and ct.panoptic.segments[0].area == 4


def test_crop_refreshes_panoptic_segments_and_drops_vanished_ones():
    t = make_target(12, 12, ((0, 0, 3, 3), (5, 4, 12, 9)), panoptic=True)
    _, ct = crop(torch.rand(3, 12, 12), t, 4, 6, 8, 6)
    ids = ct.panoptic.ids.numpy()
    assert [s.id for s in ct.panoptic.segments] == [11]
    s = ct.panoptic.segments[0]
    ys, xs = np.nonzero(ids == 11)
    assert s.area == len(xs) == 30
    assert s.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (0, 0, 6, 5)


def test_random_crop_reproducible_and_inside():
    img = torch.rand(3, 30, 40)
    t = make_target(30, 40, ((5, 5, 25, 20),))
    outs = [RandomCrop((16, 16), generator=9)(img, t) for _ in range(2)]
    assert torch.equal(outs[0][0], outs[1][0])
    tr = RandomCrop((16, 16), generator=3)
    tops = set()
    for _ in range(30):
        top, left = tr.window(30, 40)
        assert 0 <= top <= 14 and 0 <= left <= 24
        tops.add(top)
    assert len(tops) > 5
    # a window larger than the image pads bottom/right
    pi, pt = RandomCrop((50, 50), generator=0)(img, t)
    assert pi.shape == (3, 50, 50) and torch.equal(pi[:, :30, :40], img)
    assert pt.instances.boxes.tolist() == [[5.0, 5.0, 25.0, 20.0]]


def test_random_scale_crop_keeps_masks_and_boxes_together():
    boxes = ((4, 6, 30, 20), (40, 10, 60, 44), (2, 30, 12, 46))
    img = torch.rand(3, 48, 64)
    t = make_target(48, 64, boxes)
    tr = RandomScaleCrop((32, 32), scale=(0.5, 2.0), generator=11)
    sizes = set()
    for _ in range(25):
        ci, ct = tr(img, t)
        assert ci.shape == (3, 32, 32) and ct.image_size == (32, 32)
        b = ct.instances.boxes
        assert ((b[:, 2] - b[:, 0]) >= 1).all() and ((b[:, 3] - b[:, 1]) >= 1).all()
        tight = masks_to_boxes(ct.instances.masks)
        assert (tight - b).abs().max() <= 1.0 + 1e-6  # nearest resampling moves edges by < 1 px
        g = ct.extra[GEOMETRY_KEY]
        sizes.add(round(g.scale[0], 3))
    assert len(sizes) > 10


# ---- letterbox -----------------------------------------------------------------------------
def test_letterbox_exact_and_undo():
    kp = coco_kps(1, {0: (3.0, 4.0, 2.0)})
    img = torch.rand(3, 10, 20)
    t = make_target(kps=kp, panoptic=True)
    li, lt = Letterbox(40, fill=0.5)(img, t)
    assert li.shape == (3, 40, 40)
    # s = min(40/10, 40/20) = 2 -> 20 x 40, padded 10 rows on top and bottom
    assert lt.instances.boxes.tolist() == [[4.0, 16.0, 14.0, 26.0]]
    assert lt.instances.keypoints[0, 0].tolist() == [6.0, 18.0, 2.0]
    assert (li[:, :10] == 0.5).all() and (li[:, 30:] == 0.5).all()
    assert (lt.semantic.labels[:10] == 255).all() and (lt.semantic.labels[30:] == 255).all()
    assert (lt.panoptic.ids[:10] == 0).all()
    g = lt.extra[GEOMETRY_KEY]
    assert g.scale == (2.0, 2.0) and g.offset == (0.0, 10.0) and g.original_size == (10, 20)
    assert g.undo_boxes(lt.instances.boxes).tolist() == [[2.0, 3.0, 7.0, 8.0]]
    assert torch.equal(g.undo_keypoints(lt.instances.keypoints), kp)
    # no enlargement with scale_up=False: only padding, centred
    (nh, nw), top, left = Letterbox((32, 24), scale_up=False).params(10, 20)
    assert (nh, nw, top, left) == (10, 20, 11, 2)
    # s = 1.05 -> 10.5 rounds to 11 rows; 10 rows of padding, 5 on top
    assert Letterbox(21).params(10, 20) == ((11, 21), 5, 0)
    assert Letterbox(22).params(10, 20) == ((11, 22), 5, 0)  # odd padding: the extra row goes to the bottom


def test_geometry_record_undoes_a_whole_pipeline():
    kp = coco_kps(1, {5: (12.0, 9.0, 2.0), 6: (30.0, 9.0, 2.0), 0: (21.0, 4.0, 1.0)})
    t = make_target(40, 60, ((10, 2, 34, 30),), kps=kp)
    pipe = Compose([RandomHorizontalFlip(1.0), Resize(short_side=30), Letterbox((64, 64))])
    _, pt = pipe(torch.rand(3, 40, 60), t)
    g = pt.extra[GEOMETRY_KEY]
    assert g.flipped
    torch.testing.assert_close(g.undo_boxes(pt.instances.boxes), t.instances.boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(g.undo_keypoints(pt.instances.keypoints), kp, atol=1e-4, rtol=0)
    # the record itself: flip (x -> 60 - x), resize 40x60 -> 30x45, letterbox 30x45 -> 43x64 padded 10 rows on top
    assert g.scale == pytest.approx((-0.75 * 64 / 45, 0.75 * 43 / 30))
    assert g.offset == pytest.approx((60 * 0.75 * 64 / 45, 10.0))


def test_geometry_record_composition_formula():
    g = GeometryRecord((10, 20)).then(-1.0, 1.0, 20.0, 0.0).then(2.0, 2.0, 0.0, 0.0).then(1.0, 1.0, -5.0, 3.0)
    # x_now = 2 * (20 - x) - 5 = -2x + 35 ; y_now = 2y + 3
    assert g.scale == (-2.0, 2.0) and g.offset == (35.0, 3.0)
    assert g.undo_points(torch.tensor([[35.0 - 2 * 4, 2 * 6 + 3.0]])).tolist() == [[4.0, 6.0]]


# ---- photometric ---------------------------------------------------------------------------
def test_color_jitter_changes_only_pixels_reproducibly():
    img = torch.rand(3, 16, 16) * 0.5
    t = make_target(16, 16, ((1, 1, 9, 9),))
    a_img, a_t = ColorJitter(0.4, 0.4, 0.4, 0.1, generator=4)(img, t)
    b_img, _ = ColorJitter(0.4, 0.4, 0.4, 0.1, generator=4)(img, t)
    assert a_t is t and torch.equal(a_img, b_img) and not torch.equal(a_img, img)
    assert a_img.min() >= 0 and a_img.max() <= 1
    # brightness alone is one multiplication by a factor in [0.6, 1.4] (no clipping at this range)
    br, _ = ColorJitter(brightness=0.4, generator=8)(img, t)
    ratio = br / img
    assert ratio.std() < 1e-5 and 0.6 <= ratio.mean() <= 1.4
    # hue alone leaves gray pixels gray
    gray = torch.full((3, 4, 4), 0.3)
    hu, _ = ColorJitter(hue=0.5, generator=1)(gray, t)
    torch.testing.assert_close(hu, gray, atol=1e-6, rtol=0)


def test_seeded_transforms_pickle_without_generator_state_and_differ_per_worker():
    tr = RandomCrop(4, generator=5)
    tr.window(10, 10)  # generator built in this process
    clone = pickle.loads(pickle.dumps(tr))
    assert clone._gen is None
    assert clone.window(10, 10) == RandomCrop(4, generator=5).window(10, 10)

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.tensor(tr.window(100, 100))

    loader = torch.utils.data.DataLoader(Windows(), batch_size=1, num_workers=2,
                                         generator=torch.Generator().manual_seed(0))
    w = [tuple(x[0].tolist()) for x in loader]
    assert w[0] != w[1]  # the two workers' first draws differ
