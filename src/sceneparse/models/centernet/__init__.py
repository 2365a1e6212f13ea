"""The CenterNet family ("Objects as Points"): detection as class-heatmap peaks at box centres.
Importing it registers ``centernet_resnet18`` (ResNet-18 + three up-convolutions, output stride 4)."""
from __future__ import annotations

from ..zoo import register
from .centernet import CenterNet, CenterNetRaw, UpsampleStage


@register("centernet_resnet18")
def centernet_resnet18(*, num_classes: int, norm: str = "bn", trainable_layers: int = 5,
                       **kwargs) -> CenterNet:
    """CenterNet's ResNet-18 variant (up-convolutions of 256, 128, 64 channels, heads of 64, 512 px
    long side). ``deformable=True`` uses the paper's deformable 3x3 convolutions."""
    from ..backbones.resnet import ResNetBackbone

    trunk = ResNetBackbone(18, norm=norm, trainable_layers=trainable_layers, returned_stages=(4,))
    return CenterNet(trunk, num_classes, **kwargs)


__all__ = ["CenterNet", "CenterNetRaw", "UpsampleStage", "centernet_resnet18"]
