"""Semantic segmentation metrics from one streaming confusion matrix: pixel accuracy, mean class
accuracy, per-class IoU, mIoU and frequency-weighted IoU.

Every metric is a function of the ``C x C`` confusion matrix ``M[g, p]`` = number of pixels whose
ground truth is ``g`` and prediction is ``p`` (pixels whose ground truth is ``ignore_index`` are left
out). Accumulating ``M`` with one ``bincount`` per image keeps memory flat in the dataset size and
gives exactly the numbers a dataset-wide pixel count would.

With ``tp_c = M[c, c]``, ``gt_c = sum_p M[c, p]``, ``pred_c = sum_g M[g, c]`` and ``N = sum M``:

* pixel accuracy ``= sum_c tp_c / N``
* class accuracy ``acc_c = tp_c / gt_c``; mean class accuracy = mean over classes with ``gt_c > 0``
* ``IoU_c = tp_c / (gt_c + pred_c - tp_c)``
* mIoU = mean of ``IoU_c`` over the classes *present*: a class with no ground-truth pixel and no
  predicted pixel in the whole dataset has ``0 / 0`` and is excluded (reported as NaN), the rule of
  mmsegmentation (``nanmean``) and detectron2's ``SemSegEvaluator`` (``iou_valid``). A class that is
  predicted but never in the ground truth has IoU 0 and *does* count.
* frequency-weighted IoU ``= sum_c (gt_c / N) * IoU_c`` over classes with ``gt_c > 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..conventions import IGNORE_INDEX
from ..errors import DataError, PredictionError, Problem
from ._torch import loaded_torch


@dataclass
class SemanticEvalResult:
    """Semantic segmentation metrics (fractions in ``[0, 1]``; NaN where undefined, see module doc).

    Attributes:
        pixel_accuracy: correctly labelled pixels / labelled pixels.
        mean_class_accuracy: mean of ``class_accuracy`` over classes with ground-truth pixels.
        miou: mean of ``iou`` over present classes (NaN entries skipped).
        fwiou: frequency-weighted IoU.
        iou: ``float64 [C]``; NaN for classes absent from both ground truth and prediction.
        class_accuracy: ``float64 [C]`` recall per class; NaN for classes without ground truth.
        confusion: ``int64 [C, C]``, rows = ground truth, columns = prediction.
        class_names: ``C`` names (``"0"``, ``"1"``, ... when none were given).
        num_images: images accumulated.
    """

    pixel_accuracy: float
    mean_class_accuracy: float
    miou: float
    fwiou: float
    iou: np.ndarray
    class_accuracy: np.ndarray
    confusion: np.ndarray
    class_names: list[str] = field(default_factory=list)
    num_images: int = 0

    @property
    def num_pixels(self) -> int:
        return int(self.confusion.sum())

    def summary(self) -> str:
        """A per-class table followed by the global numbers (percentages)."""
        w = max([len(n) for n in self.class_names] + [5])
        lines = [f"{'class':<{w}}  {'IoU':>6}  {'Acc':>6}  {'GT px':>10}  {'pred px':>10}",
                 "-" * (w + 40)]
        gt_px = self.confusion.sum(1)
        pred_px = self.confusion.sum(0)
        for c, name in enumerate(self.class_names):
            lines.append(f"{name:<{w}}  {_pct(self.iou[c]):>6}  {_pct(self.class_accuracy[c]):>6}  "
                         f"{int(gt_px[c]):>10d}  {int(pred_px[c]):>10d}")
        lines.append("-" * (w + 40))
        lines.append(f"mIoU {_pct(self.miou)}  fwIoU {_pct(self.fwiou)}  pixel acc {_pct(self.pixel_accuracy)}  "
                     f"mean class acc {_pct(self.mean_class_accuracy)}  ({self.num_images} images, "
                     f"{self.num_pixels} labelled pixels)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready summary (NaN written as ``None``)."""
        return {
            "miou": _num(self.miou),
            "fwiou": _num(self.fwiou),
            "pixel_accuracy": _num(self.pixel_accuracy),
            "mean_class_accuracy": _num(self.mean_class_accuracy),
            "num_images": self.num_images,
            "num_pixels": self.num_pixels,
            "per_class": {name: {"iou": _num(self.iou[c]), "accuracy": _num(self.class_accuracy[c])}
                          for c, name in enumerate(self.class_names)},
            "confusion": self.confusion.tolist(),
        }


