"""Plots: training curves (losses and metrics over steps / epochs) and the pictures of evaluation
results -- precision-recall curves, the detection confusion matrix, the TIDE error breakdown,
per-class IoU and per-category PQ -- and of a dataset (label statistics) and of a score threshold
(precision / recall / F1 against it).

One unit: AP, IoU, PQ, precision and recall are fractions in ``[0, 1]`` everywhere (legends, titles,
axes), as :mod:`sceneparse.evaluation` returns them and as the tables print them; never percent.

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
from typing import TYPE_CHECKING, Mapping, Sequence

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
                x: str | None = None, title: str | None = None, smooth: int = 1, dpi: int = 100,
                panels: "Mapping[str, Sequence[str]] | None" = None, xlabel: str | None = None) -> Path:
    """Loss and metric curves from a CSV log (see :func:`read_csv_series`) or a dict
    ``name -> ys`` / ``name -> (xs, ys)``. Series whose name contains ``loss`` go to the left panel,
    the others (metrics) to the right one, unless ``panels`` maps panel titles to series names.
    ``smooth > 1`` adds a moving average of that many points over the faint raw curve (series shorter
    than ``3 * smooth`` stay raw). Short series are drawn with markers; a series of *one* point is a
    marker labelled with its value (a line needs two points: an empty axis says nothing). Returns the
    written path."""
    if isinstance(source, Mapping):
        xname, series = "step", {k: _as_xy(v) for k, v in source.items()}
    else:
        xname, series = read_csv_series(source, x)
    series = {k: v for k, v in series.items() if len(v[0])}
    if not series:
        where = "the dict" if isinstance(source, Mapping) else str(source)
        raise ValueError(f"plot_curves: no numeric series to plot in {where}")
    if panels is None:
        groups = [("losses", {k: v for k, v in series.items() if "loss" in k.lower()}),
                  ("metrics", {k: v for k, v in series.items() if "loss" not in k.lower()})]
    else:
        groups = [(t, {k: series[k] for k in names if k in series}) for t, names in panels.items()]
    groups = [g for g in groups if g[1]]
    if not groups:
        raise ValueError(f"plot_curves: none of the series {sorted(series)} is in the panels {dict(panels or {})}")
    fig = _figure((6.0 if len(groups) < 3 else 4.8) * len(groups), 4.2, dpi)
    for i, (gname, ser) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), i + 1)
        for name, (xs, ys) in ser.items():
            draw_series(ax, xs, ys, name, smooth)
        few_x(ax, np.concatenate([xs for xs, _ in ser.values()]))
        ax.margins(y=0.12)  # room for the value written next to a lone point
        ax.set_xlabel(xlabel or xname)
        ax.set_title(gname)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)


def few_x(ax, xs) -> None:
    """With at most 5 distinct whole-number x values (iterations, epochs) the ticks are those values,
    not matplotlib's fractional ones around a lone point."""
    u = np.unique(np.asarray(xs, dtype=np.float64))
    if 0 < len(u) <= 5 and np.all(u == np.round(u)):
        ax.set_xticks(u, [str(int(v)) for v in u])
        if len(u) == 1:
            ax.set_xlim(u[0] - 1, u[0] + 1)


