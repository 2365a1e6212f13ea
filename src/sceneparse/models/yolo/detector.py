"""ultralytics' YOLOv8 and YOLO11 detectors (composition of :mod:`.blocks`; the model-family contract).

Architecture (ultralytics' ``yolov8.yaml`` / ``yolo11.yaml``; layer numbers are ultralytics' indices,
which its checkpoints use as key prefixes ``model.<i>.``):

* backbone: stride-2 3x3 Convs (P1..P5) with C2f (v8) / C3k2 (11) stages, SPPF at P5; YOLO11 adds a
  C2PSA attention block after it.
* neck (PAN, Liu et al. 2018): top-down (nearest 2x upsample, concat with the backbone's P4 / P3,
  a C2f / C3k2) then bottom-up (stride-2 3x3 Conv, concat with the top-down P4 / the backbone's P5,
  a C2f / C3k2), giving P3 / P4 / P5 at strides 8 / 16 / 32.
* head (decoupled, anchor-free, one point per cell): per level a box branch (two 3x3 Convs ->
  ``4 reg_max`` logits: a distribution over 0..15 stride units for each of l, t, r, b, the DFL of
  Generalized Focal Loss) and a class branch (v8: two 3x3 Convs; YOLO11: depthwise 3x3 + pointwise
  1x1, twice) -> ``C`` logits, sigmoid scores (no objectness). Widths ``max(16, c3 / 4, 4 reg_max)``
  and ``max(c3, min(C, 100))`` with ``c3`` the P3 width.

Scales (``[depth, width, max_channels]``): channels ``make_divisible(min(c, max_channels) * width, 8)``,
repeats ``max(round(n * depth), 1)``. YOLO11 m/l/x use C3k blocks inside every C3k2.

Inference as ultralytics' predictor: letterbox to ``imgsz`` (rectangular, stride-32 padding when the
images of a call share one shape; :mod:`.letterbox`), ``/ 255``; boxes = anchor point -+ DFL
expectation, times the stride; NMS (:func:`yolo_nms`); boxes back to original pixels and clipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import DataError, Problem
from ...ops.nms import nms as _nms
from ...structures.instances import Instances
from ...structures.target import Target
from ..base import InferenceSettings, ModelInfo, SceneModel, SizePolicy, resolve_imgsz
from .blocks import C2PSA, C2f, C3k2, Conv, DWConv, SPPF, anchor_points, dfl_expectation, make_divisible
from .letterbox import LetterboxBatch, letterbox_image, letterbox_params, scale_boxes_back

#: ``family -> scale -> (depth, width, max_channels)`` (ultralytics' YAMLs)
SCALES: dict[str, dict[str, tuple[float, float, int]]] = {
    "yolov8": {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768), "l": (1.00, 1.00, 512),
               "x": (1.00, 1.25, 512)},
    "yolo11": {"n": (0.50, 0.25, 1024), "s": (0.50, 0.50, 1024), "m": (0.50, 1.00, 512), "l": (1.00, 1.00, 512),
               "x": (1.00, 1.50, 512)},
}
STRIDES = (8, 16, 32)
#: ultralytics' NMS constants: class offset of its class-aware trick, and the candidate cap
MAX_WH = 7680
MAX_NMS = 30000


@dataclass(frozen=True)
class YOLOSpec:
    """One YOLO variant: ``family`` (``yolov8`` / ``yolo11``) and ``scale`` (n, s, m, l, x)."""

    family: str
    scale: str

    def __post_init__(self) -> None:
        if self.family not in SCALES or self.scale not in SCALES[self.family]:
            raise ValueError(f"unknown YOLO variant {self.family}{self.scale}")

    @property
    def name(self) -> str:
        return f"{self.family}{self.scale}"

    def ch(self, c: int) -> int:
        """The width of a layer the YAML gives ``c`` channels."""
        _, width, max_ch = SCALES[self.family][self.scale]
        return make_divisible(min(c, max_ch) * width, 8)

    def n(self, repeats: int) -> int:
        """The repeats of a block the YAML gives ``repeats``."""
        depth = SCALES[self.family][self.scale][0]
        return max(round(repeats * depth), 1) if repeats > 1 else repeats


def _csp(spec: YOLOSpec, c1: int, c2: int, repeats: int, *, shortcut: bool, c3k: bool = False,
         e: float = 0.5) -> nn.Module:
    """The family's CSP block: C2f (v8) or C3k2 (11; ``c3k`` forced on for m/l/x as ultralytics does)."""
    if spec.family == "yolov8":
        return C2f(c1, c2, spec.n(repeats), shortcut)
    return C3k2(c1, c2, spec.n(repeats), c3k or spec.scale in ("m", "l", "x"), e, shortcut)


