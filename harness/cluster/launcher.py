"""Launch lines for multi-rank jobs, built by pure functions.

:func:`launch_command` returns the command that starts every rank, as a list of tokens, for the
job's ``launch.launcher``:

* ``openmpi`` — ``mpirun -np N --map-by ppr:R:node --bind-to B -x VAR=VALUE ...``
* ``mpich`` / ``intelmpi`` — Hydra: ``mpiexec -n N -ppn R -hosts a,b -bind-to B -genv VAR VALUE``
  (Intel MPI pins through ``I_MPI_PIN_DOMAIN`` instead of ``-bind-to``); inside a Slurm
  allocation prefixed with ``env SLURM_MPI_TYPE=none`` (see :func:`hydra_command`)
* ``auto`` — resolved by ``harness launch`` from the MPI it finds
  (:mod:`harness.cluster.mpi_impl`); left unresolved here it means ``openmpi``
* ``srun`` — ``env VAR=VALUE srun --nodes --ntasks --ntasks-per-node --cpu-bind ...`` inside a
  Slurm allocation
* ``torchrun`` — ``env VAR=VALUE python -m torch.distributed.run --nnodes --nproc-per-node
  --rdzv-backend c10d --rdzv-endpoint HOST:PORT -m MODULE ...``, the same line on every node

:func:`sbatch_script` returns the text of a Slurm batch script. Nothing here touches the system,
so tests compare the output with expected strings; ``harness launch`` prints or runs them.

Every value that reaches a shell line goes through :func:`shlex.quote` (job values were already
checked by :mod:`harness.config`: no control characters, POSIX environment names), and values in
``#SBATCH`` lines, which Slurm parses itself, are refused when Slurm could misread them.
"""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fileio.user_error import UserError
from harness.config import JobConfig, LaunchConfig

#: Exported to every rank: unbuffered output so rank logs interleave promptly.
BASE_ENV: dict[str, str] = {"PYTHONUNBUFFERED": "1"}

#: ``launch.bind_to`` in each launcher's words (a binding means the same thing everywhere).
SRUN_CPU_BIND = {"core": "cores", "socket": "sockets", "numa": "ldoms", "none": "none"}
INTEL_PIN_DOMAIN = {"core": "core", "socket": "socket", "numa": "numa"}

#: srun ``--mpi`` plugin when ``launch.srun_mpi`` is empty.
DEFAULT_SRUN_MPI = {"openmpi": "pmix", "auto": "pmix", "srun": "pmix", "mpich": "pmi2",
                    "intelmpi": "pmi2"}

#: Hydra starts its proxies with srun inside an allocation; on a Slurm whose ``MpiDefault`` is
#: pmix they then carry ``PMIX_NAMESPACE`` beside Hydra's ``PMI_SIZE``, and MPICH aborts
#: ("Auto-detection of PMI version failed"). No srun MPI plugin for the proxies, then.
HYDRA_IN_SLURM_ENV: dict[str, str] = {"SLURM_MPI_TYPE": "none"}

#: Exported to pmix-plugin ranks: the PyPI Open MPI's PMIx has no munge security and only some
#: gds modules, and without these prints help-file noise on every rank.
PMIX_ENV: dict[str, str] = {"PMIX_MCA_psec": "native", "PMIX_MCA_gds": "hash"}

#: Slurm's per-job log, inside the log folder.
SLURM_LOG_NAME = "slurm-%j.out"

