"""What ``sceneparse demo`` evaluates and shows in its ``index.html``.

``demo_cmd`` runs the job (data, training, prediction); this module scores a detector's results and
writes the report a person reads: headline numbers first, then the held-out images (ground truth
beside the predictions), accuracy (COCO AP as fractions in ``[0, 1]`` everywhere, tables and plots
alike; per class, for the classes the model predicts only; precision / recall / F1 at the drawing
threshold), training (loss per step, learning rate, validation points with their value, the first
augmented batches exactly as the trainer built them), the data (label statistics), the run's files
and the environment it ran in. Extra pictures go to ``<out>/report/``.

Models are read through :func:`sceneparse.models.base.model_info` / the checkpoint's ``info`` only.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: detections drawn, counted in precision / recall / F1 and in the confusion matrix: ``score >= DRAW_CONF``
#: (the predictor's drawing threshold); AP uses every detection the model returns
DRAW_CONF = 0.25
#: score thresholds of the precision / recall / F1 sweep
SWEEP = tuple(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05))
#: below this primary metric the report says the model has barely learned and what to change
POOR = 0.05
#: detections drawn when none reaches DRAW_CONF
TOP_K = 5
#: report-only pictures, under the demo's output folder
REPORT_DIR = "report"
#: pictures are drawn with their shorter side at least this long (labels stay small on small images)
MIN_SIDE = 256
#: COCO summary rows of the metrics table, as (stat suffix, label)
_COCO_ROWS = (("AP", "AP (IoU 0.50:0.95)"), ("AP50", "AP50"), ("AP75", "AP75"), ("APs", "AP small"),
              ("APm", "AP medium"), ("APl", "AP large"), ("AR1", "AR1"), ("AR10", "AR10"), ("AR100", "AR100"),
              ("ARs", "AR small"), ("ARm", "AR medium"), ("ARl", "AR large"))
_KIND_NAMES = {"bbox": "box", "segm": "mask", "keypoints": "keypoints"}


def _value(v: Any) -> float | None:
    """A metric for display: COCO's -1 (no ground truth in that range) and NaN become ``None`` (n/a)."""
    if v is None:
        return None
    v = float(v)
    return None if not np.isfinite(v) or v < 0 else v


# ==== evaluation ====================================================================================
def prf_from_confusion(matrix: np.ndarray, keep: Sequence[int]) -> dict[str, Any]:
    """Precision / recall / F1 of a ``(C+1) x (C+1)`` detection confusion matrix (rows: ground truth,
    columns: prediction, index ``C``: background) per class of ``keep`` and overall (micro: summed
    counts of those classes). A detection of class ``p`` is a true positive on the diagonal and a false
    positive anywhere else in its column; an object of class ``g`` is missed (false negative) unless
    it is on the diagonal. Values are ``None`` where nothing was counted."""
    m = np.asarray(matrix, dtype=np.int64)
    keep = np.asarray(list(keep), dtype=np.int64)
    tp = np.diag(m)[keep]
    fp = m[:, keep].sum(0) - tp
    fn = m[keep, :].sum(1) - tp

    def ratios(tp, fp, fn):
        p = tp / (tp + fp) if tp + fp else None
        r = tp / (tp + fn) if tp + fn else None
        f = None if p is None or r is None else (2 * p * r / (p + r) if p + r > 0 else 0.0)
        return {"precision": p, "recall": r, "F1": f, "TP": int(tp), "FP": int(fp), "FN": int(fn)}

    return {"per_class": [ratios(int(a), int(b), int(c)) for a, b, c in zip(tp, fp, fn)],
            "all": ratios(int(tp.sum()), int(fp.sum()), int(fn.sum()))}


