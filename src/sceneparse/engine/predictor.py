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
Files are read with :func:`~sceneparse.data.datasets.pil_to_tensor` after
``ImageOps.exif_transpose``: grayscale and palette images become RGB, alpha is dropped (not
composited), 16-bit grayscale is divided by 65535 (16-bit RGB PNGs are read by Pillow at 8 bits).

Results are those of ``model.predict`` on the same batches: the predictor only sets the score
threshold (``conf``) and the resize (``imgsz``) for the duration of its calls and restores them.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, Problem
from ..structures.instances import Instances
from ..structures.segmaps import SemanticMap
from .checkpoint import TASKS, LoadedModel, model_from_checkpoint

Result = "Instances | SemanticMap"

#: what ``run`` writes into ``out_dir``
PREDICTIONS_JSON = "predictions.json"
IMAGES_JSON = "images.json"
FAILURES_JSON = "failures.json"
IMAGES_DIR = "images"
LABELS_DIR = "labels"

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
                "seconds": self.seconds, "files": {k: str(v) for k, v in self.files.items()}}

    def __str__(self) -> str:
        what = f", {self.instances} instances" if self.task == "detection" else ""
        lines = [f"predicted {self.predicted} of {self.total} images{what} in {self.seconds:.1f} s "
                 f"({self.images_per_second:.1f} img/s) -> {self.out_dir}"]
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
def _reason(e: BaseException) -> str:
    if isinstance(e, DataError) and e.problems:
        return e.problems[0].message
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}"[:300]


