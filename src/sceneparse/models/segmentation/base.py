"""Semantic segmentation in the model-family contract (:class:`~sceneparse.models.base.SceneModel`).

Every segmentation network here is a :class:`SemanticSegmentor`: a subclass only defines
:meth:`SemanticSegmentor.segment` (normalised images -> per-pixel logits at the input resolution,
plus optional auxiliary logits); ``info`` (task ``semantic``), the verbs and ``export_graph`` are shared:

* ``forward(batch: ImageBatch) -> SemanticRaw`` (logits in the batch frame),
* ``loss(raw, targets) -> {"loss_ce", "loss_aux"?, "loss_dice"?}`` -- per-pixel cross-entropy with
  ``ignore_index`` from ``Target.semantic``; each entry already carries its weight, so the total
  training loss is the plain sum of the values,
* ``postprocess(raw, batch) -> list[SemanticMap]`` in original image pixels,
* ``predict(images, *, imgsz=None, tile=None, ...) -> list[SemanticMap]`` for users (eval mode, no
  grad, optional tiling; ``conf`` / ``iou`` / ``max_det`` do not apply),
* ``export_graph() -> SegmentorGraph``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...conventions import IGNORE_INDEX
from ...errors import DataError, Problem
from ...postprocess.semantic import semantic_maps_from_logits, sliding_window_logits
from ...structures.batch import ImageBatch
from ...structures.segmaps import SemanticMap
from ...structures.target import Target
from ..base import InferenceSettings, ModelInfo, SceneModel
from ..preprocess import Preprocessor
from .checkpoints import module_map_rules, upgrade_trunk_keys
from .losses import pixel_cross_entropy, soft_dice_loss

__all__ = ["SegmentorGraph", "SemanticRaw", "SemanticSegmentor"]

#: keyword options of :meth:`SemanticSegmentor.predict` beyond the common settings
PREDICT_OPTIONS = ("tile", "tile_overlap", "tile_weighting", "tile_batch", "return_scores")


@dataclass
class SemanticRaw:
    """Raw output of a semantic-segmentation model for one :class:`ImageBatch`.

    Attributes:
        logits: ``float [B, C, Hb, Wb]`` class scores (pre-softmax) in the batch frame (the padded,
            resized images of ``ImageBatch.tensor``).
        aux_logits: ``float [B, C, Hb, Wb]`` from the auxiliary head on an intermediate stage (FCN /
            DeepLab / PSPNet deep supervision); computed in training only, ``None`` otherwise.
        image_sizes: per image ``(h, w)`` valid region of the batch frame.
        original_sizes: per image ``(H, W)`` of the user's image.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor | None
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]


