"""YOLO v1 (Redmon, Divvala, Girshick, Farhadi, "You Only Look Once: Unified, Real-Time Object
Detection", CVPR 2016): one network maps the whole image to an ``S x S x (B * 5 + C)`` tensor (7 x 7 x 30
for PASCAL VOC), read as B boxes with confidences and C class probabilities per grid cell; grid codec
and loss in :mod:`.codec`.

Network (sec. 2.1, Fig. 3). The paper's 24 convolutional layers (ImageNet-pretrained, input 448 x 448)
end in four 3 x 3 conv layers and two fully connected layers (4096, then ``S S (5 B + C)``, linear
output), leaky ReLU 0.1 everywhere else, dropout 0.5 after the first FC layer. Here: any trunk of ours
(ResNet-18 by default, its stride-32 map), then the *paper's head* at smaller widths -- two 3 x 3
conv-BN-leaky layers (``head_channels``), average pooling of the map to ``S x S`` (the paper's strided
conv + the 448 px input give 7 x 7 at stride 64; pooling lets other input sizes keep the grid), FC
(``hidden``) + leaky + dropout, FC to ``S S (5 B + C)``, linear -- or, with ``head="conv"``, a 1 x 1 conv
giving each cell's ``5 B + C`` values from its pooled features (fully convolutional; fewer parameters).

Input (sec. 2): resized to a fixed square (448 px; aspect ratio not kept), normalised with the ImageNet
mean / std of our trunks. Inference (sec. 2.2 and darknet's ``detection_layer``): class-specific
confidences of all ``S S B`` boxes, ``score > conf``, class-wise NMS, the ``max_det`` best. Defaults
``conf 0.05`` (AP-friendly; darknet's demo used 0.2), ``iou 0.5``, ``max_det 100``.

Where it fails (sec. 4.1 / 2.4 of the paper): one class and at most ``B`` boxes per cell (two small
objects whose centres share a cell: one is lost), coarse localisation, and small objects in groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
from torch import Tensor, nn

from ...ops.nms import batched_nms
from ...postprocess.detection import detections_to_instances
from ...structures import boxes as box_geometry
from ...structures.batch import ImageBatch
from ...structures.instances import Instances
from ...structures.target import Target
from ..base import InferenceSettings, ModelInfo, SceneModel
from ..layers.conv import ConvNormAct
from ..one_stage.dense import DenseDetections, DenseDetectorGraph
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor
from ..targets import checked_box_targets
from .codec import GridTargets, decode_grid, encode_grid, yolov1_loss

__all__ = ["YOLOv1", "YOLOv1Head", "YOLOv1Raw"]

#: the paper's activation: leaky ReLU with slope 0.1 (``phi(x) = x`` if ``x > 0`` else ``0.1 x``)
LeakyReLU01 = partial(nn.LeakyReLU, 0.1)


def _pool_matrix(n: int, s: int, device, dtype) -> Tensor:
    """``[s, n]`` averaging weights of ``adaptive_avg_pool`` along one axis: bin ``i`` averages cells
    ``floor(i n / s) .. ceil((i + 1) n / s) - 1``."""
    i = torch.arange(s)
    start, end = (i * n) // s, ((i + 1) * n + s - 1) // s
    j = torch.arange(n)
    m = ((j[None] >= start[:, None]) & (j[None] < end[:, None])).to(torch.float64)
    return (m / m.sum(1, keepdim=True)).to(device=device, dtype=dtype)


def pool_to_grid(x: Tensor, grid: int) -> Tensor:
    """``[N, c, h, w]`` -> ``[N, c, S, S]``, ``F.adaptive_avg_pool2d``'s bins as two small matrix products
    (the input is a fixed size, so the map's size is a constant of an exported graph; ONNX has no
    adaptive pooling of a traced size). ``h = w = S``: the map itself."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if (h, w) == (grid, grid):
        return x
    ph, pw = _pool_matrix(h, grid, x.device, x.dtype), _pool_matrix(w, grid, x.device, x.dtype)
    return torch.einsum("sh,nchw,tw->ncst", ph, x, pw)


