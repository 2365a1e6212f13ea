"""Semantic segmentation networks: FCN (32s/16s/8s and torchvision's fcn_resnet50), U-Net, SegNet,
DeepLabv3 / v3+ and LR-ASPP, all speaking the model protocol of :class:`SemanticSegmentor`.

Importing this package registers the builders in :mod:`sceneparse.models.zoo` (``zoo.build("unet",
num_classes=...)``): ``fcn_resnet50``, ``fcn{8,16,32}s_resnet18``, ``deeplabv3_resnet50``,
``deeplabv3_mobilenet_v3_large``, ``deeplabv3_resnet18``, ``deeplabv3plus_resnet{18,50}``,
``lraspp_mobilenet_v3_large``, ``unet``, ``segnet``."""
from .base import SemanticRaw, SemanticSegmentor
from .checkpoints import load_imagenet_trunk, module_map_rules
from .deeplab import (
    ASPP,
    DeepLabV3,
    DeepLabV3Plus,
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet18,
    deeplabv3_resnet50,
    deeplabv3plus_resnet18,
    deeplabv3plus_resnet50,
)
from .fcn import FCN, FCNHead, FCNSkip, fcn8s_resnet18, fcn16s_resnet18, fcn32s_resnet18, fcn_resnet50
from .losses import pixel_cross_entropy, soft_dice_loss
from .lraspp import LRASPP, lraspp_mobilenet_v3_large
from .segnet import SegNet, segnet
from .unet import UNet, unet

__all__ = [
    "ASPP", "DeepLabV3", "DeepLabV3Plus", "FCN", "FCNHead", "FCNSkip", "LRASPP", "SegNet",
    "SemanticRaw", "SemanticSegmentor", "UNet",
    "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet18", "deeplabv3_resnet50", "deeplabv3plus_resnet18",
    "deeplabv3plus_resnet50", "fcn16s_resnet18", "fcn32s_resnet18", "fcn8s_resnet18", "fcn_resnet50",
    "load_imagenet_trunk", "module_map_rules", "lraspp_mobilenet_v3_large", "pixel_cross_entropy",
    "segnet", "soft_dice_loss", "unet",
]
