"""OpenPose body (Cao, Simon, Wei, Sheikh: *Realtime Multi-Person 2D Pose Estimation using Part
Affinity Fields*, CVPR 2017): bottom-up, the whole image in one pass.

Network (Fig. 3 of the paper, the 2017 COCO model): the first ten layers of VGG-19 (``conv1_1`` ..
``conv4_2``, three 2x2 max-pools: stride 8) and two CPM layers (``conv4_3_CPM`` 256, ``conv4_4_CPM``
128 channels) give the features ``F``. Stage 1 has two branches of three 3x3 and two 1x1
convolutions: branch 1 predicts the part affinity fields ``L`` (38 = 19 limbs x (x, y)), branch 2
the part confidence maps ``S`` (19 = 18 parts + background). Stages 2..6 take ``cat(L, S, F)``
(38 + 19 + 128 = 185 channels) through five 7x7 and two 1x1 convolutions per branch. The output is
the last stage's ``(L, S)`` at 1/8 of the input.

The layer names and the state-dict layout are those of pytorch-openpose's ``bodypose_model`` (which
``controlnet_aux`` ships): ``model0`` (VGG + CPM), ``model{t}_1`` (PAF branch of stage ``t``) and
``model{t}_2`` (heatmap branch). The widely used ``body_pose_model.pth`` holds the same tensors with
the block prefix dropped (``conv1_1.weight``, ``Mconv7_stage6_L2.bias``); both load
(:meth:`OpenPoseBody.torchvision_key_rules` adds the prefix). Like ``bodypose_model``, the last
heatmap convolution (``Mconv7_stage6_L2``) is followed by a ReLU (its list of layers without ReLU names
``Mconv7_stage6_L1`` twice), so the heatmaps it returns are non-negative; ``heatmap_relu=False`` drops
it (the Caffe model's output). The input is a BGR image scaled ``/ 256 - 0.5`` (pytorch-openpose's
preprocessing; padding colour 128 -> 0).

Parsing (:mod:`.paf_parsing`) turns the maps of the whole image into people; :meth:`OpenPoseBody.infer`
runs the whole pipeline (resize so the image height is ``scale * 368``, pad to a multiple of 8, the
network, maps back to image size, parse) and returns COCO-17 people.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError, ExportError
from ...structures.instances import Instances
from ...structures.keypoints import COCO_PERSON
from ..base import InferenceSettings, ModelInfo, SceneModel, SizePolicy, apply_settings
from ..zoo import register
from .paf_parsing import parse_people, people_to_coco

__all__ = ["OpenPoseBody", "openpose_body", "BODY_KEY_RULES"]

#: (name, in, out, kernel) of the VGG-19 front and the CPM layers; ``pool`` = 2x2 max-pool, stride 2
_FRONT = (("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), ("pool1_stage1",),
          ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3), ("pool2_stage1",),
          ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3), ("conv3_4", 256, 256, 3),
          ("pool3_stage1",),
          ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3),
          ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3))
NUM_PAF = 38
NUM_HEATMAPS = 19


def _block(layers: Sequence[tuple], no_relu: set[str]) -> nn.Sequential:
    """Convolutions (``padding = kernel // 2``, each followed by a ReLU unless in ``no_relu``) and max-pools."""
    mods: list[tuple[str, nn.Module]] = []
    for spec in layers:
        name = spec[0]
        if name.startswith("pool"):
            mods.append((name, nn.MaxPool2d(2, 2, 0)))
            continue
        _, cin, cout, k = spec
        mods.append((name, nn.Conv2d(cin, cout, k, 1, k // 2)))
        if name not in no_relu:
            mods.append((f"relu_{name}", nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(mods))


def _stage_layers(t: int, branch: int, out: int) -> tuple[tuple, ...]:
    if t == 1:
        return ((f"conv5_1_CPM_L{branch}", 128, 128, 3), (f"conv5_2_CPM_L{branch}", 128, 128, 3),
                (f"conv5_3_CPM_L{branch}", 128, 128, 3), (f"conv5_4_CPM_L{branch}", 128, 512, 1),
                (f"conv5_5_CPM_L{branch}", 512, out, 1))
    cin = NUM_PAF + NUM_HEATMAPS + 128
    return ((f"Mconv1_stage{t}_L{branch}", cin, 128, 7),) + tuple(
        (f"Mconv{i}_stage{t}_L{branch}", 128, 128, 7) for i in range(2, 6)) + (
        (f"Mconv6_stage{t}_L{branch}", 128, 128, 1), (f"Mconv7_stage{t}_L{branch}", 128, out, 1))


def _prefix(name: str) -> str:
    """The ``bodypose_model`` block of a ``body_pose_model.pth`` layer name."""
    if name.startswith("conv5_"):
        return f"model1_{name[-1]}"
    if name.startswith("Mconv"):
        t = name.split("_stage")[1][0]
        return f"model{t}_{name[-1]}"
    return "model0"


#: ``body_pose_model.pth`` key -> this model's key (``conv4_2.weight`` -> ``model0.conv4_2.weight``)
BODY_KEY_RULES = ((r"^((?:conv\d_\d(?:_CPM)?(?:_L[12])?|Mconv\d_stage\d_L[12]))\.(weight|bias)$",
                   lambda m: f"{_prefix(m.group(1))}.{m.group(1)}.{m.group(2)}"),)


class OpenPoseBody(SceneModel):
    """The OpenPose body network and its parser (module docstring).

    Args:
        num_classes: must be 1 (person).
        heatmap_relu: keep ``bodypose_model``'s ReLU after the last heatmap layer.
        scales: image heights at inference, as fractions of ``boxsize`` (pytorch-openpose: ``(0.5,)``;
            the paper's multi-scale test ``(0.5, 1.0, 1.5, 2.0)``); the maps are averaged.
        boxsize: the reference height (368).
        peak_threshold, limb_threshold: pytorch-openpose's ``thre1`` (part peaks) and ``thre2`` (PAF
            alignment of a limb sample).
        min_parts, min_part_score: people with fewer parts, or a lower total score per part, are dropped.
    """

    def __init__(self, num_classes: int = 1, *, heatmap_relu: bool = True, scales: Sequence[float] = (0.5,),
                 boxsize: int = 368, peak_threshold: float = 0.1, limb_threshold: float = 0.05,
                 min_parts: int = 4, min_part_score: float = 0.4):
        super().__init__()
        if num_classes != 1:
            raise ConfigError(f"OpenPose body estimates people (one class), got num_classes={num_classes}")
        if not scales or any(float(s) <= 0 for s in scales):
            raise ConfigError(f"scales must be positive fractions of boxsize, got {scales!r}")
        self.num_classes = 1
        self.model0 = _block(_FRONT, set())
        for t in range(1, 7):
            last_paf, last_heat = ("conv5_5_CPM_L1", "conv5_5_CPM_L2") if t == 1 else \
                (f"Mconv7_stage{t}_L1", f"Mconv7_stage{t}_L2")
            heat_no_relu = {last_heat} if (t < 6 or not heatmap_relu) else set()
            setattr(self, f"model{t}_1", _block(_stage_layers(t, 1, NUM_PAF), {last_paf}))
            setattr(self, f"model{t}_2", _block(_stage_layers(t, 2, NUM_HEATMAPS), heat_no_relu))
        self.heatmap_relu = bool(heatmap_relu)
        self.scales = tuple(float(s) for s in scales)
        self.boxsize = int(boxsize)
        self.peak_threshold = float(peak_threshold)
        self.limb_threshold = float(limb_threshold)
        self.min_parts = int(min_parts)
        self.min_part_score = float(min_part_score)

    @staticmethod
    def torchvision_key_rules():
        """Key rules for foreign state dicts (the zoo applies them): ``body_pose_model.pth``'s flat names
        get their block prefix; ``bodypose_model`` state dicts match as they are."""
        return BODY_KEY_RULES

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("pose", 1, iou_types=("keypoints",), data="keypoints",
                         class_names=tuple(self.class_names) if len(self.class_names) == 1 else ("person",),
                         keypoints=COCO_PERSON,
                         # the image height per scale; the input normalisation (BGR / 256 - 0.5) is
                         # not a mean / std of [0, 1] RGB, so none is declared
                         size=SizePolicy(tuple(int(round(s * self.boxsize)) for s in self.scales),
                                         10 * self.boxsize, 8),
                         conf=0.0, iou=0.5, max_det=100, options=(),
                         export_outputs=("pafs", "heatmaps"))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [N, 3, H, W]``: BGR ``/ 256 - 0.5`` -> ``(pafs [N, 38, H/8, W/8], heatmaps [N, 19, H/8, W/8])``
        of the last stage (``bodypose_model``'s ``(out6_1, out6_2)``)."""
        feats = self.model0(x)
        paf = getattr(self, "model1_1")(feats)
        heat = getattr(self, "model1_2")(feats)
        for t in range(2, 7):
            z = torch.cat([paf, heat, feats], 1)
            paf = getattr(self, f"model{t}_1")(z)
            heat = getattr(self, f"model{t}_2")(z)
        return paf, heat

    def maps(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Full-resolution ``(pafs [38, H, W], heatmaps [19, H, W])`` of one RGB ``image [3, H, W]`` in
        ``[0, 1]``: per scale, the image resized (bicubic) to height ``scale * boxsize``, padded right /
        bottom to a multiple of 8 with grey (128), run through the network; the maps upsampled 8x
        (bicubic), the padding cut off, resized to ``H x W``; averaged over the scales."""
        H, W = int(image.shape[-2]), int(image.shape[-1])
        bgr = image.to(self.model0[0].weight.device).float().flip(0) * 255.0
        paf_sum = torch.zeros(NUM_PAF, H, W, device=bgr.device)
        heat_sum = torch.zeros(NUM_HEATMAPS, H, W, device=bgr.device)
        for s in self.scales:
            f = s * self.boxsize / H
            h, w = max(1, int(round(H * f))), max(1, int(round(W * f)))
            x = F.interpolate(bgr[None], size=(h, w), mode="bicubic", align_corners=False, antialias=f < 1)
            ph, pw = (-h) % 8, (-w) % 8
            x = F.pad(x, (0, pw, 0, ph), value=128.0) / 256.0 - 0.5
            paf, heat = self(x)
            for out, acc in ((paf, paf_sum), (heat, heat_sum)):
                up = F.interpolate(out, scale_factor=8, mode="bicubic", align_corners=False)[..., :h, :w]
                acc += F.interpolate(up, size=(H, W), mode="bicubic", align_corners=False)[0] / len(self.scales)
        return paf_sum, heat_sum

    def postprocess(self, pafs: Tensor, heatmaps: Tensor) -> Instances:
        """Parse full-resolution maps of one image into COCO-17 people (:func:`.paf_parsing.parse_people`
        then :func:`.paf_parsing.people_to_coco`)."""
        people = parse_people(heatmaps, pafs, peak_threshold=self.peak_threshold, limb_threshold=self.limb_threshold,
                              min_parts=self.min_parts, min_part_score=self.min_part_score)
        return people_to_coco(people, (int(heatmaps.shape[-2]), int(heatmaps.shape[-1])))

    def infer(self, images: list[Tensor], settings: InferenceSettings, **options) -> list[Instances]:
        """Maps (:meth:`maps`) then parsing per image; ``imgsz`` is not used (``scales`` set the size)."""
        out = []
        with torch.no_grad():
            for im in images:
                pafs, heat = self.maps(im)
                out.append(apply_settings(self.postprocess(pafs, heat), settings))
        return out

    def training_losses(self, images, targets):
        raise ConfigError("training OpenPose (stage-wise L2 on rendered maps) is not implemented; "
                          "load the released body_pose_model.pth with build('openpose_body', weights=PATH)")

    def export_graph(self) -> nn.Module:
        raise ExportError("the OpenPose parser (peaks, bipartite matching, assembly) is not a graph; export "
                          "the network with torch.onnx on the module itself", model=type(self).__name__)


@register("openpose_body")
def openpose_body(*, num_classes: int = 1, **kwargs) -> OpenPoseBody:
    """OpenPose's 2017 COCO body model (VGG-19 + 6 stages, 18 parts, 19 limbs); ``weights=`` the released
    ``body_pose_model.pth`` (or a ``bodypose_model`` state dict)."""
    return OpenPoseBody(num_classes, **kwargs)
