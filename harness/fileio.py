"""Atomic file writes: the one implementation every writer in ``harness/`` and ``reports/`` uses.

A file is written to a temporary name in its own folder, optionally flushed to disk, given the
permissions a plain ``open()`` would give it (``0o666`` less the umask; ``mkstemp`` alone makes
``0o600``), then renamed over the target. A crash can never leave a half-written file under the
target's name, and a failed write leaves no temporary file behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], *,
                 fsync: bool = False) -> Path:
    """Create or replace ``path`` with what ``write(binary_file)`` writes, atomically.

    Args:
        path: Destination; parent folders are created.
        write: Called once with the open temporary file.
        fsync: Flush the data to disk before the rename (checkpoints, shards).

    Returns:
        The destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(dest)  # "disk full: <the file>", not a bare "disk full"
        raise
    return dest


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines kept as given)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (non-JSON values via ``str``) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=str) + "\n")
