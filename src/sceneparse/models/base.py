"""The model-family contract: every model is a :class:`SceneModel` that says what it is
(:class:`ModelInfo`) and does the shared verbs once.

The engine, the CLI, the evaluator, the predictor and the exporter read :attr:`SceneModel.info` and
nothing else: they never name a family's class or reach into its submodules. A new family (one-stage
detectors, DETR, pose, panoptic, promptable, classic) is a new folder in ``models/`` whose models
subclass :class:`SceneModel`, fill in :attr:`~SceneModel.info` and the three verbs, and register
their builders with :func:`sceneparse.models.zoo.register` in the family package's ``__init__``
(every folder of ``models/`` but the shared parts: :func:`sceneparse.models.zoo.family_packages`).

The verbs (fixed return types, frames as in ``ARCHITECTURE.md``):

* ``prepare(images, targets=None, *, imgsz=None) -> (ImageBatch, targets in the batch frame)``
* ``forward(batch, targets=None) -> Raw`` (family-specific raw outputs)
* ``loss(raw, targets) -> dict[str, Tensor]``
* ``postprocess(raw, batch) -> list[Result]`` in original-image pixels
* ``predict(images, *, conf=None, iou=None, max_det=None, imgsz=None, **options) -> list[Result]``:
  the inference settings are arguments (``None``: :attr:`ModelInfo.conf` / ``iou`` / ``max_det``);
  nothing patches a model's attributes to apply them.
* ``training_losses(images, targets) -> dict[str, Tensor]`` = prepare + forward + loss
* ``explain(image, *, what=None, **options) -> list[Explanation]``: the lecture notes' pictures of
  what the model computes on one image, as data (:mod:`sceneparse.structures.explain`; drawn by
  :mod:`sceneparse.viz.explain`). A family lists its views in :meth:`SceneModel.explain_views`, its
  extra keyword options in :meth:`SceneModel.explain_options`, and draws one view in
  :meth:`SceneModel.explain_view`; a model without views raises :class:`ConfigError` saying so.
* ``export_graph() -> nn.Module``: the traceable graph the exporter hands to ONNX / TorchScript (one
  ``[3, H, W]`` image in ``[0, 1]`` -> a tuple of tensors named by :attr:`ModelInfo.export_outputs`),
  or :class:`~sceneparse.errors.ExportError`.

A family overrides :meth:`SceneModel.infer` (what ``predict`` runs once the settings are resolved)
when the settings must reach inside its forward pass (e.g. a box head's score threshold before NMS);
the default runs ``prepare -> forward -> postprocess`` and then keeps ``score > conf`` and the
``max_det`` best of :class:`~sceneparse.structures.instances.Instances` results.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ExportError
from ..structures.batch import ImageBatch
from ..structures.explain import Explanation
from ..structures.instances import Instances
from ..structures.keypoints import KeypointSet
from ..structures.target import Target

#: What a model does. ``detect``: boxes; ``instance``: boxes + masks; ``semantic``: a label per pixel;
#: ``panoptic``: stuff + thing segments; ``pose``: people (boxes) with keypoints; ``promptable``:
#: masks for given prompts (points / boxes).
TASKS = ("detect", "instance", "semantic", "panoptic", "pose", "promptable")
#: The result type of each task (:mod:`sceneparse.structures`): ``instances`` ->
#: :class:`~sceneparse.structures.instances.Instances`, ``semantic`` ->
#: :class:`~sceneparse.structures.segmaps.SemanticMap`, ``panoptic`` -> ``PanopticMap``.
RESULT_OF_TASK = {"detect": "instances", "instance": "instances", "semantic": "semantic", "panoptic": "panoptic",
                  "pose": "instances", "promptable": "instances"}
#: The annotations a model trains on (:func:`sceneparse.data.layout.load_split`).
DATA_KINDS = ("instances", "keypoints", "semantic", "panoptic")
#: COCO evaluations an ``instances`` result can be scored on.
IOU_TYPES = ("bbox", "segm", "keypoints")
#: Metrics per task that are not COCO AP (ranked by the first).
SEMANTIC_METRICS = ("miou", "pixel_acc", "mean_acc", "fwiou")
PANOPTIC_METRICS = ("pq", "sq", "rq", "pq_things", "pq_stuff")
#: Checkpoints written before ModelInfo recorded ``task`` as one of these two words.
LEGACY_TASKS = {"detection": None, "semantic": "semantic"}


@dataclass(frozen=True)
class SizePolicy:
    """How images are sized before the network (frames: see :mod:`sceneparse.models.preprocess`).

    ``min_size``: target short side(s) (several: multi-scale training, the last at inference);
    ``max_size``: cap of the long side; ``size_divisible``: the padded batch is a multiple of it;
    ``fixed_size``: ``(h, w)`` every image is resized to (aspect ratio not kept), else ``None``;
    ``mean`` / ``std``: the per-channel normalisation of ``[0, 1]`` RGB (``None``: none).
    """

    min_size: tuple[int, ...]
    max_size: int
    size_divisible: int = 1
    fixed_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def long_side(self) -> int:
        """The longest side an image can have at inference (what ``imgsz`` means everywhere)."""
        if self.fixed_size is not None:
            return max(self.fixed_size)
        return int(self.max_size)


def resolve_imgsz(imgsz: Any) -> tuple[int, int] | None:
    """``imgsz`` as ``(min_size, max_size)`` for the resize rule.

    One meaning in every mode (``train --imgsz``, ``predict --imgsz``, ``predict(imgsz=)``): an
    ``int`` N is the longer side of the network input (``min_size = max_size = N``: the image is
    scaled so its long side is N, as ultralytics' ``imgsz``); a pair ``(min_size, max_size)`` gives
    torchvision's short-side target and long-side cap explicitly. ``None`` keeps the model's."""
    if imgsz is None:
        return None
    if isinstance(imgsz, bool):
        raise ConfigError(f"imgsz must be an int or (min_size, max_size), got {imgsz!r}")
    try:
        if isinstance(imgsz, (int, float)) or (isinstance(imgsz, Tensor) and imgsz.ndim == 0) or \
                type(imgsz).__name__.startswith(("int", "float")):
            lo = hi = int(imgsz)
        else:
            lo, hi = (int(v) for v in imgsz)
    except (TypeError, ValueError):
        raise ConfigError(f"imgsz must be an int (the longer side) or (min_size, max_size), got {imgsz!r}") from None
    if lo < 16 or hi < lo:
        raise ConfigError(f"imgsz must be at least 16 px (and the long-side cap >= the short side), got {imgsz!r}")
    return lo, hi


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, in words the engine understands. Checkpoints store it (:meth:`to_dict`).

    Attributes:
        task: one of :data:`TASKS`.
        num_classes: foreground classes ``C`` (labels ``0..C-1``).
        iou_types: the COCO evaluations its results can be scored on (``bbox``, ``segm``,
            ``keypoints``); ``()`` for semantic / panoptic models (mIoU / PQ).
        data: the annotations it trains on, one of :data:`DATA_KINDS`.
        class_names: names in label order (``()``: unknown; the engine then uses the dataset's).
        keypoints: the keypoint layout (names, skeleton, flip pairs, OKS sigmas) of pose models.
        size: the input size policy.
        conf, iou, max_det: default inference settings (score threshold: ``score > conf`` is kept;
            NMS IoU; detections per image). Semantic models ignore them.
        options: extra keyword arguments its ``predict`` accepts (e.g. ``tile`` for sliding windows,
            ``prompts`` for promptable models).
        export_outputs: names of the tensors :meth:`SceneModel.export_graph` returns, in order.
        mask_threshold: probability above which a mask pixel is on (instance results with masks).
        box_input: the class (by name) whose boxes the model's ``predict(boxes=[Tensor[M_i, 4]],
            box_scores=[Tensor[M_i]])`` takes from a detector, e.g. ``"person"`` for top-down pose
            models (``sceneparse predict --det DET.pt`` chains them); ``None``: it takes no boxes.
    """

    task: str
    num_classes: int
    iou_types: tuple[str, ...] = ()
    data: str = "instances"
    class_names: tuple[str, ...] = ()
    keypoints: KeypointSet | None = None
    size: SizePolicy | None = None
    conf: float = 0.05
    iou: float = 0.5
    max_det: int = 100
    options: tuple[str, ...] = ()
    export_outputs: tuple[str, ...] = ()
    mask_threshold: float = 0.5
    ignore_index: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    box_input: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"ModelInfo.task must be one of {TASKS}, got {self.task!r}")
        if self.data not in DATA_KINDS:
            raise ValueError(f"ModelInfo.data must be one of {DATA_KINDS}, got {self.data!r}")
        bad = [t for t in self.iou_types if t not in IOU_TYPES]
        if bad:
            raise ValueError(f"ModelInfo.iou_types must be among {IOU_TYPES}, got {bad}")
        if self.result != "instances" and self.iou_types:
            raise ValueError(f"a {self.task} model has no COCO iou types, got {self.iou_types}")
        if "keypoints" in self.iou_types and self.keypoints is None:
            raise ValueError("a model scored on keypoints must declare its keypoint layout (ModelInfo.keypoints)")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    # ---- derived ----------------------------------------------------------------------------------
    @property
    def result(self) -> str:
        """``instances`` / ``semantic`` / ``panoptic``: the type of :meth:`SceneModel.predict`'s items."""
        return RESULT_OF_TASK[self.task]

    @property
    def has_masks(self) -> bool:
        return "segm" in self.iou_types

    @property
    def num_keypoints(self) -> int:
        return 0 if self.keypoints is None else self.keypoints.num_keypoints

    @property
    def metrics(self) -> tuple[str, ...]:
        """The headline metrics of its evaluation, the one that ranks checkpoints first."""
        if self.result == "semantic":
            return SEMANTIC_METRICS
        if self.result == "panoptic":
            return PANOPTIC_METRICS
        return tuple(f"{t}_AP" for t in reversed(self.iou_types))

    @property
    def primary_metric(self) -> str:
        """What ``train.primary_metric=auto`` ranks checkpoints by: ``keypoints_AP`` > ``segm_AP`` >
        ``bbox_AP`` for instance results, ``miou``, ``pq``."""
        return self.metrics[0]

    def named(self, class_names: Sequence[str]) -> "ModelInfo":
        """The same info with ``class_names``."""
        return replace(self, class_names=tuple(str(n) for n in class_names))

    # ---- checkpoints ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (a checkpoint is read with ``weights_only=True``)."""
        d = asdict(self)
        d["keypoints"] = None if self.keypoints is None else {
            "names": list(self.keypoints.names), "skeleton": [list(e) for e in self.keypoints.skeleton],
            "flip_index": list(self.keypoints.flip_index), "sigmas": list(self.keypoints.sigmas)}
        d["size"] = None if self.size is None else {
            "min_size": list(self.size.min_size), "max_size": self.size.max_size,
            "size_divisible": self.size.size_divisible,
            "fixed_size": None if self.size.fixed_size is None else list(self.size.fixed_size),
            "mean": None if self.size.mean is None else list(self.size.mean),
            "std": None if self.size.std is None else list(self.size.std)}
        for k in ("iou_types", "class_names", "options", "export_outputs"):
            d[k] = list(d[k])
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelInfo":
        """Inverse of :meth:`to_dict` (unknown keys are ignored: a newer sceneparse may add some)."""
        kp = d.get("keypoints")
        size = d.get("size")
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["keypoints"] = None if not kp else KeypointSet(
            tuple(kp["names"]), tuple(tuple(e) for e in kp["skeleton"]), tuple(kp["flip_index"]), tuple(kp["sigmas"]))
        kw["size"] = None if not size else SizePolicy(
            tuple(size["min_size"]), int(size["max_size"]), int(size.get("size_divisible", 1)),
            None if size.get("fixed_size") is None else tuple(size["fixed_size"]),
            None if size.get("mean") is None else tuple(size["mean"]),
            None if size.get("std") is None else tuple(size["std"]))
        for k in ("iou_types", "class_names", "options", "export_outputs"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


@dataclass(frozen=True)
class InferenceSettings:
    """Resolved inference settings for one :meth:`SceneModel.predict` call."""

    conf: float
    iou: float
    max_det: int
    imgsz: tuple[int, int] | None = None


class SceneModel(nn.Module):
    """Base class of every sceneparse model (see the module docstring for the contract).

    Subclasses set ``self.num_classes`` and, if they resize with a
    :class:`~sceneparse.models.preprocess.Preprocessor`, ``self.preprocessor`` (then :meth:`prepare`
    works as it is); they implement :attr:`info`, ``forward``, ``loss`` and ``postprocess``.
    """

    #: class names in label order, set by whoever knows them (a checkpoint's categories)
    class_names: tuple[str, ...] = ()

    @property
    def info(self) -> ModelInfo:
        raise NotImplementedError(f"{type(self).__name__} does not declare its ModelInfo")

    # ---- shared verbs -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        if p is None:
            b = next(self.buffers(), None)
            return b.device if b is not None else torch.device("cpu")
        return p.device

    def prepare(self, images: Sequence[Tensor], targets: Sequence[Target] | None = None, *,
                imgsz: Any = None) -> tuple[ImageBatch, list[Target] | None]:
        """Normalise / resize / pad images (and move targets into the batch frame) on the model's
        device. ``imgsz``: see :func:`resolve_imgsz` (inference only; training uses the model's)."""
        pre = getattr(self, "preprocessor", None)
        if pre is None:
            raise NotImplementedError(f"{type(self).__name__} has no preprocessor; override prepare()")
        dev = self.device
        pre.train(self.training)
        size = resolve_imgsz(imgsz)
        kw = {} if size is None else {"min_size": size[0], "max_size": size[1]}
        return pre([im.to(dev) for im in images], None if targets is None else [t.to(dev) for t in targets], **kw)

    def settings(self, conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                 imgsz: Any = None) -> InferenceSettings:
        """The settings of one call: the arguments given, the model's defaults (:attr:`info`) for the rest."""
        info = self.info
        conf = info.conf if conf is None else float(conf)
        iou = info.iou if iou is None else float(iou)
        max_det = info.max_det if max_det is None else int(max_det)
        if not 0.0 <= conf <= 1.0:
            raise ConfigError(f"conf must lie in [0, 1], got {conf}")
        if not 0.0 <= iou <= 1.0:
            raise ConfigError(f"iou must lie in [0, 1], got {iou}")
        if max_det < 1:
            raise ConfigError(f"max_det must be >= 1, got {max_det}")
        return InferenceSettings(conf, iou, max_det, resolve_imgsz(imgsz))

    @torch.no_grad()
    def predict(self, images: Sequence[Tensor], *, conf: float | None = None, iou: float | None = None,
                max_det: int | None = None, imgsz: Any = None, **options: Any) -> list:
        """Images (``float32 CHW RGB in [0, 1]``, any sizes) -> one result per image, in its own
        pixels. Runs in eval mode without gradients and restores the previous mode."""
        unknown = sorted(set(options) - set(self.info.options))
        if unknown:
            raise ConfigError(f"{type(self).__name__}.predict got unknown option(s) {unknown}; "
                              f"it takes {sorted(self.info.options) or 'none'}")
        s = self.settings(conf, iou, max_det, imgsz)
        was_training = self.training
        self.eval()
        try:
            return self.infer(list(images), s, **options)
        finally:
            self.train(was_training)

    def infer(self, images: list[Tensor], settings: InferenceSettings, **options: Any) -> list:
        """``predict`` with resolved settings (eval mode, no grad). Default: prepare -> forward ->
        postprocess, then ``score > conf`` and the ``max_det`` best of instance results."""
        batch, _ = self.prepare(images, imgsz=settings.imgsz)
        results = self.postprocess(self(batch), batch)
        return [apply_settings(r, settings) for r in results]

    def training_losses(self, images: Sequence[Tensor], targets: Sequence[Target]) -> dict[str, Tensor]:
        """``prepare`` + ``forward`` + ``loss`` for targets in original pixels (one training step's losses)."""
        batch, t = self.prepare(images, targets)
        return self.loss(self(batch, t), t)

    # ---- explanation pictures (the notes' drawings, as data) ----------------------------------
    def explain_views(self) -> tuple[str, ...]:
        """The pictures :meth:`explain` can make (its ``what`` values), in the order ``what=None``
        makes them; ``()`` (the default): the model has none."""
        return ()

    def explain_options(self) -> tuple[str, ...]:
        """Keyword options :meth:`explain` accepts besides ``what`` (e.g. ``query``, ``conf``)."""
        return ()

    def explain(self, image: Tensor, *, what: str | None = None, **options: Any) -> list[Explanation]:
        """The notes' pictures of what this model computes on one ``image`` (``float32 [3, H, W]`` RGB
        in ``[0, 1]``, original pixels) as :class:`~sceneparse.structures.explain.Explanation` data,
        one per picture; marks are in the image's own pixels. ``what``: one of
        :meth:`explain_views` (``None``: all of them). Runs in eval mode without gradients and restores
        the previous mode. Raises :class:`ConfigError` for a model without views, an unknown view or
        an option the model does not take."""
        name = type(self).__name__
        views = tuple(self.explain_views())
        if not views:
            raise ConfigError(f"{name} has no explanation views: explain() draws nothing for this model "
                              "(its family defines no explain_views())")
        if what is not None and what not in views:
            raise ConfigError(f"{name} has no explanation view {what!r}; its views: {', '.join(views)}")
        unknown = sorted(set(options) - set(self.explain_options()))
        if unknown:
            raise ConfigError(f"{name}.explain got unknown option(s) {unknown}; it takes "
                              f"{sorted(self.explain_options()) or 'none'}")
        if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ConfigError(f"{name}.explain takes one float image [3, H, W] in [0, 1], got {got}")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out: list[Explanation] = []
                for view in (views if what is None else (what,)):
                    out.extend(self.explain_view(view, image, **options))
                return out
        finally:
            self.train(was_training)

    def explain_view(self, view: str, image: Tensor, **options: Any) -> list[Explanation]:
        """One view of :meth:`explain` (called in eval mode, without gradients, with a checked
        ``view`` and options): a family that lists views implements it."""
        raise ConfigError(f"{type(self).__name__} lists explanation views but does not implement explain_view()")

    def export_graph(self) -> nn.Module:
        """The traceable graph for ONNX / TorchScript (one ``[3, H, W]`` image -> the tensors of
        :attr:`ModelInfo.export_outputs`)."""
        raise ExportError(f"{type(self).__name__} cannot be exported yet (no export_graph)",
                          model=type(self).__name__)


def apply_settings(result: Any, settings: InferenceSettings) -> Any:
    """Keep ``score > conf`` and the ``max_det`` highest-scoring instances (other results as they are)."""
    if not isinstance(result, Instances) or result.scores is None:
        return result
    keep = torch.where(result.scores > settings.conf)[0]
    if keep.numel() > settings.max_det:
        keep = keep[result.scores[keep].argsort(descending=True, stable=True)[: settings.max_det]]
        keep = keep.sort().values
    return result if keep.numel() == len(result) else result[keep]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def model_info(model: nn.Module) -> ModelInfo:
    """:attr:`SceneModel.info` of ``model`` (unwrapped), with a clear error for other modules."""
    m = unwrap(model)
    if not isinstance(m, SceneModel):
        raise ConfigError(f"{type(m).__name__} is not a sceneparse model (a SceneModel declaring its ModelInfo)")
    info = m.info
    names = tuple(getattr(m, "class_names", ()) or ())
    if names and not info.class_names and len(names) == info.num_classes:
        info = info.named(names)
    return info


__all__ = ["DATA_KINDS", "IOU_TYPES", "InferenceSettings", "LEGACY_TASKS", "ModelInfo", "PANOPTIC_METRICS",
           "RESULT_OF_TASK", "SEMANTIC_METRICS", "SceneModel", "SizePolicy", "TASKS", "apply_settings",
           "model_info", "resolve_imgsz", "unwrap"]
