"""Say in ``train.log`` why a run whose ranks were killed during start-up ended.

``mpirun`` answers a stop signal with SIGTERM to the ranks and SIGKILL about half a second
later. A rank 0 still starting up (importing, loading data, or waiting in a collective for a
slower rank, where no Python signal handler runs) dies before it can write the line its
:class:`~harness.outputs.logs.RunLog` ends with, leaving a run folder with an empty
``train.log``. ``harness launch`` knows it passed a stop signal on; afterwards it gives each run
folder of the job made since it started, whose writer is gone and whose log has no end line,
that line.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path

from fileio.locks import lock_folder, unlock_folder
from fileio.user_error import UserError
from harness.outputs.logs import RUN_ENDED, utc_formatter

log = logging.getLogger(__name__)

_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-\d+)?$")


def _started(folder: Path, name: str) -> float | None:
    """When ``folder`` (``<name>-<local time stamp>[-n]``) was made, or None if not a run of it."""
    rest = folder.name[len(name):] if folder.name.startswith(name) else ""
    match = _STAMP.fullmatch(rest)
    if match is None:
        return None
    return time.mktime(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))


def _has_end_line(path: Path) -> bool:
    """Whether the log's last line is a run's end line (``RUN_ENDED``) or a finished summary."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except FileNotFoundError:
        return False
    return bool(lines) and RUN_ENDED in lines[-1]


def _lock_when_free(folder: Path, wait_s: float) -> bool:
    """Take ``folder``'s lock within ``wait_s`` seconds (a rank mpirun left dying may hold it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock_folder(folder)
            return True
        except UserError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def close_killed_runs(parent: Path, name: str, since: float, why: str,
                      wait_s: float = 5.0) -> list[Path]:
    """End the log of every run of ``name`` under ``parent`` made since ``since`` and killed.

    A run counts as killed when no process holds its folder (its ranks are gone), it has no
    ``summary.json`` and its ``train.log`` does not end with the end line; that line is
    appended (the log created if it is missing). Folders a live process holds are left alone.

    Args:
        parent: The folder the run folders are in (``launch.run_dir`` or ``--run-dir``).
        name: The job's name (run folders are ``<name>-<time stamp>``).
        since: Epoch seconds: folders with an older time stamp are not this launch's.
        why: What the line says after "the run ended: ".
        wait_s: How long a folder's lock may stay held (its rank still dying) before the run
            counts as alive.

    Returns:
        The run folders given an end line.
    """
    closed: list[Path] = []
    candidates: list[Path] = []
    with contextlib.suppress(OSError):  # no parent folder: nothing was made
        candidates = sorted(parent.iterdir())
    for folder in candidates:
        started = _started(folder, name)
        if folder.is_symlink() or not folder.is_dir() or started is None \
                or started < int(since) or (folder / "summary.json").exists():
            continue
        train_log = folder / "train.log"
        if _has_end_line(train_log):
            continue
        if not _lock_when_free(folder, wait_s):
            continue  # a live writer: not killed
        try:
            record = logging.LogRecord("harness", logging.ERROR, __file__, 0,
                                       "the run ended: %s", (why,), None)
            with train_log.open("a", encoding="utf-8") as out:
                out.write(utc_formatter().format(record) + "\n")
            closed.append(folder)
        except OSError as exc:
            log.warning("%s: could not say why the run ended (%s)", train_log, exc)
        finally:
            unlock_folder(folder)
    return closed