def evaluate_detection(gt_json: Path, results_json: Path, eval_dir: Path, info) -> tuple[dict, dict, list]:
    """COCO AP per result type, PR curves, precision / recall / F1 against the score threshold, the
    confusion matrix and the error breakdown of one results file, for the classes the model predicts
    (``info.class_names``; stuff categories of the data without a model class are left out).

    Returns ``(metrics {kind_stat: value}, tables, figures [(path relative to the demo folder,
    caption)])``; ``tables`` holds ``"per class"`` rows (class, objects, AP per kind, precision, recall,
    F1 at :data:`DRAW_CONF`) and, for the report, ``"classes"``, ``"prf"``, ``"sweep"``, ``"draw_conf"``.
    """
    from ..evaluation import evaluate_coco
    from ..evaluation.confusion import confusion_from_columns
    from ..evaluation.errors import tide_from_columns
    from ..evaluation.validate import coco_columns, load_coco_gt, load_coco_results, results_for
    from ..viz.plots import plot_confusion_matrix, plot_error_breakdown, plot_pr_curves, plot_threshold_sweep

    kinds = list(info.iou_types)
    if "keypoints" in kinds:
        gt_json = gt_json.with_name(gt_json.name.replace("instances_", "person_keypoints_"))
    gt, _ = load_coco_gt(gt_json)
    results, _ = load_coco_results(results_json)
    gt_names = {int(c["id"]): str(c["name"]) for c in gt.get("categories", [])}
    model_names = [str(n) for n in info.class_names]
    classes = [n for n in model_names if n in gt_names.values()] or list(gt_names.values())
    cat_ids = sorted(i for i, n in gt_names.items() if n in classes)
    metrics: dict[str, float] = {}
    per_class: dict[str, dict[str, Any]] = {n: {} for n in classes}
    figures: list[tuple[str, str]] = []
    rel = lambda png: str(Path(png).relative_to(eval_dir.parent))  # noqa: E731
    for kind in kinds:
        res = evaluate_coco(gt, results_for(results, kind), kind, cat_ids=cat_ids)
        for stat, value in zip(res.stat_names, res.stats):
            metrics[f"{kind}_{stat}"] = float(value)
        for cat in res.per_category.values():
            if cat.name in per_class:
                per_class[cat.name][f"{kind}_AP"] = _value(cat["AP"])
                if "AP50" in cat:
                    per_class[cat.name][f"{kind}_AP50"] = _value(cat["AP50"])
        png = plot_pr_curves(res, eval_dir / f"pr_{kind}.png", iou=0.5, classes=classes,
                             title=f"{_KIND_NAMES.get(kind, kind)} AP: precision-recall at IoU 0.5")
        figures.append((rel(png), f"{_KIND_NAMES.get(kind, kind)} precision-recall curves at IoU 0.5, one per "
                                  "class (legend: AP at IoU 0.5)"))
    pair = coco_columns(gt, results, "bbox")
    keep = [k for k, n in enumerate(pair.cat_names) if n in classes]
    # objects per class (non-crowd) in the held-out ground truth
    n_obj = np.bincount(pair.gt.label[~pair.gt.crowd], minlength=len(pair.cat_names))
    sweep = {"thresholds": list(SWEEP), "precision": [], "recall": [], "F1": []}
    for t in SWEEP:
        s = prf_from_confusion(confusion_from_columns(pair, 0.5, t).matrix, keep)["all"]
        for k in ("precision", "recall", "F1"):
            sweep[k].append(s[k] if s[k] is not None else float("nan"))
    cm = confusion_from_columns(pair, 0.5, DRAW_CONF)
    prf = prf_from_confusion(cm.matrix, keep)
    png = plot_threshold_sweep(SWEEP, sweep["precision"], sweep["recall"], sweep["F1"],
                               eval_dir / "threshold_sweep.png", chosen=DRAW_CONF,
                               title="boxes at IoU 0.5: precision / recall / F1 against the score threshold")
    figures.append((rel(png), f"precision, recall and F1 of the boxes (IoU 0.5, all classes) against the score "
                              f"threshold; dashed: the threshold used for the drawings, {DRAW_CONF:g}"))
    png = plot_confusion_matrix(cm, eval_dir / "confusion.png", classes=classes)
    figures.append((rel(png), f"confusion matrix of the boxes (IoU 0.5, score >= {DRAW_CONF:g}); rows: ground "
                              "truth, normalised; last column: missed objects, last row: false alarms"))
    png = plot_error_breakdown(tide_from_columns(pair), eval_dir / "errors.png")
    figures.append((rel(png), "where box AP50 is lost (TIDE-style): AP50 gained by fixing each kind of error"))
    rows = []
    for j, k in enumerate(keep):
        name = pair.cat_names[k]
        row = {"class": name, "objects": int(n_obj[k])}
        row.update({key: per_class[name].get(key) for kind in kinds for key in (f"{kind}_AP", f"{kind}_AP50")})
        row.update({key: prf["per_class"][j][key] for key in ("precision", "recall", "F1")})
        rows.append(row)
    return metrics, {"per class": rows, "classes": classes, "prf": prf["all"], "sweep": sweep,
                     "draw_conf": DRAW_CONF}, figures


