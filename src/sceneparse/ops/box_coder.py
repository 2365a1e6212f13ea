"""The R-CNN box parametrisation (Girshick et al., R-CNN appendix C; Faster R-CNN eq. 2).

A ground-truth box ``g`` is regressed *relative to* a reference box ``a`` (an anchor or a proposal),
which makes the targets translation- and scale-invariant::

    tx = wx * (gx - ax) / aw      ty = wy * (gy - ay) / ah
    tw = ww * log(gw / aw)        th = wh * log(gh / ah)

with widths ``w = x2 - x1`` and centres ``x1 + 0.5 * w`` (no ``+1``). The weights ``(wx, wy, ww, wh)``
rescale the targets to roughly unit variance (Fast R-CNN uses ``(10, 10, 5, 5)`` for the box head,
the RPN ``(1, 1, 1, 1)``). Decoding clamps ``tw, th`` at ``bbox_xform_clip = log(1000 / 16)`` so that a
wild prediction cannot overflow ``exp``. Numerically identical to
``torchvision.models.detection._utils.BoxCoder``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BoxCoder"]


class BoxCoder:
    """Encode boxes as deltas relative to reference boxes, and decode them back (XYXY)."""

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 bbox_xform_clip: float = math.log(1000.0 / 16)) -> None:
        if len(weights) != 4 or any(float(w) <= 0 for w in weights):
            raise ValueError(f"weights must be 4 positive numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f})"

    def encode(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas ``[N, 4]`` (tx, ty, tw, th) that move ``anchors [N, 4]`` onto ``gt_boxes [N, 4]``.

        Both XYXY, row ``i`` of one paired with row ``i`` of the other; computed in the wider of their
        dtypes and at least float32 (pixel coordinates need float32's mantissa: in bfloat16 a 320 px
        coordinate is only known to 2 px). Anchors must have positive width and height.
        """
        if gt_boxes.ndim != 2 or gt_boxes.shape[-1] != 4 or anchors.shape != gt_boxes.shape:
            raise ValueError(f"encode needs gt_boxes and anchors of the same shape [N, 4], got "
                             f"{tuple(gt_boxes.shape)} and {tuple(anchors.shape)}")
        dtype = _coordinate_dtype(gt_boxes, anchors)
        gt_boxes, anchors = gt_boxes.to(dtype), anchors.to(dtype)
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=dtype, device=gt_boxes.device)
        aw = anchors[:, 2] - anchors[:, 0]
        ah = anchors[:, 3] - anchors[:, 1]
        ax = anchors[:, 0] + 0.5 * aw
        ay = anchors[:, 1] + 0.5 * ah
        gw = gt_boxes[:, 2] - gt_boxes[:, 0]
        gh = gt_boxes[:, 3] - gt_boxes[:, 1]
        gx = gt_boxes[:, 0] + 0.5 * gw
        gy = gt_boxes[:, 1] + 0.5 * gh
        tx = wx * (gx - ax) / aw
        ty = wy * (gy - ay) / ah
        tw = ww * torch.log(gw / aw)
        th = wh * torch.log(gh / ah)
        return torch.stack((tx, ty, tw, th), dim=1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes ``[N, k, 4]`` (XYXY) from ``deltas [N, 4*k]`` relative to ``anchors [N, 4]``.

        ``k`` is the number of box predictions per reference box (1 for the RPN, the number of
        classes for a class-specific box head): columns ``4j..4j+3`` of ``deltas`` give box ``j``.
        Computed in (and returned as) the wider of the two dtypes and at least float32, so
        bfloat16 / float16 deltas under mixed precision still give float32 boxes.
        """
        if deltas.ndim != 2 or deltas.shape[1] % 4 != 0:
            raise ValueError(f"deltas must have shape [N, 4*k], got {tuple(deltas.shape)}")
        if anchors.ndim != 2 or anchors.shape[1] != 4 or anchors.shape[0] != deltas.shape[0]:
            raise ValueError(f"anchors must have shape [N, 4] with N = {deltas.shape[0]} (rows of deltas), "
                             f"got {tuple(anchors.shape)}")
        dtype = _coordinate_dtype(deltas, anchors)
        deltas, anchors = deltas.to(dtype), anchors.to(dtype)
        aw = anchors[:, 2] - anchors[:, 0]
        ah = anchors[:, 3] - anchors[:, 1]
        ax = anchors[:, 0] + 0.5 * aw
        ay = anchors[:, 1] + 0.5 * ah
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        cx = dx * aw[:, None] + ax[:, None]
        cy = dy * ah[:, None] + ay[:, None]
        half_w = 0.5 * (torch.exp(dw) * aw[:, None])
        half_h = 0.5 * (torch.exp(dh) * ah[:, None])
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=2)


def _coordinate_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    return torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
