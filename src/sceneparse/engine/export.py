"""Export models to ONNX (or TorchScript) as self-contained inference graphs, verified against eager PyTorch.

The exporter knows models only through the model-family contract (:mod:`sceneparse.models.base`):
:attr:`SceneModel.info` (:class:`~sceneparse.models.base.ModelInfo`: task, result type, classes,
size policy, keypoints, mask threshold, the names of the graph's outputs) and
:meth:`SceneModel.export_graph` (the traceable ``nn.Module``; it declares ``batched`` -- an
``[N, 3, H, W]`` batch or one ``[3, H, W]`` image -- and ``min_opset = (opset, reason)``). A model
without an export graph is refused with an :class:`ExportError` naming it.

What the graphs take and return
-------------------------------
**Semantic results** (``info.result = "semantic"``, task ``semantic``: U-Net, SegNet, FCN,
DeepLabV3/V3+, LR-ASPP), a batched graph::

    images   float32 [N, 3, H, W]   RGB in [0, 1]                     (N, H, W dynamic)
    ->
    logits   float32 [N, C, H, W]   class scores (pre-softmax) at the input resolution
    labels   int64   [N, H, W]      argmax over the C classes

Normalisation (the model's mean / std) and the zero padding to a multiple of the model's
``size_divisible`` happen inside the graph, and the output is cropped back to ``H x W``. Resizing
does not: the network runs at the resolution it is given (``model.predict`` first resizes the short
side to ``info.size.min_size``, recorded in the metadata; feed images of about that size to get the
accuracy the model was trained for). For an image whose short side already is ``min_size``,
``labels[i]`` equals ``model.predict([image])[0].labels``.

**Instance results** (``info.result = "instances"``, tasks ``detect`` / ``instance`` / ``pose``:
Faster / Mask / Keypoint R-CNN), one image per call::

    image            float32 [3, H, W]   RGB in [0, 1], one image          (H, W dynamic)
    ->
    boxes            float32 [D, 4]      XYXY in input-image pixels, best first
    scores           float32 [D]         class probabilities
    labels           int64   [D]         0..C-1 (``class_names[label]``)
    masks            float32 [D, H, W]   task ``instance``: mask probabilities pasted into the image
                                         (``model.predict`` keeps ``> mask_threshold``, in the metadata)
    keypoints        float32 [D, K, 3]   task ``pose``: ``(x, y, 1)`` in input-image pixels
    keypoint_scores  float32 [D, K]      task ``pose``: heatmap value at each keypoint

(which of them, in which order: ``info.export_outputs``). All of ``model.predict`` is inside the
graph: normalise, resize (short side to ``min_size``, long side at most ``max_size``), pad,
backbone, FPN, RPN, RoI heads, class-wise NMS, mask pasting and keypoint decoding, and the mapping
back to input pixels. These are the outputs of torchvision's exported detectors, except that
torchvision gives masks as ``[D, 1, H, W]`` and labels ``1..C``.

Metadata (``onnx`` ``metadata_props``; TorchScript: the extra file ``sceneparse.json``), all strings:
``sceneparse_version``, ``task`` (``info.task``: ``detect`` / ``instance`` / ``pose`` / ``semantic`` ...),
``result`` (``instances`` / ``semantic`` / ``panoptic``), ``model_info`` (JSON of
:meth:`ModelInfo.to_dict`, class names included: what the deployed graph is), ``model``,
``class_names`` (JSON list), ``categories`` (JSON, COCO-style, when known), ``inputs`` / ``outputs``
(JSON lists of ``{name, shape, dtype, description}``), ``preprocess`` (JSON: mean, std -- when the
model's info declares them in ``info.extra`` --, min_size, max_size, size_divisible, fixed_size,
normalize_in_graph, resize_in_graph), ``imgsz``, ``mask_threshold`` (models with masks),
``num_keypoints`` (models with keypoints).

Verification (``verify=True``): onnxruntime (CPU) runs the exported graph and eager PyTorch the
same code path untraced on the same inputs -- synthetic scenes at ``imgsz`` and, with
``dynamic=True``, at a second size of another aspect ratio (and a batch of 2 for batched graphs). The
report lists the max abs difference of every output; outside the tolerance (see
:data:`TOLERANCES`) or with another number of detections or other labels, :class:`ExportError`
is raised and no file is written. The ONNX model also passes ``onnx.checker.check_model(full_check=True)``.
Files are written atomically (temp file in the same folder, fsync, ``os.replace``).

Why tracing (``torch.onnx.export(..., dynamo=False)``, deprecated but supported in torch 2.14): the
default torch.export-based exporter needs ``onnxscript``, which sceneparse does not depend on, and
the detectors' outputs have data-dependent sizes everywhere (proposals, NMS, the keypoint loop). The
legacy exporter traces the code that runs eagerly; where an eager shortcut would freeze a size or a
count into the graph, the model code takes a tracing branch (``torch.jit.is_tracing()``: the
image resize / pad, anchors, RPN top-k, class-wise NMS, RoI levels, mask pasting, keypoint
decoding as an ONNX Loop). The eager paths are unchanged.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..errors import ExportError
from ..fileio import atomic_write_bytes
from ..models.base import ModelInfo, SceneModel, SizePolicy, model_info, unwrap

__all__ = ["export_onnx", "export_torchscript", "export_model", "ExportReport", "VerifyCase", "TensorSpec",
           "FORMATS", "TOLERANCES", "MASK_FLIP_FRACTION", "sample_images", "graph_module", "read_onnx_metadata"]

#: Export formats: file suffix of each.
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}

#: Verification tolerance per output: ``max |exported - eager| <= atol + rtol * max |eager|``. The
#: differences come from onnxruntime's kernels (convolutions, resampling) summing in another order
#: than PyTorch's: ~1e-7 on logits of the small models, ~1e-5 .. 1e-4 px on boxes of the ResNet-18
#: detectors at 64 .. 320 px, up to ~8e-3 px for randomly initialised ResNet-50 detectors at 800 px
#: (boxes amplify feature differences through ``exp`` of the size deltas) -- hence 5e-5 of the
#: coordinates (0.05 px at 1000 px): a size or scale frozen by the trace is off by pixels.
#: Masks (probabilities pasted into the image): at most :data:`MASK_FLIP_FRACTION` of the pixels may
#: change side of ``mask_threshold`` (what ``predict`` keeps), and no probability by more than 0.05
#: (a box corner that moves across an integer pixel shifts its pasted mask by one pixel; random
#: ResNet-50 Mask R-CNNs at 800 px differ by ~1.5e-3 elsewhere).
#: Segmentation labels may differ only where the two best logits are tied within tolerance.
#: Keypoints sit on the argmax cell of a bicubic upsampling: should two cells be within ~1e-6 of
#: each other, onnxruntime may pick the other one (a few px away), and the verification fails
#: rather than hide it.
TOLERANCES: dict[str, tuple[float, float]] = {
    "logits": (1e-4, 1e-4),
    "boxes": (1e-3, 5e-5),
    "scores": (1e-4, 0.0),
    "masks": (5e-2, 0.0),
    "keypoints": (1e-3, 5e-5),
    "keypoint_scores": (1e-3, 1e-4),
}


#: Largest fraction of mask pixels (over all detections) allowed on the other side of the threshold.
MASK_FLIP_FRACTION = 1e-3


#: ``graph.min_opset`` of a graph that does not declare it.
DEFAULT_MIN_OPSET = (11, "the graph declares no min_opset; 11 is the lowest this exporter supports")


# ---- the graph ------------------------------------------------------------------------------------

def _qualname(model: object) -> str:
    return f"{type(model).__module__}.{type(model).__name__}"


def _info(model: nn.Module) -> ModelInfo:
    """:func:`model_info`, as an :class:`ExportError` for a module that is not a sceneparse model."""
    m = unwrap(model)
    if not isinstance(m, SceneModel):
        raise ExportError(f"no export graph for {_qualname(m)}: not a sceneparse model (a SceneModel declaring "
                          "its ModelInfo and export_graph())", model=type(m).__name__)
    try:
        return model_info(m)
    except NotImplementedError as e:
        raise ExportError(f"no export graph for {_qualname(m)}: {e}", model=type(m).__name__) from None


def graph_module(model: nn.Module, name: str | None = None) -> nn.Module:
    """``model.export_graph()``: the traceable module that is exported, with an :class:`ExportError`
    naming the model (``name``, else its class) when it has none."""
    m = unwrap(model)
    info = _info(m)
    name = name or type(m).__name__
    if type(m).export_graph is SceneModel.export_graph:
        raise ExportError(f"no export graph for {_qualname(m)} (task {info.task}): its family does not implement "
                          "SceneModel.export_graph(), so there is no traceable graph to write", model=name)
    try:
        graph = m.export_graph()
    except ExportError as e:
        raise ExportError(f"no export graph for {_qualname(m)} (task {info.task}): {e}", model=name,
                          construct=e.construct) from e
    if not isinstance(graph, nn.Module):
        raise ExportError(f"{_qualname(m)}.export_graph() returned {type(graph).__name__}, not an nn.Module",
                          model=name)
    names = tuple(getattr(graph, "output_names", info.export_outputs))
    if not info.export_outputs or names != tuple(info.export_outputs):
        raise ExportError(f"{_qualname(m)}: the export graph's outputs {list(names)} are not ModelInfo.export_outputs "
                          f"{list(info.export_outputs)}", model=name)
    return graph


def _batched(graph: nn.Module, info: ModelInfo) -> bool:
    """Whether the graph takes an ``[N, 3, H, W]`` batch (else one ``[3, H, W]`` image): what the graph
    declares, else by result type (semantic maps come in batches, instances one image at a time)."""
    return bool(getattr(graph, "batched", info.result == "semantic"))


def _resize_in_graph(graph: nn.Module, batched: bool) -> bool:
    """Whether the graph resizes its input as ``predict`` does (single-image graphs run the whole of
    ``predict``; batched ones take images at the size the network runs at), unless it says otherwise."""
    return bool(getattr(graph, "resize_in_graph", not batched))


def _min_opset(graph: nn.Module) -> tuple[int, str]:
    opset, why = getattr(graph, "min_opset", DEFAULT_MIN_OPSET)
    return int(opset), str(why)


@dataclass
class _Subject:
    """What is exported: the model, what it says it is, and its graph."""

    model: nn.Module
    name: str
    info: ModelInfo
    class_names: list[str]
    categories: list[dict] | None
    graph: nn.Module
    batched: bool
    resize_in_graph: bool

    @property
    def output_names(self) -> list[str]:
        return list(self.info.export_outputs)


# ---- report ---------------------------------------------------------------------------------------

@dataclass
class TensorSpec:
    """One graph input or output; ``shape`` entries are ints or names of dynamic axes."""

    name: str
    shape: list
    dtype: str
    description: str


@dataclass
class VerifyCase:
    """One verification input: its size, what was compared and how far apart the outputs were.

    ``max_abs_diff`` / ``allowed``: per float output; ``detections``: ``(eager, exported)`` counts for
    detectors; ``label_flips``: segmentation pixels whose label differs where the two best logits
    are tied within the tolerance (allowed); ``mask_flip_fraction``: Mask R-CNN pixels on the other
    side of the mask threshold; ``failures``: why the case failed (empty when it passed)."""

    input_shape: list[int]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    allowed: dict[str, float] = field(default_factory=dict)
    detections: tuple[int, int] | None = None
    label_flips: int = 0
    mask_flip_fraction: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class ExportReport:
    """What :func:`export_onnx` / :func:`export_torchscript` wrote and how it was checked."""

    path: str
    format: str
    model: str
    task: str
    class_names: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    dynamic: bool
    opset: int | None = None
    checker: str = "not run"
    verified: bool = False
    cases: list[VerifyCase] = field(default_factory=list)
    trace_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    file_bytes: int = 0
    export_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for c, case in zip(d["cases"], self.cases):
            c["ok"] = case.ok
        return d

    def save_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        _atomic_write_bytes(Path(path), text.encode())

    def summary(self) -> str:
        lines = [f"{self.format} export of {self.model} ({self.task}, {len(self.class_names)} classes) -> {self.path} "
                 f"({self.file_bytes / 1e6:.1f} MB, {self.export_seconds:.1f} s"
                 + (f", opset {self.opset}" if self.opset else "") + ")"]
        for spec in self.inputs:
            lines.append(f"  input   {spec.name:16s} {spec.dtype:8s} {spec.shape}  {spec.description}")
        for spec in self.outputs:
            lines.append(f"  output  {spec.name:16s} {spec.dtype:8s} {spec.shape}  {spec.description}")
        if self.format == "onnx":
            lines.append(f"  onnx.checker: {self.checker}")
        if not self.cases:
            lines.append("  verification: not run")
        for case in self.cases:
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in case.max_abs_diff.items())
            dets = f", detections {case.detections[0]} eager / {case.detections[1]} exported" if case.detections else ""
            flips = f", {case.label_flips} tied-logit pixel labels differ" if case.label_flips else ""
            if case.mask_flip_fraction:
                flips += f", {case.mask_flip_fraction:.3%} mask pixels across the threshold"
            status = "ok" if case.ok else "FAILED: " + "; ".join(case.failures)
            lines.append(f"  verified on {case.input_shape}{dets}: max abs diff {diffs or '-'}{flips} [{status}]")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.trace_warnings:
            lines.append(f"  {len(self.trace_warnings)} tracer warnings (Python values the trace froze, mostly shape "
                         "checks; the check that matters is verification at a second size): report.trace_warnings")
        return "\n".join(lines)


# ---- inputs, specs, metadata ------------------------------------------------------------------------

def _pair(imgsz) -> tuple[int, int]:
    if isinstance(imgsz, (int, np.integer)):
        return int(imgsz), int(imgsz)
    h, w = (int(v) for v in imgsz)
    return h, w


def _default_imgsz(s: _Subject) -> tuple[int, int]:
    """The inference short side (``info.size.min_size``), square; the fixed size of fixed-size models."""
    size = s.info.size
    if size is None:
        raise ExportError("the model declares no input size policy (ModelInfo.size): pass imgsz", model=s.name)
    if size.fixed_size is not None:
        return int(size.fixed_size[0]), int(size.fixed_size[1])
    m = int(size.min_size[-1])
    return m, m


def _resized_size(size: SizePolicy, hw: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` an image of ``hw`` is resized to at inference by ``size`` (short side to
    ``min_size[-1]``, long side at most ``max_size``; the integer arithmetic of ``F.interpolate``)."""
    if size.fixed_size is not None:
        return int(size.fixed_size[0]), int(size.fixed_size[1])
    h, w = hw
    f = min(size.min_size[-1] / min(h, w), size.max_size / max(h, w))
    return int(math.floor(h * f)), int(math.floor(w * f))


