"""COCO evaluation speed and memory: sceneparse vs pycocotools vs faster-coco-eval, same files.

Builds a synthetic evaluation set (default 5,000 images, 80 categories, ~7 ground-truth objects
with polygon masks and 100 detections per image, as box results and as compressed-RLE mask
results), then, for each iou type and each tool, runs in a fresh child process:
load ground truth + load results (JSON files) -> evaluate -> accumulate -> summarize, timing each
phase, and reads the child's peak RSS (``resource.getrusage``). The child also reports the RSS
right after its imports, so the evaluation's own footprint is visible. Finally it prints the time
and memory ratios and the largest difference of the 12 summary numbers from pycocotools'.

    python benchmarks/bench_eval.py                    # full size (minutes: pycocotools is slow)
    python benchmarks/bench_eval.py --images 500       # scaled down
    python benchmarks/bench_eval.py --images 500 --types bbox --tools sceneparse,faster-coco-eval

Generated files are cached in ``--workdir`` (default: a folder under the system temp dir) by
size and seed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOOLS = ("sceneparse", "pycocotools", "faster-coco-eval")
TYPES = ("bbox", "segm")


# ----------------------------------------------------------------------------- synthetic set

def _polygons(rng: np.random.Generator, boxes: np.ndarray, vertices: int = 12) -> np.ndarray:
    """``[N, 2 * vertices]`` star-shaped polygons filling most of each XYWH box."""
    n = boxes.shape[0]
    ang = np.sort(rng.uniform(0, 2 * np.pi, (n, vertices)), axis=1)
    rad = rng.uniform(0.7, 1.0, (n, vertices))
    cx = boxes[:, 0:1] + boxes[:, 2:3] / 2
    cy = boxes[:, 1:2] + boxes[:, 3:4] / 2
    px = cx + np.cos(ang) * rad * boxes[:, 2:3] / 2
    py = cy + np.sin(ang) * rad * boxes[:, 3:4] / 2
    return np.stack([px, py], axis=2).reshape(n, 2 * vertices).round(2)


def _polygon_area(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0::2], poly[:, 1::2]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y, axis=1))


def build_dataset(workdir: Path, images: int, cats: int, gt_per_image: float, dets_per_image: int, seed: int) -> dict:
    """Write ``gt.json``, ``bbox.json`` and ``segm.json`` (if not cached); return their paths."""
    from pycocotools import mask as mask_utils

    tag = f"i{images}_c{cats}_g{gt_per_image:g}_d{dets_per_image}_s{seed}"
    folder = workdir / tag
    paths = {"gt": folder / "gt.json", "bbox": folder / "bbox.json", "segm": folder / "segm.json"}
    if all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    cat_ids = np.sort(rng.choice(np.arange(1, 91), cats, replace=False))
    cat_p = 1.0 / np.arange(1, cats + 1) ** 0.8  # a few frequent categories, a long tail (as in COCO)
    cat_p /= cat_p.sum()
    images_json, anns, bbox_res, segm_res = [], [], [], []
    ann_id = 1
    for img_id in range(1, images + 1):
        w, h = int(rng.integers(320, 641)), int(rng.integers(240, 481))
        images_json.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id:06d}.jpg"})
        n_gt = int(rng.poisson(gt_per_image))
        side = np.exp(rng.uniform(np.log(8), np.log(0.8 * min(w, h)), n_gt))  # small / medium / large
        gw, gh = side * rng.uniform(0.6, 1.4, n_gt), side * rng.uniform(0.6, 1.4, n_gt)
        gw, gh = np.minimum(gw, w - 1), np.minimum(gh, h - 1)
        gx, gy = rng.uniform(0, w - gw), rng.uniform(0, h - gh)
        gboxes = np.stack([gx, gy, gw, gh], 1).round(2)
        gcat = rng.choice(cat_ids, n_gt, p=cat_p)
        gpoly = _polygons(rng, gboxes)
        crowd = rng.random(n_gt) < 0.01
        for j in range(n_gt):
            anns.append({"id": ann_id, "image_id": img_id, "category_id": int(gcat[j]), "bbox": gboxes[j].tolist(),
                         "area": float(_polygon_area(gpoly[j:j + 1])[0]), "iscrowd": int(crowd[j]),
                         "segmentation": [gpoly[j].tolist()]})
            ann_id += 1
        # detections: ~3 jittered copies per object (some with another label), the rest background
        copies = rng.integers(1, 5, n_gt)
        src = np.repeat(np.arange(n_gt), copies)
        n_tp = min(src.size, dets_per_image)
        src = src[:n_tp]
        jit = rng.normal(0, 0.08, (n_tp, 4)) * np.repeat(gboxes[src][:, 2:4], 2, axis=1)
        dboxes_tp = gboxes[src] + jit
        dcat_tp = np.where(rng.random(n_tp) < 0.8, gcat[src], rng.choice(cat_ids, n_tp))
        n_bg = dets_per_image - n_tp
        bside = np.exp(rng.uniform(np.log(8), np.log(0.6 * min(w, h)), n_bg))
        bw, bh = bside * rng.uniform(0.6, 1.4, n_bg), bside * rng.uniform(0.6, 1.4, n_bg)
        bboxes = np.stack([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], 1)
        img_cats = np.unique(gcat) if n_gt else cat_ids[:1]
        bcat = np.where(rng.random(n_bg) < 0.5, rng.choice(img_cats, n_bg), rng.choice(cat_ids, n_bg))
        dboxes = np.concatenate([dboxes_tp, bboxes]).round(2)
        dboxes[:, 2:] = np.maximum(dboxes[:, 2:], 1.0)
        dcat = np.concatenate([dcat_tp, bcat])
        scores = np.concatenate([rng.beta(4, 2, n_tp), rng.beta(1.5, 5, n_bg)]).round(4)
        rles = mask_utils.frPyObjects(_polygons(rng, dboxes).tolist(), h, w)
        for j in range(dets_per_image):
            common = {"image_id": img_id, "category_id": int(dcat[j]), "score": float(scores[j])}
            bbox_res.append({**common, "bbox": dboxes[j].tolist()})
            segm_res.append({**common, "segmentation": {"size": [h, w], "counts": rles[j]["counts"].decode()}})
    cats_json = [{"id": int(c), "name": f"category_{int(c)}", "supercategory": "thing"} for c in cat_ids]
    for key, obj in (("gt", {"images": images_json, "annotations": anns, "categories": cats_json}),
                     ("bbox", bbox_res), ("segm", segm_res)):
        tmp = paths[key].with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, paths[key])
    print(f"built {tag} in {time.time() - t0:.1f}s: {len(anns)} objects, {len(bbox_res)} detections", flush=True)
    return paths


# ----------------------------------------------------------------------------- one tool, in a child

def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_child(tool: str, iou_type: str, gt_path: str, res_path: str, out_path: str, profile: str | None) -> None:
    import contextlib
    import io

    if tool == "sceneparse":
        from sceneparse.evaluation.coco import evaluate_tables, load_ground_truth, load_results, make_params
        from sceneparse.evaluation.coco.tables import gc_paused
    elif tool == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO, COCOeval_faster
    base_rss = _current_rss_mb()
    times = {}
    sink = io.StringIO()
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        if tool == "sceneparse":
            # evaluate_coco's steps, timed one by one: the collector paused over all of them (as
            # evaluate_coco does) and the tables freed inside the pause, as when it returns
            with gc_paused():
                gt = load_ground_truth(gt_path, iou_type)
                dt = load_results(res_path, gt, iou_type)
                times["load"] = time.perf_counter() - t
                t = time.perf_counter()
                params = make_params(iou_type, gt_img_ids=gt.img_ids, gt_cat_ids=gt.cat_ids)
                result = evaluate_tables(gt, dt, params)  # evaluate + accumulate + summarize, in one call
                del gt, dt
            times["evaluate+accumulate+summarize"] = time.perf_counter() - t
            stats = result.stats.tolist()
        else:
            if tool == "pycocotools":
                coco_gt = COCO(gt_path)
                coco_dt = coco_gt.loadRes(res_path)
                ev = COCOeval(coco_gt, coco_dt, iou_type)
            else:
                coco_gt = COCO(gt_path)
                coco_dt = coco_gt.loadRes(res_path)
                ev = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *a, **k: None)
            times["load"] = time.perf_counter() - t
            t = time.perf_counter()
            ev.evaluate()
            times["evaluate"] = time.perf_counter() - t
            t = time.perf_counter()
            ev.accumulate()
            times["accumulate"] = time.perf_counter() - t
            t = time.perf_counter()
            ev.summarize()
            times["summarize"] = time.perf_counter() - t
            stats = [float(s) for s in ev.stats]
    if prof is not None:
        import pstats

        prof.disable()
        with open(profile, "w") as f:
            pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(40)
            pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(30)
    out = {"tool": tool, "iou_type": iou_type, "times": times, "total": sum(times.values()), "stats": stats,
           "peak_rss_mb": _rss_mb(), "import_rss_mb": base_rss}
    with open(out_path, "w") as f:
        json.dump(out, f)


# ----------------------------------------------------------------------------- driver

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--cats", type=int, default=80)
    ap.add_argument("--gt-per-image", type=float, default=7.0)
    ap.add_argument("--dets-per-image", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--types", default=",".join(TYPES), help="comma-separated: bbox,segm")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: " + ",".join(TOOLS))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sceneparse_bench_eval"))
    ap.add_argument("--profile", action="store_true", help="write a cProfile report per run next to the data")
    ap.add_argument("--json", help="write all measurements to this JSON file")
    ap.add_argument("--child", nargs=5, metavar=("TOOL", "TYPE", "GT", "RES", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(*args.child, profile=args.child_profile)
        return 0

    tools = [t for t in args.tools.split(",") if t]
    types = [t for t in args.types.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            ap.error(f"unknown tool {t!r}")
    paths = build_dataset(Path(args.workdir), args.images, args.cats, args.gt_per_image, args.dets_per_image, args.seed)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    rows = []
    for iou_type in types:
        for tool in tools:
            out = Path(paths["gt"]).parent / f"result_{tool}_{iou_type}.json"
            cmd = [sys.executable, __file__, "--child", tool, iou_type, str(paths["gt"]), str(paths[iou_type]),
                   str(out)]
            if args.profile:
                cmd += ["--child-profile", str(out.with_suffix(".prof.txt"))]
            wall = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            r = json.loads(out.read_text())
            r["wall_with_imports"] = time.perf_counter() - wall
            rows.append(r)
            phases = ", ".join(f"{k} {v:.2f}s" for k, v in r["times"].items())
            print(f"{iou_type:5s} {tool:17s} total {r['total']:8.2f}s ({phases}); peak RSS {r['peak_rss_mb']:7.0f} MB "
                  f"(after imports {r['import_rss_mb']:.0f} MB)", flush=True)
    print()
    print(f"images {args.images}, categories {args.cats}, ~{args.gt_per_image:g} objects and {args.dets_per_image} "
          "detections per image")
    for iou_type in types:
        by = {r["tool"]: r for r in rows if r["iou_type"] == iou_type}
        if "sceneparse" not in by:
            continue
        me = by["sceneparse"]
        for other in ("pycocotools", "faster-coco-eval"):
            if other in by:
                o = by[other]
                diff = float(np.max(np.abs(np.asarray(me["stats"]) - np.asarray(o["stats"]))))
                mem_me = me["peak_rss_mb"] - me["import_rss_mb"]
                mem_o = o["peak_rss_mb"] - o["import_rss_mb"]
                print(f"{iou_type:5s} vs {other:17s}: {o['total'] / me['total']:6.1f}x faster, peak RSS "
                      f"{me['peak_rss_mb']:.0f} vs {o['peak_rss_mb']:.0f} MB (above imports: {mem_me:.0f} vs "
                      f"{mem_o:.0f} MB), max |stats diff| {diff:.2e}")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
