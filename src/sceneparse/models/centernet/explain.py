"""CenterNet's explanation pictures: an object is a point (a class-heatmap peak) + its size.

Two views (:meth:`CenterNet.explain <sceneparse.models.base.SceneModel.explain>`):

* ``heatmap``: the class heatmap (sigmoid, max over the ``C`` classes) at output stride ``R = 4``
  over the image, with the peaks the decoder keeps marked and scored;
* ``sizes``: from each kept peak, the offset (peak cell -> sub-cell centre) and the size vectors
  (centre -> the box's edges, ``w/2`` and ``h/2`` each way), beside the resulting boxes.

The numbers are the decoder's: one pass of ``prepare -> forward``, the peaks of
:func:`~sceneparse.ops.center_heatmaps.heatmap_peaks` (the op :func:`decode_centers` runs) and the
boxes of :meth:`CenterNet.postprocess` with ``predict``'s ``score > conf`` and ``max_det``, so the
peaks drawn are exactly ``predict``'s detections, in its order, with its scores
(``Explanation.data``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...ops.center_heatmaps import heatmap_peaks
from ...structures.explain import ArrowMark, BoxMark, ColorScale, Explanation, Panel, PointMark, ScalarMap
from ...structures.instances import Instances

if TYPE_CHECKING:
    from .centernet import CenterNet

__all__ = ["CENTERNET_VIEWS", "CenterNetPeaks", "centernet_explanation", "centernet_peaks"]

#: the views of :meth:`CenterNet.explain_views`, in the order ``what=None`` draws them
CENTERNET_VIEWS = ("heatmap", "sizes")


@dataclass
class CenterNetPeaks:
    """The kept peaks of one image, best first (``n`` = ``predict``'s detections).

    Attributes:
        heat: ``[C, h, w]`` class probabilities on the output map (the padded batch frame).
        scores, labels: ``[n]`` peak values and classes (= ``predict``'s scores and labels).
        cells: ``[n, 2]`` ``(x, y)`` integer cells of the peaks on the output map.
        offsets: ``[n, 2]`` ``(dx, dy)`` regressed sub-cell offsets, in map cells.
        sizes: ``[n, 2]`` ``(w, h)`` regressed sizes, in map cells.
        points, centers: ``[n, 2]`` the peak cell ``(x R, y R)`` and the box centre ``((x + dx) R, (y +
            dy) R)``, in original image pixels.
        half_sizes: ``[n, 2]`` ``(w R / 2, h R / 2)`` in original pixels (unclipped).
        result: ``predict``'s :class:`Instances` (boxes clipped to the image).
        extent: ``(x0, y0, x1, y1)`` the output map covers, in original pixels.
        stride, scale: ``R`` and the resize factors ``(sy, sx)`` of the image.
    """

    heat: Tensor
    scores: Tensor
    labels: Tensor
    cells: Tensor
    offsets: Tensor
    sizes: Tensor
    points: Tensor
    centers: Tensor
    half_sizes: Tensor
    result: Instances
    extent: tuple[float, float, float, float]
    stride: int
    scale: tuple[float, float]


def centernet_peaks(model: "CenterNet", image: Tensor, *, conf: float | None = None, max_det: int | None = None,
                    imgsz: Any = None) -> CenterNetPeaks:
    """One forward pass of ``model`` on ``image`` and what its decoder keeps (see :class:`CenterNetPeaks`)."""
    s = model.settings(conf, None, max_det, imgsz)
    batch, _ = model.prepare([image], imgsz=s.imgsz)
    raw = model(batch)
    heat = raw.heatmap.sigmoid()
    scores, classes, ys, xs = heatmap_peaks(heat, s.max_det)  # the peaks decode_centers decodes, same order
    result = model.postprocess(raw, batch, k=s.max_det)[0]  # = CenterNet.infer
    keep = torch.where(result.scores > s.conf)[0]
    result = result[keep]
    ys, xs = ys[0, keep], xs[0, keep]
    pos = ys * heat.shape[-1] + xs
    sizes = raw.size[0].flatten(1)[:, pos].T  # [n, 2] (w, h) in cells
    offsets = raw.offset[0].flatten(1)[:, pos].T
    sy, sx = (float(v) for v in batch.scales[0])
    R = int(raw.stride)
    to_px = torch.tensor([R / sx, R / sy], dtype=sizes.dtype, device=sizes.device)
    cells = torch.stack([xs, ys], 1)
    H, W = batch.tensor.shape[-2:]
    return CenterNetPeaks(
        heat=heat[0], scores=scores[0, keep], labels=classes[0, keep], cells=cells, offsets=offsets, sizes=sizes,
        points=cells.to(sizes.dtype) * to_px, centers=(cells.to(sizes.dtype) + offsets) * to_px,
        half_sizes=sizes * to_px / 2, result=result, extent=(0.0, 0.0, W / sx, H / sy), stride=R, scale=(sy, sx))


def _name(names: tuple[str, ...], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def centernet_explanation(model: "CenterNet", view: str, image: Tensor, *, conf: float | None = None,
                          max_det: int | None = None, imgsz: Any = None, labelled: int = 15) -> list[Explanation]:
    """The ``view`` picture (:data:`CENTERNET_VIEWS`) of ``model`` on ``image``; ``labelled``: how many
    of the best peaks carry their numbers as text (all kept peaks are drawn)."""
    p = centernet_peaks(model, image, conf=conf, max_det=max_det, imgsz=imgsz)
    s = model.settings(conf, None, max_det, imgsz)
    names = tuple(model.class_names) if len(model.class_names) == model.num_classes else ()
    n = len(p.scores)
    data = {"scores": p.scores, "labels": p.labels, "cells": p.cells, "offsets": p.offsets, "sizes": p.sizes,
            "points": p.points, "centers": p.centers, "boxes": p.result.boxes, "stride": p.stride,
            "conf": s.conf, "max_det": s.max_det}
    sc, lab = p.scores.tolist(), p.labels.tolist()
    R = p.stride
    if view == "heatmap":
        peaks = tuple(PointMark(xy=p.points[i], label_index=lab[i], radius=3.0,
                                label=f"{i + 1}: {_name(names, lab[i])} {sc[i]:.2f}" if i < labelled else "")
                      for i in range(n))
        top = p.heat.amax(0)
        vmax = max(0.05, float(top.max()))  # probabilities; the bar ends at the map's maximum (random weights: ~0.1)
        overlay = ScalarMap(top, extent=p.extent, scale=ColorScale(0.0, vmax, "magma", "max class prob"), alpha=0.7)
        panel = Panel(image, f"class heatmap (max over {model.num_classes} classes), stride {R}", overlay=overlay,
                      points=peaks)
        caption = (f"CenterNet (Objects as Points) represents an object by a single point: the peak of its class "
                   f"heatmap at the box centre. Shown: the heatmap Y = sigmoid(class logits), max over the classes, on "
                   f"the output grid of stride R = {R} laid over the image. A peak is a cell equal to the maximum of "
                   f"its 3x3 neighbourhood (a 3x3 max-pool replaces NMS); the decoder keeps the top {s.max_det} peaks "
                   f"over all classes and predict keeps those with score > {s.conf:g}. Dots: the {n} peaks kept, in "
                   f"the decoder's order (1 = best), at the cell's point (x R, y R), coloured by class; the "
                   f"{min(n, labelled)} best carry their rank, class and score Y.")
        return [Explanation("centernet_heatmap", "CenterNet: class heatmap and its peaks", caption, (panel,), data)]
    if view == "sizes":
        c, hs = p.centers.tolist(), p.half_sizes.tolist()
        arrows, points = [], []
        for i in range(n):
            (cx, cy), (hw, hh), k = c[i], hs[i], lab[i]
            txt = f"w {2 * hw:.0f} h {2 * hh:.0f}" if i < labelled else ""
            arrows.append(ArrowMark(start=p.points[i], end=(cx, cy), color=(255, 255, 255), width=1.0))
            arrows += [ArrowMark(start=(cx, cy), end=(cx + hw, cy), label_index=k, label=txt),
                       ArrowMark(start=(cx, cy), end=(cx - hw, cy), label_index=k),
                       ArrowMark(start=(cx, cy), end=(cx, cy - hh), label_index=k),
                       ArrowMark(start=(cx, cy), end=(cx, cy + hh), label_index=k)]
            points.append(PointMark(xy=p.points[i], label_index=k, radius=2.5,
                                    label=f"{i + 1}" if i < labelled else ""))
        vectors = Panel(image, "offset (white) and size vectors from each peak", arrows=tuple(arrows),
                        points=tuple(points))
        b = p.result.boxes.tolist()
        boxes = tuple(BoxMark(box=b[i], label_index=lab[i], alpha=1.0 if i < labelled else 0.5,
                              label=f"{i + 1}: {_name(names, lab[i])} {sc[i]:.2f}" if i < labelled else "")
                      for i in range(n))
        result = Panel(image, f"the {n} boxes predict returns", boxes=boxes)
        caption = (f"CenterNet regresses the rest of the box at the peak: the offset O = (dx, dy) (white arrow, from "
                   f"the peak cell's point (x R, y R) to the sub-cell centre, undoing the rounding to the stride-"
                   f"{R} grid) and the size S = (w, h) (coloured arrows from the centre to the box's edges, w/2 and "
                   f"h/2 each way). The box is ((x + dx) R -+ w R / 2, (y + dy) R -+ h R / 2), mapped back to the "
                   f"image's pixels. Right: the {n} boxes of predict (score > {s.conf:g}, at most {s.max_det}), "
                   f"clipped to the image, numbered as the peaks; the {min(n, labelled)} best labelled.")
        return [Explanation("centernet_sizes", "CenterNet: offsets and size vectors at the peaks", caption,
                            (vectors, result), data)]
    raise ValueError(f"unknown CenterNet view {view!r}")  # explain() checks views first
