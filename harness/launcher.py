"""Launch lines for multi-rank jobs, built by pure functions.

:func:`mpirun_command` returns the ``mpirun`` invocation as a list of tokens and
:func:`sbatch_script` the text of a Slurm batch script; neither touches the system, so tests
compare their output with expected strings. ``harness launch`` prints or runs them.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from harness.config import JobConfig

#: Exported to every rank: unbuffered output so rank logs interleave promptly.
BASE_ENV: dict[str, str] = {"PYTHONUNBUFFERED": "1"}


def rank_env(job: JobConfig) -> dict[str, str]:
    """Environment variables every rank gets: the base set, then the job's ``launch.env``."""
    env = dict(BASE_ENV)
    env.update(job.launch.env)
    return env


def mpirun_command(job: JobConfig, job_path: str, *, python: str = "python",
                   module: str = "harness.train", args: Sequence[str] = (),
                   mpirun: str | None = None, allow_root: bool = False) -> list[str]:
    """The ``mpirun`` line that starts ``python -m MODULE --job JOB_PATH`` on every rank.

    Args:
        job: The validated job; ``job.launch`` gives nodes, ranks per node, hosts, binding,
            extra MPI arguments and exported environment.
        job_path: Job file path as the ranks should see it.
        python: Python interpreter on the compute nodes.
        module: Entry module (``harness.train`` or ``harness.infer``).
        args: Extra arguments for the module (e.g. ``--set`` overrides).
        mpirun: mpirun executable; defaults to ``job.launch.mpirun``.
        allow_root: Add ``--allow-run-as-root`` (Open MPI refuses root otherwise).

    Returns:
        The command as a list of tokens.
    """
    launch = job.launch
    cmd = [mpirun or launch.mpirun, "-np", str(launch.world_size)]
    if allow_root:
        cmd.append("--allow-run-as-root")
    if launch.hosts:
        cmd += ["--host", ",".join(f"{h}:{launch.ranks_per_node}" for h in launch.hosts)]
    mapping = f"ppr:{launch.ranks_per_node}:node"
    if launch.oversubscribe:
        # Binding to cores is impossible with more ranks than cores.
        cmd += ["--map-by", mapping + ":OVERSUBSCRIBE", "--bind-to", "none"]
    else:
        cmd += ["--map-by", mapping, "--bind-to", launch.bind_to]
    for name, value in rank_env(job).items():
        cmd += ["-x", f"{name}={value}"]
    cmd += list(launch.mpi_args)
    cmd += [python, "-m", module, "--job", job_path, *args]
    return cmd


def sbatch_script(job: JobConfig, job_path: str, *, python: str = "python",
                  module: str = "harness.train", args: Sequence[str] = (),
                  workdir: str | None = None) -> str:
    """A Slurm batch script that runs the job with ``srun`` (one task per rank).

    Args:
        job: The validated job (``launch.nodes``, ``ranks_per_node``, ``gpus_per_node``,
            ``time``, ``partition``, ``account``, ``env``).
        job_path: Job file path as the compute nodes see it.
        python: Python interpreter on the compute nodes.
        module: Entry module.
        args: Extra arguments for the module.
        workdir: Directory to ``cd`` into first (the project checkout on shared storage).

    Returns:
        The script text, ending with a newline.
    """
    launch = job.launch
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.name}",
        f"#SBATCH --nodes={launch.nodes}",
        f"#SBATCH --ntasks-per-node={launch.ranks_per_node}",
    ]
    if launch.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={launch.gpus_per_node}")
    lines.append(f"#SBATCH --time={launch.time}")
    if launch.partition:
        lines.append(f"#SBATCH --partition={launch.partition}")
    if launch.account:
        lines.append(f"#SBATCH --account={launch.account}")
    lines.append(f"#SBATCH --output={launch.run_dir}/slurm-%j.out")
    lines += ["", "set -euo pipefail"]
    if workdir:
        lines.append(f"cd {shlex.quote(workdir)}")
    lines.append(f"mkdir -p {shlex.quote(launch.run_dir)}")
    lines += _exports(rank_env(job))
    binding = "none" if launch.oversubscribe or launch.bind_to == "none" else (
        "cores" if launch.bind_to == "core" else "sockets")
    srun = ["srun", "--mpi=pmix", f"--cpu-bind={binding}", python, "-m", module,
            "--job", job_path, *args]
    lines += ["", shlex.join(srun), ""]
    return "\n".join(lines)


def _exports(env: Mapping[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def format_command(cmd: Sequence[str]) -> str:
    """A command as one shell-quoted line."""
    return shlex.join(cmd)