# ==== reading back what the run wrote ===============================================================
def results_by_image(results: Sequence[dict], categories, image_sizes: dict[int, tuple[int, int]]) -> dict:
    """COCO results (as the predictor wrote them) of the images in ``image_sizes`` as
    ``{image_id: Instances}``: XYWH boxes back to XYXY, ``category_id`` to labels through
    ``categories`` (a :class:`~sceneparse.conventions.CategoryMap`; unknown ids are skipped), RLE
    masks decoded, keypoint triples ``(x, y, score)`` to keypoints (``v = 2``) and their scores."""
    import torch
    from pycocotools import mask as mask_utils

    from ..structures.instances import Instances

    by_image: dict[int, list[dict]] = {i: [] for i in image_sizes}
    for r in results:
        i = int(r["image_id"])
        if i in by_image and categories.has_id(int(r["category_id"])):
            by_image[i].append(r)
    out = {}
    for i, rs in by_image.items():
        h, w = image_sizes[i]
        if not rs:
            out[i] = Instances.empty((h, w))
            continue
        b = torch.tensor([r["bbox"] for r in rs], dtype=torch.float32).reshape(-1, 4)
        kw: dict[str, Any] = {
            "boxes": torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1),
            "labels": torch.tensor(categories.to_labels([int(r["category_id"]) for r in rs]), dtype=torch.int64),
            "scores": torch.tensor([float(r["score"]) for r in rs], dtype=torch.float32)}
        if all(isinstance(r.get("segmentation"), dict) for r in rs):
            m = mask_utils.decode([r["segmentation"] for r in rs])  # [H, W, N]
            if m.shape[:2] == (h, w):
                kw["masks"] = torch.from_numpy(np.ascontiguousarray(m.transpose(2, 0, 1))).bool()
        if all(r.get("keypoints") for r in rs):
            kp = torch.tensor([r["keypoints"] for r in rs], dtype=torch.float32).reshape(len(rs), -1, 3)
            kw["keypoint_scores"] = kp[..., 2].clone()
            kp[..., 2] = 2.0
            kw["keypoints"] = kp
        out[i] = Instances((h, w), **kw)
    return out


def _training_sets(cfg, info):
    """The run's training and held-out splits and the trainer's augmented view of the training split,
    read the way :class:`~sceneparse.engine.trainer.Trainer` reads them (the same functions), so the
    preview shows the batches training saw."""
    from ..data.datasets import SceneDataset
    from ..engine.trainer import AugmentedSet, read_split

    kind = info.data
    train = read_split(cfg, True, kind, False)
    try:
        val = read_split(cfg, False, kind, False)
    except Exception:  # noqa: BLE001 -- the statistics of the training split are still worth showing
        val = None
    ds = SceneDataset(train, None, load_masks=info.has_masks, load_keypoints=info.num_keypoints > 0,
                      load_semantic=kind == "semantic", load_panoptic=kind == "panoptic")
    aug = AugmentedSet(ds, seed=cfg.train.seed, hflip=cfg.data.hflip, scale_jitter=tuple(cfg.data.scale_jitter),
                        keypoint_set=train.keypoint_set)
    return train, val, aug


# ==== pictures ======================================================================================
def _enlarged(image, *targets):
    """``image`` and ``targets`` (ground truth or results wrapped in a Target) resized together so the
    shorter side is at least :data:`MIN_SIDE`: on a 96 px scene a label would cover a tenth of it."""
    from ..data.transforms import resize

    h, w = image.shape[-2:]
    if min(h, w) >= MIN_SIDE:
        return (image, *targets)
    k = MIN_SIDE / min(h, w)
    size = (round(h * k), round(w * k))
    out = [resize(image, t, size) for t in targets]
    return (out[0][0] if out else resize(image, _empty_target(image), size)[0], *[t for _, t in out])


def _empty_target(image):
    from ..structures.instances import Instances
    from ..structures.target import Target

    return Target(0, Instances.empty(tuple(image.shape[-2:])))


def _as_target(instances):
    from ..structures.target import Target

    return Target(0, instances)


def _draw_target(image, target, names: Sequence[str], kind: str):
    from ..viz.draw import draw_instances, draw_semantic

    if kind == "semantic" and target.semantic is not None:
        return draw_semantic(image, target.semantic, names, show_names=False)
    crowd = target.iscrowd.tolist() if target.iscrowd is not None else [False] * len(target.instances)
    return draw_instances(image, target.instances, names, tags=["crowd" if c else "" for c in crowd])


def batch_preview(aug, cfg, names: Sequence[str], kind: str, folder: Path, batches: int = 2
                  ) -> list[tuple[Path, str]]:
    """The first ``batches`` training batches of epoch 1, augmented exactly as the trainer did
    (the same sample keys and seeds), drawn with their ground truth: one PNG per batch."""
    from ..engine.data_order import epoch_batches
    from ..viz.draw import save_image, tile

    out = []
    keys = epoch_batches(len(aug), cfg.data.batch_size, seed=cfg.train.seed, epoch=0, stop=batches)
    for b, batch in enumerate(keys):
        drawn, titles = [], []
        for key in batch:
            image, target = aug[key]
            image, target = _enlarged(image, target)
            drawn.append(_draw_target(image, target, names, kind))
            titles.append(Path(target.file_name).name)
        png = save_image(folder / f"train_batch{b}.png", tile(drawn, titles, columns=min(4, len(drawn))))
        out.append((png, f"training batch {b + 1} of epoch 1 ({len(batch)} images)"))
    return out


