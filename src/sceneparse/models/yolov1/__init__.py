"""YOLO v1 (Redmon et al., CVPR 2016): the S x S grid detector of the lecture notes, B boxes
``(x, y, sqrt w, sqrt h, confidence)`` and C class probabilities per cell, the sum-squared loss.

A family of its own (not :mod:`..one_stage`, whose members predict per anchor / point with a
background column, nor :mod:`..yolo`, ultralytics' anchor-free YOLOv8 / YOLO11 and their checkpoints):
its raw output is the grid tensor and its codec is the grid's (:mod:`.codec`). Importing it registers
``yolov1_resnet18``.
"""
from __future__ import annotations

from ..zoo import register
from .codec import GridTargets, decode_grid, encode_grid, grid_boxes, responsible_predictors, yolov1_loss
from .yolov1 import YOLOv1, YOLOv1Head, YOLOv1Raw


@register("yolov1_resnet18")
def yolov1_resnet18(*, num_classes: int = 20, norm: str = "bn", trainable_layers: int = 5, **kwargs) -> YOLOv1:
    """YOLO v1 on a ResNet-18 trunk (stride 32, trained from scratch or from an R-CNN's trunk: same
    ``backbone.trunk.*`` names) with the paper's conv + two-FC head; S = 7, B = 2, 448 px input
    (``size=`` for another; ``grid=``, ``num_boxes=``, ``head="conv"`` ...: see :class:`YOLOv1`).
    ``num_classes`` defaults to PASCAL VOC's 20 (the paper's 7 x 7 x 30 output)."""
    from ..backbones.resnet import ResNetBackbone

    trunk = ResNetBackbone(18, norm=norm, trainable_layers=trainable_layers, returned_stages=(4,))
    return YOLOv1(trunk, num_classes, **kwargs)


__all__ = ["GridTargets", "YOLOv1", "YOLOv1Head", "YOLOv1Raw", "decode_grid", "encode_grid", "grid_boxes",
           "responsible_predictors", "yolov1_loss", "yolov1_resnet18"]
