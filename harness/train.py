"""``harness train`` / ``python -m harness.train``: data-parallel FaceSR training.

Launch on a cluster (one rank per GPU), on this machine, or as one plain process::

    mpirun -np 16 python -m harness.train --job jobs/asc19-final.yaml
    harness launch jobs/demo.yaml                  # builds and runs the mpirun line
    python -m harness.train --job jobs/smoke.yaml  # one process, no launcher
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fileio.user_error import UserError
from harness.commands.common import add_job_arguments, job_or_default, module_main
from harness.config import load_job
from harness.outputs.logs import LOG_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness train`` / ``python -m harness.train``."""
    add_job_arguments(parser, required=False, job_help="YAML job file (default: $HARNESS_JOB, "
                      "else jobs/default.yaml, which runs anywhere: embedded data, device "
                      "auto, NVML power where there are GPUs, simulated elsewhere)")
    parser.add_argument("--resume", metavar="RUN_OR_CKPT",
                        help="continue a run from its latest checkpoint (a run directory), "
                             "from a given checkpoint file, or 'auto': the job's latest run "
                             "if it has a checkpoint, else a new run (for requeued jobs)")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="parent folder of run directories (default: launch.run_dir)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after step N with a checkpoint, as if interrupted")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                        help="rich: live bar; plain: a timestamped line every "
                             "--log-interval seconds; auto (default): rich on an interactive "
                             "terminal outside a launcher, else plain")
    parser.add_argument("--log-interval", type=float, default=30.0, metavar="S",
                        help="seconds between plain progress lines (default: 30)")


def run(args: argparse.Namespace) -> int:
    """Run training from parsed arguments; returns the exit code."""
    from harness.training.loop import train

    if not args.log_interval > 0:
        raise UserError(f"--log-interval: must be > 0, got {args.log_interval}")
    job = load_job(job_or_default(args.job, "default.yaml"), args.overrides)
    train(job, resume=args.resume, run_parent=args.run_dir, stop_after=args.stop_after,
          log_format="off" if args.quiet else args.log_format, log_interval_s=args.log_interval)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.train``."""
    return module_main("harness.train", "Data-parallel FaceSR training (run under "
                       "mpirun for several ranks).", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
