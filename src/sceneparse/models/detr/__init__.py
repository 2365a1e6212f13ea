"""The DETR family (detection as set prediction). Importing it registers ``detr_resnet50`` (the
paper's R-50 DETR, COCO's 91 class indices) and ``detr_resnet18`` (a small variant for CPU training).

Label convention of the DETR COCO checkpoints (the release and ``facebook/detr-resnet-50``): the
class head has 92 outputs, index ``i < 91`` is COCO category id ``i`` (ids without a category, e.g.
0, 12, 26, are never trained) and 91 is "no object". ``detr_resnet50`` keeps those indices as labels
(``num_classes=91``), as the reference does; :data:`DETR_COCO_CLASS_NAMES` names them.
"""
from __future__ import annotations

from typing import Any

from ..zoo import register
from .checkpoints import DETR_ORIGINAL_KEY_RULES, convert_hf_state_dict, is_hf_layout
from .criterion import SetCriterion
from .detr import DETR, DetrGraph, DetrPreprocessor, DetrRaw, detr_resized_size

_COCO_IDS = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle",
    46: "wine glass", 47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut",
    61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet",
    72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
#: Names of the 91 class indices of DETR's COCO checkpoints (index = COCO category id; ids COCO
#: does not use are ``"N/A <id>"``, unique so that the names can key a category map).
DETR_COCO_CLASS_NAMES: tuple[str, ...] = tuple(_COCO_IDS.get(i, f"N/A {i}") for i in range(91))

#: Settings of the small CPU-trainable DETR (ResNet-18, width 128, trainable BatchNorm, 320-512 px).
SMALL_DETR_SETTINGS: dict[str, Any] = dict(dim=128, heads=8, ffn_dim=512, encoder_layers=6, decoder_layers=6,
                                           num_queries=100, min_size=320, max_size=512)


def _trunk(depth: int, norm: str, trainable_layers: int):
    from ..backbones.resnet import ResNetBackbone

    return ResNetBackbone(depth, norm=norm, trainable_layers=trainable_layers, returned_stages=(4,))


@register("detr_resnet50")
def detr_resnet50(*, num_classes: int = 91, norm: str = "frozen_bn", trainable_layers: int = 3,
                  **kwargs) -> DETR:
    """The paper's DETR R-50: ResNet-50 (frozen BatchNorm, conv1 and layer1 frozen as in the release),
    transformer 256 wide, 8 heads, FFN 2048, 6 + 6 layers, 100 queries, 800 / 1333 px. With
    ``num_classes=91`` (the default) the labels are the COCO checkpoints' class indices."""
    model = DETR(_trunk(50, norm, trainable_layers), num_classes, **kwargs)
    if num_classes == len(DETR_COCO_CLASS_NAMES):
        model.class_names = DETR_COCO_CLASS_NAMES
    return model


@register("detr_resnet18")
def detr_resnet18(*, num_classes: int, norm: str = "bn", trainable_layers: int = 5, **kwargs) -> DETR:
    """A small DETR for CPU training (see :data:`SMALL_DETR_SETTINGS`): ResNet-18 with trainable
    BatchNorm (no pretrained trunk exists offline), transformer 128 wide, 8 heads, FFN 512, 6 + 6
    layers, 100 queries, short side 320 px (long <= 512)."""
    return DETR(_trunk(18, norm, trainable_layers), num_classes, **{**SMALL_DETR_SETTINGS, **kwargs})


__all__ = ["DETR", "DETR_COCO_CLASS_NAMES", "DETR_ORIGINAL_KEY_RULES", "DetrGraph", "DetrPreprocessor", "DetrRaw",
           "SMALL_DETR_SETTINGS", "SetCriterion", "convert_hf_state_dict", "detr_resized_size", "detr_resnet18",
           "detr_resnet50", "is_hf_layout"]
