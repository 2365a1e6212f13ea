"""Normalise, resize and pad a list of images into an :class:`ImageBatch` (and move targets along).

The resize rule is the one of Faster R-CNN / torchvision's ``GeneralizedRCNNTransform``: one scale
factor per image, ``s = min(min_size / short_side, max_size / long_side)``, bilinear interpolation
with ``recompute_scale_factor=True`` (the output size is ``floor(side * s)`` and the sampling grid is
recomputed from the integer sizes), so the resized image has exactly the size torchvision's has.
Images are normalised *before* resizing (as torchvision does; the order only changes rounding) and
zero-padded at the bottom/right up to a multiple of ``size_divisible`` (zero is the mean colour
after normalisation).

Frames: the batch frame is the resized image (``ImageBatch.image_sizes``); ``ImageBatch.scales``
holds ``(sy, sx) = resized / original``, computed from the integer sizes, which is how results are
mapped back to original pixels (:mod:`sceneparse.postprocess.detection`).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import DataError, Problem
from ..structures.batch import ImageBatch
from ..structures.segmaps import SemanticMap
from ..structures.target import Target
from .base import SizePolicy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocessor:
    """Images (``float32 CHW RGB in [0, 1]``) -> :class:`ImageBatch`.

    Args:
        min_size: target length of the short side; a tuple means multi-scale training (one size
            drawn per image with torch's RNG while ``training``); evaluation uses the last one.
        max_size: upper bound of the long side.
        mean, std: per-channel normalisation.
        size_divisible: the padded batch height and width are multiples of this (the coarsest
            feature stride, so every level has an integral size).
        fixed_size: resize every image to exactly ``(h, w)`` instead (SSD-style); ``None`` keeps
            the aspect ratio.
    """

    def __init__(self, min_size: int | Sequence[int] = 800, max_size: int = 1333,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 size_divisible: int = 32, fixed_size: tuple[int, int] | None = None):
        sizes = (min_size,) if isinstance(min_size, (int, float)) else tuple(min_size)
        if not sizes or any(int(s) <= 0 for s in sizes) or max_size <= 0:
            raise ValueError(f"min_size {min_size!r} and max_size {max_size!r} must be positive")
        self.min_sizes = tuple(int(s) for s in sizes)
        self.max_size = int(max_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be 3 values (std > 0), got {mean!r} / {std!r}")
        self.size_divisible = int(size_divisible)
        self.fixed_size = None if fixed_size is None else (int(fixed_size[0]), int(fixed_size[1]))
        self.training = False

    def train(self, mode: bool = True) -> "Preprocessor":
        self.training = mode
        return self

    def eval(self) -> "Preprocessor":
        return self.train(False)

    def policy(self) -> SizePolicy:
        """The resize rule as :class:`~sceneparse.models.base.SizePolicy` (for ``ModelInfo.size``)."""
        return SizePolicy(self.min_sizes, self.max_size, self.size_divisible, self.fixed_size, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"Preprocessor(min_size={self.min_sizes}, max_size={self.max_size}, mean={self.mean}, "
                f"std={self.std}, size_divisible={self.size_divisible}, fixed_size={self.fixed_size})")

    # ---- pieces ------------------------------------------------------------------------
    def _pick_min_size(self, min_size: int | None = None) -> int:
        if min_size is not None:
            return int(min_size)
        if self.training and len(self.min_sizes) > 1:
            i = int(torch.empty(1).uniform_(0.0, float(len(self.min_sizes))).item())
            return self.min_sizes[i]
        return self.min_sizes[-1]

    def resized_size(self, size: tuple[int, int], min_size: int | None = None) -> tuple[int, int]:
        """``(h, w)`` an image of ``size`` gets (same integer arithmetic as ``F.interpolate``)."""
        if self.fixed_size is not None:
            return self.fixed_size
        h, w = size
        s = min((min_size or self.min_sizes[-1]) / min(h, w), self.max_size / max(h, w))
        return int(math.floor(h * s)), int(math.floor(w * s))

    def _resize(self, image: torch.Tensor, min_size: int, max_size: int | None = None) -> torch.Tensor:
        h, w = image.shape[-2:]
        if self.fixed_size is not None:
            return F.interpolate(image[None], size=self.fixed_size, mode="bilinear", align_corners=False)[0]
        s = min(min_size / min(h, w), (max_size or self.max_size) / max(h, w))
        return F.interpolate(image[None], scale_factor=s, mode="bilinear", recompute_scale_factor=True,
                             align_corners=False)[0]

    def _check(self, i: int, image) -> None:
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise DataError(Problem(None, f"image {i}", "shape", "expected a CHW RGB tensor with 3 channels",
                                    shape))
        if not image.is_floating_point():
            raise DataError(Problem(None, f"image {i}", "dtype", "expected a float tensor in [0, 1]",
                                    str(image.dtype)))
        if min(image.shape[-2:]) < 1:
            raise DataError(Problem(None, f"image {i}", "shape", "image has an empty side", tuple(image.shape)))

    # ---- main entry --------------------------------------------------------------------
    def __call__(self, images: Sequence[torch.Tensor], targets: Sequence[Target] | None = None, *,
                 min_size: int | None = None, max_size: int | None = None
                 ) -> tuple[ImageBatch, list[Target] | None]:
        """Returns the batch and, if given, the targets moved into the batch (resized) frame.
        ``min_size`` / ``max_size`` override the resize rule for this call (inference ``imgsz``)."""
        if len(images) == 0:
            raise DataError("Preprocessor: empty list of images")
        if torch.jit.is_tracing():
            return self._traced(images, targets, min_size, max_size)
        if targets is not None and len(targets) != len(images):
            raise DataError(f"Preprocessor: {len(images)} images but {len(targets)} targets")
        dtype, device = images[0].dtype, images[0].device
        mean = torch.as_tensor(self.mean, dtype=dtype, device=device)[:, None, None]
        std = torch.as_tensor(self.std, dtype=dtype, device=device)[:, None, None]
        resized, originals = [], []
        for i, image in enumerate(images):
            self._check(i, image)
            originals.append((int(image.shape[-2]), int(image.shape[-1])))
            resized.append(self._resize((image - mean) / std, self._pick_min_size(min_size), max_size))
        sizes = [(int(r.shape[-2]), int(r.shape[-1])) for r in resized]
        d = float(self.size_divisible)
        ph = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        pw = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        tensor = resized[0].new_zeros((len(resized), 3, ph, pw))
        for i, r in enumerate(resized):
            tensor[i, :, : r.shape[-2], : r.shape[-1]].copy_(r)
        scales = [(s[0] / o[0], s[1] / o[1]) for s, o in zip(sizes, originals)]
        batch = ImageBatch(tensor, sizes, originals, scales)
        if targets is None:
            return batch, None
        return batch, [resize_target(t, o, s) for t, o, s in zip(targets, originals, sizes)]

    # ---- graph export (ONNX / TorchScript tracing) ------------------------------------------
    def _traced(self, images: Sequence[torch.Tensor], targets, min_size: int | None = None,
                max_size: int | None = None) -> tuple[ImageBatch, None]:
        """The eager rule as tensor arithmetic, so that a traced graph resizes and pads any input size.

        One image per graph (the sizes of several images would have to be traced separately). The
        sizes in the returned :class:`ImageBatch` are 0-dim ``int64`` tensors instead of ints, and the
        output size is ``floor(side * s)`` computed in float64, as ``F.interpolate`` does eagerly.
        """
        if len(images) != 1 or targets is not None:
            raise ValueError(f"a traced Preprocessor takes exactly one image and no targets, got {len(images)} "
                             f"image(s){' and targets' if targets is not None else ''}")
        image = images[0]
        h, w = image.shape[-2], image.shape[-1]  # 0-dim tensors while tracing
        x = self.normalize(image[None])
        if self.fixed_size is not None:
            nh = torch.full_like(h, self.fixed_size[0])
            nw = torch.full_like(w, self.fixed_size[1])
        else:
            hd, wd = h.to(torch.float64), w.to(torch.float64)
            s = torch.minimum((min_size or self.min_sizes[-1]) / torch.minimum(hd, wd),
                              (max_size or self.max_size) / torch.maximum(hd, wd))
            nh, nw = torch.floor(hd * s).to(torch.int64), torch.floor(wd * s).to(torch.int64)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        x = self.pad(x)
        scale = (nh.to(torch.float32) / h.to(torch.float32), nw.to(torch.float32) / w.to(torch.float32))
        return ImageBatch(x, [(nh, nw)], [(h, w)], [scale]), None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(images - mean) / std`` per channel for a ``[B, 3, H, W]`` tensor (traceable)."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device)[:, None, None]
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device)[:, None, None]
        return (images - mean) / std

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``[B, C, H, W]`` at the bottom/right to multiples of ``size_divisible`` (traceable:
        with traced sizes the padding amounts are computed in the graph)."""
        h, w = images.shape[-2], images.shape[-1]
        d = self.size_divisible
        return F.pad(images, (0, (d - w % d) % d, 0, (d - h % d) % d))


def _ratios(old: tuple[int, int], new: tuple[int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(new / old)`` per axis as float32 tensors (torchvision's ``resize_boxes`` arithmetic)."""
    rh = torch.tensor(new[0], dtype=torch.float32, device=device) / torch.tensor(old[0], dtype=torch.float32,
                                                                                   device=device)
    rw = torch.tensor(new[1], dtype=torch.float32, device=device) / torch.tensor(old[1], dtype=torch.float32,
                                                                                   device=device)
    return rh, rw


def _nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``[H, W]`` label or id map resampled like the masks (``interpolate(mode="nearest")``), in
    float64 so that every value (labels, ``ignore_index``, panoptic ids < 256^3) comes back exactly."""
    return F.interpolate(x[None, None].double(), size=size, mode="nearest")[0, 0].to(x.dtype)


def resize_target(target: Target, old_size: tuple[int, int], new_size: tuple[int, int]) -> Target:
    """Move a target from an image of ``old_size`` to one of ``new_size`` (both ``(h, w)``).

    Boxes and keypoint ``x, y`` scale per axis (visibility unchanged); masks, the semantic map and the
    panoptic id map are resampled with nearest-neighbour sampling at the same scale factor as the
    image (torchvision's rule for masks), so labels, ``ignore_index`` and segment ids are kept; the
    panoptic segments' ``area`` / ``bbox`` are recomputed for the new map. A semantic or panoptic
    map of another size than ``old_size`` (e.g. one already in the resized frame) is left as it is:
    the semantic loss accepts maps in either frame and checks the size.
    """
    inst = target.instances
    if tuple(inst.image_size) != tuple(old_size):
        raise DataError(Problem(target.file_name or None, f"image {target.image_id}", "image_size",
                                f"target is for an image of size {inst.image_size}, the image is {old_size}"))
    fields = {}
    dev = inst.boxes.device if inst.boxes is not None else None
    rh, rw = _ratios(old_size, new_size, dev)
    if inst.boxes is not None:
        fields["boxes"] = inst.boxes.to(torch.float32) * torch.stack([rw, rh, rw, rh])
    if inst.keypoints is not None:
        kp = inst.keypoints.clone()
        kp[..., 0] *= rw
        kp[..., 1] *= rh
        fields["keypoints"] = kp
    if inst.masks is not None:
        m = inst.masks
        if m.shape[0] == 0:
            fields["masks"] = m.new_zeros((0, *new_size), dtype=torch.bool)
        else:
            fields["masks"] = F.interpolate(m[:, None].float(), size=new_size, mode="nearest")[:, 0] > 0.5
    size, old = (int(new_size[0]), int(new_size[1])), (int(old_size[0]), int(old_size[1]))
    sem, pan = target.semantic, target.panoptic
    if sem is not None and tuple(sem.labels.shape) == old != size:
        sem = SemanticMap(_nearest(sem.labels, size), sem.ignore_index)
    if pan is not None and tuple(pan.ids.shape) == old != size:
        pan = pan.with_ids(_nearest(pan.ids, size))
    return replace(target, instances=replace(inst, image_size=tuple(new_size), **fields), semantic=sem, panoptic=pan)


def boxes_to_original(boxes: torch.Tensor, batch: ImageBatch, index: int = 0) -> torch.Tensor:
    """XYXY boxes ``[N, 4]`` in the resized frame of image ``index`` of ``batch`` -> its original
    pixels, clipped to the original image. Traceable for the one-image export graphs: while tracing,
    the scales and sizes are 0-dim tensors of the graph (so a dynamic-size export keeps them), in eager
    mode plain numbers."""
    sy, sx = batch.scales[index]
    oh, ow = batch.original_sizes[index]

    def vec(x: object, y: object) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return torch.stack([x, y, x, y]).to(boxes.dtype)
        return torch.tensor([x, y, x, y], dtype=boxes.dtype, device=boxes.device)

    return torch.minimum((boxes / vec(sx, sy)).clamp(min=0), vec(ow, oh))


__all__ = ["Preprocessor", "boxes_to_original", "resize_target", "IMAGENET_MEAN", "IMAGENET_STD"]