def label_statistics(train, val, names: Sequence[str], kind: str, folder: Path):
    """``(figure path or None, table rows)`` describing the labels of the training / held-out splits:
    objects per class, object sizes (sqrt of the box area) and objects per image for instance data;
    for label maps, each class's share of the labelled pixels and the images it appears in."""
    from ..viz.plots import plot_label_stats

    splits = {"train": train, **({"val": val} if val is not None else {})}
    c = len(names)
    if kind == "semantic":
        from ..data.stats import class_pixel_counts
        from ..evaluation.semantic import read_label_png

        rows = {n: {"class": n} for n in names}
        for sp, aset in splits.items():
            maps = [read_label_png(Path(aset.semantic_root) / f"{Path(im.file_name).stem}.png") for im in aset.images]
            pixels, _ = class_pixel_counts(maps, c)
            present = np.zeros(c, np.int64)
            for m in maps:
                u = np.unique(m)
                present[u[u < c]] += 1
            total = max(1, int(pixels.sum()))
            for k, n in enumerate(names):
                rows[n][f"{sp} pixel share"] = float(pixels[k] / total)
                rows[n][f"{sp} images"] = int(present[k])
        return None, list(rows.values())
    counts, sizes, per_image = {}, {}, {}
    rows = {n: {"class": n} for n in names}
    for sp, aset in splits.items():
        anns = [a for a in aset.annotations if not a.iscrowd]
        lab = np.array([a.label for a in anns], dtype=np.int64)
        box = np.array([a.bbox for a in anns], dtype=np.float64).reshape(-1, 4)
        sz = np.sqrt(np.clip(box[:, 2] - box[:, 0], 0, None) * np.clip(box[:, 3] - box[:, 1], 0, None))
        counts[sp] = np.bincount(lab[lab < c], minlength=c)
        sizes[sp] = sz
        ids = {im.id: 0 for im in aset.images}
        for a in anns:
            if a.image_id in ids:
                ids[a.image_id] += 1
        per_image[sp] = np.array(list(ids.values()), dtype=np.int64)
        for k, n in enumerate(names):
            rows[n][f"{sp} objects"] = int(counts[sp][k])
            s = sz[lab == k]
            rows[n][f"{sp} median size (px)"] = float(np.median(s)) if len(s) else None
    png = plot_label_stats(names, counts, sizes, folder / "label_stats.png", per_image=per_image)
    return png, list(rows.values())


def detection_gallery(out: Path, results_json: Path, folder: Path, show: int, conf: float = DRAW_CONF,
                      top_k: int = TOP_K):
    """Ground truth beside the predictions (``score >= conf``; when none reaches it, the ``top_k`` best,
    as boxes: the masks of low-score detections hide the image) for the first ``show`` held-out
    images. Returns ``(paths, captions, counts, highest score over the shown images or None)``;
    ``counts``: images with a detection at ``conf`` (``"passed"``), drawn with the fallback
    (``"fell_back"``), without any detection (``"empty"``)."""
    from ..data.datasets import SceneDataset
    from ..data.layout import load_split
    from ..viz.draw import detections_to_draw, draw_instances, save_image, tile

    aset = load_split(out / "data", "val", "instances", things_only=True)
    aset.images = sorted(aset.images, key=lambda im: im.file_name)[:show]
    ds = SceneDataset(aset, None, load_masks=True, load_keypoints=True)
    results = json.loads(Path(results_json).read_text()) if Path(results_json).is_file() else []
    preds = results_by_image(results, aset.categories, {im.id: (im.height, im.width) for im in aset.images})
    draw_names = list(aset.categories.names)
    paths, captions, counts, top = [], [], {"passed": 0, "fell_back": 0, "empty": 0}, None
    for i, rec in enumerate(aset.images):
        image, target = ds[i]
        pred = preds[rec.id]
        shown, what, fb = detections_to_draw(pred, conf, top_k)
        counts["fell_back" if fb else "passed" if len(pred) else "empty"] += 1
        if len(pred):
            top = max(top or 0.0, float(pred.scores.max()))
        image, target, shown_t = _enlarged(image, target, _as_target(shown))
        gt_img = _draw_target(image, target, draw_names, "instances")
        pr_img = draw_instances(image, shown_t.instances, draw_names, show_masks=not fb)
        if fb:
            what += " (boxes only)"
        n_gt = int((~target.iscrowd).sum()) if target.iscrowd is not None else len(target.instances)
        head = (f"predicted: top {len(shown)}, all < {conf:g}" if fb else
                f"predicted, score >= {conf:g} ({len(shown)})" if len(pred) else "predicted: nothing")
        png = save_image(folder / "gallery" / f"{Path(rec.file_name).stem}.png",
                         tile([gt_img, pr_img], [f"ground truth ({n_gt})", head]))
        paths.append(png)
        captions.append(f"{Path(rec.file_name).name}: {n_gt} object(s); {what}")
    return paths, captions, counts, top


