"""Checks of box targets before a detector's loss, shared by the families that train on boxes.

A target that reached a model's ``training_losses`` must be in the batch frame (moved there by
``model.prepare(images, targets)``), with finite boxes of positive width and height and labels in
``0..num_classes-1``; a :class:`~sceneparse.errors.DataError` names the file, the image and the field
otherwise. Crowd objects are left out of the returned targets (they are ignored by the losses, as in
torchvision and detectron2).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..errors import DataError, Problem
from ..structures.target import Target


def checked_box_targets(targets: Sequence[Target], image_sizes: Sequence[tuple[int, int]], num_classes: int, *,
                        needs: Mapping[str, str] | None = None) -> list[Target]:
    """``targets`` checked against the batch's ``image_sizes`` and ``num_classes``, crowds removed.
    ``needs``: ``{field: message}`` of instance fields the model trains on besides boxes and labels
    (e.g. ``{"masks": "Mask R-CNN training needs instance masks"}``)."""
    if len(targets) != len(image_sizes):
        raise DataError(f"{len(image_sizes)} images but {len(targets)} targets")
    out = []
    for i, t in enumerate(targets):
        where = (t.file_name or None, f"image {t.image_id}")
        inst = t.instances
        if tuple(inst.image_size) != tuple(image_sizes[i]):
            raise DataError(Problem(*where, "image_size", "target is not in the batch frame (resized image "
                                    f"{tuple(image_sizes[i])}); move it with model.prepare(images, targets)",
                                    inst.image_size))
        if inst.boxes is None or inst.labels is None:
            raise DataError(Problem(*where, "boxes/labels", "training needs boxes and labels"))
        bad = ~(inst.boxes[:, 2:] > inst.boxes[:, :2]).all(dim=1) | ~torch.isfinite(inst.boxes).all(dim=1)
        if bad.any():
            j = int(torch.where(bad)[0][0])
            raise DataError(Problem(*where, f"boxes[{j}]", "box must have positive width and height",
                                    [round(float(v), 3) for v in inst.boxes[j]]))
        if len(inst) and (inst.labels.min() < 0 or inst.labels.max() >= num_classes):
            raise DataError(Problem(*where, "labels", f"labels must lie in 0..{num_classes - 1}",
                                    inst.labels.tolist()))
        for field, message in (needs or {}).items():
            if getattr(inst, field) is None:
                raise DataError(Problem(*where, field, message))
        out.append(t if not t.iscrowd.any() else t.select(~t.iscrowd))
    return out


__all__ = ["checked_box_targets"]
