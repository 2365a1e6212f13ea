"""The affine crop of top-down pose estimation: person box -> fixed-size network input and back.

SimpleBaseline (Xiao et al., ECCV 2018) and HRNet crop each person with a similarity transform:
the box is centred, its shorter side padded so that it has the network's aspect ratio ``W_in / H_in``,
the result enlarged by ``1.25`` (context around the person), optionally rotated / scaled / mirrored
(training augmentation), and warped to ``H_in x W_in``. Keypoints found in the crop go back to the
image through the inverse transform.

Frames: continuous pixel coordinates (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``) in both the
image and the crop; the matrices ``A [M, 2, 3]`` map image points to crop points, ``q = A[:, :2] p +
A[:, 2]``. Sampling uses ``grid_sample(align_corners=False)``, whose normalised ``-1 / +1`` are the
image's outer pixel edges, i.e. exactly this frame.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["box_to_center_size", "crop_affines", "invert_affines", "apply_affines", "warp_crops"]


def box_to_center_size(boxes: Tensor, aspect: float, padding: float = 1.25) -> tuple[Tensor, Tensor]:
    """Centres ``[M, 2]`` and sizes ``[M, 2]`` (w, h) of the crop regions of ``boxes [M, 4]`` (XYXY):
    the shorter side grown to the aspect ratio ``aspect = W_in / H_in``, then both times ``padding``."""
    c = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    w2 = torch.maximum(w, h * aspect)
    h2 = torch.maximum(h, w / aspect)
    return c, torch.stack([w2, h2], dim=1) * padding


def crop_affines(centers: Tensor, sizes: Tensor, out_size: tuple[int, int], rotation: Tensor | None = None,
                 flip: Tensor | None = None) -> Tensor:
    """Image -> crop matrices ``[M, 2, 3]``: the region of ``sizes [M, 2]`` (w, h; same aspect as
    ``out_size = (H_in, W_in)``) centred at ``centers [M, 2]`` maps onto the ``H_in x W_in`` crop,
    rotated by ``rotation [M]`` degrees (counter-clockwise in the image, as SimpleBaseline's ``rot``)
    and mirrored left-right where ``flip [M]`` (bool) is set: ``q = T(c_out) F R S T(-c) p``."""
    H, W = (float(v) for v in out_size)
    M = centers.shape[0]
    dtype, device = centers.dtype, centers.device
    s = W / sizes[:, 0]  # crop px per image px (the same along y: equal aspect ratios)
    theta = torch.zeros(M, dtype=dtype, device=device) if rotation is None else rotation.to(dtype) * (math.pi / 180)
    cos, sin = torch.cos(theta) * s, torch.sin(theta) * s
    sign = torch.ones(M, dtype=dtype, device=device) if flip is None else 1.0 - 2.0 * flip.to(dtype)
    # a counter-clockwise rotation on screen (y down) is [[cos, sin], [-sin, cos]] in these coordinates
    a = torch.stack([torch.stack([cos * sign, sin * sign], 1), torch.stack([-sin, cos], 1)], 1)  # [M, 2, 2]
    t = torch.tensor([W / 2, H / 2], dtype=dtype, device=device) - (a @ centers[:, :, None])[..., 0]
    return torch.cat([a, t[..., None]], dim=2)


def invert_affines(affines: Tensor) -> Tensor:
    """Inverses ``[M, 2, 3]`` of the affine maps ``affines [M, 2, 3]`` (crop -> image for a crop's matrix):
    the closed-form 2 x 2 inverse ``[[d, -b], [-c, a]] / (ad - bc)`` in float64 (no ``linalg`` call, so
    it also exports to ONNX), and ``t' = -A^-1 t``."""
    m = affines.double()
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    a_inv = torch.stack([torch.stack([d, -b], 1), torch.stack([-c, a], 1)], 1) / det[:, None, None]
    t = -(a_inv @ m[:, :, 2:])
    return torch.cat([a_inv, t], dim=2).to(affines.dtype)


def apply_affines(affines: Tensor, points: Tensor) -> Tensor:
    """``points [M, K, 2]`` (x, y) mapped by ``affines [M, 2, 3]``."""
    return points @ affines[:, :, :2].transpose(1, 2) + affines[:, None, :, 2]


def warp_crops(image: Tensor, affines: Tensor, out_size: tuple[int, int]) -> Tensor:
    """The crops ``[M, C, H_in, W_in]`` of one ``image [C, H, W]`` under ``affines [M, 2, 3]`` (image ->
    crop), bilinear; points outside the image read 0 (the mean colour of a normalised image).

    The crop's pixel centre ``q`` reads the image at ``p = A^-1 q``, given to ``grid_sample`` in its
    normalised coordinates ``u = 2 p_x / W - 1`` (``affine_grid`` would do the same, but exports to ONNX
    only from opset 20)."""
    H_in, W_in = (int(v) for v in out_size)
    C = int(image.shape[0])
    M = affines.shape[0]
    if M == 0:
        return image.new_zeros((0, C, H_in, W_in))
    hw = torch._shape_as_tensor(image)[1:].to(torch.float32)  # a tensor: stays dynamic in an exported graph
    H, W = hw[0], hw[1]
    inv = invert_affines(affines.float())  # crop px -> image px
    ys = torch.arange(H_in, dtype=inv.dtype, device=inv.device) + 0.5
    xs = torch.arange(W_in, dtype=inv.dtype, device=inv.device) + 0.5
    q = torch.stack([xs[None, :].expand(H_in, W_in), ys[:, None].expand(H_in, W_in)], dim=2).reshape(1, -1, 2)
    p = apply_affines(inv, q.expand(M, -1, -1))  # [M, H_in W_in, 2] image px of every crop pixel centre
    grid = (2 * p / torch.stack([W, H]).to(inv.dtype) - 1).reshape(M, H_in, W_in, 2)  # grid_sample's frame
    return F.grid_sample(image[None].expand(M, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)
