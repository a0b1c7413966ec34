"""Error types shared by every part of the harness.

A :class:`UserError` is a mistake the user can fix (a bad job file, a missing folder, a corrupt
image). The command line prints it as one line and exits with its ``exit_code`` (2 unless said
otherwise), without a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input, reported as one line.

    Args:
        message: What went wrong and where, e.g. ``"jobs/x.yaml: train.lr: expected a number"``.
        exit_code: Process exit status to use when this reaches the command line.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