def draw_series(ax, xs, ys, name: str, smooth: int = 1, **kwargs) -> None:
    """One series on a matplotlib axis the way every curve here is drawn: a faint raw line under its
    moving average (``smooth > 1`` and at least ``3 * smooth`` points), a line with markers (up to 30
    points), or -- one point -- a marker with its value written next to it."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(xs) == 1:
        line, = ax.plot(xs, ys, linestyle="none", marker="o", markersize=7, label=name, **kwargs)
        ax.annotate(f"{ys[0]:.3g}", (xs[0], ys[0]), textcoords="offset points", xytext=(6, 6), fontsize=9,
                    color=line.get_color())
    elif smooth > 1 and len(ys) >= 3 * smooth:  # short series (per-epoch metrics) stay raw
        line, = ax.plot(xs, ys, alpha=0.3, linewidth=1, **kwargs)
        kernel = np.ones(smooth) / smooth
        ax.plot(xs[smooth - 1:], np.convolve(ys, kernel, mode="valid"), **{**kwargs, "color": line.get_color()},
                linewidth=1.8, label=f"{name} (mean of {smooth})")
    else:
        ax.plot(xs, ys, linewidth=1.6, marker="o" if len(xs) <= 30 else None, markersize=3, label=name, **kwargs)


# ---- evaluation results ------------------------------------------------------------------------
#: resolution of the evaluation plots
EVAL_DPI = 110


def plot_pr_curves(curves_or_result, path: str | os.PathLike, iou: float = 0.5, area: str = "all",
                   max_dets: int = 100, names: Mapping[int, str] | None = None, max_classes: int = 20,
                   title: str | None = None, classes: Sequence[str] | None = None) -> Path:
    """Draw per-category PR curves (legend: name and AP) into a PNG; returns the path.

    ``curves_or_result`` is the dict from :func:`sceneparse.evaluation.curves.precision_recall_curves`
    or a COCO result (``COCOEvalResult`` or an accumulated pycocotools ``COCOeval``; then ``iou`` /
    ``area`` / ``max_dets`` / ``names`` select the slice). Categories without ground truth are
    skipped, and so are categories not named in ``classes`` (when given: e.g. the classes a model
    predicts, so that a thing detector's plot has no stuff classes); with more than ``max_classes``
    the best and worst ``max_classes / 2`` by AP are drawn. The mean curve (the mAP at that IoU) is
    drawn in black. AP values in the legend are fractions in ``[0, 1]``.
    """
    if not isinstance(curves_or_result, Mapping):
        from ..evaluation.curves import precision_recall_curves

        curves_or_result = precision_recall_curves(curves_or_result, iou, area, max_dets, names)
    if classes is not None:
        keep = set(classes)
        curves_or_result = {k: c for k, c in curves_or_result.items() if c.name in keep}
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
        ax.plot(c.recall, c.precision, lw=1.2, color=cmap(i % 20), label=f"{c.name} (AP {c.ap:.3f})")
    if valid:
        mean = np.mean([c.precision for c in valid], axis=0)
        ax.plot(valid[0].recall, mean, lw=2.5, color="black", label=f"mean (mAP {float(mean.mean()):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if valid:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        ax.text(0.5, 0.5, "no class with ground truth", ha="center", va="center", color="#777",
                transform=ax.transAxes)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: "DetectionConfusionMatrix", path: str | os.PathLike, normalize: bool = True,
                          max_classes: int = 40, classes: Sequence[str] | None = None) -> Path:
    """Draw a detection confusion matrix as a heat map (rows normalised to sum 1 when ``normalize``)
    and write a PNG. ``classes`` (names) keeps only those rows and columns (and background): e.g. the
    classes a model predicts, without the stuff classes of a thing detector's data. With more than
    ``max_classes`` classes only the ``max_classes`` with most ground truth are shown."""
    return save_figure(confusion_figure(cm, normalize, max_classes, classes), path, EVAL_DPI)


def confusion_figure(cm: "DetectionConfusionMatrix", normalize: bool = True, max_classes: int = 40,
                     classes: Sequence[str] | None = None):
    """The matplotlib ``Figure`` :func:`plot_confusion_matrix` saves."""
    m = cm.matrix.astype(np.float64)
    c = cm.num_classes
    keep = np.arange(c)
    if classes is not None:
        wanted = set(classes)
        keep = np.array([k for k in range(c) if cm.class_names[k] in wanted], dtype=np.int64)
    if len(keep) > max_classes:
        keep = keep[np.sort(np.argsort(-m[keep].sum(1), kind="stable")[:max_classes])]
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
    return fig


def plot_error_breakdown(errors: "TideErrors", path: str | os.PathLike) -> Path:
    """Horizontal bars of ``delta AP50`` (a fraction, as AP) per TIDE error type (and the two bounds)
    into a PNG."""
    return save_figure(error_figure(errors), path, EVAL_DPI)


def error_figure(errors: "TideErrors"):
    """The matplotlib ``Figure`` :func:`plot_error_breakdown` saves."""
    from ..evaluation.errors import MAIN_ERRORS

    names = [t.value for t in MAIN_ERRORS] + ["FalsePos", "FalseNeg"]
    vals = [errors.delta_ap[t] for t in MAIN_ERRORS] + [errors.delta_ap_false_pos, errors.delta_ap_false_neg]
    vals = [float(v) if v is not None and np.isfinite(v) else 0.0 for v in vals]
    fig = _figure(6, 3.6, 100)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["#e15759", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c9c9c", "#9c9c9c"]
    ax.barh(range(len(names))[::-1], vals, color=colors)
    ax.set_yticks(range(len(names))[::-1], [f"{n} ({errors.counts[t]})" if i < 6 else n
                                           for i, (n, t) in enumerate(zip(names, list(MAIN_ERRORS) + [None] * 2))])
    for i, v in enumerate(vals):
        ax.text(v, len(names) - 1 - i, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlim(min(0.0, min(vals)) * 1.2, max(0.01, max(vals)) * 1.25)
    ax.set_xlabel("AP50 gained by fixing each error type")
    ax.set_title(f"error breakdown, AP50 = {errors.ap50:.3f}")
    fig.tight_layout()
    return fig


def plot_class_iou(result: "SemanticEvalResult", path: str | os.PathLike, max_classes: int = 60) -> Path:
    """Horizontal bars of per-class IoU (classes never seen are left out), mIoU as a line; writes a PNG.
    With more than ``max_classes`` classes the lowest ones are shown (they are what needs attention)."""
    seen = np.flatnonzero(np.isfinite(result.iou))
    order = seen[np.argsort(result.iou[seen], kind="stable")][:max_classes][::-1]
    fig = _figure(6.5, max(2.5, 0.22 * len(order) + 1.2), 100)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(order)), result.iou[order], color="#4e79a7")
    ax.set_yticks(range(len(order)), [result.class_names[c] for c in order], fontsize=7)
    if np.isfinite(result.miou):
        ax.axvline(result.miou, color="black", lw=1.5, ls="--", label=f"mIoU {result.miou:.3f}")
        ax.legend(fontsize=8, loc="lower right")
    for i, c in enumerate(order):
        ax.text(result.iou[c], i, f" {result.iou[c]:.3f}", va="center", fontsize=7)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("IoU")
    ax.set_title("per-class IoU")
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


def plot_pq_per_category(result: "PanopticEvalResult", path: str | os.PathLike, max_classes: int = 60) -> Path:
    """Horizontal bars of per-category PQ (things and stuff coloured apart), overall PQ as a line; PNG."""
    cats = [c for c in result.per_category.values() if c.tp + c.fp + c.fn > 0]
    cats = sorted(cats, key=lambda c: c.pq)[:max_classes][::-1]
    fig = _figure(6.5, max(2.5, 0.22 * len(cats) + 1.2), 100)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(cats)), [c.pq for c in cats],
            color=["#e15759" if c.isthing else "#59a14f" for c in cats])
    ax.set_yticks(range(len(cats)), [f"{c.name} ({'thing' if c.isthing else 'stuff'})" for c in cats], fontsize=7)
    if np.isfinite(result.pq):
        ax.axvline(result.pq, color="black", lw=1.5, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel("PQ")
    ax.set_title(f"per-category PQ (PQ {result.pq:.3f}, things {result.things.pq:.3f}, "
                 f"stuff {result.stuff.pq:.3f})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


def plot_threshold_sweep(thresholds, precision, recall, f1, path: str | os.PathLike, *,
                         chosen: float | None = None, title: str | None = None) -> Path:
    """Precision, recall and F1 (fractions) against the score threshold, with the ``chosen`` threshold
    as a dashed line and the F1 maximum marked; writes a PNG."""
    t = np.asarray(thresholds, dtype=np.float64)
    fig = _figure(6.0, 3.8, 100)
    ax = fig.add_subplot(1, 1, 1)
    for name, v, color in (("precision", precision, "#4e79a7"), ("recall", recall, "#f28e2b"),
                           ("F1", f1, "#59a14f")):
        draw_series(ax, t, np.asarray(v, dtype=np.float64), name, color=color)
    f = np.asarray(f1, dtype=np.float64)
    if len(f) and np.isfinite(f).any():
        b = int(np.nanargmax(f))
        ax.plot([t[b]], [f[b]], marker="*", markersize=12, color="#59a14f", linestyle="none")
        ax.annotate(f"best F1 {f[b]:.3f} at {t[b]:.2f}", (t[b], f[b]), textcoords="offset points", xytext=(8, 8),
                    fontsize=8, color="#3b7a32")
    if chosen is not None:
        ax.axvline(chosen, color="black", lw=1, ls="--", label=f"chosen threshold {chosen:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("score threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "precision / recall / F1 against the score threshold", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


#: COCO's object size ranges by box area (small < 32^2 <= medium < 96^2 <= large), as sqrt(area) in px
COCO_SIZE_EDGES = (32.0, 96.0)


def plot_label_stats(class_names: Sequence[str], counts: "Mapping[str, Sequence[int]]",
                     sizes: "Mapping[str, Sequence[float]]", path: str | os.PathLike, *,
                     per_image: "Mapping[str, Sequence[int]] | None" = None, title: str | None = None) -> Path:
    """What a dataset's labels look like, per split (``{split: values}``): objects per class (bars,
    count written at each bar), object sizes as ``sqrt(box area)`` in pixels (histogram, with COCO's
    small / medium / large boundaries at 32 and 96 px) and, when given, objects per image. Writes a PNG."""
    import matplotlib

    splits = list(counts)
    cmap = matplotlib.colormaps["tab10"]
    n_panels = 3 if per_image else 2
    fig = _figure(5.2 * n_panels, max(3.6, 0.28 * len(class_names) + 1.6), 100)
    ax = fig.add_subplot(1, n_panels, 1)
    y = np.arange(len(class_names))
    h = 0.8 / max(1, len(splits))
    for i, sp in enumerate(splits):
        c = np.asarray(counts[sp], dtype=np.int64)
        ax.barh(y + (i - (len(splits) - 1) / 2) * h, c, height=h, color=cmap(i), label=sp)
        for yy, v in zip(y, c):
            ax.text(v, yy + (i - (len(splits) - 1) / 2) * h, f" {int(v)}", va="center", fontsize=7)
    ax.set_yticks(y, list(class_names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("objects")
    ax.set_title("objects per class")
    ax.legend(fontsize=8, loc="lower right")
    ax.margins(x=0.15)
    ax = fig.add_subplot(1, n_panels, 2)
    allsz = np.concatenate([np.asarray(v, dtype=np.float64) for v in sizes.values()] or [np.zeros(0)])
    top = float(allsz.max()) if allsz.size else 1.0
    bins = np.linspace(0, max(top, 1.0) * 1.02, 31)
    for i, sp in enumerate(sizes):
        ax.hist(np.asarray(sizes[sp], dtype=np.float64), bins=bins, alpha=0.6, color=cmap(i), label=sp)
    for edge, name in zip(COCO_SIZE_EDGES, ("small | medium", "medium | large")):
        if edge < bins[-1]:
            ax.axvline(edge, color="black", lw=1, ls="--")
            ax.text(edge, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=7)
    ax.set_xlabel("object size: sqrt(box area) in px")
    ax.set_ylabel("objects")
    ax.set_title("object sizes")
    ax.legend(fontsize=8)
    if per_image:
        ax = fig.add_subplot(1, n_panels, 3)
        allc = np.concatenate([np.asarray(v, dtype=np.int64) for v in per_image.values()] or [np.zeros(0, np.int64)])
        edges = np.arange(-0.5, (int(allc.max()) if allc.size else 0) + 1.5)
        for i, sp in enumerate(per_image):
            ax.hist(np.asarray(per_image[sp]), bins=edges, alpha=0.6, color=cmap(i), label=sp)
        ax.set_xlabel("objects in the image")
        ax.set_ylabel("images")
        ax.set_title("objects per image")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, EVAL_DPI)


__all__ = ["COCO_SIZE_EDGES", "EVAL_DPI", "X_COLUMNS", "confusion_figure", "draw_series", "error_figure",
           "plot_class_iou", "plot_confusion_matrix",
           "plot_curves", "plot_error_breakdown", "plot_label_stats", "plot_pq_per_category", "plot_pr_curves",
           "plot_threshold_sweep", "pr_figure", "read_csv_series", "save_figure"]
