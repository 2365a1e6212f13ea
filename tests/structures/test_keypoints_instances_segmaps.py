import numpy as np
import pytest
import torch

from sceneparse.structures import Instances, PanopticMap, SegmentInfo, SemanticMap
from sceneparse.structures.keypoints import (COCO_KEYPOINT_NAMES, COCO_PERSON, KeypointSet, flip_keypoints,
                                             keypoints_to_boxes)
from sceneparse.structures.segmaps import id2rgb, rgb2id


def test_coco_person_flip_pairs_and_sigmas():
    names = COCO_PERSON.names
    for i, j in enumerate(COCO_PERSON.flip_index):
        a, b = names[i], names[j]
        assert a.replace("left", "X").replace("right", "left").replace("X", "right") == b
    assert COCO_PERSON.flip_index[0] == 0  # nose stays
    assert COCO_PERSON.oks_sigmas[0] == pytest.approx(0.026)
    assert (0, 1) in COCO_PERSON.skeleton and len(COCO_PERSON.skeleton) == 19  # 1-based (1,2) -> (0,1)
    assert len(COCO_KEYPOINT_NAMES) == 17


def test_custom_keypoint_set_validation():
    ks = KeypointSet.from_names(["head", "left_paw", "right_paw"], skeleton=[(0, 1), (0, 2)])
    assert ks.flip_index == (0, 2, 1)
    with pytest.raises(ValueError, match="out of range"):
        KeypointSet.from_names(["a", "b"], skeleton=[(0, 5)])


def test_flip_keypoints_swaps_left_right():
    kp = torch.zeros(1, 17, 3)
    kp[0, 5] = torch.tensor([10.0, 20.0, 2.0])  # left_shoulder
    f = flip_keypoints(kp, width=100)
    assert f[0, 6].tolist() == [90.0, 20.0, 2.0]  # now right_shoulder
    assert torch.equal(flip_keypoints(f, 100), kp)


def test_keypoints_to_boxes_ignores_unlabelled():
    kp = torch.tensor([[[1.0, 2.0, 2.0], [5.0, 9.0, 1.0], [100.0, 100.0, 0.0]],
                       [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    assert keypoints_to_boxes(kp).tolist() == [[1, 2, 5, 9], [0, 0, 0, 0]]


def test_instances_index_cat_and_checks():
    inst = Instances((10, 20), boxes=torch.rand(5, 4), labels=torch.arange(5), scores=torch.linspace(0, 1, 5),
                     masks=torch.zeros(5, 10, 20, dtype=torch.bool))
    assert len(inst) == 5
    sub = inst[inst.scores > 0.4]
    assert sub.labels.tolist() == [2, 3, 4] and sub.masks.shape == (3, 10, 20)
    assert inst[1].labels.tolist() == [1]
    assert inst[[4, 0]].labels.tolist() == [4, 0]
    both = Instances.cat([inst, sub])
    assert len(both) == 8 and both.labels[-1].item() == 4
    with pytest.raises(ValueError, match="has 3 rows, expected 5"):
        Instances((10, 20), boxes=torch.rand(5, 4), labels=torch.arange(3))
    with pytest.raises(ValueError, match="fields"):
        Instances.cat([inst, Instances((10, 20), boxes=torch.rand(1, 4))])
    assert len(Instances.empty((4, 4), masks=True, num_keypoints=17)) == 0


def test_panoptic_png_encoding_round_trip():
    ids = np.array([[0, 1, 256], [65536 + 3, 1000, 16777215]])
    rgb = id2rgb(ids)
    assert rgb[0, 2].tolist() == [0, 1, 0]
    assert np.array_equal(rgb2id(rgb), ids)


def test_panoptic_to_semantic():
    ids = torch.tensor([[0, 5, 5], [7, 7, 9]])
    pm = PanopticMap(ids, [SegmentInfo(5, 11, label=1), SegmentInfo(7, 12, label=2, isthing=False),
                           SegmentInfo(9, 11, label=1)])
    sem = pm.semantic()
    assert isinstance(sem, SemanticMap)
    assert sem.labels.tolist() == [[255, 1, 1], [2, 2, 1]]
    with pytest.raises(ValueError, match="void"):
        PanopticMap(ids, [SegmentInfo(0, 1)])


def test_dense_maps_become_int64_hw_tensors():
    sem = SemanticMap(np.array([[0, 1], [255, 2]], dtype=np.uint8))
    pan = PanopticMap([[0, 5], [5, 5]], [SegmentInfo(id=5, category_id=1)])
    assert sem.labels.dtype == pan.ids.dtype == torch.int64 and sem.image_size == pan.image_size == (2, 2)
    with pytest.raises(ValueError, match=r"SemanticMap labels must be \[H, W\], got \(1, 2, 2\)"):
        SemanticMap(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"PanopticMap ids must be \[H, W\], got \(4,\)"):
        PanopticMap(np.zeros(4))
