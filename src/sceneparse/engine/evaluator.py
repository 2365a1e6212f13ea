"""Evaluate a model on a dataset split: batched ``model.predict`` scored by :mod:`sceneparse.evaluation`.

The one place that maps a model to its evaluation, by :class:`~sceneparse.models.base.ModelInfo`:

* ``instances`` results (``detect``, ``instance``, ``pose``): COCO AP for each of ``info.iou_types``
  (``bbox``, ``segm``, ``keypoints`` with the data's OKS sigmas, else the model's), computed on columns
  (:class:`~sceneparse.evaluation.coco.DetectionColumns`) against the split's own annotations, with no
  JSON in between. Each batch's results are turned into columns (masks RLE-encoded) at once, so
  memory does not grow with full-image masks.
* ``promptable`` models: prompted with the ground-truth boxes of each image (SAM's box-prompt
  protocol); each returned mask takes its prompt's category and is scored as COCO ``segm`` AP.
* ``semantic``: one streaming confusion matrix (:class:`~sceneparse.evaluation.SemanticEvaluator`).
* ``panoptic``: PQ / SQ / RQ (:class:`~sceneparse.evaluation.panoptic.PanopticEvaluator`) against the
  split's panoptic PNGs.

Under ``torchrun`` every process predicts its share of the images (``rank::world_size``); the
columns / confusion matrices / PQ counters are gathered and rank 0 computes the metrics (other
ranks get ``None``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.datasets import SceneDataset, collate
from ..data.formats import to_coco_dict
from ..data.records import AnnotationSet
from ..evaluation import COCOEvalResult, SemanticEvalResult, SemanticEvaluator, evaluate_coco
from ..evaluation.coco import DetectionColumns
from ..evaluation.panoptic import PanopticEvalResult, PanopticEvaluator
from ..models.base import PANOPTIC_METRICS, SEMANTIC_METRICS, ModelInfo, model_info, unwrap
from ..structures.prompts import Prompts
from ..structures.segmaps import PanopticMap, SegmentInfo
from . import distributed as dist


@dataclass
class EvalReport:
    """Metrics of one evaluation.

    Attributes:
        task: the model's :attr:`ModelInfo.task` (``detect``, ``instance``, ``pose``, ``semantic``, ...).
        metrics: flat ``{name: value}``: ``bbox_AP``, ``bbox_AP50``, ``bbox_AP75``, ``bbox_APs/m/l``,
            ``bbox_AR1/10/100``, ``bbox_ARs/m/l`` (and the same with ``segm_`` / ``keypoints_``), or
            ``miou``, ``pixel_acc``, ``mean_acc``, ``fwiou``, or ``pq``, ``sq``, ``rq``, ``pq_things``,
            ``pq_stuff``. Fractions in ``[0, 1]``; COCO's ``-1``
            (no ground truth) and NaN (undefined) are kept as they are.
        per_class: ``{class name: {metric: value}}``: ``bbox_AP``/``segm_AP``/... per category, or
            ``iou``/``acc`` per semantic class.
        coco: the full :class:`COCOEvalResult` by IoU type (precision arrays for PR curves, matches).
        semantic: the full :class:`SemanticEvalResult` (confusion matrix).
        panoptic: the full :class:`PanopticEvalResult` (per-category PQ counts).
        num_images, seconds: images evaluated and wall time (prediction + scoring).
    """

    task: str
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    coco: dict[str, COCOEvalResult] = field(default_factory=dict)
    semantic: SemanticEvalResult | None = None
    panoptic: PanopticEvalResult | None = None
    num_images: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """pycocotools' tables (and per-category lines) per IoU type, or the per-class IoU table."""
        parts = []
        for iou_type, res in self.coco.items():
            parts += [f"{iou_type}:", res.summary(), "", res.per_category_table(), ""]
        if self.semantic is not None:
            parts += [self.semantic.summary(), ""]
        if self.panoptic is not None:
            parts += [self.panoptic.summary(), ""]
        parts.append(f"{self.num_images} images in {self.seconds:.1f} s: " + "  ".join(
            f"{k} {_fmt(v)}" for k, v in self.metrics.items() if _headline(k)))
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN written as ``None``)."""
        out: dict[str, Any] = {"task": self.task, "metrics": _finite(self.metrics),
                               "per_class": _finite(self.per_class), "num_images": self.num_images,
                               "seconds": round(self.seconds, 3)}
        if self.coco:
            out["coco"] = {t: _finite(r.to_dict()) for t, r in self.coco.items()}
        if self.semantic is not None:
            out["semantic"] = _finite(self.semantic.to_dict())
        if self.panoptic is not None:
            out["panoptic"] = _finite(self.panoptic.to_dict())
        return out


def _headline(name: str) -> bool:
    return name in SEMANTIC_METRICS or name in PANOPTIC_METRICS or name.endswith(("_AP", "_AP50", "_AP75"))


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.4f}"


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _concat_columns(parts: list[DetectionColumns], iou_type: str) -> DetectionColumns:
    """One :class:`DetectionColumns` from per-batch pieces (empty pieces skipped)."""
    full = [p for p in parts if len(p.image_ids)]
    if not full:
        return parts[0] if parts else DetectionColumns.from_instances([], [], [0], iou_type)
    cat = lambda name: np.concatenate([getattr(p, name) for p in full])  # noqa: E731
    return DetectionColumns(
        image_ids=cat("image_ids"), category_ids=cat("category_ids"), scores=cat("scores"),
        boxes=cat("boxes") if iou_type == "bbox" else None,
        segmentations=[s for p in full for s in p.segmentations] if iou_type == "segm" else None,
        keypoints=cat("keypoints") if iou_type == "keypoints" else None)


def _eval_dataset(dataset: SceneDataset | AnnotationSet, info: ModelInfo) -> SceneDataset:
    """A transform-free dataset that loads only what scoring needs (images; label maps for semantic,
    panoptic maps for panoptic, boxes for promptable models' prompts)."""
    aset = dataset.aset if isinstance(dataset, SceneDataset) else dataset
    return SceneDataset(aset, None, load_masks=False, load_keypoints=False, load_semantic=info.result == "semantic",
                        load_panoptic=info.result == "panoptic")


def _coco_types(info: ModelInfo) -> tuple[str, ...]:
    """The COCO evaluations of a model with instance results (promptable: its masks, ``segm``)."""
    if info.task == "promptable":
        return ("segm",)
    return info.iou_types


def _box_prompts(targets, device) -> list[Prompts]:
    return [Prompts(boxes=t.instances.boxes.to(device)) for t in targets]


def _prompted_results(results, targets) -> list:
    """A promptable model's masks with their prompt's ground-truth label (one result per prompt box)."""
    out = []
    for r, t in zip(results, targets):
        if len(r) != len(t.instances):
            raise ValueError(f"a promptable model returned {len(r)} masks for {len(t.instances)} box prompts")
        r = r.to("cpu")
        r.labels = t.instances.labels.to(torch.long).clone()
        out.append(r)
    return out


def _panoptic_with_ids(pmap: PanopticMap, to_id) -> PanopticMap:
    """A predicted map's segments with dataset ``category_id`` from their contiguous ``label``."""
    segs = [SegmentInfo(s.id, int(to_id(s.label)) if s.label is not None and s.label >= 0 else int(s.category_id),
                        s.label, s.isthing, False, s.area, s.bbox, s.score) for s in pmap.segments]
    return PanopticMap(pmap.ids.cpu(), segs)


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: SceneDataset | AnnotationSet, *, batch_size: int = 4,
                   progress: bool = True, workers: int = 0, desc: str = "val") -> EvalReport | None:
    """Predict every image of ``dataset`` (its annotation set; its transforms are not applied) in
    batches and score the results against the set's annotations, as the model's
    :class:`~sceneparse.models.base.ModelInfo` says (see the module docstring).

    Args:
        model: a :class:`~sceneparse.models.base.SceneModel` (a ``DistributedDataParallel`` wrapper is
            unwrapped); runs through ``model.predict`` (eval mode, restored afterwards). Labels must be
            the set's (``categories[label]``), semantic PNG values the model's classes.
        dataset: the split (a :class:`SceneDataset` or its :class:`AnnotationSet`).
        batch_size: images per ``predict`` call; workers: ``DataLoader`` processes reading images.
        progress: a tqdm bar (rank 0 only).

    Returns:
        An :class:`EvalReport` (rank 0; ``None`` on the other ranks of a distributed run).
    """
    t0 = time.perf_counter()
    module = unwrap(model)
    info = model_info(module)
    ds = _eval_dataset(dataset, info)
    aset = ds.aset
    indices = list(range(dist.rank(), len(ds), dist.world_size()))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, indices), batch_size=max(1, int(batch_size)),
                                         shuffle=False, num_workers=workers, collate_fn=collate)
    names = aset.categories.names
    types = _coco_types(info) if info.result == "instances" else ()
    columns: dict[str, list[DetectionColumns]] = {t: [] for t in types}
    sem = SemanticEvaluator(len(names), class_names=names) if info.result == "semantic" else None
    pan = PanopticEvaluator(aset.categories) if info.result == "panoptic" else None
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not (progress and dist.is_main()))
    for images, targets in bar:
        if info.task == "promptable":
            results = _prompted_results(module.predict(images, prompts=_box_prompts(targets, module.device)), targets)
        else:
            results = module.predict(images)
        if sem is not None:
            for r, t in zip(results, targets):
                sem.update(r.labels, t.semantic.labels.to(r.labels.device), image=t.image_id)
        elif pan is not None:
            for r, t in zip(results, targets):
                pan.update(t.panoptic, _panoptic_with_ids(r, aset.categories.to_id), image_id=t.image_id)
        else:
            ids = [t.image_id for t in targets]
            cpu = [r.to("cpu") for r in results]
            for t in types:
                columns[t].append(DetectionColumns.from_instances(ids, cpu, aset.categories.ids, t))
    bar.close()

    if dist.is_distributed():
        if sem is not None:
            gathered = dist.all_gather_objects((sem.confusion, sem.num_images))
            sem.confusion = np.sum([g[0] for g in gathered], axis=0)
            sem.num_images = int(sum(g[1] for g in gathered))
        elif pan is not None:
            gathered = dist.all_gather_objects((pan.tp, pan.fp, pan.fn, pan.iou_sum, pan.num_images))
            pan.tp, pan.fp, pan.fn, pan.iou_sum = (np.sum([g[k] for g in gathered], axis=0) for k in range(4))
            pan.num_images = int(sum(g[4] for g in gathered))
        else:
            gathered = dist.all_gather_objects(columns)
            columns = {t: [c for g in gathered for c in g[t]] for t in types}
        if not dist.is_main():
            return None

    if sem is not None:
        res = sem.compute()
        metrics = {"miou": res.miou, "pixel_acc": res.pixel_accuracy, "mean_acc": res.mean_class_accuracy,
                   "fwiou": res.fwiou}
        per_class = {n: {"iou": float(res.iou[c]), "acc": float(res.class_accuracy[c])} for c, n in enumerate(names)}
        return EvalReport(info.task, {k: float(v) for k, v in metrics.items()}, per_class, semantic=res,
                          num_images=len(ds), seconds=time.perf_counter() - t0)
    if pan is not None:
        res = pan.compute()
        metrics = {"pq": res.pq, "sq": res.sq, "rq": res.rq, "pq_things": res.things.pq, "pq_stuff": res.stuff.pq}
        per_class = {c.name: {"pq": c.pq, "sq": c.sq, "rq": c.rq} for c in res.per_category.values()}
        return EvalReport(info.task, {k: float(v) for k, v in metrics.items()}, per_class, panoptic=res,
                          num_images=len(ds), seconds=time.perf_counter() - t0)

    gt = to_coco_dict(aset)
    kset = aset.keypoint_set if aset.keypoint_set is not None else info.keypoints
    sigmas = list(kset.sigmas) if kset is not None else None
    metrics: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {n: {} for n in names}
    coco: dict[str, COCOEvalResult] = {}
    for t in types:
        res = evaluate_coco(gt, _concat_columns(columns[t], t), t, sigmas=sigmas if t == "keypoints" else None)
        coco[t] = res
        metrics.update({f"{t}_{n}": float(v) for n, v in zip(res.stat_names, res.stats)})
        for cid, cs in res.per_category.items():
            per_class.setdefault(cs.name, {})[f"{t}_AP"] = float(cs["AP"])
    return EvalReport(info.task, metrics, per_class, coco=coco, num_images=len(ds), seconds=time.perf_counter() - t0)


__all__ = ["EvalReport", "SEMANTIC_METRICS", "PANOPTIC_METRICS", "evaluate_model"]
