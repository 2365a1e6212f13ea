"""The one image reader: files (and in-memory images) -> ``float32 [3, H, W]`` RGB in ``[0, 1]``,
the model input convention. :class:`~sceneparse.data.datasets.SceneDataset` and the engine's
predictor both read images here.

Files: the size is checked first (missing, inaccessible, empty), then the header: an image declaring
more than :func:`max_image_pixels` pixels (default :data:`DEFAULT_MAX_IMAGE_PIXELS`, PIL's own
warning limit; ``SCENEPARSE_MAX_IMAGE_PIXELS`` or ``sceneparse --max-image-pixels`` change it) is
refused before anything is decoded -- a 17 KB PNG can declare 144 megapixels, gigabytes once
decoded -- and PIL's ``DecompressionBombWarning`` / ``Error`` come out as that same
:class:`DataError`. Then the file is fully decoded (PIL opens lazily; ``load`` surfaces truncated or
corrupt data), then the EXIF orientation is applied (``ImageOps.exif_transpose``) so that the
tensor shows the picture as viewers display it.
When the caller knows the size the annotations give the image (``expect``) and only the stored,
un-rotated pixels have it, the annotations were made on the stored pixels and the orientation is
ignored; a size matching neither is an error. Every problem is a :class:`DataError` naming the file
(and, with ``record``, the annotation record and its field).

Modes: grayscale (``L``, ``1``), palette (``P``), alpha (``LA``, ``RGBA``: alpha is dropped, not
composited), ``CMYK`` and ``YCbCr`` go through PIL's RGB conversion; 16-bit grayscale (``I;16*``,
``I``) is divided by 65535 and float (``F``) is taken as already in ``[0, 1]`` (both clipped), then
replicated to three channels. (Pillow reads 16-bit RGB PNGs at 8 bits.)

In memory (:func:`to_image_tensor`): ``float`` CHW tensors in ``[0, 1]`` (``uint8`` divided by 255;
1- or 4-channel tensors become RGB), PIL images (any mode above, EXIF orientation applied), numpy
arrays in channels-last RGB (``HxW``, ``HxWx1/3/4``; ``uint8`` / ``uint16`` / ``bool`` / float in
``[0, 1]``), and paths.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import ConfigError, DataError, Problem

#: Images declaring more pixels than this are refused before decoding: PIL's ``MAX_IMAGE_PIXELS``
#: (about 89.5 Mpx: 1024 * 1024 * 1024 // 4 // 3; PIL warns above it and refuses twice as many),
#: 1 GiB as a float32 RGB tensor. Change it with :func:`set_max_image_pixels`, the environment variable
#: :data:`MAX_PIXELS_ENV` (what DataLoader worker processes inherit) or ``sceneparse --max-image-pixels``.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
MAX_PIXELS_ENV = "SCENEPARSE_MAX_IMAGE_PIXELS"
_max_pixels: int | None = None  # set_max_image_pixels(); None: the environment variable, else the default


def set_max_image_pixels(limit: int | None) -> None:
    """Refuse images declaring more than ``limit`` pixels (``None``: back to the environment variable
    or the default). Also sets :data:`MAX_PIXELS_ENV`, so worker processes started later agree."""
    global _max_pixels
    if limit is not None:
        limit = _check_limit(limit, "max_image_pixels")
        os.environ[MAX_PIXELS_ENV] = str(limit)
    else:
        os.environ.pop(MAX_PIXELS_ENV, None)
    _max_pixels = limit


def _check_limit(value: Any, where: str) -> int:
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a whole number of pixels, got {value!r}") from None
    if limit < 1:
        raise ConfigError(f"{where} must be at least 1 pixel, got {value!r}")
    return limit


def max_image_pixels() -> int:
    """The largest number of pixels (``width * height``) an image file may declare."""
    if _max_pixels is not None:
        return _max_pixels
    env = os.environ.get(MAX_PIXELS_ENV)
    return _check_limit(env, MAX_PIXELS_ENV) if env else DEFAULT_MAX_IMAGE_PIXELS


def _too_large(path: Path, record: str | None, w: int, h: int, limit: int) -> DataError:
    return _problem(path, record, "file_name",
                    f"the image declares {w}x{h} (WxH) = {w * h / 1e6:.1f} megapixels, more than the limit of "
                    f"{limit / 1e6:.1f} megapixels (refused before decoding: a decompression bomb, or raise the "
                    f"limit with --max-image-pixels / {MAX_PIXELS_ENV})")

#: PIL modes holding 16-bit samples (``I`` is what older Pillow versions widen 16-bit PNGs to).
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

#: The words of a file's problems. With a ``record`` (a dataset's ``"image 3"``) a problem names the
#: record and the field (``file_name``, ``height/width``) and the expected size is the record's;
#: without one (a file given to the predictor) it names the file, the size coming from an annotation file.
_WORDS = {
    True: ("image file not found", "image file is {h}x{w} (HxW) but the record says {eh}x{ew}"),
    False: ("file not found", "the image is {h}x{w} (HxW) but the annotation file says {eh}x{ew}"),
}


def exception_reason(e: BaseException) -> str:
    """One line for an exception in a problem report: a :class:`DataError`'s first message, else
    ``"TypeName: first line"`` (at most 300 characters)."""
    if isinstance(e, DataError) and e.problems:
        return e.problems[0].message
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}"[:300]


def _problem(path: Path, record: str | None, field: str, message: str) -> DataError:
    return DataError(Problem(str(path), record, field if record else None, message))


def open_image(path: str | os.PathLike, expect: tuple[int, int] | None = None, *, exif: bool = True,
               record: str | None = None) -> Image.Image:
    """Open and fully decode an image file; the PIL image, oriented as the module notes say.

    ``expect``: the ``(height, width)`` the annotations give the image (``None`` or a non-positive
    value: unknown). ``exif=False`` keeps the stored orientation (label PNGs). ``record`` names the
    annotation record in problems (e.g. ``"image 3"``). Raises :class:`DataError` naming the file
    for missing, inaccessible, empty, unreadable, corrupt or truncated files and for a size that
    matches ``expect`` in neither orientation.
    """
    path = Path(path)
    missing, mismatch = _WORDS[record is not None]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _problem(path, record, "file_name", missing) from None
    except OSError as e:
        raise _problem(path, record, "file_name", f"cannot access the file: {exception_reason(e)}") from None
    if size == 0:
        raise _problem(path, record, "file_name", "empty file (0 bytes)")
    raw = img = None
    limit = max_image_pixels()
    try:
        if Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_IMAGE_PIXELS and limit > 2 * DEFAULT_MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = -(-limit // 2)  # our limit raised on purpose: PIL's default must follow
        with warnings.catch_warnings():
            # our limit decides (below); a PIL limit someone set lower than ours refuses too (no warning text)
            stricter = Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit
            warnings.simplefilter("error" if stricter else "ignore", Image.DecompressionBombWarning)
            raw = Image.open(path)  # reads the header only
        w, h = raw.size
        if w * h > limit:
            raw.close()
            raise _too_large(path, record, w, h, limit)
        raw.load()  # PIL decodes lazily; truncated or corrupt data surfaces here
        if not exif:
            return raw
        img = ImageOps.exif_transpose(raw)  # always a new image
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # PIL's limit, set lower than ours
        if raw is not None:
            raw.close()
        raise _problem(path, record, "file_name", f"the image declares more pixels than PIL allows, refused "
                       f"before decoding ({exception_reason(e)})") from None
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), ...
        if raw is not None:
            raw.close()
        raise _problem(path, record, "file_name", f"unreadable image ({exception_reason(e)})") from None
    if expect is not None and expect[0] > 0 and expect[1] > 0 and (img.height, img.width) != tuple(expect):
        if (raw.height, raw.width) == tuple(expect):
            img.close()
            return raw  # annotated on the stored pixels: ignore the EXIF rotation
        h, w = img.height, img.width
        img.close()
        raw.close()
        raise _problem(path, record, "height/width", mismatch.format(h=h, w=w, eh=expect[0], ew=expect[1]))
    raw.close()
    return img


def pil_to_pixels(img: Image.Image) -> np.ndarray | torch.Tensor:
    """A PIL image in its compact decoded form: 8-bit images as ``uint8 [H, W, 3]`` RGB (a quarter
    of the float tensor; what a dataset cache holds), 16-bit and float grayscale as the final
    ``float32 [3, H, W]`` tensor. :func:`pixels_to_tensor` finishes either."""
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "F":
        a = np.asarray(img).astype(np.float32)
        if img.mode != "F":
            a /= 65535.0
        gray = torch.from_numpy(np.clip(a, 0.0, 1.0))
        return gray.unsqueeze(0).expand(3, -1, -1).contiguous()
    return np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def rgb8_to_tensor(a: np.ndarray) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> ``float32 [3, H, W]`` in ``[0, 1]`` (a new tensor; ``a`` is not shared)."""
    return torch.from_numpy(a if a.flags.writeable else a.copy()).permute(2, 0, 1).float().div_(255.0)


