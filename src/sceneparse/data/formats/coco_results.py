"""COCO *results* files: model detections as the JSON list that pycocotools' ``COCO.loadRes``,
``sceneparse eval`` and every COCO leaderboard read.

One record per detection::

    {"image_id": int, "category_id": int, "score": float,
     "bbox": [x, y, w, h],                                  # COCO XYWH, absolute px
     "segmentation": {"size": [H, W], "counts": "..."},      # compressed RLE (masks)
     "keypoints": [x1, y1, s1, x2, y2, s2, ...]}             # keypoints

* ``category_id`` is the dataset id of the contiguous label: ``categories[label]`` (a checkpoint's
  ``categories`` list, in label order, or a :class:`~sceneparse.conventions.CategoryMap`).
* ``bbox`` is sceneparse's XYXY turned into COCO's top-left XYWH (``w = x1 - x0``: same pixel-edge
  convention, no ``+1``).
* ``segmentation`` is the compressed RLE of the whole-image mask (all masks of an image go through
  one ``pycocotools.mask.encode`` call on a Fortran-ordered ``uint8 [H, W, N]`` array).
* ``keypoints`` are ``(x, y, score)`` triples, Detectron's convention: pycocotools ignores the third
  value of results (OKS uses the ground truth's visibility, and ``loadRes`` takes the record's extent
  from x and y only), so it carries the keypoint score when the results have one
  (``Instances.keypoint_scores``), else the ``v`` of ``Instances.keypoints``.

A record written with all three fields is evaluated by ``loadRes`` as a *box* result (the first
field it finds): for ``segm`` the detection's area range then follows its box area, exactly as
pycocotools does with Detectron's combined files.

:class:`CocoResultsWriter` streams records to a temporary file next to the target and renames it
into place on :meth:`~JsonListWriter.close` (nothing is kept in memory per image, and a reader or a
crash never sees half a file).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ...conventions import CategoryMap
from ...errors import DataError, Problem
from ...fileio import atomic_open
from ...structures.instances import Instances
from ...structures.masks import encode_rle

#: result fields in COCO's names, and the Instances field each comes from
RESULT_FIELDS = {"bbox": "boxes", "segmentation": "masks", "keypoints": "keypoints"}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def category_ids(categories: "CategoryMap | Sequence[dict] | Sequence[int]") -> np.ndarray:
    """``int64 [C]``: the dataset id of each contiguous label.

    ``categories`` is a :class:`CategoryMap`, a list of COCO category dicts *in label order* (as a
    checkpoint stores them: label ``i`` is ``categories[i]["id"]``), or a list of ids.
    """
    if isinstance(categories, CategoryMap):
        return np.asarray(categories.ids, dtype=np.int64)
    out = []
    for i, c in enumerate(categories):
        if isinstance(c, dict):
            if "id" not in c:
                raise DataError(Problem(None, f"categories[{i}]", "id", "category has no 'id'", c))
            c = c["id"]
        elif hasattr(c, "id"):
            c = c.id
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise DataError(Problem(None, f"categories[{i}]", "id", "category id must be an integer", c))
        out.append(int(c))
    if len(set(out)) != len(out):
        raise DataError(Problem(None, None, "categories", "duplicate category ids", out))
    return np.asarray(out, dtype=np.int64)


def _bad_rows(where: tuple, name: str, rows: np.ndarray, values: np.ndarray, message: str) -> DataError:
    i = int(rows[0])
    return DataError(Problem(*where, f"{name}[{i}]", f"{message} ({len(rows)} detection(s))",
                             np.asarray(values[i]).tolist()))


def instances_to_coco_results(instances: Instances, image_id: int, categories, *,
                              fields: Sequence[str] | None = None, decimals: int | None = 3,
                              file: str | None = None) -> list[dict[str, Any]]:
    """Detections of one image -> COCO result records (one dict per detection, in ``instances`` order).

    Args:
        instances: results with ``labels`` and ``scores`` and any of ``boxes``, ``masks``,
            ``keypoints`` (+ ``keypoint_scores``), in the pixels of the image ``image_id``.
        image_id: the dataset id of the image.
        categories: label -> dataset id map, see :func:`category_ids` (or its ``int64 [C]`` output).
        fields: which of ``"bbox"``, ``"segmentation"``, ``"keypoints"`` to write (default: all
            that ``instances`` has).
        decimals: box and keypoint coordinates are rounded to this many decimals (``None``: as
            computed; 3 decimals = 1/1000 px, far below what changes an IoU or OKS; unrounded
            float32 values print with up to 17 digits). Scores are never rounded: rounding could
            create ties that change the evaluation order.
        file: named in error messages (e.g. the image file).

    Raises :class:`DataError` naming the image, the field and the first offending detection for
    labels without a category, missing or non-finite scores, non-finite coordinates, and masks
    whose size is not ``instances.image_size``.
    """
    n = len(instances)
    if n == 0:
        return []
    where = (file, f"image {image_id}")
    lut = categories if isinstance(categories, np.ndarray) else category_ids(categories)
    if fields is None:
        fields = [f for f, attr in RESULT_FIELDS.items() if getattr(instances, attr) is not None]
    unknown = [f for f in fields if f not in RESULT_FIELDS]
    if unknown:
        raise ValueError(f"unknown result field(s) {unknown}; expected some of {list(RESULT_FIELDS)}")
    if instances.labels is None or instances.scores is None:
        missing = "labels" if instances.labels is None else "scores"
        raise DataError(Problem(*where, missing, "COCO results need labels and scores"))
    labels = _np(instances.labels).astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= len(lut)))
    if len(bad):
        raise _bad_rows(where, "labels", bad, labels, f"label outside 0..{len(lut) - 1} (no category)")
    scores = _np(instances.scores).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise _bad_rows(where, "scores", bad, scores, "non-finite score")
    columns: dict[str, list] = {"image_id": [int(image_id)] * n, "category_id": lut[labels].tolist(),
                                "score": scores.tolist()}
    for f in fields:
        attr = RESULT_FIELDS[f]
        value = getattr(instances, attr)
        if value is None:
            raise DataError(Problem(*where, attr, f"{f!r} was asked for but the instances have no {attr}"))
        if f == "bbox":
            b = _np(value).astype(np.float64)
            xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
            bad = np.flatnonzero(~np.isfinite(xywh).all(1))
            if len(bad):
                raise _bad_rows(where, "boxes", bad, b, "non-finite box")
            columns["bbox"] = (xywh if decimals is None else np.round(xywh, decimals)).tolist()
        elif f == "segmentation":
            if tuple(value.shape[1:]) != tuple(instances.image_size):
                raise DataError(Problem(*where, "masks", f"masks are {tuple(value.shape[1:])} (HxW) but the image "
                                        f"is {tuple(instances.image_size)}"))
            columns["segmentation"] = encode_rle(value)
        else:
            kp = _np(value).astype(np.float64).copy()
            if instances.keypoint_scores is not None:
                kp[..., 2] = _np(instances.keypoint_scores).astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(kp).all((1, 2)))
            if len(bad):
                raise _bad_rows(where, "keypoints", bad, kp, "non-finite keypoint")
            if decimals is not None:
                kp[..., :2] = np.round(kp[..., :2], decimals)
            columns["keypoints"] = kp.reshape(n, -1).tolist()
    keys = list(columns)
    return [dict(zip(keys, row)) for row in zip(*columns.values())]


class _Aborted(Exception):
    """Thrown into ``atomic_open`` to make it drop the temporary file."""


class JsonListWriter:
    """Write a JSON document whose one growing part is a list, item by item, atomically.

    The text is ``prefix`` + items separated by ``",\\n"`` + ``suffix`` (default: a bare list).
    Items go to a temporary file next to ``path``; :meth:`close` fsyncs it and renames it to
    ``path`` in one step; :meth:`abort` (or leaving a ``with`` block by an exception) removes it and
    leaves an existing ``path`` untouched. Memory does not grow with the number of items.
    """

    def __init__(self, path: str | os.PathLike, *, prefix: str = "[\n", suffix: str = "\n]\n"):
        self.path = Path(path)
        self._suffix = suffix
        # the temp file, its mode, fsync and the final rename are fileio.atomic_open's; the writer
        # only keeps the context open between calls
        self._ctx = atomic_open(self.path, "w", durable=True)
        self._f = self._ctx.__enter__()
        self._f.write(prefix)
        self.count = 0
        self.closed = False

    def write(self, item: Any) -> None:
        """Append one JSON value (NaN / inf are refused: JSON has none)."""
        if self.closed:
            raise ValueError(f"{self.path}: writer is closed")
        text = json.dumps(item, separators=(",", ":"), allow_nan=False)
        self._f.write(text if self.count == 0 else ",\n" + text)
        self.count += 1

    def write_all(self, items: Iterable[Any]) -> int:
        n = 0
        for item in items:
            self.write(item)
            n += 1
        return n

    def close(self) -> Path:
        """Finish the document and move it into place. Idempotent."""
        if not self.closed:
            self.closed = True
            try:
                self._f.write(self._suffix)
            except BaseException as e:
                self._ctx.__exit__(type(e), e, e.__traceback__)  # removes the temp file
                raise
            self._ctx.__exit__(None, None, None)  # fsync + rename into place
        return self.path

    def abort(self) -> None:
        """Drop what was written; ``path`` is left as it was."""
        if not self.closed:
            self.closed = True
            e = _Aborted()
            self._ctx.__exit__(_Aborted, e, None)  # removes the temp file; path untouched

    def __enter__(self) -> "JsonListWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # an abandoned writer leaves no temp file behind
        if not getattr(self, "closed", True):
            try:
                self.abort()
            except Exception:
                pass


class CocoResultsWriter(JsonListWriter):
    """Stream COCO result records of many images into one results JSON file (atomically).

    ::

        with CocoResultsWriter("predictions.json", categories) as w:
            for image_id, inst in results:
                w.add(inst, image_id)

    ``categories``, ``fields`` and ``decimals`` are those of :func:`instances_to_coco_results`.
    """

    def __init__(self, path: str | os.PathLike, categories, *, fields: Sequence[str] | None = None,
                 decimals: int | None = 3):
        self._lut = category_ids(categories)
        self._fields = fields
        self._decimals = decimals
        self.num_images = 0
        super().__init__(path)

    def add(self, instances: Instances, image_id: int, *, file: str | None = None) -> int:
        """Write the records of one image; returns how many."""
        records = instances_to_coco_results(instances, image_id, self._lut, fields=self._fields,
                                            decimals=self._decimals, file=file)
        self.write_all(records)
        self.num_images += 1
        return len(records)


def write_coco_results(path: str | os.PathLike, results: Iterable[tuple[int, Instances]], categories, *,
                       fields: Sequence[str] | None = None, decimals: int | None = 3) -> Path:
    """Write ``(image_id, Instances)`` pairs as one COCO results file (streamed, atomic)."""
    with CocoResultsWriter(path, categories, fields=fields, decimals=decimals) as w:
        for image_id, inst in results:
            w.add(inst, image_id)
    return Path(path)


__all__ = ["CocoResultsWriter", "JsonListWriter", "RESULT_FIELDS", "category_ids", "instances_to_coco_results",
           "write_coco_results"]
