"""Time `harness infer` with the shipped weights on the 300 embedded LR faces (prints figures).

Run: ``.venv/bin/python benchmarks/bench_infer.py [--runs 3] [--tta]``. Each run is a fresh
process (start-up, model load, 300 PNGs written); the median of the runs is reported against
the 5 s target.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tta", action="store_true", help="with flip test-time augmentation")
    args = ap.parse_args()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"sr{i}"
            cmd = [sys.executable, "-m", "harness", "infer", "--lr",
                   str(ROOT / "data/asc19-val/val_LR"), "--out", str(out), "--quiet",
                   "--set", "infer.threads_per_rank=0"]
            cmd += ["--set", f"infer.tta_flip={'true' if args.tta else 'false'}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            assert len(list(out.glob("*.png"))) == 300
    med = statistics.median(times)
    print(f"harness infer, shipped weights{' + flip TTA' if args.tta else ''}, 300 faces: "
          f"median {med:.2f} s of {args.runs} runs ({', '.join(f'{t:.2f}' for t in times)}) "
          f"= {300 / med:.1f} images/s incl. start-up; target <= 5 s: "
          f"{'met' if med <= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
