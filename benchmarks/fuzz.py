"""Fuzz every reader and validator with a large budget (issue 24, section 5).

    python benchmarks/fuzz.py --budget 500              # cases per target, seeds 0..499
    python benchmarks/fuzz.py --budget 200 --only coco_results yolo --seed 1000

Prints, per target, the inputs tried, those read cleanly, those refused with a SceneparseError naming
the file ("handled"), and the findings (any other exception, an error that does not name the file,
or a write outside the output folder), with the first findings in full. The targets and mutations are
those of ``tests/fuzz_harness.py`` (CI runs them with hypothesis, a fixed seed and a small budget).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_harness import fuzz  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, default=300, help="cases per target (default 300)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--only", nargs="*", help="target names (default: all)")
    p.add_argument("--show", type=int, default=5, help="findings to print in full (default 5)")
    args = p.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tallies = fuzz(Path(tmp), args.budget, args.seed, args.only)
    total = [0, 0, 0, 0]
    print(f"{'target':24s} {'tried':>7s} {'ok':>7s} {'handled':>8s} {'findings':>9s}")
    for name, t in tallies.items():
        print(f"{name:24s} {t.tried:7d} {t.ok:7d} {t.handled:8d} {len(t.findings):9d}")
        for i, v in enumerate((t.tried, t.ok, t.handled, len(t.findings))):
            total[i] += v
    print(f"{'all':24s} {total[0]:7d} {total[1]:7d} {total[2]:8d} {total[3]:9d}   ({time.perf_counter() - t0:.0f} s)")
    shown = [f for t in tallies.values() for f in t.findings][: args.show]
    for f in shown:
        print("\n" + f)
    return 1 if total[3] else 0


if __name__ == "__main__":
    raise SystemExit(main())
