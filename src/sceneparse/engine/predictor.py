"""``Predictor``: a trained model applied to images, folders and globs, with files written for people
(annotated images) and for tools (COCO results JSON, label PNGs).

::

    from sceneparse import Predictor

    p = Predictor("runs/train/best.pt", conf=0.3)          # a checkpoint, a LoadedModel or an nn.Module
    results = p(["a.jpg", pil_image, hwc_uint8_array])     # list[Instances | SemanticMap], original pixels
    for pred in p.stream("photos/"):                       # images decoded ahead in background workers
        print(pred.path, len(pred.result))
    summary = p.run("photos/", "runs/predict")             # predictions.json, images/, failures.json

Inputs: ``float`` CHW tensors in ``[0, 1]`` (``uint8`` CHW tensors are divided by 255; 1- or
4-channel tensors become RGB), PIL images (any mode, EXIF orientation applied), numpy arrays in
channels-last RGB (``HxW``, ``HxWx1/3/4``; ``uint8`` / ``uint16`` / float in ``[0, 1]``), and paths.
Files (and in-memory images) are read by :mod:`sceneparse.data.images`, the one image reader (the
dataset's too), after ``ImageOps.exif_transpose``: grayscale and palette images become RGB, alpha is
dropped (not composited), 16-bit grayscale is divided by 65535 (16-bit RGB PNGs are read by Pillow at 8 bits).

Results are those of ``model.predict(images, conf=, iou=, max_det=, imgsz=)`` on the same batches:
the predictor passes its settings as arguments and never changes the model. What it writes follows
the model's :class:`~sceneparse.models.base.ModelInfo` (instance results, semantic or panoptic maps).
"""
from __future__ import annotations

import glob
import json
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..data.images import exception_reason as _reason
from ..data.images import read_image, to_image_tensor
from ..errors import ConfigError, DataError, Problem
from ..models.base import ModelInfo, SceneModel, model_info, resolve_imgsz
from ..structures.instances import Instances
from ..structures.segmaps import PanopticMap, SemanticMap
from .checkpoint import LoadedModel, model_from_checkpoint

Result = "Instances | SemanticMap | PanopticMap"

#: what ``run`` writes into ``out_dir``
PREDICTIONS_JSON = "predictions.json"
IMAGES_JSON = "images.json"
FAILURES_JSON = "failures.json"
RUN_JSON = "run.json"
RUN_TOOL = "sceneparse predict"  # run.json's "tool": what marks a record as ours
IMAGES_DIR = "images"
LABELS_DIR = "labels"
PANOPTIC_DIR = "panoptic"

_GLOB_CHARS = set("*?[")


# ---- small records -----------------------------------------------------------------------------
@dataclass
class Failure:
    """An image that could not be used. ``stage``: ``"read"`` (missing, unreadable, corrupt, truncated,
    empty, or of another size than ``--ann`` says), ``"predict"`` (the model raised), or ``"match"``
    (predicted and drawn, but absent from the ``--ann`` file, so left out of ``predictions.json``)."""

    path: str
    reason: str
    stage: str = "read"
    index: int = -1

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "stage": self.stage}

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Prediction:
    """One image's result. ``index``: position in the source; ``path``: the file (``None`` for
    in-memory images); ``image``: the decoded ``float32 [3, H, W]`` input (only with ``keep_images``)."""

    index: int
    path: Path | None
    result: Any  # Instances | SemanticMap
    image: torch.Tensor | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.result.image_size)


@dataclass
class PredictSummary:
    """What :meth:`Predictor.run` did."""

    out_dir: Path
    task: str
    total: int
    predicted: int
    instances: int
    failures: list[Failure]
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    complete: bool = True  # False: interrupted (Ctrl-C); the files hold the images done until then
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        """At least one image was predicted."""
        return self.predicted > 0

    @property
    def images_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "task": self.task, "total": self.total, "predicted": self.predicted,
                "instances": self.instances, "failures": [f.to_dict() for f in self.failures],
                "seconds": self.seconds, "files": {k: str(v) for k, v in self.files.items()},
                "complete": self.complete, "run_id": self.run_id}

    def __str__(self) -> str:
        what = f", {self.instances} instances" if self.task not in ("semantic", "panoptic") else ""
        lines = [f"predicted {self.predicted} of {self.total} images{what} in {self.seconds:.1f} s "
                 f"({self.images_per_second:.1f} img/s) -> {self.out_dir}"]
        if not self.complete:
            lines[0] = "INTERRUPTED: " + lines[0] + f" (partial: {RUN_JSON} says \"complete\": false)"
        for name, path in self.files.items():
            lines.append(f"  {name}: {path}")
        return "\n".join(lines)