def semantic_gallery(out: Path, names: Sequence[str], folder: Path, show: int):
    """Ground-truth label map beside the predicted one for the first ``show`` held-out images."""
    from ..data.images import read_image
    from ..evaluation.semantic import read_label_png
    from ..structures.segmaps import SemanticMap
    from ..viz.draw import draw_semantic, save_image, tile

    import torch

    paths, captions = [], []
    for lab in sorted((out / "predict" / "labels").glob("*.png"))[:show]:
        gt_png = out / "data" / "semantic" / "val" / lab.name
        imgs = [p for p in (out / "data" / "images" / "val").glob(lab.stem + ".*")]
        if not gt_png.is_file() or not imgs:
            continue
        image = read_image(imgs[0])
        gt = SemanticMap(torch.from_numpy(read_label_png(gt_png)))
        pr = SemanticMap(torch.from_numpy(read_label_png(lab)))
        acc = float((gt.labels == pr.labels)[gt.labels != 255].float().mean()) if (gt.labels != 255).any() else None
        blank = _empty_target(image)
        image, gt_t, pr_t = _enlarged(image, replace(blank, semantic=gt), replace(blank, semantic=pr))
        gt, pr = gt_t.semantic, pr_t.semantic
        png = save_image(folder / "gallery" / lab.name,
                         tile([draw_semantic(image, gt, names), draw_semantic(image, pr, names)],
                              ["ground truth", "predicted"]))
        paths.append(png)
        captions.append(f"{imgs[0].name}" + (f": pixel accuracy {acc:.3f}" if acc is not None else ""))
    return paths, captions


def training_curves(iteration_log: Sequence[dict], history: Sequence[dict], metric_names: Sequence[str],
                    path: Path) -> tuple[Path | None, str]:
    """Losses (per step when the run logged every step), learning rate and the held-out metrics
    (fractions) against the iteration, in one PNG; a series of one point is a labelled marker.
    Returns ``(path or None, caption)``."""
    from ..viz.plots import plot_curves

    series: dict[str, tuple[list, list]] = {}
    loss_names: list[str] = []
    for e in iteration_log:
        for k, v in (e.get("losses") or {}).items():
            if k not in series:
                series[k] = ([], [])
                loss_names.append(k)
            series[k][0].append(e["iteration"])
            series[k][1].append(v)
        if e.get("lr") is not None:
            series.setdefault("lr", ([], []))
            series["lr"][0].append(e["iteration"])
            series["lr"][1].append(e["lr"])
    shown_metrics = []
    for r in history:
        for k in metric_names:
            v = _value((r.get("metrics") or {}).get(k))
            if v is not None:
                series.setdefault(k, ([], []))
                series[k][0].append(r["iterations"])
                series[k][1].append(v)
                if k not in shown_metrics:
                    shown_metrics.append(k)
    steps = [e["iteration"] for e in iteration_log]
    every = int(np.median(np.diff(steps))) if len(steps) > 1 else None
    loss_title = "training loss" + (" (every step)" if every == 1 else f" (mean of {every} steps)" if every else "")
    parts = [k for k in loss_names if k != "loss"]
    if len(parts) == 1 and "loss" in series:  # the total is that one term: one curve, not two on top of each other
        parts = []
    panels = {loss_title: ["loss"] + parts, "learning rate": ["lr"],
              "held-out metrics": shown_metrics}
    if not any(k in series for names in panels.values() for k in names):
        return None, ""
    n = len(steps)
    smooth = max(1, n // 25) if n >= 75 else 1
    png = plot_curves({k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items()}, path,
                      panels=panels, smooth=smooth, xlabel="iteration")
    what = (f"{n} logged point(s)" + (f", smoothed over {smooth}" if smooth > 1 else "")
            + ("; held-out metrics after " + ", ".join(str(x) for x in series[shown_metrics[0]][0]) + " iteration(s)"
               if shown_metrics else "; no held-out evaluation during training"))
    return png, f"training losses, learning rate and held-out metrics ({what})"


# ==== environment ===================================================================================
def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device_spec: str, threads: int | None = None) -> dict[str, Any]:
    """Versions, threads, device and machine load, as ``{what: value}`` strings for the report."""
    import torch

    from .. import __version__
    from ..engine.trainer import available_memory, resolve_device

    try:
        dev = resolve_device(device_spec)
        device = str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f" ({_cpu_name()})")
    except Exception as e:  # noqa: BLE001 -- the report still says what was asked for
        device = f"{device_spec} ({e})"
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    env: dict[str, Any] = {
        "sceneparse": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": _version("torchvision"), "numpy": np.__version__, "pycocotools": _version("pycocotools"),
        "pillow": _version("pillow"), "matplotlib": _version("matplotlib"),
        "platform": platform.platform(), "device": device,
        "CPU cores (usable / all)": f"{usable} / {cores}",
        "torch threads (intra-op / inter-op)": f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}"
                                               + (f" (train.threads={threads})" if threads else ""),
    }
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    if hasattr(os, "getloadavg"):
        one, five, fifteen = os.getloadavg()
        env["machine load (1 / 5 / 15 min, at the end)"] = (f"{one:.2f} / {five:.2f} / {fifteen:.2f} on {usable} "
                                                           f"core(s)" + (" (busy: other work shared the CPU)"
                                                                         if five > usable else ""))
    mem = available_memory()
    if mem is not None:
        env["memory available"] = f"{mem / 2 ** 30:.1f} GiB"
    if torch.cuda.is_available():
        env["CUDA"] = f"{torch.version.cuda}, {torch.cuda.device_count()} device(s)"
    return env


