"""Warnings every rank would give alike, logged once per job on rank 0.

Below the data and scoring rooms, which warn about inputs through it
(:mod:`harness.outputs.logs` re-exports both functions).
"""
from __future__ import annotations

import logging
from typing import Any

#: Keys of the warnings :func:`warn_once` has logged in this process.
_WARNED: set[str] = set()


def warn_once(logger: logging.Logger, key: str, msg: str, *args: Any) -> bool:
    """Log a warning about something every rank sees alike (an input, a score) once per job.

    Only rank 0 logs it (the other ranks would repeat it word for word), and only the first
    time ``key`` comes up in this process (not once per batch, validation or call).

    Returns:
        Whether it was logged here.
    """
    from harness.cluster.distributed import get_dist_info

    if key in _WARNED or get_dist_info().rank != 0:
        return False
    _WARNED.add(key)
    logger.warning(msg, *args)
    return True


def reset_warn_once() -> None:
    """Forget what :func:`warn_once` logged (for tests, and for a new job in one process)."""
    _WARNED.clear()
