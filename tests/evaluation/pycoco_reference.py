"""The reference the COCO evaluation tests compare with: pycocotools' ``COCOeval`` itself."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def pycoco_eval(gt: dict, results: list, iou_type: str, *, max_dets=None, area_rng=None, iou_thrs=None,
                img_ids=None, cat_ids=None, use_cats=True, sigmas=None, summarize: bool = True) -> COCOeval:
    """pycocotools on deep copies (it writes into its inputs), silenced. ``summarize=False`` stops after
    ``accumulate()`` (its ``summarize`` needs three ``max_dets``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if max_dets is not None:
            ev.params.maxDets = list(max_dets)
        if area_rng is not None:
            ev.params.areaRng = [list(v) for v in area_rng.values()]
            ev.params.areaRngLbl = list(area_rng)
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.params.useCats = int(use_cats)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64) / 10.0
        ev.evaluate()
        ev.accumulate()
        if summarize:
            ev.summarize()
    return ev
