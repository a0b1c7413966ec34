"""One writer per output folder: the lock every command takes on the folder it writes.

The lock is an ``flock`` on ``<folder>/.lock``, held by an open file for the life of the
process: the kernel drops it when the process ends, however it ends (a ``kill -9`` included),
so a dead owner never holds a folder. The lock file also says who holds it (pid, host,
command, start time), so that a second command refuses with one line naming the holder.

The lock file is written in place, not through :mod:`fileio.atomic`: replacing it would give
the next process another inode than the one locked.
"""
from __future__ import annotations

import atexit
import fcntl
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from fileio.user_error import UserError

#: Name of the lock file inside a locked folder.
LOCK_NAME = ".lock"

#: Open lock files of the folders this process writes (the lock is the open file).
_HELD: dict[Path, int] = {}


def _holder_line() -> str:
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    return (f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {command}")


def lock_folder(folder: str | Path) -> Path:
    """Make this process the only writer of ``folder`` (created if missing) until it ends.

    Idempotent within a process.

    Returns:
        The resolved folder.

    Raises:
        UserError: another live process holds the folder (the message names it).
    """
    key = Path(folder).expanduser().resolve()
    if key in _HELD:
        return key
    key.mkdir(parents=True, exist_ok=True)
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 1000).decode("utf-8", "replace").strip()
        os.close(fd)
        raise UserError(f"{folder}: in use by another process ({holder or 'unknown'}); wait "
                        "for it to end or choose another folder (one writer per "
                        "folder)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (_holder_line() + "\n").encode(), 0)
    if not _HELD:
        atexit.unregister(_release_all)  # registered once, when the first lock is taken
        atexit.register(_release_all)
    _HELD[key] = fd
    return key


def holder(folder: str | Path) -> tuple[int, str] | None:
    """Return the (pid, host) that ``folder``'s lock file names, or None.

    (pid, host) that ``folder``'s lock file names, or None (no lock file, or not one this
    module wrote). Says who wrote it last, not whether that process still holds it.
    """
    try:
        words = (Path(folder) / LOCK_NAME).read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return None
    if len(words) < 4 or words[0] != "pid" or not words[1].isdigit() or words[2] != "on":
        return None
    return int(words[1]), words[3].rstrip(",")


def holder_alive(folder: str | Path) -> bool:
    """Whether the process named in ``folder``'s lock file (``pid N on HOST``) still runs.

    Only a process on this host can be checked; one elsewhere counts as alive (its end shows
    in the folder, e.g. a new ``summary.json``). The lock itself is not touched: taking it,
    even for a moment, could make a ``--resume`` starting at that moment fail. A process that
    ended but was not reaped yet (a zombie) counts as gone.
    """
    found = holder(folder)
    if found is None:
        return False
    pid, host = found
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether the process has ended but was not reaped yet (``kill -0`` still reaches it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return any(line.split()[1:2] == ["Z"] for line in status.splitlines()
               if line.startswith("State:"))


def holds(folder: str | Path) -> bool:
    """True when this process holds ``folder``'s lock."""
    return Path(folder).expanduser().resolve() in _HELD


def unlock_folder(folder: str | Path) -> None:
    """Release :func:`lock_folder` and remove its lock file.

    Release :func:`lock_folder` and remove its lock file, so that a finished command leaves
    nothing in the folder (a process that dies keeps no lock either: the kernel drops it, and
    the file left behind names a process that is gone).
    """
    key = Path(folder).expanduser().resolve()
    fd = _HELD.pop(key, None)
    if fd is not None:
        try:
            (key / LOCK_NAME).unlink(missing_ok=True)  # still holding it: no one else's file
        except OSError:
            pass
        os.close(fd)


def _release_all() -> None:
    for folder in list(_HELD):
        unlock_folder(folder)



def rekey(old: str | Path, new: str | Path) -> None:
    """The locked folder ``old`` is now at ``new`` (renamed while locked)."""
    fd = _HELD.pop(Path(old).expanduser().resolve(), None)
    if fd is not None:
        _HELD[Path(new).expanduser().resolve()] = fd
