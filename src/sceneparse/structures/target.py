"""``Target``: everything annotated for one image, in sceneparse's conventions."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import torch

from .instances import Instances
from .segmaps import PanopticMap, SemanticMap


@dataclass
class Target:
    """Ground truth of one image.

    Attributes:
        image_id: the dataset's image id (COCO ``image.id``).
        instances: objects as :class:`Instances` (boxes XYXY abs px, labels 0..C-1, masks?, keypoints?);
            no scores.
        iscrowd: ``bool [N]``; crowd regions are matched as "ignore" in evaluation.
        semantic: optional per-pixel labels (things and stuff).
        panoptic: optional panoptic segmentation.
        file_name: image path, for error messages and writers.
        extra: per-dataset extras (e.g. VOC ``difficult`` / ``truncated`` as ``bool [N]`` tensors).
    """

    image_id: int
    instances: Instances
    iscrowd: torch.Tensor | None = None
    semantic: SemanticMap | None = None
    panoptic: PanopticMap | None = None
    file_name: str = ""
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.instances)
        if self.iscrowd is None:
            self.iscrowd = torch.zeros(n, dtype=torch.bool)
        self.iscrowd = torch.as_tensor(self.iscrowd).bool()
        if self.iscrowd.shape != (n,):
            raise ValueError(f"iscrowd must be [{n}], got {tuple(self.iscrowd.shape)}")

    @property
    def image_size(self) -> tuple[int, int]:
        return self.instances.image_size

    def select(self, keep: torch.Tensor) -> "Target":
        """Keep instances by bool mask / index (iscrowd and per-instance extras follow)."""
        extra = {k: v[keep] if isinstance(v, torch.Tensor) and v.shape[:1] == (len(self.instances),) else v
                 for k, v in self.extra.items()}
        return replace(self, instances=self.instances[keep], iscrowd=self.iscrowd[keep], extra=extra)

    def to(self, device) -> "Target":
        """A copy with every tensor on ``device``: each field is moved by :func:`_move`, so a field
        added later is moved too."""
        return replace(self, **{f.name: _move(getattr(self, f.name), device) for f in fields(self) if f.init})


def _move(value: Any, device) -> Any:
    """``value`` with every tensor it holds on ``device``: tensors and objects with a ``to`` method
    (:class:`Instances`, :class:`SemanticMap`, :class:`PanopticMap`) by it; other dataclasses field by
    field; dicts, lists and tuples item by item; anything else (ids, names, numbers) as it is."""
    if isinstance(value, torch.Tensor) or (not isinstance(value, type) and callable(getattr(value, "to", None))):
        return value.to(device)
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _move(getattr(value, f.name), device) for f in fields(value) if f.init})
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device) for v in value)
    return value
