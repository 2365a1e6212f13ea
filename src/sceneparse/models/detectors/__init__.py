"""Detectors: compositions of backbone + neck + heads implementing the model-family contract.

Importing this package registers the R-CNN builders in :mod:`sceneparse.models.zoo`
(:mod:`.rcnn`): ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, ``keypointrcnn_resnet50_fpn``,
``fasterrcnn_mobilenet_v3_large_fpn`` and the small ``*_resnet18_fpn`` variants."""
from . import rcnn
from .rcnn import SMALL_RCNN_SETTINGS, TORCHVISION_RCNN_KEY_RULES
from .two_stage import DetectorGraph, FasterRCNN, KeypointRCNN, MaskRCNN, RCNNRaw, TwoStageDetector

__all__ = ["DetectorGraph", "FasterRCNN", "MaskRCNN", "KeypointRCNN", "TwoStageDetector", "RCNNRaw",
           "SMALL_RCNN_SETTINGS", "TORCHVISION_RCNN_KEY_RULES", "rcnn"]
