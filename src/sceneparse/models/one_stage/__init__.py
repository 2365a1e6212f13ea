"""One-stage dense detectors (RetinaNet, FCOS, SSD, SSDlite): backbone + neck + a dense head that
predicts a class and a box at every anchor / point, with no proposal stage.

Importing this package registers their builders in :mod:`sceneparse.models.zoo`:
``retinanet_resnet50_fpn``, ``retinanet_resnet50_fpn_v2``, ``retinanet_resnet18_fpn`` (:mod:`.retinanet`),
``fcos_resnet50_fpn``, ``fcos_resnet18_fpn`` (:mod:`.fcos`), ``ssd300_vgg16`` (:mod:`.ssd`),
``ssdlite320_mobilenet_v3_large``, ``ssdlite320_mobilenet_v3_small`` (:mod:`.ssdlite`).
"""
from . import fcos, retinanet, ssd, ssdlite
from .dense import DenseDetections, DenseDetector, DenseDetectorGraph, DenseRaw
from .fcos import FCOS, TORCHVISION_FCOS_KEY_RULES
from .heads import DenseHead
from .retinanet import RetinaNet, TORCHVISION_RETINANET_KEY_RULES
from .ssd import SSD, TORCHVISION_SSD_KEY_RULES
from .ssdlite import SSDLite

__all__ = ["FCOS", "TORCHVISION_FCOS_KEY_RULES", "fcos", "DenseDetections", "DenseDetector", "DenseDetectorGraph", "DenseHead", "DenseRaw", "RetinaNet",
           "TORCHVISION_RETINANET_KEY_RULES", "retinanet", "SSD", "TORCHVISION_SSD_KEY_RULES", "ssd",
           "SSDLite", "ssdlite"]
