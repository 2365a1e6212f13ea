"""Tiny stand-in models for the tasks whose families are still to come (pose, panoptic, promptable).

They are real :class:`~sceneparse.models.base.SceneModel` subclasses -- they declare a
:class:`ModelInfo` and go through the same ``predict`` as every family -- so the engine's side of each
task (evaluation, prediction files, checkpoints) is exercised before any family lands.

* :class:`OracleModel`: answers each image with a result prepared for it (looked up by the image's
  pixels, so batch order and file order do not matter). Scores of perturbed ground truth are known.
* :class:`BoxPromptModel`: a promptable model that answers each box prompt with the box's mask.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from sceneparse.models.base import InferenceSettings, ModelInfo, SceneModel, apply_settings
from sceneparse.structures.instances import Instances


def image_key(image: torch.Tensor) -> str:
    """The identity of a decoded image: its 8-bit pixels."""
    px = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    return hashlib.sha1(px.numpy().tobytes()).hexdigest()


class OracleModel(SceneModel):
    """``predict`` returns ``results[image_key(image)]`` (``info`` as given)."""

    def __init__(self, info: ModelInfo, results: dict[str, object]):
        super().__init__()
        self._info, self.results = info, results
        self.register_buffer("anchor", torch.zeros(1))  # a device to live on

    @property
    def info(self) -> ModelInfo:
        return self._info

    def infer(self, images, settings: InferenceSettings, **options):
        return [apply_settings(self.results[image_key(im)], settings) for im in images]


class BoxPromptModel(SceneModel):
    """Promptable stand-in: each box prompt gets the filled box as its mask (score 1). Without
    prompts (``predict(images)``) it finds nothing."""

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("promptable", 1, iou_types=("bbox", "segm"), options=("prompts",))

    def infer(self, images, settings: InferenceSettings, prompts=None):
        out = []
        for i, im in enumerate(images):
            h, w = im.shape[-2:]
            boxes = torch.zeros((0, 4)) if prompts is None else prompts[i].boxes.float().cpu()
            ys = torch.arange(h, dtype=torch.float32)[None, :, None] + 0.5
            xs = torch.arange(w, dtype=torch.float32)[None, None, :] + 0.5
            masks = (xs >= boxes[:, 0, None, None]) & (xs < boxes[:, 2, None, None]) & \
                (ys >= boxes[:, 1, None, None]) & (ys < boxes[:, 3, None, None])
            n = boxes.shape[0]
            out.append(Instances((h, w), boxes=boxes, labels=torch.zeros(n, dtype=torch.long),
                                 scores=torch.ones(n), masks=masks))
        return out


class NoGraphModel(SceneModel):
    """A model that declares itself and nothing more (no export graph)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("detect", 1, iou_types=("bbox",))


class TinyPanoptic(SceneModel):
    """A trainable panoptic stand-in (the "semantic, then one segment per class" baseline): two
    convolutions label the pixels (cross-entropy against the semantic map the panoptic ground truth
    implies); each class present in an image becomes one segment."""

    def __init__(self, num_classes: int, *, min_size: int = 64, max_size: int = 64):
        from sceneparse.models.preprocess import Preprocessor

        super().__init__()
        self.num_classes = int(num_classes)
        self.preprocessor = Preprocessor(min_size, max_size, size_divisible=1)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, self.num_classes, 1))

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("panoptic", self.num_classes, data="panoptic", size=self.preprocessor.policy())

    def forward(self, batch, targets=None):
        return self.net(batch.tensor)

    def loss(self, raw, targets):
        labels = torch.full(raw.shape[:1] + raw.shape[2:], 255, dtype=torch.long, device=raw.device)
        for i, t in enumerate(targets):
            sem = t.panoptic.semantic(255).labels
            labels[i, : sem.shape[0], : sem.shape[1]] = sem
        return {"loss_ce": nn.functional.cross_entropy(raw, labels, ignore_index=255)}

    def postprocess(self, raw, batch):
        from sceneparse.structures.segmaps import PanopticMap, SegmentInfo

        out = []
        for logits, (h, w), size in zip(raw, batch.image_sizes, batch.original_sizes):
            up = nn.functional.interpolate(logits[None, :, :h, :w], size=tuple(size), mode="bilinear",
                                           align_corners=False)[0]
            labels = up.argmax(0)
            present = torch.unique(labels).tolist()
            out.append(PanopticMap(labels + 1, [SegmentInfo(c + 1, -1, c) for c in present]))
        return out


def standin_panoptic(num_classes: int = 1, *, min_size: int = 64, max_size: int = 64) -> TinyPanoptic:
    return TinyPanoptic(num_classes, min_size=min_size, max_size=max_size)


def register_standins() -> None:
    """Put the trainable stand-ins in the zoo (once per process)."""
    from sceneparse.models import zoo

    if "standin_panoptic" not in zoo._REGISTRY:
        zoo.register("standin_panoptic")(standin_panoptic)
