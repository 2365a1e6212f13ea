"""The main job as a new user runs it: ``sceneparse demo`` with no flags (Mask R-CNN) and
``sceneparse demo --model unet``, each end to end (drawing the scenes, training, predicting,
evaluating, writing the report), with the wall time, the iterations trained and the held-out
scores against the targets of issue 23: box AP >= 0.35 and mask AP >= 0.30, mIoU >= 0.60, each
within 8 minutes on an idle 2-core machine.

The demo plans by iterations, so the scores do not depend on the machine's load; the wall time
does: the load average before and after each run is printed beside it (run it alone for the time).

    python benchmarks/bench_demo.py                          # both demos, into runs/bench_demo
    python benchmarks/bench_demo.py --models maskrcnn_resnet18_fpn --out /tmp/bench_demo
    python benchmarks/bench_demo.py --extra "--iterations 3000"   # flags passed to every demo
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

#: model -> [(metric, target)]; and the wall-time target on an idle 2-core machine
TARGETS = {"maskrcnn_resnet18_fpn": [("bbox_AP", 0.35), ("segm_AP", 0.30)], "unet": [("miou", 0.60)]}
MINUTES = 8.0


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def run_demo(model: str, out: Path, extra: list[str], threads: int | None) -> dict:
    """``sceneparse demo --model MODEL --out OUT EXTRA`` in a fresh process; its wall time, load,
    iterations (from the training run's checkpoint) and metrics (``eval/metrics.json``)."""
    cmd = [sys.executable, "-m", "sceneparse", "demo", "--model", model, "--out", str(out), *extra]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"\n=== {' '.join(shlex.quote(c) for c in cmd[1:])}  (load {_load():.1f} on {os.cpu_count()} cpus)",
          flush=True)
    load0, t0, c0 = _load(), time.perf_counter(), os.times()
    proc = subprocess.run(cmd, env=env)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
    row = {"model": model, "rc": proc.returncode, "wall_min": wall / 60, "cpu_min": cpu / 60,
           "load_before": load0, "load_after": _load(), "iterations": None, "metrics": {}}
    if proc.returncode == 0:
        import torch

        row["metrics"] = json.loads((out / "eval" / "metrics.json").read_text())["metrics"]
        ckpt = torch.load(out / "train" / "last.pt", map_location="cpu", weights_only=True)
        row["iterations"] = int(ckpt["iteration"])
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(TARGETS), help="comma-separated demo models")
    p.add_argument("--out", default="runs/bench_demo", help="one demo folder per model goes here")
    p.add_argument("--extra", default="", help="flags added to every demo command, e.g. '--iterations 3000'")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the demo (default: torch's)")
    args = p.parse_args(argv)
    rows = [run_demo(m, Path(args.out) / m, shlex.split(args.extra), args.threads) for m in args.models.split(",") if m]
    print(f"\nsummary (targets: {MINUTES:g} min wall on an idle 2-core machine; the load average is beside it)")
    ok_all = True
    for r in rows:
        checks = []
        for metric, target in TARGETS.get(r["model"], []):
            v = r["metrics"].get(metric)
            ok = v is not None and v >= target
            ok_all &= ok
            checks.append(f"{metric} {v:.3f} (>= {target:g} {'PASS' if ok else 'FAIL'})" if v is not None
                          else f"{metric} n/a FAIL")
        fast = r["wall_min"] <= MINUTES
        print(f"  {r['model']:24s} rc {r['rc']}  {r['wall_min']:5.1f} min wall ({'<=' if fast else '>'} {MINUTES:g}), "
              f"{r['cpu_min']:5.1f} CPU-min, load {r['load_before']:.1f} -> {r['load_after']:.1f}, "
              f"{r['iterations']} iterations  " + "  ".join(checks), flush=True)
        ok_all &= r["rc"] == 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
