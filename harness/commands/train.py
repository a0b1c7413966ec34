"""``harness train`` / ``python -m harness.train``: data-parallel FaceSR training.

Launch on a cluster (one rank per GPU), on this machine, or as one plain process::

    mpirun -np 16 python -m harness.train --job jobs/asc19-final.yaml
    harness launch jobs/demo.yaml                  # builds and runs the mpirun line
    python -m harness.train --job jobs/smoke.yaml  # one process, no launcher
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from harness.commands.common import add_job_arguments, module_main
from harness.config import load_job


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness train`` / ``python -m harness.train``."""
    add_job_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_OR_CKPT",
                        help="continue a run from its latest checkpoint (a run directory) "
                             "or from a given checkpoint file")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="parent folder of run directories (default: launch.run_dir)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after step N with a checkpoint, as if interrupted")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    """Run training from parsed arguments; returns the exit code."""
    from harness.training.loop import train

    job = load_job(args.job, args.overrides)
    train(job, resume=args.resume, run_parent=args.run_dir, stop_after=args.stop_after,
          progress=not args.quiet)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.train``."""
    return module_main("harness.train", "Data-parallel FaceSR training (run under "
                       "mpirun for several ranks).", add_arguments, run, argv)