class YOLOBackbone(nn.Module):
    """Layers 0..9 (v8) / 0..10 (11) of ultralytics' models, in ``layers`` at those indices. Returns
    ``[P3, P4, P5]`` (outputs of layers 4, 6 and the last)."""

    def __init__(self, spec: YOLOSpec):
        super().__init__()
        c = spec.ch
        v8 = spec.family == "yolov8"
        layers: list[nn.Module] = [Conv(3, c(64), 3, 2), Conv(c(64), c(128), 3, 2)]
        if v8:
            layers += [_csp(spec, c(128), c(128), 3, shortcut=True), Conv(c(128), c(256), 3, 2),
                       _csp(spec, c(256), c(256), 6, shortcut=True), Conv(c(256), c(512), 3, 2),
                       _csp(spec, c(512), c(512), 6, shortcut=True), Conv(c(512), c(1024), 3, 2),
                       _csp(spec, c(1024), c(1024), 3, shortcut=True), SPPF(c(1024), c(1024), 5)]
        else:
            layers += [_csp(spec, c(128), c(256), 2, shortcut=True, e=0.25), Conv(c(256), c(256), 3, 2),
                       _csp(spec, c(256), c(512), 2, shortcut=True, e=0.25), Conv(c(512), c(512), 3, 2),
                       _csp(spec, c(512), c(512), 2, shortcut=True, c3k=True), Conv(c(512), c(1024), 3, 2),
                       _csp(spec, c(1024), c(1024), 2, shortcut=True, c3k=True), SPPF(c(1024), c(1024), 5),
                       C2PSA(c(1024), c(1024), spec.n(2))]
        self.layers = nn.ModuleList(layers)
        self.out_channels = [c(256), c(512), c(1024)] if v8 else [c(512), c(512), c(1024)]

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in (4, 6):
                outs.append(x)
        return outs + [x]


class PANNeck(nn.Module):
    """Top-down then bottom-up path aggregation over ``[P3, P4, P5]`` (ultralytics' head layers up to Detect)."""

    def __init__(self, spec: YOLOSpec, in_channels: Sequence[int]):
        super().__init__()
        c = spec.ch
        c3, c4, c5 = in_channels
        v8 = spec.family == "yolov8"
        n = 3 if v8 else 2
        sc = not v8  # the neck's C2f have no residuals; YOLO11's C3k2 keep their default shortcut=True
        self.top_down_p4 = _csp(spec, c5 + c4, c(512), n, shortcut=sc)
        self.top_down_p3 = _csp(spec, c(512) + c3, c(256), n, shortcut=sc)
        self.down_p3 = Conv(c(256), c(256), 3, 2)
        self.bottom_up_p4 = _csp(spec, c(256) + c(512), c(512), n, shortcut=sc)
        self.down_p4 = Conv(c(512), c(512), 3, 2)
        self.bottom_up_p5 = _csp(spec, c(512) + c5, c(1024), n, shortcut=sc, c3k=True)
        self.out_channels = [c(256), c(512), c(1024)]

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        p3, p4, p5 = feats
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
        t4 = self.top_down_p4(torch.cat((up(p5), p4), 1))
        n3 = self.top_down_p3(torch.cat((up(t4), p3), 1))
        n4 = self.bottom_up_p4(torch.cat((self.down_p3(n3), t4), 1))
        n5 = self.bottom_up_p5(torch.cat((self.down_p4(n4), p5), 1))
        return [n3, n4, n5]


class DetectHead(nn.Module):
    """Decoupled anchor-free head: per level ``box`` (``4 reg_max`` DFL logits) and ``cls`` (``C`` logits)
    branches. ``depthwise_cls``: YOLO11's class branch (DWConv 3x3 + Conv 1x1, twice)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, reg_max: int = 16, depthwise_cls: bool = False):
        super().__init__()
        self.num_classes, self.reg_max = int(num_classes), int(reg_max)
        c2 = max(16, in_channels[0] // 4, 4 * reg_max)
        c3 = max(in_channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in in_channels)
        if depthwise_cls:
            self.cls = nn.ModuleList(nn.Sequential(nn.Sequential(DWConv(x, x, 3), Conv(x, c3, 1)),
                                                   nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)),
                                                   nn.Conv2d(c3, num_classes, 1)) for x in in_channels)
        else:
            self.cls = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, num_classes, 1))
                                     for x in in_channels)

    def init_biases(self, strides: Sequence[int] = STRIDES, imgsz: int = 640) -> None:
        """ultralytics' prior: box logits 1.0 -> bias 2.0 everywhere, class bias ``log(5 / C / (640 / s)^2)``
        (about 0.01 objects per 80 classes at 640 px)."""
        for a, b, s in zip(self.box, self.cls, strides):
            nn.init.constant_(a[-1].bias, 2.0)
            nn.init.constant_(b[-1].bias, math.log(5 / self.num_classes / (imgsz / s) ** 2))

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``[P3, P4, P5]`` -> box logits ``[B, 4 reg_max, A]`` and class logits ``[B, C, A]`` (levels concatenated,
        row-major cells)."""
        b = feats[0].shape[0]
        boxes = torch.cat([m(f).view(b, 4 * self.reg_max, -1) for m, f in zip(self.box, feats)], -1)
        logits = torch.cat([m(f).view(b, self.num_classes, -1) for m, f in zip(self.cls, feats)], -1)
        return boxes, logits


