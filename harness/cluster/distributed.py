"""Distributed bootstrap: the one module that knows how ranks are launched.

Rank, local rank and world size come from the launcher's environment variables:

* torchrun: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` — first when
  ``TORCHELASTIC_RUN_ID`` marks a torchrun worker, since torchrun started by srun leaves the
  agent's own ``SLURM_*`` variables behind;
* Open MPI: ``OMPI_COMM_WORLD_RANK``/``_SIZE``/``_LOCAL_RANK``/``_LOCAL_SIZE``;
* MPICH and Intel MPI (Hydra; Intel's also sets ``I_MPI_HYDRA_UUID``): ``PMI_RANK``/
  ``PMI_SIZE`` with ``MPI_LOCALRANKID``/``MPI_LOCALNRANKS`` (or ``PMI_LOCAL_RANK``/
  ``PMI_LOCAL_SIZE``); srun's ``pmi2`` plugin sets ``PMI_RANK``/``PMI_SIZE`` alone, and then
  Slurm's variables below give the local rank;
* Slurm's srun: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` (or ``SLURM_NTASKS``),
  ``SLURM_LOCALID`` and this node's entry of ``SLURM_STEP_TASKS_PER_NODE`` such as ``4(x2),3``;
* bare ``RANK``/``WORLD_SIZE`` (torch.distributed's env:// convention) last.

With no launcher the process is rank 0 of 1 and everything runs in-process. (A Slurm batch
shell also carries ``SLURM_PROCID``/``SLURM_NTASKS``: start ranks with srun, as the scripts of
``harness launch --scheduler slurm`` do, not by running Python in the batch shell itself.)

:func:`get_comm` gives the small collectives (bcast, gather, allgather, barrier, allreduce_sum):
mpi4py's ``COMM_WORLD`` under an MPI launcher or srun, and ``torch.distributed`` over gloo under
torchrun (no MPI there), or wherever mpi4py is missing or sees a world of one while
``MASTER_ADDR``/``MASTER_PORT`` say where rank 0 listens.

Nothing happens at import time: mpi4py (which initialises MPI) or torch.distributed is set up
only when :func:`get_comm` is first called in a launched process.

Typical use::

    info = get_dist_info()
    comm = get_comm()                     # MPI, torch.distributed or a single-process stand-in
    init_torch_distributed(info, comm, backend="gloo")
    print0(info, "training on", info.world_size, "ranks")
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from fileio.user_error import UserError
from harness.lists import shard, unshard  # noqa: F401  (kept importable from here)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a collective of the torch.distributed-backed communicator may wait.
TORCH_COMM_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class _LauncherEnv:
    """Where one launcher puts rank, size, local rank and local size (first set name wins)."""

    name: str
    rank: tuple[str, ...]
    size: tuple[str, ...]
    local_rank: tuple[str, ...]
    local_size: tuple[str, ...]
    marker: str = ""
    """A variable that must be set too (empty: none)."""
    needs_local: bool = False
    """Only when the local rank and size are set too: srun's ``pmi2`` plugin sets
    ``PMI_RANK``/``PMI_SIZE`` without them, and Slurm's own variables say where the rank is."""


_TORCHRUN = _LauncherEnv("torchrun", ("RANK",), ("WORLD_SIZE",), ("LOCAL_RANK",),
                         ("LOCAL_WORLD_SIZE",), marker="TORCHELASTIC_RUN_ID")
_SLURM = _LauncherEnv("slurm", ("SLURM_PROCID",), ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS",
                                                   "SLURM_NPROCS"),
                      ("SLURM_LOCALID",), ("SLURM_NTASKS_PER_NODE",))
_HYDRA = (("PMI_RANK",), ("PMI_SIZE",), ("MPI_LOCALRANKID", "PMI_LOCAL_RANK"),
          ("MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"))