class SemanticSegmentor(SceneModel):
    """Base class of the semantic-segmentation networks.

    Args:
        num_classes: ``C``; labels are ``0..C-1`` (a "background" class, if any, is an ordinary label).
        preprocessor: normalise / resize / pad (:class:`~sceneparse.models.preprocess.Preprocessor`);
            default: ImageNet mean/std, short side ``min_size``, long side at most ``max_size``,
            padded to a multiple of ``size_divisible``.
        min_size, max_size, size_divisible: the default preprocessor's sizes as plain arguments (so
            that a checkpoint's ``config.model.kwargs`` can hold them): short side 520 (torchvision's
            segmentation preset), long side at most 2080, and ``size_divisible`` by default the
            multiple the network needs (:attr:`size_multiple`). Ignored with ``preprocessor``.
        ignore_index: label value of void pixels in targets.
        aux_weight: weight of the auxiliary-head cross-entropy (torchvision's recipe uses 0.5).
        dice_weight: weight of an added soft-Dice loss (0: none).
        class_weights: optional ``[C]`` cross-entropy class weights.
        logit_adjustment: ``tau`` (needs ``class_weights``): at inference the logits get
            ``- tau * log(class_weights)``. Cross-entropy weighted by ``w`` trains the softmax towards
            ``w_c p(c | x)`` (normalised), so rare classes with large weights are over-predicted;
            ``tau = 1`` divides the weights back out (post-hoc logit adjustment, Menon et al. 2021),
            ``0`` (default) keeps the weighted scores, as torchvision / mmsegmentation do. Training
            keeps the weighted loss either way; only ``forward`` in eval mode, tiled ``predict`` and
            the exported graph (:meth:`inference_logits`) see the adjustment.
        train_crop: training only: the loss is computed on one random ``train_crop`` window
            (``int`` or ``(h, w)``) per image of the resized batch -- mmsegmentation's / torchvision's
            resize-then-``RandomCrop`` recipe, done after the preprocessor so the crop keeps the
            evaluation scale (cropping before the resize would enlarge it). A window larger than the
            image is clipped to it. Evaluation and prediction always see whole images.

    Padding: the batch is zero-padded at the bottom/right only as far as the network needs. Padding is
    not neutral -- convolutions at the border see it, and global pooling (DeepLab's ASPP image
    pooling, LR-ASPP's gate) averages over it -- so a network that takes any input size gets none:
    ``size_multiple = 1`` for the dilated-trunk models (FCN, DeepLabV3 / V3+, LR-ASPP: torchvision runs
    its twins unpadded, and with a torchvision checkpoint ``predict`` gives torchvision's label map) and
    for FCN-8s/16s/32s (centre-aligned upsamplers cropped to each skip); U-Net and SegNet pad to
    ``2 ** depth`` (every pooling level exact). :meth:`predict` batches only images of the same size, so
    an image's labels never depend on the other images of the call.
    """

    #: the multiple of the input height and width the network needs (the default ``size_divisible``);
    #: 8 -- what every segmentor got before it was declared per model -- unless a subclass says otherwise
    size_multiple: int = 8

    def __init__(self, num_classes: int, *, preprocessor: Preprocessor | None = None,
                 min_size: int | Sequence[int] = 520, max_size: int = 2080, size_divisible: int | None = None,
                 ignore_index: int = IGNORE_INDEX, aux_weight: float = 0.5, dice_weight: float = 0.0,
                 class_weights: Sequence[float] | None = None, logit_adjustment: float = 0.0,
                 train_crop: int | Sequence[int] | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} collides with a class label 0..{num_classes - 1}")
        self.num_classes = int(num_classes)
        if size_divisible is None:
            size_divisible = self.size_multiple
        self.preprocessor = preprocessor if preprocessor is not None else Preprocessor(
            min_size=min_size, max_size=max_size, size_divisible=size_divisible)
        self.ignore_index = int(ignore_index)
        self.aux_weight = float(aux_weight)
        self.dice_weight = float(dice_weight)
        if class_weights is not None:
            cw = torch.as_tensor(class_weights, dtype=torch.float32)
            if cw.shape != (num_classes,):
                raise ValueError(f"class_weights must have {num_classes} entries, got {tuple(cw.shape)}")
            self.register_buffer("class_weights", cw, persistent=False)
        else:
            self.class_weights = None
        self.logit_adjustment = float(logit_adjustment)
        if self.logit_adjustment != 0:
            if self.class_weights is None:
                raise ValueError("logit_adjustment needs class_weights (it divides them back out of the scores)")
            if not bool((self.class_weights > 0).all()):
                raise ValueError("logit_adjustment needs positive class_weights, got "
                                 f"{[round(float(v), 4) for v in self.class_weights]}")
            self.register_buffer("logit_bias", -self.logit_adjustment * self.class_weights.log(), persistent=False)
        else:
            self.logit_bias = None
        if train_crop is not None:
            crop = (int(train_crop),) * 2 if isinstance(train_crop, (int, float)) else tuple(int(v) for v in train_crop)
            if len(crop) != 2 or min(crop) < 1:
                raise ValueError(f"train_crop must be a positive int or (h, w), got {train_crop!r}")
            self.train_crop: tuple[int, int] | None = crop
        else:
            self.train_crop = None

    # ---- what subclasses define ---------------------------------------------------------------
    def segment(self, x: torch.Tensor, with_aux: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: normalised ``[B, 3, H, W]`` -> ``(logits [B, C, H, W], aux_logits [B, C, H, W] or None)``.
        ``aux_logits`` only when ``with_aux`` and the model has an auxiliary head."""
        raise NotImplementedError

    def inference_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``segment``'s logits with the ``logit_adjustment`` bias (per class, so it commutes with the
        bilinear resizes): what evaluation, prediction and export score."""
        logits = self.segment(x)[0]
        return logits if self.logit_bias is None else logits + self.logit_bias.to(logits.dtype)[:, None, None]

    # ---- the protocol ---------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return ModelInfo("semantic", self.num_classes, data="semantic",
                         class_names=tuple(self.class_names) if len(self.class_names) == self.num_classes else (),
                         size=self.preprocessor.policy(), options=PREDICT_OPTIONS,
                         export_outputs=SegmentorGraph.output_names, ignore_index=self.ignore_index)

    def training_losses(self, images: Sequence[torch.Tensor], targets: Sequence[Target]) -> dict[str, torch.Tensor]:
        """``prepare`` + ``forward`` + ``loss`` (one training step's losses)."""
        batch, t = self.prepare(images, targets)
        if self.train_crop is None:
            return self.loss(self(batch), t)
        labels = self.semantic_targets(t, SemanticRaw(batch.tensor, None, list(batch.image_sizes),
                                                      list(batch.original_sizes)))
        batch, labels = self._random_crop(batch, labels)
        return self.loss_from_labels(self(batch), labels)

    def _random_crop(self, batch: ImageBatch, labels: torch.Tensor) -> tuple[ImageBatch, torch.Tensor]:
        """One random ``train_crop`` window per image of the batch, images and ``[B, Hb, Wb]`` labels
        alike (positions from torch's global generator, which the trainer seeds and checkpoints);
        padding stays ``ignore_index``."""
        ch, cw = self.train_crop
        d = int(self.preprocessor.size_divisible)
        hb, wb = batch.tensor.shape[-2:]
        ph, pw = min(-(-ch // d) * d, hb), min(-(-cw // d) * d, wb)
        b = batch.tensor.shape[0]
        tensor = batch.tensor.new_zeros((b, batch.tensor.shape[1], ph, pw))
        out = labels.new_full((b, ph, pw), self.ignore_index)
        sizes = []
        for i, (h, w) in enumerate(batch.image_sizes):
            hh, ww = min(ch, h), min(cw, w)
            top = int(torch.randint(0, h - hh + 1, ()).item())
            left = int(torch.randint(0, w - ww + 1, ()).item())
            tensor[i, :, :hh, :ww] = batch.tensor[i, :, top:top + hh, left:left + ww]
            out[i, :hh, :ww] = labels[i, top:top + hh, left:left + ww]
            sizes.append((hh, ww))
        return ImageBatch(tensor, sizes, list(sizes), [(1.0, 1.0)] * b), out

    def forward(self, batch: ImageBatch, targets: Sequence[Target] | None = None) -> SemanticRaw:
        """``targets`` is accepted for the common model signature and not used. In eval mode the logits
        are :meth:`inference_logits`."""
        if self.training:
            logits, aux = self.segment(batch.tensor, with_aux=True)
        else:
            logits, aux = self.inference_logits(batch.tensor), None
        return SemanticRaw(logits, aux, list(batch.image_sizes), list(batch.original_sizes))

    def loss(self, raw: SemanticRaw, targets: Sequence[Target]) -> dict[str, torch.Tensor]:
        """Per-pixel cross-entropy (+ weighted aux CE, + weighted soft Dice) against ``Target.semantic``.

        A target's semantic map may be in the batch frame (``image_sizes[i]``, e.g. after the
        preprocessor) or in the original image frame (``original_sizes[i]``; then it is resized with
        nearest-neighbour sampling). Padding is ignored. Raises :class:`DataError` naming the image for a
        missing map, a map of another size, or labels outside ``0..C-1`` that are not ``ignore_index``.
        """
        return self.loss_from_labels(raw, self.semantic_targets(targets, raw))

    def loss_from_labels(self, raw: SemanticRaw, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`loss` given the ``int64 [B, Hb, Wb]`` labels in the batch frame."""
        out = {"loss_ce": pixel_cross_entropy(raw.logits, labels, self.ignore_index, self.class_weights)}
        if raw.aux_logits is not None and self.aux_weight > 0:
            out["loss_aux"] = self.aux_weight * pixel_cross_entropy(raw.aux_logits, labels, self.ignore_index,
                                                                    self.class_weights)
        if self.dice_weight > 0:
            out["loss_dice"] = self.dice_weight * soft_dice_loss(raw.logits, labels, self.ignore_index)
        return out

    def semantic_targets(self, targets: Sequence[Target], raw: SemanticRaw) -> torch.Tensor:
        """``int64 [B, Hb, Wb]`` label tensor in the batch frame (padding = ``ignore_index``)."""
        b, _, hb, wb = raw.logits.shape
        if len(targets) != b:
            raise DataError(f"loss: {b} images in the batch but {len(targets)} targets")
        out = torch.full((b, hb, wb), self.ignore_index, dtype=torch.long, device=raw.logits.device)
        for i, t in enumerate(targets):
            where = (t.file_name or None, f"image {t.image_id}")
            if t.semantic is None:
                raise DataError(Problem(*where, "semantic", "target has no semantic map (load_semantic=True?)"))
            lab = t.semantic.labels.to(raw.logits.device)
            if t.semantic.ignore_index != self.ignore_index:
                lab = torch.where(lab == t.semantic.ignore_index, torch.full_like(lab, self.ignore_index), lab)
            bad = (lab != self.ignore_index) & ((lab < 0) | (lab >= self.num_classes))
            if bool(bad.any()):
                raise DataError(Problem(*where, "semantic", f"labels outside 0..{self.num_classes - 1} and not "
                                        f"ignore_index {self.ignore_index}", sorted(lab[bad].unique().tolist())[:10]))
            h, w = raw.image_sizes[i]
            size = tuple(lab.shape)
            if size != (h, w):
                if size != tuple(raw.original_sizes[i]):
                    raise DataError(Problem(*where, "semantic", f"map size {size} is neither the image's "
                                            f"{tuple(raw.original_sizes[i])} nor the resized {(h, w)}"))
                lab = F.interpolate(lab[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
            out[i, :h, :w] = lab
        return out

    def postprocess(self, raw: SemanticRaw, batch: ImageBatch | None = None, *, return_scores: bool = False
                    ) -> list[SemanticMap]:
        """Logits -> one :class:`SemanticMap` per image, in original pixels (see
        :func:`sceneparse.postprocess.semantic.semantic_maps_from_logits`)."""
        sizes = raw.image_sizes if batch is None else batch.image_sizes
        originals = raw.original_sizes if batch is None else batch.original_sizes
        return semantic_maps_from_logits(raw.logits, sizes, originals, return_scores=return_scores,
                                         ignore_index=self.ignore_index)

    def infer(self, images: list[torch.Tensor], settings: InferenceSettings, *,
              tile: int | tuple[int, int] | None = None, tile_overlap: float = 1 / 3,
              tile_weighting: str = "uniform", tile_batch: int = 4, return_scores: bool = False) -> list[SemanticMap]:
        """:meth:`predict`'s work. ``tile``: run the network on overlapping ``tile x tile`` windows of
        the preprocessed image (``tile_overlap``, ``tile_weighting`` as in
        :func:`~sceneparse.postprocess.semantic.sliding_window_logits`) instead of the whole image --
        bounded memory for large images. ``return_scores``: keep the per-class probabilities.

        Images are batched by size: padding a smaller image up to a larger one's size would change
        its logits (at the border, and everywhere through global pooling)."""
        if tile is None:
            for i, image in enumerate(images):  # errors name the image's index in the call, not in its group
                self.preprocessor._check(i, image)
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, image in enumerate(images):
                groups.setdefault(tuple(image.shape), []).append(i)
            results: list[SemanticMap | None] = [None] * len(images)
            for idx in groups.values():
                batch, _ = self.prepare([images[i] for i in idx], imgsz=settings.imgsz)
                for i, r in zip(idx, self.postprocess(self(batch), batch, return_scores=return_scores)):
                    results[i] = r
            return results
        out = []
        for image in images:
            batch, _ = self.prepare([image], imgsz=settings.imgsz)
            h, w = batch.image_sizes[0]
            logits = sliding_window_logits(self.inference_logits, batch.tensor[0, :, :h, :w], tile,
                                           overlap=tile_overlap, batch_size=tile_batch, weighting=tile_weighting)
            out += semantic_maps_from_logits(logits[None], batch.image_sizes, batch.original_sizes,
                                             return_scores=return_scores, ignore_index=self.ignore_index)
        return out

    # ---- explanation pictures (.explain) ---------------------------------------------------------
    def explain_views(self) -> tuple[str, ...]:
        """probabilities, aspp (DeepLab), upsampling: see :mod:`.explain`."""
        from .explain import semantic_views

        return semantic_views(self)

    def explain_options(self) -> tuple[str, ...]:
        """imgsz (as predict), at, top_k (:func:`.explain.semantic_explanation`)."""
        from .explain import SEMANTIC_OPTIONS

        return SEMANTIC_OPTIONS

    def explain_view(self, view: str, image: torch.Tensor, **options) -> list:
        from .explain import semantic_explanation

        return semantic_explanation(self, view, image, **options)

    def export_graph(self) -> "SegmentorGraph":
        return SegmentorGraph(self)

    # ---- checkpoints ------------------------------------------------------------------------------
    def torchvision_module_map(self) -> dict[str, str] | None:
        """Module path here -> module path in the torchvision twin's state dict (``None``: no twin)."""
        return None

    def torchvision_key_rules(self):
        """Key-renaming rules for :func:`sceneparse.models.zoo.load_torchvision_checkpoint` (empty
        without a torchvision twin: keys are then taken as they are)."""
        module_map = self.torchvision_module_map()
        return () if module_map is None else module_map_rules(module_map)

    def upgrade_state_dict(self, state: dict) -> dict:
        """A sceneparse checkpoint's state dict in today's key layout: checkpoints written before the
        trunks were the shared backbones name them ``backbone.conv1`` / ``backbone.stem.conv`` ...
        instead of ``backbone.trunk.*`` (:func:`.checkpoints.legacy_trunk_module_map`)."""
        trunk = getattr(self, "backbone", None)
        if trunk is None or not hasattr(trunk, "trunk") or any(k.startswith("backbone.trunk.") for k in state):
            return state
        return upgrade_trunk_keys(state, trunk)


class SegmentorGraph(nn.Module):
    """``images [N, 3, H, W]`` in [0, 1] -> ``(logits [N, C, H, W], labels [N, H, W])``: normalise,
    pad to the preprocessor's ``size_divisible`` (as :meth:`SemanticSegmentor.predict` does; no pad at
    all where it is 1), :meth:`SemanticSegmentor.inference_logits`, crop, argmax."""

    output_names = ("logits", "labels")
    batched = True  #: the exporter's input is an ``[N, 3, H, W]`` batch, not one ``[3, H, W]`` image
    #: the lowest ONNX opset whose graph onnxruntime runs correctly, and why
    min_opset = (11, "Resize and Pad with sizes computed in the graph need opset 11")

    def __init__(self, model: SemanticSegmentor):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2], images.shape[-1]
        pre = self.model.preprocessor
        x = pre.normalize(images)
        if pre.size_divisible > 1:
            x = pre.pad(x)
        logits = self.model.inference_logits(x)
        if pre.size_divisible > 1:
            logits = logits[:, :, :h, :w]
        return logits, logits.argmax(dim=1)
