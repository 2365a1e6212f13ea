"""RetinaNet (Lin, Goyal, Girshick, He, Dollar: "Focal Loss for Dense Object Detection", ICCV 2017).

* Backbone ResNet + FPN with levels P3-P7 (sec. 4): P3-P5 from C3-C5, P6 = 3x3/2 conv on P5 (C5 in the
  paper and in torchvision's ``_v2``), P7 = 3x3/2 conv on ReLU(P6); 256 channels.
* Anchors: areas ``32^2 .. 512^2`` on P3..P7, three scales ``2^0, 2^(1/3), 2^(2/3)`` per octave and
  three aspect ratios ``1:2, 1:1, 2:1``: ``A = 9`` anchors per location. The scaled sizes are
  truncated to integers (``32, 40, 50``), as torchvision builds them (its released weights were
  trained on these anchors).
* Matching: IoU ``>= 0.5`` with a ground-truth box is foreground, ``< 0.4`` background, in between
  ignored; every ground truth also keeps its best anchor(s) (torchvision's low-quality matches).
* Heads (:class:`~sceneparse.models.one_stage.heads.DenseHead`): class subnet and box subnet of
  4 convs each; sigmoid class scores.
* Loss: focal loss ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``, ``alpha = 0.25``, ``gamma = 2``,
  summed over all non-ignored anchors and normalised by the number of foreground anchors (per
  image, then averaged over images); box loss L1 on R-CNN deltas (weights 1, 1, 1, 1; torchvision's
  choice; ``box_loss="smooth_l1"``: the paper's smooth-L1, beta 1/9) or GIoU on decoded boxes (v2).
* Inference: per level, scores ``> 0.05``, the 1000 best (anchor, class) pairs, decoded and clipped;
  class-wise NMS at IoU 0.5 over all levels; the 300 best detections per image (torchvision).

Checkpoints: torchvision's ``retinanet_resnet50_fpn(_v2)`` state dicts load through
:data:`TORCHVISION_RETINANET_KEY_RULES`; build with ``num_classes=90`` for COCO (torchvision's 91
columns include the background id 0: see :mod:`sceneparse.models.one_stage.dense`). The legacy
``COCO_V1`` R-50 weights were trained with FrozenBatchNorm ``eps = 0``: pass ``bn_eps=0.0``.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ...ops.anchors import AnchorGenerator
from ...ops.box_coder import BoxCoder
from ...ops.boxes import box_iou
from ...ops.losses import giou_loss, sigmoid_focal_loss, smooth_l1_loss
from ...ops.matching import Matcher
from ...structures.target import Target
from ..necks.fpn import FPN
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessor
from ..zoo import register
from .dense import DenseDetector, DenseRaw
from .heads import DenseHead

_BOX_LOSSES = ("l1", "smooth_l1", "giou")


def _sub(fmt: str) -> Callable[[re.Match], str]:
    return lambda m: fmt.format(*m.groups())


def _backbone_fpn_rules() -> tuple[tuple[str, Callable[[re.Match], str]], ...]:
    """torchvision's ``backbone.body`` / ``backbone.fpn`` keys (current and legacy FPN names)."""
    return (
        (r"^backbone\.body\.(.+)$", _sub("backbone.trunk.{0}")),
        (r"^backbone\.fpn\.inner_blocks\.(\d+)(?:\.0)?\.(weight|bias)$", _sub("neck.lateral.{0}.{1}")),
        (r"^backbone\.fpn\.layer_blocks\.(\d+)(?:\.0)?\.(weight|bias)$", _sub("neck.output.{0}.{1}")),
        (r"^backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)$", _sub("neck.{0}.{1}")),
    )


#: torchvision RetinaNet key -> sceneparse key (first match wins). ``conv.<i>.0`` / ``conv.<i>.1`` are
#: the conv / GroupNorm of block ``i`` (``Conv2dNormActivation``); the legacy (version 1) layout of the
#: released ``retinanet_resnet50_fpn_coco`` file is a plain ``Sequential`` (conv, ReLU) x 4:
#: ``conv.<2i>``.
TORCHVISION_RETINANET_KEY_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = _backbone_fpn_rules() + (
    (r"^head\.classification_head\.conv\.(\d+)\.0\.(weight|bias)$", _sub("head.cls_subnet.{0}.conv.{1}")),
    (r"^head\.classification_head\.conv\.(\d+)\.1\.(weight|bias)$", _sub("head.cls_subnet.{0}.norm.{1}")),
    (r"^head\.classification_head\.conv\.(\d+)\.(weight|bias)$",
     lambda m: f"head.cls_subnet.{int(m[1]) // 2}.conv.{m[2]}"),
    (r"^head\.classification_head\.cls_logits\.(weight|bias)$", _sub("head.cls_logits.{0}")),
    (r"^head\.regression_head\.conv\.(\d+)\.0\.(weight|bias)$", _sub("head.box_subnet.{0}.conv.{1}")),
    (r"^head\.regression_head\.conv\.(\d+)\.1\.(weight|bias)$", _sub("head.box_subnet.{0}.norm.{1}")),
    (r"^head\.regression_head\.conv\.(\d+)\.(weight|bias)$",
     lambda m: f"head.box_subnet.{int(m[1]) // 2}.conv.{m[2]}"),
    (r"^head\.regression_head\.bbox_reg\.(weight|bias)$", _sub("head.bbox_pred.{0}")),
)


