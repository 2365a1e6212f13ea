"""SSDLite (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
sec. 6.2; Howard et al., "Searching for MobileNetV3", ICCV 2019, sec. 6.3 / Table 6): SSD with every
regular convolution of its prediction layers and extra layers replaced by depthwise-separable ones,
on a MobileNetV3 trunk. torchvision's ``ssdlite320_mobilenet_v3_large`` layout:

* Trunk: MobileNetV3-Large with the *reduced tail* (last stage at half the channels: 80 / 480 instead
  of 160 / 960; :class:`~sceneparse.models.backbones.mobilenet.MobileNetV3Backbone`). The first SSD map
  is taken *inside* the last strided block ("C4", the 13th bottleneck of Large, the 9th of Small): the
  output of its 1x1 expansion layer (672 channels at stride 16: 20 x 20 at 320 px); the second map is
  the trunk's last 1x1 conv (480 channels, stride 32: 10 x 10).
* Extra layers: four blocks ``1x1 conv (c/2) -> 3x3 depthwise stride 2 -> 1x1 conv (c)`` (each conv
  with BatchNorm and ReLU6) of ``c = 512, 256, 256, 128`` channels (``width_mult`` scales them, at
  least ``min_depth``): maps of 5, 3, 2, 1 cells. Six maps in all.
* Heads: per map a ``3x3 depthwise conv -> BatchNorm -> ReLU6 -> 1x1 conv`` for the ``C + 1`` class
  scores of each default box and one for its 4 offsets.
* Default boxes: ratios ``{1, 1', 2, 1/2, 3, 1/3}`` (6 per location) on every map, scales linear from
  0.2 to 0.95 (``s'_k = sqrt(s_k s_{k+1})``, ``s_6 = 1``), grid of each map spanning the image (no
  pixel steps): 3234 boxes at 320 px.
* Input: resized to a fixed 320 x 320, ``[0, 1] -> [-1, 1]`` (mean 0.5, std 0.5).
* Matching, loss (smooth-L1 + softmax cross entropy with 3:1 hard negative mining, divided by the
  positives) and inference are SSD's (:class:`~sceneparse.models.one_stage.ssd.SSD`); torchvision's
  SSDlite inference settings: score ``> 0.001``, 300 candidates per class, NMS 0.55, 300 detections.
* Initialisation without pretrained weights (torchvision's): every conv ``N(0, 0.03)``, zero bias.

torchvision's state dict loads through :meth:`SSDLite.torchvision_key_rules` (its trunk is split into
``features.0`` / ``features.1`` around the C4 expansion layer; here the trunk keeps MobileNetV3's
own block indices). ``num_classes=90`` for COCO (torchvision's 91 columns include the background).

Small variant for CPU training: ``ssdlite320_mobilenet_v3_small`` (MobileNetV3-Small with the reduced
tail, C4 = 288-channel expansion of its 9th bottleneck, last conv 288 channels; the paper's Table 6
SSDLite + MobileNetV3-Small), extra layers at half width (256, 128, 128, 64).
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..backbones.mobilenet import MobileNetV3Backbone
from ..heads.rpn import flatten_levels
from ..layers.conv import ConvNormAct
from ..zoo import register
from .ssd import SSD, DefaultBoxes

#: BatchNorm of torchvision's SSDlite (trunk, extra layers and heads): eps 1e-3, momentum 0.03.
SSDLITE_BN_EPS, SSDLITE_BN_MOMENTUM = 1e-3, 0.03


def normal_init_(module: nn.Module, std: float = 0.03) -> nn.Module:
    """Every conv of ``module``: weights ``N(0, std)``, bias 0 (SSDlite without pretrained weights)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class ExtraBlock(nn.Sequential):
    """``1x1 conv (out/2) -> 3x3 depthwise, stride 2 -> 1x1 conv (out)``, each with BatchNorm + ReLU6:
    one SSDLite extra layer (halves the map: ``ceil(n / 2)`` cells)."""

    def __init__(self, in_channels: int, out_channels: int, *, bn_eps: float = SSDLITE_BN_EPS,
                 bn_momentum: float = SSDLITE_BN_MOMENTUM):
        mid = out_channels // 2
        kw = dict(act=nn.ReLU6, bn_eps=bn_eps, bn_momentum=bn_momentum)
        super().__init__(ConvNormAct(in_channels, mid, 1, **kw),
                         ConvNormAct(mid, mid, 3, stride=2, groups=mid, **kw),
                         ConvNormAct(mid, out_channels, 1, **kw))
        self.out_channels = out_channels