def _pct(v: float) -> str:
    return "   nan" if not np.isfinite(v) else f"{100 * v:6.2f}"


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


class SemanticEvaluator:
    """Streaming mIoU evaluator: ``update()`` per image, ``compute()`` at the end.

    ``update`` takes ``[H, W]`` (or any matching shapes, e.g. a batch ``[B, H, W]``) integer label maps
    as tensors (any device; the bincount runs there), arrays or :class:`SemanticMap`. Ground truth values must be in
    ``0..C-1`` or ``ignore_index``; predictions must be in ``0..C-1`` wherever the ground truth is
    labelled, otherwise :class:`~sceneparse.errors.PredictionError` names the image and value.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = [str(n) for n in class_names] if class_names is not None else \
            [str(c) for c in range(num_classes)]
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.num_images = 0

    def update(self, pred_labels, gt_labels, image: str | int | None = None) -> None:
        """Add one image (or a batch). ``image`` (a name or id) only labels error messages."""
        where = f"image {image}" if image is not None else f"image #{self.num_images}"
        c = self.num_classes
        torch = loaded_torch()  # None: no argument can be a tensor or a SemanticMap
        if torch is not None:
            from ..structures.segmaps import SemanticMap  # torch is loaded already: cheap

            pred_labels = pred_labels.labels if isinstance(pred_labels, SemanticMap) else pred_labels
            gt_labels = gt_labels.labels if isinstance(gt_labels, SemanticMap) else gt_labels
        if torch is not None and (isinstance(pred_labels, torch.Tensor) or isinstance(gt_labels, torch.Tensor)):
            pred = torch.as_tensor(pred_labels)
            gt = torch.as_tensor(gt_labels, device=pred.device)
            if pred.shape != gt.shape:
                raise PredictionError(Problem(None, where, "labels",
                                              f"prediction shape {tuple(pred.shape)} differs from ground truth "
                                              f"{tuple(gt.shape)}"))
            gt = gt.reshape(-1).long()
            pred = pred.reshape(-1).long()
            valid = gt != self.ignore_index
            gt, pred = gt[valid], pred[valid]
            bad_gt = (gt < 0) | (gt >= c)
            if bool(bad_gt.any()):
                raise DataError(Problem(None, where, "ground truth", f"labels must be in 0..{c - 1} or "
                                        f"{self.ignore_index}", sorted(set(gt[bad_gt].unique().tolist()))[:10]))
            bad = (pred < 0) | (pred >= c)
            if bool(bad.any()):
                raise PredictionError(Problem(None, where, "prediction",
                                              f"{int(bad.sum())} labelled pixels have a predicted label outside "
                                              f"0..{c - 1}", sorted(set(pred[bad].unique().tolist()))[:10]))
            counts = torch.bincount(gt * c + pred, minlength=c * c).cpu().numpy()
        else:
            pred = np.asarray(pred_labels)
            gt = np.asarray(gt_labels)
            if pred.shape != gt.shape:
                raise PredictionError(Problem(None, where, "labels",
                                              f"prediction shape {pred.shape} differs from ground truth {gt.shape}"))
            gt = gt.reshape(-1).astype(np.int64, copy=False)
            pred = pred.reshape(-1).astype(np.int64, copy=False)
            valid = gt != self.ignore_index
            gt, pred = gt[valid], pred[valid]
            bad_gt = (gt < 0) | (gt >= c)
            if bad_gt.any():
                raise DataError(Problem(None, where, "ground truth", f"labels must be in 0..{c - 1} or "
                                        f"{self.ignore_index}", np.unique(gt[bad_gt])[:10].tolist()))
            bad = (pred < 0) | (pred >= c)
            if bad.any():
                raise PredictionError(Problem(None, where, "prediction",
                                              f"{int(bad.sum())} labelled pixels have a predicted label outside "
                                              f"0..{c - 1}", np.unique(pred[bad])[:10].tolist()))
            counts = np.bincount(gt * c + pred, minlength=c * c)
        self.confusion += counts.reshape(c, c).astype(np.int64)
        self.num_images += 1

    def compute(self) -> SemanticEvalResult:
        return semantic_metrics(self.confusion, self.class_names, self.num_images)


def semantic_metrics(confusion: np.ndarray, class_names: Sequence[str] | None = None,
                     num_images: int = 0) -> SemanticEvalResult:
    """All metrics from a ``[C, C]`` confusion matrix (rows ground truth, columns prediction)."""
    m = np.asarray(confusion, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be [C, C], got {m.shape}")
    c = m.shape[0]
    mf = m.astype(np.float64)
    tp = np.diag(mf)
    gt = mf.sum(1)
    pred = mf.sum(0)
    total = gt.sum()
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    present = union > 0
    has_gt = gt > 0
    miou = float(iou[present].mean()) if present.any() else float("nan")
    macc = float(acc[has_gt].mean()) if has_gt.any() else float("nan")
    pix = float(tp.sum() / total) if total > 0 else float("nan")
    fwiou = float((gt[has_gt] / total * iou[has_gt]).sum()) if total > 0 else float("nan")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(c)]
    return SemanticEvalResult(pixel_accuracy=pix, mean_class_accuracy=macc, miou=miou, fwiou=fwiou, iou=iou,
                              class_accuracy=acc, confusion=m.copy(), class_names=names, num_images=num_images)


def read_label_png(path, error=DataError) -> np.ndarray:
    """A single-channel label PNG (modes L, P, I, I;16, 1) as ``int64 [H, W]``; ``error`` (DataError for
    ground truth, PredictionError for predictions) names the file when it is missing or not a label map."""
    from pathlib import Path

    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise error(Problem(str(path), None, None, f"a label PNG must be single-channel, got mode {im.mode}"))
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise error(Problem(str(path), None, None, "file not found")) from None
    except OSError as e:
        raise error(Problem(str(path), None, None, f"cannot read the image: {e}")) from None


def evaluate_label_folders(gt_dir, pred_dir, num_classes: int, *, ignore_index: int = IGNORE_INDEX,
                           class_names: Sequence[str] | None = None, progress: bool = True) -> SemanticEvalResult:
    """Score a folder of predicted label PNGs against the ground-truth folder, image by image (memory
    stays flat). Every ``gt_dir/*.png`` needs ``pred_dir/<same name>``; errors name the file."""
    from pathlib import Path

    from tqdm import tqdm

    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    if not gt_dir.is_dir():
        raise DataError(Problem(str(gt_dir), None, None, "ground-truth PNG folder not found"))
    if not pred_dir.is_dir():
        raise PredictionError(Problem(str(pred_dir), None, None, "prediction PNG folder not found"))
    files = sorted(gt_dir.glob("*.png"))
    if not files:
        raise DataError(Problem(str(gt_dir), None, None, "no .png files in the ground-truth folder"))
    ev = SemanticEvaluator(num_classes, ignore_index=ignore_index, class_names=class_names)
    for f in tqdm(files, desc="semantic", unit="img", disable=not progress):
        g = read_label_png(f, DataError)
        p = read_label_png(pred_dir / f.name, PredictionError)
        try:
            ev.update(p, g, image=f.name)
        except DataError as e:  # PredictionError too: add the file that holds the bad values
            for prob in e.problems:
                prob.file = prob.file or str(pred_dir / f.name if isinstance(e, PredictionError) else f)
            raise type(e)(e.problems) from None
    return ev.compute()


__all__ = ["SemanticEvalResult", "SemanticEvaluator", "evaluate_label_folders", "read_label_png",
           "semantic_metrics"]
