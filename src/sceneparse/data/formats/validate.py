"""Validation of an :class:`~sceneparse.data.records.AnnotationSet`, shared by every reader.

Every problem is reported as a :class:`~sceneparse.errors.Problem` naming the file, the record
(``"annotation 17"``, ``"image 3"``, ``"line 4"``, ``"object 2"``) and the field, in the words of the
format it came from. ``strict=True`` raises :class:`~sceneparse.errors.DataError` at the first
problem. Lenient mode repairs what can be repaired and records each change (``Problem.repaired``):

=============================================  ===============================================
problem                                        lenient repair
=============================================  ===============================================
duplicate image id                             later image record dropped
image with non-positive height / width         image and its objects dropped
image missing on disk / unreadable / wrong     image and its objects dropped
size (decoding only with ``check_images``)
object on an unknown image id                  object dropped
duplicate annotation id                        object renumbered (max id + 1, ...)
label outside ``0..C-1`` (unknown category)    object dropped
non-finite box, non-positive box size          object dropped
box outside the image (by > 1e-3 px)           clipped to the image; dropped if nothing is left
polygon ring with < 3 points / odd length /    ring dropped; object dropped if no ring is left
non-finite coordinates / reaching beyond the
image grown by its own size
RLE whose size is not the image's, or that     object dropped
pycocotools must not read (counts outside its
alphabet, run lengths not adding up to h * w)
keypoints of the wrong length                  replaced by K unlabeled keypoints (v = 0)
keypoints with non-finite values               those keypoints made unlabeled (0, 0, v = 0)
keypoints but the set has no keypoint layout   keypoints removed
area that is not a finite number >= 0          area removed (writers compute it again)
=============================================  ===============================================

Polygons and RLEs are checked before anything hands them to pycocotools' C code, which trusts them
(:func:`sceneparse.structures.rle.ring_problems` / :func:`~sceneparse.structures.rle.rle_problems`):
a ``NaN`` polygon made it allocate gigabytes, a ``"!!"`` RLE corrupted the heap.

Nothing is dropped silently: each dropped record has its own problem. Box coordinates beyond the
image border by at most :data:`BOX_TOLERANCE` (float rounding, e.g. ``cx - w / 2`` of normalised YOLO
values) are snapped onto the border without a problem.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...errors import DataError, Problem, Report
from ...structures.rle import ring_problems, rle_problems
from ..records import AnnotationSet, ImageRecord, ObjectRecord
from ._io import decode_check


#: px; box coordinates this far beyond the image border count as on it (rounding noise, not a problem)
BOX_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Origin:
    """Where a record was read from: ``file`` and a record name such as ``"annotation 17"``."""

    file: str | None
    record: str


class Checker:
    """Routes problems. Strict: raise :class:`DataError` at the first one. Lenient: keep it, with the
    ``repaired`` text saying what was done (``None`` when nothing could be done)."""

    def __init__(self, strict: bool = False):
        self.strict = bool(strict)
        self.report = Report(strict=self.strict)

    @property
    def problems(self) -> list[Problem]:
        return self.report.problems

    def flag(self, file: str | None, record: str | None, field: str | None, message: str,
             value=None, repaired: str | None = None) -> None:
        self.report.add(Problem(file, record, field, message, value, None if self.strict else repaired))


def _default_image_origin(aset: AnnotationSet, im: ImageRecord) -> Origin:
    return Origin(aset.source or None, f"image {im.id}")


def _default_object_origin(aset: AnnotationSet, a: ObjectRecord) -> Origin:
    return Origin(aset.source or None, f"annotation {a.id}")


def _short(v):
    """A value for a message: long strings and lists cut (Problem cuts the text, not the object)."""
    if isinstance(v, (str, bytes)) and len(v) > 40:
        return v[:40] + ("..." if isinstance(v, str) else b"...")
    if isinstance(v, (list, tuple)) and len(v) > 12:
        return list(v[:12]) + ["..."]
    return v


def _round_list(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in np.asarray(v, dtype=np.float64).ravel()]


def validate_annotation_set(
    aset: AnnotationSet,
    *,
    strict: bool = False,
    check_images: bool = False,
    checker: Checker | None = None,
    image_origins: Sequence[Origin] | None = None,
    object_origins: Sequence[Origin] | None = None,
    field_names: Mapping[str, str] | None = None,
    num_workers: int = 4,
    as_is: bool = False,
    num_keypoints: int | None = None,
) -> list[Problem]:
    """Check ``aset`` in place; in lenient mode repair it (see the module table) and append every
    problem to ``aset.problems``. Returns the problems found by this call.

    Args:
        strict: raise :class:`DataError` at the first problem instead of repairing.
        check_images: decode every image (slow) to catch unreadable files and header sizes that
            differ from the record. Without it only existence is checked, and only when the set
            has an ``image_root`` (or absolute file names).
        checker: a reader's :class:`Checker`, so parse-time and set-level problems share one report.
        image_origins / object_origins: per-record :class:`Origin`, parallel to ``aset.images`` /
            ``aset.annotations``; default ``(aset.source, "image <id>" / "annotation <id>")``.
        field_names: generic field name -> the format's own word (``{"bbox": "bndbox"}``). Generic
            names: ``id image_id category bbox segmentation keypoints file_name size``.
        num_workers: threads for ``check_images`` decoding (PIL releases the GIL while decoding).
        as_is: the set is ground truth scored as it is (:func:`~.coco.check_coco`): a box reaching
            outside the image and keypoints without a layout are not problems (pycocotools scores
            them as given); everything else is.
        num_keypoints: ``K`` when the set has no ``keypoint_set`` (with ``as_is``).
    """
    ck = checker or Checker(strict)
    start = len(ck.problems)
    fname = dict(field_names or {})

    def fld(name: str) -> str:
        return fname.get(name, name)

    images = list(aset.images)
    anns = list(aset.annotations)
    im_org = list(image_origins) if image_origins is not None else [_default_image_origin(aset, im) for im in images]
    ob_org = list(object_origins) if object_origins is not None else [_default_object_origin(aset, a) for a in anns]
    if len(im_org) != len(images) or len(ob_org) != len(anns):
        raise ValueError("image_origins / object_origins must be parallel to aset.images / aset.annotations")

    # ---- images: ids, sizes, files ---------------------------------------------------------------
    keep_im = np.ones(len(images), dtype=bool)
    seen: dict[int, int] = {}
    for i, im in enumerate(images):
        o = im_org[i]
        if im.id in seen:
            first = im_org[seen[im.id]]
            ck.flag(o.file, o.record, fld("id"), f"duplicate image id (first used by {first.record})",
                    im.id, repaired="dropped this image record")
            keep_im[i] = False
            continue
        seen[im.id] = i
        if as_is and (im.height is None or im.width is None):
            continue  # size not given (in-memory ground truth of a box / keypoint evaluation): not known
        if not (im.height is not None and im.width is not None and im.height > 0 and im.width > 0):
            ck.flag(o.file, o.record, fld("size"), "image height and width must be positive",
                    (im.height, im.width), repaired="dropped the image and its objects")
            keep_im[i] = False

    def image_file(im: ImageRecord) -> Path | None:
        p = Path(im.file_name)
        if p.is_absolute():
            return p
        return None if aset.image_root is None else Path(aset.image_root) / p

    # existence (cheap) for every image; decoding only when asked
    paths = [image_file(im) if keep_im[i] else None for i, im in enumerate(images)]
    for i, p in enumerate(paths):
        if p is not None and not os.path.isfile(p):
            o = im_org[i]
            ck.flag(o.file, o.record, fld("file_name"), f"image file not found: {p}", images[i].file_name,
                    repaired="dropped the image and its objects")
            keep_im[i] = False
            paths[i] = None
    if check_images:
        todo = [i for i, p in enumerate(paths) if p is not None]

        def probe(i: int):
            try:
                return decode_check(paths[i]), None
            except Exception as e:  # PIL raises several types for corrupt files
                return None, f"{type(e).__name__}: {e}"

        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            results = list(pool.map(probe, todo))
        for i, (size, err) in zip(todo, results):
            o, im = im_org[i], images[i]
            if err is not None:
                ck.flag(o.file, o.record, fld("file_name"), f"unreadable image {paths[i]}: {err}", im.file_name,
                        repaired="dropped the image and its objects")
                keep_im[i] = False
            elif size != (im.height, im.width):
                ck.flag(o.file, o.record, fld("size"), f"image file {paths[i]} is {size[0]}x{size[1]} (HxW) but the "
                        f"record says {im.height}x{im.width}", (im.height, im.width),
                        repaired="dropped the image and its objects")
                keep_im[i] = False

    dropped_image_ids = {images[i].id for i in np.flatnonzero(~keep_im)} - {images[i].id for i in np.flatnonzero(keep_im)}
    kept_images = [im for im, k in zip(images, keep_im) if k]

    # ---- objects ---------------------------------------------------------------------------------
    n = len(anns)
    keep = np.ones(n, dtype=bool)
    size_of = {im.id: (im.height or 0, im.width or 0) for im in kept_images}  # (0, 0): size not known (as_is)
    # image of each object, by binary search over the kept image ids (vectorised)
    kept_ids = np.asarray([im.id for im in kept_images], dtype=np.int64)
    order = np.argsort(kept_ids)
    sorted_ids = kept_ids[order]
    sizes = np.asarray([size_of[im.id] for im in kept_images], dtype=np.float64).reshape(-1, 2)[order]
    ann_img = np.fromiter((a.image_id for a in anns), dtype=np.int64, count=n)
    pos = np.searchsorted(sorted_ids, ann_img).clip(max=max(len(sorted_ids) - 1, 0))
    has_image = (sorted_ids[pos] == ann_img) if len(sorted_ids) else np.zeros(n, dtype=bool)
    for j in np.flatnonzero(~has_image):
        o, a = ob_org[j], anns[j]
        if a.image_id in dropped_image_ids:
            ck.flag(o.file, o.record, fld("image_id"), "object of a dropped image", a.image_id,
                    repaired="dropped the object")
        else:
            ck.flag(o.file, o.record, fld("image_id"), "unknown image id", a.image_id, repaired="dropped the object")
        keep[j] = False

    # duplicate annotation ids -> renumber the later ones
    ids = np.fromiter((a.id for a in anns), dtype=np.int64, count=n)
    if n:
        uniq, first = np.unique(ids, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        next_id = int(ids.max()) + 1
        for j in np.flatnonzero(dup & keep):
            o = ob_org[j]
            f = int(first[np.searchsorted(uniq, ids[j])])
            ck.flag(o.file, o.record, fld("id"), f"duplicate annotation id (first used by {ob_org[f].record})",
                    int(ids[j]), repaired=f"renumbered to {next_id}")
            anns[j].id = next_id
            next_id += 1

    # labels
    num_classes = len(aset.categories)
    labels = np.fromiter((a.label for a in anns), dtype=np.int64, count=n)
    bad_label = keep & ((labels < 0) | (labels >= num_classes))
    for j in np.flatnonzero(bad_label):
        o = ob_org[j]
        ck.flag(o.file, o.record, fld("category"), f"unknown category (label {labels[j]} outside 0..{num_classes - 1})",
                int(labels[j]), repaired="dropped the object")
        keep[j] = False

    # boxes, vectorised over all objects
    if n:
        try:
            boxes = np.array([a.bbox for a in anns], dtype=np.float64)
        except (ValueError, TypeError):
            boxes = None
        if boxes is None or boxes.shape != (n, 4):
            for j, a in enumerate(anns):
                if np.asarray(a.bbox).shape != (4,):
                    o = ob_org[j]
                    raise DataError([Problem(o.file, o.record, fld("bbox"), "box must be 4 numbers", a.bbox)])
        hw = np.zeros((n, 2), dtype=np.float64)  # (0, 0) for objects without a (kept) image
        if len(sizes):
            hw[has_image] = sizes[pos[has_image]]
        h, w = hw[:, 0], hw[:, 1]
        finite = np.isfinite(boxes).all(axis=1)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        nonpos = finite & ((bw <= 0) | (bh <= 0))
        t = BOX_TOLERANCE
        outside = finite & ~nonpos & ((boxes[:, 0] < -t) | (boxes[:, 1] < -t) | (boxes[:, 2] > w + t) | (boxes[:, 3] > h + t))
        if as_is:
            outside[:] = False
        clipped = boxes.copy()
        clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, w[:, None])
        clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, h[:, None])
        # rounding noise (e.g. cx - w/2 of normalised YOLO values giving -1e-15) is snapped to the border
        noise = finite & ~nonpos & ~outside & (clipped != boxes).any(axis=1)
        for j in np.flatnonzero(keep & noise & (not as_is)):
            anns[j].bbox = clipped[j].astype(np.float32)
        empty_after = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        for j in np.flatnonzero(keep & (~finite | nonpos | outside)):  # in record order
            o = ob_org[j]
            if not finite[j]:
                ck.flag(o.file, o.record, fld("bbox"), "box has non-finite coordinates (XYXY)", _round_list(boxes[j]),
                        repaired="dropped the object")
                keep[j] = False
            elif nonpos[j]:
                ck.flag(o.file, o.record, fld("bbox"), f"non-positive box size (width {bw[j]:g}, height {bh[j]:g})",
                        _round_list(boxes[j]), repaired="dropped the object")
                keep[j] = False
            else:
                msg = f"box (XYXY) outside the {int(w[j])}x{int(h[j])} (WxH) image"
                if empty_after[j]:
                    ck.flag(o.file, o.record, fld("bbox"), msg, _round_list(boxes[j]),
                            repaired="dropped the object: nothing of it lies inside the image")
                    keep[j] = False
                else:
                    ck.flag(o.file, o.record, fld("bbox"), msg, _round_list(boxes[j]),
                            repaired=f"clipped to {_round_list(clipped[j])}")
                    anns[j].bbox = clipped[j].astype(np.float32)

    # segmentation: RLE sizes and contents, polygon rings (all rings of all objects checked at once)
    rle_rows, ring_rows, rings, ring_hw = [], [], [], []
    for j in np.flatnonzero(keep):
        a = anns[j]
        seg = a.segmentation
        if seg is None:
            continue
        o = ob_org[j]
        if isinstance(seg, dict):
            size = seg.get("size", (0, 0))
            size = tuple(int(v) for v in size) if len(size) == 2 else tuple(size)
            if size_of[a.image_id] == (0, 0):  # size not known: rle_problems checks the RLE on its own
                rle_rows.append(j)
            elif size != size_of[a.image_id]:
                ck.flag(o.file, o.record, fld("segmentation"),
                        f"RLE size {list(size)} is not the image size {list(size_of[a.image_id])} (HxW)",
                        list(size), repaired="dropped the object")
                keep[j] = False
            else:
                rle_rows.append(j)
            continue
        for r, ring in enumerate(seg):
            ring_rows.append((j, r))
            rings.append(ring)
            ring_hw.append(size_of[a.image_id] if size_of[a.image_id] != (0, 0) else (np.inf, np.inf))
    for j, why in zip(rle_rows, rle_problems([anns[j].segmentation for j in rle_rows])):
        if why is not None:
            o = ob_org[j]
            ck.flag(o.file, o.record, fld("segmentation"), why, _short(anns[j].segmentation.get("counts")),
                    repaired="dropped the object")
            keep[j] = False
    if rings:
        hw = np.asarray(ring_hw, dtype=np.float64).reshape(-1, 2)
        bad_rings: dict[int, set[int]] = {}
        for (j, r), ring, why in zip(ring_rows, rings, ring_problems(rings, hw[:, 0], hw[:, 1])):
            if why is not None:
                o = ob_org[j]
                ck.flag(o.file, o.record, f"{fld('segmentation')}[{r}]", why, _short(ring),
                        repaired="dropped the ring")
                bad_rings.setdefault(j, set()).add(r)
        for j, bad in bad_rings.items():
            a = anns[j]
            good = [ring for r, ring in enumerate(a.segmentation) if r not in bad]
            if good:
                a.segmentation = good
            elif as_is:  # nothing is repaired: the rings' own problems say it all
                keep[j] = False
            else:
                o = ob_org[j]
                ck.flag(o.file, o.record, fld("segmentation"), "no valid polygon ring left", None,
                        repaired="dropped the object")
                keep[j] = False

    # area (COCO's, when given): a finite number >= 0
    for j in np.flatnonzero(keep):
        ar = anns[j].area
        if ar is not None and not (np.isfinite(ar) and ar >= 0):
            o = ob_org[j]
            ck.flag(o.file, o.record, "area", "area must be a finite number >= 0", ar,
                    repaired="removed the area (computed again when written)")
            anns[j].area = None

    # keypoints
    kset = aset.keypoint_set
    k_all = kset.num_keypoints if kset is not None else num_keypoints
    for j in np.flatnonzero(keep):
        a = anns[j]
        if a.keypoints is None:
            continue
        o = ob_org[j]
        kp = np.asarray(a.keypoints)
        if kset is None and not as_is:
            ck.flag(o.file, o.record, fld("keypoints"), "object has keypoints but the set has no keypoint layout",
                    int(kp.size), repaired="removed the keypoints")
            a.keypoints = None
            continue
        k = k_all if k_all is not None else kp.size // 3
        if kp.shape != (k, 3) or k == 0:
            what = f"{k} keypoints x 3 = {3 * k}" if k_all is not None else "a multiple of 3"
            ck.flag(o.file, o.record, fld("keypoints"),
                    f"keypoint array of the wrong length: {kp.size} values, expected {what}",
                    int(kp.size), repaired=f"replaced by {k} unlabeled keypoints (v=0)")
            a.keypoints = np.zeros((k, 3), dtype=np.float32)
            continue
        finite = np.isfinite(kp).all(axis=1)
        if not finite.all():
            ck.flag(o.file, o.record, fld("keypoints"), "keypoints with non-finite values (NaN or infinity)",
                    np.flatnonzero(~finite).tolist(), repaired="made those keypoints unlabeled (0, 0, v=0)")
            kp = kp.astype(np.float32, copy=True)
            kp[~finite] = 0
            a.keypoints = kp

    aset.images = kept_images
    aset.annotations = [a for a, k in zip(anns, keep) if k]
    aset.reindex()
    new = ck.problems[start:]
    if checker is None:
        aset.problems.extend(new)
    return list(new)
