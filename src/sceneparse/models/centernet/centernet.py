"""CenterNet, "Objects as Points" (Zhou, Wang, Krähenbühl, 2019), ResNet variant.

An object is the peak of its class heatmap at its box centre; the network also regresses the box
size and the sub-cell centre offset at that point (:mod:`sceneparse.ops.center_heatmaps`). No
anchors, no NMS.

Architecture (sec. 4, "ResNet"): a ResNet trunk (stride 32) followed by three up-convolution
stages that bring it back to stride 4, each a 3x3 convolution (deformable in the paper; plain here
unless ``deformable=True``) + BN + ReLU and a 4x4 transposed convolution (stride 2) + BN + ReLU, with
256, 128, 64 channels; then three heads (3x3 conv, ReLU, 1x1 conv) on the stride-4 map: ``C`` class
heatmaps (sigmoid, the final bias at ``-2.19`` = prior 0.1), ``2`` sizes, ``2`` offsets.

Loss (eq. 1-4): penalty-reduced focal loss on the heatmaps (alpha 2, beta 4) + 0.1 x L1 on the sizes
+ 1 x L1 on the offsets, the regressions only at the object centres, each normalised by the number
of objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from ...errors import DataError, Problem
from ...ops.center_heatmaps import decode_centers, encode_centers, penalty_reduced_focal_loss
from ...structures.batch import ImageBatch
from ...structures.instances import Instances
from ...structures.target import Target
from ..base import InferenceSettings, ModelInfo, SceneModel
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor, boxes_to_original

__all__ = ["CenterNet", "CenterNetGraph", "CenterNetRaw", "UpsampleStage"]


class _Deformable(nn.Module):
    """3x3 deformable convolution (Dai et al., 2017) with its offset branch (zero-initialised: it
    starts as a plain convolution)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.offset = nn.Conv2d(cin, 18, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x, self.offset(x))


class UpsampleStage(nn.Module):
    """3x3 conv + BN + ReLU, then 4x4 transposed conv (stride 2, padding 1: exactly 2x) + BN + ReLU.
    The transposed convolution starts as bilinear upsampling (the reference's ``fill_up_weights``)."""

    def __init__(self, cin: int, cout: int, deformable: bool = False):
        super().__init__()
        self.conv = _Deformable(cin, cout) if deformable else nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.up = nn.ConvTranspose2d(cout, cout, 4, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        with torch.no_grad():
            f = torch.tensor([0.25, 0.75, 0.75, 0.25])
            self.up.weight.zero_()
            self.up.weight[torch.arange(cout), torch.arange(cout)] = f[:, None] * f[None, :]

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv(x)))
        return F.relu(self.bn2(self.up(x)))


def _head(cin: int, hidden: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))
    nn.init.constant_(head[-1].bias, bias)
    return head


@dataclass
class CenterNetRaw:
    """Raw outputs for one batch on the stride-``stride`` map ``[B, ., h, w]``: ``heatmap`` logits
    ``[B, C, h, w]``, ``size`` ``[B, 2, h, w]`` (``w, h`` in map cells), ``offset`` ``[B, 2, h, w]``;
    ``image_sizes`` of the resized images."""

    heatmap: Tensor
    size: Tensor
    offset: Tensor
    image_sizes: list[tuple[int, int]]
    stride: int


