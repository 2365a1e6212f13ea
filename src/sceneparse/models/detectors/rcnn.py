"""The R-CNN family in the zoo: Faster / Mask / Keypoint R-CNN builders (torchvision's architectures
and small CPU-trainable variants) and the torchvision state-dict key mapping.

Label convention of torchvision's COCO detectors: their class ``L`` (1..90, 0 = background) is the
COCO category id ``L``; sceneparse reports it as label ``L - 1``, so build them with
``num_classes=90`` (and ``num_classes=1`` for the person keypoint model). torchvision's legacy
``COCO_V1`` R-50 checkpoints were trained with FrozenBatchNorm ``eps = 0``: pass ``bn_eps=0.0`` to
reproduce torchvision's outputs with them.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from ..zoo import register
from .two_stage import FasterRCNN, KeypointRCNN, MaskRCNN


def _sub(fmt: str) -> Callable[[re.Match], str]:
    return lambda m: fmt.format(*m.groups())


#: torchvision R-CNN key -> sceneparse key. Rules are tried in order; the first match wins.
#: Covers Faster/Mask/Keypoint R-CNN with ResNet or MobileNetV3 bodies, current and legacy key names.
TORCHVISION_RCNN_KEY_RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"^backbone\.body\.(.+)$", _sub("backbone.trunk.{0}")),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)(?:\.0)?\.(weight|bias)$", _sub("neck.lateral.{0}.{1}")),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)(?:\.0)?\.(weight|bias)$", _sub("neck.output.{0}.{1}")),
    (r"^rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)$", _sub("rpn.head.conv.{0}")),
    (r"^rpn\.head\.cls_logits\.(weight|bias)$", _sub("rpn.head.objectness.{0}")),
    (r"^rpn\.head\.bbox_pred\.(weight|bias)$", _sub("rpn.head.deltas.{0}")),
    (r"^roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)$", _sub("roi_box.head.{0}.{1}")),
    (r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$", _sub("roi_box.predictor.{0}.{1}")),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$", _sub("roi_mask.head.convs.{0}.{1}")),
    (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$",
     lambda m: f"roi_mask.head.convs.{int(m[1]) - 1}.{m[2]}"),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)$", _sub("roi_mask.head.deconv.{0}")),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)$", _sub("roi_mask.head.logits.{0}")),
    (r"^roi_heads\.keypoint_head\.(\d+)\.(weight|bias)$",
     lambda m: f"roi_keypoint.head.convs.{int(m[1]) // 2}.{m[2]}"),
    (r"^roi_heads\.keypoint_predictor\.kps_score_lowres\.(weight|bias)$", _sub("roi_keypoint.head.deconv.{0}")),
)


# ---- the R-CNN family ---------------------------------------------------------------------------

def _resnet(depth: int, norm: str, bn_eps: float, trainable_layers: int, trunk_stages: int = 4):
    from ..backbones.resnet import ResNetBackbone

    if trunk_stages not in (2, 3, 4):
        raise ValueError(f"trunk_stages must be 2, 3 or 4, got {trunk_stages}")
    return ResNetBackbone(depth, norm=norm, bn_eps=bn_eps, trainable_layers=trainable_layers,
                          returned_stages=tuple(range(1, trunk_stages + 1)))


@register("fasterrcnn_resnet50_fpn")
def fasterrcnn_resnet50_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                            trainable_layers: int = 3, **kwargs) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn`` architecture (800/1333 px, 5 FPN levels)."""

    return FasterRCNN(_resnet(50, norm, bn_eps, trainable_layers), num_classes, **kwargs)


@register("maskrcnn_resnet50_fpn")
def maskrcnn_resnet50_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                          trainable_layers: int = 3, **kwargs) -> MaskRCNN:
    """torchvision's ``maskrcnn_resnet50_fpn`` architecture."""

    return MaskRCNN(_resnet(50, norm, bn_eps, trainable_layers), num_classes, **kwargs)


@register("keypointrcnn_resnet50_fpn")
def keypointrcnn_resnet50_fpn(*, num_classes: int = 1, num_keypoints: int = 17, norm: str = "frozen_bn",
                              bn_eps: float = 1e-5, trainable_layers: int = 3, **kwargs) -> KeypointRCNN:
    """torchvision's ``keypointrcnn_resnet50_fpn`` architecture (person + 17 COCO keypoints)."""

    return KeypointRCNN(_resnet(50, norm, bn_eps, trainable_layers), num_classes, num_keypoints=num_keypoints,
                        **kwargs)


