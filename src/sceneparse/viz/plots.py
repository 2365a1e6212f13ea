"""Plots: training curves (losses and metrics over steps / epochs) and the pictures of evaluation
results -- precision-recall curves, the detection confusion matrix, the TIDE error breakdown,
per-class IoU and per-category PQ.

The numbers come from :mod:`sceneparse.evaluation` (which never draws: plotting sits above it, as
ARCHITECTURE's ``evaluation <- viz`` says); this module only draws them. Matplotlib is used through
its object API on the Agg canvas (no pyplot, no global backend switch), so plotting works headless and
from worker threads. Files are written atomically (:func:`save_figure`).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..fileio import atomic_open

if TYPE_CHECKING:
    from ..evaluation.confusion import DetectionConfusionMatrix
    from ..evaluation.curves import PRCurve
    from ..evaluation.errors import TideErrors
    from ..evaluation.panoptic import PanopticEvalResult
    from ..evaluation.semantic import SemanticEvalResult

#: column names taken as the x axis of a CSV log, in order of preference
X_COLUMNS = ("step", "iteration", "iter", "epoch")

Series = "Sequence[float] | tuple[Sequence[float], Sequence[float]]"


def _figure(width: float, height: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: float | None = None) -> Path:
    """Write a matplotlib ``Figure`` atomically (temporary file in the same folder, then
    ``os.replace``); the format follows the suffix (PNG without one), ``dpi`` defaults to the figure's."""
    out = Path(path)
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format=out.suffix.lstrip(".").lower() or "png", dpi=dpi or "figure")
    return out


