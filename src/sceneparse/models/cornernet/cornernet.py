"""CornerNet, "Detecting Objects as Paired Keypoints" (Law and Deng, ECCV 2018).

A box is detected as a pair of keypoints, its top-left and bottom-right corners, with no anchors.
Architecture (sec. 3.4-4.1): a stacked hourglass trunk (:mod:`sceneparse.models.backbones.hourglass`,
Hourglass-104 in the paper: 2 stacks, stride 4) and, on every stack's features, two branches, one
per corner type. Each branch is a *corner pooling module*: two 3x3 conv-BN-ReLU (128 channels) whose
outputs are corner-pooled (:mod:`sceneparse.ops.corner_pool`: top + left pooling for the top-left
corner, bottom + right for the bottom-right) and summed, a 3x3 conv-BN, added to a 1x1 conv-BN
shortcut of the features, ReLU, a 3x3 conv-BN-ReLU; then three heads (3x3 conv + ReLU, 1x1 conv):
``C`` corner heatmaps (bias -2.19: prior 0.1), a 1-d embedding, 2-d offsets.

Training (sec. 3.2-3.3, :mod:`.codec`): focal loss on the heatmaps with Gaussian penalty reduction,
pull / push losses on the embeddings (weights 0.1, 0.1), smooth L1 on the offsets (weight 1), on the
outputs of every stack (intermediate supervision), the total divided by the number of stacks as the
reference implementation does. Inference uses the last stack: corner peaks grouped into boxes by
class, geometry and embedding distance (:func:`~.codec.decode_corners`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ...ops.center_heatmaps import penalty_reduced_focal_loss
from ...ops.corner_pool import bottom_pool, left_pool, right_pool, top_pool
from ...structures.batch import ImageBatch
from ...structures.instances import Instances
from ...structures.target import Target
from ..backbones.hourglass import StackedHourglass
from ..base import InferenceSettings, ModelInfo, SceneModel
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor, boxes_to_original
from ..targets import checked_box_targets
from .codec import CornerPairs, embedding_losses, encode_corners, offset_loss, pair_corners

__all__ = ["CornerNet", "CornerNetGraph", "CornerNetRaw", "CornerPoolModule", "CornerBranch"]

CORNERS = ("top_left", "bottom_right")


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CornerPoolModule(nn.Module):
    """The corner pooling module (fig. 7): ``ReLU(BN(conv3x3(pool_a(f_a) + pool_b(f_b))) + BN(conv1x1(x)))``
    then a 3x3 conv-BN-ReLU, with ``f_a, f_b`` two 3x3 conv-BN-ReLU of ``x`` (``pool_channels``) and
    ``(pool_a, pool_b)`` = (top, left) pooling for ``top_left``, (bottom, right) for ``bottom_right``."""

    def __init__(self, channels: int, corner: str, pool_channels: int = 128):
        super().__init__()
        if corner not in CORNERS:
            raise ValueError(f"corner must be one of {CORNERS}, got {corner!r}")
        self.corner = corner
        self.branch_a = _conv_bn_relu(channels, pool_channels)
        self.branch_b = _conv_bn_relu(channels, pool_channels)
        self.pooled = nn.Sequential(nn.Conv2d(pool_channels, channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(channels))
        self.shortcut = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.out = _conv_bn_relu(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.branch_a(x), self.branch_b(x)
        pooled = top_pool(a) + left_pool(b) if self.corner == "top_left" else bottom_pool(a) + right_pool(b)
        return self.out(torch.relu(self.pooled(pooled) + self.shortcut(x)))


def _head(cin: int, hidden: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, cout, 1))
    nn.init.constant_(head[-1].bias, bias)
    return head


class CornerBranch(nn.Module):
    """One corner type on one stack: corner pooling module + heatmap (``C``), embedding (1) and
    offset (2) heads. ``forward(x) -> (heatmap logits, embedding, offset)``."""

    def __init__(self, channels: int, num_classes: int, corner: str, pool_channels: int = 128,
                 head_channels: int | None = None):
        super().__init__()
        hidden = channels if head_channels is None else int(head_channels)
        self.pool = CornerPoolModule(channels, corner, pool_channels)
        self.heatmap = _head(channels, hidden, num_classes, bias=-2.19)
        self.embedding = _head(channels, hidden, 1)
        self.offset = _head(channels, hidden, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y = self.pool(x)
        return self.heatmap(y), self.embedding(y), self.offset(y)


@dataclass
class CornerNetRaw:
    """Raw outputs on the stride-``stride`` map, one entry per stack that ran its heads (every stack
    in training, the last in eval mode): ``tl_heatmap`` / ``br_heatmap`` logits ``[B, C, h, w]``,
    ``tl_embedding`` / ``br_embedding`` ``[B, 1, h, w]``, ``tl_offset`` / ``br_offset`` ``[B, 2, h, w]``
    (map units); ``image_sizes`` of the resized images."""

    tl_heatmap: list[Tensor]
    br_heatmap: list[Tensor]
    tl_embedding: list[Tensor]
    br_embedding: list[Tensor]
    tl_offset: list[Tensor]
    br_offset: list[Tensor]
    image_sizes: list[tuple[int, int]]
    stride: int


class CornerNet(SceneModel):
    """CornerNet on a :class:`~sceneparse.models.backbones.hourglass.StackedHourglass` trunk.

    Args:
        trunk: the stacked hourglass (its ``out_channels`` features at stride 4, one map per stack).
        num_classes: foreground classes ``C``.
        pool_channels: channels of the corner pooling branches (128).
        head_channels: hidden width of the heads (``None``: the trunk's feature channels, as the paper).
        min_overlap: the IoU ``t`` of the Gaussian radius rule (0.7: the reference code's; the paper
            writes 0.3, :mod:`.codec`).
        pull_weight, push_weight, offset_weight: loss weights (0.1, 0.1, 1).
        topk: corners kept per heatmap when decoding (100).
        ae_threshold: largest embedding distance of a pair (0.5).
        max_det: detections per image (100).
        min_size, max_size, image_mean, image_std: :class:`Preprocessor` (padded to a multiple of the
            trunk's ``size_divisible``).
        score_thresh: default ``ModelInfo.conf``.
    """

    stride = 4

    def __init__(self, trunk: StackedHourglass, num_classes: int, *, pool_channels: int = 128,
                 head_channels: int | None = None, min_overlap: float = 0.7, pull_weight: float = 0.1,
                 push_weight: float = 0.1, offset_weight: float = 1.0, topk: int = 100, ae_threshold: float = 0.5,
                 max_det: int = 100, min_size: int | Sequence[int] = 512, max_size: int = 512,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                 score_thresh: float = 0.05):
        super().__init__()
        self.num_classes = int(num_classes)
        self.trunk = trunk
        c = trunk.out_channels
        self.top_left = nn.ModuleList(CornerBranch(c, num_classes, "top_left", pool_channels, head_channels)
                                      for _ in range(trunk.num_stacks))
        self.bottom_right = nn.ModuleList(CornerBranch(c, num_classes, "bottom_right", pool_channels, head_channels)
                                          for _ in range(trunk.num_stacks))
        self.min_overlap = float(min_overlap)
        self.pull_weight, self.push_weight = float(pull_weight), float(push_weight)
        self.offset_weight = float(offset_weight)
        self.topk, self.ae_threshold, self.max_det = int(topk), float(ae_threshold), int(max_det)
        self.preprocessor = Preprocessor(min_size, max_size, image_mean, image_std,
                                         size_divisible=trunk.size_divisible)
        self.score_thresh = float(score_thresh)

    @property
    def info(self) -> ModelInfo:
        names = tuple(self.class_names) if len(self.class_names) == self.num_classes else ()
        return ModelInfo("detect", self.num_classes, iou_types=("bbox",), data="instances", class_names=names,
                         size=self.preprocessor.policy(), conf=self.score_thresh, iou=1.0, max_det=self.max_det,
                         export_outputs=("boxes", "scores", "labels"), extra={"family": "cornernet"})

    # ---- network ----------------------------------------------------------------------------------
    def forward(self, batch: ImageBatch, targets: Sequence[Target] | None = None) -> CornerNetRaw:
        features = self.trunk(batch.tensor)
        stacks = range(len(features)) if self.training else [len(features) - 1]
        out: dict[str, list[Tensor]] = {k: [] for k in ("tl_h", "tl_e", "tl_o", "br_h", "br_e", "br_o")}
        for k in stacks:
            for name, branch in (("tl", self.top_left[k]), ("br", self.bottom_right[k])):
                h, e, o = branch(features[k])
                out[f"{name}_h"].append(h)
                out[f"{name}_e"].append(e)
                out[f"{name}_o"].append(o)
        return CornerNetRaw(out["tl_h"], out["br_h"], out["tl_e"], out["br_e"], out["tl_o"], out["br_o"],
                            list(batch.image_sizes), self.stride)

    # ---- training ---------------------------------------------------------------------------------
    def loss(self, raw: CornerNetRaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """``loss_heatmap`` (focal, both corners), ``loss_pull`` (0.1 x), ``loss_push`` (0.1 x),
        ``loss_offset`` (1 x smooth L1, both corners), each summed over the stacks and divided by their
        number; targets in the batch frame (from :meth:`prepare`), crowds left out."""
        first = raw.tl_heatmap[0]
        B, C, h, w = first.shape
        targets = checked_box_targets(targets, raw.image_sizes, self.num_classes)
        dev = first.device
        enc = [encode_corners(t.instances.boxes.to(dev), t.instances.labels.to(dev), C, (h, w), raw.stride,
                              self.min_overlap) for t in targets]
        tl_heat = torch.stack([e.tl_heatmap for e in enc])
        br_heat = torch.stack([e.br_heatmap for e in enc])
        M = max([len(e.tl_index) for e in enc] + [1])
        mask = torch.zeros(B, M, dtype=torch.bool, device=dev)
        tl_idx = torch.zeros(B, M, dtype=torch.int64, device=dev)
        br_idx = torch.zeros(B, M, dtype=torch.int64, device=dev)
        tl_off = torch.zeros(B, M, 2, device=dev)
        br_off = torch.zeros(B, M, 2, device=dev)
        for i, e in enumerate(enc):
            n = len(e.tl_index)
            mask[i, :n] = True
            tl_idx[i, :n], br_idx[i, :n] = e.tl_index, e.br_index
            tl_off[i, :n], br_off[i, :n] = e.tl_offset, e.br_offset
        num = int(mask.sum())

        def at(maps: Tensor, idx: Tensor) -> Tensor:  # [B, D, h, w] at idx [B, M] -> [B, M, D]
            return maps.flatten(2).gather(2, idx[:, None, :].expand(-1, maps.shape[1], -1)).transpose(1, 2)

        heat = pull = push = off = first.new_zeros(())
        S = len(raw.tl_heatmap)
        for s in range(S):
            heat = heat + penalty_reduced_focal_loss(raw.tl_heatmap[s], tl_heat) \
                + penalty_reduced_focal_loss(raw.br_heatmap[s], br_heat)
            p, q = embedding_losses(at(raw.tl_embedding[s], tl_idx)[..., 0], at(raw.br_embedding[s], br_idx)[..., 0],
                                    mask)
            pull, push = pull + p, push + q
            off = off + offset_loss(at(raw.tl_offset[s], tl_idx)[mask], tl_off[mask], num) \
                + offset_loss(at(raw.br_offset[s], br_idx)[mask], br_off[mask], num)
        return {"loss_heatmap": heat / S, "loss_pull": self.pull_weight * pull / S,
                "loss_push": self.push_weight * push / S, "loss_offset": self.offset_weight * off / S}

    # ---- inference --------------------------------------------------------------------------------
    def pairs(self, raw: CornerNetRaw, max_det: int) -> CornerPairs:
        """The corner pairs of the last stack (:func:`~.codec.pair_corners`); pairs starting in the
        padding of an image are rejected."""
        dev = raw.tl_heatmap[-1].device
        sizes = [torch.stack([torch.as_tensor(h), torch.as_tensor(w)]) for h, w in raw.image_sizes]
        return pair_corners(raw.tl_heatmap[-1].sigmoid(), raw.br_heatmap[-1].sigmoid(), raw.tl_embedding[-1],
                            raw.br_embedding[-1], raw.tl_offset[-1], raw.br_offset[-1], raw.stride, self.topk,
                            max_det, self.ae_threshold, torch.stack(sizes).to(dev))

    def _detect(self, raw: CornerNetRaw, max_det: int) -> tuple[Tensor, Tensor, Tensor]:
        p = self.pairs(raw, max_det)
        return torch.cat([p.tl, p.br], -1) * raw.stride, p.scores, p.labels

    def postprocess(self, raw: CornerNetRaw, batch: ImageBatch, max_det: int | None = None) -> list[Instances]:
        """The best ``max_det`` valid corner pairs -> :class:`Instances` in original pixels (boxes
        clipped to the image); rejected pairs are left out."""
        boxes, scores, labels = self._detect(raw, max_det or self.max_det)
        out = []
        for i, (b, s, lab, (oh, ow)) in enumerate(zip(boxes, scores, labels, batch.original_sizes)):
            keep = s >= 0
            out.append(Instances((int(oh), int(ow)), boxes=boxes_to_original(b[keep], batch, i), labels=lab[keep],
                                 scores=s[keep]))
        return out

    def infer(self, images: list[Tensor], settings: InferenceSettings) -> list[Instances]:
        """The ``max_det`` best pairs per image with ``score > conf``."""
        batch, _ = self.prepare(images, imgsz=settings.imgsz)
        results = self.postprocess(self(batch), batch, max_det=settings.max_det)
        return [r[torch.where(r.scores > settings.conf)[0]] for r in results]

    def export_graph(self) -> "CornerNetGraph":
        return CornerNetGraph(self)

    # ---- explanation pictures (.explain) ---------------------------------------------------------
    def explain_views(self) -> tuple[str, ...]:
        """``corners`` (the two corner heatmaps and the corners of the detections) and ``pairs`` (each
        detection's two corners joined, with their embeddings)."""
        from .explain import CORNERNET_VIEWS

        return CORNERNET_VIEWS

    def explain_options(self) -> tuple[str, ...]:
        """``conf`` / ``max_det`` / ``imgsz``: as :meth:`predict` (the pairs drawn are its detections)."""
        return ("conf", "max_det", "imgsz")

    def explain_view(self, view: str, image: Tensor, **options) -> list:
        from .explain import cornernet_explanation

        return cornernet_explanation(self, view, image, **options)


class CornerNetGraph(nn.Module):
    """``image [3, H, W]`` in [0, 1] -> ``(boxes [D, 4], scores [D], labels [D])`` in input pixels, the
    ``max_det`` best corner pairs best first; rejected pairs (fewer valid ones than ``max_det``) come
    last with score 0, box 0 and label 0 (the caller thresholds ``scores``). Resize, network (corner
    pooling in its exportable form), peaks, pairing and the mapping back in one traceable graph."""

    batched = False
    min_opset = (11, "TopK with a tensor k and MaxPool need opset 11 at most")

    def __init__(self, model: CornerNet):
        super().__init__()
        self.model = model
        self.output_names = model.info.export_outputs

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, _ = self.model.prepare([image])
        boxes, scores, labels = self.model._detect(self.model(batch), self.model.max_det)
        valid = scores[0] >= 0
        b = boxes_to_original(boxes[0], batch)
        b = torch.where(valid[:, None], b, torch.zeros_like(b))
        return b, torch.where(valid, scores[0], torch.zeros_like(scores[0])), torch.where(
            valid, labels[0], torch.zeros_like(labels[0]))
