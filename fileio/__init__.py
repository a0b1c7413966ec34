"""The files every package writes and reads: the one atomic writer, the one user-error type.

This package imports nothing from ``harness``, ``power`` or ``reports``, so all three can use it
(``power`` and ``reports`` must not import the harness).
"""