class PredictionBlock(nn.Module):
    """``3x3 depthwise conv -> BatchNorm -> ReLU6 -> 1x1 conv (with bias)``: SSDLite's separable
    replacement of SSD's 3x3 prediction conv (``9 c + c v`` multiply-adds per cell instead of ``9 c v``)."""

    def __init__(self, in_channels: int, out_channels: int, *, bn_eps: float = SSDLITE_BN_EPS,
                 bn_momentum: float = SSDLITE_BN_MOMENTUM):
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, 3, groups=in_channels, act=nn.ReLU6, bn_eps=bn_eps,
                                     bn_momentum=bn_momentum)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class SSDLiteHead(nn.Module):
    """One :class:`PredictionBlock` per map for the class scores (``A_k (C + 1)`` channels) and one
    for the offsets (``4 A_k``) -> ``(cls_logits [B, N, C + 1], box_regression [B, N, 4], None)``."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_columns: int):
        super().__init__()
        self.num_columns = int(num_columns)
        self.cls_logits = nn.ModuleList(PredictionBlock(c, a * num_columns) for c, a in zip(in_channels, num_anchors))
        self.bbox_pred = nn.ModuleList(PredictionBlock(c, a * 4) for c, a in zip(in_channels, num_anchors))
        normal_init_(self)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor, None]:
        cls = [m(f) for m, f in zip(self.cls_logits, features)]
        box = [m(f) for m, f in zip(self.bbox_pred, features)]
        return flatten_levels(cls, self.num_columns), flatten_levels(box, 4), None


class SSDLiteFeatures(nn.Module):
    """MobileNetV3 trunk split at C4 + :class:`ExtraBlock` s -> six maps, finest first.

    Args:
        body: the trunk; its last strided block (``stage_indices[-2]``, "C4") must not be residual.
        extra_depths: output channels of the extra layers (SSDLite: 512, 256, 256, 128).
        width_mult, min_depth: the extra layers get ``max(min_depth, int(d * width_mult))`` channels.

    Attributes:
        c4: index of the C4 block in ``body.trunk``; out_channels: channels of the six maps.
    """

    def __init__(self, body: MobileNetV3Backbone, *, extra_depths: Sequence[int] = (512, 256, 256, 128),
                 width_mult: float = 1.0, min_depth: int = 16, bn_eps: float = SSDLITE_BN_EPS,
                 bn_momentum: float = SSDLITE_BN_MOMENTUM):
        super().__init__()
        self.body = body
        self.c4 = body.stage_indices[-2]
        c4 = body.trunk[self.c4]
        if c4.use_res_connect or len(c4.block) < 2:
            raise ValueError(f"block {self.c4} of the trunk (C4) must be a strided block with an expansion layer")
        depths = [max(int(min_depth), int(d * width_mult)) for d in extra_depths]
        chans = [body.trunk[-1].out_channels] + depths
        self.extra = nn.ModuleList(ExtraBlock(a, b, bn_eps=bn_eps, bn_momentum=bn_momentum)
                                   for a, b in zip(chans[:-1], chans[1:]))
        normal_init_(self.extra)
        self.out_channels = [c4.block[0].out_channels, chans[0]] + depths

    def forward(self, x: Tensor) -> list[Tensor]:
        trunk = self.body.trunk
        for block in trunk[: self.c4]:
            x = block(x)
        c4 = trunk[self.c4].block
        x = c4[0](x)  # the expansion layer: first map
        out = [x]
        for layer in c4[1:]:  # depthwise (stride 2), squeeze-excite, projection (no residual)
            x = layer(x)
        for block in trunk[self.c4 + 1:]:
            x = block(x)
        out.append(x)
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


def ssdlite_key_rules(c4: int) -> tuple[tuple[str, Callable[[re.Match], str]], ...]:
    """torchvision SSDlite keys -> sceneparse's, for a trunk whose C4 block is ``trunk.<c4>``.

    torchvision: ``backbone.features.0`` = blocks ``0..c4-1`` + C4's expansion layer (``.c4.``),
    ``backbone.features.1`` = C4's remaining layers (``.0.<j>``, original indices) + blocks ``c4+1..``
    (``.<k>`` = block ``c4 + k``); ``Conv2dNormActivation`` children ``0`` / ``1`` are ``conv`` /
    ``bn`` here; prediction blocks ``.0`` / ``.1`` are ``depthwise`` / ``pointwise``."""
    def trunk0(m: re.Match) -> str:
        i = int(m[1])
        return f"backbone.body.trunk.{c4}.block.0.{m[2]}" if i == c4 else f"backbone.body.trunk.{i}.{m[2]}"

    cna = {"0": "conv", "1": "bn"}
    return (
        (r"^backbone\.features\.0\.(\d+)\.(.+)$", trunk0),
        (r"^backbone\.features\.1\.0\.(.+)$", lambda m: f"backbone.body.trunk.{c4}.block.{m[1]}"),
        (r"^backbone\.features\.1\.(\d+)\.(.+)$", lambda m: f"backbone.body.trunk.{c4 + int(m[1])}.{m[2]}"),
        (r"^backbone\.extra\.(\d+)\.(\d+)\.([01])\.(.+)$",
         lambda m: f"backbone.extra.{m[1]}.{m[2]}.{cna[m[3]]}.{m[4]}"),
        (r"^head\.(classification|regression)_head\.module_list\.(\d+)\.0\.([01])\.(.+)$",
         lambda m: f"head.{'cls_logits' if m[1] == 'classification' else 'bbox_pred'}.{m[2]}.depthwise."
                   f"{cna[m[3]]}.{m[4]}"),
        (r"^head\.(classification|regression)_head\.module_list\.(\d+)\.1\.(.+)$",
         lambda m: f"head.{'cls_logits' if m[1] == 'classification' else 'bbox_pred'}.{m[2]}.pointwise.{m[3]}"),
    )


class SSDLite(SSD):
    """SSD with :class:`SSDLiteFeatures` and :class:`SSDLiteHead` (module docstring); the matching,
    hard-negative loss and inference are :class:`~sceneparse.models.one_stage.ssd.SSD`'s."""

    def __init__(self, backbone: SSDLiteFeatures, num_classes: int, default_boxes: DefaultBoxes, *,
                 size: tuple[int, int] = (320, 320), image_mean: Sequence[float] = (0.5, 0.5, 0.5),
                 image_std: Sequence[float] = (0.5, 0.5, 0.5), score_thresh: float = 0.001, nms_thresh: float = 0.55,
                 detections_per_img: int = 300, topk_candidates: int = 300, **kwargs):
        head = SSDLiteHead(backbone.out_channels, default_boxes.num_anchors_per_location(), num_classes + 1)
        super().__init__(backbone, num_classes, default_boxes, size=size, image_mean=image_mean, image_std=image_std,
                         head=head, score_thresh=score_thresh, nms_thresh=nms_thresh,
                         detections_per_img=detections_per_img, topk_candidates=topk_candidates, **kwargs)

    def torchvision_key_rules(self):
        """torchvision SSDlite state-dict keys -> this model's (:func:`ssdlite_key_rules`)."""
        return ssdlite_key_rules(self.backbone.c4)