# Checked in this order: the innermost launcher first (torchrun under srun; mpirun in a batch
# shell that has SLURM_PROCID=0 of SLURM_NTASKS).
_LAUNCHER_ENV: tuple[_LauncherEnv, ...] = (
    _TORCHRUN,
    _LauncherEnv("openmpi", ("OMPI_COMM_WORLD_RANK",), ("OMPI_COMM_WORLD_SIZE",),
                 ("OMPI_COMM_WORLD_LOCAL_RANK",), ("OMPI_COMM_WORLD_LOCAL_SIZE",)),
    # Intel MPI's Hydra sets what MPICH's does, and its own I_MPI_* variables.
    _LauncherEnv("intelmpi", *_HYDRA, marker="I_MPI_HYDRA_UUID", needs_local=True),
    _LauncherEnv("mpich", *_HYDRA, needs_local=True),
    _SLURM,
    _LauncherEnv("mpich", *_HYDRA),  # PMI_RANK/PMI_SIZE alone, outside Slurm
    _LauncherEnv("torchrun", ("RANK",), ("WORLD_SIZE",), ("LOCAL_RANK",),
                 ("LOCAL_WORLD_SIZE",)),
)


@dataclass(frozen=True, slots=True)
class DistInfo:
    """Where this process stands among the ranks of a job."""

    rank: int
    """Global rank, 0-based."""
    local_rank: int
    """Rank among the processes on this node."""
    world_size: int
    """Total number of ranks."""
    local_world_size: int
    """Number of ranks on this node."""
    launcher: str
    """``openmpi``, ``mpich``, ``intelmpi``, ``slurm``, ``torchrun``, ``mpi`` (mpi4py
    disagreed with the environment) or ``none``."""

    @property
    def distributed(self) -> bool:
        """True when more than one rank runs."""
        return self.world_size > 1

    @property
    def is_master(self) -> bool:
        """True on global rank 0 (the rank that writes shared files and prints)."""
        return self.rank == 0

    @property
    def node_index(self) -> int:
        """Index of this node, assuming ranks are packed node by node."""
        return self.rank // max(self.local_world_size, 1)


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value.split("(")[0].split(",")[0])
    except ValueError:
        return None


def _first(env: Mapping[str, str], names: Sequence[str]) -> tuple[str, int | None]:
    for name in names:
        value = _int(env, name)
        if value is not None:
            return name, value
    return names[0], None


def slurm_tasks_on_node(spec: str, node: int) -> int | None:
    """Tasks on node ``node`` from Slurm's compressed list, e.g. ``"2(x3),1"`` -> 2, 2, 2, 1.

    Returns None when ``spec`` is malformed or has no entry for ``node``.
    """
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if m is None:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
        if len(counts) > node:
            return counts[node]
    return None


def _slurm_local_size(env: Mapping[str, str]) -> int | None:
    node = _int(env, "SLURM_NODEID") or 0
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if env.get(name):
            count = slurm_tasks_on_node(env[name], node)
            if count is not None:
                return count
    return _int(env, "SLURM_NTASKS_PER_NODE")


def dist_info_from_env(env: Mapping[str, str] | None = None) -> DistInfo:
    """Read rank/size from launcher environment variables (pure; no MPI calls).

    Args:
        env: Environment to read; ``os.environ`` by default.

    Returns:
        The ranks seen by the first launcher whose variables are set, or a single process.

    Raises:
        UserError: the variables contradict each other (rank outside the world, ...).
    """
    env = os.environ if env is None else env
    for spec in _LAUNCHER_ENV:
        if spec.marker and not env.get(spec.marker):
            continue
        rk, rank = _first(env, spec.rank)
        sz, size = _first(env, spec.size)
        if rank is None or size is None:
            continue
        lrk, local_rank = _first(env, spec.local_rank)
        _, local_size = _first(env, spec.local_size)
        if spec.needs_local and (local_rank is None or local_size is None):
            continue
        if spec is _SLURM:
            local_size = _slurm_local_size(env)
        if local_size is None:
            local_size = size
        if local_rank is None:
            local_rank = rank % local_size  # ranks packed node by node
        if not 0 <= rank < size:
            raise UserError(f"launcher variables {rk}={rank} {sz}={size} are inconsistent")
        if not 0 <= local_rank < local_size <= size:
            raise UserError(f"launcher variables {lrk}={local_rank} local size {local_size} "
                            f"{sz}={size} are inconsistent")
        return DistInfo(rank, local_rank, size, local_size, spec.name)
    return DistInfo(0, 0, 1, 1, "none")


