"""What ``sceneparse view`` serves: one dataset split and its prediction sources, as columns.

The dataset is read once by the hardened COCO reader (:func:`sceneparse.data.layout.split_files`,
:func:`sceneparse.data.formats.read_coco`, as ``sceneparse show`` reads it); images stay on disk and
are read per request. Each prediction file is a :class:`Source`, loaded in a background thread:
read and validated by the evaluation's results boundary
(:func:`sceneparse.evaluation.validate.coco_columns`; a broken file keeps its
:class:`~sceneparse.errors.SceneparseError` message, naming the file, record and field, and the other
sources are served), then matched by :mod:`.facts` at the IoU asked for (0.5 first). Objects are
kept as numpy columns sorted by image, so that a page of the grid is a few slices.
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.formats import read_coco
from ..data.layout import SplitFiles, split_files
from ..errors import DataError, Problem, SceneparseError
from ..evaluation.validate import CocoPair, coco_columns, load_coco_gt, load_coco_results
from ..viz.colors import class_colors
from .facts import ERROR_TYPES, SourceFacts, compute_facts

#: grid page size the client asks for by default
PAGE_SIZE = 48


def _grouped(image_index: np.ndarray, num_images: int, score: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(order, offsets)``: rows sorted by image (then by descending score), ``offsets [I + 1]``."""
    keys = (image_index,) if score is None else (-score, image_index)
    order = np.lexsort(keys) if len(image_index) else np.zeros(0, np.int64)
    offsets = np.searchsorted(image_index[order], np.arange(num_images + 1)) if len(image_index) else \
        np.zeros(num_images + 1, np.int64)
    return order, offsets


def _round(v: np.ndarray, nd: int = 2) -> list:
    return np.round(np.asarray(v, dtype=np.float64), nd).tolist()