class CenterNet(SceneModel):
    """CenterNet with a ResNet trunk and three up-convolutions (output stride 4).

    Args:
        backbone: a trunk returning ``list[Tensor]`` (its last map is used, stride 32) with
            ``out_channels``, e.g. :class:`~sceneparse.models.backbones.ResNetBackbone` returning stage 4.
        neck: instead of the up-convolutions, a feature pyramid (:class:`~sceneparse.models.necks.FPN`
            on a trunk returning stages 1..k) whose finest level (P2, stride 4) feeds the heads: the
            "FPN trunk" variant, whose trunk + pyramid are the R-CNN family's (same parameter names, so
            a trained R-CNN's trunk and pyramid load into it).
        num_classes: foreground classes ``C`` (one heatmap each).
        up_channels: channels of the three up-convolution stages (256, 128, 64).
        head_channels: hidden width of the heads (64).
        deformable: deformable 3x3 convolutions before each up-convolution (the paper's); ``False``:
            plain 3x3 convolutions (faster on a CPU).
        min_overlap: IoU of the Gaussian radius rule (0.7).
        size_weight, offset_weight: loss weights (0.1, 1).
        topk: peaks decoded per image (100).
        min_size, max_size, image_mean, image_std: :class:`Preprocessor` (padded to a multiple of 32).
        score_thresh: default ``ModelInfo.conf``.
    """

    stride = 4

    def __init__(self, backbone: nn.Module, num_classes: int, *, up_channels: Sequence[int] = (256, 128, 64),
                 head_channels: int = 64, deformable: bool = False, neck: nn.Module | None = None,
                 min_overlap: float = 0.7,
                 size_weight: float = 0.1, offset_weight: float = 1.0, topk: int = 100,
                 min_size: int | Sequence[int] = 512, max_size: int = 512,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                 score_thresh: float = 0.05):
        super().__init__()
        if len(up_channels) != 3:
            raise ValueError(f"three up-convolution stages (stride 32 -> 4), got {len(up_channels)} channels")
        self.num_classes = int(num_classes)
        self.backbone = backbone
        self.neck = neck
        if neck is None:
            cin, stages = backbone.out_channels[-1], []
            for c in up_channels:
                stages.append(UpsampleStage(cin, c, deformable))
                cin = c
            self.upsample = nn.Sequential(*stages)
        else:  # the pyramid's finest level is already at stride 4
            cin = int(neck.out_channels)
            self.upsample = nn.Identity()
        self.heatmap_head = _head(cin, head_channels, num_classes, bias=-2.19)
        self.size_head = _head(cin, head_channels, 2)
        self.offset_head = _head(cin, head_channels, 2)
        self.min_overlap = float(min_overlap)
        self.size_weight, self.offset_weight = float(size_weight), float(offset_weight)
        self.topk = int(topk)
        self.preprocessor = Preprocessor(min_size, max_size, image_mean, image_std, size_divisible=32)
        self.score_thresh = float(score_thresh)

    @property
    def info(self) -> ModelInfo:
        names = tuple(self.class_names) if len(self.class_names) == self.num_classes else ()
        return ModelInfo("detect", self.num_classes, iou_types=("bbox",), data="instances", class_names=names,
                         size=self.preprocessor.policy(), conf=self.score_thresh, iou=1.0, max_det=self.topk,
                         export_outputs=("boxes", "scores", "labels"), extra={"family": "centernet"})

    def forward(self, batch: ImageBatch, targets: Sequence[Target] | None = None) -> CenterNetRaw:
        feats = self.backbone(batch.tensor)
        x = self.upsample(feats[-1]) if self.neck is None else self.neck(feats)[0]
        return CenterNetRaw(self.heatmap_head(x), self.size_head(x), self.offset_head(x), list(batch.image_sizes),
                            self.stride)

    def loss(self, raw: CenterNetRaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """``loss_heatmap`` (focal), ``loss_size`` (0.1 x L1), ``loss_offset`` (1 x L1); targets in
        the batch frame (from :meth:`prepare`); crowd objects are left out."""
        B, C, h, w = raw.heatmap.shape
        if len(targets) != B:
            raise DataError(f"{B} images but {len(targets)} targets")
        heat, index, size, offset, batch_idx = [], [], [], [], []
        for i, t in enumerate(targets):
            inst = t.instances
            where = (t.file_name or None, f"image {t.image_id}")
            if inst.boxes is None or inst.labels is None:
                raise DataError(Problem(*where, "boxes/labels", "training needs boxes and labels"))
            b, lab = inst.boxes, inst.labels
            if t.iscrowd is not None and t.iscrowd.any():
                keep = ~t.iscrowd.to(b.device)
                b, lab = b[keep], lab[keep]
            bad = ~(b[:, 2:] > b[:, :2]).all(dim=1) | ~torch.isfinite(b).all(dim=1)
            if bad.any():
                j = int(torch.where(bad)[0][0])
                raise DataError(Problem(*where, f"boxes[{j}]", "box must have positive width and height",
                                        [round(float(v), 3) for v in b[j]]))
            if len(lab) and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise DataError(Problem(*where, "labels", f"labels must lie in 0..{C - 1}", lab.tolist()))
            ct = encode_centers(b.to(raw.heatmap.device), lab.to(raw.heatmap.device), C, (h, w), self.stride,
                                self.min_overlap)
            heat.append(ct.heatmap)
            index.append(ct.index)
            size.append(ct.size)
            offset.append(ct.offset)
            batch_idx.append(torch.full_like(ct.index, i))
        target_heat = torch.stack(heat)
        loss_heat = penalty_reduced_focal_loss(raw.heatmap, target_heat)
        bi, idx = torch.cat(batch_idx), torch.cat(index)
        n = max(int(idx.numel()), 1)
        pred_size = raw.size.flatten(2)[bi, :, idx]  # [M, 2]
        pred_off = raw.offset.flatten(2)[bi, :, idx]
        loss_size = (pred_size - torch.cat(size)).abs().sum() / (2 * n)
        loss_off = (pred_off - torch.cat(offset)).abs().sum() / (2 * n)
        return {"loss_heatmap": loss_heat, "loss_size": self.size_weight * loss_size,
                "loss_offset": self.offset_weight * loss_off}

    def _detect(self, raw: CenterNetRaw, k: int) -> tuple[Tensor, Tensor, Tensor]:
        return decode_centers(raw.heatmap.sigmoid(), raw.size, raw.offset, raw.stride, k)

    def postprocess(self, raw: CenterNetRaw, batch: ImageBatch, k: int | None = None) -> list[Instances]:
        """Top-``k`` peaks -> :class:`Instances` in original pixels (boxes clipped to the image)."""
        boxes, scores, labels = self._detect(raw, k or self.topk)
        out = []
        for i, (b, s, lab, (oh, ow)) in enumerate(zip(boxes, scores, labels, batch.original_sizes)):
            out.append(Instances((int(oh), int(ow)), boxes=boxes_to_original(b, batch, i), labels=lab, scores=s))
        return out

    def infer(self, images: list[Tensor], settings: InferenceSettings) -> list[Instances]:
        """Decode ``max_det`` peaks per image, keep ``score > conf``."""
        batch, _ = self.prepare(images, imgsz=settings.imgsz)
        results = self.postprocess(self(batch), batch, k=settings.max_det)
        return [r[torch.where(r.scores > settings.conf)[0]] for r in results]

    def export_graph(self) -> "CenterNetGraph":
        return CenterNetGraph(self)

    # ---- explanation pictures (.explain) ---------------------------------------------------------
    def explain_views(self) -> tuple[str, ...]:
        """``heatmap`` (class heatmap and the kept peaks) and ``sizes`` (offset and size vectors)."""
        from .explain import CENTERNET_VIEWS

        return CENTERNET_VIEWS

    def explain_options(self) -> tuple[str, ...]:
        """``conf`` / ``max_det`` / ``imgsz``: as :meth:`predict` (the peaks drawn are its detections)."""
        return ("conf", "max_det", "imgsz")

    def explain_view(self, view: str, image: Tensor, **options) -> list:
        from .explain import centernet_explanation

        return centernet_explanation(self, view, image, **options)


class CenterNetGraph(nn.Module):
    """``image [3, H, W]`` in [0, 1] -> ``(boxes [k, 4], scores [k], labels [k])`` in input pixels, the
    ``topk`` peaks best first (the caller thresholds ``scores``): resize, network, max-pool peaks
    and the mapping back in one traceable graph (inputs of at least 40 px a side: ``k <= C h w``)."""

    batched = False
    min_opset = (11, "TopK with a tensor k and MaxPool need opset 11 at most")

    def __init__(self, model: CenterNet):
        super().__init__()
        self.model = model
        self.output_names = model.info.export_outputs

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, _ = self.model.prepare([image])
        boxes, scores, labels = self.model._detect(self.model(batch), self.model.topk)
        return boxes_to_original(boxes[0], batch), scores[0], labels[0]