def pixels_to_tensor(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """:func:`pil_to_pixels`' result -> ``float32 [3, H, W]`` in ``[0, 1]`` (a tensor is returned
    as it is: clone one that is kept elsewhere)."""
    return pixels if isinstance(pixels, torch.Tensor) else rgb8_to_tensor(pixels)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image of any common mode -> ``float32 [3, H, W]`` RGB in ``[0, 1]`` (see the module notes)."""
    return pixels_to_tensor(pil_to_pixels(img))


def read_pixels(path: str | os.PathLike, expect: tuple[int, int] | None = None, *, exif: bool = True,
                record: str | None = None) -> np.ndarray | torch.Tensor:
    """:func:`open_image` then :func:`pil_to_pixels` (the file is closed after); a mode that cannot
    be converted is an unreadable image too."""
    img = open_image(path, expect, exif=exif, record=record)
    try:
        return pil_to_pixels(img)
    except Exception as e:  # noqa: BLE001 -- e.g. a mode PIL cannot convert to RGB
        raise _problem(Path(path), record, "file_name", f"unreadable image ({exception_reason(e)})") from None
    finally:
        img.close()


def read_image(path: str | os.PathLike, expect: tuple[int, int] | None = None, *, exif: bool = True,
               record: str | None = None) -> torch.Tensor:
    """Read an image file as ``float32 [3, H, W]`` RGB in ``[0, 1]``: THE image reader.

    ``expect``: the ``(height, width)`` an annotation gives the image: when only the stored
    (un-rotated) pixels have that size, the EXIF orientation is ignored; a size matching neither
    raises. ``exif=False`` keeps the stored orientation. ``record`` names the annotation record in
    problems. Raises :class:`DataError` naming the file for missing, empty, unreadable, corrupt or
    truncated files.
    """
    return pixels_to_tensor(read_pixels(path, expect, exif=exif, record=record))


def to_image_tensor(image: Any, where: str = "image") -> torch.Tensor:
    """An in-memory image or a path -> ``float32 [3, H, W]`` RGB in ``[0, 1]`` (see the module notes).
    Raises :class:`DataError` naming ``where`` for shapes, dtypes and value ranges it cannot take."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise DataError(Problem(None, where, "shape", "a tensor image must be [3, H, W] (or [1|4, H, W], "
                                    "[H, W]); channels first", tuple(image.shape)))
        return _finish(t, where, "tensor")
    if isinstance(image, Image.Image):
        return pil_to_tensor(ImageOps.exif_transpose(image))
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise DataError(Problem(None, where, "shape", "an array image must be [H, W, 3] (or [H, W], "
                                    "[H, W, 1|4]); channels last, RGB", image.shape))
        if a.dtype == np.uint16:
            t = torch.from_numpy(a.astype(np.float32) / 65535.0).permute(2, 0, 1)
        elif a.dtype == np.bool_:
            t = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)
        else:
            t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
        return _finish(t, where, "array")
    raise DataError(Problem(None, where, None, "expected a tensor, a PIL image, a numpy array or a path",
                            type(image).__name__))


def _finish(t: torch.Tensor, where: str, kind: str) -> torch.Tensor:
    """A ``[1|3|4, H, W]`` uint8 or float tensor -> ``float32 [3, H, W]`` in ``[0, 1]``."""
    if t.dtype == torch.uint8:
        t = t.float().div_(255.0)
    elif t.is_floating_point():
        t = t.float()
        if t.numel():
            lo, hi = float(t.min()), float(t.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1.0 + 1e-3:
                raise DataError(Problem(None, where, "values", f"a float {kind} image must hold values in [0, 1] "
                                        "(divide uint8 data by 255)", (lo, hi)))
    else:
        raise DataError(Problem(None, where, "dtype", f"a {kind} image must be uint8 or float in [0, 1]",
                                str(t.dtype)))
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 4:
        t = t[:3]
    return t.contiguous()


__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "MAX_PIXELS_ENV", "SIXTEEN_BIT_MODES", "exception_reason", "max_image_pixels",
           "set_max_image_pixels", "open_image", "pil_to_pixels", "pil_to_tensor",
           "pixels_to_tensor", "read_image", "read_pixels", "rgb8_to_tensor", "to_image_tensor"]
