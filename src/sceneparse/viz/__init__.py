"""sceneparse.viz: pictures of results and ground truth.

* :mod:`.draw`: ``draw_instances`` (boxes, labels, masks, keypoints), ``draw_semantic``,
  ``draw_panoptic``, ``draw_heatmaps``, ``draw_legend``, ``save_image`` (atomic); all return
  ``uint8 [H, W, 3]`` arrays.
* :mod:`.colors`: stable class colours and per-instance shades.
* :mod:`.plots`: ``plot_curves`` (losses / metrics) and the plots of evaluation results:
  ``plot_pr_curves``, ``plot_confusion_matrix``, ``plot_error_breakdown``, ``plot_class_iou``,
  ``plot_pq_per_category`` (matplotlib, Agg canvas; files written atomically by ``save_figure``).
"""