class Comm(Protocol):
    """The collective operations the harness needs (a subset of mpi4py's lowercase API)."""

    rank: int
    size: int

    def bcast(self, obj: T, root: int = 0) -> T:
        """Broadcast ``obj`` from rank ``root`` to every rank."""

    def allgather(self, obj: T) -> list[T]:
        """Gather ``obj`` from every rank onto every rank, in rank order."""

    def gather(self, obj: T, root: int = 0) -> list[T] | None:
        """Gather ``obj`` from every rank onto ``root`` (None on the other ranks)."""

    def allreduce_sum(self, value: float) -> float:
        """Sum ``value`` over all ranks; every rank gets the same float."""

    def allgather_ints(self, values: Sequence[int]) -> list[list[int]]:
        """Gather every rank's small integers (the same count on every rank), in rank order."""

    def barrier(self) -> None:
        """Wait until every rank reaches this call."""


class SingleComm:
    """The communicator of a job with one rank."""

    rank = 0
    size = 1

    def bcast(self, obj: T, root: int = 0) -> T:
        """Return ``obj`` (the only rank is the root)."""
        return obj

    def allgather(self, obj: T) -> list[T]:
        """Return ``[obj]``."""
        return [obj]

    def gather(self, obj: T, root: int = 0) -> list[T] | None:
        """Return ``[obj]``."""
        return [obj]

    def allreduce_sum(self, value: float) -> float:
        """Return ``value``."""
        return value

    def allgather_ints(self, values: Sequence[int]) -> list[list[int]]:
        """Return ``[list(values)]``."""
        return [list(values)]

    def barrier(self) -> None:
        """Return at once (there is no other rank to wait for)."""
        return None


class MPIComm:
    """Adapter over an ``mpi4py.MPI.Comm`` (pickle-based lowercase collectives)."""

    def __init__(self, comm: Any) -> None:
        self._comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    @property
    def raw(self) -> Any:
        """The wrapped ``mpi4py`` communicator (for splitting sub-communicators)."""
        return self._comm

    def bcast(self, obj: T, root: int = 0) -> T:
        """Broadcast ``obj`` from rank ``root`` (mpi4py ``bcast``)."""
        return self._comm.bcast(obj, root=root)

    def allgather(self, obj: T) -> list[T]:
        """Gather ``obj`` from every rank onto every rank (mpi4py ``allgather``)."""
        return self._comm.allgather(obj)

    def gather(self, obj: T, root: int = 0) -> list[T] | None:
        """Gather ``obj`` onto ``root`` (mpi4py ``gather``; None on the other ranks)."""
        return self._comm.gather(obj, root=root)

    def allreduce_sum(self, value: float) -> float:
        """Sum ``value`` over all ranks in rank order, so every rank gets the same float."""
        return float(sum(self._comm.allgather(value)))

    def allgather_ints(self, values: Sequence[int]) -> list[list[int]]:
        """Gather every rank's small integers, in rank order.

        Every rank's ``values`` (small integers, the same count on every rank), in rank
        order (the per-step flags; :class:`TorchComm` sends them as one tensor).
        """
        return [list(v) for v in self._comm.allgather(list(values))]

    def barrier(self) -> None:
        """Wait until every rank reaches this call (``MPI_Barrier``)."""
        self._comm.Barrier()