# ==== the report ====================================================================================
def _rel(path: Path, out: Path) -> str:
    return os.path.relpath(path, out)


def _command(args) -> str:
    skip = {"func", "command", "mode", "quiet"}
    parts = ["sceneparse demo"]
    for k, v in vars(args).items():
        if k in skip or k.startswith("_") or v is None or v is False or callable(v):
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"{flag} {v:g}" if isinstance(v, float) else f"{flag} {v}")
    return " ".join(parts)


def _metric_name(key: str) -> str:
    """``segm_AP`` -> ``mask AP``, ``miou`` -> ``mIoU``: the names the page uses."""
    kind, _, stat = key.partition("_")
    if kind in _KIND_NAMES and stat:
        return f"{_KIND_NAMES[kind]} {stat}"
    return {"miou": "mIoU", "pixel_acc": "pixel accuracy", "mean_acc": "mean class accuracy",
            "fwiou": "frequency-weighted IoU", "pq": "PQ"}.get(key, key)


def _metric_matrix(metrics: dict, kinds: Sequence[str]) -> list[dict]:
    rows = []
    for stat, label in _COCO_ROWS:
        if not any(f"{k}_{stat}" in metrics for k in kinds):
            continue
        rows.append({"metric": label, **{_KIND_NAMES.get(k, k): _value(metrics.get(f"{k}_{stat}")) for k in kinds}})
    return rows


@dataclass
class _Run:
    """What the report sections read: the demo's folder and flags, the training result, the model's
    info (from the checkpoint), the run's config and the evaluation."""

    out: Path
    folder: Path
    args: Any
    task: str
    result: Any
    info: Any
    cfg: Any
    ckpt: dict
    names: list[str]
    metrics: dict
    tables: dict

    @property
    def detection(self) -> bool:
        return self.task == "detection"

    @property
    def kinds(self) -> list[str]:
        return list(self.info.iou_types) if self.info is not None else ["bbox"]

    @property
    def conf(self) -> float:
        return float(self.tables.get("draw_conf", DRAW_CONF))

    def rel(self, path: Path) -> str:
        return _rel(path, self.out)


def write_report(out: Path, args, task: str, result, summary, metrics: dict, tables: dict, figures: list,
                 timings: dict) -> Path:
    """Write ``out/index.html`` (and ``out/report/``) for a finished demo run; returns the HTML path."""
    from ..config import config_from_dict, load_config
    from ..engine.checkpoint import load_checkpoint
    from ..models.base import ModelInfo
    from ..viz.report import Report

    out = Path(out)
    folder = out / REPORT_DIR
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    run_dir = Path(result.out)
    ckpt = load_checkpoint(result.last)
    info = ModelInfo.from_dict(ckpt["info"]) if ckpt.get("info") else None
    names = [str(n) for n in (tables.get("classes") or ckpt.get("class_names") or [])]
    if not names:
        names = [r["class"] for r in tables.get("per class", [])]
    cfg = (config_from_dict(ckpt["config"]) if isinstance(ckpt.get("config"), dict)
           else load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None)
    run = _Run(out, folder, args, task, result, info, cfg, ckpt, names, metrics, tables)

    r = Report(f"sceneparse demo: {args.model}")
    _headline(r, run)
    _predictions(r, run)
    _accuracy(r, run, figures)
    _training(r, run)
    _files(r, run, run_dir, summary, timings)
    return r.write(out)


