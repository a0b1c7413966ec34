"""Training and inference throughput of the harness on this machine (prints figures).

- training images/s for ``-np 1`` and ``-np 2`` (one thread per rank, weak scaling: the per-rank
  batch is fixed), and the scaling efficiency ``ips(2) / (2 * ips(1))``;
- inference images/s of ``harness infer`` on the 300 embedded LR faces;
- an oversubscribed ``-np 16`` smoke run of a tiny model, to show the 16-rank path works.

Run: ``.venv/bin/python benchmarks/bench_train.py [--steps 12] [--identity]``. Figures are
medians over the logged steps after the first two (warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.commands.machine_checks import find_mpirun  # noqa: E402
from tests.conftest import mpi_env  # noqa: E402

JOB = str(ROOT / "jobs" / "demo.yaml")


def _train(mpirun: str, n: int, steps: int, per_rank: int, identity: bool, out: Path,
           job: str = JOB, extra: list[str] | None = None) -> dict:
    sets = [f"train.steps={steps}", f"train.batch_size={per_rank * n}", "train.val_every=0",
            "train.ckpt_every=0", "train.log_every=1", "train.threads_per_rank=1",
            "power.enabled=false", "eval.metrics=[psnr]", f"loss.identity={1.0 if identity else 0}"]
    sets += extra or []
    cmd = [mpirun, "-np", str(n), "--bind-to", "none", sys.executable, "-m", "harness.train",
           "--job", job, "--quiet", "--run-dir", str(out)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=mpi_env(), cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"-np {n} failed:\n{proc.stderr[-3000:]}")
    run = sorted(p for p in out.iterdir() if p.is_dir())[-1]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["step_time_s"] for r in rows if r["kind"] == "train"][2:]
    med = statistics.median(times) if times else float("nan")
    return {"ranks": n, "step_s": med, "images_per_s": per_rank * n / med, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--per-rank", type=int, default=8, help="batch per rank")
    ap.add_argument("--identity", action="store_true", help="include the FaceNet identity loss")
    ap.add_argument("--skip-16", action="store_true")
    args = ap.parse_args()
    mpirun = find_mpirun()
    if mpirun is None:
        raise SystemExit("mpirun not found (make setup)")
    loss = "pixel+identity" if args.identity else "pixel"
    print(f"machine: {os.cpu_count()} cores; model from jobs/demo.yaml; loss {loss}; "
          f"batch {args.per_rank}/rank; 1 thread/rank; {args.steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        res = {n: _train(mpirun, n, args.steps, args.per_rank, args.identity,
                         Path(tmp) / f"np{n}") for n in (1, 2)}
        for n, r in res.items():
            print(f"train -np {n}: {r['step_s'] * 1e3:8.1f} ms/step  "
                  f"{r['images_per_s']:7.2f} images/s  (wall {r['wall_s']:.1f} s)")
        eff = res[2]["images_per_s"] / (2 * res[1]["images_per_s"])
        print(f"scaling efficiency 1 -> 2 ranks: {eff * 100:.0f}%")

        ckpt = sorted((Path(tmp) / "np1").glob("*/checkpoints/*.pt"))
        if not ckpt:  # ckpt_every=0 still writes the final checkpoint
            raise SystemExit("no checkpoint from the -np 1 run")
        times = []
        for _ in range(3):
            out = Path(tmp) / "sr"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "harness", "infer", "--job", JOB,
                                   "--lr", str(ROOT / "data/asc19-val/val_LR"), "--out",
                                   str(out), "--checkpoint", str(ckpt[-1]), "--quiet",
                                   "--set", "train.threads_per_rank=0"],
                                  capture_output=True, text=True, cwd=ROOT)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
        med = statistics.median(times)
        print(f"infer 300 faces (1 process, all cores, incl. start-up): {med:.2f} s median "
              f"of 3 = {300 / med:.1f} images/s")

        if not args.skip_16:
            r = _train(mpirun, 16, 3, 1, False, Path(tmp) / "np16",
                       job=str(ROOT / "jobs" / "smoke.yaml"))
            print(f"train -np 16 (oversubscribed on {os.cpu_count()} cores, tiny model): "
                  f"ok, {r['wall_s']:.1f} s wall")


if __name__ == "__main__":
    main()
