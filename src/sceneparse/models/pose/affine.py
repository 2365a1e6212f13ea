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
    """Inverses ``[M, 2, 3]`` of the affine maps ``affines [M, 2, 3]`` (crop -> image for a crop's matrix)."""
    a_inv = torch.linalg.inv(affines[:, :, :2].double())
    t = -(a_inv @ affines[:, :, 2:].double())
    return torch.cat([a_inv, t], dim=2).to(affines.dtype)


def apply_affines(affines: Tensor, points: Tensor) -> Tensor:
    """``points [M, K, 2]`` (x, y) mapped by ``affines [M, 2, 3]``."""
    return points @ affines[:, :, :2].transpose(1, 2) + affines[:, None, :, 2]


def warp_crops(image: Tensor, affines: Tensor, out_size: tuple[int, int]) -> Tensor:
    """The crops ``[M, C, H_in, W_in]`` of one ``image [C, H, W]`` under ``affines [M, 2, 3]`` (image ->
    crop), bilinear; points outside the image read 0 (the mean colour of a normalised image).

    The crop's pixel centre ``q`` reads the image at ``A^-1 q``; both sides are expressed in
    ``grid_sample``'s normalised coordinates (``u = 2 x / W - 1``) so one ``affine_grid`` call builds
    every sampling grid."""
    H_in, W_in = (int(v) for v in out_size)
    C, H, W = image.shape
    M = affines.shape[0]
    if M == 0:
        return image.new_zeros((0, C, H_in, W_in))
    inv = invert_affines(affines.float())  # crop px -> image px
    # normalised crop -> crop px:  x = (u + 1) W_in / 2 ; image px -> normalised image: u = 2 x / W - 1
    den = torch.tensor([[W_in / 2, 0, W_in / 2], [0, H_in / 2, H_in / 2], [0, 0, 1]], dtype=inv.dtype,
                       device=inv.device)
    nrm = torch.tensor([[2 / W, 0, -1], [0, 2 / H, -1]], dtype=inv.dtype, device=inv.device)
    full = torch.cat([inv, inv.new_tensor([0, 0, 1]).expand(M, 1, 3)], dim=1)  # [M, 3, 3]
    theta = nrm @ full @ den  # [M, 2, 3]
    grid = F.affine_grid(theta, [M, C, H_in, W_in], align_corners=False)
    return F.grid_sample(image[None].expand(M, C, H, W), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)