# What Slurm's #SBATCH parser reads literally once shell-quoted: no backslash (an escape even
# inside quotes there), no '%' (a filename pattern), no control characters.
_SBATCH_UNSAFE = re.compile(r"[\\%\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What the launchers read of a job: its ``launch`` section and name, and more.

    The three values of other sections that size a rank or a node: threads per rank, and
    whole nodes when the power governor runs.

    Attributes:
        launch: The job's ``launch`` section.
        name: The job's name (Slurm job name, torchrun rendezvous id).
        train_threads: ``train.threads_per_rank``.
        infer_threads: ``infer.threads_per_rank``.
        power_enabled: ``power.enabled`` (whole nodes by default when the governor runs).
    """

    launch: LaunchConfig
    name: str
    train_threads: int = 0
    infer_threads: int = 0
    power_enabled: bool = False

    @classmethod
    def of(cls, job: JobConfig) -> LaunchSpec:
        """The launch view of a validated job."""
        return cls(launch=job.launch, name=job.name,
                   train_threads=job.train.threads_per_rank,
                   infer_threads=job.infer.threads_per_rank, power_enabled=job.power.enabled)


def rank_env(launch: LaunchConfig, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables every rank gets: the base set, ``extra``, then ``launch.env``."""
    env = dict(BASE_ENV)
    env.update(extra or {})
    env.update(launch.env)
    return env


def launcher_kind(launch: LaunchConfig) -> str:
    """``launch.launcher``, with an unresolved ``auto`` read as ``openmpi``.

    ``openmpi`` was the default before ``auto``; ``harness launch`` resolves ``auto`` from the
    MPI it finds (:mod:`harness.cluster.mpi_impl`).
    """
    return "openmpi" if launch.launcher == "auto" else launch.launcher


def _binding(launch: LaunchConfig) -> str:
    # Binding to cores is impossible with more ranks than cores.
    return "none" if launch.oversubscribe else launch.bind_to


def _entry(python: str, module: str, job_path: str, args: Sequence[str]) -> list[str]:
    return [python, "-m", module, "--job", job_path, *args]


def _env_prefix(env: Mapping[str, str]) -> list[str]:
    """Return the ``env VAR=VALUE ...`` prefix that sets ``env`` for a launcher.

    ``env VAR=VALUE ...``: sets the variables for a launcher that has no option for them
    (and, unlike ``srun --export=ALL,VAR=VALUE``, wins over the caller's own value).
    """
    return ["env", *(f"{name}={value}" for name, value in env.items())] if env else []


def launch_command(job: LaunchSpec, job_path: str, *, python: str = "python",
                   module: str = "harness.train", args: Sequence[str] = (),
                   executable: str | None = None, allow_root: bool = False,
                   in_slurm: bool = False) -> list[str]:
    """The command that starts ``python -m MODULE --job JOB_PATH`` on every rank.

    Args:
        job: The launch view of a validated job (:meth:`LaunchSpec.of`);
            ``job.launch.launcher`` picks the launcher.
        job_path: Job file path as the ranks should see it.
        python: Python interpreter on the compute nodes.
        module: Entry module (``harness.train`` or ``harness.infer``).
        args: Extra arguments for the module (e.g. ``--set`` overrides).
        executable: The launcher executable (mpirun, mpiexec, srun); default from the job.
        allow_root: Open MPI only: add ``--allow-run-as-root``.
        in_slurm: Hydra only: the line runs inside a Slurm allocation (``SLURM_JOB_ID`` set).

    Returns:
        The command as a list of tokens.
    """
    kind = launcher_kind(job.launch)
    common: dict[str, Any] = {"python": python, "module": module, "args": args}
    if kind == "openmpi":
        return mpirun_command(job, job_path, mpirun=executable, allow_root=allow_root, **common)
    if kind in ("mpich", "intelmpi"):
        return hydra_command(job, job_path, mpiexec=executable, intel=kind == "intelmpi",
                             in_slurm=in_slurm, **common)
    if kind == "srun":
        return srun_command(job, job_path, srun=executable or "srun", **common)
    return torchrun_command(job, job_path, **common)


def mpirun_command(job: LaunchSpec, job_path: str, *, python: str = "python",
                   module: str = "harness.train", args: Sequence[str] = (),
                   mpirun: str | None = None, allow_root: bool = False) -> list[str]:
    """The Open MPI ``mpirun`` line (``--map-by ppr:R:node``, ``--bind-to``, ``-x VAR=VALUE``).

    Args:
        job: The launch view of a validated job (:meth:`LaunchSpec.of`); ``job.launch``
            gives nodes, ranks per node, hosts, binding,
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
        mapping += ":OVERSUBSCRIBE"
    cmd += ["--map-by", mapping, "--bind-to", _binding(launch)]
    for name, value in rank_env(job.launch).items():
        cmd += ["-x", f"{name}={value}"]
    cmd += list(launch.mpi_args)
    return cmd + _entry(python, module, job_path, args)


def hydra_command(job: LaunchSpec, job_path: str, *, python: str = "python",
                  module: str = "harness.train", args: Sequence[str] = (),
                  mpiexec: str | None = None, intel: bool = False,
                  in_slurm: bool = False) -> list[str]:
    """The MPICH / Intel MPI (Hydra) ``mpiexec`` line.

    ``-n`` ranks, ``-ppn`` per node, ``-hosts``, ``-genv VAR VALUE`` for each variable. MPICH
    binds with ``-bind-to core|socket|numa|none``; Intel MPI with ``I_MPI_PIN_DOMAIN`` (or
    ``I_MPI_PIN=0`` for none), which a ``launch.env`` entry of the same name overrides.
    Hydra has no oversubscription check: more ranks than cores only needs no binding. Inside
    a Slurm allocation the line starts with ``env SLURM_MPI_TYPE=none``
    (:data:`HYDRA_IN_SLURM_ENV`).

    Args:
        job: The launch view of a validated job (:meth:`LaunchSpec.of`).
        job_path: Job file path as the ranks should see it.
        python: Python interpreter on the compute nodes.
        module: Entry module.
        args: Extra arguments for the module.
        mpiexec: The Hydra executable; defaults to ``job.launch.mpirun``.
        intel: Intel MPI instead of MPICH.
        in_slurm: The line runs inside a Slurm allocation.
    """
    launch = job.launch
    if any(arg in ("--mca", "-mca", "--map-by", "-x") for arg in launch.mpi_args):
        raise UserError(f"launch.mpi_args: {shlex.join(launch.mpi_args)[:80]} holds Open MPI "
                        "options, which Hydra's mpiexec refuses: give Open MPI's MCA settings "
                        "as launch.env (OMPI_MCA_btl: self,sm) or drop them")
    cmd = [*_env_prefix(HYDRA_IN_SLURM_ENV if in_slurm else {}),
           mpiexec or launch.mpirun, "-n", str(launch.world_size),
           "-ppn", str(launch.ranks_per_node)]
    if launch.hosts:
        cmd += ["-hosts", ",".join(launch.hosts)]
    binding = _binding(launch)
    pin: dict[str, str] = {}
    if not intel:
        cmd += ["-bind-to", binding]
    elif binding == "none":
        pin = {"I_MPI_PIN": "0"}
    else:
        pin = {"I_MPI_PIN_DOMAIN": INTEL_PIN_DOMAIN[binding]}
    for name, value in rank_env(job.launch, pin).items():
        cmd += ["-genv", name, value]
    cmd += list(launch.mpi_args)
    return cmd + _entry(python, module, job_path, args)


def _srun_mpi(launch: LaunchConfig) -> str:
    return launch.srun_mpi or DEFAULT_SRUN_MPI.get(launch.launcher, "pmix")


def srun_mpi_plugin(launch: LaunchConfig) -> str:
    """The ``srun --mpi`` plugin for the job.

    ``launch.srun_mpi``, else ``pmix`` for Open MPI (and ``srun``, ``auto``), ``pmi2`` for MPICH
    and Intel MPI.
    """
    return _srun_mpi(launch)


def srun_env(launch: LaunchConfig) -> dict[str, str]:
    """Return the environment every srun-started rank gets.

    What every srun-started rank gets: :func:`rank_env`, with :data:`PMIX_ENV` first when
    the step uses the pmix plugin (``launch.env`` still has the last word).
    """
    return rank_env(launch, PMIX_ENV if _srun_mpi(launch) == "pmix" else None)


def threads_per_task(job: LaunchSpec, module: str) -> int:
    """Return the CPU threads of one rank of ``module`` (0: not set).

    CPU threads of one rank of ``module``: ``train``/``infer.threads_per_rank``, else the
    ``OMP_NUM_THREADS`` of ``launch.env``; 0 when neither says (the rank then takes the node's
    cores / local ranks).
    """
    threads = job.infer_threads if module == "harness.infer" else job.train_threads
    omp = job.launch.env.get("OMP_NUM_THREADS", "")
    return threads or (int(omp) if omp.isdigit() else 0)


def exclusive(job: LaunchSpec) -> bool:
    """Whole nodes for the job: ``launch.exclusive``, by default when ``power`` is enabled."""
    return job.launch.exclusive if job.launch.exclusive is not None else job.power_enabled


def _srun_task_args(job: LaunchSpec, module: str) -> list[str]:
    # Slurm 22.05's srun no longer takes --cpus-per-task from the batch job: say it again.
    # --cpu-bind=none is left out: it is Slurm's default, and it warns where the cluster has
    # no task affinity plugin.
    out = []
    threads = threads_per_task(job, module)
    if threads:
        out.append(f"--cpus-per-task={threads}")
    binding = _binding(job.launch)
    if binding != "none":
        out.append(f"--cpu-bind={SRUN_CPU_BIND[binding]}")
    return out


def srun_command(job: LaunchSpec, job_path: str, *, python: str = "python",
                 module: str = "harness.train", args: Sequence[str] = (),
                 srun: str = "srun") -> list[str]:
    """The ``srun`` line that starts every rank as a task of the current Slurm allocation.

    The environment is set with an ``env`` prefix (srun's default ``--export=ALL`` passes it
    on): ``--export=ALL,VAR=VALUE`` would let the caller's own ``VAR`` win, and cannot carry a
    value holding a comma. A failing rank ends the step (``--kill-on-bad-exit=1``).
    """
    launch = job.launch
    cmd = [*_env_prefix(srun_env(job.launch)), srun, f"--nodes={launch.nodes}",
           f"--ntasks={launch.world_size}", f"--ntasks-per-node={launch.ranks_per_node}"]
    if launch.hosts:
        cmd.append(f"--nodelist={','.join(launch.hosts)}")
    if launch.oversubscribe:
        cmd.append("--overcommit")
    cmd += [*_srun_task_args(job, module), "--kill-on-bad-exit=1",
            f"--mpi={_srun_mpi(launch)}"]
    return cmd + _entry(python, module, job_path, args)


def torchrun_command(job: LaunchSpec, job_path: str, *, python: str = "python",
                     module: str = "harness.train", args: Sequence[str] = (),
                     rdzv_host: str | None = None) -> list[str]:
    """The torchrun (``python -m torch.distributed.run``) line, the same on every node.

    One agent per node starts ``launch.ranks_per_node`` workers; the agents meet at the c10d
    rendezvous on ``rdzv_host`` (default: the first of ``launch.hosts``, or ``localhost`` for
    one node) port ``launch.rdzv_port``. ``python -m`` rather than the ``torchrun`` script, so
    that ``--python`` picks the interpreter. torchrun does not bind processes.

    Raises:
        UserError: several nodes but no ``launch.hosts`` to name the rendezvous host.
    """
    launch = job.launch
    if rdzv_host is None:
        if launch.hosts:
            rdzv_host = launch.hosts[0]
        elif launch.nodes == 1:
            rdzv_host = "localhost"
        else:
            raise UserError(f"launch.hosts: torchrun on {launch.nodes} nodes needs the host "
                            "names (the first one hosts the rendezvous), or use --scheduler "
                            "slurm")
    return [*_env_prefix(rank_env(job.launch)), *_torchrun_head(job.launch, python),
            "--rdzv-endpoint", f"{rdzv_host}:{launch.rdzv_port}", "--rdzv-id", job.name,
            "-m", module, "--job", job_path, *args]


def _torchrun_head(launch: LaunchConfig, python: str) -> list[str]:
    return [python, "-m", "torch.distributed.run", "--nnodes", str(launch.nodes),
            "--nproc-per-node", str(launch.ranks_per_node), "--rdzv-backend", "c10d"]


def slurm_log_dir(launch: LaunchConfig, workdir: str | None = None) -> str:
    """Return the folder of Slurm's ``slurm-<jobid>.out``.

    The folder of Slurm's ``slurm-<jobid>.out``: ``launch.run_dir``, absolute under
    ``workdir`` when given. It must exist before ``sbatch``: Slurm opens the file before the
    script runs (``harness launch`` creates it when it writes the script).
    """
    run_dir = launch.run_dir
    if workdir and not os.path.isabs(run_dir):
        run_dir = os.path.join(workdir, run_dir)
    return os.path.normpath(run_dir)


def _sbatch_value(value: str, what: str) -> str:
    if _SBATCH_UNSAFE.search(value):
        raise UserError(f"{what}: {value[:60]!r} cannot go in an #SBATCH line (no '\\', '%' "
                        "or control characters)")
    return shlex.quote(value)


def _sbatch_header(job: LaunchSpec, threads: int, workdir: str | None) -> list[str]:
    """The ``#SBATCH`` lines of :func:`sbatch_script`: size, time, log, requeue, signal."""
    launch = job.launch
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.name}",
        f"#SBATCH --nodes={launch.nodes}",
        f"#SBATCH --ntasks-per-node={launch.ranks_per_node}",
    ]
    if launch.launcher != "torchrun" and threads:
        lines.append(f"#SBATCH --cpus-per-task={threads}")
    if launch.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={launch.gpus_per_node}")
    if launch.hosts:  # checked in harness.config: host-name characters only
        lines.append(f"#SBATCH --nodelist={','.join(launch.hosts)}")
    if exclusive(job):
        lines.append("#SBATCH --exclusive")
    if launch.oversubscribe:
        lines.append("#SBATCH --overcommit")
    lines.append(f"#SBATCH --time={launch.time}")
    if launch.partition:
        lines.append(f"#SBATCH --partition={_sbatch_value(launch.partition, 'launch.partition')}")
    if launch.account:
        lines.append(f"#SBATCH --account={_sbatch_value(launch.account, 'launch.account')}")
    if workdir:
        lines.append(f"#SBATCH --chdir={_sbatch_value(workdir, 'working directory')}")
    log_dir = _sbatch_value(slurm_log_dir(job.launch, workdir), "launch.run_dir")
    lines.append(f"#SBATCH --output={log_dir}/{SLURM_LOG_NAME}")
    lines += ["#SBATCH --open-mode=append", "#SBATCH --requeue"]
    if launch.signal_lead_s:
        lines.append(f"#SBATCH --signal=USR1@{launch.signal_lead_s}")
    return lines