def _headline(r, run: _Run) -> None:
    args, result, metrics, info = run.args, run.result, run.metrics, run.info
    what = (f"then asked to find the objects of {args.val_images} held-out images it never saw" if run.detection
            else f"then asked to label every pixel of {args.val_images} held-out images it never saw")
    r.text(f"{args.model} ({info.task if info else run.task}) trained on {args.images - args.val_images} synthetic "
           f"{args.size}x{args.size} images for {result.iterations} iterations ({result.epochs} epoch(s), "
           f"{result.seconds / 60:.1f} min), {what}. All AP, IoU, accuracy, precision and recall values are "
           "fractions in [0, 1].")
    r.code(_command(args))
    init = getattr(args, "_init", None)
    if init:
        held = ", ".join(f"{_metric_name(k)} {v:.3f}" for k, v in (init.get("held_out") or {}).items())
        r.text(f"It did not start from random weights: it started from {init.get('file')}, weights that sceneparse "
               f"trained itself ({init.get('iterations')} iterations, {float(init.get('train_seconds') or 0) / 60:.0f} "
               f"min on {init.get('machine', 'a CPU')}) on synthetic scenes of data seed {init.get('data_seed')}, "
               f"which this run never draws (held-out there: {held}), and fine-tuned them on this run's scenes. "
               "Pass --scratch to train from random weights. How they were made:")
        r.code("\n".join(init.get("commands") or []))
    elif hasattr(args, "scratch") and args.scratch:
        r.text("It started from random weights (--scratch).")
    cards: dict[str, Any] = {}
    if run.detection:
        for k in reversed(run.kinds):
            cards[f"{_KIND_NAMES.get(k, k)} AP"] = _value(metrics.get(f"{k}_AP"))
        cards["box AP50"] = _value(metrics.get("bbox_AP50"))
        prf = run.tables.get("prf") or {}
        for k in ("precision", "recall", "F1"):
            cards[f"{k} @ score {run.conf:g}"] = prf.get(k)
    else:
        for k in ("miou", "pixel_acc", "mean_acc"):
            if k in metrics:
                cards[_metric_name(k)] = _value(metrics[k])
    cards["iterations"] = str(result.iterations)
    cards["training (min)"] = f"{result.seconds / 60:.1f}"
    r.cards(cards)
    primary = info.primary_metric if info is not None else ("segm_AP" if run.detection else "miou")
    value = _value(metrics.get(primary))
    if value is not None and value < POOR:
        flag = next((f"--{f.replace('_', '-')}" for f in ("iters", "iterations", "minutes") if hasattr(args, f)), None)
        r.note(f"The model has barely learned yet: {_metric_name(primary)} {value:.3f} (below {POOR:g}) after "
               f"{result.iterations} iterations. Train for more iterations" + (f" ({flag})" if flag else "")
               + ", or with more images (--images); a loss curve still falling steeply (below) says the same.",
               kind="bad")


def _predictions(r, run: _Run) -> None:
    r.heading("held-out images: ground truth and predictions", anchor="predictions")
    show, conf = int(getattr(run.args, "show", 12)), run.conf
    if not run.detection:
        paths, captions = semantic_gallery(run.out, run.names, run.folder, show)
        r.text("Left: the annotated label map; right: the predicted one. Colours are classes.")
        r.gallery([run.rel(p) for p in paths], None, captions, columns=2)
        return
    paths, captions, counts, top = detection_gallery(run.out, run.out / "predict" / "predictions.json", run.folder,
                                                     show, conf)
    r.text(f"Left: the annotated objects; right: the model's detections with score >= {conf:g} (the drawing "
           "threshold; AP uses every detection). Colours are classes.")
    cutoff = f" above the model's own score cutoff {run.info.conf:g}" if run.info is not None else ""
    empty = f" {counts['empty']} of them had no detection at all{cutoff}." if counts["empty"] else ""
    if paths and top is None:
        r.note(f"The model made no detection at all{cutoff} in these {len(paths)} images.", kind="warn")
    elif paths and not counts["passed"]:
        r.note(f"No detection reached the drawing threshold {conf:g} in these {len(paths)} images: the highest "
               f"score is {top:.3f}. Drawn instead: the top {TOP_K} detections of each image, whatever their "
               f"score, as boxes.{empty}", kind="warn")
    elif counts["fell_back"] or counts["empty"]:
        r.note(f"In {counts['fell_back'] + counts['empty']} of {len(paths)} images no detection reached {conf:g}; "
               f"those show their top {TOP_K} detections as boxes (the caption gives the highest score).{empty}",
               kind="warn")
    r.gallery([run.rel(p) for p in paths], None, captions, columns=2)