def _ssdlite(arch: str, num_classes: int, *, size: int | tuple[int, int], trainable_layers: int, norm: str,
             extra_width: float, **kwargs) -> SSDLite:
    body = MobileNetV3Backbone(arch=arch, reduced_tail=True, norm=norm, bn_eps=SSDLITE_BN_EPS,
                               bn_momentum=SSDLITE_BN_MOMENTUM, trainable_layers=trainable_layers)
    normal_init_(body)
    size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    boxes = DefaultBoxes([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    return SSDLite(SSDLiteFeatures(body, width_mult=extra_width), num_classes, boxes, size=size, **kwargs)


@register("ssdlite320_mobilenet_v3_large")
def ssdlite320_mobilenet_v3_large(*, num_classes: int = 90, size: int | tuple[int, int] = 320,
                                  trainable_layers: int = 6, norm: str = "bn", **kwargs) -> SSDLite:
    """torchvision's ``ssdlite320_mobilenet_v3_large``: MobileNetV3-Large (reduced tail) + SSDLite extra
    layers and heads, 3234 default boxes at 320 px (3.44 M parameters with 90 classes). ``norm``: the
    trunk's BatchNorm (``bn``, torchvision's; ``frozen_bn`` for fine-tuning with small batches)."""
    return _ssdlite("large", num_classes, size=size, trainable_layers=trainable_layers, norm=norm, extra_width=1.0,
                    **kwargs)


@register("ssdlite320_mobilenet_v3_small")
def ssdlite320_mobilenet_v3_small(*, num_classes: int = 90, size: int | tuple[int, int] = 320,
                                  trainable_layers: int = 6, norm: str = "bn", extra_width: float = 0.5,
                                  **kwargs) -> SSDLite:
    """The CPU-sized SSDLite: MobileNetV3-Small (reduced tail) trunk, extra layers at ``extra_width``
    (0.5: 256, 128, 128, 64 channels), SSDLite heads, 320 px (``size`` to change it)."""
    return _ssdlite("small", num_classes, size=size, trainable_layers=trainable_layers, norm=norm,
                    extra_width=extra_width, **kwargs)


__all__ = ["ExtraBlock", "PredictionBlock", "SSDLite", "SSDLiteFeatures", "SSDLiteHead", "normal_init_",
           "ssdlite320_mobilenet_v3_large", "ssdlite320_mobilenet_v3_small", "ssdlite_key_rules"]