def sbatch_script(job: LaunchSpec, job_path: str, *, python: str = "python",
                  module: str = "harness.train", args: Sequence[str] = (),
                  workdir: str | None = None) -> str:
    """A Slurm batch script that starts one srun task per rank (one torchrun agent per node).

    * ``--output`` is ``slurm-<jobid>.out`` in :func:`slurm_log_dir` (absolute under
      ``workdir``), which the caller must create first: Slurm opens it before the script runs;
    * ``--requeue`` and ``--open-mode=append``: after ``scontrol requeue`` (or a node failure)
      the job starts again with the same job id, appends to the same log (which gets one line
      per attempt, with ``SLURM_RESTART_COUNT``), and training's ``--resume auto`` continues
      the run this job id started;
    * ``--cpus-per-task`` is the workload's ``threads_per_rank`` (said again on srun, which
      no longer inherits it), ``--nodelist`` is ``launch.hosts``, ``--exclusive`` see
      :func:`exclusive`;
    * ``--signal=USR1@launch.signal_lead_s`` warns every rank before the time limit, and
      ``srun --kill-on-bad-exit=1`` ends the job when one rank fails instead of leaving the
      others waiting in a collective until the limit;
    * ``PMIX_MCA_psec=native`` and ``PMIX_MCA_gds=hash`` with the pmix plugin: the PyPI Open
      MPI's PMIx has no munge security, and prints help-file noise on every rank without them.

    Args:
        job: The launch view of a validated job (``launch.nodes``, ``ranks_per_node``,
            ``gpus_per_node``,
            ``hosts``, ``time``, ``partition``, ``account``, ``exclusive``, ``env``,
            ``bind_to``, ``launcher``; ``train``/``infer.threads_per_rank``).
        job_path: Job file path as the compute nodes see it.
        python: Python interpreter on the compute nodes.
        module: Entry module.
        args: Extra arguments for the module.
        workdir: Directory the job runs in (the project checkout on shared storage).

    Returns:
        The script text, ending with a newline.

    Raises:
        UserError: the log folder or ``workdir`` holds characters Slurm would misread.
    """
    launch = job.launch
    threads = threads_per_task(job, module)
    lines = _sbatch_header(job, threads, workdir)
    lines += ["", "set -euo pipefail"]
    if workdir:
        lines.append(f"cd {shlex.quote(workdir)}")
    lines.append(f"mkdir -p {shlex.quote(launch.run_dir)}")
    lines.append(ATTEMPT_LINE)
    if module == "harness.train":
        args = ["--resume", "auto", *args]  # after a requeue: this job id's run continues
    srun = ["srun", "--kill-on-bad-exit=1"]
    if launch.launcher == "torchrun":
        lines += _exports(rank_env(job.launch))
        lines.append("")
        # One agent per node, with the CPUs of that node's ranks; the step gets the job's GPUs.
        # The first node of the allocation hosts the rendezvous.
        lines.append('head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)')
        srun += [f"--nodes={launch.nodes}", f"--ntasks={launch.nodes}", "--ntasks-per-node=1",
                 f"--cpus-per-task={launch.ranks_per_node * max(threads, 1)}"]
        lines.append(f"{shlex.join(srun + _torchrun_head(job.launch, python))} "
                     f'--rdzv-endpoint "$head:{launch.rdzv_port}" --rdzv-id "$SLURM_JOB_ID" '
                     f"{shlex.join(['-m', module, '--job', job_path, *args])}")
    else:
        lines += _exports(srun_env(job.launch))
        lines.append("")
        srun += [*_srun_task_args(job, module), f"--mpi={_srun_mpi(launch)}"]
        lines.append(shlex.join(srun + _entry(python, module, job_path, args)))
    lines.append("")
    return "\n".join(lines)


