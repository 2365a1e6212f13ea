"""COCO polygons -> run-length encoding: the one implementation, with numpy and pycocotools only.

Every layer rasterises polygons here -- :mod:`.masks` (datasets, format codecs, the synthetic
writer) and :mod:`sceneparse.evaluation` (which must not import torch, so this module never does;
``sceneparse.structures`` itself loads its torch-based types lazily for the same reason).

The rule is pycocotools' ``COCO.annToRLE`` for an object given as polygons: all its rings go
through one ``frPyObjects(rings, height, width)`` call at the *image* size, and the ring RLEs are
merged (union) with ``merge``. Results are pycocotools' compressed form, ``{"size": [h, w],
"counts": bytes}``. Whatever pycocotools does with odd input is kept: a first ring of <= 4 numbers
makes ``frPyObjects`` read the rings as ``[x, y, w, h]`` boxes, exactly as ``annToRLE`` would.

:func:`rle_problems` checks RLEs *before* they reach pycocotools' C code, which trusts them: a
``counts`` string with a character outside its alphabet makes ``rleFrString`` read past the end of
the string (``double free or corruption`` / ``malloc(): invalid size`` aborts), and run lengths
that do not add up to ``height * width`` make ``rleDecode`` write past the mask. The check decodes
every string exactly as ``rleFrString`` does, vectorised over all strings at once (numpy).
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

Polygons = list[list[float]]
RLE = dict[str, Any]


def _merge(rles: list) -> RLE:
    # pycocotools' merge of a single RLE returns it unchanged (rleMerge copies it): skip the call
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles)


def polygons_to_rles(objects: Sequence[Sequence[Sequence[float]]], height: int, width: int) -> list[RLE]:
    """The polygons of ``N`` objects in one image size -> ``N`` merged RLEs (pycocotools' form).

    Each object is a non-empty list of flat ``[x0, y0, x1, y1, ...]`` rings in absolute pixels.
    ``objects[i]`` gives exactly ``merge(frPyObjects(objects[i], height, width))``; but the rings of
    all objects whose first ring is a polygon (> 4 numbers) go through *one* ``frPyObjects`` call
    (the per-call overhead, not the rasterisation, dominates many small objects), and the others
    through one call each, so that pycocotools reads them as it would on their own.
    """
    h, w = int(height), int(width)
    out: list[Any] = [None] * len(objects)
    batch = [i for i, o in enumerate(objects) if len(o[0]) > 4]
    if batch:
        rles = mask_utils.frPyObjects([ring for i in batch for ring in objects[i]], h, w)
        k = 0
        for i in batch:
            m = len(objects[i])
            out[i] = _merge(rles[k:k + m])
            k += m
    if len(batch) < len(objects):
        chosen = set(batch)
        for i, o in enumerate(objects):
            if i not in chosen:
                out[i] = mask_utils.merge(mask_utils.frPyObjects(list(o), h, w))
    return out


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """One object's COCO polygons -> one merged RLE in pycocotools' form (``counts`` as ``bytes``).

    Rings may be any sequences of numbers (tuples, numpy arrays); they are passed on as lists of
    floats, which pycocotools rasterises exactly as the numbers themselves.
    """
    return polygons_to_rles([[list(map(float, p)) for p in polygons]], height, width)[0]


# ----------------------------------------------------------------------------- RLE validation

#: characters of pycocotools' compressed RLE strings: ``chr(48 + v)`` for 6-bit groups ``v``
ALPHABET = ("0", "o")
#: a uint32 run length (or the difference of two, as rleToString writes) takes at most 7 characters
MAX_CHARS_PER_COUNT = 7
_U32 = 1 << 32
_ALPHABET_BYTES = bytes(range(48, 112))
_SIZE_OF, _COUNTS_OF = operator.itemgetter("size"), operator.itemgetter("counts")


def _is_whole(v) -> bool:
    return (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))) or (
        isinstance(v, (float, np.floating)) and float(v).is_integer())


#: bytes decoded per numpy pass (bounds the temporary arrays to a few tens of MB)
_CHUNK_BYTES = 1 << 17


def _string_problems(buf: np.ndarray, lengths: np.ndarray, pixels: np.ndarray) -> list[str | None]:
    """``rleFrString`` on every string, in chunks of about :data:`_CHUNK_BYTES` bytes. ``buf``: the
    strings' bytes, concatenated (``uint8``); ``lengths [N]``: bytes per string; ``pixels [N]``:
    ``height * width`` of each."""
    n = lengths.size
    ends = np.cumsum(lengths)
    if n == 0 or ends[-1] <= _CHUNK_BYTES:
        return _strings_chunk(buf, lengths, pixels)
    out: list[str | None] = []
    i = 0
    while i < n:
        start = int(ends[i - 1]) if i else 0
        j = max(i + 1, int(np.searchsorted(ends, start + _CHUNK_BYTES, side="right")))
        out.extend(_strings_chunk(buf[start:int(ends[j - 1])], lengths[i:j], pixels[i:j]))
        i = j
    return out


def _segments(padded: np.ndarray, start: np.ndarray, stop: np.ndarray, ufunc) -> np.ndarray:
    """``ufunc.reduce`` of ``padded[start[i]:stop[i]]`` for every ``i`` whose segment is not empty
    (others: 0). Segments are in increasing order and do not overlap; ``stop`` must be
    ``< len(padded)`` (reduceat wants every index in range: callers pad by one element)."""
    out = np.zeros(start.size, dtype=padded.dtype)
    ok = stop > start
    if ok.any():
        pairs = np.stack([start[ok], stop[ok]], axis=1).ravel()
        out[ok] = ufunc.reduceat(padded, pairs)[::2]
    return out


def _strings_chunk(buf: np.ndarray, lengths: np.ndarray, pixels: np.ndarray) -> list[str | None]:
    """``rleFrString`` on a few strings at once, in a dozen numpy passes: per byte only ``uint8`` /
    ``bool`` ones, and no per-string Python."""
    n = lengths.size
    out: list[str | None] = [None] * n
    total = int(lengths.sum())
    str_end = np.cumsum(lengths)
    str_start = str_end - lengths
    nonempty = lengths > 0
    bad_char = np.zeros(n, dtype=bool)
    if buf.tobytes().translate(None, _ALPHABET_BYTES):  # C speed: anything left is outside the alphabet
        bad_char[np.searchsorted(str_end, np.flatnonzero((buf < 48) | (buf > 111)), side="right")] = True
    # byte b (valid: 48..111) holds the 5 bits (b - 48) & 0x1F; b >= 80 is the continuation bit 0x20,
    # and the sign bit 0x10 of a run length's last byte makes it negative
    ends = buf < 80
    unterminated = np.zeros(n, dtype=bool)
    unterminated[nonempty] = ~ends[str_end[nonempty] - 1]
    firsts_mask = np.empty(total, dtype=bool)
    if total:
        firsts_mask[0] = True
        firsts_mask[1:] = ends[:-1]
        firsts_mask[str_start[nonempty]] = True  # a run length never starts in the previous string
    firsts = np.flatnonzero(firsts_mask)
    per_rle = np.searchsorted(firsts, str_end) - np.searchsorted(firsts, str_start)  # run lengths per string
    c = buf - np.uint8(48)  # garbage where bad_char: those strings are reported as such
    cf = c[firsts]
    x = (cf & np.uint8(0x1F)).astype(np.int64)
    x -= ((cf & np.uint8(0x30)) == 0x10) * np.int64(32)  # one-byte negative run lengths
    too_long = np.zeros(n, dtype=bool)
    multi = np.flatnonzero(cf >= 32)  # run lengths of several bytes (few: delta coding keeps them short)
    if multi.size:
        j, todo = 1, multi
        stop_of = np.zeros(firsts.size, dtype=np.int64)  # end of the string of each several-byte run length
        stop_of[multi] = str_end[np.searchsorted(str_end, firsts[multi], side="right")]
        while todo.size:
            pos = firsts[todo] + j
            inside = pos < stop_of[todo]  # an unterminated one stops at its string's end (reported as such)
            todo, pos = todo[inside], pos[inside]
            x[todo] |= (c[pos] & np.uint8(0x1F)).astype(np.int64) << (5 * min(j, MAX_CHARS_PER_COUNT - 1))
            if j >= MAX_CHARS_PER_COUNT - 1:
                too_long[np.searchsorted(str_end, pos[~ends[pos]], side="right")] = True
                break
            todo = todo[~ends[pos]]
            j += 1
        following = np.where(multi + 1 < firsts.size, firsts[np.minimum(multi + 1, firsts.size - 1)], total)
        nbytes = np.minimum(np.minimum(following, stop_of[multi]) - firsts[multi], MAX_CHARS_PER_COUNT)
        negative = (c[firsts[multi] + nbytes - 1] & np.uint8(0x10)) != 0
        x[multi] -= np.where(negative, np.left_shift(np.int64(1), 5 * nbytes), 0)
    # rleFrString's delta coding: counts[m] = x[m] for m <= 2, x[m] + counts[m - 2] after. Within a
    # string the odd positions and the even positions >= 2 are running sums; and within the whole
    # chunk, the positions of one absolute parity q are consecutive in x[q::2], so one cumsum per
    # parity serves every string: counts = G_q[i // 2] - G_q[just before the string's part]
    first = np.cumsum(per_rle) - per_rle  # absolute index of each string's counts[0]
    stop = first + per_rle
    has = per_rle > 0
    x0 = np.where(has, x[np.minimum(first, max(x.size - 1, 0))] if x.size else 0, 0)
    sums = x0.copy()
    bad_run = has & ((x0 < 0) | (x0 >= _U32))
    for q in (0, 1):
        xq = x[q::2]
        g = np.zeros(xq.size + 2, dtype=np.int64)  # g[i]: sum of the first i of x[q::2]; one pad at the end
        np.cumsum(xq, out=g[1:-1])
        a = np.where((first + 1) % 2 == q, first + 1, first + 2)  # first absolute index >= 1 of parity q
        lo, hi = np.minimum(a // 2, xq.size), np.maximum((stop - q + 1) // 2, 0)  # its part of x[q::2]
        k = np.maximum(hi - lo, 0)
        base = g[lo]
        sums += _segments(g, lo + 1, hi + 1, np.add) - k * base
        mn = _segments(g, lo + 1, hi + 1, np.minimum) - base
        mx = _segments(g, lo + 1, hi + 1, np.maximum) - base
        bad_run |= (k > 0) & ((mn < 0) | (mx >= _U32))
    many = per_rle > pixels + 1  # more runs than pixels + 1: pycocotools' merge would overrun its buffer
    for i in np.flatnonzero(bad_char | unterminated | too_long | bad_run | many | (sums != pixels)).tolist():
        if bad_char[i]:
            out[i] = "RLE counts string has characters outside pycocotools' alphabet ('0'..'o')"
        elif unterminated[i]:
            out[i] = "RLE counts string ends inside a run length"
        elif too_long[i]:
            out[i] = f"RLE counts string has a run length longer than {MAX_CHARS_PER_COUNT} characters"
        elif bad_run[i]:
            out[i] = "RLE counts decode to a negative (or > 32-bit) run length"
        elif many[i]:
            out[i] = f"RLE counts decode to {int(per_rle[i])} runs, more than height * width + 1"
        else:
            out[i] = f"RLE counts decode to {int(sums[i])} pixels, not height * width = {int(pixels[i])}"
    return out


def _list_problems(lists: Sequence[Sequence], pixels: np.ndarray) -> list[str | None]:
    """Uncompressed RLEs (``counts`` lists): whole numbers >= 0 that add up to ``height * width``."""
    n = len(lists)
    out: list[str | None] = [None] * n
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n)
    try:
        flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.float64, count=int(lengths.sum()))
        typed = all(_is_whole(v) for v in itertools.chain.from_iterable(lists))
    except (TypeError, ValueError):
        flat, typed = None, False
    if flat is None or not typed:  # some record holds a non-number: find it, check the others one by one
        for i, cl in enumerate(lists):
            if not all(_is_whole(v) for v in cl):
                out[i] = "uncompressed RLE counts must be whole numbers"
            else:
                out[i] = _list_problems([list(cl)], pixels[i:i + 1])[0]
        return out
    rle_of = np.repeat(np.arange(n), lengths)
    bad = np.bincount(rle_of[(flat < 0) | (flat >= _U32)], minlength=n) > 0
    sums = np.bincount(rle_of, weights=flat, minlength=n)  # exact: whole numbers < 2**53 in all
    many = lengths > pixels + 1
    for i in np.flatnonzero(bad | many | (sums != pixels)).tolist():
        out[i] = ("uncompressed RLE counts must be >= 0 (and < 2**32)" if bad[i] else
                  f"uncompressed RLE has {int(lengths[i])} runs, more than height * width + 1" if many[i] else
                  f"uncompressed RLE counts add up to {int(sums[i])} pixels, not height * width = {int(pixels[i])}")
    return out


def rle_problems(rles: Sequence[Any]) -> list[str | None]:
    """What is wrong with each RLE, ``None`` for a valid one, checked without pycocotools.

    An RLE is ``{"size": [height, width], "counts": str | bytes | list}``; valid means: ``size``
    two positive whole numbers; ``counts`` a compressed string of pycocotools' alphabet (``'0'``
    .. ``'o'``) whose run lengths (``rleFrString``'s decoding) are >= 0 and add up to ``height *
    width``, or a list of whole numbers >= 0 that do. Everything pycocotools would otherwise read
    out of bounds (and abort or corrupt memory on) is caught here. Vectorised: all strings are
    decoded together by numpy, so checking half a million RLEs costs about as much as reading them.
    """
    n = len(rles)
    out: list[str | None] = [None] * n
    pixels = np.zeros(n, dtype=np.int64)
    strings: list[int] = []
    lists: list[int] = []
    fast = False
    try:  # the common case: dicts with [h, w] int sizes and str counts (C-level passes, no per-record Python)
        counts = list(map(_COUNTS_OF, rles))
        sizes = np.asarray(list(map(_SIZE_OF, rles)))
        if n and set(map(type, counts)) == {str} and sizes.shape == (n, 2) and sizes.dtype.kind in "iu" \
                and (sizes > 0).all():
            text = "".join(counts)
            buf = text.encode("utf-8", "surrogatepass")
            if len(buf) == len(text):  # ASCII only: byte lengths are the string lengths
                pixels = sizes[:, 0].astype(np.int64) * sizes[:, 1].astype(np.int64)
                lengths = np.fromiter(map(len, counts), dtype=np.int64, count=n)
                return _string_problems(np.frombuffer(buf, dtype=np.uint8), lengths, pixels)
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    for i, r in enumerate(rles):
        if not isinstance(r, Mapping):
            out[i] = "an RLE is an object with 'size' and 'counts'"
            continue
        size, c = r.get("size"), r.get("counts")
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_whole(v) for v in size)):
            out[i] = "RLE size must be [height, width] (two whole numbers)"
            continue
        h, w = int(size[0]), int(size[1])
        if h <= 0 or w <= 0:
            out[i] = "RLE size must be positive"
            continue
        pixels[i] = h * w
        if isinstance(c, (str, bytes)):
            strings.append(i)
        elif isinstance(c, (list, tuple)):
            lists.append(i)
        else:
            out[i] = "RLE counts must be a string (compressed) or a list of run lengths"
    if strings:
        raw = [rles[i]["counts"] for i in strings]
        enc = [c if isinstance(c, bytes) else c.encode("utf-8", "surrogatepass") for c in raw]
        lengths = np.fromiter(map(len, enc), dtype=np.int64, count=len(enc))
        found = _string_problems(np.frombuffer(b"".join(enc), dtype=np.uint8), lengths, pixels[strings])
        for i, p in zip(strings, found):
            out[i] = p
    if lists:
        found = _list_problems([rles[i]["counts"] for i in lists], pixels[lists])
        for i, p in zip(lists, found):
            out[i] = p
    return out


_PLAIN_NUMBERS = {int, float}


def _is_coordinate(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def ring_problems(rings: Sequence[Any], heights, widths) -> list[str | None]:
    """What is wrong with each polygon ring for rasterising in an image of ``heights[i]`` x
    ``widths[i]`` (scalars broadcast), ``None`` for a good ring.

    Good: a flat list of >= 3 finite ``(x, y)`` points (an even count of >= 6 numbers) within the
    image grown by its own size on every side (``-width <= x <= 2 * width``, likewise ``y``).
    pycocotools rasterises at 5x and walks every edge pixel by pixel, so one coordinate of ``1e12``
    (or ``NaN``, which the C code turns into one) asks for gigabytes: such rings must never reach it.
    Vectorised over all the coordinates of all rings.
    """
    n = len(rings)
    out: list[str | None] = [None] * n
    if n == 0:
        return out
    ok = []
    for j, r in enumerate(rings):
        if not isinstance(r, (list, tuple, np.ndarray)):
            out[j] = "a polygon ring must be a list of numbers"
        else:
            ok.append(j)
    try:
        flat = np.fromiter(itertools.chain.from_iterable(rings[j] for j in ok), dtype=np.float64)
        # np.fromiter takes "1" and True too: the types, collected in C, say whether all are numbers
        types = set(map(type, itertools.chain.from_iterable(rings[j] for j in ok)))
        numeric = types <= _PLAIN_NUMBERS or all(
            issubclass(t, (int, float, np.integer, np.floating)) and not issubclass(t, (bool, np.bool_)) for t in types)
    except (TypeError, ValueError):
        numeric = False
    if not numeric:  # name the rings that hold something other than numbers, go on with the others
        good = []
        for j in ok:
            if all(map(_is_coordinate, rings[j])):
                good.append(j)
            else:
                out[j] = "polygon coordinates must be numbers"
        ok = good
        flat = np.fromiter(itertools.chain.from_iterable(rings[j] for j in ok), dtype=np.float64)
    if not ok:
        return out
    idx = np.asarray(ok, dtype=np.int64)
    lengths = np.fromiter((len(rings[j]) for j in ok), dtype=np.int64, count=len(ok))
    h = np.broadcast_to(np.asarray(heights, dtype=np.float64), (n,))[idx]
    w = np.broadcast_to(np.asarray(widths, dtype=np.float64), (n,))[idx]
    ring_of = np.repeat(np.arange(len(ok)), lengths)
    is_x = (np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)) % 2 == 0
    lim = np.where(is_x, w[ring_of], h[ring_of])
    finite = np.isfinite(flat)
    far = finite & ((flat < -lim) | (flat > 2 * lim))
    nonfinite = np.bincount(ring_of[~finite], minlength=len(ok)) > 0
    beyond = np.bincount(ring_of[far], minlength=len(ok)) > 0
    for t in np.flatnonzero((lengths % 2 == 1) | (lengths < 6) | nonfinite | beyond).tolist():
        m = int(lengths[t])
        out[ok[t]] = (f"polygon ring with odd number of coordinates ({m})" if m % 2 else
                      f"polygon ring with fewer than 3 points ({m // 2})" if m < 6 else
                      "polygon ring with non-finite coordinates (NaN or infinity)" if nonfinite[t] else
                      f"polygon ring reaching beyond the image grown by its own size "
                      f"({int(w[t])}x{int(h[t])} WxH image)")
    return out


def polygon_problems(objects: Sequence[Any], heights, widths) -> list[str | None]:
    """Per object (a list of rings, in an image of ``heights[i]`` x ``widths[i]``): the first
    problem of :func:`ring_problems` (prefixed with the ring's index), or that it is not a non-empty
    list of rings; ``None`` for an object that pycocotools can rasterise safely."""
    n = len(objects)
    out: list[str | None] = [None] * n
    rings, owner, index = [], [], []
    for i, o in enumerate(objects):
        if not isinstance(o, (list, tuple)) or not o:
            out[i] = "polygons must be a non-empty list of rings"
            continue
        rings.extend(o)
        owner.extend([i] * len(o))
        index.extend(range(len(o)))
    if rings:
        own = np.asarray(owner, dtype=np.int64)
        h = np.broadcast_to(np.asarray(heights, dtype=np.float64), (n,))[own]
        w = np.broadcast_to(np.asarray(widths, dtype=np.float64), (n,))[own]
        for i, r, p in zip(owner, index, ring_problems(rings, h, w)):
            if p is not None and out[i] is None:
                out[i] = f"ring {r}: {p}"
    return out


__all__ = ["ALPHABET", "MAX_CHARS_PER_COUNT", "Polygons", "RLE", "polygon_problems", "polygons_to_rle",
           "polygons_to_rles", "ring_problems", "rle_problems"]
