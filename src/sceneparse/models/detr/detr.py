"""DETR: end-to-end object detection as set prediction (Carion et al., ECCV 2020).

``image -> CNN (ResNet, frozen BatchNorm) -> 1x1 projection to d -> transformer encoder (+ sine
positional encoding) -> decoder with N learnt object queries -> per query: class (C + 1 with
"no object" last) and box (3-layer MLP, sigmoid, cxcywh normalised by the image size)``.

No anchors, no NMS: training matches the N predictions one-to-one to the objects (Hungarian
algorithm, :mod:`sceneparse.ops.set_matching`) and every unmatched prediction learns "no object"
(:mod:`.criterion`). Inference is the reference post-processing: softmax, drop "no object", score =
the best class probability, boxes scaled to the original image size.

Frames: the batch holds images resized by DETR's rule (short side 800, long side <= 1333,
:class:`DetrPreprocessor`) and zero-padded to the largest one; the padding mask follows the
padding down to the feature map (nearest resampling), is used as the attention key-padding mask and
makes the positional encoding count valid cells only. Boxes are relative to each image's valid
(resized, unpadded) size, so they map to original pixels by multiplying with the original size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import DataError, Problem
from ...ops.set_matching import cxcywh_to_xyxy, one_to_many_targets, xyxy_to_cxcywh
from ...structures.batch import ImageBatch
from ...structures.instances import Instances
from ...structures.target import Target
from ..base import ModelInfo, SceneModel
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor
from .checkpoints import DETR_ORIGINAL_KEY_RULES, convert_hf_state_dict, is_hf_layout
from .criterion import SetCriterion
from .transformer import Transformer, sine_position_encoding

__all__ = ["DETR", "DetrRaw", "DetrPreprocessor", "MLP", "antialiased_resize", "detr_resized_size"]


def detr_resized_size(size: tuple[int, int], short: int, long: int) -> tuple[int, int]:
    """``(h, w)`` DETR's transform gives an image of ``size``: the short side becomes ``short``
    unless the long side would exceed ``long``; then the short side is ``round(long * short_side /
    long_side)`` and the long one is truncated from the unrounded value (the rule of DETR's
    ``RandomResize`` and of Hugging Face's ``get_size_with_aspect_ratio``, whose sizes can differ by a
    pixel from torchvision's R-CNN rule)."""
    h, w = int(size[0]), int(size[1])
    lo, hi = float(min(h, w)), float(max(h, w))
    target, raw = int(short), None
    if hi / lo * target > long:
        raw = long * lo / hi
        target = int(round(raw))
    if (h <= w and h == target) or (w <= h and w == target):
        return h, w
    base = raw if raw is not None else target
    if w < h:
        return int(base * h / w), target
    return target, int(base * w / h)


def _triangle_weights(n_in: Tensor, n_out: Tensor, device: torch.device) -> Tensor:
    """``[n_out, n_in]`` weights of antialiased bilinear resampling (the triangle filter widened by the
    scale when shrinking, as ``F.interpolate(..., antialias=True)`` and PIL): output cell ``i`` has its
    centre at ``s (i + 0.5)`` input px, ``s = n_in / n_out``; input ``j`` weighs
    ``max(0, 1 - |j + 0.5 - centre| / max(s, 1))``, each row normalised to sum 1. The sizes may be
    0-dim tensors (traced graphs)."""
    scale = torch.as_tensor(n_in, device=device).to(torch.float64) / torch.as_tensor(n_out, device=device).to(
        torch.float64)
    support = torch.clamp(scale, min=1.0)
    centre = (torch.arange(n_out, device=device).to(torch.float64) + 0.5) * scale
    j = torch.arange(n_in, device=device).to(torch.float64) + 0.5
    w = torch.clamp(1 - (j[None, :] - centre[:, None]).abs() / support, min=0)
    return (w / w.sum(dim=1, keepdim=True)).to(torch.float32)


def antialiased_resize(x: Tensor, size: tuple) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, C, h, w]`` by separable antialiased bilinear resampling written as two
    matrix products (:func:`_triangle_weights`): equal to ``F.interpolate(..., mode="bilinear",
    antialias=True)`` up to rounding, and exportable to ONNX with dynamic sizes (ONNX has no
    antialiased bilinear Resize before opset 18 and PyTorch's exporter does not write it)."""
    wy = _triangle_weights(x.shape[-2], size[0], x.device).to(x.dtype)
    wx = _triangle_weights(x.shape[-1], size[1], x.device).to(x.dtype)
    return torch.matmul(torch.matmul(wy, x), wx.transpose(0, 1))


class DetrPreprocessor(Preprocessor):
    """:class:`Preprocessor` with DETR's size rule (:func:`detr_resized_size`) and antialiased
    bilinear resampling (DETR resizes PIL images, Hugging Face's processor uses ``antialias=True``);
    padding to the batch's largest image (``size_divisible=1``)."""

    def __init__(self, min_size: int | Sequence[int] = 800, max_size: int = 1333,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__(min_size, max_size, mean, std, size_divisible=1)

    def resized_size(self, size: tuple[int, int], min_size: int | None = None) -> tuple[int, int]:
        return detr_resized_size(size, min_size or self.min_sizes[-1], self.max_size)

    def _resize(self, image: Tensor, min_size: int, max_size: int | None = None) -> Tensor:
        h, w = image.shape[-2:]
        size = detr_resized_size((h, w), min_size, max_size or self.max_size)
        if size == (h, w):
            return image
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]

    def _traced(self, images, targets, min_size=None, max_size=None):
        """DETR's rule in tensor arithmetic (one image): ``round`` / ``floor`` of float64 sizes."""
        if len(images) != 1 or targets is not None:
            raise ValueError("a traced DetrPreprocessor takes exactly one image and no targets")
        image = images[0]
        h, w = image.shape[-2], image.shape[-1]
        hd, wd = h.to(torch.float64), w.to(torch.float64)
        short, long = float(min_size or self.min_sizes[-1]), float(max_size or self.max_size)
        lo, hi = torch.minimum(hd, wd), torch.maximum(hd, wd)
        capped = hi / lo * short > long
        raw = torch.where(capped, long * lo / hi, torch.full_like(lo, short))
        target = torch.where(capped, torch.round(raw), raw)
        nh = torch.where(hd <= wd, target, torch.floor(raw * hd / wd))
        nw = torch.where(hd <= wd, torch.floor(raw * wd / hd), target)
        nh, nw = nh.to(torch.int64), nw.to(torch.int64)
        x = antialiased_resize(self.normalize(image[None]), (nh, nw))
        scale = (nh.to(torch.float32) / h.to(torch.float32), nw.to(torch.float32) / w.to(torch.float32))
        return ImageBatch(x, [(nh, nw)], [(h, w)], [scale]), None


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (DETR's box head: 3 layers, width ``d``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


@dataclass
class DetrRaw:
    """Raw outputs of DETR for one batch.

    Attributes:
        logits: ``[L, B, N, C + 1]`` class logits of every decoder layer (the last is the output).
        boxes: ``[L, B, N, 4]`` ``cxcywh`` boxes in ``[0, 1]`` of each image's valid region.
        image_sizes: ``(h, w)`` of each resized image.
        o2m_logits, o2m_boxes: the same for the one-to-many query group (training only, when
            ``one_to_many_queries > 0``).
        cross_attention: ``[L, B, heads, N, h, w]`` each decoder layer's cross-attention weights over
            the feature grid (``forward(..., attention=True)`` only; each ``[h, w]`` map sums to 1 over
            the image's valid cells, padding gets 0).
    """

    logits: Tensor
    boxes: Tensor
    image_sizes: list[tuple[int, int]]
    o2m_logits: Tensor | None = None
    o2m_boxes: Tensor | None = None
    cross_attention: Tensor | None = None

    @property
    def pred_logits(self) -> Tensor:
        """``[B, N, C + 1]`` of the last decoder layer."""
        return self.logits[-1]

    @property
    def pred_boxes(self) -> Tensor:
        """``[B, N, 4]`` of the last decoder layer."""
        return self.boxes[-1]


class DETR(SceneModel):
    """DETR (Carion et al., 2020).

    Args:
        backbone: a trunk returning ``list[Tensor]`` whose last map is used, with ``out_channels``
            (e.g. :class:`~sceneparse.models.backbones.ResNetBackbone` returning stage 4).
        num_classes: foreground classes ``C``; the class head has ``C + 1`` outputs, "no object" last.
        dim, heads, ffn_dim, encoder_layers, decoder_layers, dropout: the transformer (R-50 DETR:
            256, 8, 2048, 6, 6, 0.1).
        num_queries: ``N`` object queries (the most objects an image can have), 100.
        aux_loss: the set loss on every decoder layer (sec. 3.2), on by default.
        eos_coef: weight of the "no object" class in the cross-entropy (0.1).
        class_cost, l1_cost, giou_cost: matching cost weights (1, 5, 2); ce_weight, l1_weight,
            giou_weight: loss weights (1, 5, 2).
        one_to_many_queries, one_to_many_k: H-DETR's hybrid matching (Jia et al., CVPR 2023), a
            short-schedule aid, off by default (0). An extra group of queries runs through the same
            decoder in training, unable to attend to (or be attended by) the ``N`` main queries, and
            is matched to the ground truth repeated ``k`` times (each object trains ``k`` of them);
            its loss is added (``o2m_*``). The extra positive samples speed up the training of the
            shared decoder and heads; inference uses the ``N`` one-to-one queries only (no NMS).
        min_size, max_size, image_mean, image_std: :class:`DetrPreprocessor`.
        score_thresh, detections_per_img: default inference settings (``ModelInfo.conf`` / ``max_det``).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, dim: int = 256, heads: int = 8,
                 ffn_dim: int = 2048, encoder_layers: int = 6, decoder_layers: int = 6, dropout: float = 0.1,
                 num_queries: int = 100, aux_loss: bool = True, eos_coef: float = 0.1, class_cost: float = 1.0,
                 l1_cost: float = 5.0, giou_cost: float = 2.0, ce_weight: float = 1.0, l1_weight: float = 5.0,
                 giou_weight: float = 2.0, one_to_many_queries: int = 0, one_to_many_k: int = 6,
                 min_size: int | Sequence[int] = 800, max_size: int = 1333,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                 score_thresh: float = 0.05, detections_per_img: int = 100):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.num_queries = int(num_queries)
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.out_channels[-1], dim, kernel_size=1)
        self.transformer = Transformer(dim, heads, ffn_dim, encoder_layers, decoder_layers, dropout)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        self.one_to_many_queries = int(one_to_many_queries)
        self.one_to_many_k = int(one_to_many_k)
        if self.one_to_many_queries:
            self.query_embed_o2m = nn.Embedding(self.one_to_many_queries, dim)
        self.aux_loss = bool(aux_loss)
        self.criterion = SetCriterion(num_classes, eos_coef=eos_coef, class_cost=class_cost, l1_cost=l1_cost,
                                      giou_cost=giou_cost, ce_weight=ce_weight, l1_weight=l1_weight,
                                      giou_weight=giou_weight)
        self.preprocessor = DetrPreprocessor(min_size, max_size, image_mean, image_std)
        self.score_thresh = float(score_thresh)
        self.detections_per_img = int(detections_per_img)

    # ---- protocol ----------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        names = tuple(self.class_names) if len(self.class_names) == self.num_classes else ()
        return ModelInfo("detect", self.num_classes, iou_types=("bbox",), data="instances", class_names=names,
                         size=self.preprocessor.policy(), conf=self.score_thresh, iou=1.0,
                         max_det=self.detections_per_img, export_outputs=("boxes", "scores", "labels"),
                         extra={"family": "detr"})

    def valid_mask(self, batch: ImageBatch) -> Tensor:
        """``[B, H, W]`` bool, ``True`` on each image's resized (unpadded) region."""
        t = batch.tensor
        H, W = t.shape[-2], t.shape[-1]
        rows = torch.arange(H, device=t.device)
        cols = torch.arange(W, device=t.device)
        hs = torch.stack([torch.as_tensor(s[0], device=t.device) for s in batch.image_sizes])
        ws = torch.stack([torch.as_tensor(s[1], device=t.device) for s in batch.image_sizes])
        return (rows[None, :, None] < hs[:, None, None]) & (cols[None, None, :] < ws[:, None, None])

    def forward(self, batch: ImageBatch, targets: Sequence[Target] | None = None, *,
                attention: bool = False) -> DetrRaw:
        """``batch`` from :meth:`prepare` -> :class:`DetrRaw` (``targets`` are not needed: the match
        happens in :meth:`loss`). ``attention=True`` also returns the decoder's cross-attention weights
        (:attr:`DetrRaw.cross_attention`, computed on the side: the outputs are bit-identical)."""
        feat = self.backbone(batch.tensor)[-1]
        valid = F.interpolate(self.valid_mask(batch)[None].float(), size=feat.shape[-2:])[0].bool()
        src = self.input_proj(feat)
        pos = sine_position_encoding(valid, src.shape[1] // 2).to(src.dtype)
        queries, self_mask = self.query_embed.weight, None
        o2m = self.one_to_many_queries if self.training else 0
        if o2m:
            queries = torch.cat([queries, self.query_embed_o2m.weight])
            n = self.num_queries + o2m
            group = torch.arange(n, device=src.device) >= self.num_queries
            self_mask = group[:, None] == group[None, :]  # the two groups do not see each other
        weights: list[Tensor] | None = [] if attention else None
        hs = self.transformer(src, valid, pos, queries, self_mask, weights)
        logits = self.class_embed(hs)
        boxes = self.bbox_embed(hs).sigmoid()
        raw = DetrRaw(logits[:, :, : self.num_queries], boxes[:, :, : self.num_queries], list(batch.image_sizes))
        if weights is not None:
            h, w = src.shape[-2:]
            att = torch.stack(weights)[:, :, :, : self.num_queries]  # [L, B, heads, N, h w]
            raw.cross_attention = att.unflatten(-1, (h, w))
        if o2m:
            raw.o2m_logits, raw.o2m_boxes = logits[:, :, self.num_queries:], boxes[:, :, self.num_queries:]
        return raw

    def _normalised_targets(self, raw: DetrRaw, targets: Sequence[Target]) -> tuple[list[Tensor], list[Tensor]]:
        if len(targets) != raw.logits.shape[1]:
            raise DataError(f"{raw.logits.shape[1]} images but {len(targets)} targets")
        labels, boxes = [], []
        for i, t in enumerate(targets):
            where = (t.file_name or None, f"image {t.image_id}")
            inst = t.instances
            if inst.boxes is None or inst.labels is None:
                raise DataError(Problem(*where, "boxes/labels", "training needs boxes and labels"))
            if tuple(int(v) for v in inst.image_size) != tuple(int(v) for v in raw.image_sizes[i]):
                raise DataError(Problem(*where, "image_size", "target is not in the batch frame (resized image "
                                        f"{raw.image_sizes[i]}); move it with model.prepare(images, targets)",
                                        inst.image_size))
            keep = ~t.iscrowd.to(inst.boxes.device) if t.iscrowd is not None and len(t.iscrowd) else None
            b, lab = inst.boxes.float(), inst.labels
            if keep is not None:
                b, lab = b[keep], lab[keep]
            bad = ~(b[:, 2:] > b[:, :2]).all(dim=1) | ~torch.isfinite(b).all(dim=1)
            if bad.any():
                j = int(torch.where(bad)[0][0])
                raise DataError(Problem(*where, f"boxes[{j}]", "box must have positive width and height",
                                        [round(float(v), 3) for v in b[j]]))
            if len(lab) and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise DataError(Problem(*where, "labels", f"labels must lie in 0..{self.num_classes - 1}",
                                        lab.tolist()))
            h, w = raw.image_sizes[i]
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=b.device)
            labels.append(lab.to(torch.int64))
            boxes.append(xyxy_to_cxcywh(b / scale))
        return labels, boxes

    def loss(self, raw: DetrRaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """The set loss (:class:`~.criterion.SetCriterion`) of every decoder layer (targets in the
        batch frame, from :meth:`prepare`); plus the one-to-many group's (``o2m_``) when it ran."""
        labels, boxes = self._normalised_targets(raw, targets)
        losses = self.criterion(raw.logits, raw.boxes, labels, boxes, aux=self.aux_loss)
        if raw.o2m_logits is not None:
            k = self.one_to_many_k
            rep = [one_to_many_targets(lab, b, k) for lab, b in zip(labels, boxes)]
            losses.update(self.criterion(raw.o2m_logits, raw.o2m_boxes, [r[0] for r in rep], [r[1] for r in rep],
                                         aux=self.aux_loss, prefix="o2m_"))
        return losses

    def decode(self, logits: Tensor, boxes: Tensor, original_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The reference post-processing: ``logits [B, N, C + 1]``, ``boxes [B, N, 4]``,
        ``original_sizes [B, 2]`` ``(h, w)`` -> XYXY boxes in original pixels ``[B, N, 4]``, scores
        and labels ``[B, N]`` (softmax, "no object" dropped, best class)."""
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        hw = original_sizes.to(boxes.dtype)
        scale = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], dim=1)
        return cxcywh_to_xyxy(boxes) * scale[:, None, :], scores, labels

    def postprocess(self, raw: DetrRaw, batch: ImageBatch) -> list[Instances]:
        """One :class:`Instances` per image, ``N`` detections in query order (original pixels);
        ``predict`` then keeps ``score > conf`` and the ``max_det`` best."""
        sizes = torch.tensor([[int(h), int(w)] for h, w in batch.original_sizes], device=raw.boxes.device)
        boxes, scores, labels = self.decode(raw.pred_logits, raw.pred_boxes, sizes)
        return [Instances((int(h), int(w)), boxes=b, labels=lab, scores=s)
                for (h, w), b, s, lab in zip(batch.original_sizes, boxes, scores, labels)]

    def export_graph(self) -> "DetrGraph":
        return DetrGraph(self)

    # ---- explanation pictures (.explain) ---------------------------------------------------------
    def explain_views(self) -> tuple[str, ...]:
        """``queries`` (every query's box by its best class probability) and ``attention`` (the last
        decoder layer's cross-attention map of one query)."""
        from .explain import DETR_VIEWS

        return DETR_VIEWS

    def explain_options(self) -> tuple[str, ...]:
        """``query``: the query whose attention is drawn (default: the highest-scoring); ``imgsz``: as
        :meth:`predict`."""
        return ("query", "imgsz")

    def explain_view(self, view: str, image: Tensor, **options) -> list:
        from .explain import detr_explanation

        return detr_explanation(self, view, image, **options)

    # ---- checkpoints ------------------------------------------------------------------------------
    def torchvision_key_rules(self):
        """Keys of the DETR release's checkpoints -> this model's (:data:`DETR_ORIGINAL_KEY_RULES`)."""
        return DETR_ORIGINAL_KEY_RULES

    def convert_foreign_state_dict(self, state: dict) -> dict:
        """A Hugging Face ``DetrForObjectDetection`` state dict -> this model's keys (q/k/v packed);
        other layouts as they are (:mod:`.checkpoints`)."""
        return convert_hf_state_dict(state) if is_hf_layout(state) else state


class DetrGraph(nn.Module):
    """``image [3, H, W]`` in [0, 1] -> ``(boxes [N, 4], scores [N], labels [N])`` in input pixels,
    all ``N`` queries, best score first (the caller thresholds ``scores``): DETR's resize, the network
    and the reference post-processing in one traceable graph."""

    batched = False
    min_opset = (11, "the graph needs no operator above opset 11 (the antialiased resize is two MatMuls)")

    def __init__(self, model: DETR):
        super().__init__()
        self.model = model
        self.output_names = model.info.export_outputs

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, _ = self.model.prepare([image])
        raw = self.model(batch)
        size = torch.stack([torch.as_tensor(batch.original_sizes[0][0]),
                            torch.as_tensor(batch.original_sizes[0][1])])[None]
        boxes, scores, labels = self.model.decode(raw.pred_logits, raw.pred_boxes, size)
        order = scores[0].argsort(descending=True)
        return boxes[0][order], scores[0][order], labels[0][order]
