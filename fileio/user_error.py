"""Error types shared by every part of the harness.

A :class:`UserError` is a mistake the user can fix (a bad job file, a missing folder, a corrupt
image). The command line prints it as one line and exits with its ``exit_code`` (2 unless said
otherwise), without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import errno


class UserError(Exception):
    """An error caused by the user's input, reported as one line.

    Args:
        message: What went wrong and where, e.g. ``"jobs/x.yaml: train.lr: expected a number"``.
        exit_code: Process exit status to use when this reaches the command line.
        every_rank: Every rank prints it (see the attribute).
    """

    def __init__(self, message: str, exit_code: int = 2, *, every_rank: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.every_rank = every_rank
        """Printed by every rank, not only rank 0: raised before the ranks can agree (a
        launcher may end rank 0 before it speaks, when another rank fails first)."""


#: errno -> what the user should read first.
_OS_WHAT = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
            errno.EACCES: "permission denied", errno.EPERM: "not permitted",
            errno.EROFS: "read-only file system", errno.EISDIR: "is a folder",
            errno.ENOTDIR: "not a folder", errno.ENOENT: "not found",
            errno.EEXIST: "already exists", errno.EIO: "input/output error",
            errno.EMFILE: "too many open files"}


def describe_os_error(exc: OSError) -> str:
    """``<what>: <path>: <strerror>`` for an error of the file system or the machine."""
    what = _OS_WHAT.get(exc.errno or 0, "system error")
    path = exc.filename if exc.filename is not None else None
    parts = [what] + ([str(path)] if path is not None else [])
    detail = exc.strerror or str(exc) or exc.__class__.__name__
    if detail.lower() != what:
        parts.append(detail)
    return ": ".join(parts)
