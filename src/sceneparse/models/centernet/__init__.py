"""The CenterNet family ("Objects as Points"): detection as class-heatmap peaks at box centres.
Importing it registers ``centernet_resnet18`` (ResNet-18 + three up-convolutions, output stride 4, the
paper's ResNet variant) and ``centernet_resnet18_fpn`` (the R-CNN family's ResNet-18 + FPN trunk, heads on
P2)."""
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


@register("centernet_resnet18_fpn")
def centernet_resnet18_fpn(*, num_classes: int, norm: str = "bn", trainable_layers: int = 5, trunk_stages: int = 3,
                           fpn_channels: int = 128, **kwargs) -> CenterNet:
    """CenterNet on sceneparse's FPN trunk: ResNet-18 stages 1..``trunk_stages`` + an FPN of
    ``fpn_channels`` (no extra levels), the heads on its stride-4 level P2. The trunk and pyramid are
    those of ``fasterrcnn_resnet18_fpn`` / ``maskrcnn_resnet18_fpn`` (same names and defaults as the
    demo's Mask R-CNN: 3 stages, 128 channels), so a trained R-CNN's trunk + FPN load into it
    (``sceneparse train ... model.weights=RCNN.pt`` loads the tensors whose names and shapes fit)."""
    from ..backbones.resnet import ResNetBackbone
    from ..necks.fpn import FPN

    if trunk_stages not in (2, 3, 4):
        raise ValueError(f"trunk_stages must be 2, 3 or 4, got {trunk_stages}")
    trunk = ResNetBackbone(18, norm=norm, trainable_layers=trainable_layers,
                           returned_stages=tuple(range(1, trunk_stages + 1)))
    return CenterNet(trunk, num_classes, neck=FPN(trunk.out_channels, fpn_channels, extra=None), **kwargs)


__all__ = ["CenterNet", "CenterNetRaw", "UpsampleStage", "centernet_resnet18", "centernet_resnet18_fpn"]
