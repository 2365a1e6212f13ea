"""Preprocessor: same resize/normalise/pad as torchvision's GeneralizedRCNNTransform; targets move along."""
from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from sceneparse.errors import DataError
from sceneparse.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor, resize_target
from sceneparse.postprocess.detection import rescale_boxes, rescale_keypoints
from sceneparse.structures.instances import Instances
from sceneparse.structures.segmaps import PanopticMap, SegmentInfo, SemanticMap
from sceneparse.structures.target import Target

SIZES = [(200, 260), (301, 97), (480, 90), (33, 45)]  # includes a max_size-bound and an upscaled image


def _target(i, h, w, g):
    xy = torch.rand(3, 2, generator=g) * torch.tensor([w / 2, h / 2])
    boxes = torch.cat([xy, xy + torch.rand(3, 2, generator=g) * torch.tensor([w / 2, h / 2]) + 1], 1)
    kps = torch.cat([torch.rand(3, 4, 2, generator=g) * torch.tensor([w, h]), torch.full((3, 4, 1), 2.0)], 2)
    masks = torch.rand(3, h, w, generator=g) > 0.5
    return Target(i, Instances((h, w), boxes=boxes, labels=torch.tensor([0, 1, 2]), masks=masks, keypoints=kps))


@pytest.mark.parametrize("min_size, max_size, div", [(160, 240, 32), (320, 1000, 16), (64, 100, 1)])
def test_same_batch_and_targets_as_torchvision(min_size, max_size, div):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=g) for h, w in SIZES]
    targets = [_target(i, h, w, g) for i, (h, w) in enumerate(SIZES)]
    tv = GeneralizedRCNNTransform(min_size, max_size, list(IMAGENET_MEAN), list(IMAGENET_STD), size_divisible=div)
    tv.eval()
    tv_targets = [{"boxes": t.instances.boxes, "masks": t.instances.masks.to(torch.uint8),
                   "keypoints": t.instances.keypoints} for t in targets]
    ref, ref_t = tv(images, tv_targets)
    pre = Preprocessor(min_size, max_size, size_divisible=div)
    batch, moved = pre(images, targets)
    assert batch.image_sizes == [tuple(s) for s in ref.image_sizes]
    torch.testing.assert_close(batch.tensor, ref.tensors, atol=1e-6, rtol=0)
    assert batch.tensor.shape[-1] % div == 0 and batch.tensor.shape[-2] % div == 0
    assert batch.original_sizes == SIZES
    for (h, w), (rh, rw), (sy, sx) in zip(SIZES, batch.image_sizes, batch.scales):
        assert (sy, sx) == pytest.approx((rh / h, rw / w))
        assert max(rh, rw) <= max_size
        assert min(rh, rw) in (min_size - 1, min_size) or max(rh, rw) in (max_size - 1, max_size)
    for t, r, size in zip(moved, ref_t, batch.image_sizes):
        assert t.image_size == size
        torch.testing.assert_close(t.instances.boxes, r["boxes"])
        torch.testing.assert_close(t.instances.keypoints, r["keypoints"])
        assert torch.equal(t.instances.masks, r["masks"].bool())
        assert torch.equal(t.instances.labels, torch.tensor([0, 1, 2]))


def test_padding_is_zero_and_scales_map_back():
    pre = Preprocessor(100, 200, size_divisible=32)
    images = [torch.rand(3, 50, 70), torch.rand(3, 90, 40)]
    batch, _ = pre(images)
    assert batch.image_sizes == [(100, 140), (200, 88)]
    assert tuple(batch.tensor.shape) == (2, 3, 224, 160)
    assert batch.tensor[0, :, 100:].abs().sum() == 0 and batch.tensor[0, :, :, 140:].abs().sum() == 0
    assert batch.tensor[1, :, :, 88:].abs().sum() == 0 and batch.tensor[1, :, :200, :88].abs().sum() > 0
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    up = rescale_boxes(boxes, (50, 70), batch.image_sizes[0])
    torch.testing.assert_close(up, torch.tensor([[20.0, 40.0, 60.0, 80.0]]))
    torch.testing.assert_close(rescale_boxes(up, batch.image_sizes[0], (50, 70)), boxes)
    kp = torch.tensor([[[7.0, 9.0, 2.0]]])
    torch.testing.assert_close(rescale_keypoints(kp, (90, 40), (200, 88)), torch.tensor([[[7 * 2.2, 9 * 200 / 90, 2.0]]]))


def test_multiscale_training_and_fixed_size():
    pre = Preprocessor((64, 96, 128), 1000, size_divisible=1)
    img = [torch.rand(3, 40, 40)]
    assert pre(img)[0].image_sizes == [(128, 128)]  # evaluation uses the last size
    pre.train()
    torch.manual_seed(0)
    seen = {pre(img)[0].image_sizes[0][0] for _ in range(30)}
    assert seen == {64, 96, 128}
    fixed = Preprocessor(fixed_size=(50, 80), size_divisible=1)
    b, t = fixed([torch.rand(3, 25, 20)], [Target(0, Instances((25, 20), boxes=torch.tensor([[2.0, 5.0, 10.0, 20.0]]),
                                                                 labels=torch.tensor([0])))])
    assert b.image_sizes == [(50, 80)] and b.scales == [(2.0, 4.0)]
    torch.testing.assert_close(t[0].instances.boxes, torch.tensor([[8.0, 10.0, 40.0, 40.0]]))


