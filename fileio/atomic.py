"""Atomic file writes for every package.

Atomic file writes: the one implementation every package (``harness``, ``power``,
``reports``) uses for every file it creates or replaces.

A file is written to a temporary name in its own folder, flushed to disk, given the permissions
a plain ``open()`` would give it (``0o666`` less the umask; ``mkstemp`` alone makes ``0o600``),
renamed over the target, and the folder itself is flushed so that the rename survives a power
cut. A crash can never leave a half-written file under the target's name, and a failed write
leaves no temporary file behind. JSON is always strict (RFC 8259): NaN and infinities become
``null``, never the ``NaN`` token that other readers reject.

Append-only logs (``metrics.jsonl``, power CSVs, ``train.log``) are not replaced but appended
to, one whole line per write; they do not come through here.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a folder that cannot be opened for reading (rare): the rename stands
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the data itself is on disk
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object], *,
                 fsync: bool = True) -> Path:
    """Create or replace ``path`` with what ``write(binary_file)`` writes, atomically.

    Args:
        path: Destination; parent folders are created.
        write: Called once with the open temporary file.
        fsync: Flush the data and the folder to disk (default). Only files rewritten many
            times a second that a crash may lose (a simulator's state) pass False.

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
    if fsync:
        _fsync_dir(dest.parent)
    return dest


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data), fsync=fsync)


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (newlines kept as given)."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (non-JSON values via ``str``, non-finite floats as null)."""
    return json.dumps(strict_json(obj), indent=indent, default=str, allow_nan=False)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2,
                      fsync: bool = True) -> Path:
    """Write ``obj`` as strict JSON (see :func:`dumps_json`) to ``path`` atomically."""
    return write_text_atomic(path, dumps_json(obj, indent=indent) + "\n", fsync=fsync)


def exchange_folders(a: str | Path, b: str | Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        True when swapped atomically; False when this system or file system cannot (then
        nothing was changed, and the caller falls back to two renames).
    """
    import ctypes
    import ctypes.util
    import errno as _errno

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        _fsync_dir(Path(a).parent)
        return True
    err = ctypes.get_errno()
    if err in (_errno.EINVAL, _errno.ENOSYS, _errno.ENOTSUP, _errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))
