"""``Target.to``: every tensor-holding field moves (issue 22: ``panoptic`` was left behind)."""
import dataclasses

import torch

from sceneparse.structures import Instances, PanopticMap, SegmentInfo, SemanticMap
from sceneparse.structures.target import Target


def _tensors(value, path="target"):
    """Every tensor reachable from ``value`` (dataclass fields, dicts, lists, tuples), with its path."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{path}[{i}]")


def full_target() -> Target:
    """A Target with every field set, each tensor-holding one holding tensors."""
    h, w = 6, 8
    values = dict(
        image_id=7,
        instances=Instances((h, w), boxes=torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 6]]),
                            labels=torch.tensor([0, 2]), masks=torch.zeros(2, h, w, dtype=torch.bool),
                            keypoints=torch.zeros(2, 3, 3)),
        iscrowd=torch.tensor([False, True]),
        semantic=SemanticMap(torch.zeros(h, w, dtype=torch.long), scores=torch.rand(3, h, w)),
        panoptic=PanopticMap(torch.ones(h, w, dtype=torch.long), [SegmentInfo(1, 5, label=0)]),
        file_name="a.jpg",
        extra={"difficult": torch.tensor([True, False]), "note": "kept as is"},
    )
    # a field added to Target must be added here too, so that the test below checks it moves
    assert set(values) == {f.name for f in dataclasses.fields(Target)}, "update full_target() for new fields"
    return Target(**values)


def test_target_to_moves_every_tensor_of_every_field():
    target = full_target()
    moved = target.to("meta")
    for f in dataclasses.fields(Target):
        before = dict(_tensors(getattr(target, f.name), f.name))
        after = dict(_tensors(getattr(moved, f.name), f.name))
        assert set(after) == set(before), f.name  # nothing dropped or added
        for path, t in after.items():
            assert t.device.type == "meta", f"{path} was not moved"
            assert t.dtype == before[path].dtype and t.shape == before[path].shape, path
        if not before:  # fields without tensors are carried over unchanged
            assert getattr(moved, f.name) == getattr(target, f.name), f.name
    assert dict(_tensors(target.panoptic))  # the field that was forgotten does hold a tensor
    assert moved.panoptic.segments == target.panoptic.segments
    # the original is untouched
    assert all(t.device.type == "cpu" for _, t in _tensors(target))


def test_target_to_with_optional_fields_unset():
    target = Target(3, Instances((4, 4), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)))
    moved = target.to("meta")
    assert moved.semantic is None and moved.panoptic is None and moved.extra == {}
    assert moved.iscrowd.device.type == "meta" and moved.instances.boxes.device.type == "meta"