def test_bad_inputs_raise_data_errors():
    pre = Preprocessor(64, 100)
    with pytest.raises(DataError, match="image 1: dtype: expected a float tensor"):
        pre([torch.rand(3, 10, 10), torch.zeros(3, 10, 10, dtype=torch.uint8)])
    with pytest.raises(DataError, match="image 0: shape: expected a CHW RGB tensor"):
        pre([torch.rand(1, 10, 10)])
    with pytest.raises(DataError, match="2 images but 1 targets"):
        pre([torch.rand(3, 10, 10)] * 2, [Target(0, Instances((10, 10)))])
    t = Target(4, Instances((12, 10), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)), file_name="a.png")
    with pytest.raises(DataError, match=r"a\.png: image 4: image_size"):
        resize_target(t, (10, 10), (20, 20))
    with pytest.raises(ValueError, match="positive"):
        Preprocessor(0, 100)


def _dense_target(ignore_index=255):
    """A 3 x 4 image's target with a hand-made semantic map (void = ignore_index) and panoptic map."""
    labels = torch.tensor([[0, 1, 1, ignore_index],
                           [0, 1, 1, ignore_index],
                           [2, 2, ignore_index, ignore_index]])
    ids = torch.tensor([[0, 10, 10, 0],
                        [0, 10, 10, 0],
                        [7_000_001, 7_000_001, 0, 0]])  # an id beyond float32's exact integers
    segs = [SegmentInfo(id=10, category_id=3, label=1, area=4), SegmentInfo(id=7_000_001, category_id=5, label=2)]
    return Target(2, Instances((3, 4), boxes=torch.tensor([[1.0, 0.0, 3.0, 2.0]]), labels=torch.tensor([1])),
                  semantic=SemanticMap(labels, ignore_index), panoptic=PanopticMap(ids, segs), file_name="d.png")


def test_resize_target_moves_semantic_and_panoptic_maps_nearest():
    t = _dense_target()
    up = resize_target(t, (3, 4), (6, 8))
    assert torch.equal(up.semantic.labels, t.semantic.labels.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert up.semantic.ignore_index == 255 and up.semantic.labels.dtype == torch.int64
    assert torch.equal(up.panoptic.ids, t.panoptic.ids.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert [(s.id, s.category_id, s.area, s.bbox) for s in up.panoptic.segments] == [
        (10, 3, 16, (2.0, 0.0, 4.0, 4.0)), (7_000_001, 5, 8, (0.0, 4.0, 4.0, 2.0))]
    torch.testing.assert_close(up.instances.boxes, torch.tensor([[2.0, 0.0, 6.0, 4.0]]))
    # 3 x 4 -> 2 x 3 (interpolate's "nearest": source index floor(i * in / out)): rows 0, 1; columns 0, 1, 2
    down = resize_target(_dense_target(ignore_index=-1), (3, 4), (2, 3))
    assert down.semantic.labels.tolist() == [[0, 1, 1], [0, 1, 1]] and down.semantic.ignore_index == -1
    assert down.panoptic.ids.tolist() == [[0, 10, 10], [0, 10, 10]]
    assert [(s.id, s.area, s.bbox) for s in down.panoptic.segments] == [(10, 4, (1.0, 0.0, 2.0, 2.0))]
    # the maps follow the same sampling as the masks
    masked = Target(2, Instances((3, 4), boxes=torch.zeros(1, 4), labels=torch.tensor([0]),
                                 masks=(t.panoptic.ids == 10)[None]), panoptic=t.panoptic)
    moved = resize_target(masked, (3, 4), (5, 7))
    assert torch.equal(moved.instances.masks[0], moved.panoptic.ids == 10)


def test_resize_target_leaves_maps_of_another_size_alone():
    t = _dense_target()
    ready = torch.zeros(6, 8, dtype=torch.long)  # already in the resized frame: the semantic loss takes it so
    moved = resize_target(Target(2, t.instances, semantic=SemanticMap(ready), panoptic=PanopticMap(ready + 3)),
                          (3, 4), (6, 8))
    assert moved.semantic.labels is ready and torch.equal(moved.panoptic.ids, ready + 3)
    same = resize_target(t, (3, 4), (3, 4))
    assert same.semantic is t.semantic and same.panoptic is t.panoptic


def test_preprocessor_puts_semantic_maps_in_the_batch_frame_and_the_loss_is_unchanged():
    from sceneparse.models.segmentation import UNet

    torch.manual_seed(0)
    model = UNet(3, base_channels=4, depth=2, preprocessor=Preprocessor(8, 16, size_divisible=8)).train()
    t = _dense_target()
    batch, moved = model.prepare([torch.rand(3, 3, 4)], [t])
    assert batch.image_sizes == [(8, 10)] and moved[0].semantic.labels.shape == (8, 10)
    raw = model(batch)
    # the loss used to resize original-size maps itself; it gives the same numbers on the moved ones
    for k, v in model.loss(raw, [t]).items():
        assert torch.equal(v, model.loss(raw, moved)[k]), k
