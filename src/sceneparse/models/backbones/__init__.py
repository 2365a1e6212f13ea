"""Backbones: image -> list of feature maps (finest first), each with ``out_channels`` and ``strides``."""
from .mobilenet import MobileNetV3Backbone
from .resnet import ResNetBackbone, norm_layer
from .vgg import SSDVGG16Backbone

__all__ = ["ResNetBackbone", "MobileNetV3Backbone", "SSDVGG16Backbone", "norm_layer"]
