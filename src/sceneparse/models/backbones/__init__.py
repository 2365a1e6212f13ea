"""Backbones: image -> list of feature maps (finest first), each with ``out_channels`` and ``strides``."""
from .hourglass import StackedHourglass
from .mobilenet import MobileNetV3Backbone
from .resnet import ResNetBackbone, norm_layer
from .vgg import SSDVGG16Backbone

__all__ = ["ResNetBackbone", "MobileNetV3Backbone", "SSDVGG16Backbone", "StackedHourglass", "norm_layer"]