def _second_size(hw: tuple[int, int], s: _Subject) -> tuple[int, int]:
    """A second verification size that changes what the graph computes with: another aspect ratio,
    sides not multiples of the size divisor (the padding in the graph is exercised) and, for graphs
    that resize, another padded network input after the in-graph resize (so that frozen anchors,
    strides or clipping sizes would show)."""
    policy = s.info.size
    d = max(1, int(policy.size_divisible)) if policy is not None else 1

    def odd(v: int) -> int:
        return v + 1 if v % d == 0 else v

    def padded(x: tuple[int, int]) -> tuple[int, int]:
        rh, rw = _resized_size(policy, x)
        return -(-rh // d) * d, -(-rw // d) * d

    h, w = hw
    candidates = [(odd(max(16, (5 * w) // 4)), odd(max(16, (3 * h) // 4))),
                  (odd(max(16, (3 * h) // 4)), odd(max(16, (5 * w) // 4))),
                  (odd(max(16, 2 * h)), odd(max(16, w // 2)))]
    if not s.resize_in_graph or policy is None:
        return candidates[0]
    first = padded(hw)
    return next((c for c in candidates if padded(c) != first), candidates[0])


def sample_images(size: tuple[int, int], count: int = 1, seed: int = 0) -> list[Tensor]:
    """Synthetic scenes (``float32 [3, H, W]`` in [0, 1]): textured stuff, shapes and people, so that
    a trained detector finds something to compare."""
    from ..data.synthetic import SyntheticConfig, generate_scene, image_rng

    cfg = SyntheticConfig(height=int(size[0]), width=int(size[1]))
    out = []
    for i in range(count):
        scene = generate_scene(image_rng(seed, i), cfg)
        out.append(torch.from_numpy(np.ascontiguousarray(scene.image)).permute(2, 0, 1).float().div(255.0))
    return out


def _specs(s: _Subject, dynamic: bool, imgsz: tuple[int, int]
           ) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, dict[int, str]]]:
    """The graph's input and outputs (names from ``info.export_outputs``) and their dynamic axes."""
    H, W = ("height", "width") if dynamic else imgsz
    info, C = s.info, s.info.num_classes
    names = s.output_names
    if s.batched:
        N = "batch" if dynamic else 1
        inputs = [TensorSpec("images", [N, 3, H, W], "float32", "RGB in [0, 1]")]
        known = {
            "logits": ([N, C, H, W], "float32", "class scores (pre-softmax)", {0: "batch", 2: "height", 3: "width"}),
            "labels": ([N, H, W], "int64", "argmax of logits over classes", {0: "batch", 1: "height", 2: "width"}),
        } if info.result == "semantic" else {}
        in_axes = {0: "batch", 2: "height", 3: "width"}
        default_axes = {0: "batch"}
    else:
        inputs = [TensorSpec("image", [3, H, W], "float32", "one RGB image in [0, 1]")]
        K, D = info.num_keypoints, "detections"
        known = {
            "boxes": ([D, 4], "float32", "XYXY in input-image pixels, best first", {0: D}),
            "scores": ([D], "float32", "class probability", {0: D}),
            "labels": ([D], "int64", f"class 0..{C - 1}", {0: D}),
            "masks": ([D, H, W], "float32", f"mask probabilities in the image (predict keeps > {info.mask_threshold})",
                      {0: D, 1: "height", 2: "width"}),
            "keypoints": ([D, K, 3], "float32", "(x, y, 1) in input-image pixels", {0: D}),
            "keypoint_scores": ([D, K], "float32", "heatmap value at the keypoint", {0: D}),
        } if info.result == "instances" else {}
        in_axes = {1: "height", 2: "width"}
        default_axes = {}
    unknown = [n for n in names if n not in known]
    if unknown:  # outputs this exporter has no description of: shapes and dtypes of an eager run
        example = _example(s.batched, imgsz)
        with torch.no_grad():
            got = dict(zip(names, s.graph(example)))
        for n in unknown:
            t = got[n]
            shape = [int(v) for v in t.shape]
            if s.batched and shape:
                shape[0] = N
            known[n] = (shape, str(t.dtype).replace("torch.", ""), "", dict(default_axes) if t.ndim else {})
    outputs = [TensorSpec(n, known[n][0], known[n][1], known[n][2]) for n in names]
    axes: dict[str, dict[int, str]] = {}
    if dynamic:
        axes[inputs[0].name] = in_axes
    for n in names:  # a count of detections is dynamic even in a static graph
        ax = {k: v for k, v in known[n][3].items() if dynamic or v == "detections"}
        if ax:
            axes[n] = ax
    return inputs, outputs, axes


def _metadata(s: _Subject, inputs: list[TensorSpec], outputs: list[TensorSpec], imgsz: tuple[int, int]
              ) -> dict[str, str]:
    info = s.info.named(s.class_names)
    size = info.size
    extra = dict(info.extra or {})
    meta = {
        "sceneparse_version": __version__,
        "task": info.task,
        "result": info.result,
        "model": s.name,
        "class_names": json.dumps(s.class_names),
        "inputs": json.dumps([asdict(x) for x in inputs]),
        "outputs": json.dumps([asdict(x) for x in outputs]),
        "preprocess": json.dumps({
            "mean": _plain(size.mean if size is not None and size.mean is not None else extra.get("mean")),
            "std": _plain(size.std if size is not None and size.std is not None else extra.get("std")),
            "min_size": None if size is None else int(size.min_size[-1]),
            "max_size": None if size is None else int(size.max_size),
            "size_divisible": None if size is None else int(size.size_divisible),
            "fixed_size": None if size is None or size.fixed_size is None else list(size.fixed_size),
            "normalize_in_graph": True, "resize_in_graph": s.resize_in_graph}),
        "imgsz": json.dumps(list(imgsz)),
        "model_info": json.dumps(info.to_dict(), default=_plain),
    }
    if s.categories:
        meta["categories"] = json.dumps(s.categories)
    if "masks" in info.export_outputs:
        meta["mask_threshold"] = repr(float(info.mask_threshold))
    if "keypoints" in info.export_outputs:
        meta["num_keypoints"] = str(info.num_keypoints)
    return meta


def _plain(v: Any) -> Any:
    """JSON-able form of a metadata value (tuples, tensors, numpy values)."""
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (Tensor, np.ndarray)):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sceneparse metadata of an exported ONNX file, JSON values decoded."""
    import onnx

    m = onnx.load(os.fspath(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in m.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except ValueError:
            out[prop.key] = prop.value
    return out


# ---- resolving the model -----------------------------------------------------------------------------

def _resolve(model, class_names, name) -> _Subject:
    """``model``: a :class:`SceneModel` (or a DDP wrapper of one), a :class:`LoadedModel` or a
    checkpoint path -> the model, what it is (``info``) and its export graph."""
    from .checkpoint import LoadedModel, model_from_checkpoint

    categories = None
    if isinstance(model, (str, os.PathLike)):
        model = model_from_checkpoint(model)
    if isinstance(model, LoadedModel):
        categories = [dict(c) for c in model.categories]
        class_names = class_names or model.class_names
        name = name or (model.config.get("model") or {}).get("name")
        model = model.model
    if not isinstance(model, nn.Module):
        raise ExportError(f"expected an nn.Module, a LoadedModel or a checkpoint path, got {type(model).__name__}")
    model = unwrap(model)
    info = _info(model)
    name = name or type(model).__name__
    num_classes = int(info.num_classes)
    if class_names is None:
        class_names = list(info.class_names) or [f"class_{i}" for i in range(num_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes:
        raise ExportError(f"{len(class_names)} class names for a model with {num_classes} classes", model=name)
    graph = graph_module(model, name)
    batched = _batched(graph, info)
    return _Subject(model, name, info, class_names, categories, graph, batched, _resize_in_graph(graph, batched))


# ---- tracing ------------------------------------------------------------------------------------------

class _CaptureTraceWarnings(warnings.catch_warnings):
    """Record ``TracerWarning``s as ``file:line: message`` (each names a construct that the trace froze
    into a constant); other warnings of the exporter are silenced."""

    def __init__(self):
        super().__init__(record=True)
        self.found: list[str] = []

    def __enter__(self):
        log = super().__enter__()
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", torch.jit.TracerWarning)
        self._log = log
        return self

    def __exit__(self, *exc):
        super().__exit__(*exc)
        seen = set()
        for w in self._log:
            if issubclass(w.category, torch.jit.TracerWarning):
                msg = f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0].split('. ')[0]}"
                if msg not in seen:
                    seen.add(msg)
                    self.found.append(msg)
        return False


def _describe_export_failure(e: BaseException) -> tuple[str, str | None]:
    """(message, construct) from an exporter exception: the unsupported operator when it names one."""
    import re

    text = str(e)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    first = first.split("  [Caused by")[0].replace(" Please feel free to request support or submit a pull request "
                                                    "on PyTorch GitHub: https://github.com/pytorch/pytorch/issues", "")
    m = (re.search(r"export of operator '?([\w:.]+)'?", text) or re.search(r"operator '([\w:.]+)'", text)
         or re.search(r"(aten::\w+|torchvision::\w+)", text))
    construct = f"operator {m.group(1)}" if m else None
    return f"torch.onnx.export failed ({type(e).__name__}): {first[:400]}", construct


class _QuietOutput:
    """Send file descriptors 1 and 2 to a temporary file while the exporter runs: on failure the
    legacy exporter logs the whole TorchScript graph (megabytes for a detector), which the
    :class:`ExportError` replaces. Whatever was written is passed on (to stderr) when it succeeds."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = [(fd, os.dup(fd)) for fd in (1, 2)]
        for fd, _ in self._saved:
            os.dup2(self._tmp.fileno(), fd)
        return self

    def __exit__(self, exc_type, *exc):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        if exc_type is None:
            self._tmp.seek(0)
            text = self._tmp.read().decode(errors="replace")
            if text.strip():
                sys.stderr.write(text)
        self._tmp.close()
        return False


def _ordered_warnings(found: Sequence[str], limit: int = 12) -> list[str]:
    """Tracer warnings most likely to break a trace first: Python int / float conversions, then
    booleans (mostly shape checks), then constants."""
    rank = lambda w: 0 if ("Python integer" in w or "Python float" in w or "Python index" in w) else (  # noqa: E731
        1 if "Python boolean" in w else 2)
    out = sorted(found, key=rank)
    return out[:limit] + ([f"... and {len(out) - limit} more (report.trace_warnings)"] if len(out) > limit else [])


def _example(batched: bool, size: tuple[int, int], batch: int = 1, seed: int = 0) -> Tensor:
    imgs = sample_images(size, batch, seed)
    return torch.stack(imgs) if batched else imgs[0]


def _verify_inputs(s: _Subject, imgsz: tuple[int, int], dynamic: bool, images: Sequence[Tensor] | None
                   ) -> list[Tensor]:
    if images is not None:
        imgs = [im.float() for im in images]
        return [im[None] for im in imgs] if s.batched else imgs
    cases = [_example(s.batched, imgsz, 1, seed=1)]
    if dynamic:
        cases.append(_example(s.batched, _second_size(imgsz, s), 2 if s.batched else 1, seed=2))
    return cases


def _count_cause(ref_scores: np.ndarray, got_scores: np.ndarray, conf: float | None, max_det: int | None) -> str:
    """Why eager PyTorch and the exported graph kept a different number of detections, from their scores."""
    n_e, n_x = len(ref_scores), len(got_scores)
    common = min(n_e, n_x)
    if common:
        best = np.abs(np.sort(ref_scores)[::-1][:common].astype(np.float64)
                      - np.sort(got_scores)[::-1][:common].astype(np.float64)).max()
        atol, rtol = TOLERANCES["scores"]
        if best > atol + rtol * float(np.abs(ref_scores).max()):
            return (f"the scores themselves differ (the best {common} by up to {best:.2g}, allowed {atol:g}): the "
                    "graph computes other values here, so other detections pass the threshold")
    if max_det is not None and max(n_e, n_x) >= max_det:
        return (f"at the max_det={max_det} cut: detections of near-equal scores on either side of it "
                "(tied scores, the kind a randomly initialised model has)")
    lows = [float(v.min()) for v in (ref_scores, got_scores) if len(v)]
    if conf is not None and lows and min(abs(v - conf) for v in lows) <= 1e-3:
        return (f"a score within 1e-3 of the score threshold conf={conf:g} (lowest scores: "
                + ", ".join(f"{w} {float(v.min()):.6f}" for w, v in (("eager", ref_scores), ("exported", got_scores))
                            if len(v)) + "): float rounding puts it on the other side")
    return ("the scores are not at a threshold: boxes and scores themselves differ (a size or value the trace "
            "froze, see below) or an NMS decision between boxes whose overlap is within rounding of the IoU "
            "threshold")


def _compare(names: Sequence[str], eager: Sequence[Tensor], exported: Sequence[np.ndarray], result: str,
             shape: list[int], mask_threshold: float = 0.5, conf: float | None = None,
             max_det: int | None = None) -> VerifyCase:
    """``result``: ``info.result`` (``instances``: detections are matched as sets before comparing);
    ``conf`` / ``max_det``: the model's, named when the detection counts differ."""
    case = VerifyCase(shape)
    ref = {n: t.detach().cpu().numpy() for n, t in zip(names, eager)}
    got = dict(zip(names, exported))
    if result == "instances" and {"boxes", "scores", "labels"} <= set(names):
        case.detections = (int(ref["boxes"].shape[0]), int(got["boxes"].shape[0]))
        if case.detections[0] != case.detections[1]:
            case.failures.append(f"{case.detections[0]} detections eagerly, {case.detections[1]} exported; cause: "
                                 + _count_cause(ref["scores"], got["scores"], conf, max_det))
            return case
        if case.detections[0] == 0:
            return case
        order = _match_detections(ref, got)
        got = {n: v[order] for n, v in got.items()}
    for n in names:
        a, b = ref[n], got[n]
        if a.shape != b.shape:
            case.failures.append(f"{n}: shape {list(b.shape)} exported vs {list(a.shape)} eager")
            continue
        if a.dtype.kind in "iub":
            differ = a != b
            if result == "semantic" and n == "labels" and "logits" in ref and differ.any():
                # argmax of logits that agree within tolerance: a pixel may flip where the two best
                # eager logits are closer than the logits' tolerance (twice the allowed difference)
                top2 = -np.sort(-ref["logits"], axis=1)[:, :2]
                margin = (top2[:, 0] - top2[:, 1])[differ]
                atol, rtol = TOLERANCES["logits"]
                close = margin <= 2 * (atol + rtol * float(np.abs(ref["logits"]).max()))
                case.label_flips = int(differ.sum())
                differ = differ.copy()
                differ[differ] = ~close
            bad = int(differ.sum())
            if bad:
                case.failures.append(f"{n}: {bad} of {a.size} values differ")
            continue
        if a.size == 0:
            continue
        if n == "masks":  # what predict keeps: the masks thresholded
            case.mask_flip_fraction = float(((a > mask_threshold) != (b > mask_threshold)).mean())
            if case.mask_flip_fraction > MASK_FLIP_FRACTION:
                case.failures.append(f"masks: {case.mask_flip_fraction:.2%} of the pixels change side of the "
                                     f"threshold {mask_threshold} (allowed {MASK_FLIP_FRACTION:.2%})")
        diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        atol, rtol = TOLERANCES.get(n, (1e-4, 1e-4))
        allowed = atol + rtol * float(np.abs(a).max())
        case.max_abs_diff[n], case.allowed[n] = diff, allowed
        if not diff <= allowed:
            case.failures.append(f"{n}: max abs diff {diff:.3g} > allowed {allowed:.3g}")
    return case


def _match_detections(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> np.ndarray:
    """Permutation of the exported detections that pairs each with an eager one (same label, closest
    box and score; Hungarian matching). Both lists are best first, but detections of equal score
    may come in either order, so they are compared as sets."""
    from scipy.optimize import linear_sum_assignment

    a_box, b_box = ref["boxes"].astype(np.float64), got["boxes"].astype(np.float64)
    cost = np.abs(a_box[:, None, :] - b_box[None, :, :]).max(axis=2)
    cost += np.abs(ref["scores"].astype(np.float64)[:, None] - got["scores"].astype(np.float64)[None, :])
    cost[ref["labels"][:, None] != got["labels"][None, :]] = 1e12
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(cols), dtype=np.int64)
    order[rows] = cols
    return order


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, durable=True)


class _EvalCPU:
    """Run with the model in eval mode on the CPU, restoring its mode (and device) afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self.was_training = self.model.training
        p = next(self.model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.model.eval().cpu()
        return self.model

    def __exit__(self, *exc):
        self.model.to(self.device).train(self.was_training)
        return False


def _ort_session(data: bytes, name: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # an op onnxruntime lacks, or an invalid graph
        raise ExportError(f"onnxruntime cannot load the exported graph (an operator of this opset it does not "
                          f"implement? 17 is tested): {str(e).splitlines()[0][:400]}", model=name) from None


# ---- the exporters ----------------------------------------------------------------------------------------

def export_onnx(model: nn.Module | str | os.PathLike, out_path: str | os.PathLike, *,
                imgsz: int | tuple[int, int] | None = None, opset: int = 17, dynamic: bool = True,
                verify: bool = True, class_names: Sequence[str] | None = None, name: str | None = None,
                images: Sequence[Tensor] | None = None) -> ExportReport:
    """Export ``model`` (a :class:`SceneModel` with an export graph, a :class:`LoadedModel`, or a
    sceneparse checkpoint path) to an ONNX file; see the module docstring for the graph's inputs,
    outputs and metadata.

    Args:
        imgsz: ``H`` or ``(H, W)`` of the example image traced and verified (default: the model's
            inference short side ``info.size.min_size``, square); with ``dynamic=False`` the only size
            the graph takes.
        opset: ONNX opset: at least the graph's ``min_opset`` (11 for segmentors and Faster R-CNN, 16
            for Mask / Keypoint R-CNN); at most what torch's exporter and the installed onnxruntime
            implement (17 is the tested default).
        dynamic: dynamic image sizes (and batch size for batched graphs).
        verify: compare onnxruntime with eager PyTorch (on ``images`` if given, else synthetic scenes at
            ``imgsz`` and a second size) and raise :class:`ExportError` outside :data:`TOLERANCES`.
        class_names: label names (default: from the checkpoint or ``info.class_names``, else ``class_0 ...``).
        name: model name for the metadata (default: the checkpoint's ``config.model.name``).
    Raises:
        ExportError: a model without an export graph (named), an unsupported opset, an operator the
            exporter / onnxruntime cannot handle (named), a checker failure, or a verification mismatch.
    """
    import onnx

    t0 = time.perf_counter()
    s = _resolve(model, class_names, name)
    name = s.name
    lowest, why = _min_opset(s.graph)
    if not (lowest <= int(opset) <= _max_opset()):
        raise ExportError(f"opset {opset} is not supported for {type(s.model).__name__}: use {lowest}..{_max_opset()} "
                          f"({why})", model=name)
    out_path = Path(out_path)
    with _EvalCPU(s.model), torch.no_grad():
        graph = s.graph.eval().cpu()
        imgsz = _pair(imgsz) if imgsz is not None else _default_imgsz(s)
        inputs, outputs, axes = _specs(s, dynamic, imgsz)
        output_names = [o.name for o in outputs]
        example = _example(s.batched, imgsz)
        buf = io.BytesIO()
        with _CaptureTraceWarnings() as cap:
            try:
                with _QuietOutput():
                    torch.onnx.export(graph, (example,), buf, dynamo=False, opset_version=int(opset),
                                      input_names=[inputs[0].name], output_names=output_names,
                                      dynamic_axes=axes or None, do_constant_folding=True)
            except Exception as e:
                msg, construct = _describe_export_failure(e)
                raise ExportError(msg, model=name, construct=construct) from e
        proto = onnx.load_from_string(buf.getvalue())
        meta = _metadata(s, inputs, outputs, imgsz)
        del proto.metadata_props[:]
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        proto.producer_name, proto.producer_version = "sceneparse", __version__
        proto.doc_string = f"sceneparse {s.info.task} model {name}; inputs/outputs: see metadata_props"
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as e:
            raise ExportError(f"onnx.checker rejects the exported graph: {str(e).splitlines()[0][:400]}",
                              model=name) from None
        data = proto.SerializeToString()
        report = ExportReport(str(out_path), "onnx", name, s.info.task, s.class_names, inputs, outputs, meta, dynamic,
                              opset=int(opset), checker="passed", trace_warnings=cap.found)
        if verify:
            session = _ort_session(data, name)
            for x in _verify_inputs(s, imgsz, dynamic, images):
                eager = graph(x)
                try:
                    got = session.run(output_names, {inputs[0].name: x.numpy()})
                except Exception as e:  # e.g. a size the trace froze that does not fit this input
                    report.cases.append(VerifyCase(list(x.shape), failures=[
                        f"onnxruntime failed: {str(e).splitlines()[0][:300]}"]))
                    continue
                report.cases.append(_compare(output_names, eager, got, s.info.result, list(x.shape),
                                             s.info.mask_threshold, s.info.conf, s.info.max_det))
            _raise_if_failed(report, name, s)
    _atomic_write_bytes(out_path, data)
    report.file_bytes = len(data)
    report.export_seconds = time.perf_counter() - t0
    return report


def export_torchscript(model: nn.Module | str | os.PathLike, out_path: str | os.PathLike, *,
                       imgsz: int | tuple[int, int] | None = None, dynamic: bool = True, verify: bool = True,
                       class_names: Sequence[str] | None = None, name: str | None = None,
                       images: Sequence[Tensor] | None = None) -> ExportReport:
    """Export the same graph as :func:`export_onnx` as a traced TorchScript module (``torch.jit.load``;
    the metadata is the extra file ``sceneparse.json``). Verified against eager PyTorch likewise.
    PyTorch has deprecated TorchScript (``torch.jit.save`` / ``load`` warn) in favour of ``torch.export``;
    it still works with torch 2.14, and ONNX is the format to prefer for deployment.
    ``dynamic=False`` only records that the graph was checked at ``imgsz`` alone: a trace is not
    specialised to its example size here (the sizes are computed in the graph)."""
    t0 = time.perf_counter()
    s = _resolve(model, class_names, name)
    name = s.name
    out_path = Path(out_path)
    with _EvalCPU(s.model), torch.no_grad():
        graph = s.graph.eval().cpu()
        imgsz = _pair(imgsz) if imgsz is not None else _default_imgsz(s)
        inputs, outputs, _ = _specs(s, dynamic, imgsz)
        example = _example(s.batched, imgsz)
        with _CaptureTraceWarnings() as cap:
            try:
                traced = torch.jit.trace(graph, (example,), check_trace=False, strict=False)
            except Exception as e:
                raise ExportError(f"torch.jit.trace failed ({type(e).__name__}): {str(e).splitlines()[0][:400]}",
                                  model=name) from e
        meta = _metadata(s, inputs, outputs, imgsz)
        buf = io.BytesIO()
        with warnings.catch_warnings():  # TorchScript is deprecated (FutureWarning) but still saves and loads
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(traced, buf, _extra_files={"sceneparse.json": json.dumps(meta)})
        data = buf.getvalue()
        report = ExportReport(str(out_path), "torchscript", name, s.info.task, s.class_names, inputs, outputs, meta,
                              dynamic, trace_warnings=cap.found)
        if verify:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                loaded = torch.jit.load(io.BytesIO(data))
            for x in _verify_inputs(s, imgsz, dynamic, images):
                eager = graph(x)
                try:
                    got = [t.numpy() for t in loaded(x)]
                except Exception as e:
                    report.cases.append(VerifyCase(list(x.shape), failures=[
                        f"the traced module failed: {str(e).splitlines()[0][:300]}"]))
                    continue
                report.cases.append(_compare([o.name for o in outputs], eager, got, s.info.result, list(x.shape),
                                             s.info.mask_threshold, s.info.conf, s.info.max_det))
            _raise_if_failed(report, name, s)
    _atomic_write_bytes(out_path, data)
    report.file_bytes = len(data)
    report.export_seconds = time.perf_counter() - t0
    return report


def export_model(model, out_path, *, format: str = "onnx", **kwargs) -> ExportReport:
    """:func:`export_onnx` or :func:`export_torchscript` by ``format`` (one of :data:`FORMATS`)."""
    if format == "onnx":
        return export_onnx(model, out_path, **kwargs)
    if format == "torchscript":
        kwargs.pop("opset", None)
        return export_torchscript(model, out_path, **kwargs)
    raise ExportError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")


def _resizes(s: _Subject | None, shape: Sequence[int]) -> tuple[int, int] | None:
    """The size the graph resizes an input of ``shape`` to, when it does (instance graphs resize
    inside; semantic graphs run at the size they are given), else ``None``."""
    if s is None or s.info.result != "instances" or s.info.size is None:
        return None
    hw = (int(shape[-2]), int(shape[-1]))
    to = _resized_size(s.info.size, hw)
    return to if to != hw else None


def _raise_if_failed(report: ExportReport, name: str, s: _Subject | None = None) -> None:
    if report.cases and all(c.detections == (0, 0) for c in report.cases):  # instance graphs only count
        report.notes.append("verification compared no detections (the model found nothing in the "
                                     "verification images): boxes, scores and labels were not compared")
    failed = [c for c in report.cases if not c.ok]
    if not failed:
        report.verified = bool(report.cases)
        return
    lines = [f"{c.input_shape}: " + "; ".join(c.failures) for c in failed]
    first = report.cases[0]
    if report.dynamic and len(report.cases) > 1 and first.ok:
        resized = [(c, _resizes(s, c.input_shape)) for c in failed]
        if report.format == "onnx" and _resizes(s, first.input_shape) is None and all(to for _, to in resized):
            lines.append(f"cause: at {resized[0][0].input_shape} the graph resizes the image, at the traced "
                         f"size {first.input_shape} it did not: onnxruntime's Resize and PyTorch's interpolate "
                         "differ by ~1e-5, which a trained model's scores can amplify beyond the tolerance (or a "
                         "value the trace froze: construct below)")
        else:
            lines.append(f"cause: the graph reproduces the model at the traced size {first.input_shape} but not at "
                         "another size: something in it depends on the input size as the trace saw it (construct "
                         "below)")
    if report.dynamic:
        lines.append("alternative: --static (dynamic=False) exports a graph for the one input size --imgsz, verified "
                     "at that size (give it images of that size: the network input, no resize in the graph); "
                     + ("--format torchscript resizes with PyTorch's own kernel; " if report.format == "onnx" else "")
                     + "--no-verify writes this graph unchecked")
    else:
        lines.append("alternative: --no-verify writes this graph unchecked (its outputs may differ as above)")
    construct = None
    if report.trace_warnings:
        construct = ("values the trace froze into constants (a size or a data-dependent value computed in Python "
                     "instead of in the graph):\n    " + "\n    ".join(_ordered_warnings(report.trace_warnings)))
    raise ExportError(f"the exported {report.format} graph does not reproduce the eager model (nothing written):\n  "
                      + "\n  ".join(lines), model=name, construct=construct)


def _max_opset() -> int:
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET

        return int(ONNX_MAX_OPSET)
    except ImportError:  # pragma: no cover - older / newer torch layouts
        return 20