def read_image(path: str | os.PathLike, expect: tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image file as ``float32 [3, H, W]`` RGB in ``[0, 1]`` with EXIF orientation applied.

    ``expect``: the ``(height, width)`` an annotation file gives the image. When only the stored
    (un-rotated) pixels have that size, the annotations were made on them and the EXIF orientation
    is ignored (the rule of :class:`~sceneparse.data.datasets.SceneDataset`); a size matching neither
    raises. Raises :class:`DataError` naming the file for missing, empty, unreadable, corrupt or
    truncated files.
    """
    from PIL import Image, ImageOps

    from ..data.datasets import pil_to_tensor

    path = Path(path)
    where = (str(path), None, None)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(Problem(*where, "file not found")) from None
    except OSError as e:
        raise DataError(Problem(*where, f"cannot access the file: {_reason(e)}")) from None
    if size == 0:
        raise DataError(Problem(*where, "empty file (0 bytes)"))
    try:
        with Image.open(path) as raw:
            raw.load()  # PIL decodes lazily; truncated or corrupt data surfaces here
            img = ImageOps.exif_transpose(raw)
            if expect is not None and (img.height, img.width) != tuple(expect):
                if (raw.height, raw.width) == tuple(expect):
                    img = raw
                else:
                    raise DataError(Problem(*where, f"the image is {img.height}x{img.width} (HxW) but the "
                                            f"annotation file says {expect[0]}x{expect[1]}"))
            return pil_to_tensor(img)
    except DataError:
        raise
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), DecompressionBombError, ...
        raise DataError(Problem(*where, f"unreadable image ({_reason(e)})")) from None


def to_image_tensor(image: Any, where: str = "image") -> torch.Tensor:
    """An in-memory image or a path -> ``float32 [3, H, W]`` RGB in ``[0, 1]`` (see the module notes).
    Raises :class:`DataError` naming ``where`` for shapes, dtypes and value ranges it cannot take."""
    if _is_pathlike(image):
        return read_image(image)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise DataError(Problem(None, where, "shape", "a tensor image must be [3, H, W] (or [1|4, H, W], "
                                    "[H, W]); channels first", tuple(image.shape)))
        return _finish(t, where, "tensor")
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from ..data.datasets import pil_to_tensor

        return pil_to_tensor(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise DataError(Problem(None, where, "shape", "an array image must be [H, W, 3] (or [H, W], "
                                    "[H, W, 1|4]); channels last, RGB", image.shape))
        if a.dtype == np.uint16:
            t = torch.from_numpy(a.astype(np.float32) / 65535.0).permute(2, 0, 1)
        elif a.dtype == np.bool_:
            t = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)
        else:
            t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
        return _finish(t, where, "array")
    raise DataError(Problem(None, where, None, "expected a tensor, a PIL image, a numpy array or a path",
                            type(image).__name__))


def _finish(t: torch.Tensor, where: str, kind: str) -> torch.Tensor:
    if t.dtype == torch.uint8:
        t = t.float().div_(255.0)
    elif t.is_floating_point():
        t = t.float()
        if t.numel():
            lo, hi = float(t.min()), float(t.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1.0 + 1e-3:
                raise DataError(Problem(None, where, "values", f"a float {kind} image must hold values in [0, 1] "
                                        "(divide uint8 data by 255)", (lo, hi)))
    else:
        raise DataError(Problem(None, where, "dtype", f"a {kind} image must be uint8 or float in [0, 1]",
                                str(t.dtype)))
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:
        t = t[:3]
    return t.contiguous()


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
            a :class:`LoadedModel`, or an ``nn.Module`` with ``predict(images)`` (moved to ``device``).
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda:1"``, ...
        batch_size: images per forward pass.
        conf: detection score threshold (detections with ``score > conf`` are kept; sets the
            model's box-head threshold, so lower values give more detections than the default 0.05).
            ``None`` keeps the model's. Ignored (with a warning) by semantic models.
        categories: COCO category dicts in label order (``label i`` is ``categories[i]["id"]``); taken
            from the checkpoint when ``model`` is one; default for a bare module: ids ``1..C``.
        imgsz: the short side images are resized to before the network (an ``int``: the long-side cap
            keeps the model's ``max_size / min_size`` ratio) or ``(min_size, max_size)``. ``None``
            keeps the model's. Results are always in original-image pixels.
        workers: background processes decoding files ahead of the model (0: decode in this process).
        task: ``"detection"`` or ``"semantic"``; inferred from the checkpoint or the module's class.
        tile, tile_overlap: semantic models only: sliding-window inference on ``tile x tile`` windows
            (of the preprocessed image) overlapping by ``tile_overlap``, logits averaged where they
            overlap -- for images larger than the training size, with bounded memory.
    """

    def __init__(self, model: "str | os.PathLike | LoadedModel | nn.Module", *, device: str | torch.device = "auto",
                 batch_size: int = 4, conf: float | None = None, categories: Sequence[dict] | None = None,
                 imgsz: int | tuple[int, int] | None = None, workers: int = 2, task: str | None = None,
                 tile: int | None = None, tile_overlap: float = 1 / 3):
        self.device = _pick_device(device)
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if int(workers) < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        self.batch_size = int(batch_size)
        self.workers = int(workers)
        self.source_path: str | None = None
        if _is_pathlike(model):
            self.source_path = os.fspath(model)
            model = model_from_checkpoint(model, self.device)
        if isinstance(model, LoadedModel):
            self.model = model.model.to(self.device)
            self.categories = list(categories) if categories is not None else list(model.categories)
            self.task = task or model.task
            self.config = model.config
            self.source_path = self.source_path or model.path
        elif isinstance(model, nn.Module):
            if not callable(getattr(model, "predict", None)):
                raise ConfigError(f"{type(model).__name__} has no predict(images) method")
            self.model = model.to(self.device)
            self.task = task or self._infer_task(model)
            n = getattr(model, "num_classes", None)
            if categories is None:
                if n is None:
                    raise ConfigError("give categories= for a model without a num_classes attribute")
                categories = _default_categories(int(n))
            self.categories = list(categories)
            self.config = {}
        else:
            raise ConfigError("model must be a checkpoint path, a LoadedModel or an nn.Module, got "
                              f"{type(model).__name__}")
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r} (expected one of {TASKS})")
        n = getattr(self.model, "num_classes", None)
        if n is not None and int(n) != len(self.categories):
            raise ConfigError(f"the model has {n} classes but {len(self.categories)} categories were given")
        if conf is not None and not (0.0 <= float(conf) <= 1.0):
            raise ConfigError(f"conf must lie in [0, 1], got {conf}")
        self.conf = None if conf is None else float(conf)
        if self.conf is not None and self.task == "semantic":
            warnings.warn("conf applies to detection models; ignored for a semantic model", stacklevel=2)
        self.imgsz = self._check_imgsz(imgsz)
        if tile is not None and self.task != "semantic":
            raise ConfigError("tile applies to semantic models (sliding-window inference); this is a detector")
        if tile is not None and int(tile) < 16:
            raise ConfigError(f"tile must be at least 16 px, got {tile}")
        if not 0.0 <= float(tile_overlap) < 1.0:
            raise ConfigError(f"tile_overlap must lie in [0, 1), got {tile_overlap}")
        self.tile = None if tile is None else int(tile)
        self.tile_overlap = float(tile_overlap)
        self.model.eval()

    # ---- properties -------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return [str(c.get("name", c.get("id"))) for c in self.categories]

    @staticmethod
    def _infer_task(model: nn.Module) -> str:
        from ..models.segmentation.base import SemanticSegmentor

        return "semantic" if isinstance(model, SemanticSegmentor) else "detection"

    def _check_imgsz(self, imgsz):
        if imgsz is None:
            return None
        pre = getattr(self.model, "preprocessor", None)
        if pre is None or not hasattr(pre, "min_sizes"):
            raise ConfigError(f"imgsz needs a model with a Preprocessor; {type(self.model).__name__} has none")
        if isinstance(imgsz, (int, np.integer)):
            lo = int(imgsz)
            hi = int(round(lo * pre.max_size / pre.min_sizes[-1]))
        else:
            lo, hi = (int(v) for v in imgsz)
        if lo < 1 or hi < lo:
            raise ConfigError(f"imgsz must be a positive short side (and a long-side cap >= it), got {imgsz!r}")
        return lo, hi

    def __repr__(self) -> str:
        name = self.config.get("model", {}).get("name") if self.config else type(self.model).__name__
        return (f"Predictor({name!r}, task={self.task!r}, classes={len(self.categories)}, device={str(self.device)!r}, "
                f"batch_size={self.batch_size}, conf={self.conf}, imgsz={self.imgsz})")

    # ---- prediction -----------------------------------------------------------------------------
    @contextmanager
    def _settings(self):
        """Apply ``conf`` / ``imgsz`` to the model for one call and restore the previous values."""
        undo: list[tuple[Any, str, Any]] = []
        try:
            if self.conf is not None and self.task == "detection":
                head = getattr(self.model, "roi_box", None)
                if head is not None and hasattr(head, "score_thresh"):
                    undo.append((head, "score_thresh", head.score_thresh))
                    head.score_thresh = self.conf
            if self.imgsz is not None:
                pre = self.model.preprocessor
                undo += [(pre, "min_sizes", pre.min_sizes), (pre, "max_size", pre.max_size)]
                pre.min_sizes, pre.max_size = (self.imgsz[0],), self.imgsz[1]
            yield
        finally:
            for obj, name, value in reversed(undo):
                setattr(obj, name, value)

    def _filter_conf(self, r):
        """Models without a box-head threshold attribute: keep ``score > conf`` after the fact."""
        if self.conf is None or not isinstance(r, Instances) or r.scores is None:
            return r
        if getattr(getattr(self.model, "roi_box", None), "score_thresh", None) is not None:
            return r
        return r[r.scores > self.conf]

    def predict_tensors(self, images: Sequence[torch.Tensor]) -> list:
        """``float32 [3, H, W]`` tensors -> results on the CPU, ``batch_size`` images per forward pass."""
        out = []
        with self._settings():
            for s in range(0, len(images), self.batch_size):
                chunk = [im.to(self.device, non_blocking=True) for im in images[s:s + self.batch_size]]
                with torch.no_grad():
                    res = self.model.predict(chunk) if self.tile is None else \
                        self.model.predict(chunk, tile=self.tile, tile_overlap=self.tile_overlap)
                out += [self._filter_conf(r.to("cpu")) for r in res]
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

        * ``predictions.json`` (detection, ``save_json``): COCO results (bbox, segmentation as
          compressed RLE, keypoints ``x, y, score``), streamed to disk and renamed into place at the end.
          Image ids: with ``ann`` (a COCO JSON) those of its images, matched by file name (the path
          relative to the source folder, else the base name when unique); images it lacks are
          predicted and drawn but left out (listed as failures of stage ``"match"``), and an image
          whose size differs from its record is a failure. Without ``ann``: ids from the file stems
          when all are distinct numbers (``000123.jpg`` -> 123, as ``sceneparse convert`` assigns
          them), else ``1..N`` in source order; they are listed with file name, height and width in
          ``images.json`` (a COCO file with empty ``annotations``), so ground truth made for the same
          files scores them with ``sceneparse eval``.
        * ``labels/<name>.png`` (semantic, ``save_labels``): label maps, one ``uint8`` palette PNG
          per image whose pixel values are the labels ``0..C-1`` (255 = void), the format of
          ``sceneparse eval --type semantic`` and :func:`~sceneparse.data.formats.read_semantic_pngs`;
          the palette gives viewers the classes' drawing colours.
        * ``images/<name>.<image_format>`` (``save_images``): the image with boxes, masks and
          keypoints (detection; only detections with ``score >= draw_conf``, default 0.25, so the
          picture stays readable -- the JSON keeps every detection above ``conf`` for AP) or tinted
          classes with names (semantic) drawn on it.
        * ``failures.json``: ``[{"path", "reason", "stage"}]`` for every image that could not be used.

        ``<name>`` is the file's path relative to the source folder, without its suffix.
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
        detection = self.task == "detection"
        ids, expect = self._image_ids(items, names, root, ann)
        failures: list[Failure] = []
        files: dict[str, Path] = {}
        writers: list[JsonListWriter] = []
        preds_w = images_w = None
        if detection and save_json:
            preds_w = CocoResultsWriter(out / PREDICTIONS_JSON, self.categories)
            writers.append(preds_w)
            if ann is None:
                head = json.dumps({"info": {"description": "images predicted by sceneparse predict",
                                            "source": str(source) if _is_pathlike(source) else None},
                                   "categories": self.categories, "annotations": []})
                images_w = JsonListWriter(out / IMAGES_JSON, prefix=head[:-1] + ', "images": [\n', suffix="\n]}\n")
                writers.append(images_w)
        stream = PredictionStream(self, items, workers=self.workers if workers is None else int(workers),
                                  keep_images=save_images, errors="skip", expect=expect)
        saver = ThreadPoolExecutor(max_workers=1) if (save_images or (save_labels and not detection)) else None
        pending: list[Future] = []
        predicted = instances = 0
        bar = tqdm(total=len(items), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
        try:
            for pred in stream:
                i = pred.index
                predicted += 1
                if detection:
                    instances += len(pred.result)
                    if preds_w is not None:
                        if ids[i] is None:
                            failures.append(Failure(str(items[i]), f"no image with this file name in {ann}; "
                                                    "predicted and drawn, left out of predictions.json", "match", i))
                        else:
                            preds_w.add(pred.result, ids[i], file=str(items[i]))
                            if images_w is not None:
                                h, w = pred.result.image_size
                                images_w.write({"id": ids[i], "file_name": self._file_name(items[i], root, names[i]),
                                                "height": h, "width": w})
                if saver is not None:
                    pending.append(saver.submit(self._save_outputs, out, names[i], pred.result,
                                                pred.image if save_images else None, image_format,
                                                save_labels and not detection, draw_conf))
                    while len(pending) > 2 * self.batch_size + 2:  # bounded: memory does not grow
                        pending.pop(0).result()
                if on_result is not None:
                    on_result(pred)
                bar.update(stream.done - bar.n)
            bar.update(stream.done - bar.n)
            for f in pending:
                f.result()
            pending.clear()
            for w in writers:
                files["predictions" if w is preds_w else "images_json"] = w.close()
        except BaseException:
            for f in pending:
                f.cancel()
            for w in writers:
                w.abort()
            raise
        finally:
            bar.close()
            if saver is not None:
                saver.shutdown(wait=True)
        failures = sorted(stream.failures + failures, key=lambda f: f.index)
        from ..fileio import atomic_write_text

        files["failures"] = atomic_write_text(out / FAILURES_JSON,
                                              json.dumps([f.to_dict() for f in failures], indent=1) + "\n")
        if save_images:
            files["images"] = out / IMAGES_DIR
        if save_labels and not detection:
            files["labels"] = out / LABELS_DIR
        summary = PredictSummary(out, self.task, len(items), predicted, instances, failures,
                                 time.perf_counter() - t0, files)
        if verbose:
            print(summary)
            if failures:
                print(f"{len(failures)} image(s) with problems (also in {files['failures']}):", file=sys.stderr)
                for f in failures[:20]:
                    print(f"  {f}", file=sys.stderr)
                if len(failures) > 20:
                    print(f"  ... and {len(failures) - 20} more", file=sys.stderr)
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
        elif image is not None:
            from ..viz.draw import draw_instances, save_image as save

            save(out / IMAGES_DIR / f"{name}.{image_format}",
                 draw_instances(image, result, self.class_names, score_threshold=draw_conf))


__all__ = ["Failure", "Prediction", "PredictSummary", "PredictionStream", "Predictor", "read_image", "resolve_source",
           "to_image_tensor"]
