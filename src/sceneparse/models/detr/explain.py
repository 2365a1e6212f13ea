"""DETR's explanation pictures: detection as a set of object queries.

Two views (:meth:`DETR.explain <sceneparse.models.base.SceneModel.explain>`):

* ``queries``: the box of **every** one of the ``N`` object queries, coloured by its best class
  probability (softmax over ``C + 1``, "no object" left out: the score ``predict`` gives it); queries
  whose most likely class is "no object" are drawn faint;
* ``attention``: the last decoder layer's cross-attention weights of one query (mean over the heads)
  over the encoder's feature grid, laid over the image with that query's box.

One forward pass with ``attention=True`` (the weights are computed on the side: the outputs are
bit-identical to ``predict``'s) and :meth:`DETR.postprocess`, so each query's box, score and label are
``predict``'s numbers for that query (``predict`` keeps the queries in query order).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...errors import ConfigError
from ...structures.explain import BoxMark, ColorScale, Explanation, Panel, ScalarMap

if TYPE_CHECKING:
    from .detr import DETR

__all__ = ["DETR_VIEWS", "detr_explanation"]

#: the views of :meth:`DETR.explain_views`, in the order ``what=None`` draws them
DETR_VIEWS = ("queries", "attention")


def _name(names: tuple[str, ...], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def detr_explanation(model: "DETR", view: str, image: Tensor, *, query: int | None = None, imgsz: Any = None,
                     labelled: int = 12) -> list[Explanation]:
    """The ``view`` picture (:data:`DETR_VIEWS`) of ``model`` on ``image``. ``query``: the query of the
    attention view (``None``: the highest-scoring one); ``labelled``: how many of the best "object"
    queries carry their numbers as text in the queries view."""
    s = model.settings(imgsz=imgsz)
    batch, _ = model.prepare([image], imgsz=s.imgsz)
    raw = model(batch, attention=True)
    result = model.postprocess(raw, batch)[0]  # N detections, query order (= predict before its threshold)
    probs = raw.pred_logits[0].softmax(-1)  # [N, C + 1]
    no_object = probs.argmax(-1) == model.num_classes
    scores, labels, boxes = result.scores, result.labels, result.boxes
    N = len(scores)
    names = tuple(model.class_names) if len(model.class_names) == model.num_classes else ()
    sc, lab, b, faint = scores.tolist(), labels.tolist(), boxes.tolist(), no_object.tolist()
    data: dict[str, Any] = {"boxes": boxes, "scores": scores, "labels": labels, "probs": probs,
                            "no_object": no_object}
    if view == "queries":
        order = sorted(range(N), key=lambda i: (not faint[i], sc[i]))  # faint first, best drawn last (on top)
        best = [i for i in sorted(range(N), key=lambda i: -sc[i]) if not faint[i]][:labelled]
        marks = tuple(BoxMark(box=b[i], value=sc[i], alpha=0.3 if faint[i] else 1.0, width=1.0 if faint[i] else 2.0,
                              label=f"q{i} {_name(names, lab[i])} {sc[i]:.2f}" if i in best else "")
                      for i in order)
        n_obj = N - int(no_object.sum())
        panel = Panel(image, f"the {N} object queries' boxes", boxes=marks,
                      scale=ColorScale(0.0, 1.0, "viridis", "best class prob"))
        caption = (f"DETR predicts a fixed-size set: each of its N = {N} learnt object queries is decoded (in "
                   f"parallel, no NMS) into a class distribution over the {model.num_classes} classes + 'no object' "
                   f"and a box. Every query's box is drawn, coloured by its best class probability (the score "
                   f"predict reports); queries whose most likely class is 'no object' are faint ({N - n_obj} of {N}), "
                   f"the others solid, the {len(best)} best of those labelled 'q<query> class probability'. "
                   f"Training matches queries to objects one-to-one (Hungarian algorithm) and teaches every "
                   f"unmatched query 'no object'.")
        return [Explanation("detr_queries", "DETR: every object query's box", caption, (panel,), data)]
    if view == "attention":
        if query is None:
            q = int(scores.argmax())  # the first of equal maxima
        else:
            try:
                q = int(query)
            except (TypeError, ValueError):
                raise ConfigError(f"query must be a query index 0..{N - 1}, got {query!r}") from None
            if not 0 <= q < N:
                raise ConfigError(f"query must be a query index 0..{N - 1}, got {query}")
        att = raw.cross_attention[-1, 0].mean(0)[q]  # [h, w]: last layer, mean over heads
        h, w = att.shape
        sy, sx = (float(v) for v in batch.scales[0])
        H, W = batch.tensor.shape[-2:]
        stride = W / w
        overlay = ScalarMap(att, extent=(0.0, 0.0, W / sx, H / sy),
                            scale=ColorScale(float(att.min()), float(att.max()), "inferno", "attention"), alpha=0.75)
        box = BoxMark(box=b[q], color=(0, 255, 255), width=2.5, label=f"q{q} {_name(names, lab[q])} {sc[q]:.2f}")
        heads = int(raw.cross_attention.shape[2])
        panel = Panel(image, f"query {q}: cross-attention, last decoder layer (mean of {heads} heads)",
                      overlay=overlay, boxes=(box,))
        data.update(query=q, attention=att, box=boxes[q], score=scores[q], label=labels[q], grid=(h, w),
                    stride=stride)
        chosen = "the highest-scoring query" if query is None else "the query asked for"
        caption = (f"DETR's decoder reads the image through cross-attention: each object query (here query {q}, "
                   f"{chosen}, score {sc[q]:.2f}) attends to the encoder's memory, the {h} x {w} CNN feature grid "
                   f"(stride about {stride:.0f} px) with sine positional encodings. Shown: the attention weights of "
                   f"the last decoder layer, softmax over the grid cells (they sum to 1), averaged over the {heads} "
                   f"heads and laid over the image, with the box this query predicts (cyan). In a trained DETR the "
                   f"weights gather on the object's extremities, which fix its box.")
        return [Explanation("detr_attention", f"DETR: where query {q} looks", caption, (panel,), data)]
    raise ValueError(f"unknown DETR view {view!r}")  # explain() checks views first
