"""The communicator of a sharded command (``infer``, ``evaluate``): gloo, as training's.

Open MPI (without ULFM) ends a process in its own C code, exit status 14 and no word, when a
collective finds a peer gone; a node lost during ``harness infer`` or ``harness evaluate`` across
nodes therefore left no line naming it. Training moved its collectives to a gloo group for this
(:func:`~harness.cluster.distributed.steps_comm`); the sharded commands do the same here, so a
lost peer becomes gloo's error, which :func:`~harness.cluster.distributed.describe_peer_loss`
turns into one line on every rank left.
"""
from __future__ import annotations

from fileio.user_error import UserError
from harness.cluster.distributed import (
    Comm,
    DistInfo,
    describe_peer_loss,
    init_torch_distributed,
    steps_comm,
)
from harness.cluster.watchdog import timeout_from_env, torch_timeout_s


def collectives_comm(info: DistInfo, comm: Comm, collective_timeout_s: float) -> Comm:
    """``comm``'s ranks over a watched gloo group (``comm`` itself on one rank or under torchrun).

    Collective: every rank must call it. The caller ends ``torch.distributed`` with
    :func:`~harness.cluster.distributed.shutdown_torch_distributed` when done.

    Args:
        info: This rank's placement.
        comm: The job's communicator (MPI), used for the rendezvous.
        collective_timeout_s: The job's ``train.collective_timeout_s`` (the environment's
            ``$HARNESS_COLLECTIVE_TIMEOUT_S`` wins).
    """
    if not info.distributed or comm.size <= 1:
        return comm
    timeout_s = torch_timeout_s(timeout_from_env(collective_timeout_s))
    init_torch_distributed(info, comm, backend="gloo", timeout_s=timeout_s)
    return steps_comm(comm, timeout_s)


def raise_if_peer_lost(exc: BaseException, then: str) -> None:
    """Turn a collective's error about a lost peer into the one line every rank left prints.

    Args:
        exc: What the command's work raised.
        then: What the user does next (the end of the line).

    Raises:
        UserError: ``exc`` says a node or rank is gone (exit code 1, printed by every rank
            left: rank 0 may be the one lost).
    """
    lost = describe_peer_loss(exc, then=then)
    if lost is not None:
        raise UserError(lost, 1, every_rank=True) from None
