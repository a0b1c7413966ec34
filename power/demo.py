"""A governed fake workload on simulated GPUs, run until killed (or until it fails on purpose).

Used by the tests to check that a real process restores every power limit on SIGTERM, SIGINT
or an exception, and handy to watch the governor work::

    python -m power.demo --state-file /tmp/gpus.json --run-dir /tmp/run --budget-w 1000

The simulated GPUs persist their settings to ``--state-file`` (JSON, see
:class:`power.simulated.SimStateFile`) so another process can inspect them. ``--ready-file`` is
written once the governor has changed at least one limit.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fileio.atomic import write_text_atomic
from power.clock import MonotonicClock
from power.governor import Governor
from power.simulated import constant_load, make_simulated_gpus


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m power.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--state-file", required=True, type=Path)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--ready-file", type=Path)
    ap.add_argument("--profile", default="A100-SXM4")
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--budget-w", type=float, default=1000.0)
    ap.add_argument("--period-s", type=float, default=0.05)
    ap.add_argument("--duration-s", type=float, default=float("inf"))
    ap.add_argument("--raise-after-steps", type=int, default=0,
                    help="raise RuntimeError inside the loop after this many steps (0: never)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    clock = MonotonicClock()
    gpus = make_simulated_gpus(args.profile, args.gpus, clock=clock, loads=constant_load(0.95),
                               state_path=args.state_file)
    original = [g.get_power_limit_mw() for g in gpus]
    with Governor(gpus, budget_w=args.budget_w, headroom_w=20.0, clock=clock,
                  run_dir=args.run_dir, period_s=args.period_s) as gov:
        start = clock.now()
        steps = 0
        while clock.now() - start < args.duration_s:
            gov.step()
            steps += 1
            if args.ready_file and steps == 1:
                if any(g.get_power_limit_mw() != o for g, o in zip(gpus, original, strict=True)):
                    write_text_atomic(args.ready_file, "ready\n")
            if args.raise_after_steps and steps >= args.raise_after_steps:
                raise RuntimeError(f"simulated training failure after {steps} steps")
            clock.sleep(args.period_s)
    print(gov.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
