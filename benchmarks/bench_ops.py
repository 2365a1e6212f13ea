"""Box ops against torchvision: ``batched_nms`` time for 1k, 10k and 90k boxes.

For each size and box layout, sceneparse's :func:`~sceneparse.ops.nms.batched_nms` and
``torchvision.ops.batched_nms`` run on the same boxes, scores and group indices (interleaved,
alternating who goes first); the table gives the minimum wall time over ``--repeats`` runs, the
ratio ``sceneparse / torchvision`` (<= 1: not slower) and whether both returned the same indices.

Layouts (``/G``: number of groups):

* ``clustered/80``: boxes around 200 objects in an 800 x 800 image, 80 classes -- the R-CNN box
  post-processing (1000 proposals x 90 classes is ~90k boxes when no score threshold is applied);
* ``sparse/1``: small boxes (8..60 px) spread over a large image, 700 px^2 of it per box (90k boxes:
  7900 x 7900 px; sliced inference on aerial images), one class: most boxes survive, the costly case
  for greedy NMS;
* ``dense/5``: boxes of 4..104 px spread over an 800 x 800 image, 5 groups (an RPN's pyramid levels):
  at 90k boxes every pixel is under ~350 boxes, most of which survive.

    python benchmarks/bench_ops.py                     # 1 thread, 3 repeats (1 for the slow torchvision cases)
    python benchmarks/bench_ops.py --sizes 1000 10000 --repeats 5
"""
from __future__ import annotations

import argparse
import time

import torch

LAYOUTS = ("clustered/80", "sparse/1", "dense/5")


def make_boxes(layout: str, n: int, seed: int = 0, size: float = 800.0):
    """``(boxes float32 [n, 4] XYXY, scores float32 [n], groups int64 [n])`` for a layout name."""
    g = torch.Generator().manual_seed(seed)
    kind, groups = layout.split("/")
    if kind == "clustered":
        centres = torch.rand(200, 2, generator=g) * size
        sizes = torch.rand(200, 2, generator=g) * 150 + 20
        pick = torch.randint(0, 200, (n,), generator=g)
        c = centres[pick] + torch.randn(n, 2, generator=g) * sizes[pick] * 0.15
        wh = sizes[pick] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.2)
    elif kind == "sparse":
        c = torch.rand(n, 2, generator=g) * (700.0 * n) ** 0.5  # 700 px^2 of image per box
        wh = torch.rand(n, 2, generator=g) * 52 + 8
    elif kind == "dense":
        c = torch.rand(n, 2, generator=g) * size
        wh = torch.rand(n, 2, generator=g) * 100 + 4
    else:
        raise ValueError(f"unknown layout {layout!r}")
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, int(groups), (n,), generator=g)


def _best(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_batched_nms(sizes, layouts, repeats: int, iou_threshold: float = 0.5,
                      slow_seconds: float = 2.0) -> list[dict]:
    """One row per (layout, size). A side that took more than ``slow_seconds`` is not repeated."""
    import torchvision

    from sceneparse.ops import batched_nms

    rows = []
    for layout in layouts:
        for n in sizes:
            boxes, scores, groups = make_boxes(layout, n)
            ours = lambda: batched_nms(boxes, scores, groups, iou_threshold)  # noqa: E731
            tv = lambda: torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)  # noqa: E731
            t_ours, k_ours = _best(ours, 1)  # also the warm-up
            t_tv, k_tv = _best(tv, 1)
            for r in range(repeats - 1):  # interleaved, alternating who goes first
                for side in ((0, 1) if r % 2 else (1, 0)):
                    if side == 0 and t_ours < slow_seconds:
                        t_ours = min(t_ours, _best(ours, 1)[0])
                    elif side == 1 and t_tv < slow_seconds:
                        t_tv = min(t_tv, _best(tv, 1)[0])
            row = dict(op="batched_nms", layout=layout, boxes=n, kept=len(k_ours), sceneparse_ms=1e3 * t_ours,
                       torchvision_ms=1e3 * t_tv, ratio=t_ours / t_tv, same=bool(torch.equal(k_ours, k_tv)))
            rows.append(row)
            print(f"batched_nms {layout:13s} {n:6d} boxes ({row['kept']:6d} kept): sceneparse "
                  f"{row['sceneparse_ms']:9.1f} ms  torchvision {row['torchvision_ms']:9.1f} ms  ratio "
                  f"{row['ratio']:6.3f}  same indices: {row['same']}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 90000])
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iou", type=float, default=0.5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), IoU threshold {args.iou}")
    rows = bench_batched_nms(args.sizes, args.layouts, args.repeats, args.iou)
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
