"""SimpleBaseline top-down pose estimation (Xiao, Wu, Wei: *Simple Baselines for Human Pose Estimation
and Tracking*, ECCV 2018).

Each person box is cropped by a similarity transform to the network input (``256 x 192`` at full
size: box padded to the 3:4 aspect ratio and enlarged 1.25x, :mod:`.affine`), a ResNet trunk
(stride 32) is followed by three ``4 x 4`` stride-2 deconvolutions (256 channels, BatchNorm, ReLU;
back to stride 4) and a ``1 x 1`` convolution to ``K`` heatmaps (``64 x 48``). Training regresses
Gaussian heatmaps (sigma 2 cells at 64 x 48, :func:`sceneparse.ops.keypoint_codec.encode`) with a
mean squared error weighted by the target weights (0 for unlabelled keypoints). At test time the
heatmaps (optionally averaged with those of the mirrored crop: flip test) are decoded (argmax with
the quarter-cell shift as the paper, or DARK / integral) and mapped back to the image through the
inverse affine. The person score is the box score times the mean of the keypoint peak values above
0.2 (the paper's rescoring; all of them where none is above).

Person boxes at prediction: ``predict(images, boxes=[Tensor[M_i, 4], ...])`` (e.g. ground-truth or
another detector's boxes, image pixels), else the boxes of the ``detector`` checkpoint given to the
constructor (a sceneparse checkpoint of any model with instance results, rebuilt through the zoo; its
detections of the class named ``person``, or of every class if none is so named, with score above
``detector_conf``), else the whole image as one person box.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ...errors import CheckpointError, ConfigError, ExportError
from ...ops import keypoint_codec
from ...structures.instances import Instances
from ...structures.keypoints import COCO_PERSON, KeypointSet
from ...structures.target import Target
from ..backbones import ResNetBackbone
from ..base import InferenceSettings, ModelInfo, SceneModel, SizePolicy, apply_settings
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..zoo import register
from .affine import apply_affines, box_to_center_size, crop_affines, invert_affines, warp_crops

__all__ = ["SIMPLEBASELINE_KEY_RULES", "DeconvHead", "HeatmapTopDown", "PersonCrops", "SimpleBaseline", "TopDownPose",
           "simplebaseline_resnet18", "simplebaseline_resnet50"]


#: released SimpleBaseline / mmpose key -> this model's key
SIMPLEBASELINE_KEY_RULES = (
    (r"^(?:module\.)?(?:backbone\.)?(conv1|bn1|layer[1-4])\.(.+)$",
     lambda m: f"backbone.trunk.{m.group(1)}.{m.group(2)}"),
    (r"^(?:module\.)?(?:keypoint_head\.|head\.)?(deconv_layers|final_layer)\.(.+)$",
     lambda m: f"head.{m.group(1)}.{m.group(2)}"),
)


class DeconvHead(nn.Module):
    """SimpleBaseline's head: ``num_layers`` x (``ConvTranspose2d(4, stride 2, padding 1)`` -> BN ->
    ReLU), each doubling the resolution, then a ``1 x 1`` convolution to ``num_keypoints`` maps.
    Initialised as the paper's code: deconvolutions and the final layer ``N(0, 0.001)``, BN ``(1, 0)``.
    Module names follow the paper's code (``deconv_layers``, ``final_layer``)."""

    def __init__(self, in_channels: int, num_keypoints: int, channels: int = 256, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_layers):
            layers += [nn.ConvTranspose2d(c, channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c = channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(c, num_keypoints, 1)
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.final_layer(self.deconv_layers(x))


@dataclass
class PersonCrops:
    """Person crops of a batch of images.

    Attributes:
        tensor: ``float32 [M, 3, H_in, W_in]`` normalised crops.
        affines: ``[M, 2, 3]`` image px -> crop px of each crop.
        image_index: ``int64 [M]`` the image each crop comes from.
        boxes: ``[M, 4]`` the person boxes (image px, XYXY).
        box_scores: ``[M]`` their scores (1 for given boxes).
        image_sizes: ``(h, w)`` of every image of the batch (also those without crops).
        flipped: ``bool [M]`` crops mirrored left-right (training augmentation).
    """

    tensor: Tensor
    affines: Tensor
    image_index: Tensor
    boxes: Tensor
    box_scores: Tensor
    image_sizes: list[tuple[int, int]]
    flipped: Tensor

    def __len__(self) -> int:
        return int(self.tensor.shape[0])


class TopDownPose(SceneModel):
    """The top-down pipeline every single-person pose model shares (SimpleBaseline, DeepPose, CPM,
    Stacked Hourglass): person boxes -> affine crops (:mod:`.affine`) -> the network -> keypoints in the
    crop -> image pixels through the inverse affine -> :class:`Instances` per image.

    A subclass builds its network and implements two hooks:

    * :meth:`crop_losses` ``(images, crops, keypoints) -> dict[str, Tensor]``: the training losses of
      the person ``crops`` whose keypoints (crop px, left/right swapped in mirrored crops) are given;
    * :meth:`estimate` ``(images, crops, flip_test, decode) -> (xy [M, K, 2] crop px, scores [M, K])``.

    Everything else -- which people train, the crops and their augmentation, where the boxes come from at
    prediction (``boxes=`` / ``box_scores=``, the ``detector`` checkpoint, or the whole image), the
    rescoring, results and the exported graph -- lives here once.

    Args:
        num_classes: must be 1 (person).
        input_size: ``(H_in, W_in)`` of the crops, positive multiples of ``size_multiple``.
        keypoint_set: the keypoint layout (default COCO's 17).
        padding: box enlargement (1.25 as SimpleBaseline).
        scale_jitter, rotation, rotation_prob, flip_prob: training augmentation of the crops (scale
            +-``scale_jitter``, rotation +-``rotation`` degrees with probability ``rotation_prob``,
            mirroring with ``flip_prob``); 0 for deterministic training.
        flip_test: average with the mirrored crop's estimate at test time.
        detector, detector_conf: a sceneparse checkpoint whose detections give the person boxes when
            :meth:`predict` gets none, and their score threshold.
        size_multiple: what the crop sides must be multiples of (the network's stride).
    """

    #: keyword options of :meth:`predict` (:attr:`ModelInfo.options`)
    predict_options: tuple[str, ...] = ("boxes", "box_scores", "flip_test")
    #: names of the training losses (a batch without people returns zeros under the same names)
    loss_names: tuple[str, ...] = ()

    def __init__(self, num_classes: int = 1, *, input_size: Sequence[int] = (256, 192),
                 keypoint_set: KeypointSet = COCO_PERSON, padding: float = 1.25, scale_jitter: float = 0.3,
                 rotation: float = 40.0, rotation_prob: float = 0.6, flip_prob: float = 0.5, flip_test: bool = True,
                 detector: str | None = None, detector_conf: float = 0.3, size_multiple: int = 32):
        super().__init__()
        name = type(self).__name__
        if num_classes != 1:
            raise ConfigError(f"{name} estimates the pose of one class (person), got num_classes={num_classes}")
        h, w = (int(v) for v in input_size)
        if h % size_multiple or w % size_multiple or h <= 0 or w <= 0:
            raise ConfigError(f"input_size must be positive multiples of {size_multiple} (the network's stride), "
                              f"got {input_size}")
        self.num_classes = 1
        self.input_size = (h, w)
        self.keypoint_set = keypoint_set
        self.padding = float(padding)
        self.scale_jitter, self.rotation, self.rotation_prob, self.flip_prob = \
            float(scale_jitter), float(rotation), float(rotation_prob), float(flip_prob)
        self.flip_test = bool(flip_test)
        self.detector_path = None if detector is None else os.fspath(detector)
        self.detector_conf = float(detector_conf)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)
        self._detector: Any = None  # built on first use, never part of this model's state dict

    # ---- contract ---------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return ModelInfo("pose", 1, iou_types=("keypoints",), data="keypoints",
                         class_names=tuple(self.class_names) if len(self.class_names) == 1 else ("person",),
                         keypoints=self.keypoint_set,
                         size=SizePolicy((self.input_size[0],), max(self.input_size), 1, self.input_size,
                                         IMAGENET_MEAN, IMAGENET_STD),
                         conf=0.0, iou=0.5, max_det=100, options=self.predict_options,
                         export_outputs=_WholeImageGraph.output_names, box_input="person")

    def crop(self, images: Sequence[Tensor], boxes: Sequence[Tensor], box_scores: Sequence[Tensor] | None = None,
             *, augment: bool = False) -> PersonCrops:
        """Normalise ``images`` and cut the person crops of ``boxes[i] [M_i, 4]`` (image px) from image ``i``;
        ``augment``: draw the training scale / rotation / flip per crop (torch's RNG)."""
        dev = self.pixel_mean.device
        if len(boxes) != len(images):
            raise ConfigError(f"boxes: one [M, 4] tensor per image expected, got {len(boxes)} for {len(images)} images")
        if box_scores is not None and len(box_scores) != len(images):
            raise ConfigError(f"box_scores: one [M] tensor per image expected, got {len(box_scores)} for "
                              f"{len(images)} images")
        H, W = self.input_size
        tensors, affines, index, all_boxes, all_scores, flips, sizes = [], [], [], [], [], [], []
        for i, (im, b) in enumerate(zip(images, boxes)):
            sizes.append((int(im.shape[-2]), int(im.shape[-1])))
            b = torch.as_tensor(b, dtype=torch.float32, device=dev).reshape(-1, 4)
            if b.shape[0] == 0:
                continue
            c, s = box_to_center_size(b, W / H, self.padding)
            m = b.shape[0]
            rot = flip = None
            if augment:
                s = s * (1 + self.scale_jitter * (2 * torch.rand(m, 1, device=dev) - 1))
                rot = torch.where(torch.rand(m, device=dev) < self.rotation_prob,
                                  self.rotation * (2 * torch.rand(m, device=dev) - 1), torch.zeros(m, device=dev))
                flip = torch.rand(m, device=dev) < self.flip_prob
            a = crop_affines(c, s, self.input_size, rot, flip)
            x = self.normalize(im)
            tensors.append(warp_crops(x, a, self.input_size))
            affines.append(a)
            index.append(torch.full((m,), i, dtype=torch.long, device=dev))
            all_boxes.append(b)
            sc = torch.ones(m, device=dev) if box_scores is None else torch.as_tensor(
                box_scores[i], dtype=torch.float32, device=dev).reshape(m)
            all_scores.append(sc)
            flips.append(torch.zeros(m, dtype=torch.bool, device=dev) if flip is None else flip)
        if not tensors:
            z = torch.zeros(0, device=dev)
            return PersonCrops(torch.zeros(0, 3, H, W, device=dev), torch.zeros(0, 2, 3, device=dev),
                               z.long(), z.reshape(0, 4), z, sizes, z.bool())
        return PersonCrops(torch.cat(tensors), torch.cat(affines), torch.cat(index), torch.cat(all_boxes),
                           torch.cat(all_scores), sizes, torch.cat(flips))

    def normalize(self, image: Tensor) -> Tensor:
        """One ``[3, H, W]`` image in ``[0, 1]`` -> ImageNet-normalised, on the model's device."""
        return (image.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std

    def targets_to_crops(self, targets: Sequence[Target], crops: PersonCrops, people: Sequence[Tensor]) -> Tensor:
        """Keypoints ``[M, K, 3]`` of the cropped people (``people[i]``: their indices in target ``i``) in
        the crop frame; channels of mirrored crops swapped left/right."""
        dev = crops.tensor.device
        kps = [t.instances.keypoints[p].to(dev).float() for t, p in zip(targets, people) if p.numel()]
        if not kps:
            return torch.zeros(0, self.keypoint_set.num_keypoints, 3, device=dev)
        kp = torch.cat(kps)
        xy = apply_affines(crops.affines, kp[..., :2])
        out = torch.cat([xy, kp[..., 2:]], dim=2)
        flip_index = torch.as_tensor(self.keypoint_set.flip_index, device=dev)
        return torch.where(crops.flipped[:, None, None], out[:, flip_index], out)

    @staticmethod
    def training_people(targets: Sequence[Target]) -> tuple[list[Tensor], list[Tensor]]:
        """The people each target trains on (indices) and their boxes: non-crowd instances with a
        positive-size box and at least one labelled keypoint."""
        people, boxes = [], []
        for t in targets:
            inst = t.instances
            if inst.keypoints is None or inst.boxes is None or len(inst) == 0:
                people.append(torch.zeros(0, dtype=torch.long))
                boxes.append(torch.zeros(0, 4))
                continue
            ok = (inst.keypoints[..., 2] > 0).any(dim=1)
            if t.iscrowd is not None:
                ok = ok & ~t.iscrowd.to(ok.device).bool()
            wh = inst.boxes[:, 2:] - inst.boxes[:, :2]
            ok = ok & (wh > 0).all(dim=1)
            p = torch.where(ok)[0]
            people.append(p)
            boxes.append(inst.boxes[p])
        return people, boxes

    def training_losses(self, images: Sequence[Tensor], targets: Sequence[Target]) -> dict[str, Tensor]:
        """Crop every person of :meth:`training_people` (augmented in training mode) and return
        :meth:`crop_losses`. A batch without such people gives zero losses that still reach every
        parameter."""
        people, boxes = self.training_people(targets)
        crops = self.crop(images, boxes, augment=self.training)
        if len(crops) == 0:
            zero = sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)
            return {name: zero for name in self.loss_names}
        keypoints = self.targets_to_crops(targets, crops, people)
        return self.crop_losses(images, crops, keypoints)

    def crop_losses(self, images: Sequence[Tensor], crops: PersonCrops, keypoints: Tensor) -> dict[str, Tensor]:
        """The losses of ``crops`` with ``keypoints [M, K, 3]`` in the crop frame (subclasses)."""
        raise NotImplementedError

    def estimate(self, images: Sequence[Tensor], crops: PersonCrops, flip_test: bool,
                 decode: str | None = None) -> tuple[Tensor, Tensor]:
        """Keypoints ``[M, K, 2]`` (crop px) and their scores ``[M, K]`` of ``crops`` (subclasses)."""
        raise NotImplementedError

    def to_instances(self, crops: PersonCrops, xy: Tensor, kscores: Tensor) -> list[Instances]:
        """Keypoints ``xy [M, K, 2]`` (crop px) and scores ``[M, K]`` of ``crops`` -> image px (inverse
        affine), grouped per image: :class:`Instances` with ``boxes`` (the person boxes), ``labels`` 0,
        ``scores`` (box score x the mean keypoint score above 0.2, all of them where none is above:
        SimpleBaseline's rescoring), ``keypoints [N, K, 3]`` (``v = 1``) and ``keypoint_scores``."""
        xy = apply_affines(invert_affines(crops.affines), xy) if len(crops) else xy
        keypoints = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=2)
        good = kscores > 0.2
        mean_good = torch.where(good.any(1), (kscores * good).sum(1) / good.sum(1).clamp(min=1), kscores.mean(1))
        # floored at 1e-6: the default conf (score > 0) keeps every person whose box was given
        scores = crops.box_scores * mean_good.clamp(min=1e-6)
        out = []
        for i, size in enumerate(crops.image_sizes):
            sel = torch.where(crops.image_index == i)[0]
            out.append(Instances(size, boxes=crops.boxes[sel], labels=torch.zeros(sel.numel(), dtype=torch.long,
                                 device=sel.device), scores=scores[sel], keypoints=keypoints[sel],
                                 keypoint_scores=kscores[sel]))
        return out

    def infer(self, images: list[Tensor], settings: InferenceSettings, *, boxes: Sequence[Tensor] | None = None,
              box_scores: Sequence[Tensor] | None = None, flip_test: bool | None = None,
              decode: str | None = None) -> list[Instances]:
        """Predict with person ``boxes`` (one ``[M_i, 4]`` per image, image px; ``box_scores`` one ``[M_i]``
        per image, default 1), else the detector's boxes, else the whole image. ``flip_test`` / ``decode``
        override the model's settings."""
        if box_scores is not None and boxes is None:
            raise ConfigError("box_scores were given without boxes")
        if boxes is None:
            boxes, box_scores = self.person_boxes(images)
        with torch.no_grad():
            crops = self.crop(images, boxes, box_scores)
            xy, kscores = self.estimate(images, crops, self.flip_test if flip_test is None else bool(flip_test), decode)
            results = self.to_instances(crops, xy, kscores)
        return [apply_settings(r, settings) for r in results]

    # ---- person boxes without ground truth --------------------------------------------------------
    def person_boxes(self, images: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Person boxes and scores per image from the ``detector`` checkpoint, or the whole image."""
        if self.detector_path is None:
            return ([torch.tensor([[0.0, 0.0, float(im.shape[-1]), float(im.shape[-2])]]) for im in images],
                    [torch.ones(1) for _ in images])
        det, person = self._load_detector()
        results = det.predict(images, conf=self.detector_conf)
        boxes, scores = [], []
        for r in results:
            keep = torch.ones(len(r), dtype=torch.bool) if person is None else (r.labels.cpu() == person)
            boxes.append(r.boxes.cpu()[keep])
            scores.append(r.scores.cpu()[keep])
        return boxes, scores

    def _load_detector(self) -> tuple[SceneModel, int | None]:
        if self._detector is None:
            from .. import zoo  # the registry (this module is imported by it)

            path = self.detector_path
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise CheckpointError("person detector checkpoint file not found", path=path) from None
            except Exception as e:  # noqa: BLE001 -- a file that is no checkpoint: say which
                raise CheckpointError(f"cannot read the person detector checkpoint: {zoo.describe_load_error(path, e)}",
                                      path=path) from e
            cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
            model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
            cats = ckpt.get("categories") if isinstance(ckpt, dict) else None
            if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("name"), str) or not cats:
                raise CheckpointError("the person detector must be a sceneparse checkpoint (config.model.name and "
                                      "categories)", path=path)
            det = zoo.build(model_cfg["name"], num_classes=len(cats), **(model_cfg.get("kwargs") or {}))
            zoo.load_checkpoint(det, ckpt)
            if not isinstance(det, SceneModel) or det.info.result != "instances":
                raise CheckpointError("the person detector must be a model with instance results", path=path)
            names = [str(c.get("name", "")) for c in cats]
            person = names.index("person") if "person" in names else None
            det.to(self.pixel_mean.device).eval()
            self._detector = (det, person)
        return self._detector

    def _apply(self, fn, recurse=True):  # keep the detector on the model's device
        out = super()._apply(fn, recurse)
        if self._detector is not None:
            self._detector[0]._apply(fn, recurse)
        return out

    def export_graph(self) -> nn.Module:
        """The ground-truth-free path as a graph: one ``[3, H, W]`` image in ``[0, 1]`` is one person box
        (the whole image; what :meth:`predict` does without boxes or detector) -> ``boxes [1, 4]``,
        ``scores [1]``, ``labels [1]``, ``keypoints [1, K, 3]``, ``keypoint_scores [1, K]``. Crop, network
        (with the flip test if set), decoding and the inverse affine are all inside the graph."""
        if self.detector_path is not None:
            raise ExportError(f"a {type(self).__name__} with a detector= checkpoint runs two models; export the "
                              "detector and this model (whole-image crops) separately", model=type(self).__name__)
        return _WholeImageGraph(self)


class HeatmapTopDown(TopDownPose):
    """A top-down model whose network ends in ``K`` heatmaps at ``stride`` (SimpleBaseline, CPM, Stacked
    Hourglass): Gaussian targets (:func:`sceneparse.ops.keypoint_codec.encode`, sigma in cells), flip
    test on the maps, decoding by the codec (``argmax`` with the quarter shift, ``dark``, ``integral``).

    Subclasses implement ``forward`` and, when ``forward`` returns more than the final maps (stages,
    stacks), :meth:`final_heatmaps`.

    Args (beyond :class:`TopDownPose`'s):
        stride: input px per heatmap cell.
        sigma: target Gaussian sigma in cells (``None``: :func:`~sceneparse.ops.keypoint_codec.sigma_for`).
        decode: the decoder of :meth:`estimate` (``predict(decode=)`` overrides it).
    """

    predict_options = ("boxes", "box_scores", "flip_test", "decode")

    def __init__(self, num_classes: int = 1, *, stride: int = 4, sigma: float | None = None, decode: str = "argmax",
                 **kwargs: Any):
        if decode not in keypoint_codec.DECODERS:
            raise ConfigError(f"decode must be one of {keypoint_codec.DECODERS}, got {decode!r}")
        super().__init__(num_classes, **kwargs)
        h, w = self.input_size
        self.stride = int(stride)
        self.heatmap_size = (h // self.stride, w // self.stride)
        self.sigma = keypoint_codec.sigma_for(self.heatmap_size) if sigma is None else float(sigma)
        self.decode = decode

    def final_heatmaps(self, crops: Tensor) -> Tensor:
        """The maps ``[M, K, h, w]`` that are decoded (default: ``forward``'s output)."""
        return self(crops)

    def heatmaps(self, crops: PersonCrops, flip_test: bool) -> Tensor:
        """The network's heatmaps of ``crops``, averaged with those of the mirrored crops if ``flip_test``
        (continuous frame: the plain mirror is exact, no one-cell shift; :mod:`sceneparse.ops.keypoint_codec`)."""
        maps = self.final_heatmaps(crops.tensor)
        if flip_test:
            maps = keypoint_codec.flip_test(maps, self.final_heatmaps(crops.tensor.flip(3)),
                                            self.keypoint_set.flip_index)
        return maps

    def postprocess(self, heatmaps: Tensor, crops: PersonCrops, decode: str | None = None) -> list[Instances]:
        """Decode ``heatmaps [M, K, h, w]`` of ``crops``, map the keypoints to image px (inverse affine) and
        group them per image (:meth:`TopDownPose.to_instances`; keypoint scores are the heatmap peaks)."""
        kp, kscores = keypoint_codec.decode(heatmaps, self.stride, decode or self.decode)
        return self.to_instances(crops, kp[..., :2], kscores)

    def estimate(self, images: Sequence[Tensor], crops: PersonCrops, flip_test: bool,
                 decode: str | None = None) -> tuple[Tensor, Tensor]:
        if decode is not None and decode not in keypoint_codec.DECODERS:
            raise ConfigError(f"decode must be one of {keypoint_codec.DECODERS}, got {decode!r}")
        kp, kscores = keypoint_codec.decode(self.heatmaps(crops, flip_test), self.stride, decode or self.decode)
        return kp[..., :2], kscores

    def heatmap_loss(self, heatmaps: Tensor, keypoints: Tensor) -> Tensor:
        """SimpleBaseline's ``JointsMSELoss``: ``0.5 * mean((w (pred - target))^2)`` over people, keypoints
        and cells, with the Gaussian targets and weights of ``keypoints [M, K, 3]`` (crop px)."""
        target, weight = keypoint_codec.encode(keypoints, self.heatmap_size, self.stride, self.sigma)
        diff = (heatmaps - target) * weight[..., None, None]
        return 0.5 * diff.pow(2).mean()


class SimpleBaseline(HeatmapTopDown):
    """Top-down pose model (see the module docstring).

    Args:
        backbone: a :class:`ResNetBackbone` returning its last stage (stride 32).
        num_classes: must be 1 (person).
        input_size: ``(H_in, W_in)`` of the crops (heatmaps are 4x smaller).
        keypoint_set: the keypoint layout (default COCO's 17).
        sigma: Gaussian sigma of the targets in heatmap cells (``None``: 2 at 64 x 48, scaled with the height).
        padding: box enlargement (1.25 in the paper).
        scale_jitter, rotation, rotation_prob, flip_prob: training augmentation of the crops (the
            paper: scale +-30 %, rotation +-40 degrees, flip); set to 0 for deterministic training.
        decode: ``argmax`` (quarter shift, the paper), ``dark`` or ``integral``; ``flip_test``: average
            with the mirrored crop's heatmaps at test time.
        detector: path of a sceneparse checkpoint whose detections give the person boxes at prediction
            when none are passed; ``detector_conf``: their score threshold.
    """

    loss_names = ("loss_heatmap",)

    def __init__(self, backbone: ResNetBackbone, num_classes: int = 1, *, input_size: Sequence[int] = (256, 192),
                 keypoint_set: KeypointSet = COCO_PERSON, sigma: float | None = None, padding: float = 1.25,
                 scale_jitter: float = 0.3, rotation: float = 40.0, rotation_prob: float = 0.6,
                 flip_prob: float = 0.5, decode: str = "argmax", flip_test: bool = True,
                 detector: str | None = None, detector_conf: float = 0.3, deconv_channels: int = 256):
        super().__init__(num_classes, stride=4, sigma=sigma, decode=decode, input_size=input_size,
                         keypoint_set=keypoint_set, padding=padding, scale_jitter=scale_jitter, rotation=rotation,
                         rotation_prob=rotation_prob, flip_prob=flip_prob, flip_test=flip_test, detector=detector,
                         detector_conf=detector_conf, size_multiple=32)
        self.backbone = backbone
        self.head = DeconvHead(backbone.out_channels[-1], keypoint_set.num_keypoints, deconv_channels)

    @staticmethod
    def torchvision_key_rules():
        """Key rules for foreign state dicts (the zoo applies them to non-sceneparse checkpoints): the
        paper's released ``pose_resnet_*.pth`` (``conv1.*``, ``layer3.*``, ``deconv_layers.*``,
        ``final_layer.*``) and mmpose's (``backbone.layer1.*``, ``keypoint_head.deconv_layers.*``) load
        into ``backbone.trunk.*`` / ``head.*``."""
        return SIMPLEBASELINE_KEY_RULES

    def forward(self, crops: Tensor) -> Tensor:
        """``crops [M, 3, H_in, W_in]`` (normalised) -> heatmaps ``[M, K, H_in / 4, W_in / 4]``."""
        return self.head(self.backbone(crops)[-1])

    def loss(self, heatmaps: Tensor, keypoints: Tensor) -> dict[str, Tensor]:
        """:meth:`HeatmapTopDown.heatmap_loss` as ``loss_heatmap``."""
        return {"loss_heatmap": self.heatmap_loss(heatmaps, keypoints)}

    def crop_losses(self, images: Sequence[Tensor], crops: PersonCrops, keypoints: Tensor) -> dict[str, Tensor]:
        return self.loss(self(crops.tensor), keypoints)


class _WholeImageGraph(nn.Module):
    """:meth:`TopDownPose.export_graph`: image -> the pose of the one person filling it."""

    output_names = ("boxes", "scores", "labels", "keypoints", "keypoint_scores")
    batched = False
    min_opset = (16, "the affine person crop is a GridSample (ONNX opset 16)")

    def __init__(self, model: TopDownPose):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        m = self.model
        hw = torch._shape_as_tensor(image)[1:].to(torch.float32)
        box = torch.stack([torch.zeros_like(hw[1]), torch.zeros_like(hw[0]), hw[1], hw[0]])[None]
        H, W = m.input_size
        c, s = box_to_center_size(box, W / H, m.padding)
        a = crop_affines(c, s, m.input_size)
        x = (image.float() - m.pixel_mean) / m.pixel_std
        crops = PersonCrops(warp_crops(x, a, m.input_size), a, torch.zeros(1, dtype=torch.long), box,
                            torch.ones(1), [(0, 0)], torch.zeros(1, dtype=torch.bool))
        xy, kscores = m.estimate([image], crops, m.flip_test)
        r = m.to_instances(crops, xy, kscores)[0]
        return r.boxes, r.scores, r.labels, r.keypoints, r.keypoint_scores


def _build(depth: int, input_size: Sequence[int], num_classes: int, kwargs: dict) -> SimpleBaseline:
    backbone = ResNetBackbone(depth, norm="bn", trainable_layers=5, returned_stages=(4,))
    return SimpleBaseline(backbone, num_classes, input_size=input_size, **kwargs)


@register("simplebaseline_resnet18")
def simplebaseline_resnet18(*, num_classes: int = 1, input_size: Sequence[int] = (128, 96),
                            **kwargs) -> SimpleBaseline:
    """SimpleBaseline on ResNet-18 with ``128 x 96`` crops (``32 x 24`` heatmaps, sigma 1): the CPU size."""
    return _build(18, input_size, num_classes, kwargs)


@register("simplebaseline_resnet50")
def simplebaseline_resnet50(*, num_classes: int = 1, input_size: Sequence[int] = (256, 192),
                            **kwargs) -> SimpleBaseline:
    """SimpleBaseline's ResNet-50 ``256 x 192`` model (``64 x 48`` heatmaps, sigma 2): 70.4 COCO AP in the paper."""
    return _build(50, input_size, num_classes, kwargs)