def read_csv_series(path: str | os.PathLike, x: str | None = None
                    ) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Read a CSV log with a header row into ``(x name, {column: (x values, y values)})``.

    The x column is ``x`` or the first of :data:`X_COLUMNS` present (else the row number). Empty or
    non-numeric cells are gaps (metrics logged once per epoch next to per-step losses); columns with
    no number at all are skipped.
    """
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty CSV")
    header, body = rows[0], rows[1:]

    def num(s: str) -> float:
        try:
            return float(s)
        except ValueError:
            return math.nan

    table = np.array([[num(c) for c in r] + [math.nan] * (len(header) - len(r)) for r in body],
                     dtype=np.float64).reshape(len(body), len(header))
    if x is None:
        x = next((c for c in X_COLUMNS if c in header), None)
    elif x not in header:
        raise ValueError(f"{path}: no column {x!r}; columns: {header}")
    xs = table[:, header.index(x)] if x is not None else np.arange(len(body), dtype=np.float64)
    out = {}
    for j, name in enumerate(header):
        if name == x or name in X_COLUMNS:
            continue
        y = table[:, j]
        ok = np.isfinite(y) & np.isfinite(xs)
        if ok.any():
            out[name] = (xs[ok], y[ok])
    return x or "row", out


def _as_xy(v) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(v, tuple) and len(v) == 2 and np.ndim(v[0]) == 1 and np.ndim(v[1]) == 1:
        x, y = np.asarray(v[0], dtype=np.float64), np.asarray(v[1], dtype=np.float64)
    else:
        y = np.asarray(v, dtype=np.float64).reshape(-1)
        x = np.arange(len(y), dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def plot_curves(source: "str | os.PathLike | Mapping[str, Series]", out_png: str | os.PathLike, *,
                x: str | None = None, title: str | None = None, smooth: int = 1, dpi: int = 100) -> Path:
    """Loss and metric curves from a CSV log (see :func:`read_csv_series`) or a dict
    ``name -> ys`` / ``name -> (xs, ys)``. Series whose name contains ``loss`` go to the left panel,
    the others (metrics) to the right one; ``smooth > 1`` adds a moving average of that many points
    over the faint raw curve (series shorter than ``3 * smooth`` stay raw). Returns the written path."""
    if isinstance(source, Mapping):
        xname, series = "step", {k: _as_xy(v) for k, v in source.items()}
    else:
        xname, series = read_csv_series(source, x)
    series = {k: v for k, v in series.items() if len(v[0])}
    if not series:
        where = "the dict" if isinstance(source, Mapping) else str(source)
        raise ValueError(f"plot_curves: no numeric series to plot in {where}")
    groups = [("losses", {k: v for k, v in series.items() if "loss" in k.lower()}),
              ("metrics", {k: v for k, v in series.items() if "loss" not in k.lower()})]
    groups = [g for g in groups if g[1]]
    fig = _figure(6.0 * len(groups), 4.2, dpi)
    for i, (gname, ser) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), i + 1)
        for name, (xs, ys) in ser.items():
            if smooth > 1 and len(ys) >= 3 * smooth:  # short series (per-epoch metrics) stay raw
                line, = ax.plot(xs, ys, alpha=0.3, linewidth=1)
                kernel = np.ones(smooth) / smooth
                ax.plot(xs[smooth - 1:], np.convolve(ys, kernel, mode="valid"), color=line.get_color(),
                        linewidth=1.8, label=name)
            else:
                ax.plot(xs, ys, linewidth=1.6, marker="o" if len(xs) <= 30 else None, markersize=3, label=name)
        ax.set_xlabel(xname)
        ax.set_title(gname)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)


# ---- evaluation results ------------------------------------------------------------------------
#: resolution of the evaluation plots
EVAL_DPI = 110


def plot_pr_curves(curves_or_result, path: str | os.PathLike, iou: float = 0.5, area: str = "all",
                   max_dets: int = 100, names: Mapping[int, str] | None = None, max_classes: int = 20,
                   title: str | None = None) -> Path:
    """Draw per-category PR curves (legend: name and AP) into a PNG; returns the path.

    ``curves_or_result`` is the dict from :func:`sceneparse.evaluation.curves.precision_recall_curves`
    or a COCO result (``COCOEvalResult`` or an accumulated pycocotools ``COCOeval``; then ``iou`` /
    ``area`` / ``max_dets`` / ``names`` select the slice). Categories without ground truth are
    skipped; with more than ``max_classes`` the best and worst ``max_classes / 2`` by AP are drawn.
    The mean curve (the mAP at that IoU) is drawn in black.
    """
    if not isinstance(curves_or_result, Mapping):
        from ..evaluation.curves import precision_recall_curves

        curves_or_result = precision_recall_curves(curves_or_result, iou, area, max_dets, names)
    fig = pr_figure(curves_or_result, max_classes,
                    title or f"precision-recall, IoU={iou:g}, area={area}, maxDets={max_dets}")
    return save_figure(fig, path, EVAL_DPI)


def pr_figure(curves: "Mapping[int, PRCurve]", max_classes: int = 20, title: str = "precision-recall"):
    """The matplotlib ``Figure`` :func:`plot_pr_curves` saves."""
    import matplotlib

    valid = [c for c in curves.values() if np.isfinite(c.ap)]
    valid.sort(key=lambda c: -c.ap)
    shown = valid if len(valid) <= max_classes else valid[:max_classes // 2] + valid[-(max_classes - max_classes // 2):]
    fig = _figure(7.5, 5.5, 100)
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["tab20"]
    for i, c in enumerate(shown):
        ax.plot(c.recall, c.precision, lw=1.2, color=cmap(i % 20), label=f"{c.name} (AP {100 * c.ap:.1f})")
    if valid:
        mean = np.mean([c.precision for c in valid], axis=0)
        ax.plot(valid[0].recall, mean, lw=2.5, color="black", label=f"mean (mAP {100 * float(mean.mean()):.1f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if valid:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: "DetectionConfusionMatrix", path: str | os.PathLike, normalize: bool = True,
                          max_classes: int = 40) -> Path:
    """Draw a detection confusion matrix as a heat map (rows normalised to sum 1 when ``normalize``)
    and write a PNG. With more than ``max_classes`` classes only the ``max_classes`` with most ground
    truth are shown."""
    m = cm.matrix.astype(np.float64)
    c = cm.num_classes
    keep = np.arange(c)
    if c > max_classes:
        keep = np.sort(np.argsort(-m[:c].sum(1), kind="stable")[:max_classes])
    idx = np.concatenate([keep, [c]])
    m = m[np.ix_(idx, idx)]
    labels = [cm.class_names[k] for k in keep] + ["background"]
    if normalize:
        sums = m.sum(1, keepdims=True)
        m = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    n = len(labels)
    size = max(4.0, 0.45 * n + 2)
    fig = _figure(size + 1, size, 100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else max(1.0, m.max()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"detection confusion, IoU>={cm.iou:g}, score>={cm.score_threshold:g}"
                 + ("\n(rows normalised)" if normalize else ""), fontsize=10)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                v = m[i, j]
                if v > 0:
                    ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=7,
                            color="white" if v > (0.5 if normalize else m.max() / 2) else "black")
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


def plot_error_breakdown(errors: "TideErrors", path: str | os.PathLike) -> Path:
    """Horizontal bars of ``delta AP50`` per TIDE error type (and the two bounds) into a PNG."""
    from ..evaluation.errors import MAIN_ERRORS

    names = [t.value for t in MAIN_ERRORS] + ["FalsePos", "FalseNeg"]
    vals = [100 * errors.delta_ap[t] for t in MAIN_ERRORS] + [100 * errors.delta_ap_false_pos,
                                                              100 * errors.delta_ap_false_neg]
    fig = _figure(6, 3.6, 100)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["#e15759", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c9c9c", "#9c9c9c"]
    ax.barh(range(len(names))[::-1], vals, color=colors)
    ax.set_yticks(range(len(names))[::-1], [f"{n} ({errors.counts[t]})" if i < 6 else n
                                           for i, (n, t) in enumerate(zip(names, list(MAIN_ERRORS) + [None] * 2))])
    for i, v in enumerate(vals):
        ax.text(v, len(names) - 1 - i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlim(min(0.0, min(vals)) * 1.2, max(1.0, max(vals)) * 1.18)
    ax.set_xlabel("AP50 gained by fixing (points)")
    ax.set_title(f"error breakdown, AP50 = {100 * errors.ap50:.1f}")
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


def plot_class_iou(result: "SemanticEvalResult", path: str | os.PathLike, max_classes: int = 60) -> Path:
    """Horizontal bars of per-class IoU (classes never seen are left out), mIoU as a line; writes a PNG.
    With more than ``max_classes`` classes the lowest ones are shown (they are what needs attention)."""
    seen = np.flatnonzero(np.isfinite(result.iou))
    order = seen[np.argsort(result.iou[seen], kind="stable")][:max_classes][::-1]
    fig = _figure(6.5, max(2.5, 0.22 * len(order) + 1.2), 100)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(order)), 100 * result.iou[order], color="#4e79a7")
    ax.set_yticks(range(len(order)), [result.class_names[c] for c in order], fontsize=7)
    if np.isfinite(result.miou):
        ax.axvline(100 * result.miou, color="black", lw=1.5, ls="--", label=f"mIoU {100 * result.miou:.1f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title("per-class IoU")
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


def plot_pq_per_category(result: "PanopticEvalResult", path: str | os.PathLike, max_classes: int = 60) -> Path:
    """Horizontal bars of per-category PQ (things and stuff coloured apart), overall PQ as a line; PNG."""
    cats = [c for c in result.per_category.values() if c.tp + c.fp + c.fn > 0]
    cats = sorted(cats, key=lambda c: c.pq)[:max_classes][::-1]
    fig = _figure(6.5, max(2.5, 0.22 * len(cats) + 1.2), 100)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(cats)), [100 * c.pq for c in cats],
            color=["#e15759" if c.isthing else "#59a14f" for c in cats])
    ax.set_yticks(range(len(cats)), [f"{c.name} ({'thing' if c.isthing else 'stuff'})" for c in cats], fontsize=7)
    if np.isfinite(result.pq):
        ax.axvline(100 * result.pq, color="black", lw=1.5, ls="--")
    ax.set_xlim(0, 100)
    ax.set_xlabel("PQ (%)")
    ax.set_title(f"per-category PQ (PQ {100 * result.pq:.1f}, things {100 * result.things.pq:.1f}, "
                 f"stuff {100 * result.stuff.pq:.1f})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


__all__ = ["EVAL_DPI", "X_COLUMNS", "plot_class_iou", "plot_confusion_matrix", "plot_curves", "plot_error_breakdown",
           "plot_pq_per_category", "plot_pr_curves", "pr_figure", "read_csv_series", "save_figure"]
