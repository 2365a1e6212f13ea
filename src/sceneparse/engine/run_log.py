"""What a training run leaves in its folder besides checkpoints: ``results.csv`` (one row per epoch)
and the plots ``loss_curve.png`` (losses and learning rate over iterations) and ``metrics.png``
(validation metrics over epochs). Files are written atomically.

An epoch row (as kept in ``TrainResult.history`` and in checkpoints) is a dict
``{"epoch", "iterations", "lr", "losses": {name: mean}, "loss", "metrics": {name: value}, "seconds"}``,
plus ``"planned_epochs"`` (the plan after that epoch's re-plan) in runs with a time budget;
an iteration-log entry is ``{"iteration", "lr", "losses": {name: mean over the logging window}}``.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Sequence

from ..fileio import atomic_write_bytes


def _atomic_bytes(path: Path, data: bytes) -> Path:
    return atomic_write_bytes(path, data)


def _ordered(rows: Sequence[dict], key: str) -> list[str]:
    names: list[str] = []
    for r in rows:
        for k in r.get(key) or {}:
            if k not in names:
                names.append(k)
    return names


def csv_columns(history: Sequence[dict]) -> list[str]:
    """``epoch, iterations, lr, <losses...>, loss, <metrics...>, seconds`` and, when the rows have
    it (time-budget runs), ``planned_epochs``."""
    planned = ["planned_epochs"] if any("planned_epochs" in r for r in history) else []
    return ["epoch", "iterations", "lr", *_ordered(history, "losses"), "loss", *_ordered(history, "metrics"),
            "seconds", *planned]


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_results_csv(path: str | os.PathLike, history: Sequence[dict]) -> Path:
    """Rewrite ``results.csv`` from the epoch rows (metrics are empty in epochs without evaluation)."""
    cols = csv_columns(history)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in history:
        flat = {**{k: r.get(k) for k in ("epoch", "iterations", "lr", "loss", "seconds", "planned_epochs")},
                **(r.get("losses") or {}), **(r.get("metrics") or {})}
        w.writerow([_cell(flat.get(c)) for c in cols])
    return _atomic_bytes(Path(path), buf.getvalue().encode())


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    from ..viz.plots import save_figure  # atomic

    return save_figure(fig, path)


def plot_loss_curve(iteration_log: Sequence[dict], path: str | os.PathLike) -> Path | None:
    """Losses (left) and learning rate (right) against the iteration; ``None`` without entries."""
    if not iteration_log:
        return None
    from ..viz.plots import draw_series

    x = [e["iteration"] for e in iteration_log]
    fig = _figure(11.0, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    for name in _ordered(iteration_log, "losses"):
        pts = [(xi, e["losses"][name]) for xi, e in zip(x, iteration_log) if name in e["losses"]]
        if pts:
            draw_series(ax, [p[0] for p in pts], [p[1] for p in pts], name)
    ax.set_xlabel("iteration")
    ax.set_title("training losses")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    draw_series(ax2, x, [e["lr"] for e in iteration_log], "lr", color="tab:gray")
    ax2.set_xlabel("iteration")
    ax2.set_title("learning rate")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_metrics(history: Sequence[dict], path: str | os.PathLike) -> Path | None:
    """Validation metrics against the epoch (AP-style metrics only for detectors: ``*_AP*``, or the
    semantic metrics); ``None`` when no epoch was evaluated."""
    from ..viz.plots import draw_series

    rows = [r for r in history if r.get("metrics")]
    if not rows:
        return None
    names = [n for n in _ordered(rows, "metrics") if "_AR" not in n]
    fig = _figure(6.5, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for name in names:
        pts = [(r["epoch"], r["metrics"][name]) for r in rows
               if name in r["metrics"] and r["metrics"][name] is not None and math.isfinite(r["metrics"][name])
               and r["metrics"][name] > -1]
        if pts:  # one evaluated epoch: a marker labelled with its value, not a lone dot
            draw_series(ax, [p[0] for p in pts], [p[1] for p in pts], name)
    ax.set_xlabel("epoch")
    ax.set_title("validation metrics")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, Path(path))


__all__ = ["csv_columns", "plot_loss_curve", "plot_metrics", "write_results_csv"]
