"""Communicators: how governors on different nodes exchange their readings.

The governor needs exactly one collective, ``allgather(obj) -> list`` (one entry per node, in
rank order), plus ``rank`` and ``size``. Three implementations:

* :class:`SingleProcessComm` - one node, no MPI.
* :class:`MpiComm` - wraps an ``mpi4py`` communicator. It should contain one process per node
  (the local-rank-0 governor); :meth:`MpiComm.node_leaders` builds that from ``COMM_WORLD``.
* :class:`InProcessGroup` - several "nodes" as threads of one process, for tests.
"""
from __future__ import annotations

import threading
from typing import Any, Protocol


class Communicator(Protocol):
    """What the governor needs from a communicator."""

    rank: int
    size: int

    def allgather(self, obj: Any) -> list[Any]:
        """Return every member's ``obj``, indexed by rank (a collective: all must call)."""


class SingleProcessComm:
    """A communicator of one: ``allgather(x) == [x]``."""

    rank = 0
    size = 1

    def allgather(self, obj: Any) -> list[Any]:
        """Return ``[obj]``."""
        return [obj]


class MpiComm:
    """Adapter over an ``mpi4py`` communicator (pickle-based ``allgather``).

    Args:
        comm: An ``mpi4py.MPI.Comm`` (or anything with ``Get_rank``, ``Get_size``, ``allgather``).
    """

    def __init__(self, comm: Any) -> None:
        self._comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())

    def allgather(self, obj: Any) -> list[Any]:
        """Gather ``obj`` from every rank."""
        return list(self._comm.allgather(obj))

    @classmethod
    def node_leaders(cls, comm: Any, local_rank: int) -> MpiComm | None:
        """Split ``comm`` into a communicator of the local-rank-0 processes (one per node).

        Collective over ``comm``. Returns None on processes with ``local_rank != 0``.
        """
        from mpi4py import MPI  # lazy: MPI is optional

        color = 0 if local_rank == 0 else MPI.UNDEFINED
        sub = comm.Split(color, comm.Get_rank())
        return None if sub == MPI.COMM_NULL else cls(sub)


class InProcessGroup:
    """``size`` fake nodes in one process; each thread uses ``group.comm(rank)``.

    Args:
        size: Number of members.
        timeout_s: How long ``allgather`` waits for the others before raising
            ``threading.BrokenBarrierError`` (a stuck peer must not hang a test forever).
    """

    def __init__(self, size: int, timeout_s: float = 30.0) -> None:
        if size < 1:
            raise ValueError(f"InProcessGroup: size must be >= 1, got {size}")
        self.size = size
        self._slots: list[Any] = [None] * size
        self._barrier = threading.Barrier(size, timeout=timeout_s)

    def comm(self, rank: int) -> InProcessComm:
        """Return the communicator of member ``rank``."""
        if not 0 <= rank < self.size:
            raise ValueError(f"rank {rank} outside [0, {self.size})")
        return InProcessComm(self, rank)

    def _allgather(self, rank: int, obj: Any) -> list[Any]:
        self._slots[rank] = obj
        self._barrier.wait()
        result = list(self._slots)
        self._barrier.wait()  # nobody overwrites a slot before everyone has read it
        return result

    def abort(self) -> None:
        """Break the barrier so waiting members raise instead of hanging."""
        self._barrier.abort()


class InProcessComm:
    """One member of an :class:`InProcessGroup`."""

    def __init__(self, group: InProcessGroup, rank: int) -> None:
        self._group = group
        self.rank = rank
        self.size = group.size

    def allgather(self, obj: Any) -> list[Any]:
        """Gather ``obj`` from every member thread."""
        return self._group._allgather(self.rank, obj)