def _accuracy(r, run: _Run, figures: list) -> None:
    r.heading("accuracy on the held-out images", anchor="accuracy")
    metrics, tables, kinds, conf = run.metrics, run.tables, run.kinds, run.conf
    if not run.detection:
        r.table("metrics", {_metric_name(k): _value(v) for k, v in metrics.items()})
        rows = [{k: (_value(v) if isinstance(v, float) else v) for k, v in row.items()}
                for row in tables.get("per class", [])]
        r.table("per class", rows, footnote="IoU and pixel accuracy per class; n/a: the class is in neither the "
                                            "held-out labels nor the predictions.")
        r.figures([(f[0], f[1]) for f in figures], columns=2)
        return
    r.table("COCO metrics", _metric_matrix(metrics, kinds),
            footnote="n/a: no ground-truth object in that size range (COCO small < 32x32 px <= medium < 96x96 px "
                     "<= large).")
    prf = tables.get("prf") or {}
    per_class = tables.get("per class", [])
    aps = [key for k in kinds for key in (f"{k}_AP", f"{k}_AP50")]
    rows = [{"class": row["class"], "objects": row.get("objects"), **{_metric_name(key): row.get(key) for key in aps},
             "precision": row.get("precision"), "recall": row.get("recall"), "F1": row.get("F1")} for row in per_class]
    if prf:
        rows.append({"class": "all classes", "objects": sum(int(x.get("objects") or 0) for x in per_class),
                     **{_metric_name(key): _value(metrics.get(key)) for key in aps},
                     "precision": prf.get("precision"), "recall": prf.get("recall"), "F1": prf.get("F1")})
    r.table(f"per class (the {len(run.names)} classes the model predicts)", rows,
            footnote=f"objects: held-out objects of the class. AP: COCO AP over IoU 0.50:0.95; AP50: at IoU 0.5 (as "
                     "in the precision-recall legends). Precision, recall and F1 count boxes at IoU >= 0.5 with "
                     f"score >= {conf:g}: a detection is right when it overlaps an object of its class; n/a where "
                     "nothing was counted."
                     + (f" TP {prf['TP']}, FP {prf['FP']}, FN {prf['FN']} over all classes." if prf else ""))
    sweep = tables.get("sweep")
    f1 = np.asarray(sweep["F1"] if sweep else [], dtype=np.float64)
    if np.isfinite(f1).any():
        b = int(np.nanargmax(f1))
        at = f"{prf['F1']:.3f}" if prf.get("F1") is not None else "n/a"
        r.text(f"The best F1 over score thresholds is {f1[b]:.3f} at {sweep['thresholds'][b]:g} (at the drawing "
               f"threshold {conf:g}: {at}).")
    r.figures([(f[0], f[1]) for f in figures], columns=2)


def _training(r, run: _Run) -> None:
    r.heading("training", anchor="training")
    info, cfg = run.info, run.cfg
    metric_names = list(info.metrics if info else ()) + (["bbox_AP50"] if run.detection else [])
    png, caption = training_curves(run.ckpt.get("iteration_log") or [], run.ckpt.get("history") or run.result.history,
                                   metric_names, run.folder / "curves.png")
    if png is not None:
        r.figure(run.rel(png), caption)
    if cfg is None or info is None:
        return
    try:
        train, val, aug = _training_sets(cfg, info)
    except Exception as e:  # noqa: BLE001 -- the run is done; the page says what it could not show
        r.note(f"The training data could not be read back for the batch preview and the label statistics: {e}",
               kind="warn")
        return
    names = list(train.categories.names)
    r.heading("augmented training batches", level=3)
    r.text(f"The first batches of epoch 1 as the trainer built them (batch {cfg.data.batch_size}; horizontal flip "
           f"with p = {cfg.data.hflip:g}, scale jitter {tuple(cfg.data.scale_jitter)}), drawn with the ground "
           "truth the losses were computed on.")
    for p, c in batch_preview(aug, cfg, names, info.data, run.folder):
        r.figure(run.rel(p), c)

    r.heading("the data", anchor="data")
    png, rows = label_statistics(train, val, names, info.data, run.folder)
    sizes = ", ".join(f"{sp} {len(a.images)} images" for sp, a in (("train", train), ("val", val)) if a is not None)
    r.text(f"Synthetic scenes drawn by sceneparse (seed {run.args.seed}): {sizes}.")
    if png is not None:
        r.figure(run.rel(png), "label statistics: objects per class, object sizes (sqrt of the box area; dashed: "
                               "COCO's small / medium / large boundaries) and objects per image")
    semantic = info.data == "semantic"
    r.table("labels per class", rows, digits=3 if semantic else 1,
            footnote="pixel share: fraction of the labelled pixels of the split." if semantic else
            "median size: median sqrt(box area) in pixels.")


def _files(r, run: _Run, run_dir: Path, summary, timings: dict) -> None:
    out = run.out
    r.heading("files", anchor="files")
    wanted = [(run_dir / "best.pt", "best checkpoint (weights, config, classes, model info)"),
              (run_dir / "last.pt", "last checkpoint (also resumes training)"),
              (run_dir / "config.yaml", "the training configuration"),
              (run_dir / "results.csv", "one row per epoch: losses, learning rate, held-out metrics, seconds"),
              (out / "predict" / "predictions.json", "predictions on the held-out images (COCO results JSON)"),
              (out / "eval" / "metrics.json", "the metrics of this page as JSON"),
              (out / "data" / "annotations" / "instances_val.json", "held-out ground truth (COCO)")]
    r.links([(run.rel(p), d) for p, d in wanted if p.is_file()])
    if summary is not None and getattr(summary, "failures", None):
        r.table("images that could not be used", [f.to_dict() for f in summary.failures])
    r.heading("environment", anchor="environment")
    threads = getattr(getattr(run.cfg, "train", None), "threads", None)
    r.table(None, environment(getattr(run.args, "device", "auto"), threads), header=None)
    r.table("wall time (s)", {k: round(v, 1) for k, v in timings.items()}, digits=1, header=("step", "seconds"))