class YOLOv1Head(nn.Module):
    """Trunk map ``[N, c, h, w]`` -> predictions ``[N, S, S, B * 5 + C]`` (layout: :mod:`.codec`).

    Args:
        in_channels: channels of the trunk's map.
        grid, num_boxes, num_classes: ``S``, ``B``, ``C``.
        head: ``"fc"`` (the paper's two fully connected layers) or ``"conv"`` (1 x 1 conv per cell).
        head_channels: width of the two 3 x 3 conv layers. hidden: width of the first FC layer.
        dropout: after the first FC layer (the paper's 0.5).
    """

    def __init__(self, in_channels: int, grid: int, num_boxes: int, num_classes: int, *, head: str = "fc",
                 head_channels: int = 256, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        if head not in ("fc", "conv"):
            raise ValueError(f"head must be 'fc' or 'conv', got {head!r}")
        self.grid, self.num_boxes, self.num_classes, self.kind = int(grid), int(num_boxes), int(num_classes), head
        self.values = 5 * self.num_boxes + self.num_classes
        self.convs = nn.Sequential(ConvNormAct(in_channels, head_channels, 3, act=LeakyReLU01),
                                   ConvNormAct(head_channels, head_channels, 3, act=LeakyReLU01))
        if head == "fc":
            self.fc1 = nn.Linear(self.grid * self.grid * head_channels, hidden)
            self.act = LeakyReLU01(inplace=True)
            self.dropout = nn.Dropout(dropout)
            self.fc2 = nn.Linear(hidden, self.grid * self.grid * self.values)
            last = self.fc2
        else:
            self.pred = nn.Conv2d(head_channels, self.values, 1)
            last = self.pred
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = pool_to_grid(self.convs(x), self.grid)  # [N, c, S, S]
        n = x.shape[0]
        if self.kind == "conv":
            return self.pred(x).permute(0, 2, 3, 1)
        # flattened channel-major as a conv map; the output read as [S, S, 5B + C] (row, column, values)
        x = self.dropout(self.act(self.fc1(x.flatten(1))))
        return self.fc2(x).view(n, self.grid, self.grid, self.values)


@dataclass
class YOLOv1Raw:
    """Raw outputs for one batch: ``image_sizes`` (the fixed network input of each image) and
    ``pred [N, S, S, B * 5 + C]``."""

    image_sizes: list[tuple[int, int]]
    pred: Tensor


class YOLOv1(SceneModel):
    """YOLO v1 (module docstring): trunk -> :class:`YOLOv1Head` -> grid codec.

    Args:
        backbone: returns a list of maps; the last one is used (``out_channels[-1]`` channels).
        num_classes: foreground classes ``C``.
        grid: ``S`` (7). num_boxes: ``B`` (2). size: the fixed square input (448).
        head, head_channels, hidden, dropout: see :class:`YOLOv1Head`.
        lambda_coord, lambda_noobj: the loss weights (5, 0.5). rescore: confidence target = IoU of the
            responsible predictor (True, the paper) or 1.
        score_thresh, nms_thresh, detections_per_img: default inference settings.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, grid: int = 7, num_boxes: int = 2,
                 size: int = 448, head: str = "fc", head_channels: int = 256, hidden: int = 512,
                 dropout: float = 0.5, lambda_coord: float = 5.0, lambda_noobj: float = 0.5, rescore: bool = True,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if num_classes < 1 or grid < 1 or num_boxes < 1:
            raise ValueError(f"num_classes, grid and num_boxes must be >= 1, got {num_classes}, {grid}, {num_boxes}")
        self.backbone = backbone
        self.num_classes, self.grid, self.num_boxes = int(num_classes), int(grid), int(num_boxes)
        self.head = YOLOv1Head(backbone.out_channels[-1], grid, num_boxes, num_classes, head=head,
                               head_channels=head_channels, hidden=hidden, dropout=dropout)
        self.preprocessor = Preprocessor(int(size), int(size), image_mean, image_std, size_divisible=1,
                                         fixed_size=(int(size), int(size)))
        self.lambda_coord, self.lambda_noobj, self.rescore = float(lambda_coord), float(lambda_noobj), bool(rescore)
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.detections_per_img = int(detections_per_img)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("detect", self.num_classes, iou_types=("bbox",), data="instances",
                         class_names=tuple(self.class_names) if len(self.class_names) == self.num_classes else (),
                         size=self.preprocessor.policy(), conf=self.score_thresh, iou=self.nms_thresh,
                         max_det=self.detections_per_img, export_outputs=("boxes", "scores", "labels"),
                         extra={"grid": self.grid, "num_boxes": self.num_boxes, "head": self.head.kind})

    def forward(self, batch: ImageBatch, targets: Sequence[Target] | None = None) -> YOLOv1Raw:
        """``batch`` from :meth:`prepare` -> :class:`YOLOv1Raw` (``targets`` unused: common signature)."""
        return YOLOv1Raw(list(batch.image_sizes), self.head(self.backbone(batch.tensor)[-1]))

    # ---- training -------------------------------------------------------------------------------
    def encode(self, targets: Sequence[Target], image_sizes: Sequence[tuple[int, int]]) -> GridTargets:
        """Targets in the batch frame -> grid targets (checked; crowd objects left out)."""
        t = checked_box_targets(targets, image_sizes, self.num_classes)
        return encode_grid([x.instances.boxes for x in t], [x.instances.labels for x in t], image_sizes, self.grid,
                           self.num_classes)

    def loss(self, raw: YOLOv1Raw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """``coord``, ``object``, ``no_object``, ``class`` (:func:`~.codec.yolov1_loss`; their sum is eq. 3)."""
        grid_targets = self.encode(targets, raw.image_sizes)
        return yolov1_loss(raw.pred, grid_targets, self.num_boxes, lambda_coord=self.lambda_coord,
                           lambda_noobj=self.lambda_noobj, rescore=self.rescore)

    # ---- inference ------------------------------------------------------------------------------
    def detect(self, raw: YOLOv1Raw, settings: InferenceSettings | None = None) -> list[DenseDetections]:
        """Per image: class-specific confidences ``> conf`` -> class-wise NMS at ``iou`` -> ``max_det``
        best (boxes in the network-input frame, clipped to it)."""
        settings = settings or self.settings()
        out = []
        for i, size in enumerate(raw.image_sizes):
            boxes, scores = decode_grid(raw.pred[i: i + 1].float(), self.num_boxes, size)
            boxes = box_geometry.clip(boxes[0], size)
            scores = scores[0]
            c = scores.shape[1]
            flat = scores.flatten()
            idx = torch.where(flat > settings.conf)[0]
            box_idx, labels = torch.div(idx, c, rounding_mode="floor"), idx % c
            b, s = boxes[box_idx], flat[idx]
            keep = batched_nms(b, s, labels, settings.iou)[: settings.max_det]
            out.append(DenseDetections(b[keep], s[keep], labels[keep]))
        return out

    def postprocess(self, raw: YOLOv1Raw, batch: ImageBatch,
                    settings: InferenceSettings | None = None) -> list[Instances]:
        """Detections -> :class:`Instances` in original pixels (labels ``0..C-1``)."""
        return [detections_to_instances(d.boxes, d.scores, d.labels, rs, os_, label_offset=0)
                for d, rs, os_ in zip(self.detect(raw, settings), batch.image_sizes, batch.original_sizes)]

    def infer(self, images: list[Tensor], settings: InferenceSettings) -> list[Instances]:
        """The score threshold acts before NMS and ``max_det`` at it (as darknet's ``detection_layer``)."""
        batch, _ = self.prepare(images, imgsz=settings.imgsz)
        return self.postprocess(self(batch), batch, settings)

    def export_graph(self) -> DenseDetectorGraph:
        """One image -> ``(boxes, scores, labels)`` in its pixels (the one-stage family's graph: prepare,
        forward, :meth:`detect`, back to the image)."""
        return DenseDetectorGraph(self)
