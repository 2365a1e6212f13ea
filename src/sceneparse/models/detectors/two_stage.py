"""Two-stage detectors: Faster R-CNN, Mask R-CNN and Keypoint R-CNN (composition only).

``backbone -> FPN -> RPN -> RoI heads (box [+ mask] [+ keypoint])``. The pieces live in
:mod:`sceneparse.models.backbones`, :mod:`~sceneparse.models.necks`, :mod:`~sceneparse.models.heads`;
this module wires them together and implements the model-family contract
(:class:`~sceneparse.models.base.SceneModel`; ``prepare``, ``predict`` and ``training_losses`` are the
base class's):

* ``info -> ModelInfo``: ``detect`` (Faster), ``instance`` (Mask) or ``pose`` (Keypoint R-CNN)
* ``forward(batch, targets=None, *, settings=None) -> RCNNRaw``: targets (in the batch frame, see
  ``prepare``) make it sample training RoIs and run the heads on them; in eval mode it also detects
  with the inference ``settings`` (score threshold, NMS IoU, detections per image; ``None``: the box
  head's defaults).
* ``loss(raw, targets) -> dict[str, Tensor]``
* ``postprocess(raw, batch) -> list[Instances]`` in original image pixels
* ``export_graph() -> DetectorGraph``

The heads use ``C + 1`` classes with background 0 (torchvision's convention, so torchvision weights
load unchanged); results and targets use sceneparse's ``0..C-1``. The RoI heads pool from the FPN
levels built on backbone stages, never from the extra coarse level, which only the RPN sees.
Crowd objects (``Target.iscrowd``) are left out of training, as in Detectron.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ...postprocess.detection import detections_in_original, detections_to_instances
from ...structures.batch import ImageBatch
from ...structures.instances import Instances
from ...structures.keypoints import COCO_KEYPOINT_NAMES, COCO_PERSON, KeypointSet
from ...structures.target import Target
from ..base import InferenceSettings, ModelInfo, SceneModel
from ..heads.proposal_sampler import ProposalSampler, SampledRoIs
from ..heads.roi_box import Detections, RoIBoxHead
from ..heads.roi_keypoint import RoIKeypointHead
from ..heads.roi_mask import RoIMaskHead
from ..heads.rpn import RegionProposalNetwork, RPNOutput
from ..necks.fpn import FPN
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor
from ..targets import checked_box_targets


@dataclass
class RCNNRaw:
    """Raw outputs of a two-stage detector for one batch (frame: the batch's resized images).

    Attributes:
        image_sizes: ``(h, w)`` of each resized image.
        rpn: anchors, objectness, deltas and proposals (:class:`RPNOutput`).
        sampled: training RoIs with their labels/matches (only when targets were given).
        class_logits, box_deltas: box head outputs ``[R, C+1]`` / ``[R, 4 (C+1)]`` on ``sampled``.
        mask_logits: ``[R_fg, C+1, M, M]`` on the foreground sampled RoIs (Mask R-CNN).
        keypoint_logits: ``[R_fg, K, S, S]`` on the foreground sampled RoIs (Keypoint R-CNN).
        detections: per image final detections (eval mode only).
    """

    image_sizes: list[tuple[int, int]]
    rpn: RPNOutput
    sampled: SampledRoIs | None = None
    class_logits: Tensor | None = None
    box_deltas: Tensor | None = None
    mask_logits: Tensor | None = None
    keypoint_logits: Tensor | None = None
    detections: list[Detections] | None = None


class TwoStageDetector(SceneModel):
    """Backbone + FPN + RPN + RoI heads. Prefer :class:`FasterRCNN` / :class:`MaskRCNN` /
    :class:`KeypointRCNN`, which build the heads from plain arguments."""

    def __init__(self, backbone: nn.Module, neck: FPN, rpn: RegionProposalNetwork, sampler: ProposalSampler,
                 roi_box: RoIBoxHead, preprocessor: Preprocessor, *, roi_mask: RoIMaskHead | None = None,
                 roi_keypoint: RoIKeypointHead | None = None, mask_threshold: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.sampler = sampler
        self.roi_box = roi_box
        self.roi_mask = roi_mask
        self.roi_keypoint = roi_keypoint
        self.preprocessor = preprocessor
        self.mask_threshold = float(mask_threshold)
        self.num_classes = roi_box.num_classes
        self.keypoint_set: KeypointSet | None = None
        if roi_keypoint is not None:  # COCO's layout when the head has COCO's 17 keypoints
            k = roi_keypoint.num_keypoints
            self.keypoint_set = COCO_PERSON if k == len(COCO_KEYPOINT_NAMES) else KeypointSet.from_names(
                [f"kp{i}" for i in range(k)])
        self.num_roi_levels = len(neck.in_channels)  # the extra FPN level feeds the RPN only
        if rpn.num_levels != neck.num_levels:
            raise ValueError(f"RPN has anchors for {rpn.num_levels} levels but the FPN gives {neck.num_levels}")

    # ---- protocol ----------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        task = "pose" if self.roi_keypoint is not None else "instance" if self.roi_mask is not None else "detect"
        types = ("bbox",) + (("segm",) if self.roi_mask is not None else ()) + \
            (("keypoints",) if self.roi_keypoint is not None else ())
        outputs = ("boxes", "scores", "labels") + (("masks",) if self.roi_mask is not None else ()) + \
            (("keypoints", "keypoint_scores") if self.roi_keypoint is not None else ())
        head = self.roi_box
        return ModelInfo(task, self.num_classes, iou_types=types,
                         data="keypoints" if self.roi_keypoint is not None else "instances",
                         class_names=tuple(self.class_names) if len(self.class_names) == self.num_classes else (),
                         keypoints=self.keypoint_set, size=self.preprocessor.policy(), conf=head.score_thresh,
                         iou=head.nms_thresh, max_det=head.detections_per_img, export_outputs=outputs,
                         mask_threshold=self.mask_threshold)

    @property
    def mask_aligned(self) -> bool:
        """Whether masks are pasted with the half-pixel-aligned convention of the mask head."""
        return self.roi_mask is not None and self.roi_mask.aligned

    def forward(self, batch: ImageBatch, targets: Sequence[Target] | None = None, *,
                settings: InferenceSettings | None = None) -> RCNNRaw:
        """``batch`` from :meth:`prepare`. With ``targets`` (batch frame; required in training) the
        training RoIs are sampled and the heads run on them (for :meth:`loss`); in eval mode the
        detections are computed as well (for :meth:`postprocess`), with ``settings``."""
        if self.training and targets is None:
            raise ValueError("training mode needs targets (in the batch frame, from prepare())")
        feats = self.neck(self.backbone(batch.tensor))
        roi_feats = feats[: self.num_roi_levels]
        sizes = list(batch.image_sizes)
        raw = RCNNRaw(sizes, self.rpn(feats, tuple(batch.tensor.shape[-2:]), sizes))
        if targets is not None:
            gt = self._training_targets(targets, batch)
            raw.sampled = self.sampler(raw.rpn.proposals, [t.instances.boxes for t in gt],
                                       [t.instances.labels for t in gt])
            raw.class_logits, raw.box_deltas = self.roi_box(roi_feats, raw.sampled.boxes, sizes)
            if self.roi_mask is not None or self.roi_keypoint is not None:
                fg = raw.sampled.positives()
                if self.roi_mask is not None:
                    raw.mask_logits = self.roi_mask(roi_feats, fg.boxes, sizes)
                if self.roi_keypoint is not None:
                    raw.keypoint_logits = self.roi_keypoint(roi_feats, fg.boxes, sizes)
        if not self.training:
            raw.detections = self._detect(roi_feats, raw.rpn.proposals, sizes, settings)
        return raw

    def _detect(self, feats: list[Tensor], proposals: list[Tensor], sizes: list[tuple[int, int]],
                settings: InferenceSettings | None = None) -> list[Detections]:
        logits, deltas = self.roi_box(feats, proposals, sizes)
        kw = {} if settings is None else dict(score_thresh=settings.conf, nms_thresh=settings.iou,
                                              detections_per_img=settings.max_det)
        dets = self.roi_box.detect(logits, deltas, proposals, sizes, **kw)
        counts = [d.labels.shape[0] for d in dets]  # not len(): a traced graph keeps shape[0] dynamic
        boxes = [d.boxes for d in dets]
        if self.roi_mask is not None:
            logits = self.roi_mask(feats, boxes, sizes)
            probs = RoIMaskHead.select(logits, torch.cat([d.labels for d in dets])).sigmoid()
            for d, p in zip(dets, probs.split(counts)):
                d.mask_probs = p
        if self.roi_keypoint is not None:
            for d, k in zip(dets, self.roi_keypoint(feats, boxes, sizes).split(counts)):
                d.keypoint_logits = k
        return dets

    def loss(self, raw: RCNNRaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """RPN, box, mask and keypoint losses (the targets given to :meth:`forward`)."""
        if raw.sampled is None:
            raise ValueError("loss() needs the raw outputs of forward(batch, targets): no training RoIs were sampled")
        gt = [t if not t.iscrowd.any() else t.select(~t.iscrowd) for t in targets]
        boxes = [t.instances.boxes for t in gt]
        losses = self.rpn.loss(raw.rpn, boxes)
        losses.update(self.roi_box.loss(raw.class_logits, raw.box_deltas, raw.sampled, boxes))
        if self.roi_mask is not None:
            losses.update(self.roi_mask.loss(raw.mask_logits, raw.sampled.positives(),
                                             [t.instances.masks for t in gt]))
        if self.roi_keypoint is not None:
            losses.update(self.roi_keypoint.loss(raw.keypoint_logits, raw.sampled.positives(),
                                                 [t.instances.keypoints for t in gt]))
        return losses

    def postprocess(self, raw: RCNNRaw, batch: ImageBatch) -> list[Instances]:
        """Detections -> :class:`Instances` in original pixels (masks pasted, labels ``0..C-1``)."""
        if raw.detections is None:
            raise ValueError("postprocess() needs the raw outputs of forward() in eval mode")
        out = []
        for d, rs, os_ in zip(raw.detections, batch.image_sizes, batch.original_sizes):
            out.append(detections_to_instances(d.boxes, d.scores, d.labels, rs, os_, mask_probs=d.mask_probs,
                                               keypoint_heatmaps=d.keypoint_logits,
                                               mask_threshold=self.mask_threshold, mask_aligned=self.mask_aligned))
        return out

    def infer(self, images: list[Tensor], settings: InferenceSettings) -> list[Instances]:
        """The box head applies the score threshold, NMS IoU and detection count before the mask /
        keypoint heads run (so ``max_det`` also bounds their cost)."""
        batch, _ = self.prepare(images, imgsz=settings.imgsz)
        return self.postprocess(self(batch, settings=settings), batch)

    def export_graph(self) -> "DetectorGraph":
        return DetectorGraph(self)

    # ---- explanation pictures (.explain) ---------------------------------------------------------
    def explain_views(self) -> tuple[str, ...]:
        """anchors, anchor_matching, proposals, nms, roi_align, fpn_levels, features, receptive_field
        (+ mask_head for Mask R-CNN, + keypoints for Keypoint R-CNN): see :mod:`.explain`."""
        from .explain import rcnn_views

        return rcnn_views(self)

    def explain_options(self) -> tuple[str, ...]:
        """conf / max_det / imgsz (as predict), level, at, box, roi, top_k (:func:`.explain.rcnn_explanation`)."""
        from .explain import RCNN_OPTIONS

        return RCNN_OPTIONS

    def explain_view(self, view: str, image: Tensor, **options) -> list:
        from .explain import rcnn_explanation

        return rcnn_explanation(self, view, image, **options)

    def torchvision_key_rules(self):
        """torchvision R-CNN state-dict keys -> this model's (:data:`TORCHVISION_RCNN_KEY_RULES`)."""
        from .rcnn import TORCHVISION_RCNN_KEY_RULES

        return TORCHVISION_RCNN_KEY_RULES

    # ---- checks --------------------------------------------------------------------------------
    def _training_targets(self, targets: Sequence[Target], batch: ImageBatch) -> list[Target]:
        needs = {}
        if self.roi_mask is not None:
            needs["masks"] = "Mask R-CNN training needs instance masks"
        if self.roi_keypoint is not None:
            needs["keypoints"] = "Keypoint R-CNN training needs keypoints"
        return checked_box_targets(targets, batch.image_sizes, self.num_classes, needs=needs)


def _default_anchor_sizes(num_levels: int) -> tuple[tuple[float, ...], ...]:
    return tuple((32.0 * 2 ** i,) for i in range(num_levels))


class FasterRCNN(TwoStageDetector):
    """Faster R-CNN with FPN (Ren et al., 2015; Lin et al., 2017).

    Args:
        backbone: module returning ``list[Tensor]`` with attribute ``out_channels`` (list per level),
            e.g. :class:`~sceneparse.models.backbones.ResNetBackbone`.
        num_classes: foreground classes ``C`` (labels ``0..C-1``).
        fpn_channels, fpn_extra: FPN width and extra level (``"maxpool"``).
        min_size, max_size, image_mean, image_std, size_divisible: see :class:`Preprocessor`.
        anchor_sizes, aspect_ratios: per pyramid level (default ``32 * 2^l`` px, ratios 0.5/1/2).
        rpn_*: see :class:`RegionProposalNetwork` (``pre/post_nms_top_n`` are ``(train, test)``).
        box_*: see :class:`RoIBoxHead` and :class:`ProposalSampler`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, fpn_channels: int = 256,
                 fpn_extra: str | None = "maxpool", min_size: int | Sequence[int] = 800, max_size: int = 1333,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                 size_divisible: int = 32, anchor_sizes: Sequence[Sequence[float]] | None = None,
                 aspect_ratios: Sequence[Sequence[float]] | None = None,
                 rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000), rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
                 rpn_nms_thresh: float = 0.7, rpn_fg_iou_thresh: float = 0.7, rpn_bg_iou_thresh: float = 0.3,
                 rpn_batch_size_per_image: int = 256, rpn_positive_fraction: float = 0.5,
                 rpn_score_thresh: float = 0.0, box_pool_size: int = 7, box_sampling_ratio: int = 2,
                 box_representation_size: int = 1024, box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5,
                 box_detections_per_img: int = 100, box_fg_iou_thresh: float = 0.5, box_bg_iou_thresh: float = 0.5,
                 box_batch_size_per_image: int = 512, box_positive_fraction: float = 0.25,
                 bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 roi_mask: RoIMaskHead | None = None, roi_keypoint: RoIKeypointHead | None = None,
                 mask_threshold: float = 0.5):
        neck = FPN(backbone.out_channels, fpn_channels, fpn_extra)
        anchor_sizes = anchor_sizes or _default_anchor_sizes(neck.num_levels)
        aspect_ratios = aspect_ratios or ((0.5, 1.0, 2.0),) * len(anchor_sizes)
        rpn = RegionProposalNetwork(
            fpn_channels, anchor_sizes, aspect_ratios, fg_iou_thresh=rpn_fg_iou_thresh,
            bg_iou_thresh=rpn_bg_iou_thresh, batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=rpn_positive_fraction, pre_nms_top_n=rpn_pre_nms_top_n,
            post_nms_top_n=rpn_post_nms_top_n, nms_thresh=rpn_nms_thresh, score_thresh=rpn_score_thresh)
        sampler = ProposalSampler(box_fg_iou_thresh, box_bg_iou_thresh, box_batch_size_per_image,
                                  box_positive_fraction)
        roi_box = RoIBoxHead(fpn_channels, num_classes, pool_size=box_pool_size, sampling_ratio=box_sampling_ratio,
                             representation_size=box_representation_size, bbox_reg_weights=bbox_reg_weights,
                             score_thresh=box_score_thresh, nms_thresh=box_nms_thresh,
                             detections_per_img=box_detections_per_img)
        pre = Preprocessor(min_size, max_size, image_mean, image_std, size_divisible)
        super().__init__(backbone, neck, rpn, sampler, roi_box, pre, roi_mask=roi_mask, roi_keypoint=roi_keypoint,
                         mask_threshold=mask_threshold)


class MaskRCNN(FasterRCNN):
    """Mask R-CNN (He et al., 2017): Faster R-CNN + a per-class 28x28 mask head on RoIAlign features.

    Args (beyond :class:`FasterRCNN`'s): mask_pool_size (14), mask_sampling_ratio (2),
    mask_conv_channels (``(256,) * 4``), mask_threshold (0.5, on pasted probabilities), mask_aligned
    (``False``, torchvision's convention; ``True``: half-pixel-aligned mask features, targets and
    pasting, see :mod:`sceneparse.models.heads.roi_mask`).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, mask_pool_size: int = 14,
                 mask_sampling_ratio: int = 2, mask_conv_channels: Sequence[int] = (256,) * 4,
                 mask_aligned: bool = False, **kwargs):
        channels = kwargs.get("fpn_channels", 256)
        head = RoIMaskHead(channels, num_classes, pool_size=mask_pool_size, sampling_ratio=mask_sampling_ratio,
                           conv_channels=mask_conv_channels, aligned=mask_aligned)
        super().__init__(backbone, num_classes, roi_mask=head, **kwargs)


class KeypointRCNN(FasterRCNN):
    """Keypoint R-CNN (Mask R-CNN sec. 5): Faster R-CNN + a ``K``-heatmap 56x56 keypoint head.

    Args (beyond :class:`FasterRCNN`'s): num_keypoints (17), keypoint_pool_size (14),
    keypoint_sampling_ratio (2), keypoint_conv_channels (``(512,) * 8``). ``min_size`` defaults to
    torchvision's multi-scale ``(640, 672, ..., 800)`` (training draws one; evaluation uses 800).
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 1, *, num_keypoints: int = 17,
                 keypoint_pool_size: int = 14, keypoint_sampling_ratio: int = 2,
                 keypoint_conv_channels: Sequence[int] = (512,) * 8,
                 min_size: int | Sequence[int] = (640, 672, 704, 736, 768, 800), **kwargs):
        channels = kwargs.get("fpn_channels", 256)
        head = RoIKeypointHead(channels, num_keypoints, pool_size=keypoint_pool_size,
                               sampling_ratio=keypoint_sampling_ratio, conv_channels=keypoint_conv_channels)
        super().__init__(backbone, num_classes, roi_keypoint=head, min_size=min_size, **kwargs)


class DetectorGraph(nn.Module):
    """``image [3, H, W]`` in [0, 1] -> ``(boxes, scores, labels[, masks][, keypoints, keypoint_scores])``
    in input-image pixels (names: ``ModelInfo.export_outputs``): ``prepare`` + ``forward`` + the
    mapping of ``postprocess``, with mask probabilities instead of thresholded masks."""

    batched = False  #: the exporter's input is one ``[3, H, W]`` image, not a ``[N, 3, H, W]`` batch

    def __init__(self, model: TwoStageDetector):
        super().__init__()
        self.model = model
        self.output_names = model.info.export_outputs
        # the lowest ONNX opset whose graph onnxruntime runs correctly, and why (measured with torch 2.14 /
        # onnxruntime 1.32; the upper end is whatever the installed onnxruntime implements)
        if model.roi_keypoint is not None:
            self.min_opset = (16, "the keypoint decoding loop (one bicubic Resize per detection inside an ONNX Loop) "
                                  "does not load in onnxruntime below opset 16")
        elif model.roi_mask is not None:
            self.min_opset = (16, "mask pasting sums bilinear weights with ScatterElements(reduction='add'), opset 16 "
                                  "(below it the exporter writes a plain scatter, which overwrites instead of adding)")
        else:
            self.min_opset = (11, "NonMaxSuppression and RoiAlign need opset 11")

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        batch, _ = self.model.prepare([image])
        d = self.model(batch).detections[0]
        out = detections_in_original(d.boxes, d.scores, d.labels, batch.image_sizes[0], batch.original_sizes[0],
                                     mask_probs=d.mask_probs, keypoint_heatmaps=d.keypoint_logits,
                                     mask_threshold=None, mask_aligned=self.model.mask_aligned)
        return tuple(out[name] for name in self.output_names)


__all__ = ["RCNNRaw", "TwoStageDetector", "FasterRCNN", "MaskRCNN", "KeypointRCNN", "DetectorGraph"]