@dataclass
class YOLORaw:
    """Raw outputs for one batch (frame: the letterboxed network input).

    Attributes:
        box_logits: ``[B, 4 reg_max, A]`` DFL logits (l, t, r, b sides, ``reg_max`` bins each).
        cls_logits: ``[B, C, A]`` class logits (sigmoid: scores).
        feature_sizes: ``(h, w)`` of the P3 / P4 / P5 maps (``A = sum h w``).
        strides: the strides of those levels.
    """

    box_logits: Tensor
    cls_logits: Tensor
    feature_sizes: list[tuple[int, int]]
    strides: tuple[int, ...] = STRIDES

    def anchors(self) -> tuple[Tensor, Tensor]:
        """Anchor points (grid units) ``[A, 2]`` and strides ``[A, 1]``."""
        return anchor_points(self.feature_sizes, self.strides, self.box_logits.dtype, self.box_logits.device)

    def decoded(self) -> tuple[Tensor, Tensor]:
        """Boxes ``[B, A, 4]`` XYXY in input pixels and scores ``[B, A, C]``; the arithmetic of ultralytics'
        ``Detect`` (centre and size in grid units, times the stride) then its NMS's ``xywh2xyxy``, so that
        the coordinates round as its do."""
        pts, stride = self.anchors()
        dist = dfl_expectation(self.box_logits, self.box_logits.shape[1] // 4).transpose(1, 2)  # [B, A, 4]
        x1y1 = pts - dist[..., :2]
        x2y2 = pts + dist[..., 2:]
        cxy = (x1y1 + x2y2) / 2 * stride
        wh = (x2y2 - x1y1) * stride
        half = wh / 2
        return torch.cat((cxy - half, cxy + half), -1), self.cls_logits.sigmoid().transpose(1, 2)


def yolo_nms(boxes: Tensor, scores: Tensor, conf: float, iou: float, max_det: int) -> tuple[Tensor, Tensor, Tensor]:
    """ultralytics' ``non_max_suppression`` for one image (best class per box, class-aware).

    Candidates have their best class score ``> conf``; more than 30000 keep the best by score; the
    class-aware NMS runs once on boxes offset by ``class * 7680`` px (so boxes of different classes
    never overlap); the first ``max_det`` survivors are returned as ``(boxes [K, 4], scores [K],
    labels [K])`` in decreasing score order."""
    score, label = scores.max(1)
    keep = torch.where(score > conf)[0]
    if keep.numel() > MAX_NMS:
        keep = keep[score[keep].argsort(descending=True, stable=True)[:MAX_NMS]]
    b, s, c = boxes[keep], score[keep], label[keep]
    if b.numel() == 0:
        return b, s, c
    kept = _nms(b + c[:, None].to(b.dtype) * MAX_WH, s, iou)[:max_det]
    return b[kept], s[kept], c[kept]


class YOLODetector(SceneModel):
    """YOLOv8 / YOLO11 detector (task ``detect``).

    Args:
        family, scale: the variant (``yolov8`` / ``yolo11``; ``n s m l x``).
        num_classes: ``C`` (80 for COCO checkpoints; labels ``0..C-1`` are ultralytics' class indices).
        imgsz: inference and training size (the long side; training letterboxes to ``imgsz x imgsz``).
        reg_max: DFL bins per side (16).
        conf, iou, max_det: ultralytics' defaults (0.25, 0.7, 300).
        box_gain, cls_gain, dfl_gain: loss weights (ultralytics' 7.5, 0.5, 1.5).
        tal_topk, tal_alpha, tal_beta: task-aligned assigner settings (10, 0.5, 6.0).
        class_names: names in label order (a checkpoint's ``names`` replace them).
        min_size, max_size: the toolkit's size keywords (``sceneparse train --imgsz N`` sets both to N):
            the long side ``max_size`` (else ``min_size``) replaces ``imgsz``; a letterbox square has one side.
    """

    def __init__(self, family: str = "yolov8", scale: str = "n", num_classes: int = 80, *, imgsz: int = 640,
                 reg_max: int = 16, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                 box_gain: float = 7.5, cls_gain: float = 0.5, dfl_gain: float = 1.5, tal_topk: int = 10,
                 tal_alpha: float = 0.5, tal_beta: float = 6.0, class_names: Sequence[str] | None = None,
                 min_size: int | None = None, max_size: int | None = None):
        super().__init__()
        imgsz = max_size if max_size is not None else min_size if min_size is not None else imgsz
        self.spec = YOLOSpec(family, scale)
        self.num_classes = int(num_classes)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.imgsz = int(imgsz)
        if self.imgsz % STRIDES[-1]:
            raise ValueError(f"imgsz must be a multiple of {STRIDES[-1]}, got {imgsz}")
        self.reg_max = int(reg_max)
        self.defaults = (float(conf), float(iou), int(max_det))
        self.gains = {"box": float(box_gain), "cls": float(cls_gain), "dfl": float(dfl_gain)}
        self.tal = {"topk": int(tal_topk), "alpha": float(tal_alpha), "beta": float(tal_beta)}
        self.backbone = YOLOBackbone(self.spec)
        self.neck = PANNeck(self.spec, self.backbone.out_channels)
        self.head = DetectHead(self.neck.out_channels, self.num_classes, self.reg_max,
                               depthwise_cls=family == "yolo11")
        self.head.init_biases(STRIDES, 640)
        if class_names is not None:
            self.class_names = tuple(str(n) for n in class_names)

    # ---- protocol --------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        conf, iou, max_det = self.defaults
        names = tuple(self.class_names) if len(self.class_names) == self.num_classes else ()
        return ModelInfo("detect", self.num_classes, iou_types=("bbox",), data="instances", class_names=names,
                         size=SizePolicy((self.imgsz,), self.imgsz, STRIDES[-1]), conf=conf, iou=iou,
                         max_det=max_det, export_outputs=("boxes", "scores", "labels"),
                         extra={"family": self.spec.family, "scale": self.spec.scale, "letterbox": "center, gray 114"})

    def prepare(self, images: Sequence[Tensor], targets: Sequence[Target] | None = None, *,
                imgsz: Any = None) -> tuple[LetterboxBatch, list[Target] | None]:
        """Letterbox images (and move targets into the padded frame). Inference: ``imgsz`` (default the
        model's) is the square target, with stride-32 rectangular padding when all images share one shape
        (ultralytics' ``auto``); training (and several shapes): the full ``imgsz x imgsz`` square."""
        if len(images) == 0:
            raise DataError("YOLO: empty list of images")
        if targets is not None and len(targets) != len(images):
            raise DataError(f"YOLO: {len(images)} images but {len(targets)} targets")
        size = resolve_imgsz(imgsz)
        side = self.imgsz if size is None else size[1]
        side = int(math.ceil(side / STRIDES[-1]) * STRIDES[-1])
        dev = self.device
        for i, im in enumerate(images):
            if not isinstance(im, Tensor) or im.ndim != 3 or im.shape[0] != 3 or not im.is_floating_point() \
                    or min(im.shape[-2:]) < 1:
                shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
                raise DataError(Problem(None, f"image {i}", "shape", "expected a float CHW RGB tensor in [0, 1]",
                                        shape))
        shapes = {(int(im.shape[-2]), int(im.shape[-1])) for im in images}  # ints: letterbox sizes are constants of a trace
        auto = not self.training and len(shapes) == 1
        params = [letterbox_params((int(im.shape[-2]), int(im.shape[-1])), (side, side), auto=auto) for im in images]
        canvas = (max(p.canvas[0] for p in params), max(p.canvas[1] for p in params))
        tensor = torch.full((len(images), 3, *canvas), 114 / 255.0, dtype=torch.float32, device=dev)
        for i, (im, p) in enumerate(zip(images, params)):
            tensor[i, :, :p.canvas[0], :p.canvas[1]] = letterbox_image(im.to(dev, torch.float32), p)
        batch = LetterboxBatch(tensor, [p.resized for p in params], [p.original for p in params],
                               [(p.resized[0] / p.original[0], p.resized[1] / p.original[1]) for p in params],
                               [p.pad for p in params], [p.canvas for p in params])
        moved = None
        if targets is not None:
            moved = [self._move_target(t.to(dev), p, canvas) for t, p in zip(targets, params)]
        return batch, moved

    @staticmethod
    def _move_target(t: Target, p, canvas: tuple[int, int]) -> Target:
        inst = t.instances
        sy, sx = p.resized[0] / p.original[0], p.resized[1] / p.original[1]
        boxes = None
        if inst.boxes is not None:
            scale = inst.boxes.new_tensor([sx, sy, sx, sy])
            shift = inst.boxes.new_tensor([p.pad[0], p.pad[1], p.pad[0], p.pad[1]])
            boxes = inst.boxes * scale + shift
        moved = Instances(canvas, boxes=boxes, labels=inst.labels)
        from dataclasses import replace

        return replace(t, instances=moved)

    def forward(self, batch: LetterboxBatch, targets: Sequence[Target] | None = None) -> YOLORaw:
        """``batch`` from :meth:`prepare` -> :class:`YOLORaw` (targets are not needed by the forward pass)."""
        x = batch.tensor if isinstance(batch, LetterboxBatch) or hasattr(batch, "tensor") else batch
        feats = self.neck(self.backbone(x))
        boxes, logits = self.head(feats)
        return YOLORaw(boxes, logits, [tuple(f.shape[-2:]) for f in feats], STRIDES)

    def loss(self, raw: YOLORaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """ultralytics' v8 detection loss (:mod:`.loss`): CIoU, BCE and DFL terms times their gains and the
        batch size, as ``loss_box`` / ``loss_cls`` / ``loss_dfl``."""
        from .loss import yolo_detection_loss

        gt_boxes, gt_labels = [], []
        for i, t in enumerate(targets):
            t = t if not t.iscrowd.any() else t.select(~t.iscrowd)
            inst = t.instances
            if inst.boxes is None or inst.labels is None:
                raise DataError(Problem(t.file_name or None, f"image {t.image_id}", "boxes/labels",
                                        "training needs boxes and labels"))
            if len(inst) and (inst.labels.min() < 0 or inst.labels.max() >= self.num_classes):
                raise DataError(Problem(t.file_name or None, f"image {t.image_id}", "labels",
                                        f"labels must lie in 0..{self.num_classes - 1}", inst.labels.tolist()))
            gt_boxes.append(inst.boxes.float())
            gt_labels.append(inst.labels.long())
        return yolo_detection_loss(raw, gt_boxes, gt_labels, gains=self.gains, **self.tal)

    def postprocess(self, raw: YOLORaw, batch: LetterboxBatch,
                    settings: InferenceSettings | None = None) -> list[Instances]:
        """Decode, NMS (``settings``, default the model's), back to original pixels (ultralytics' rounding
        and clipping)."""
        conf, iou, max_det = (self.defaults if settings is None else (settings.conf, settings.iou, settings.max_det))
        boxes, scores = raw.decoded()
        out = []
        for i in range(boxes.shape[0]):
            b, s, c = yolo_nms(boxes[i], scores[i], conf, iou, max_det)
            orig = batch.original_sizes[i]
            canvas = batch.canvases[i] if isinstance(batch, LetterboxBatch) and batch.canvases else \
                (int(batch.tensor.shape[-2]), int(batch.tensor.shape[-1]))
            out.append(Instances(orig, boxes=scale_boxes_back(b, canvas, orig), labels=c, scores=s))
        return out

    def infer(self, images: list[Tensor], settings: InferenceSettings) -> list[Instances]:
        """conf / iou / max_det act inside the NMS, as ultralytics applies them."""
        batch, _ = self.prepare(images, imgsz=settings.imgsz)
        return self.postprocess(self(batch), batch, settings)

    def export_graph(self) -> nn.Module:
        """:class:`~sceneparse.models.yolo.export.YOLOGraph` (static: traced at one image size)."""
        from .export import YOLOGraph

        return YOLOGraph(self)

    # ---- checkpoints ---------------------------------------------------------------------------
    def load_foreign_checkpoint(self, source: Any, *, strict: bool = True):
        """Load an ultralytics file (a pickled ``{'model': DetectionModel, ...}``, read without running
        code) or an ultralytics state dict (``model.<i>.…`` keys); ``None`` when ``source`` is neither."""
        from .checkpoints import load_ultralytics

        return load_ultralytics(self, source, strict=strict)


__all__ = ["DetectHead", "MAX_NMS", "MAX_WH", "PANNeck", "SCALES", "STRIDES", "YOLOBackbone", "YOLODetector",
           "YOLORaw", "YOLOSpec", "yolo_nms"]