# ---- sources --------------------------------------------------------------------------------------
def _image_suffixes() -> tuple[str, ...]:
    from ..data.formats._io import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _is_pathlike(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def resolve_source(source: Any, *, recursive: bool = False) -> tuple[list[Any], Path | None]:
    """Expand ``source`` into the list of items to predict and the folder their names are relative to.

    ``source`` is a file, a folder (its image files, sorted by path; ``recursive`` descends into
    sub-folders; hidden files are skipped), a glob pattern (``"data/**/*.jpg"``; ``**`` always
    recurses; matching files, sorted), an in-memory image, or a list of any of these (kept in order).
    Raises :class:`DataError` when a path does not exist or a folder / pattern yields no image.
    """
    if isinstance(source, (list, tuple)):
        items: list[Any] = []
        for s in source:
            if _is_pathlike(s):
                p = Path(s)
                items.extend(resolve_source(p, recursive=recursive)[0] if p.is_dir() or _has_glob(str(s)) else [p])
            else:
                items.append(s)
        paths = [os.path.abspath(p) for p in items if isinstance(p, Path)]
        root = Path(os.path.commonpath(paths)) if paths else None
        if root is not None and len(paths) == 1:
            root = root.parent
        return items, root
    if not _is_pathlike(source):
        if isinstance(source, torch.Tensor) and source.ndim == 4:
            return list(source), None
        return [source], None
    text = os.fspath(source)
    p = Path(text)
    suffixes = _image_suffixes()
    if p.is_dir():
        walk = p.rglob("*") if recursive else p.iterdir()
        files = [f for f in walk if f.suffix.lower() in suffixes and not f.name.startswith(".") and f.is_file()]
        files.sort(key=lambda f: f.relative_to(p).as_posix())
        if not files:
            raise DataError(Problem(text, None, None, "no image files in this folder" +
                                    ("" if recursive else " (sub-folders are searched with recursive=True)"),
                                    f"suffixes {', '.join(suffixes)}"))
        return files, p
    if p.is_file():
        return [p], p.parent
    if _has_glob(text):
        files = sorted((Path(f) for f in glob.glob(text, recursive=True) if os.path.isfile(f)),
                       key=lambda f: f.as_posix())
        if not files:
            raise DataError(Problem(text, None, None, "the pattern matches no file"))
        root = Path(os.path.commonpath([os.path.abspath(f) for f in files]))
        return files, (root.parent if len(files) == 1 else root)
    raise DataError(Problem(text, None, None, "source not found (not a file, a folder or a glob pattern)"))


def _has_glob(text: str) -> bool:
    return any(c in text for c in _GLOB_CHARS)


def _output_names(items: Sequence[Any], root: Path | None) -> list[str]:
    """Relative output name (posix, no suffix) of each item: the path relative to ``root``; a
    suffix is kept (``a_png``) where two files differ only by it; in-memory images are ``image_000001``."""
    names = []
    for i, it in enumerate(items):
        if isinstance(it, Path):
            try:
                rel = Path(os.path.abspath(it)).relative_to(os.path.abspath(root)) if root is not None else Path(it.name)
            except ValueError:
                rel = Path(it.name)
            names.append((rel.with_suffix("").as_posix(), it.suffix.lower().lstrip(".")))
        else:
            names.append((f"image_{i + 1:06d}", ""))
    stems = [n for n, _ in names]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    out = [s if counts[s] == 1 or not ext else f"{s}_{ext}" for s, ext in names]
    seen: dict[str, int] = {}
    for i, s in enumerate(out):  # still equal (same stem and suffix from the same list twice)
        if s in seen:
            seen[s] += 1
            out[i] = f"{s}_{seen[s]}"
        else:
            seen[s] = 0
    return out


# ---- decoding -------------------------------------------------------------------------------------
# read_image, to_image_tensor and _reason are sceneparse.data.images' (the one image reader; imported above)


class _Items(torch.utils.data.Dataset):
    """``items[i]`` decoded in a DataLoader worker: ``(i, tensor | None, reason | None)``; a file that
    cannot be read comes back as its reason, so one bad file never stops the loader."""

    def __init__(self, items: Sequence[Any], expect: Sequence[tuple[int, int] | None] | None = None):
        self.items = items
        self.expect = expect

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            if isinstance(item, Path):
                t = read_image(item, self.expect[i] if self.expect is not None else None)
            else:
                t = to_image_tensor(item, f"image {i}")
            return i, t, None
        except Exception as e:  # noqa: BLE001 -- reported per image, the loop goes on
            return i, None, _reason(e)


def _as_list(batch):
    return batch


class PredictionStream:
    """Iterator over :class:`Prediction` of a source, in source order. ``failures`` fills as it goes
    (with ``errors="skip"``); ``total`` is the number of source items."""

    def __init__(self, predictor: "Predictor", items: list[Any], *, workers: int, keep_images: bool, errors: str,
                 expect: list | None = None):
        if errors not in ("skip", "raise"):
            raise ConfigError(f"errors must be 'skip' or 'raise', got {errors!r}")
        self.predictor, self.items, self.workers = predictor, items, workers
        self.keep_images, self.errors, self.expect = keep_images, errors, expect
        self.total = len(items)
        self.failures: list[Failure] = []
        self.done = 0

    def __len__(self) -> int:
        return self.total

    def _fail(self, index: int, reason: str, stage: str) -> None:
        item = self.items[index]
        name = str(item) if isinstance(item, Path) else f"image {index}"
        if self.errors == "raise":
            raise DataError(Problem(name, None, None, reason))
        self.failures.append(Failure(name, reason, stage, index))

    def __iter__(self) -> Iterator[Prediction]:
        p = self.predictor
        any_file = any(isinstance(it, Path) for it in self.items)
        workers = self.workers if any_file else 0  # in-memory images: nothing to decode ahead
        loader = torch.utils.data.DataLoader(
            _Items(self.items, self.expect), batch_size=p.batch_size, shuffle=False, num_workers=workers,
            collate_fn=_as_list, prefetch_factor=2 if workers > 0 else None,
            pin_memory=p.device.type == "cuda")
        for batch in loader:
            ok = []
            for i, t, reason in batch:
                if reason is not None:
                    self._fail(i, reason, "read")
                else:
                    ok.append((i, t))
            results = p._predict_robust([t for _, t in ok])
            for (i, t), res in zip(ok, results):
                self.done += 1
                if isinstance(res, BaseException):
                    self._fail(i, f"prediction failed: {_reason(res)}", "predict")
                    continue
                item = self.items[i]
                yield Prediction(i, item if isinstance(item, Path) else None, res, t if self.keep_images else None)
            self.done += len(batch) - len(ok)


# ---- a run's record and Ctrl-C ---------------------------------------------------------------------
class _HoldInterrupt:
    """Ctrl-C while one image's results are being written waits until they are written (so that
    ``predictions.json`` never holds half an image); anywhere else it interrupts at once, as usual.
    Only in the main thread, and only while Python's own SIGINT handler is installed."""

    def __init__(self):
        self.busy = self.pending = False
        self.previous = None

    def __enter__(self) -> "_HoldInterrupt":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handler(self, signum, frame) -> None:
        if self.busy:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _inside(out: Path, rel: str) -> Path | None:
    """``out / rel`` when it stays inside ``out`` (a name read back from a file is not trusted)."""
    p = Path(os.path.abspath(out / rel))
    base = os.path.abspath(out)
    return p if os.path.commonpath([base, str(p)]) == base and str(p) != base else None


def clear_previous_run(out: Path, *, verbose: bool = False) -> list[str]:
    """Remove what an earlier ``run`` wrote into ``out``, so that files of two runs never sit side by
    side looking like one: the files its ``run.json`` lists (drawings, label and panoptic PNGs) and
    its ``predictions.json`` / ``images.json`` / ``failures.json`` / ``run.json`` (and temporary files
    of a run killed while writing them). A folder without a ``run.json`` of ours (``"tool": "sceneparse
    predict"``) or a ``failures.json`` holds no earlier run and is left alone; an earlier run from
    before ``run.json`` cannot say which drawings were its own: they are left, with a note. Returns
    notes for the user."""
    notes: list[str] = []
    record_path, failures_path = out / RUN_JSON, out / FAILURES_JSON
    record = None
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or record.get("tool") != RUN_TOOL:
            record = None  # another program's run.json: not a record of ours (it is replaced, nothing else)
    if record is None and not failures_path.is_file():
        return notes
    removed = 0
    outputs = record.get("outputs") if record is not None else None
    if isinstance(outputs, dict) and isinstance(outputs.get("names"), list):
        templates = [t for t in (outputs.get("files") or {}).values() if isinstance(t, str) and "{name}" in t]
        for name in outputs["names"]:
            if not isinstance(name, str):
                continue
            for t in templates:
                p = _inside(out, t.replace("{name}", name))
                if p is not None and (p.is_file() or p.is_symlink()):
                    p.unlink()
                    removed += 1
        for t in templates:  # folders left empty
            top = _inside(out, t.split("/", 1)[0])
            if top is not None and top.is_dir():
                for d in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [top]:
                    try:
                        d.rmdir()
                    except OSError:
                        pass
    else:
        kept = [d for d in (IMAGES_DIR, LABELS_DIR, PANOPTIC_DIR) if (out / d).is_dir()]
        if kept:
            notes.append(f"{out} holds an earlier predict run without {RUN_JSON}: its {', '.join(kept)} folder(s) "
                         f"may keep files this run does not replace; {RUN_JSON} lists this run's files")
    for name in (PREDICTIONS_JSON, IMAGES_JSON, FAILURES_JSON) + ((RUN_JSON,) if record is not None else ()):
        (out / name).unlink(missing_ok=True)
        for tmp in out.glob(f".{name}.*.tmp"):  # temp files of a run that was killed while writing
            tmp.unlink(missing_ok=True)
    if verbose and removed:
        print(f"removed {removed} file(s) of the earlier run in {out}", file=sys.stderr)
    return notes


# ---- the predictor --------------------------------------------------------------------------------
def _pick_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available")
    return dev


def _default_categories(num_classes: int) -> list[dict]:
    return [{"id": i + 1, "name": f"class_{i}"} for i in range(num_classes)]


class Predictor:
    """Run a model on images and write its results.

    Args:
        model: a checkpoint path (rebuilt with :func:`~sceneparse.engine.checkpoint.model_from_checkpoint`),
            a :class:`LoadedModel`, or a :class:`~sceneparse.models.base.SceneModel` (moved to ``device``).
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda:1"``, ...
        batch_size: images per forward pass.
        conf: score threshold (instances with ``score > conf`` are kept; lower values than the model's
            default give more detections). ``None``: the model's (``ModelInfo.conf``). Ignored (with a
            warning) by semantic models.
        iou: NMS IoU threshold; max_det: instances kept per image (``None``: the model's).
        categories: COCO category dicts in label order (``label i`` is ``categories[i]["id"]``); taken
            from the checkpoint when ``model`` is one; default for a bare model: ids ``1..C``.
        imgsz: the longer side of the network input (an ``int``: the image is scaled so that its long
            side is ``imgsz``, as in ``train --imgsz``) or ``(min_size, max_size)`` (torchvision's
            short-side target and long-side cap). ``None`` keeps the model's. Results are always in
            original-image pixels.
        workers: background processes decoding files ahead of the model (0: decode in this process).
        tile, tile_overlap: models whose ``predict`` takes them (``ModelInfo.options``, the semantic
            models): sliding-window inference on ``tile x tile`` windows (of the preprocessed image)
            overlapping by ``tile_overlap``, logits averaged where they overlap -- for images larger
            than the training size, with bounded memory.
        det: a detector (checkpoint path, :class:`LoadedModel` or model with instance results) whose
            boxes feed a model that takes boxes (:attr:`ModelInfo.box_input`, e.g. ``"person"`` for
            top-down pose): its detections of the class of that name (every class when it has none so
            named) with ``score > det_conf`` (``None``: the detector's default) go to the model's
            ``predict(boxes=, box_scores=)``, one detector pass per batch.
    """

    def __init__(self, model: "str | os.PathLike | LoadedModel | nn.Module", *, device: str | torch.device = "auto",
                 batch_size: int = 4, conf: float | None = None, categories: Sequence[dict] | None = None,
                 imgsz: int | tuple[int, int] | None = None, workers: int = 2, tile: int | None = None,
                 tile_overlap: float = 1 / 3, iou: float | None = None, max_det: int | None = None,
                 det: "str | os.PathLike | LoadedModel | nn.Module | None" = None, det_conf: float | None = None):
        self.device = _pick_device(device)
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if int(workers) < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        self.source_path: str | None = None
        self.last_summary: PredictSummary | None = None  # of the last run(), also an interrupted one
        if _is_pathlike(model):
            self.source_path = os.fspath(model)
            model = model_from_checkpoint(model, self.device)
        if isinstance(model, LoadedModel):
            self.model = model.model.to(self.device)
            self.categories = list(categories) if categories is not None else list(model.categories)
            self.config = model.config
            self.source_path = self.source_path or model.path
        elif isinstance(model, SceneModel):
            self.model = model.to(self.device)
            if categories is None:
                names = model_info(model).class_names
                categories = [{"id": i + 1, "name": str(n)} for i, n in enumerate(names)] if names else \
                    _default_categories(model_info(model).num_classes)
            self.categories = list(categories)
            self.config = {}
        else:
            raise ConfigError("model must be a checkpoint path, a LoadedModel or a sceneparse model (SceneModel), "
                              f"got {type(model).__name__}")
        self.info: ModelInfo = model_info(self.model)
        if self.info.num_classes != len(self.categories):
            raise ConfigError(f"the model has {self.info.num_classes} classes but {len(self.categories)} categories "
                              "were given")
        self.conf = None if conf is None else float(conf)
        self.iou = None if iou is None else float(iou)
        self.max_det = None if max_det is None else int(max_det)
        self.model.settings(self.conf, self.iou, self.max_det)  # range checks, ConfigError
        if self.conf is not None and self.info.result != "instances":
            warnings.warn(f"conf applies to models with instance results; ignored for a {self.task} model",
                          stacklevel=2)
        self.imgsz = resolve_imgsz(imgsz)
        self.options: dict[str, Any] = {}
        if tile is not None:
            if "tile" not in self.info.options:
                raise ConfigError(f"tile (sliding-window inference) is not an option of this {self.task} model; "
                                  f"its predict takes {sorted(self.info.options) or 'no options'}")
            if int(tile) < 16:
                raise ConfigError(f"tile must be at least 16 px, got {tile}")
            self.options = {"tile": int(tile), "tile_overlap": float(tile_overlap)}
        if not 0.0 <= float(tile_overlap) < 1.0:
            raise ConfigError(f"tile_overlap must lie in [0, 1), got {tile_overlap}")
        self.tile = None if tile is None else int(tile)
        self.tile_overlap = float(tile_overlap)
        self.detector, self.det_label, self.det_conf = self._load_detector(det, det_conf)
        self.model.eval()

    def _load_detector(self, det: Any, det_conf: float | None) -> tuple[Any, int | None, float | None]:
        """``(detector model, label of the box_input class or None for all, conf)`` for ``det``, or Nones."""
        if det is None:
            if det_conf is not None:
                raise ConfigError("det_conf was given without a detector (det)")
            return None, None, None
        box_class = self.info.box_input
        if box_class is None:
            raise ConfigError(f"a detector (--det) feeds models that take boxes; this {self.task} model takes none "
                              "(its ModelInfo.box_input is None)")
        if _is_pathlike(det):
            det = model_from_checkpoint(det, self.device)
        if isinstance(det, LoadedModel):
            model, names = det.model, [str(c.get("name", c.get("id"))) for c in det.categories]
        elif isinstance(det, SceneModel):
            model, names = det, list(model_info(det).class_names)
        else:
            raise ConfigError("det must be a checkpoint path, a LoadedModel or a sceneparse model (SceneModel), "
                              f"got {type(det).__name__}")
        info = model_info(model)
        if info.result != "instances" or "bbox" not in info.iou_types:
            raise ConfigError(f"the detector (--det) must give boxes; it is a {info.task} model")
        model.settings(det_conf)  # range check
        label = names.index(box_class) if box_class in names else None
        if label is None:
            warnings.warn(f"the detector has no class named {box_class!r} (classes {names}); all its detections "
                          "are used as boxes", stacklevel=3)
        return model.to(self.device).eval(), label, None if det_conf is None else float(det_conf)

    def detector_boxes(self, images: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The detector's boxes and scores per image (of the :attr:`ModelInfo.box_input` class)."""
        with torch.no_grad():
            dets = self.detector.predict(images, conf=self.det_conf)
        keep = [torch.ones(len(d), dtype=torch.bool, device=d.boxes.device) if self.det_label is None
                else d.labels == self.det_label for d in dets]
        return [d.boxes[k] for d, k in zip(dets, keep)], [d.scores[k] for d, k in zip(dets, keep)]

    # ---- properties -------------------------------------------------------------------------
    @property
    def task(self) -> str:
        """The model's task (:attr:`ModelInfo.task`)."""
        return self.info.task

    @property
    def class_names(self) -> list[str]:
        return [str(c.get("name", c.get("id"))) for c in self.categories]

    def __repr__(self) -> str:
        name = self.config.get("model", {}).get("name") if self.config else type(self.model).__name__
        det = "" if self.detector is None else f", det={type(self.detector).__name__}, det_conf={self.det_conf}"
        return (f"Predictor({name!r}, task={self.task!r}, classes={len(self.categories)}, device={str(self.device)!r}, "
                f"batch_size={self.batch_size}, conf={self.conf}, iou={self.iou}, max_det={self.max_det}, "
                f"imgsz={self.imgsz}{det})")

    # ---- prediction -----------------------------------------------------------------------------
    def predict_tensors(self, images: Sequence[torch.Tensor]) -> list:
        """``float32 [3, H, W]`` tensors -> results on the CPU, ``batch_size`` images per forward pass."""
        out = []
        for s in range(0, len(images), self.batch_size):
            chunk = [im.to(self.device, non_blocking=True) for im in images[s:s + self.batch_size]]
            options = dict(self.options)
            if self.detector is not None:
                options["boxes"], options["box_scores"] = self.detector_boxes(chunk)
            with torch.no_grad():
                res = self.model.predict(chunk, conf=self.conf, iou=self.iou, max_det=self.max_det, imgsz=self.imgsz,
                                         **options)
            out += [r.to("cpu") for r in res]
        return out

    def _predict_robust(self, images: list[torch.Tensor]) -> list:
        """Like :meth:`predict_tensors`, but when a batch raises, its images are retried one by one
        and the exception of each failing image takes its place in the list."""
        if not images:
            return []
        try:
            return self.predict_tensors(images)
        except Exception:  # noqa: BLE001
            if len(images) == 1:
                return [sys.exc_info()[1]]
        out = []
        for im in images:
            try:
                out += self.predict_tensors([im])
            except Exception as e:  # noqa: BLE001
                out.append(e)
        return out

    def __call__(self, images: Any) -> list:
        """Results of ``images`` (one image, a list, a ``[B, 3, H, W]`` tensor, a file, folder or glob),
        as ``list[Instances | SemanticMap]`` in source order. Strict: the first unreadable file raises
        :class:`DataError` naming it (use :meth:`stream` / :meth:`run` to skip bad files)."""
        items, _ = resolve_source(images)
        return self.predict_tensors([to_image_tensor(it, f"image {i}") for i, it in enumerate(items)])

    def stream(self, source: Any, *, recursive: bool = False, workers: int | None = None, keep_images: bool = False,
               errors: str = "skip") -> PredictionStream:
        """Iterate over :class:`Prediction` of ``source`` (see :func:`resolve_source`) in source order.

        Files are decoded ahead by ``workers`` background processes of a ``DataLoader`` (default:
        the predictor's), so decoding overlaps the model. ``errors="skip"`` goes past files that
        cannot be read or predicted and lists them in the stream's ``failures``; ``"raise"`` stops
        with a :class:`DataError` naming the first. ``keep_images`` attaches each decoded input.
        """
        items, _ = resolve_source(source, recursive=recursive)
        return PredictionStream(self, items, workers=self.workers if workers is None else int(workers),
                                keep_images=keep_images, errors=errors)

    # ---- files -------------------------------------------------------------------------------------
    def run(self, source: Any, out_dir: str | os.PathLike = "runs/predict", *, save_json: bool = True,
            save_images: bool = True, save_labels: bool = True, ann: str | os.PathLike | None = None,
            recursive: bool = False, workers: int | None = None, image_format: str = "jpg",
            progress: bool = True, verbose: bool = True,
            on_result: Callable[[Prediction], None] | None = None, draw_conf: float = 0.25) -> PredictSummary:
        """Predict ``source`` and write the results under ``out_dir``:

        * ``predictions.json`` (instance results, ``save_json``): COCO results (bbox, segmentation as
          compressed RLE, keypoints ``x, y, score``), streamed to disk and renamed into place at the end.
          Image ids: with ``ann`` (a COCO JSON) those of its images, matched by file name (the path
          relative to the source folder, else the base name when unique); images it lacks are
          predicted and drawn but left out (listed as failures of stage ``"match"``), and an image
          whose size differs from its record is a failure. Without ``ann``: ids from the file stems
          when all are distinct numbers (``000123.jpg`` -> 123, as ``sceneparse convert`` assigns
          them), else ``1..N`` in source order; they are listed with file name, height and width in
          ``images.json`` (a COCO file with empty ``annotations``), so ground truth made for the same
          files scores them with ``sceneparse eval``.
        * ``predictions.json`` + ``panoptic/<name>.png`` (panoptic results, ``save_json``): COCO
          panoptic results (one annotation per image: ``image_id``, ``file_name`` of its PNG,
          ``segments_info`` with dataset category ids), the format of ``sceneparse eval --type panoptic``.
        * ``labels/<name>.png`` (semantic, ``save_labels``): label maps, one ``uint8`` palette PNG
          per image whose pixel values are the labels ``0..C-1`` (255 = void), the format of
          ``sceneparse eval --type semantic`` and :func:`~sceneparse.data.formats.read_semantic_pngs`;
          the palette gives viewers the classes' drawing colours.
        * ``images/<name>.<image_format>`` (``save_images``): the image with boxes, masks and
          keypoints (detection; only detections with ``score >= draw_conf``, default 0.25, so the
          picture stays readable -- the JSON keeps every detection above ``conf`` for AP) or tinted
          classes with names (semantic) drawn on it.
        * ``failures.json``: ``[{"path", "reason", "stage"}]`` for every image that could not be used.
        * ``run.json``: the run's record: ``run_id`` (also in ``images.json``'s / panoptic
          ``predictions.json``'s ``info``), ``complete`` (``false`` while running and after Ctrl-C),
          ``state`` (``running`` / ``complete`` / ``interrupted`` / ``failed``), counts (``total``,
          ``predicted``, ``failed``, ``not_reached``, ``instances``), times, and the files it writes
          (``outputs``: templates and names).

        ``<name>`` is the file's path relative to the source folder, without its suffix. Before
        writing, the files of an earlier run in ``out_dir`` are removed (:func:`clear_previous_run`),
        so that the folder never holds two runs' files side by side.

        Ctrl-C (a ``KeyboardInterrupt``, also from ``on_result``) keeps what was done: the drawings
        already queued are finished, ``predictions.json`` / ``images.json`` are closed as valid files
        holding every image predicted so far (an image's records are written whole), ``failures.json``
        lists the failures so far and ``run.json`` says ``"complete": false``; then the
        ``KeyboardInterrupt`` goes on (the summary is :attr:`last_summary`). Any other error removes the
        unfinished JSON files and marks ``run.json`` ``failed``.
        ``on_result(prediction)`` is called for each predicted image (after its files are queued).
        Unreadable, corrupt, truncated and empty files are skipped and listed; ``verbose`` prints them
        and the summary at the end.
        """
        from tqdm import tqdm

        from ..data.formats.coco_results import CocoResultsWriter, JsonListWriter

        t0 = time.perf_counter()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        items, root = resolve_source(source, recursive=recursive)
        names = _output_names(items, root)
        image_format = image_format.lower().lstrip(".")
        if image_format not in ("jpg", "jpeg", "png"):
            raise ConfigError(f"image_format must be jpg or png, got {image_format!r}")
        detection = self.info.result == "instances"
        panoptic = self.info.result == "panoptic"
        semantic_labels = save_labels and self.info.result == "semantic"
        ids, expect = self._image_ids(items, names, root, ann)
        # the inputs are valid: this run replaces the earlier one, whose files must not mix with its own
        notes = clear_previous_run(out, verbose=verbose)
        run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        templates = {}
        if save_images:
            templates["images"] = f"{IMAGES_DIR}/{{name}}.{image_format}"
        if semantic_labels:
            templates["labels"] = f"{LABELS_DIR}/{{name}}.png"
        if panoptic and save_json:
            templates["panoptic"] = f"{PANOPTIC_DIR}/{{name}}.png"
        record: dict[str, Any] = {
            "tool": RUN_TOOL, "run_id": run_id, "complete": False, "state": "running", "started": _now(), "finished": None,
            "model": self.source_path, "task": self.task,
            "source": os.fspath(source) if _is_pathlike(source) else None, "ann": None if ann is None else str(ann),
            "total": len(items), "predicted": 0, "failed": 0, "not_reached": len(items), "instances": 0,
            "outputs": {"json": [n for n, on in ((PREDICTIONS_JSON, save_json and (detection or panoptic)),
                                                 (IMAGES_JSON, save_json and (detection or panoptic) and ann is None),
                                                 (FAILURES_JSON, True)) if on],
                        "files": templates, "names": names}}
        from ..fileio import atomic_write_text

        def write_record() -> Path:
            return atomic_write_text(out / RUN_JSON, json.dumps(record, indent=1) + "\n")

        write_record()
        failures: list[Failure] = []
        files: dict[str, Path] = {}
        writers: list[JsonListWriter] = []
        preds_w = images_w = None
        if panoptic and save_json:
            head = json.dumps({"info": {"description": "panoptic predictions of sceneparse predict", "run_id": run_id},
                               "categories": self.categories})
            preds_w = JsonListWriter(out / PREDICTIONS_JSON, prefix=head[:-1] + ', "annotations": [\n',
                                     suffix="\n]}\n")
            writers.append(preds_w)
        if detection and save_json:
            preds_w = CocoResultsWriter(out / PREDICTIONS_JSON, self.categories)
            writers.append(preds_w)
        if (detection or panoptic) and save_json:
            if ann is None:
                head = json.dumps({"info": {"description": "images predicted by sceneparse predict",
                                            "source": str(source) if _is_pathlike(source) else None,
                                            "run_id": run_id},
                                   "categories": self.categories, "annotations": []})
                images_w = JsonListWriter(out / IMAGES_JSON, prefix=head[:-1] + ', "images": [\n', suffix="\n]}\n")
                writers.append(images_w)
        stream = PredictionStream(self, items, workers=self.workers if workers is None else int(workers),
                                  keep_images=save_images, errors="skip", expect=expect)
        saver = ThreadPoolExecutor(max_workers=1) if (save_images or semantic_labels) else None
        pending: list[Future] = []
        predicted = instances = 0
        interrupted = False
        bar = tqdm(total=len(items), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
        guard = _HoldInterrupt()
        try:
            with guard:
                try:
                    for pred in stream:
                        i = pred.index
                        with guard.held():  # one image's records are written whole, even on Ctrl-C
                            predicted += 1
                            if detection or panoptic:
                                instances += len(pred.result) if detection else len(pred.result.segments)
                                if preds_w is not None:
                                    if ids[i] is None:
                                        failures.append(Failure(str(items[i]), f"no image with this file name in "
                                                                f"{ann}; predicted and drawn, left out of "
                                                                "predictions.json", "match", i))
                                    else:
                                        if detection:
                                            preds_w.add(pred.result, ids[i], file=str(items[i]))
                                        else:
                                            preds_w.write(self._panoptic_record(out, names[i], pred.result, ids[i]))
                                        if images_w is not None:
                                            h, w = pred.result.image_size
                                            images_w.write({"id": ids[i], "file_name": self._file_name(items[i], root,
                                                                                                      names[i]),
                                                            "height": h, "width": w})
                            if saver is not None:
                                pending.append(saver.submit(self._save_outputs, out, names[i], pred.result,
                                                            pred.image if save_images else None, image_format,
                                                            semantic_labels, draw_conf))
                        while len(pending) > 2 * self.batch_size + 2:  # bounded: memory does not grow
                            pending.pop(0).result()
                        if on_result is not None:
                            on_result(pred)
                        bar.update(stream.done - bar.n)
                except KeyboardInterrupt:
                    interrupted = True  # keep what was done: drawings queued so far, then the JSON closed
                bar.update(stream.done - bar.n)
                try:
                    for f in pending:
                        f.result()
                except KeyboardInterrupt:  # a second Ctrl-C: the drawings still queued are dropped
                    interrupted = True
                    for f in pending:
                        f.cancel()
                pending.clear()
                with guard.held():
                    for w in writers:
                        files["predictions" if w is preds_w else "images_json"] = w.close()
        except BaseException as e:
            for f in pending:
                f.cancel()
            for w in writers:
                w.abort()
            record.update(state="failed", finished=_now(), error=f"{type(e).__name__}: {e}"[:500],
                          predicted=predicted)
            try:
                write_record()
            except Exception:  # noqa: BLE001 -- e.g. the disk is full: the error that matters is e
                pass
            raise
        finally:
            bar.close()
            if saver is not None:
                saver.shutdown(wait=True)
        failures = sorted(stream.failures + failures, key=lambda f: f.index)
        files["failures"] = atomic_write_text(out / FAILURES_JSON,
                                              json.dumps([f.to_dict() for f in failures], indent=1) + "\n")
        if save_images:
            files["images"] = out / IMAGES_DIR
        if semantic_labels:
            files["labels"] = out / LABELS_DIR
        if panoptic and save_json:
            files["panoptic"] = out / PANOPTIC_DIR
        seconds = time.perf_counter() - t0
        record.update(complete=not interrupted, state="interrupted" if interrupted else "complete",
                      finished=_now(), seconds=round(seconds, 3), predicted=predicted, instances=instances,
                      failed=len({f.index for f in stream.failures}), not_reached=len(items) - stream.done,
                      files={k: os.path.relpath(v, out) for k, v in files.items()})
        files["run"] = write_record()
        summary = PredictSummary(out, self.task, len(items), predicted, instances, failures, seconds, files,
                                 complete=not interrupted, run_id=run_id)
        self.last_summary = summary
        if verbose:
            print(summary)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            if failures:
                print(f"{len(failures)} image(s) with problems (also in {files['failures']}):", file=sys.stderr)
                for f in failures[:20]:
                    print(f"  {f}", file=sys.stderr)
                if len(failures) > 20:
                    print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
        if interrupted:
            if verbose:
                print(f"interrupted after {stream.done} of {len(items)} images: {out} holds the results of the "
                      f"{predicted} predicted ({RUN_JSON}: \"complete\": false)", file=sys.stderr)
            raise KeyboardInterrupt
        return summary

    @staticmethod
    def _file_name(item: Any, root: Path | None, name: str) -> str:
        if isinstance(item, Path) and root is not None:
            try:
                return Path(os.path.abspath(item)).relative_to(os.path.abspath(root)).as_posix()
            except ValueError:
                return item.name
        return item.name if isinstance(item, Path) else name

    def _image_ids(self, items: list, names: list[str], root: Path | None, ann) -> tuple[list, list | None]:
        """Dataset image id (or ``None``: not in ``ann``) and expected ``(h, w)`` of every item."""
        if ann is None:
            from ..data.formats._io import ids_from_stems

            if all(isinstance(it, Path) for it in items):
                return ids_from_stems([it.stem for it in items]), None
            return list(range(1, len(items) + 1)), None
        from ..data.formats.coco import load_json, parse_images

        ann = Path(ann)
        records, _ = parse_images(load_json(ann).get("images"), str(ann))
        by_name = {Path(r.file_name).as_posix(): r for r in records}
        by_base: dict[str, list] = {}
        for r in records:
            by_base.setdefault(Path(r.file_name).name, []).append(r)
        ids, expect = [], []
        for it, name in zip(items, names):
            rec = None
            if isinstance(it, Path):
                rec = by_name.get(self._file_name(it, root, name))
                if rec is None and len(by_base.get(it.name, ())) == 1:
                    rec = by_base[it.name][0]
            ids.append(None if rec is None else int(rec.id))
            expect.append(None if rec is None or not (rec.height and rec.width) else (int(rec.height), int(rec.width)))
        return ids, expect

    def _panoptic_record(self, out: Path, name: str, result: PanopticMap, image_id: int) -> dict:
        """Write ``panoptic/<name>.png`` and return the image's COCO panoptic annotation (category ids
        from the segments' labels)."""
        from ..conventions import CategoryMap
        from ..data.formats.coco_panoptic import segments_from_map, write_panoptic_png

        png = f"{name}.png"
        write_panoptic_png(out / PANOPTIC_DIR / png, result)
        cats = CategoryMap.from_coco(self.categories)
        return {"image_id": int(image_id), "file_name": png, "segments_info": segments_from_map(result, cats)}

    def _save_outputs(self, out: Path, name: str, result: Any, image: torch.Tensor | None, image_format: str,
                      save_label: bool, draw_conf: float = 0.0) -> None:
        """Draw / write one image's files (runs in the saver thread; ``image`` None: no drawing)."""
        from ..viz.colors import class_colors

        if isinstance(result, SemanticMap):
            if save_label:
                from ..data.formats.pngmasks import write_semantic_png

                write_semantic_png(out / LABELS_DIR / f"{name}.png", result,
                                   palette=class_colors(max(1, len(self.categories))))
            if image is not None:
                from ..viz.draw import draw_semantic, save_image as save

                save(out / IMAGES_DIR / f"{name}.{image_format}", draw_semantic(image, result, self.class_names))
        elif isinstance(result, PanopticMap):
            if image is not None:
                from ..viz.draw import draw_panoptic, save_image as save

                save(out / IMAGES_DIR / f"{name}.{image_format}", draw_panoptic(image, result, self.class_names))
        elif image is not None:
            from ..viz.draw import draw_instances, save_image as save

            save(out / IMAGES_DIR / f"{name}.{image_format}",
                 draw_instances(image, result, self.class_names, score_threshold=draw_conf,
                                keypoint_set=self.info.keypoints))


__all__ = ["Failure", "Prediction", "PredictSummary", "PredictionStream", "Predictor", "clear_previous_run",
           "read_image", "resolve_source", "to_image_tensor"]