@register("fasterrcnn_mobilenet_v3_large_fpn")
def fasterrcnn_mobilenet_v3_large_fpn(*, num_classes: int = 90, norm: str = "frozen_bn", bn_eps: float = 1e-5,
                                      trainable_layers: int = 3, **kwargs) -> FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``: FPN on the stride-16/32 stages + pool
    level, 15 anchors per location (5 sizes x 3 ratios on every level), RPN score threshold 0.05."""
    from ..backbones.mobilenet import MobileNetV3Backbone

    kwargs.setdefault("anchor_sizes", ((32.0, 64.0, 128.0, 256.0, 512.0),) * 3)
    kwargs.setdefault("aspect_ratios", ((0.5, 1.0, 2.0),) * 3)
    kwargs.setdefault("rpn_score_thresh", 0.05)
    backbone = MobileNetV3Backbone(norm=norm, bn_eps=bn_eps, trainable_layers=trainable_layers)
    return FasterRCNN(backbone, num_classes, **kwargs)


#: Settings of the small CPU-trainable variants (ResNet-18, trainable BatchNorm, 320 px, slimmer heads).
#: The small R-CNN variants run at 320 px, 0.4x torchvision's 800 px, so their anchors are scaled too:
#: 16-256 px instead of 32-512 px per FPN level. With 32 px anchors a 16 px object reaches IoU 0.25 at
#: best and gets only "low-quality" matches. Measured (Faster R-CNN R18, synthetic 256 px scenes, 300
#: iterations, same seed): box AP 0.018 -> 0.038, AP_small 0.035 -> 0.067, AP_large 0.009 -> 0.053.
SMALL_RCNN_SETTINGS: dict[str, Any] = dict(
    fpn_channels=128, min_size=320, max_size=512, rpn_pre_nms_top_n=(1000, 500), rpn_post_nms_top_n=(500, 300),
    box_batch_size_per_image=128, box_representation_size=256,
    anchor_sizes=((16.0,), (32.0,), (64.0,), (128.0,), (256.0,)),
)


def _small(kwargs: dict, trunk_stages: int = 4) -> dict:
    """:data:`SMALL_RCNN_SETTINGS` under ``kwargs``; a trunk of ``trunk_stages`` < 4 stages has
    ``trunk_stages + 1`` FPN levels (the stages + the max-pool level), so it keeps the first
    ``trunk_stages + 1`` anchor sizes unless ``anchor_sizes`` is given."""
    settings = {**SMALL_RCNN_SETTINGS, **kwargs}
    if "anchor_sizes" not in kwargs:
        settings["anchor_sizes"] = SMALL_RCNN_SETTINGS["anchor_sizes"][: trunk_stages + 1]
    return settings


@register("fasterrcnn_resnet18_fpn")
def fasterrcnn_resnet18_fpn(*, num_classes: int, norm: str = "bn", bn_eps: float = 1e-5,
                            trainable_layers: int = 5, trunk_stages: int = 4, **kwargs) -> FasterRCNN:
    """Small Faster R-CNN for CPU training on the synthetic scenes (see :data:`SMALL_RCNN_SETTINGS`).
    ``trunk_stages=3`` leaves ResNet-18's ``layer4`` out (2.8 instead of 11.2 M trunk parameters; the
    FPN then has 4 levels: C2-C4 and the max-pool one)."""

    return FasterRCNN(_resnet(18, norm, bn_eps, trainable_layers, trunk_stages), num_classes,
                      **_small(kwargs, trunk_stages))


@register("maskrcnn_resnet18_fpn")
def maskrcnn_resnet18_fpn(*, num_classes: int, norm: str = "bn", bn_eps: float = 1e-5, trainable_layers: int = 5,
                          trunk_stages: int = 4, **kwargs) -> MaskRCNN:
    """Small Mask R-CNN (mask head of 4 convs x 128 channels; ``mask_aligned=True``: half-pixel-aligned
    mask features, targets and pasting, detectron2's convention -- +0.04 mask AP on the synthetic
    scenes, +0.06 on small objects, see :mod:`sceneparse.models.heads.roi_mask`). ``trunk_stages``:
    as for :func:`fasterrcnn_resnet18_fpn`."""

    kwargs.setdefault("mask_conv_channels", (128,) * 4)
    kwargs.setdefault("mask_aligned", True)
    return MaskRCNN(_resnet(18, norm, bn_eps, trainable_layers, trunk_stages), num_classes,
                    **_small(kwargs, trunk_stages))


@register("keypointrcnn_resnet18_fpn")
def keypointrcnn_resnet18_fpn(*, num_classes: int = 1, num_keypoints: int = 17, norm: str = "bn",
                              bn_eps: float = 1e-5, trainable_layers: int = 5, **kwargs) -> KeypointRCNN:
    """Small Keypoint R-CNN (keypoint head of 4 convs x 128 channels, single scale 320 px)."""

    kwargs.setdefault("keypoint_conv_channels", (128,) * 4)
    return KeypointRCNN(_resnet(18, norm, bn_eps, trainable_layers), num_classes, num_keypoints=num_keypoints,
                        **_small(kwargs))
