"""Letterboxing as ultralytics' predictor does it, and the way back to original pixels.

ultralytics (``LetterBox`` + ``ops.scale_boxes``) resizes an 8-bit image with OpenCV's
``INTER_LINEAR`` by one ratio ``r = min(H / h, W / w)`` (the target ``imgsz`` square, or the
requested ``(H, W)``), to ``(round(h r), round(w r))``, and pads it with gray 114 around the centre
(``top = round(dh / 2 - 0.1)``, ``bottom = round(dh / 2 + 0.1)``, the same across). With ``auto``
(one image, or several of one shape, a PyTorch model: its predictor's rectangular inference) the
padding is only what rounds each side up to a multiple of the stride (``dh mod 32``). Pixels are
then divided by 255, no mean/std.

OpenCV's 8-bit bilinear resize is not float bilinear interpolation: it uses 11-bit fixed-point
weights (``round(2048 f)``) and, in its vectorised path, rounds the vertical pass as
``((b0 (S0 >> 4)) >> 16 + (b1 (S1 >> 4)) >> 16 + 2) >> 2`` on the horizontal sums ``S``; source
columns are clamped to the image (weight 0 past the edge) while source rows reuse the edge row with
its unclamped weights. :func:`resize_linear_u8` does exactly that with integer tensor ops (equal to
``cv2.resize`` bit for bit on the cases in ``tests/models/test_yolo.py``), so that results agree with
ultralytics' to float rounding, not to a gray level per pixel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...structures.batch import ImageBatch

#: the gray of ultralytics' padding
PAD_VALUE = 114


@dataclass
class LetterboxBatch(ImageBatch):
    """An :class:`ImageBatch` whose images sit in the middle of their padded canvas.

    ``pads``: per image ``(left, top)`` padding in pixels; ``canvases``: per image ``(H, W)`` of its own
    padded canvas (at the top left of ``tensor``, which is as large as the largest, the rest gray);
    ``image_sizes`` are the resized (unpadded) sizes and ``tensor`` is ``[B, 3, H, W]`` in ``[0, 1]``,
    padded with ``114 / 255``."""

    pads: list[tuple[int, int]] = field(default_factory=list)
    canvases: list[tuple[int, int]] = field(default_factory=list)

    def to(self, device) -> "LetterboxBatch":
        return LetterboxBatch(self.tensor.to(device), self.image_sizes, self.original_sizes, self.scales, self.pads,
                              self.canvases)


def _axis_weights(dst: int, src: int, clamp: bool, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and 11-bit weights of OpenCV's linear resize along one axis (``clamp``: columns)."""
    scale = src / dst
    f = ((torch.arange(dst, dtype=torch.float64, device=device) + 0.5) * scale - 0.5).float().double()
    s = torch.floor(f)
    f = f - s
    s = s.long()
    if clamp:  # OpenCV clamps the x coordinate and zeroes its fraction at both edges
        low, high = s < 0, s >= src - 1
        f = torch.where(low | high, torch.zeros_like(f), f)
        s = torch.where(low, torch.zeros_like(s), torch.where(high, torch.full_like(s, src - 1), s))
    w1 = torch.round(f * 2048).long()
    w0 = torch.round((1 - f) * 2048).long()
    return s.clamp(0, src - 1), (s + 1).clamp(0, src - 1), w0, w1


def resize_linear_u8(image: Tensor, size: tuple[int, int]) -> Tensor:
    """``cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)`` of an 8-bit image held as integers.

    ``image``: ``[C, H, W]`` integer levels 0..255 (any integer dtype); returns ``int64 [C, h, w]``."""
    c, sh, sw = image.shape
    h, w = size
    if (sh, sw) == (h, w):
        return image.long()
    im = image.long()
    x0, x1, a0, a1 = _axis_weights(w, sw, True, im.device)
    y0, y1, b0, b1 = _axis_weights(h, sh, False, im.device)
    rows = im[:, :, x0] * a0 + im[:, :, x1] * a1  # [C, H, w], weights sum to 2048
    r0, r1 = rows[:, y0], rows[:, y1]
    out = (((b0[:, None] * (r0 >> 4)) >> 16) + ((b1[:, None] * (r1 >> 4)) >> 16) + 2) >> 2
    return out.clamp_(0, 255)


@dataclass(frozen=True)
class LetterboxParams:
    """One image's letterbox: original ``(h, w)``, resized ``(h, w)``, padded canvas ``(H, W)``, pads
    ``(left, top)``."""

    original: tuple[int, int]
    resized: tuple[int, int]
    canvas: tuple[int, int]
    pad: tuple[int, int]


def letterbox_params(size: tuple[int, int], new_shape: tuple[int, int], *, auto: bool, stride: int = 32,
                     scaleup: bool = True) -> LetterboxParams:
    """ultralytics' ``LetterBox.get_params`` (centred)."""
    h, w = size
    r = min(new_shape[0] / h, new_shape[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    nw, nh = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = new_shape[1] - nw, new_shape[0] - nh
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return LetterboxParams((h, w), (nh, nw), (nh + top + bottom, nw + left + right), (left, top))


def letterbox_image(image: Tensor, p: LetterboxParams) -> Tensor:
    """``[3, h, w]`` in ``[0, 1]`` -> ``[3, H, W]`` in ``[0, 1]``: 8-bit levels (``round(255 x)``, what an
    image file holds), OpenCV's resize, gray 114 padding, ``/ 255``."""
    levels = torch.round(image.clamp(0, 1) * 255)
    resized = resize_linear_u8(levels, p.resized).to(image.dtype)
    out = torch.full((image.shape[0], *p.canvas), float(PAD_VALUE), dtype=image.dtype, device=image.device)
    left, top = p.pad
    out[:, top:top + p.resized[0], left:left + p.resized[1]] = resized
    return out / 255.0


def scale_boxes_back(boxes: Tensor, canvas: tuple[int, int], original: tuple[int, int]) -> Tensor:
    """ultralytics' ``ops.scale_boxes`` + ``clip_boxes``: boxes (XYXY) on the padded ``canvas`` -> the
    original image, gains and pads recomputed from the two shapes as it does, then clipped to
    ``[0, w] x [0, h]``."""
    gain = min(canvas[0] / original[0], canvas[1] / original[1])
    new_h, new_w = (max(round(v * gain), 1) for v in original)
    gy, gx = new_h / original[0], new_w / original[1]
    px, py = round((canvas[1] - new_w) / 2 - 0.1), round((canvas[0] - new_h) / 2 - 0.1)
    b = boxes.clone()
    b[:, 0::2] = ((b[:, 0::2] - px) / gx).clamp(0, original[1])
    b[:, 1::2] = ((b[:, 1::2] - py) / gy).clamp(0, original[0])
    return b


__all__ = ["LetterboxBatch", "LetterboxParams", "PAD_VALUE", "letterbox_image", "letterbox_params",
           "resize_linear_u8", "scale_boxes_back"]
