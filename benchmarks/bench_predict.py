"""Predictor memory over a long run: does the resident set stay flat however many images are read?

Writes ``--images`` small synthetic scenes (``sceneparse.data.synthetic``; ``--unique`` distinct ones,
the rest hard links / copies under other names, so generation stays quick), saves a randomly
initialised small Mask R-CNN checkpoint, and runs ``Predictor.run`` on the folder with a low score
threshold (the random model then returns its cap of detections per image, so ``predictions.json``
holds boxes and RLE-encoded masks for every image; the results are also drawn and saved as JPEGs,
as ``sceneparse predict`` does by default). Every ``--every`` images it samples the resident
set size (``VmRSS`` of ``/proc/<pid>/status``) of this process and of its DataLoader workers, then
prints the table, the slope in MB per 1,000 images after ``--warmup`` images (least squares on the
total), images/s, and PASS / FAIL against "the total grows less than 5 % from ``--warmup`` to the
last sample".

    nice -n 19 python benchmarks/bench_predict.py                      # 10,000 images (long on 2 CPU cores)
    python benchmarks/bench_predict.py --images 2000 --every 250 --warmup 500   # a quick look

Generated files are kept in ``--workdir`` (default: a folder under the system temp dir) and reused.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_kb(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def rss_sample() -> tuple[float, float, int]:
    """(this process MB, all its children MB, number of children)."""
    kids = _children(os.getpid())
    return _rss_kb() / 1024, sum(_rss_kb(k) for k in kids) / 1024, len(kids)


def make_images(folder: Path, n: int, unique: int, size: int, seed: int) -> None:
    """``n`` images named ``000001.jpg``..; image ``i`` shows scene ``(i - 1) % unique``."""
    import cv2
    from tqdm import tqdm

    from sceneparse.data.synthetic import SyntheticConfig, generate_scene, image_rng

    folder.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in folder.iterdir()}
    cfg = SyntheticConfig(height=size, width=size, seed=seed)
    for i in tqdm(range(1, n + 1), desc="images", unit="img"):
        name = f"{i:06d}.jpg"
        if name in have:
            continue
        k = (i - 1) % unique
        if i <= unique:
            scene = generate_scene(image_rng(seed, k), cfg)
            bgr = cv2.cvtColor(np.ascontiguousarray(scene.image), cv2.COLOR_RGB2BGR)
            tmp = folder / f".{name}.tmp.jpg"
            cv2.imwrite(str(tmp), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            os.replace(tmp, folder / name)
        else:
            src = folder / f"{k + 1:06d}.jpg"
            try:
                os.link(src, folder / name)
            except OSError:
                shutil.copyfile(src, folder / name)


def make_checkpoint(path: Path, size: int, detections: int) -> None:
    import torch

    from sceneparse.data.synthetic import synth_category_map
    from sceneparse.engine.checkpoint import save_checkpoint
    from sceneparse.models import zoo

    cats = [c for c in synth_category_map().to_coco() if c.get("isthing", 1)]
    kwargs = dict(min_size=size, max_size=size * 2, box_detections_per_img=detections, mask_conv_channels=[64, 64])
    torch.manual_seed(0)
    model = zoo.build("maskrcnn_resnet18_fpn", num_classes=len(cats), **kwargs)
    save_checkpoint(path, model, config={"model": {"name": "maskrcnn_resnet18_fpn", "kwargs": kwargs}},
                    categories=cats, task="detection")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--unique", type=int, default=500, help="distinct scenes (the rest are copies)")
    ap.add_argument("--size", type=int, default=128, help="image side (px)")
    ap.add_argument("--every", type=int, default=500, help="sample RSS every N images")
    ap.add_argument("--warmup", type=int, default=2000, help="slope and growth are measured from here")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--detections", type=int, default=20, help="detections per image (the model's cap)")
    ap.add_argument("--conf", type=float, default=0.0)
    ap.add_argument("--no-save-images", dest="save_images", action="store_false",
                    help="do not draw the results (by default every image is drawn and saved, as the CLI does)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sceneparse_bench_predict"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from sceneparse import Predictor

    work = Path(args.workdir)
    src = work / f"images_{args.size}"
    t = time.perf_counter()
    make_images(src, args.images, min(args.unique, args.images), args.size, args.seed)
    ckpt = work / f"maskrcnn_{args.size}_{args.detections}.pt"
    if not ckpt.exists():
        make_checkpoint(ckpt, args.size, args.detections)
    print(f"data ready in {time.perf_counter() - t:.1f} s: {src}")
    files = sorted(src.glob("*.jpg"))[: args.images]
    source = files if len(files) < len(list(src.glob("*.jpg"))) else src

    samples: list[tuple[int, float, float, int, float]] = []
    t0 = time.perf_counter()
    main0, kids0, _ = rss_sample()
    print(f"RSS before run: {main0:.1f} MB (+ {kids0:.1f} MB children)")
    count = 0

    def on_result(pred) -> None:
        nonlocal count
        count += 1
        if count % args.every == 0:
            m, c, k = rss_sample()
            samples.append((count, m, c, k, time.perf_counter() - t0))

    pred = Predictor(ckpt, device="cpu", batch_size=args.batch, conf=args.conf, workers=args.workers)
    out = work / "out"
    summary = pred.run(source, out, save_images=args.save_images, on_result=on_result, progress=True, verbose=False)
    wall = time.perf_counter() - t0
    json_mb = (out / "predictions.json").stat().st_size / 2 ** 20

    print()
    print(f"{'images':>8} {'main MB':>9} {'workers MB':>11} {'total MB':>9} {'elapsed s':>10} {'img/s':>7}")
    prev_n, prev_t = 0, 0.0
    for n, m, c, k, el in samples:
        rate = (n - prev_n) / max(el - prev_t, 1e-9)
        print(f"{n:>8} {m:>9.1f} {c:>8.1f} ({k}) {m + c:>9.1f} {el:>10.1f} {rate:>7.2f}")
        prev_n, prev_t = n, el
    after = [(n, m + c) for n, m, c, _, _ in samples if n >= args.warmup]
    print()
    print(f"{summary.predicted} images predicted ({len(summary.failures)} failures), {summary.instances} "
          f"detections, predictions.json {json_mb:.1f} MB, {wall:.0f} s, {summary.predicted / wall:.2f} img/s "
          f"(batch {args.batch}, {args.workers} worker(s), {args.threads} thread(s), {args.size} px, "
          f"save_images={args.save_images})")
    if len(after) < 2:
        print("FAIL: not enough samples after the warm-up to judge")
        return 1
    x = np.array([n for n, _ in after], dtype=np.float64)
    y = np.array([v for _, v in after], dtype=np.float64)
    slope = np.polyfit(x, y, 1)[0] * 1000
    growth = (y[-1] - y[0]) / y[0]
    ok = growth < 0.05
    print(f"slope after {args.warmup} images: {slope:+.2f} MB per 1,000 images")
    print(f"total RSS {y[0]:.1f} MB at {int(x[0])} images -> {y[-1]:.1f} MB at {int(x[-1])} images: "
          f"{100 * growth:+.2f} %")
    print(f"{'PASS' if ok else 'FAIL'}: growth {'<' if ok else '>='} 5 % from {int(x[0])} to {int(x[-1])} images")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
