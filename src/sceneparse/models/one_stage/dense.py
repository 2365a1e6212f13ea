"""One-stage dense detectors: the shared composition ``backbone -> neck -> dense head -> candidates
-> class-wise NMS`` (RetinaNet, FCOS, SSD / SSDlite implement the family-specific parts).

A dense detector predicts, at every *reference* (an anchor box of RetinaNet / SSD, a point of FCOS;
all of them are boxes from :class:`~sceneparse.ops.anchors.AnchorGenerator` or SSD's default-box
generator), ``K = C + 1`` class logits and 4 box-regression values. Class column 0 is the background
column (torchvision's layout, so its released state dicts load unchanged): the softmax of SSD uses
it as the "no object" class; the sigmoid heads of RetinaNet / FCOS carry it along as one more
independent output that is never a positive target and is never reported. Sceneparse label ``l``
(``0..C-1``) is column ``l + 1``, i.e. torchvision's COCO category id ``l + 1``.

Reference order everywhere is level-major, then location-major (row, column), then anchor: the
order in which a head's ``[B, A*V, H, W]`` maps are flattened by
:func:`sceneparse.models.heads.rpn.flatten_levels`.

Subclasses provide:

* ``head(features) -> (cls_logits [B, N, K], box_regression [B, N, 4], centerness [B, N] | None)``
* ``references(batch, features) -> (boxes [N, 4], per_level counts)``
* ``decode(box_regression [n, 4], references [n, 4]) -> boxes [n, 4]``
* ``candidates(raw, i, settings) -> (boxes, scores, labels)`` before NMS (default: per level, scores
  from :meth:`class_scores` ``> conf``, the ``topk_candidates`` best, decoded and clipped;
  torchvision's RetinaNet / FCOS postprocessing)
* ``loss(raw, targets)``
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ...ops.nms import batched_nms
from ...postprocess.detection import detections_in_original, detections_to_instances
from ...structures import boxes as box_geometry
from ...structures.batch import ImageBatch
from ...structures.instances import Instances
from ...structures.target import Target
from ..base import InferenceSettings, ModelInfo, SceneModel
from ..preprocess import Preprocessor
from ..targets import checked_box_targets


@dataclass
class DenseDetections:
    """Final detections of one image in the batch (resized) frame; ``labels`` are ``0..C-1``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass
class DenseRaw:
    """Raw outputs of a dense detector for one batch (frame: the padded batch / resized images).

    Attributes:
        image_sizes: ``(h, w)`` of each resized image.
        cls_logits: ``[B, N, C + 1]`` class logits per reference (column 0: background).
        box_regression: ``[B, N, 4]`` box regression per reference (the family's parametrisation).
        references: ``[N, 4]`` XYXY anchors / points (as boxes), shared by the images of the batch.
        num_per_level: ``N`` split by pyramid level.
        centerness: ``[B, N]`` centre-ness logits (FCOS) or ``None``.
    """

    image_sizes: list[tuple[int, int]]
    cls_logits: Tensor
    box_regression: Tensor
    references: Tensor
    num_per_level: list[int]
    centerness: Tensor | None = None


def topk_count(scores: Tensor, k: int):
    """``min(k, len(scores))``; a graph value while tracing (ONNX ``TopK`` needs ``k <= n``, and a
    Python ``min`` would freeze the traced example's count into the graph)."""
    if not torch.jit.is_tracing():
        return min(int(k), int(scores.shape[0]))
    n = torch._shape_as_tensor(scores)[0].unsqueeze(0)
    return torch.min(torch.cat((torch.tensor([int(k)], dtype=n.dtype), n), 0))