class TorchComm:
    """The collectives over ``torch.distributed`` with gloo, for launches without MPI.

    Objects travel pickled, as with mpi4py. The default process group is initialised from
    ``MASTER_ADDR``/``MASTER_PORT`` (torchrun sets them) with gloo for CPU tensors, and NCCL
    for CUDA tensors when CUDA is present, so that :func:`init_torch_distributed` and DDP can use
    the same group later; the collectives here always run on a gloo group.

    Args:
        group: The gloo process group to use (None: the default group, when it is gloo).
    """

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self._group = group
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    @classmethod
    def from_env(cls, info: DistInfo, timeout_s: float = TORCH_COMM_TIMEOUT_S) -> TorchComm:
        """Join (or create) the default process group, then open a gloo group over all ranks.

        Raises:
            UserError: torch.distributed is unavailable, or ``MASTER_ADDR``/``MASTER_PORT``
                are missing.
        """
        import datetime

        import torch
        import torch.distributed as dist

        if not dist.is_available():
            raise UserError(f"started by {info.launcher} with {info.world_size} ranks but this "
                            "torch has no torch.distributed")
        timeout = datetime.timedelta(seconds=timeout_s)
        if not dist.is_initialized():
            missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(n)]
            if missing:
                raise UserError(f"started by {info.launcher} with {info.world_size} ranks "
                                f"without MPI, and {' and '.join(missing)} not set: use "
                                "torchrun, or an MPI launcher with mpi4py installed")
            backend = ("cpu:gloo,cuda:nccl" if torch.cuda.is_available()
                       and dist.is_nccl_available() else "gloo")
            dist.init_process_group(backend=backend, init_method="env://", rank=info.rank,
                                    world_size=info.world_size, timeout=timeout)
        group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo",
                                                                         timeout=timeout)
        return cls(group)

    def bcast(self, obj: T, root: int = 0) -> T:
        """Broadcast ``obj`` from rank ``root`` (pickled, over gloo)."""
        box = [obj if self.rank == root else None]
        self._dist.broadcast_object_list(box, src=root, group=self._group)
        return cast(T, box[0])  # every rank now holds the root's object

    def allgather(self, obj: T) -> list[T]:
        """Gather ``obj`` from every rank onto every rank (pickled, over gloo)."""
        out: list[Any] = [None] * self.size
        self._dist.all_gather_object(out, obj, group=self._group)
        return out

    def gather(self, obj: T, root: int = 0) -> list[T] | None:
        """Gather ``obj`` onto ``root`` (pickled, over gloo; None on the other ranks)."""
        out: list[Any] | None = [None] * self.size if self.rank == root else None
        self._dist.gather_object(obj, out, dst=root, group=self._group)
        return out

    def allreduce_sum(self, value: float) -> float:
        """Sum ``value`` over all ranks in rank order, so every rank gets the same float."""
        # Summed in rank order on every rank, so every rank gets the same float (as MPIComm).
        return float(sum(self.allgather(value)))

    def allgather_ints(self, values: Sequence[int]) -> list[list[int]]:
        """Gather every rank's small integers in one tensor all-gather.

        Every rank's ``values`` (the same count everywhere) in one tensor all-gather: no
        pickling, one collective instead of :meth:`allgather`'s two (the per-step flags).
        """
        import torch

        mine = torch.tensor(list(values), dtype=torch.int64)
        out = torch.empty(self.size * len(mine), dtype=torch.int64)
        self._dist.all_gather_single(out, mine, group=self._group)
        return out.view(self.size, -1).tolist()

    def barrier(self) -> None:
        """Wait until every rank of the group reaches this call."""
        self._dist.barrier(group=self._group)

    def node_leaders(self, local_rank: int) -> TorchGroupComm | None:
        """A communicator of the local-rank-0 processes (one per node), for the power governor.

        Collective: every rank must call it. Returns None where ``local_rank != 0``.
        """
        leaders = [r for r, lead in enumerate(self.allgather(local_rank == 0)) if lead]
        group = self._dist.new_group(ranks=leaders, backend="gloo")
        if local_rank != 0:
            return None
        return TorchGroupComm(group, leaders.index(self.rank), len(leaders))


class TorchGroupComm:
    """``rank``, ``size`` and ``allgather`` over a torch.distributed sub-group."""

    def __init__(self, group: Any, rank: int, size: int) -> None:
        import torch.distributed as dist

        self._dist, self._group, self.rank, self.size = dist, group, rank, size

    def allgather(self, obj: Any) -> list[Any]:
        """Gather ``obj`` from every member, in member order."""
        out: list[Any] = [None] * self.size
        self._dist.all_gather_object(out, obj, group=self._group)
        return out


