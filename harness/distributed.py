"""Distributed bootstrap: the one module that knows how ranks are launched.

Rank, local rank and world size come from, in order: mpi4py (when the process was started by
an MPI launcher), then the environment variables of Open MPI (``OMPI_COMM_WORLD_*``), MPICH/Intel
MPI (``PMI_RANK``/``PMI_SIZE``/``MPI_LOCALRANKID``), Slurm (``SLURM_PROCID``/``SLURM_NTASKS``/
``SLURM_LOCALID``) and torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``). With no launcher the
process is rank 0 of 1 and everything runs in-process.

Nothing happens at import time: mpi4py is imported (which initialises MPI) only when
:func:`get_comm` is first called in a launched process.

Typical use::

    info = get_dist_info()
    comm = get_comm()                     # MPI communicator or a single-process stand-in
    init_torch_distributed(info, comm, backend="gloo")
    print0(info, "training on", info.world_size, "ranks")
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from harness.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

# (rank, size, local rank, local size) variable names per launcher, checked in this order.
_LAUNCHER_ENV: tuple[tuple[str, str, str, str, str], ...] = (
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
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
    """``openmpi``, ``mpich``, ``slurm``, ``torchrun`` or ``none``."""

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


def dist_info_from_env(env: Mapping[str, str] | None = None) -> DistInfo:
    """Read rank/size from launcher environment variables (pure; no MPI calls).

    Args:
        env: Environment to read; ``os.environ`` by default.

    Returns:
        The ranks seen by the first launcher whose variables are set, or a single process.
    """
    env = os.environ if env is None else env
    for launcher, rk, sz, lrk, lsz in _LAUNCHER_ENV:
        rank, size = _int(env, rk), _int(env, sz)
        if rank is None or size is None:
            continue
        local_rank = _int(env, lrk)
        local_size = _int(env, lsz)
        if local_rank is None:
            local_rank = rank
        if local_size is None:
            local_size = size
        if not 0 <= rank < size:
            raise UserError(f"launcher variables {rk}={rank} {sz}={size} are inconsistent")
        return DistInfo(rank, local_rank, size, local_size, launcher)
    return DistInfo(0, 0, 1, 1, "none")


class Comm(Protocol):
    """The collective operations the harness needs (a subset of mpi4py's lowercase API)."""

    rank: int
    size: int

    def bcast(self, obj: T, root: int = 0) -> T: ...
    def allgather(self, obj: T) -> list[T]: ...
    def gather(self, obj: T, root: int = 0) -> list[T] | None: ...
    def allreduce_sum(self, value: float) -> float: ...
    def barrier(self) -> None: ...


class SingleComm:
    """The communicator of a job with one rank."""

    rank = 0
    size = 1

    def bcast(self, obj: T, root: int = 0) -> T:
        return obj

    def allgather(self, obj: T) -> list[T]:
        return [obj]

    def gather(self, obj: T, root: int = 0) -> list[T] | None:
        return [obj]

    def allreduce_sum(self, value: float) -> float:
        return value

    def barrier(self) -> None:
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
        return self._comm.bcast(obj, root=root)

    def allgather(self, obj: T) -> list[T]:
        return self._comm.allgather(obj)

    def gather(self, obj: T, root: int = 0) -> list[T] | None:
        return self._comm.gather(obj, root=root)

    def allreduce_sum(self, value: float) -> float:
        return float(sum(self._comm.allgather(value)))

    def barrier(self) -> None:
        self._comm.Barrier()


_COMM: Comm | None = None


def get_dist_info() -> DistInfo:
    """Rank, local rank and world size of this process.

    Uses the launcher's environment; when mpi4py is already initialised, its communicator is
    trusted over the environment.
    """
    info = dist_info_from_env()
    if isinstance(_COMM, MPIComm) and _COMM.size != info.world_size:
        return DistInfo(_COMM.rank, info.local_rank, _COMM.size, info.local_world_size, "mpi")
    return info


def get_comm() -> Comm:
    """The job's communicator: mpi4py's COMM_WORLD under an MPI launcher, else single-process.

    Raises:
        UserError: launched with several ranks but mpi4py is missing or disagrees with the
            launcher about the world size.
    """
    global _COMM
    if _COMM is not None:
        return _COMM
    info = dist_info_from_env()
    if info.world_size == 1:
        _COMM = SingleComm()
        return _COMM
    if info.launcher == "torchrun":
        raise UserError("torchrun launches are not supported: use mpirun or srun "
                        "(see `harness launch`)")
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError(f"started by {info.launcher} with {info.world_size} ranks but mpi4py "
                        "is not installed: pip install mpi4py (see `harness doctor`)") from None
    comm = MPIComm(MPI.COMM_WORLD)
    if comm.size != info.world_size:
        raise UserError(f"mpi4py sees {comm.size} ranks but the launcher says "
                        f"{info.world_size}: mpi4py was built against another MPI than the "
                        "mpirun used (run `harness doctor`)")
    _COMM = comm
    return _COMM


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
    pair = None
    if comm.rank == 0:
        pair = (socket.gethostname() if comm.size > 1 else "127.0.0.1", free_port())
    return comm.bcast(pair, root=0)


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


def _resolvable(host: str) -> str:
    try:
        socket.gethostbyname(host)
        return host
    except OSError:
        return "127.0.0.1"


def shutdown_torch_distributed() -> None:
    """Tear down ``torch.distributed`` if it was initialised."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Every ``world_size``-th item starting at ``rank`` (round-robin, order-preserving)."""
    return list(items[rank::world_size])


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """Inverse of :func:`shard`: interleave the per-rank lists back into the original order."""
    out: list[T] = []
    longest = max((len(p) for p in parts), default=0)
    for i in range(longest):
        for part in parts:
            if i < len(part):
                out.append(part[i])
    return out


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
