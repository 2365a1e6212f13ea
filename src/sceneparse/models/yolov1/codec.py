"""YOLO v1's grid codec (Redmon et al., "You Only Look Once: Unified, Real-Time Object Detection",
CVPR 2016, sec. 2 and 2.2): targets on the S x S grid, the responsible predictor, the sum-squared loss
and the decoding of the ``S x S x (B * 5 + C)`` prediction tensor. Pure tensor functions, batched.

Frames. The network sees a ``H x W`` image (the fixed input size) cut into ``S x S`` cells; cell
``(i, j)`` (row, column) covers ``[j W / S, (j + 1) W / S) x [i H / S, (i + 1) H / S)``. Each cell
predicts, per box ``b < B``, ``(x, y, sqrt w, sqrt h, confidence)`` -- ``x, y`` the box centre as a
fraction of the cell (``0..1`` inside it), ``w, h`` the box size as a fraction of the image -- and, once
per cell, ``C`` class probabilities ``Pr(class | object)``. Layout of the last axis: the ``B`` boxes'
five numbers, box after box, then the ``C`` class values.

* Responsibility (sec. 2): the cell containing an object's centre is responsible for it; "each grid
  cell only predicts two boxes and can only have one class", so when several centres fall in one cell
  the *largest* object (box area; the first listed among equal areas) is the cell's target (darknet's
  data loader keeps whichever it writes last; the largest makes the result independent of the order
  of annotations). Of the cell's ``B`` predictors the one whose decoded box has the highest IoU with
  the object is responsible (sec. 2.2); when all IoUs are 0 (early training) the one closest to it
  in ``(cx, cy, w, h)`` (darknet's ``box_rmse`` rule, so that a predictor is still chosen by shape).
* Loss (eq. 3), summed over the grid and averaged over the images of the batch::

      lambda_coord sum_ij 1obj_ij [(x - x^)^2 + (y - y^)^2 + (sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
    + sum_ij 1obj_ij (C - C^)^2 + lambda_noobj sum_ij 1noobj_ij (C - 0)^2
    + sum_i 1obj_i sum_c (p(c) - p^(c))^2

  with ``lambda_coord = 5``, ``lambda_noobj = 0.5``; ``1noobj_ij`` is every predictor that is not
  responsible (also the other predictor of an object's cell, as in darknet). The confidence target
  ``C^`` is the IoU of the responsible predictor's box with the object ("we want the confidence score
  to equal the IOU", sec. 2; darknet's ``rescore=1``), not differentiated through, or 1
  (``rescore=False``).
* Test time (sec. 2, eq. 2): class-specific confidence ``Pr(class | object) * confidence`` for each of
  the ``S * S * B`` boxes and each class; the outputs are linear (no sigmoid / softmax in the paper's
  last layer), so the product is clamped to ``[0, 1]``. Box sizes are the squares of the predicted
  square roots (darknet's ``w * w``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ...ops.boxes import box_iou_paired

__all__ = ["GridTargets", "decode_grid", "encode_grid", "grid_boxes", "responsible_predictors", "yolov1_loss"]


@dataclass
class GridTargets:
    """Targets of a batch on the ``S x S`` grid.

    Attributes:
        obj: ``[N, S, S]`` bool, cells responsible for an object (``1obj_i``).
        box: ``[N, S, S, 4]`` ``(x, y, sqrt w, sqrt h)`` of the cell's object (cell / image fractions).
        xyxy: ``[N, S, S, 4]`` the object's box as image fractions (XYXY), for the IoUs.
        cls: ``[N, S, S, C]`` one-hot class of the cell's object (zeros elsewhere).
        index: ``[N, S, S]`` index of the object in its image's target (-1: none).
    """

    obj: Tensor
    box: Tensor
    xyxy: Tensor
    cls: Tensor
    index: Tensor


def encode_grid(boxes: Sequence[Tensor], labels: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]],
                grid: int, num_classes: int) -> GridTargets:
    """Boxes ``[M_n, 4]`` (XYXY pixels of the ``(h, w)`` network input) and labels ``[M_n]`` of each
    image -> :class:`GridTargets` (module docstring: the centre's cell, the largest object per cell)."""
    n, s = len(boxes), int(grid)
    device = boxes[0].device if n else torch.device("cpu")
    dtype = torch.promote_types(boxes[0].dtype, torch.float32) if n else torch.float32
    obj = torch.zeros(n, s, s, dtype=torch.bool, device=device)
    box = torch.zeros(n, s, s, 4, dtype=dtype, device=device)
    xyxy = torch.zeros(n, s, s, 4, dtype=dtype, device=device)
    cls = torch.zeros(n, s, s, num_classes, dtype=dtype, device=device)
    index = torch.full((n, s, s), -1, dtype=torch.int64, device=device)
    counts = [int(b.shape[0]) for b in boxes]
    if sum(counts) == 0:
        return GridTargets(obj, box, xyxy, cls, index)
    b = torch.cat([bx.to(dtype) for bx in boxes])
    lab = torch.cat([lb.to(torch.int64) for lb in labels]).to(device)
    img = torch.repeat_interleave(torch.arange(n, device=device), torch.tensor(counts, device=device))
    local = torch.cat([torch.arange(c, device=device) for c in counts])
    size = torch.tensor([[w, h] for h, w in image_sizes], dtype=dtype, device=device)[img]  # [M, 2] (W, H)
    rel = b / size.repeat(1, 2)  # XYXY as image fractions
    centre = (rel[:, :2] + rel[:, 2:]) / 2
    wh = (rel[:, 2:] - rel[:, :2]).clamp(min=0)
    cell = (centre * s).floor().clamp(0, s - 1).to(torch.int64)  # (column j, row i)
    flat = (img * s + cell[:, 1]) * s + cell[:, 0]  # one id per (image, row, column)
    # the largest object of each cell wins (ties: the first listed): order by area desc, index asc and
    # keep each cell's first object in that order
    area = wh.prod(dim=1)
    order = torch.argsort(-area, stable=True)
    pos = torch.arange(order.numel(), device=device)
    first = torch.full((n * s * s,), order.numel(), dtype=torch.int64, device=device)
    first = first.scatter_reduce(0, flat[order], pos, reduce="amin")
    cells = torch.where(first < order.numel())[0]
    win = order[first[cells]]
    obj.view(-1)[cells] = True
    box.view(-1, 4)[cells] = torch.cat([centre[win] * s - cell[win].to(dtype), wh[win].sqrt()], dim=1)
    xyxy.view(-1, 4)[cells] = rel[win]
    cls.view(-1, num_classes)[cells, lab[win]] = 1.0
    index.view(-1)[cells] = local[win]
    return GridTargets(obj, box, xyxy, cls, index)


def grid_boxes(pred_boxes: Tensor) -> Tensor:
    """``[N, S, S, B, 4+]`` predictions ``(x, y, sqrt w, sqrt h, ...)`` -> boxes ``[N, S, S, B, 4]`` as
    XYXY image fractions (centre ``((j + x) / S, (i + y) / S)``, size ``(sqrt w)^2, (sqrt h)^2``)."""
    s_h, s_w = pred_boxes.shape[1], pred_boxes.shape[2]
    dtype = pred_boxes.dtype
    cols = torch.arange(s_w, device=pred_boxes.device, dtype=dtype).view(1, 1, s_w, 1)
    rows = torch.arange(s_h, device=pred_boxes.device, dtype=dtype).view(1, s_h, 1, 1)
    cx = (cols + pred_boxes[..., 0]) / s_w
    cy = (rows + pred_boxes[..., 1]) / s_h
    w, h = pred_boxes[..., 2] ** 2, pred_boxes[..., 3] ** 2
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def responsible_predictors(pred_xyxy: Tensor, targets: GridTargets) -> tuple[Tensor, Tensor]:
    """Which of each object cell's ``B`` predictors is responsible, and the IoUs.

    Args:
        pred_xyxy: ``[N, S, S, B, 4]`` predicted boxes as image fractions (:func:`grid_boxes`).
    Returns:
        ``resp [N, S, S, B]`` bool (one predictor per object cell: highest IoU, or, when every IoU is
        0, the smallest ``(cx, cy, w, h)`` distance) and ``iou [N, S, S, B]`` with the cell's object.
    """
    gt = targets.xyxy.to(pred_xyxy.dtype).unsqueeze(3).expand_as(pred_xyxy)
    iou = box_iou_paired(pred_xyxy, gt, eps=1e-12)  # image fractions: a 1e-7 eps would bias small boxes
    iou = torch.where(targets.obj.unsqueeze(-1), iou, torch.zeros_like(iou))

    def cxcywh(t: Tensor) -> Tensor:
        return torch.cat(((t[..., :2] + t[..., 2:]) / 2, t[..., 2:] - t[..., :2]), dim=-1)

    rmse = (cxcywh(pred_xyxy) - cxcywh(gt)).pow(2).sum(-1)
    best = torch.where(iou.amax(-1, keepdim=True) > 0, iou.argmax(-1, keepdim=True), rmse.argmin(-1, keepdim=True))
    resp = torch.zeros_like(iou, dtype=torch.bool).scatter_(-1, best, True) & targets.obj.unsqueeze(-1)
    return resp, iou


def yolov1_loss(pred: Tensor, targets: GridTargets, num_boxes: int, *, lambda_coord: float = 5.0,
                lambda_noobj: float = 0.5, rescore: bool = True) -> dict[str, Tensor]:
    """The sum-squared loss of eq. 3 (module docstring) for predictions ``[N, S, S, B * 5 + C]``.

    Returns ``coord`` (``lambda_coord`` x the x, y, sqrt w, sqrt h errors of the responsible
    predictors), ``object`` (their confidence against the IoU, or 1), ``no_object`` (``lambda_noobj``
    x every other predictor's confidence squared) and ``class`` (the class values of object cells
    against one-hot); each summed over the grid and divided by the number of images ``N``.
    """
    n = pred.shape[0]
    b = int(num_boxes)
    boxes = pred[..., : 5 * b].reshape(*pred.shape[:3], b, 5)
    probs = pred[..., 5 * b:]
    with torch.no_grad():  # responsibility and the IoU target are constants of the loss
        decoded = grid_boxes(boxes.detach().to(torch.promote_types(pred.dtype, torch.float32)))
        resp, iou = responsible_predictors(decoded, targets)
    resp_f = resp.to(pred.dtype)
    coord = ((boxes[..., :4] - targets.box.to(pred.dtype).unsqueeze(3)) ** 2).sum(-1)
    conf = boxes[..., 4]
    conf_target = iou.to(pred.dtype) if rescore else torch.ones_like(conf)
    obj_cell = targets.obj.to(pred.dtype)
    return {
        "coord": lambda_coord * (resp_f * coord).sum() / n,
        "object": (resp_f * (conf - conf_target) ** 2).sum() / n,
        "no_object": lambda_noobj * ((1.0 - resp_f) * conf ** 2).sum() / n,
        "class": (obj_cell.unsqueeze(-1) * (probs - targets.cls.to(pred.dtype)) ** 2).sum() / n,
    }


def decode_grid(pred: Tensor, num_boxes: int, image_size: tuple[int, int] | tuple[Tensor, Tensor]
                ) -> tuple[Tensor, Tensor]:
    """Predictions ``[N, S, S, B * 5 + C]`` -> boxes ``[N, S S B, 4]`` (XYXY pixels of the ``(h, w)``
    network input; order: row, column, predictor) and class-specific confidences ``[N, S S B, C]``
    (``Pr(class | object) * confidence`` clamped to ``[0, 1]``)."""
    n, s_h, s_w = pred.shape[:3]
    b = int(num_boxes)
    boxes = pred[..., : 5 * b].reshape(n, s_h, s_w, b, 5)
    probs = pred[..., 5 * b:]
    h, w = image_size
    scale = torch.stack([torch.as_tensor(v, dtype=pred.dtype, device=pred.device) for v in (w, h, w, h)])
    xyxy = grid_boxes(boxes) * scale
    scores = (probs.unsqueeze(3) * boxes[..., 4:5]).clamp(0.0, 1.0)  # [N, S, S, B, C]
    return xyxy.reshape(n, -1, 4), scores.reshape(n, s_h * s_w * b, -1)
