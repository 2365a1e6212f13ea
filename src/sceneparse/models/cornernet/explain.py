"""CornerNet's explanation pictures: an object is a pair of corners grouped by their embeddings.

Two views (:meth:`CornerNet.explain <sceneparse.models.base.SceneModel.explain>`):

* ``corners``: the top-left and the bottom-right corner heatmaps (sigmoid, max over the ``C``
  classes, stride ``R = 4``) side by side over the image, with the two corners of every detection
  marked on their heatmap, labelled with their embedding;
* ``pairs``: each detection's top-left and bottom-right corners joined by a line, the two embeddings
  written on it (the decoder pairs corners of one class whose embeddings differ by at most 0.5),
  beside the boxes ``predict`` returns.

The numbers are the decoder's: one pass of ``prepare -> forward`` and the pairs of
:meth:`CornerNet.pairs` (what :meth:`CornerNet.postprocess` turns into boxes), with ``predict``'s
``score > conf`` and ``max_det``, so the pairs drawn are exactly ``predict``'s detections, in its
order, with its scores (``Explanation.data``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...structures.explain import BoxMark, ColorScale, Explanation, Panel, PointMark, ScalarMap, SegmentMark
from ...structures.instances import Instances

if TYPE_CHECKING:
    from .cornernet import CornerNet

__all__ = ["CORNERNET_VIEWS", "CornerNetDetections", "cornernet_detections", "cornernet_explanation"]

#: the views of :meth:`CornerNet.explain_views`, in the order ``what=None`` draws them
CORNERNET_VIEWS = ("corners", "pairs")


@dataclass
class CornerNetDetections:
    """The kept corner pairs of one image, best first (``n`` = ``predict``'s detections).

    Attributes:
        tl_heat, br_heat: ``[C, h, w]`` corner probabilities on the output map (the padded batch frame).
        scores, labels: ``[n]`` (= ``predict``'s scores and labels).
        tl_points, br_points: ``[n, 2]`` the corners ``(x, y)`` (peak cell + offset) in original pixels.
        tl_embedding, br_embedding: ``[n]`` the corners' embeddings.
        result: ``predict``'s :class:`Instances` (boxes clipped to the image).
        extent: ``(x0, y0, x1, y1)`` the output map covers, in original pixels.
        stride: ``R``.
    """

    tl_heat: Tensor
    br_heat: Tensor
    scores: Tensor
    labels: Tensor
    tl_points: Tensor
    br_points: Tensor
    tl_embedding: Tensor
    br_embedding: Tensor
    result: Instances
    extent: tuple[float, float, float, float]
    stride: int


def cornernet_detections(model: "CornerNet", image: Tensor, *, conf: float | None = None, max_det: int | None = None,
                         imgsz: Any = None) -> CornerNetDetections:
    """One forward pass of ``model`` on ``image`` and the pairs its decoder keeps."""
    s = model.settings(conf, None, max_det, imgsz)
    batch, _ = model.prepare([image], imgsz=s.imgsz)
    raw = model(batch)
    pairs = model.pairs(raw, s.max_det)
    result = model.postprocess(raw, batch, max_det=s.max_det)[0]  # the valid pairs, in order (= infer)
    keep = torch.where(result.scores > s.conf)[0]
    result = result[keep]
    idx = torch.where(pairs.scores[0] >= 0)[0][keep]
    sy, sx = (float(v) for v in batch.scales[0])
    R = int(raw.stride)
    tl, br = pairs.tl[0, idx], pairs.br[0, idx]
    to_px = torch.tensor([R / sx, R / sy], dtype=tl.dtype, device=tl.device)
    H, W = batch.tensor.shape[-2:]
    return CornerNetDetections(
        tl_heat=raw.tl_heatmap[-1][0].sigmoid(), br_heat=raw.br_heatmap[-1][0].sigmoid(), scores=pairs.scores[0, idx],
        labels=pairs.labels[0, idx], tl_points=tl * to_px, br_points=br * to_px,
        tl_embedding=pairs.tl_embedding[0, idx], br_embedding=pairs.br_embedding[0, idx], result=result,
        extent=(0.0, 0.0, W / sx, H / sy), stride=R)


def _name(names: tuple[str, ...], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def cornernet_explanation(model: "CornerNet", view: str, image: Tensor, *, conf: float | None = None,
                          max_det: int | None = None, imgsz: Any = None, labelled: int = 15) -> list[Explanation]:
    """The ``view`` picture (:data:`CORNERNET_VIEWS`) of ``model`` on ``image``; ``labelled``: how many
    of the best pairs carry their numbers as text (all kept pairs are drawn)."""
    d = cornernet_detections(model, image, conf=conf, max_det=max_det, imgsz=imgsz)
    s = model.settings(conf, None, max_det, imgsz)
    names = tuple(model.class_names) if len(model.class_names) == model.num_classes else ()
    n = len(d.scores)
    data = {"scores": d.scores, "labels": d.labels, "boxes": d.result.boxes, "tl_points": d.tl_points,
            "br_points": d.br_points, "tl_embedding": d.tl_embedding, "br_embedding": d.br_embedding,
            "stride": d.stride, "conf": s.conf, "max_det": s.max_det, "ae_threshold": model.ae_threshold}
    sc, lab = d.scores.tolist(), d.labels.tolist()
    et, eb = d.tl_embedding.tolist(), d.br_embedding.tolist()
    R = d.stride
    if view == "corners":
        panels = []
        for corner, heat, pts, emb in (("top-left", d.tl_heat, d.tl_points, et), ("bottom-right", d.br_heat,
                                                                                    d.br_points, eb)):
            marks = tuple(PointMark(xy=pts[i], label_index=lab[i], radius=3.0,
                                    label=f"{i + 1}: e {emb[i]:.2f}" if i < labelled else "") for i in range(n))
            top = heat.amax(0)
            vmax = max(0.05, float(top.max()))
            overlay = ScalarMap(top, extent=d.extent, scale=ColorScale(0.0, vmax, "magma", "max class prob"),
                                alpha=0.7)
            panels.append(Panel(image, f"{corner} corner heatmap (max over {model.num_classes} classes), stride {R}",
                                overlay=overlay, points=marks))
        caption = (f"CornerNet detects a box as a pair of keypoints: its top-left and its bottom-right corner, each "
                   f"type with its own C class heatmaps on the stride-{R} grid (left: top-left, right: bottom-right, "
                   f"sigmoid, max over the classes). A corner usually lies outside the object, so the features are "
                   f"corner-pooled first (top-left: max over everything below and to the right). The decoder takes "
                   f"the 3x3 max-pool peaks, the top {model.topk} of each heatmap. Dots: the two corners of each of "
                   f"the {n} detections (predict's, score > {s.conf:g}), coloured by class, numbered as the pairs "
                   f"(1 = best) with the corner's embedding e.")
        return [Explanation("cornernet_corners", "CornerNet: corner heatmaps and the detections' corners", caption,
                            tuple(panels), data)]
    if view == "pairs":
        tl, br = d.tl_points.tolist(), d.br_points.tolist()
        segments, points = [], []
        for i in range(n):
            txt = f"{i + 1}: e {et[i]:.2f} / {eb[i]:.2f}" if i < labelled else ""
            segments.append(SegmentMark(start=tl[i], end=br[i], label_index=lab[i], label=txt,
                                        alpha=1.0 if i < labelled else 0.5))
            points += [PointMark(xy=tl[i], label_index=lab[i], radius=3.0),
                       PointMark(xy=br[i], label_index=lab[i], radius=3.0)]
        grouped = Panel(image, "corner pairs grouped by embedding (top-left -- bottom-right)",
                        segments=tuple(segments), points=tuple(points))
        b = d.result.boxes.tolist()
        boxes = tuple(BoxMark(box=b[i], label_index=lab[i], alpha=1.0 if i < labelled else 0.5,
                              label=f"{i + 1}: {_name(names, lab[i])} {sc[i]:.2f}" if i < labelled else "")
                      for i in range(n))
        result = Panel(image, f"the {n} boxes predict returns", boxes=boxes)
        caption = (f"CornerNet groups corners by their embeddings: every top-left corner is paired with every "
                   f"bottom-right corner (top {model.topk} x top {model.topk}); a pair is kept when both have the "
                   f"same class, the bottom-right lies below and to the right, and the 1-d embeddings e differ by at "
                   f"most {model.ae_threshold:g} (training pulls an object's two embeddings together and pushes "
                   f"different objects' apart by a margin of 1). Its score is the mean of the two corner scores. "
                   f"Left: each of the {n} pairs predict keeps (score > {s.conf:g}, at most {s.max_det}) as a line "
                   f"from its top-left to its bottom-right corner, with the two embeddings; right: the boxes, "
                   f"clipped to the image, numbered as the pairs; the {min(n, labelled)} best labelled.")
        return [Explanation("cornernet_pairs", "CornerNet: corners paired by embedding", caption, (grouped, result),
                            data)]
    raise ValueError(f"unknown CornerNet view {view!r}")  # explain() checks views first
