"""Plots: training curves (losses and metrics over steps / epochs) and precision-recall curves.

Matplotlib is used through its object API on the Agg canvas (no pyplot, no global backend switch),
so plotting works headless and from worker threads. Files are written atomically.
"""
from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

#: column names taken as the x axis of a CSV log, in order of preference
X_COLUMNS = ("step", "iteration", "iter", "epoch")

Series = "Sequence[float] | tuple[Sequence[float], Sequence[float]]"


def _figure(width: float, height: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png: str | os.PathLike) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=out.suffix.lstrip(".").lower() or "png")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
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
    return _save(fig, out_png)


def plot_pr_curves(precision, recall_thresholds: Sequence[float], names: Sequence[str], out_png: str | os.PathLike,
                   *, title: str | None = None, max_curves: int = 15, dpi: int = 100) -> dict[str, float]:
    """Precision-recall curves, one per class, plus their mean.

    Args:
        precision: ``[C, R]`` (or a list of ``[R]``) interpolated precision at ``recall_thresholds``
            (e.g. COCOeval's ``precision[t, :, k, a, m]``); ``-1`` (COCO's "no ground truth") and NaN
            mark classes / points left out.
        recall_thresholds: ``[R]``, e.g. COCO's 101 points ``0, 0.01, ..., 1``.
        names: ``[C]`` class names.
        max_curves: the classes with the highest AP are drawn (the legend stays readable); the mean
            curve uses every class.

    Returns ``{name: AP}`` for the classes with data, AP being the mean precision over the recall
    thresholds (COCO's definition), and ``"mean"`` for the mean over classes.
    """
    p = np.asarray([np.asarray(v, dtype=np.float64).reshape(-1) for v in precision], dtype=np.float64)
    r = np.asarray(recall_thresholds, dtype=np.float64).reshape(-1)
    if p.ndim != 2 or p.shape[1] != len(r):
        raise ValueError(f"precision must be [C, R] with R = {len(r)} recall thresholds, got {p.shape}")
    if len(names) != p.shape[0]:
        raise ValueError(f"{len(names)} names for {p.shape[0]} precision rows")
    p = np.where(p < 0, np.nan, p)
    has = np.isfinite(p).any(1)
    ap = np.full(len(p), np.nan)
    ap[has] = np.nanmean(p[has], axis=1)
    fig = _figure(6.4, 5.0, dpi)
    ax = fig.add_subplot(1, 1, 1)
    shown = [i for i in np.argsort(-np.nan_to_num(ap, nan=-1.0), kind="stable") if has[i]][:max_curves]
    for i in shown:
        ax.step(r, p[i], where="post", linewidth=1.2, label=f"{names[i]} ({ap[i]:.3f})")
    result = {str(names[i]): float(ap[i]) for i in range(len(p)) if has[i]}
    if has.any():
        mean_curve = np.nanmean(p[has], axis=0)
        result["mean"] = float(np.nanmean(ap[has]))
        ax.step(r, mean_curve, where="post", color="black", linewidth=2.4, label=f"mean ({result['mean']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "precision-recall")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    _save(fig, out_png)
    return result


__all__ = ["X_COLUMNS", "plot_curves", "plot_pr_curves", "read_csv_series"]
