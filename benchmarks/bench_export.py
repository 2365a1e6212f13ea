"""Exported graphs: eager PyTorch vs onnxruntime on the CPU, same inputs, same threads.

For each model: build it with random weights (BatchNorm statistics calibrated on two synthetic
scenes; detectors with score threshold 0 and at most 100 detections, so that the RoI heads, mask
pasting and keypoint decoding run on a full set of detections, as a trained model on a busy image
does), export it with
:func:`sceneparse.engine.export.export_onnx` (verified against eager PyTorch at the benchmark size),
then time on the same input, interleaved:

* ``eager``: the exported computation run by PyTorch (:class:`~sceneparse.engine.export.DetectorGraph`
  / :class:`~sceneparse.engine.export.SegmentorGraph` under ``torch.no_grad``): for detectors this is
  ``model.predict`` with mask probabilities instead of thresholded masks; for segmentors
  normalise + pad + network + argmax;
* ``onnxruntime``: ``InferenceSession.run`` (CPU provider, graph optimisations on).

Inputs: detectors one synthetic scene of ``min_size x 4/3 min_size`` (their default ``min_size``:
the graph resizes to it, as predict does), segmentors one ``512 x 512`` scene. Both runtimes get
``--threads`` intra-op threads (default 2). Reported: median and minimum wall time (ms per image)
over ``--repeats`` runs after one warm-up, the process CPU time (all threads), and ``ratio =
onnxruntime / eager`` of the medians and of the minima (< 1: onnxruntime is faster). On a shared,
oversubscribed machine PyTorch's OpenMP threads wait for each other (busy), which inflates eager
wall and CPU time far more than onnxruntime's; ``--threads 1`` is the steadier comparison there.

    nice python benchmarks/bench_export.py
    nice python benchmarks/bench_export.py --models maskrcnn_resnet18_fpn unet --repeats 10
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

DETECTORS = ("fasterrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn", "keypointrcnn_resnet18_fpn",
             "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn")
SEGMENTORS = ("unet", "fcn8s_resnet18", "deeplabv3_resnet18", "deeplabv3plus_resnet18", "lraspp_mobilenet_v3_large",
              "deeplabv3_resnet50")


def _timed(fn) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _calibrate_batchnorm(model, images, detector: bool) -> None:
    """Set BatchNorm running statistics from two images (as a trained model has them). A randomly
    initialised MobileNetV3 with unit running statistics shrinks its activations to ~1e-7, every
    detection gets the same score, and which of the tied boxes NMS keeps is then up to the runtime's
    tie-breaking (the verification rightly fails); calibrated statistics keep the activations alive."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration images
        m.train()
    with torch.no_grad():  # one batch of all images (image-level pooling needs > 1 value per channel)
        if detector:
            batch, _ = model.prepare(images)
            model.backbone(batch.tensor)
        else:
            model.segment(model.preprocessor.normalize(torch.stack(images)))
    model.eval()


def bench_one(name: str, repeats: int, threads: int, seg_size: int, workdir: Path) -> dict:
    import onnxruntime as ort

    from sceneparse.engine.export import export_onnx, graph_module, sample_images
    from sceneparse.models import zoo

    torch.manual_seed(0)
    detector = name in DETECTORS or "rcnn" in name
    if detector:
        kw = {"norm": "bn"} if "mobilenet" in name else {}  # see _calibrate_batchnorm
        model = zoo.build(name, num_classes=1 if "keypoint" in name else 20, box_score_thresh=0.0, **kw).eval()
        s = model.preprocessor.min_sizes[-1]
        size = (s, min(round(s * 4 / 3), model.preprocessor.max_size))
    else:
        model = zoo.build(name, num_classes=20).eval()
        size = (seg_size, seg_size)
    _calibrate_batchnorm(model, sample_images(size, 2, seed=9), detector)
    path = workdir / f"{name}.onnx"
    t0 = time.perf_counter()
    report = export_onnx(model, path, imgsz=size)
    export_s = time.perf_counter() - t0
    image = sample_images(size, 1, seed=5)[0]
    x = image if detector else image[None]

    graph = graph_module(model).eval()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}

    def run_eager():
        with torch.no_grad():
            return graph(x)

    def run_ort():
        return session.run(None, feed)

    n_det = int(run_eager()[0].shape[0]) if detector else None
    run_ort()
    times = {"eager": [], "onnxruntime": []}
    cpu = {"eager": [], "onnxruntime": []}
    for _ in range(repeats):
        for key, fn in (("eager", run_eager), ("onnxruntime", run_ort)):
            w, c = _timed(fn)
            times[key].append(w)
            cpu[key].append(c)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    low = {k: min(v) * 1e3 for k, v in times.items()}
    cpu_med = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    diffs = {k: max(c.max_abs_diff.get(k, 0.0) for c in report.cases) for k in report.cases[0].max_abs_diff}
    return {"model": name, "input": list(x.shape), "detections": n_det, "export_s": export_s,
            "verified": report.verified, "max_diff": diffs, "median_ms": med, "min_ms": low, "cpu_ms": cpu_med,
            "ratio": med["onnxruntime"] / med["eager"], "ratio_min": low["onnxruntime"] / low["eager"],
            "ratio_cpu": cpu_med["onnxruntime"] / cpu_med["eager"]}


def main(argv=None) -> int:
    from sceneparse.errors import ExportError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DETECTORS + SEGMENTORS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seg-size", type=int, default=512)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats: wall ms per image, median "
          "(min); cpu = median process CPU ms (all threads); ratio = onnxruntime / eager")
    print(f"{'model':34s} {'input':>14s} {'dets':>4s} {'eager ms':>16s} {'onnxruntime ms':>16s} {'ratio':>5s} "
          f"{'(min)':>5s} {'eager cpu':>9s} {'ort cpu':>8s} {'export s':>8s}  max |diff|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sceneparse_bench_export_") as tmp:
        for name in args.models:
            try:
                r = bench_one(name, args.repeats, args.threads, args.seg_size, Path(tmp))
            except ExportError as e:
                print(f"{name:34s} export failed: {str(e).splitlines()[0]}", flush=True)
                continue
            rows.append(r)
            med, low, cpu = r["median_ms"], r["min_ms"], r["cpu_ms"]
            dets = "-" if r["detections"] is None else str(r["detections"])
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in r["max_diff"].items())
            print(f"{name:34s} {'x'.join(map(str, r['input'])):>14s} {dets:>4s} "
                  f"{med['eager']:8.1f} ({low['eager']:6.1f}) {med['onnxruntime']:8.1f} ({low['onnxruntime']:6.1f}) "
                  f"{r['ratio']:5.2f} {r['ratio_min']:5.2f} {cpu['eager']:9.1f} {cpu['onnxruntime']:8.1f} "
                  f"{r['export_s']:8.1f}  {diffs}", flush=True)
    if rows:
        for key, what in (("ratio", "medians"), ("ratio_min", "minima"), ("ratio_cpu", "CPU times")):
            print(f"geometric mean of onnxruntime / eager ({what}): "
                  f"{statistics.geometric_mean([r[key] for r in rows]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
