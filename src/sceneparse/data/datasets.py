"""``SceneDataset``: an :class:`~sceneparse.data.records.AnnotationSet` as a torch ``Dataset`` of
``(image, Target)`` pairs, and :func:`collate` for the ``DataLoader``.

Images come back as ``float32 [3, H, W]`` RGB in ``[0, 1]`` (the model input convention); targets
are :class:`~sceneparse.structures.target.Target` in sceneparse's conventions (XYXY float32 absolute
pixels, contiguous labels, ``bool [N, H, W]`` masks, ``float32 [N, K, 3]`` keypoints). Every problem
raises :class:`~sceneparse.errors.DataError` naming the file, the image / annotation id and the field.
Image files are read by :mod:`sceneparse.data.images`, the one image reader (the predictor's too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import DataError, Problem
from ..structures.instances import Instances
from ..structures.masks import decode_rle, polygons_to_rle
from ..structures.rle import rle_problems
from ..structures.segmaps import PanopticMap, SegmentInfo, SemanticMap, rgb2id
from ..structures.target import Target
from .formats._io import inside
from .images import pil_to_tensor  # noqa: F401  (re-exported: its old home)
from .images import open_image, pixels_to_tensor, read_image, read_pixels
from .records import AnnotationSet, ImageRecord, ObjectRecord

#: ``(image, target) -> (image, target)``, e.g. :class:`sceneparse.data.transforms.Compose`.
Transform = Callable[[torch.Tensor, Target], "tuple[torch.Tensor, Target]"]

#: Read an image file as ``float32 [3, H, W]`` RGB in ``[0, 1]`` (EXIF orientation applied unless
#: ``exif=False``): the one image reader, :func:`sceneparse.data.images.read_image`, under its old name.
load_image = read_image


class SceneDataset(torch.utils.data.Dataset):
    """Images and targets of an :class:`AnnotationSet`.

    ``dataset[i]`` is ``(image float32 [3, H, W] in [0, 1], Target)`` after ``transforms``.

    Args:
        aset: the loaded split.
        transforms: joint ``(image, target) -> (image, target)`` callable, applied last.
        load_masks: decode instance masks (polygons / RLE) into ``Target.instances.masks``. Only
            when at least one annotation of the set has a segmentation; objects without one get
            their box (pixels whose centre lies inside) as mask, so a mask head is not taught "empty".
        load_keypoints: fill ``Target.instances.keypoints`` ``[N, K, 3]`` when the set has
            keypoints; objects without them get ``v = 0`` rows.
        load_semantic: read ``aset.semantic_root/<image stem>.png`` (values = contiguous labels,
            255 = ignore) into ``Target.semantic``.
        load_panoptic: read the image's panoptic PNG (``aset.panoptic`` / ``aset.panoptic_root``)
            into ``Target.panoptic`` (segment ``label`` filled from the set's category map).
        cache: keep each decoded image and semantic label map in memory after its first read
            (ultralytics' ``cache=ram``): 8-bit images as ``uint8 [H, W, 3]``, label maps in the
            smallest integer type that holds them, so a 256 x 256 scene costs 256 KiB instead of the
            1.3 MB of its float / int64 tensors; every read returns exactly what an uncached read
            would. :meth:`preload` fills it up front. Masks, keypoints and panoptic maps are built
            per read as without the cache.

    Orientation: EXIF orientation is applied. If the record's ``height``/``width`` match only the
    file's stored (un-rotated) orientation, the annotations were made on the stored pixels and
    the image is used as stored; a size matching neither raises :class:`DataError`.
    """

    def __init__(self, aset: AnnotationSet, transforms: Transform | None = None, *, load_masks: bool = True,
                 load_keypoints: bool = True, load_semantic: bool = False, load_panoptic: bool = False,
                 cache: bool = False):
        self.aset = aset
        self.cache = bool(cache)
        self._images: dict[int, np.ndarray | torch.Tensor] = {}
        self._labels: dict[int, np.ndarray] = {}
        self.transforms = transforms
        self.load_semantic = load_semantic
        self.load_panoptic = load_panoptic
        self.with_masks = bool(load_masks) and any(a.segmentation is not None for a in aset.annotations)
        k = aset.keypoint_set.num_keypoints if aset.keypoint_set is not None else next(
            (int(np.asarray(a.keypoints).shape[0]) for a in aset.annotations if a.keypoints is not None), 0)
        self.num_keypoints = k if load_keypoints else 0
        if load_semantic and aset.semantic_root is None:
            raise DataError(Problem(aset.source or None, None, "semantic_root",
                                    "load_semantic=True but the annotation set has no semantic_root"))
        if load_panoptic and aset.panoptic_root is None:
            raise DataError(Problem(aset.source or None, None, "panoptic_root",
                                    "load_panoptic=True but the annotation set has no panoptic_root"))
        aset.reindex()
        # per-instance bool flags carried in ObjectRecord.extra (e.g. VOC difficult / truncated)
        self._flag_keys = sorted({k for a in aset.annotations for k, v in a.extra.items()
                                  if isinstance(v, (bool, np.bool_))})

    # ---- metadata ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.aset.images)

    @property
    def class_names(self) -> list[str]:
        return self.aset.categories.names

    @property
    def image_ids(self) -> list[int]:
        return [int(r.id) for r in self.aset.images]

    def record(self, index: int) -> ImageRecord:
        return self.aset.images[index]

    @property
    def cache_bytes(self) -> int:
        """Bytes the cache holds now."""
        return sum(int(a.nbytes) if isinstance(a, np.ndarray) else a.numel() * a.element_size()
                   for d in (self._images, self._labels) for a in d.values())

    def preload(self, progress: bool = False) -> list[Problem]:
        """Read every image (and label map) into the cache now, going past unreadable ones; returns
        their problems (file, image id, field), one per image, for the caller to report. Those
        images are left out of the cache and raise again when read."""
        if not self.cache:
            raise ValueError("preload() needs SceneDataset(..., cache=True)")
        from tqdm import tqdm

        problems: list[Problem] = []
        for rec in tqdm(self.aset.images, desc="caching images", unit="img", disable=not progress,
                        dynamic_ncols=True, leave=False):
            try:
                held = self._held_pixels(rec)  # no float conversion: only the size is needed here
                h, w = held.shape[-2:] if isinstance(held, torch.Tensor) else held.shape[:2]
                if self.load_semantic:
                    self._semantic(rec, int(h), int(w))
            except DataError as e:
                problems.extend(e.problems)
        return problems

    # ---- loading -------------------------------------------------------------------------
    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        rec = self.aset.images[index]
        image = self._load_image(rec)
        h, w = int(image.shape[1]), int(image.shape[2])
        target = self._load_target(rec, h, w)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _where(self, rec: ImageRecord) -> str:
        return f"image {rec.id}"

    def _load_image(self, rec: ImageRecord) -> torch.Tensor:
        if not self.cache:
            return read_image(self.aset.image_path(rec), self._size(rec), record=self._where(rec))
        held = self._held_pixels(rec)
        return held.clone() if isinstance(held, torch.Tensor) else pixels_to_tensor(held)

    def _held_pixels(self, rec: ImageRecord) -> np.ndarray | torch.Tensor:
        """The cached pixels of ``rec`` (decoded and stored on first use): 8-bit images as ``uint8
        [H, W, 3]`` (a quarter of the float tensor), other modes as the float tensor."""
        key = int(rec.id)
        held = self._images.get(key)
        if held is None:
            held = self._images[key] = read_pixels(self.aset.image_path(rec), self._size(rec), record=self._where(rec))
        return held

    @staticmethod
    def _size(rec: ImageRecord) -> tuple[int, int]:
        """The record's ``(height, width)`` (0 if unknown): with the EXIF orientation, it decides which
        way up the image reader reads the file (see the class notes)."""
        return int(rec.height or 0), int(rec.width or 0)

    def _load_target(self, rec: ImageRecord, h: int, w: int) -> Target:
        objs = self.aset.annotations_of(rec.id)
        n = len(objs)
        box_array = np.asarray([np.asarray(o.bbox, dtype=np.float32).reshape(4) for o in objs],
                               dtype=np.float32).reshape(n, 4)
        finite = np.isfinite(box_array).all(axis=1)
        if not finite.all():  # readers drop these; a hand-made set may still hold one
            o = objs[int(np.flatnonzero(~finite)[0])]
            raise DataError(Problem(self.aset.source or None, f"image {rec.id} annotation {o.id}", "bbox",
                                    "box with non-finite coordinates (NaN or infinity)", o.bbox.tolist()))
        boxes = torch.from_numpy(box_array)
        labels = torch.tensor([int(o.label) for o in objs], dtype=torch.long)
        iscrowd = torch.tensor([bool(o.iscrowd) for o in objs], dtype=torch.bool)
        fields: dict[str, torch.Tensor] = {"boxes": boxes, "labels": labels}
        if self.with_masks:
            fields["masks"] = self._masks(rec, objs, boxes, h, w)
        if self.num_keypoints:
            fields["keypoints"] = self._keypoints(rec, objs)
        extra = {k: torch.tensor([bool(o.extra.get(k, False)) for o in objs], dtype=torch.bool)
                 for k in self._flag_keys}
        semantic = self._semantic(rec, h, w) if self.load_semantic else None
        panoptic = self._panoptic(rec, h, w) if self.load_panoptic else None
        return Target(image_id=int(rec.id), instances=Instances((h, w), **fields), iscrowd=iscrowd,
                      semantic=semantic, panoptic=panoptic, file_name=str(self.aset.image_path(rec)), extra=extra)

    def _masks(self, rec: ImageRecord, objs: Sequence[ObjectRecord], boxes: torch.Tensor, h: int, w: int
               ) -> torch.Tensor:
        """``bool [N, H, W]``: every polygon / RLE goes to one RLE list and one pycocotools decode.
        Polygons and RLEs are checked before pycocotools sees them (``structures.masks`` raises
        ``ValueError``; here it becomes a :class:`DataError` naming the image and annotation)."""
        masks = torch.zeros((len(objs), h, w), dtype=torch.bool)
        rles, rows, whos = [], [], []
        for i, o in enumerate(objs):
            seg = o.segmentation
            if seg is None:
                continue
            where = f"image {rec.id} annotation {o.id}"
            if isinstance(seg, dict):
                size = [int(s) for s in seg.get("size", ())]
                if size != [h, w]:
                    raise DataError(Problem(self.aset.source or None, where, "segmentation.size",
                                            f"RLE size does not match the image ({h}, {w})", size))
                rles.append(seg)
            elif isinstance(seg, (list, tuple)):
                # rings of fewer than 3 points have no area, and pycocotools would read a 4-number
                # ring as a box: leave them out
                rings = [list(map(float, r)) for r in seg if len(r) >= 6]
                if not rings:
                    continue
                try:
                    rles.append(polygons_to_rle(rings, h, w))
                except (ValueError, TypeError) as e:
                    raise DataError(Problem(self.aset.source or None, where, "segmentation", str(e))) from None
            else:
                raise DataError(Problem(self.aset.source or None, where, "segmentation",
                                        "expected polygons (list) or RLE (dict)", type(seg).__name__))
            rows.append(i)
            whos.append(where)
        if rles:
            bad = next(((who, p) for who, p in zip(whos, rle_problems(rles)) if p is not None), None)
            if bad is not None:
                raise DataError(Problem(self.aset.source or None, bad[0], "segmentation", bad[1]))
            masks[torch.tensor(rows)] = torch.from_numpy(decode_rle(rles))
        missing = torch.tensor([o.segmentation is None for o in objs], dtype=torch.bool)
        if missing.any():
            masks[missing] = _box_masks(boxes[missing], h, w)
        return masks

    def _keypoints(self, rec: ImageRecord, objs: Sequence[ObjectRecord]) -> torch.Tensor:
        k = self.num_keypoints
        kps = np.zeros((len(objs), k, 3), dtype=np.float32)
        for i, o in enumerate(objs):
            if o.keypoints is None:
                continue
            kp = np.asarray(o.keypoints, dtype=np.float32)
            if kp.shape != (k, 3):
                raise DataError(Problem(self.aset.source or None, f"image {rec.id} annotation {o.id}", "keypoints",
                                        f"expected shape ({k}, 3)", tuple(kp.shape)))
            if not np.isfinite(kp).all():
                raise DataError(Problem(self.aset.source or None, f"image {rec.id} annotation {o.id}", "keypoints",
                                        "keypoints with non-finite values (NaN or infinity)"))
            kps[i] = kp
        return torch.from_numpy(kps)

    def _semantic(self, rec: ImageRecord, h: int, w: int) -> SemanticMap:
        if not self.cache:
            return SemanticMap(self._read_labels(rec, h, w))
        held = self._labels.get(int(rec.id))
        if held is None:
            labels = self._read_labels(rec, h, w)
            lo, hi = (int(labels.min()), int(labels.max())) if labels.numel() else (0, 0)
            small = next(t for t in (np.uint8, np.uint16, np.int32, np.int64)
                         if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
            held = self._labels[int(rec.id)] = labels.numpy().astype(small)
        return SemanticMap(torch.from_numpy(held.astype(np.int64)))

    def _read_labels(self, rec: ImageRecord, h: int, w: int) -> torch.Tensor:
        path = Path(self.aset.semantic_root) / (Path(rec.file_name).stem + ".png")  # type: ignore[arg-type]
        img = open_image(path, exif=False, record=self._where(rec))
        if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"):
            raise DataError(Problem(str(path), self._where(rec), "semantic",
                                    "semantic PNG must be single-channel label values", img.mode))
        labels = torch.from_numpy(np.asarray(img).astype(np.int64))
        if tuple(labels.shape) != (h, w):
            raise DataError(Problem(str(path), self._where(rec), "semantic",
                                    f"label map is {tuple(labels.shape)} but the image is ({h}, {w})"))
        return labels

    def _panoptic(self, rec: ImageRecord, h: int, w: int) -> PanopticMap:
        prec = self.aset.panoptic.get(int(rec.id))
        if prec is None:
            raise DataError(Problem(self.aset.source or None, self._where(rec), "panoptic",
                                    "load_panoptic=True but the image has no panoptic annotation"))
        if inside(self.aset.panoptic_root, prec.file_name) is None:  # read_coco_panoptic drops these; a set by hand
            raise DataError(Problem(self.aset.source or None, self._where(rec), "file_name",
                                    f"PNG name leads outside the panoptic PNG folder {self.aset.panoptic_root}",
                                    prec.file_name))
        path = Path(self.aset.panoptic_root) / prec.file_name  # type: ignore[arg-type]
        img = open_image(path, exif=False, record=self._where(rec))
        ids = rgb2id(np.asarray(img.convert("RGB")))
        if ids.shape != (h, w):
            raise DataError(Problem(str(path), self._where(rec), "panoptic",
                                    f"panoptic PNG is {ids.shape} but the image is ({h}, {w})"))
        cats = self.aset.categories
        segments = []
        for s in prec.segments_info:
            cid = int(s["category_id"])
            if not cats.has_id(cid):
                raise DataError(Problem(self.aset.source or None, f"image {rec.id} segment {s.get('id')}",
                                        "category_id", "unknown category id", cid))
            label = cats.to_label(cid)
            bbox = s.get("bbox")
            segments.append(SegmentInfo(id=int(s["id"]), category_id=cid, label=label,
                                        isthing=cats.categories[label].isthing, iscrowd=bool(s.get("iscrowd", 0)),
                                        area=int(s.get("area", 0)),
                                        bbox=None if bbox is None else tuple(float(v) for v in bbox)))
        return PanopticMap(torch.from_numpy(ids), segments)


def _box_masks(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``bool [N, H, W]``: pixels whose centre ``(j + 0.5, i + 0.5)`` lies inside the XYXY box."""
    cx = torch.arange(w, dtype=torch.float32) + 0.5
    cy = torch.arange(h, dtype=torch.float32) + 0.5
    in_x = (cx[None] >= boxes[:, 0:1]) & (cx[None] < boxes[:, 2:3])  # [N, W]
    in_y = (cy[None] >= boxes[:, 1:2]) & (cy[None] < boxes[:, 3:4])  # [N, H]
    return in_y[:, :, None] & in_x[:, None, :]


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """``DataLoader`` ``collate_fn``: images stay a list (sizes differ; batching and padding is
    ``models/preprocess``'s job) and targets a list of :class:`Target`."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


__all__ = ["SceneDataset", "collate", "load_image", "pil_to_tensor"]