def retinanet_anchor_sizes(base_sizes: Sequence[float] = (32, 64, 128, 256, 512),
                           scales_per_octave: int = 3) -> tuple[tuple[float, ...], ...]:
    """Per level ``(x, int(x 2^(1/3)), int(x 2^(2/3)))`` for base size ``x``: the paper's three scales per
    octave, truncated to whole pixels as in torchvision (32 -> 32, 40, 50)."""
    return tuple(tuple(float(int(b * 2 ** (k / scales_per_octave))) for k in range(scales_per_octave))
                 for b in base_sizes)


class RetinaNet(DenseDetector):
    """RetinaNet: ResNet/FPN P3-P7, 9 anchors per location, focal loss (see the module docstring).

    Args:
        backbone: returns C3, C4, C5 (``out_channels`` per map), e.g. ``ResNetBackbone(returned_stages=(2, 3, 4))``.
        num_classes: foreground classes ``C``.
        fpn_channels, fpn_extra: pyramid width and the P6/P7 rule (``"p6p7"``: P6 from P5, torchvision's
            v1; ``"p6p7_c5"``: from C5, the paper and v2).
        min_size, max_size, image_mean, image_std, size_divisible: see :class:`Preprocessor`.
        anchor_sizes, aspect_ratios: per level (default :func:`retinanet_anchor_sizes`, ratios 0.5/1/2).
        num_convs, head_norm_groups, head_conv_bias, prior_prob: see :class:`DenseHead`.
        fg_iou_thresh, bg_iou_thresh: matching thresholds (0.5 / 0.4).
        focal_alpha, focal_gamma: focal loss (0.25 / 2).
        box_loss: ``"l1"`` (torchvision), ``"smooth_l1"`` (paper, beta 1/9) or ``"giou"`` (v2).
        score_thresh, nms_thresh, detections_per_img, topk_candidates: inference (0.05, 0.5, 300, 1000).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, fpn_channels: int = 256, fpn_extra: str = "p6p7",
                 min_size: int | Sequence[int] = 800, max_size: int = 1333,
                 image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                 size_divisible: int = 32, anchor_sizes: Sequence[Sequence[float]] | None = None,
                 aspect_ratios: Sequence[Sequence[float]] | None = None, num_convs: int = 4,
                 head_norm_groups: int | None = None, head_conv_bias: bool = True, prior_prob: float = 0.01,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.4, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, box_loss: str = "l1", score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 300, topk_candidates: int = 1000):
        if box_loss not in _BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {_BOX_LOSSES}, got {box_loss!r}")
        neck = FPN(backbone.out_channels, fpn_channels, fpn_extra)
        super().__init__(backbone, neck, num_classes, Preprocessor(min_size, max_size, image_mean, image_std,
                                                                   size_divisible),
                         score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                         topk_candidates=topk_candidates)
        anchor_sizes = anchor_sizes or retinanet_anchor_sizes()[: neck.num_levels]
        aspect_ratios = aspect_ratios or ((0.5, 1.0, 2.0),) * len(anchor_sizes)
        self.anchor_generator = AnchorGenerator(anchor_sizes, aspect_ratios)
        if self.anchor_generator.num_levels != neck.num_levels:
            raise ValueError(f"{self.anchor_generator.num_levels} anchor levels for {neck.num_levels} FPN levels")
        a = set(self.anchor_generator.num_anchors_per_location())
        if len(a) != 1:
            raise ValueError(f"the shared head needs the same number of anchors on every level, got {a}")
        self.head = DenseHead(fpn_channels, a.pop(), num_classes + 1, num_convs=num_convs,
                              norm_groups=head_norm_groups, conv_bias=head_conv_bias, prior_prob=prior_prob)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.focal_alpha = float(focal_alpha)
        self.focal_gamma = float(focal_gamma)
        self.box_loss = box_loss

    def decode(self, box_regression: Tensor, references: Tensor) -> Tensor:
        """R-CNN deltas (weights 1, 1, 1, 1) relative to the anchors -> XYXY boxes ``[n, 4]``."""
        return self.box_coder.decode(box_regression, references)[:, 0]

    def loss(self, raw: DenseRaw, targets: Sequence[Target]) -> dict[str, Tensor]:
        """``classification`` (focal loss) and ``bbox_regression``, each summed per image, divided by
        the image's foreground anchors (at least 1) and averaged over the images."""
        gt = self.training_targets(targets, raw)
        refs = raw.references
        cls_losses, box_losses = [], []
        for i, t in enumerate(gt):  # one iteration per image
            boxes = t.instances.boxes.to(refs.dtype)
            if boxes.shape[0] == 0:
                matches = torch.full((refs.shape[0],), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64,
                                     device=refs.device)
            else:
                matches = self.matcher(box_iou(boxes, refs))
            fg = torch.where(matches >= 0)[0]
            num_fg = max(1, fg.numel())
            logits = raw.cls_logits[i]
            onehot = torch.zeros_like(logits)
            onehot[fg, t.instances.labels[matches[fg]] + 1] = 1.0
            valid = matches != Matcher.BETWEEN_THRESHOLDS
            cls_losses.append(sigmoid_focal_loss(logits[valid], onehot[valid], self.focal_alpha, self.focal_gamma,
                                                 reduction="sum") / num_fg)
            reg, anchors, matched = raw.box_regression[i, fg], refs[fg], boxes[matches[fg]]
            if self.box_loss == "giou":
                box = giou_loss(self.decode(reg, anchors), matched, reduction="sum")
            else:
                beta = 0.0 if self.box_loss == "l1" else 1.0 / 9
                box = smooth_l1_loss(reg, self.box_coder.encode(matched, anchors), beta=beta, reduction="sum")
            box_losses.append(box / num_fg)
        n = max(1, len(gt))
        return {"classification": sum(cls_losses) / n, "bbox_regression": sum(box_losses) / n}

    def torchvision_key_rules(self):
        """torchvision RetinaNet state-dict keys -> this model's (:data:`TORCHVISION_RETINANET_KEY_RULES`)."""
        return TORCHVISION_RETINANET_KEY_RULES