class Dataset:
    """One split: image records (file order), ground-truth objects as columns, optional maps.

    Args:
        source: a dataset folder in COCO layout, or a COCO instances / person_keypoints JSON.
        split: the folder's split. images: the image folder (required for a JSON source).
        semantic / panoptic_root: folders of label PNGs / panoptic PNGs (override the layout).
    """

    def __init__(self, source: str | Path, split: str = "val", *, images: str | Path | None = None,
                 semantic: str | Path | None = None, panoptic_root: str | Path | None = None) -> None:
        files = split_files(source, split, images=images, semantic=semantic, panoptic_root=panoptic_root)
        if files.instances is None or not files.instances.is_file():
            raise DataError(Problem(str(source), None, None, f"no COCO instances file "
                                    f"({files.instances or 'give a COCO JSON'}) to browse"))
        if files.images is None or not files.images.is_dir():
            raise DataError(Problem(str(source), None, "--images", "image folder not found", str(files.images)))
        self.files: SplitFiles = files
        self.gt_file = str(files.instances)
        # image files are not checked up front (5,000 stat calls): a missing one fails its own request
        self.aset = read_coco(files.instances)
        self.aset.image_root = files.images
        cmap = self.aset.categories
        self.names: list[str] = list(cmap.names)
        colors = [c.color if getattr(c, "color", None) else None for c in cmap.categories]
        given = [c for c in colors if c is not None]
        pal = class_colors(len(self.names))
        if len(given) == len(colors):
            pal = class_colors(len(self.names), np.asarray(given))
        self.palette = pal
        self.things = [bool(getattr(c, "isthing", True)) for c in cmap.categories]
        ks = self.aset.keypoint_set
        kp_file = files.person_keypoints if files.json is None else None
        keypoints: dict[int, np.ndarray] = {}
        has_kp = any(a.keypoints is not None for a in self.aset.annotations)
        if not has_kp and kp_file is not None and kp_file.is_file():  # the layout's keypoints file, by id
            kset = read_coco(kp_file)
            ks = kset.keypoint_set or ks
            keypoints = {int(a.id): a.keypoints for a in kset.annotations if a.keypoints is not None}
        self.keypoint_set = ks
        self.images = self.aset.images
        self.ids = np.array([int(r.id) for r in self.images], dtype=np.int64)
        self._index = {int(i): n for n, i in enumerate(self.ids.tolist())}
        anns = self.aset.annotations
        self.anns = anns
        n = len(anns)
        self.ann_image = np.fromiter((self._index.get(int(a.image_id), -1) for a in anns), np.int64, n)
        self.ann_label = np.fromiter((int(a.label) for a in anns), np.int64, n)
        self.ann_id = np.fromiter((int(a.id) for a in anns), np.int64, n)
        self.ann_crowd = np.fromiter((bool(a.iscrowd) for a in anns), bool, n)
        self.ann_box = np.stack([a.bbox for a in anns]).astype(np.float64) if n else np.zeros((0, 4))
        self.ann_keypoints = keypoints
        self.order, self.offsets = _grouped(self.ann_image, len(self.images))
        self._objects: dict[int, list[dict]] = {}
        self.semantic_dir = files.semantic if files.semantic is not None and files.semantic.is_dir() else None
        self.panoptic: dict[int, Any] = {}
        if files.panoptic_json is not None and files.panoptic_json.is_file() and files.panoptic_root is not None \
                and files.panoptic_root.is_dir():
            from ..data.formats import read_coco_panoptic

            pset = read_coco_panoptic(files.panoptic_json, files.panoptic_root, image_root=files.images)
            self.panoptic = dict(pset.panoptic)
            self.panoptic_root = Path(pset.panoptic_root)
            self.panoptic_categories = pset.categories

    def __len__(self) -> int:
        return len(self.images)

    def index_of(self, image_id: int) -> int:
        return self._index[int(image_id)]

    def image_path(self, i: int) -> Path:
        return self.aset.image_path(self.images[i])

    def semantic_path(self, i: int) -> Path | None:
        if self.semantic_dir is None:
            return None
        p = self.semantic_dir / f"{Path(self.images[i].file_name).stem}.png"
        return p if p.is_file() else None

    def objects(self, i: int) -> list[dict]:
        """Ground-truth objects of image ``i`` for the client (boxes XYXY px); kept once made."""
        got = self._objects.get(i)
        if got is None:
            got = self._objects[i] = self._make_objects(i)
        return got

    def _make_objects(self, i: int) -> list[dict]:
        rows = self.order[self.offsets[i]:self.offsets[i + 1]]
        out = []
        for r in rows.tolist():
            a = self.anns[r]
            o: dict[str, Any] = {"id": int(self.ann_id[r]), "label": int(self.ann_label[r]),
                                 "box": _round(self.ann_box[r]), "crowd": bool(self.ann_crowd[r])}
            if a.segmentation is not None:
                o["seg"] = a.segmentation
            kp = a.keypoints if a.keypoints is not None else self.ann_keypoints.get(int(self.ann_id[r]))
            if kp is not None:
                o["kp"] = _round(np.asarray(kp).reshape(-1), 1)
            out.append(o)
        return out

    def meta(self) -> dict:
        ks = self.keypoint_set
        return {"source": str(self.files.source), "split": self.files.split, "num_images": len(self),
                "num_objects": len(self.anns), "classes": self.names, "things": self.things,
                "palette": self.palette.tolist(),
                "keypoints": None if ks is None else {"names": list(ks.names), "skeleton": [list(e) for e in ks.skeleton]},
                "has_semantic": self.semantic_dir is not None, "has_panoptic": bool(self.panoptic)}


