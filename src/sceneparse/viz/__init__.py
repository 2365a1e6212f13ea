"""sceneparse.viz: pictures of results and ground truth.

* :mod:`.draw`: ``draw_instances`` (boxes, labels, masks, keypoints), ``draw_semantic``,
  ``draw_panoptic``, ``draw_heatmaps``, ``draw_legend``, ``tile`` (pictures side by side under
  titles), ``detections_to_draw`` (what a picture of results shows, with the top detections when none
  reaches the threshold), ``save_image`` (atomic); drawings are ``uint8 [H, W, 3]`` arrays.
* :mod:`.colors`: stable class colours and per-instance shades.
* :mod:`.plots`: ``plot_curves`` (losses / metrics; a lone point is a labelled marker) and the plots of
  evaluation results: ``plot_pr_curves``, ``plot_confusion_matrix``, ``plot_error_breakdown``,
  ``plot_class_iou``, ``plot_pq_per_category``, ``plot_threshold_sweep``, and of a dataset:
  ``plot_label_stats`` (matplotlib, Agg canvas; files written atomically by ``save_figure``). AP, IoU,
  PQ, precision and recall are fractions in ``[0, 1]`` everywhere.
* :mod:`.report`: ``Report``, a self-contained HTML page (cards, notes, tables, figures, galleries,
  links) written with its pictures' relative paths.
* :mod:`.explain`: explanation pictures (the lecture notes' drawings of what a model computes,
  :mod:`sceneparse.structures.explain`) to PNGs: ``render_explanation``, ``save_explanation``,
  ``write_explanations``, and ``explain(model, image, what=None, out=DIR) -> list[Path]`` (re-exported
  here, so ``sceneparse.viz.explain`` is that function; its module needs numpy and Pillow only).
"""
from .explain import explain, render_explanation, save_explanation, write_explanations

__all__ = ["explain", "render_explanation", "save_explanation", "write_explanations"]