class WatchedComm:
    """A communicator whose every collective is a bounded wait of the stall watchdog.

    This is how every wait on another rank gets a deadline (:mod:`harness.cluster.watchdog`):
    the commands never see an unwatched multi-rank communicator. Anything else (``raw``,
    ``node_leaders``) is the wrapped communicator's.

    Args:
        inner: The communicator doing the work (:class:`MPIComm` or :class:`TorchComm`).
        watchdog: This process's :class:`~harness.cluster.watchdog.StallWatchdog`.
    """

    def __init__(self, inner: Comm, watchdog: Any) -> None:
        self.inner, self._wd = inner, watchdog
        self.rank, self.size = inner.rank, inner.size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def bcast(self, obj: T, root: int = 0) -> T:
        """Broadcast ``obj`` from rank ``root`` under the watchdog."""
        with self._wd.waiting("bcast"):
            return self.inner.bcast(obj, root=root)

    def allgather(self, obj: T) -> list[T]:
        """Gather ``obj`` from every rank under the watchdog."""
        with self._wd.waiting("allgather"):
            return self.inner.allgather(obj)

    def gather(self, obj: T, root: int = 0) -> list[T] | None:
        """Gather ``obj`` onto ``root`` under the watchdog."""
        with self._wd.waiting("gather"):
            return self.inner.gather(obj, root=root)

    def allreduce_sum(self, value: float) -> float:
        """Sum ``value`` over all ranks under the watchdog."""
        with self._wd.waiting("allreduce"):
            return self.inner.allreduce_sum(value)

    def allgather_ints(self, values: Sequence[int]) -> list[list[int]]:
        """Gather every rank's small integers under the watchdog."""
        with self._wd.waiting("allgather"):
            return self.inner.allgather_ints(values)

    def barrier(self) -> None:
        """Wait for every rank under the watchdog."""
        with self._wd.waiting("barrier"):
            self.inner.barrier()


_COMM: Comm | None = None


def _inner(comm: Comm | None) -> Comm | None:
    return comm.inner if isinstance(comm, WatchedComm) else comm


def get_dist_info() -> DistInfo:
    """Rank, local rank and world size of this process.

    Uses the launcher's environment; when mpi4py is already initialised, its communicator is
    trusted over the environment.
    """
    info = dist_info_from_env()
    comm = _COMM
    if comm is not None and isinstance(_inner(comm), MPIComm) and comm.size != info.world_size:
        return DistInfo(comm.rank, info.local_rank, comm.size, info.local_world_size, "mpi")
    return info