# ---- builders ----------------------------------------------------------------------------------

def _resnet_c3_c5(depth: int, norm: str, bn_eps: float, trainable_layers: int):
    from ..backbones.resnet import ResNetBackbone

    return ResNetBackbone(depth, norm=norm, bn_eps=bn_eps, trainable_layers=trainable_layers,
                          returned_stages=(2, 3, 4))


@register("retinanet_resnet50_fpn")
def retinanet_resnet50_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                           trainable_layers: int = 3, **kwargs) -> RetinaNet:
    """torchvision's ``retinanet_resnet50_fpn``: P6 from P5, plain heads, L1 box loss, 800/1333 px."""
    return RetinaNet(_resnet_c3_c5(50, norm, bn_eps, trainable_layers), num_classes, **kwargs)


@register("retinanet_resnet50_fpn_v2")
def retinanet_resnet50_fpn_v2(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                              trainable_layers: int = 3, **kwargs) -> RetinaNet:
    """torchvision's ``retinanet_resnet50_fpn_v2`` (ATSS paper's improved RetinaNet): P6 from C5,
    GroupNorm heads with bias-free convs, GIoU box loss."""
    kwargs.setdefault("fpn_extra", "p6p7_c5")
    kwargs.setdefault("head_norm_groups", 32)
    kwargs.setdefault("head_conv_bias", False)
    kwargs.setdefault("box_loss", "giou")
    return RetinaNet(_resnet_c3_c5(50, norm, bn_eps, trainable_layers), num_classes, **kwargs)


#: The small CPU-trainable RetinaNet: ResNet-18, trainable BatchNorm, 320 px, 128-channel pyramid and
#: heads, anchors halved (16..256 px base sizes on P3..P7) for the 0.4x smaller input.
SMALL_RETINANET_SETTINGS: dict = dict(fpn_channels=128, min_size=320, max_size=512,
                                      anchor_sizes=retinanet_anchor_sizes((16, 32, 64, 128, 256)),
                                      detections_per_img=100)


@register("retinanet_resnet18_fpn")
def retinanet_resnet18_fpn(*, num_classes: int, norm: str = "bn", bn_eps: float = 1e-5, trainable_layers: int = 5,
                           **kwargs) -> RetinaNet:
    """Small RetinaNet for CPU training on the synthetic scenes (:data:`SMALL_RETINANET_SETTINGS`)."""
    return RetinaNet(_resnet_c3_c5(18, norm, bn_eps, trainable_layers), num_classes,
                     **{**SMALL_RETINANET_SETTINGS, **kwargs})


__all__ = ["RetinaNet", "TORCHVISION_RETINANET_KEY_RULES", "SMALL_RETINANET_SETTINGS", "retinanet_anchor_sizes",
           "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "retinanet_resnet18_fpn"]