@dataclass
class Source:
    """One prediction file: its state, columns and facts (filled by :meth:`load` in a thread)."""

    name: str
    path: str
    state: str = "waiting"  # waiting | reading | matching | ready | error
    error: str = ""
    seconds: float = 0.0
    pair: CocoPair | None = None
    label: np.ndarray | None = None  # dataset label of each result row
    image: np.ndarray | None = None  # dataset image index of each result row
    boxes: np.ndarray | None = None  # float64 [N, 4] XYXY
    order: np.ndarray | None = None
    offsets: np.ndarray | None = None
    segs: list | None = None
    keypoints: list | None = None
    ds2pair: np.ndarray | None = None
    facts: dict[float, SourceFacts] = field(default_factory=dict)
    facts_state: dict[float, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self) -> dict:
        return {"name": self.name, "path": self.path, "state": self.state, "error": self.error,
                "seconds": round(self.seconds, 3), "num_results": 0 if self.pair is None else len(self.pair.dt),
                "facts": {f"{k:g}": v for k, v in self.facts_state.items()}}

    def load(self, ds: Dataset, iou: float, executor=None) -> None:
        """Read, validate, index, then compute the facts at ``iou``; errors end in ``state='error'``.

        ``executor``: a ``concurrent.futures`` executor (the CLI's is one child process) that runs
        :func:`load_source`, so that reading and matching hundreds of thousands of results never holds
        the server's GIL (msgspec's decode and the matching's large numpy calls hold it for seconds);
        ``None`` runs it in the calling thread."""
        t0 = time.perf_counter()
        self.state = "reading"
        args = (self.path, ds.gt_file, ds.ids, ds.aset.categories.ids, iou)
        try:
            out = executor.submit(load_source, *args).result() if executor is not None else load_source(*args)
        except Exception as e:  # noqa: BLE001 -- a dead child process: shown in the page
            out = {"error": f"{self.path}: the process reading it failed: {type(e).__name__}: {e}"}
        if out.get("error"):
            self.state, self.error = "error", out["error"]
        else:
            self.pair, self.image, self.label, self.boxes = out["pair"], out["image"], out["label"], out["boxes"]
            self.order, self.offsets, self.ds2pair = out["order"], out["offsets"], out["ds2pair"]
            self.segs, self.keypoints = out["segs"], out["keypoints"]
            f = out["facts"]
            self.facts[round(f.iou, 2)] = f
            self.facts_state[round(f.iou, 2)] = "ready"
            self.state = "ready"
        self.seconds = time.perf_counter() - t0

    def facts_later(self, iou: float) -> SourceFacts | None:
        """The facts at ``iou`` if made; otherwise start matching in a thread and return ``None``
        (``facts_state`` says ``computing`` until they are there: the client polls it)."""
        iou = round(float(iou), 2)
        if iou in self.facts or self.pair is None:
            return self.facts.get(iou)
        with self.lock:
            if iou in self.facts:  # made by a thread this request waited for (the lock is held while matching)
                return self.facts[iou]
            if self.facts_state.get(iou) != "computing":
                self.facts_state[iou] = "computing"
                threading.Thread(target=self._facts_in_thread, args=(iou,), name=f"view-facts-{self.name}-{iou:g}",
                                 daemon=True).start()
        return None

    def _facts_in_thread(self, iou: float) -> None:
        """:meth:`facts_at` in a background thread: a failure is recorded (``facts_state[iou] =
        'error: ...'``, shown by the page) instead of leaving ``computing`` for ever."""
        try:
            self.facts_at(iou)
        except Exception as e:  # noqa: BLE001 -- reported through the status, the server keeps serving
            self.facts_state[iou] = f"error: {type(e).__name__}: {e}"

    def facts_at(self, iou: float) -> SourceFacts | None:
        """The facts at ``iou`` (computed now if needed; ``None`` while the file is not loaded)."""
        if self.pair is None:
            return None
        iou = round(float(iou), 2)
        with self.lock:
            if iou not in self.facts:
                self.facts_state[iou] = "computing"
                self.facts[iou] = compute_facts(self.pair, iou)
            self.facts_state[iou] = "ready"
            return self.facts[iou]

    def objects(self, i: int, facts: SourceFacts | None) -> dict:
        """Predictions of image ``i`` (best first) as columns: ``i`` (row in the file), ``label``,
        ``score``, ``box`` (XYXY px), ``kind`` (TP / error type / ignored / dropped at the facts' IoU),
        ``target`` (annotation id a Cls / Loc / Dupe error points at, else -1), and ``seg`` / ``kp``
        (``None`` where a result has none) when the file has masks or keypoints. Columns, not one
        dict per object: a page of 48 images holds about 5,000 of them."""
        return self.objects_of([i], facts)[0]

    def objects_of(self, images: list[int], facts: SourceFacts | None) -> list[dict]:
        """:meth:`objects` of several images at once (one gather and one ``tolist`` per column)."""
        if self.order is None:
            return [{"i": [], "label": [], "score": [], "box": [], "kind": [], "target": []} for _ in images]
        img = np.asarray(images, dtype=np.int64)
        lo, hi = self.offsets[img], self.offsets[img + 1]
        rows = np.concatenate([self.order[a:b] for a, b in zip(lo.tolist(), hi.tolist())] + [np.zeros(0, np.int64)])
        cols: dict[str, list] = {
            "i": rows.tolist(), "label": self.label[rows].tolist(),
            "score": np.round(self.pair.dt.score[rows], 4).tolist(), "box": np.round(self.boxes[rows], 2).tolist(),
            "kind": facts.tide.det_kind[rows].tolist() if facts is not None else [None] * len(rows),
            "target": facts.tide.det_target[rows].tolist() if facts is not None else [-1] * len(rows)}
        if self.segs is not None:
            cols["seg"] = [self.segs[r] for r in cols["i"]]
        if self.keypoints is not None:
            cols["kp"] = [self.keypoints[r] for r in cols["i"]]
        cuts = np.concatenate([[0], np.cumsum(hi - lo)]).tolist()
        return [{k: v[cuts[j]:cuts[j + 1]] for k, v in cols.items()} for j in range(len(images))]

    def missed_ids(self, facts: SourceFacts) -> set[int]:
        """Annotation ids of the ``Miss`` errors at the facts' IoU (a set, made once per IoU)."""
        got = getattr(facts, "_missed_set", None)
        if got is None:
            got = set(facts.tide.missed_gt.tolist())
            facts._missed_set = got  # type: ignore[attr-defined]
        return got

    def image_facts(self, facts: SourceFacts, i: int) -> dict:
        p = int(self.ds2pair[i])
        ap = facts.ap[p]
        return {"tp": int(facts.tp[p]), "fp": int(facts.fp[p]), "fn": int(facts.fn[p]),
                "ap": None if not np.isfinite(ap) else round(float(ap), 4),
                "errors": {t: int(facts.errors[t][p]) for t in ERROR_TYPES}}