def _torch_can_rendezvous() -> bool:
    return bool(os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"))


def get_comm() -> Comm:
    """The job's communicator (created on first call, then cached).

    * one rank: a single-process stand-in;
    * torchrun: :class:`TorchComm` (gloo), without importing mpi4py;
    * an MPI launcher or srun: mpi4py's ``COMM_WORLD``; if mpi4py is missing, or sees a world of
      one (built against another MPI), :class:`TorchComm` when ``MASTER_ADDR``/``MASTER_PORT``
      are set.

    With several ranks the stall watchdog starts first (so that a rank stopped during MPI's
    own start-up ends the job too) and the communicator is a :class:`WatchedComm`: every
    collective has the watchdog's deadline. MPI's shutdown at exit is a bounded wait as well.

    Raises:
        UserError: several ranks but no way to reach them (mpi4py missing or disagreeing with
            the launcher, and no ``MASTER_ADDR``/``MASTER_PORT``).
    """
    global _COMM
    if _COMM is not None:
        return _COMM
    from harness.cluster import watchdog

    info = dist_info_from_env()
    wd = watchdog.start(info.rank, info.world_size,
                        multi_node=info.world_size > info.local_world_size)
    if info.world_size == 1:
        _COMM = SingleComm()
        return _COMM
    import atexit

    atexit.register(wd.close)  # runs after MPI's shutdown (registered before mpi4py's hook)
    wd.progress("start-up")  # (where the tests' start-up fault stops a rank)
    with wd.blocking("MPI start-up"):
        inner = _open_comm(info)
    wd.attach(inner)
    wd.start()
    # registered after mpi4py's own exit hook, so it runs first: MPI_Finalize waits on the
    # other ranks, under the watchdog's deadline like any collective
    atexit.register(wd.guard_shutdown)
    _COMM = WatchedComm(inner, wd)
    return _COMM


def _open_comm(info: DistInfo) -> Comm:
    """The unwatched communicator of a launched multi-rank job (see :func:`get_comm`)."""
    if info.launcher == "torchrun":
        return TorchComm.from_env(info)
    try:
        from mpi4py import MPI
    except ImportError:
        if _torch_can_rendezvous():
            log.warning("mpi4py is not installed: using torch.distributed (gloo) for the %d "
                        "ranks", info.world_size)
            return TorchComm.from_env(info)
        raise UserError(f"started by {info.launcher} with {info.world_size} ranks but mpi4py "
                        "is not installed: pip install mpi4py (see `harness doctor`)") from None
    comm = MPIComm(MPI.COMM_WORLD)
    if comm.size != info.world_size:
        if comm.size == 1 and _torch_can_rendezvous():
            log.warning("mpi4py sees 1 rank but %s says %d: using torch.distributed (gloo)",
                        info.launcher, info.world_size)
            return TorchComm.from_env(info)
        from harness.cluster.mpi_impl import running_library_version

        raise UserError(mpi_world_mismatch(info, comm.size, running_library_version()),
                        every_rank=True)
    return comm


def mpi_world_mismatch(info: DistInfo, mpi_size: int, library: str = "") -> str:
    """What to say when MPI's world (``mpi_size`` ranks) is not the launcher's.

    srun with the wrong ``--mpi`` plugin (``none``, or ``pmi2`` for a PMIx-only Open MPI,
    ``pmix`` for MPICH or Intel MPI, named by ``library``: ``MPI_Get_library_version``'s
    words) starts every task as its own world of one; any other mismatch is an mpi4py that
    loads another MPI than the launcher's.
    """
    if info.launcher == "slurm" and mpi_size == 1:
        from harness.cluster.mpi_impl import FAMILY_NAMES, parse_library_version

        family = parse_library_version(library).family
        if family in ("mpich", "intelmpi"):
            return (f"srun started {info.world_size} tasks but each is its own MPI world: use "
                    f"srun --mpi=pmi2 ({FAMILY_NAMES[family]} starts under Slurm's PMI-2; "
                    "launch.srun_mpi)")
        return (f"srun started {info.world_size} tasks but each is its own MPI world: use "
                "srun --mpi=pmix (the PyPI Open MPI speaks PMIx only; launch.srun_mpi)")
    return (f"mpi4py sees {mpi_size} ranks but the launcher says {info.world_size}: mpi4py "
            "was built against another MPI than the mpirun used (run `harness doctor`)")


def reset_comm() -> None:
    """Forget the cached communicator (for tests)."""
    global _COMM
    _COMM = None


def free_port(host: str = "") -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rendezvous(comm: Comm) -> tuple[str, int]:
    """Rank 0 picks its address and a free port; every rank receives the same pair.

    ``MASTER_ADDR``/``MASTER_PORT`` from the environment win when both are set.
    """
    env_addr, env_port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if env_addr and env_port:
        return env_addr, int(env_port)
    pair: tuple[str, int] | None = None
    if comm.rank == 0:
        pair = (socket.gethostname() if comm.size > 1 else "127.0.0.1", free_port())
    # Rank 0 always sets the pair: every rank receives it, never None.
    return cast("tuple[str, int]", comm.bcast(pair, root=0))


def init_torch_distributed(info: DistInfo, comm: Comm, backend: str = "gloo",
                           timeout_s: float = 300.0) -> None:
    """Initialise ``torch.distributed`` for a multi-rank job (no-op for one rank).

    Args:
        info: This rank's placement.
        comm: The job's communicator, used to broadcast rank 0's address and port.
        backend: ``gloo`` (CPU) or ``nccl`` (GPU).
        timeout_s: Collective timeout.
    """
    if not info.distributed:
        return
    import datetime

    import torch.distributed as dist

    if dist.is_initialized():
        return
    addr, port = rendezvous(comm)
    if addr == socket.gethostname():
        addr = _resolvable(addr)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def steps_comm(comm: Comm, timeout_s: float = TORCH_COMM_TIMEOUT_S) -> Comm:
    """Return the communicator for training's own collectives.

    The communicator for training's own collectives once ``torch.distributed`` is up (the
    stop flags of every step, validation, checkpoints, the power session and its governor's
    node leaders): a gloo group of all ranks, watched by
    the same stall watchdog as ``comm``; ``comm`` itself when torch.distributed is not
    initialised (one rank, Horovod) or ``comm`` already is gloo.

    Why: Open MPI (without ULFM) ends a process in its own C code, exit status 14 and no word,
    when a collective finds a peer gone, so a node lost during the per-step collective left the
    job's log without the node's name. gloo raises an error naming the peer's address instead,
    which :func:`describe_peer_loss` turns into one line on every rank left. Collective: every
    rank must call it, in the same order.
    """
    import datetime

    import torch.distributed as dist

    inner = _inner(comm)
    if (comm.size <= 1 or isinstance(inner, TorchComm) or not dist.is_available()
            or not dist.is_initialized()):
        return comm
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    gloo = TorchComm(group)
    return WatchedComm(gloo, comm._wd) if isinstance(comm, WatchedComm) else gloo


def _resolvable(host: str) -> str:
    try:
        socket.gethostbyname(host)
        return host
    except OSError:
        return "127.0.0.1"


def shutdown_torch_distributed() -> None:
    """Tear down ``torch.distributed`` if it was initialised.

    Tear down ``torch.distributed`` if it was initialised (and forget a :class:`TorchComm`,
    whose groups go with it).
    """
    global _COMM
    if isinstance(_inner(_COMM), TorchComm):
        _COMM = None
    if "torch.distributed" not in sys.modules:
        return  # never imported, so never initialised: importing it now would load torch
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def print0(info: DistInfo, *args: Any, **kwargs: Any) -> None:
    """``print`` on global rank 0 only."""
    if info.is_master:
        print(*args, **kwargs, flush=True)


# --------------------------------------------------------------------------- training engines


def init_horovod(info: DistInfo) -> Any:
    """Import and start Horovod (``train.backend: horovod``); returns ``horovod.torch``.

    Raises:
        UserError: Horovod is not installed, or sees another world size than the launcher.
    """
    try:
        import horovod.torch as hvd
    except ImportError:
        raise UserError("train.backend: horovod, but Horovod is not installed (see README: "
                        "build 0.28.1 with C++17), or use train.backend: ddp") from None
    hvd.init()
    if hvd.size() != info.world_size:
        raise UserError(f"Horovod sees {hvd.size()} ranks, the launcher {info.world_size}")
    return hvd


class Reducer:
    """Averages small lists of floats over ranks with the training engine's collectives."""

    def __init__(self, backend: str, world: int) -> None:
        self.backend, self.world = backend, world

    def mean(self, values: Sequence[float]) -> list[float]:
        """The element-wise mean of ``values`` over all ranks (every rank gets it)."""
        if self.world == 1:
            return list(values)
        import torch

        t = torch.tensor(list(values), dtype=torch.float64)
        if self.backend == "horovod":
            import horovod.torch as hvd

            t = hvd.allreduce(t, op=hvd.Sum)
        else:
            import torch.distributed as dist

            dist.all_reduce(t)
        return (t / self.world).tolist()


#: What a collective library says when the rank at the other end is gone (gloo, MPI, sockets).
_PEER_LOST = re.compile(r"connection (reset|closed|refused) by peer|broken pipe|"
                        r"connection (was )?(closed|reset|lost)|peer (closed|lost|disconnected)|"
                        r"ECONNRESET|EPIPE|process.* (failed|died|exited)", re.IGNORECASE)
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")


def _host_of(address: str, timeout_s: float = 2.0) -> str | None:
    """The name of ``address`` (/etc/hosts, DNS), or None within ``timeout_s``."""
    import threading

    found: list[str] = []

    def look() -> None:
        try:
            found.append(socket.gethostbyaddr(address)[0])
        except OSError:
            pass

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(timeout_s)
    return found[0] if found else None


#: What to do after a lost node ends training (the end of :func:`describe_peer_loss`'s line).
RESUME_HINT = "continue with --resume auto once the nodes are back, or on the nodes left"


def describe_peer_loss(exc: BaseException,
                       resolve: Callable[[str], str | None] | None = None,
                       then: str = RESUME_HINT) -> str | None:
    """Describe a collective's lost peer in one line, or return None.

    One line for an exception that says a collective lost the rank at its other end (a node
    lost, a rank killed): which node (named from the address in the library's message, by
    ``resolve``: the host table by default), on which host this rank noticed it, the
    library's own words, and ``then`` (what to do); None for anything else.
    """
    resolve = resolve or _host_of
    text = str(exc).strip()
    if not text or not _PEER_LOST.search(text):
        return None
    where = []
    for address in dict.fromkeys(_IPV4.findall(text)):
        if address.startswith("127."):
            continue
        name = resolve(address)
        where.append(f"{name} ({address})" if name else address)
    first = text.splitlines()[0]
    first = first if len(first) <= 160 else first[:159] + "…"
    return (f"lost contact with {', '.join(where) or 'another rank'}: a collective failed "
            f"on {socket.gethostname()} ({type(exc).__name__}: {first}); the node or its ranks "
            f"are gone: the job ends here ({then})")