class DenseDetector(SceneModel):
    """Backbone + neck + dense head; the shared verbs of RetinaNet, FCOS and SSD.

    Args:
        backbone, neck: feature extractor and pyramid (``neck`` may be ``None``: backbone maps are used).
        num_classes: foreground classes ``C`` (labels ``0..C-1``; the head has ``C + 1`` columns).
        preprocessor: resize / normalise / pad rule.
        score_thresh, nms_thresh, detections_per_img: default inference settings (``ModelInfo.conf``,
            ``iou``, ``max_det``).
        topk_candidates: candidates kept before NMS (per level, or per class for SSD).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None, num_classes: int, preprocessor: Preprocessor, *,
                 score_thresh: float, nms_thresh: float, detections_per_img: int, topk_candidates: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (foreground classes), got {num_classes}")
        self.backbone = backbone
        self.neck = neck
        self.num_classes = int(num_classes)
        self.preprocessor = preprocessor
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.topk_candidates = int(topk_candidates)

    # ---- protocol ----------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return ModelInfo("detect", self.num_classes, iou_types=("bbox",), data="instances",
                         class_names=tuple(self.class_names) if len(self.class_names) == self.num_classes else (),
                         size=self.preprocessor.policy(), conf=self.score_thresh, iou=self.nms_thresh,
                         max_det=self.detections_per_img, export_outputs=("boxes", "scores", "labels"),
                         extra={"topk_candidates": self.topk_candidates})

    def features(self, images: Tensor) -> list[Tensor]:
        feats = self.backbone(images)
        return list(self.neck(feats)) if self.neck is not None else list(feats)

    def forward(self, batch: ImageBatch, targets: Sequence[Target] | None = None) -> DenseRaw:
        """``batch`` from :meth:`prepare` -> head outputs for every reference (``targets`` are not
        needed by the forward pass of a dense detector; they are accepted for the common signature)."""
        feats = self.features(batch.tensor)
        cls_logits, box_regression, centerness = self.head(feats)
        refs, per_level = self.references(batch, feats)
        return DenseRaw(list(batch.image_sizes), cls_logits, box_regression, refs, per_level, centerness)

    def references(self, batch: ImageBatch, feats: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
        """Anchors ``[N, 4]`` for the padded batch and the count per level (grid anchors of
        ``self.anchor_generator``; SSD overrides this)."""
        f0 = feats[0]
        dtype = torch.promote_types(f0.dtype, torch.float32)
        refs = self.anchor_generator(tuple(batch.tensor.shape[-2:]), [tuple(f.shape[-2:]) for f in feats],
                                     device=f0.device, dtype=dtype)
        per_level = [r.shape[0] for r in refs]
        if not torch.jit.is_tracing():
            per_level = [int(n) for n in per_level]
        return torch.cat(refs), per_level

    # ---- inference ------------------------------------------------------------------------------
    def class_scores(self, raw: DenseRaw, i: int, start, end) -> Tensor:
        """Foreground scores ``[n, C]`` of image ``i`` for references ``start:end`` (sigmoid of the
        class logits without the background column; FCOS and SSD override)."""
        return torch.sigmoid(raw.cls_logits[i, start:end, 1:])

    def candidates(self, raw: DenseRaw, i: int, settings: InferenceSettings) -> tuple[Tensor, Tensor, Tensor]:
        """Per level: scores ``> conf``, the ``topk_candidates`` best (reference, class) pairs, their
        boxes decoded and clipped to the image -> ``(boxes [M, 4], scores [M], labels [M] 0..C-1)``."""
        boxes, scores, labels = [], [], []
        start = 0
        for n in raw.num_per_level:
            end = start + n
            s = self.class_scores(raw, i, start, end)
            c = s.shape[1]
            s = s.flatten()
            idx = torch.where(s > settings.conf)[0]
            s = s[idx]
            s, order = s.topk(topk_count(s, self.topk_candidates))
            idx = idx[order]
            ref = torch.div(idx, c, rounding_mode="floor") + start
            b = self.decode(raw.box_regression[i, ref], raw.references[ref])
            boxes.append(box_geometry.clip(b, raw.image_sizes[i]))
            scores.append(s)
            labels.append(idx % c)
            start = end
        return torch.cat(boxes), torch.cat(scores), torch.cat(labels)

    def detect(self, raw: DenseRaw, settings: InferenceSettings | None = None) -> list[DenseDetections]:
        """Candidates -> class-wise NMS at ``settings.iou`` -> the ``max_det`` best, per image."""
        settings = settings or self.settings()
        out = []
        for i in range(len(raw.image_sizes)):
            boxes, scores, labels = self.candidates(raw, i, settings)
            keep = batched_nms(boxes, scores, labels, settings.iou)[: settings.max_det]
            out.append(DenseDetections(boxes[keep], scores[keep], labels[keep]))
        return out

    def postprocess(self, raw: DenseRaw, batch: ImageBatch,
                    settings: InferenceSettings | None = None) -> list[Instances]:
        """Detections (default settings: :attr:`info`) -> :class:`Instances` in original pixels."""
        return [detections_to_instances(d.boxes, d.scores, d.labels, rs, os_, label_offset=0)
                for d, rs, os_ in zip(self.detect(raw, settings), batch.image_sizes, batch.original_sizes)]

    def infer(self, images: list[Tensor], settings: InferenceSettings) -> list[Instances]:
        """The score threshold and ``max_det`` act before / at NMS, as in the papers' inference."""
        batch, _ = self.prepare(images, imgsz=settings.imgsz)
        return self.postprocess(self(batch), batch, settings)

    def export_graph(self) -> "DenseDetectorGraph":
        return DenseDetectorGraph(self)

    # ---- training -------------------------------------------------------------------------------
    def training_targets(self, targets: Sequence[Target], raw: DenseRaw) -> list[Target]:
        """Targets checked (batch frame, positive boxes, labels in range) with crowd objects left out."""
        return checked_box_targets(targets, raw.image_sizes, self.num_classes)

    def training_losses(self, images: Sequence[Tensor], targets: Sequence[Target]) -> dict[str, Tensor]:
        batch, t = self.prepare(images, targets)
        return self.loss(self(batch, t), t)


class DenseDetectorGraph(nn.Module):
    """``image [3, H, W]`` in [0, 1] -> ``(boxes, scores, labels)`` in input-image pixels: ``prepare`` +
    ``forward`` + candidates + class-wise NMS + the mapping back, with the model's default settings."""

    batched = False  #: the exporter's input is one ``[3, H, W]`` image

    def __init__(self, model: DenseDetector):
        super().__init__()
        self.model = model
        self.output_names = model.info.export_outputs
        self.min_opset = (11, "NonMaxSuppression and TopK with a computed k need opset 11")

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        batch, _ = self.model.prepare([image])
        d = self.model.detect(self.model(batch))[0]
        out = detections_in_original(d.boxes, d.scores, d.labels, batch.image_sizes[0], batch.original_sizes[0],
                                     label_offset=0)
        return tuple(out[name] for name in self.output_names)


__all__ = ["DenseDetections", "DenseDetector", "DenseDetectorGraph", "DenseRaw", "topk_count"]