#: The script's first line in the job log at each attempt (Slurm requeues keep the job id and
#: count the attempts in SLURM_RESTART_COUNT).
ATTEMPT_LINE = ('echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) harness: Slurm job ${SLURM_JOB_ID:-?} '
                'attempt $((${SLURM_RESTART_COUNT:-0} + 1)) (SLURM_RESTART_COUNT='
                '${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}"')


def time_limit_warning(launch: LaunchConfig) -> str | None:
    """What is wrong with ``launch.time`` for training under Slurm, or None.

    Training stops ``launch.signal_lead_s`` + 60 s before the limit; a limit that leaves less
    than :data:`MIN_TRAIN_S` after that trains for a step or two, or not at all.
    """
    from harness.cluster.slurm import MIN_TRAIN_S, parse_slurm_time

    limit = parse_slurm_time(launch.time)
    margin = launch.signal_lead_s + 60
    if limit is None or limit - margin >= MIN_TRAIN_S:
        return None
    left = max(int(limit - margin), 0)
    return (f"launch.time {launch.time} leaves {left} s to train (training stops "
            f"launch.signal_lead_s {launch.signal_lead_s} + 60 s before the limit): raise "
            "launch.time (or sbatch --time) or lower launch.signal_lead_s")


def _exports(env: Mapping[str, str]) -> list[str]:
    # Names are POSIX identifiers (checked in harness.config); values are quoted.
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]


def format_command(cmd: Sequence[str]) -> str:
    """A command as one shell-quoted line."""
    return shlex.join(cmd)
