"""What a model does, read off the model object: its task, the COCO evaluations it supports, the
annotations it trains on, and the metric that ranks its checkpoints.

* ``semantic``: a :class:`~sceneparse.models.segmentation.SemanticSegmentor` (results are
  :class:`~sceneparse.structures.segmaps.SemanticMap`); trains on label PNGs; ranked by ``miou``.
* ``detection``: everything else (results are :class:`~sceneparse.structures.instances.Instances`);
  boxes always (``bbox``), masks when the model has a mask head (``roi_mask``; ``segm``), keypoints
  when it has a keypoint head (``roi_keypoint``; ``keypoints``). A keypoint model trains on the
  person_keypoints annotations, other detectors on the instances annotations (thing categories).
  Ranked by ``keypoints_AP``, else ``segm_AP``, else ``bbox_AP``.
"""
from __future__ import annotations

from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def model_task(model: nn.Module) -> str:
    """``"semantic"`` or ``"detection"`` (the ``task`` a checkpoint records)."""
    from ..models.segmentation.base import SemanticSegmentor

    return "semantic" if isinstance(_unwrap(model), SemanticSegmentor) else "detection"


def has_masks(model: nn.Module) -> bool:
    return getattr(_unwrap(model), "roi_mask", None) is not None


def has_keypoints(model: nn.Module) -> bool:
    return getattr(_unwrap(model), "roi_keypoint", None) is not None


def iou_types(model: nn.Module) -> tuple[str, ...]:
    """The COCO evaluations of a detector (``()`` for a semantic model)."""
    if model_task(model) == "semantic":
        return ()
    return ("bbox",) + (("segm",) if has_masks(model) else ()) + (("keypoints",) if has_keypoints(model) else ())


def data_kind(model: nn.Module) -> str:
    """The annotations ``model`` trains on: ``"semantic"``, ``"keypoints"`` or ``"instances"``
    (see :func:`sceneparse.data.layout.load_split`)."""
    if model_task(model) == "semantic":
        return "semantic"
    return "keypoints" if has_keypoints(model) else "instances"


def primary_metric(model: nn.Module) -> str:
    """The metric ``train.primary_metric=auto`` picks: keypoints_AP / segm_AP / bbox_AP / miou."""
    if model_task(model) == "semantic":
        return "miou"
    return f"{iou_types(model)[-1]}_AP"


__all__ = ["data_kind", "has_keypoints", "has_masks", "iou_types", "model_task", "primary_metric"]