def load_source(path: str, gt_file: str, image_ids: np.ndarray, category_ids: list[int], iou: float) -> dict:
    """Read, validate and match one results file against the dataset's ground truth.

    A top-level function of plain arguments, so that it can run in a child process. Returns the
    columns :class:`Source` keeps (``pair``, dataset ``image`` index and ``label`` per result row,
    ``boxes`` XYXY, rows ``order`` by image and descending score with ``offsets``, ``ds2pair``,
    ``segs`` / ``keypoints`` or ``None``, ``facts`` at ``iou``), or ``{"error": message}`` -- the
    :class:`~sceneparse.errors.SceneparseError`'s text, which names the file, record and field."""
    try:
        results, _ = load_coco_results(path)
        pair = coco_columns(load_coco_gt(gt_file)[0], results, "bbox", gt_source=gt_file, results_source=path)
        # the evaluation's matching tables (evaluation.confusion.padded_rows) take ground-truth rows
        # grouped by image; COCO files need not be (val2017's are not): group them, keeping the file
        # order inside each image (what pycocotools sees per image). Results name objects by id.
        pair.gt = pair.gt.take(np.argsort(pair.gt.image, kind="stable"))
        label_of = {int(c): k for k, c in enumerate(category_ids)}
        lut = np.array([label_of[int(c)] for c in pair.cat_ids.tolist()], dtype=np.int64)
        ds_ids = np.asarray(image_ids, dtype=np.int64)
        srt = np.argsort(ds_ids)
        pos = srt[np.searchsorted(ds_ids[srt], pair.image_ids)]
        ds2pair = np.empty(len(ds_ids), np.int64)
        ds2pair[pos] = np.arange(len(pos))
        dt = pair.dt
        image = pos[dt.image] if len(dt) else np.zeros(0, np.int64)
        boxes = dt.boxes.copy()
        boxes[:, 2:] += boxes[:, :2]
        segs = keypoints = None
        if len(results) == len(dt) and any(isinstance(r, dict) and ("segmentation" in r or "keypoints" in r)
                                           for r in results[:1000]):
            segs = [r.get("segmentation") for r in results]
            keypoints = [r.get("keypoints") for r in results]
        del results
        order, offsets = _grouped(image, len(ds_ids), dt.score)
        return {"pair": pair, "image": image, "label": lut[dt.label] if len(dt) else np.zeros(0, np.int64),
                "boxes": boxes, "order": order, "offsets": offsets, "ds2pair": ds2pair, "segs": segs,
                "keypoints": keypoints, "facts": compute_facts(pair, round(float(iou), 2)), "error": ""}
    except SceneparseError as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 -- shown in the page; the other sources keep being served
        return {"error": f"{path}: internal error while reading (a bug in sceneparse): {type(e).__name__}: {e}\n"
                         + traceback.format_exc(limit=4)}


__all__ = ["Dataset", "PAGE_SIZE", "Source", "load_source"]
