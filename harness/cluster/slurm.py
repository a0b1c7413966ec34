"""What a process learns from Slurm: its job, its node's name, and the job's time left.

Only environment variables and one bounded ``squeue`` call; nothing at import time.

* :func:`slurm_job` reads ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` (how many times the job was
  requeued: a requeued job keeps its id), the node list and the node's name;
* :func:`node_name` is the name Slurm gives this node (``SLURMD_NODENAME``), else the host
  name: the one name the manifest, the power folders and the log tags use;
* :func:`query_time_left_s` asks ``squeue -h -j JOBID -o %L`` how long the job has left, which
  is the job's real limit (``sbatch --time`` on the command line overrides the script's);
* :func:`parse_slurm_time` reads Slurm's time formats.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: Longest wait for ``squeue`` (a busy controller answers in well under a second).
SQUEUE_TIMEOUT_S = 10.0

#: Less time than this to train, once training's stop margin (``launch.signal_lead_s`` + 60 s)
#: is taken off the limit, is warned about.
MIN_TRAIN_S = 120.0

_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


class SlurmQueryError(Exception):
    """``squeue`` could not say how long the job has left (the message says why)."""


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """The Slurm job this process belongs to."""

    job_id: str
    """``SLURM_JOB_ID``; the same on every attempt of a requeued job."""
    restart_count: int
    """``SLURM_RESTART_COUNT``: 0 on the first attempt, 1 after the first requeue, ..."""
    job_name: str
    """``SLURM_JOB_NAME``."""
    nodelist: str
    """``SLURM_JOB_NODELIST`` in Slurm's compressed form, e.g. ``node[0-1]``."""
    node: str
    """This node's name (:func:`node_name`)."""

    @property
    def attempt(self) -> int:
        """1 on the first start, 2 after the first requeue, ..."""
        return self.restart_count + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the run manifest."""
        return asdict(self)


def node_name(env: Mapping[str, str] | None = None) -> str:
    """This node's name as Slurm says it (``SLURMD_NODENAME``), else the host name.

    Not under Intel MPI's Hydra (``I_MPI_HYDRA_UUID``): it hands every rank the environment
    of the node ``mpiexec`` runs on, ``SLURMD_NODENAME`` included.
    """
    env = os.environ if env is None else env
    if env.get("I_MPI_HYDRA_UUID"):
        return socket.gethostname()
    return env.get("SLURMD_NODENAME") or socket.gethostname()


def slurm_job(env: Mapping[str, str] | None = None) -> SlurmJob | None:
    """The Slurm job of this process, or None outside Slurm (no ``SLURM_JOB_ID``)."""
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID", "").strip()
    if not job_id:
        return None
    try:
        restarts = max(int(env.get("SLURM_RESTART_COUNT", "0") or 0), 0)
    except ValueError:
        restarts = 0
    return SlurmJob(job_id=job_id, restart_count=restarts, job_name=env.get("SLURM_JOB_NAME", ""),
                    nodelist=env.get("SLURM_JOB_NODELIST", ""), node=node_name(env))


def parse_slurm_time(text: str) -> float | None:
    """Seconds of a Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``).

    Returns:
        The seconds; None for ``UNLIMITED``/``INFINITE`` or empty text.

    Raises:
        ValueError: anything else (``INVALID``, ``NOT_SET``, garbage).
    """
    text = (text or "").strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"not a Slurm time: {text[:40]!r}")
    days, a, b, c = m.groups()
    numbers = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:
        h, mi, s = (numbers + [0, 0])[:3]
    elif len(numbers) == 1:
        h, mi, s = 0, numbers[0], 0
    elif len(numbers) == 2:
        h, (mi, s) = 0, numbers
    else:
        h, mi, s = numbers
    return float((int(days or 0) * 24 + h) * 3600 + mi * 60 + s)


def query_time_left_s(job_id: str, *, squeue: str = "squeue",
                      timeout_s: float = SQUEUE_TIMEOUT_S) -> float:
    """How long job ``job_id`` has left, from ``squeue -h -j JOBID -o %L``.

    Returns:
        Seconds left (``math.inf`` for ``UNLIMITED``).

    Raises:
        SlurmQueryError: no squeue, it timed out or failed, or its answer is not a time
            (``INVALID``).
    """
    exe = squeue if os.sep in squeue else shutil.which(squeue)
    if exe is None:
        raise SlurmQueryError(f"{squeue} not found on PATH")
    try:
        proc = subprocess.run([exe, "-h", "-j", job_id, "-o", "%L"], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmQueryError(f"squeue gave no answer in {timeout_s:g} s") from None
    except OSError as exc:
        raise SlurmQueryError(f"cannot run squeue ({exc.strerror or exc})") from None
    answer = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not answer:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SlurmQueryError(f"squeue -j {job_id} failed: {why[:120]}")
    try:
        seconds = parse_slurm_time(answer[0])
    except ValueError:
        raise SlurmQueryError(f"squeue says the time left is {answer[0][:40]!r}") from None
    return math.inf if seconds is None else seconds
