"""Where a command may write: the one check every output path passes before anything is written.

Rules (the user's data wins every tie):

- an output is never an input, never contains one and never lies inside one (paths are resolved,
  so ``./x``, ``x/../x`` and symlinks count as the same folder);
- an output that is an existing file where a folder is needed, or a folder that cannot be
  written, is refused with one line;
- files already there are replaced only when the user asked (``--overwrite``); without it the
  command names the first files it would have replaced and stops;
- files another command wrote (``protected``, e.g. infer's ``scores.json`` with its power
  figures) are never replaced, ``--overwrite`` or not.

Every command calls :func:`check_output` (or :func:`check_output_file`) before its first
write; under MPI, rank 0 checks and :func:`agree` makes every rank fail alike.

An output folder has one writer at a time: :func:`claim_output` checks, takes the folder's
lock (:func:`fileio.locks.lock_folder`: a second command is refused with one line naming the
holder; a dead holder holds nothing) and checks again. A command that replaces a whole set
of files (``harness infer --overwrite``: SR images with their ``scores.json``) writes the new
set into a staging folder beside the output and swaps the two folders in one step
(:class:`StagedFolder`): an interrupted replace leaves the old set or the new one, never a
mix.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from fileio.locks import LOCK_NAME, lock_folder, unlock_folder
from fileio.user_error import UserError, describe_os_error

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How many clashing names an error lists.
_SHOWN = 5


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_not_input(out: str | Path, inputs: Iterable[str | Path | None], *,
                    what: str = "--out") -> Path:
    """Refuse an output that is, contains or lies inside one of ``inputs``.

    Returns:
        The resolved output path.
    """
    o = _resolved(out)
    for item in inputs:
        if item is None or str(item).startswith("embedded:"):
            continue
        i = _resolved(item)
        if o == i:
            raise UserError(f"{what} {out}: is also an input ({item}); choose another folder")
        if _inside(i, o):
            raise UserError(f"{what} {out}: contains the input {item}; choose a folder "
                            "outside the inputs")
        if _inside(o, i):
            raise UserError(f"{what} {out}: lies inside the input {item}; choose a folder "
                            "outside the inputs")
    return o


def check_output(out: str | Path, inputs: Iterable[str | Path | None] = (), *,
                 overwrite: bool = False, will_write: Iterable[str] | None = None,
                 protected: Callable[[Path], str | None] | None = None,
                 what: str = "--out") -> Path:
    """Check that the folder ``out`` may receive this command's files; write nothing.

    Args:
        out: Output folder (need not exist yet).
        inputs: Files and folders the command reads (None and ``embedded:`` entries skipped).
        overwrite: The user asked to replace existing files (``--overwrite``).
        will_write: Names (relative to ``out``) the command will create. Without it, any
            existing entry in ``out`` counts as a clash.
        protected: Called with each existing target; a reason string means "never replace,
            even with ``--overwrite``".
        what: The option named in messages.

    Returns:
        The resolved output folder.

    Raises:
        UserError: any rule in the module docstring is broken (one line).
    """
    o = check_not_input(out, inputs, what=what)
    if o.exists() and not o.is_dir():
        raise UserError(f"{what} {out}: is a file, not a folder")
    probe = o
    while not probe.exists():  # the nearest existing ancestor must be a writable folder
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {out}: {probe} is a file, not a folder")
    _check_writable(probe, out, what)
    if not o.is_dir():
        return o
    if will_write is None:
        existing = sorted(p.name for p in o.iterdir() if p.name != LOCK_NAME)
    else:
        existing = sorted({n for n in will_write if (o / n).exists() or (o / n).is_symlink()})
    if protected is not None:
        for name in existing:
            reason = protected(o / name)
            if reason:
                raise UserError(f"{what} {out}: {name} {reason}; it is never replaced: "
                                "choose another folder")
    if existing and not overwrite:
        shown = ", ".join(existing[:_SHOWN]) + (", ..." if len(existing) > _SHOWN else "")
        raise UserError(f"{what} {out}: would replace {len(existing)} existing file(s) "
                        f"({shown}); choose an empty folder or pass --overwrite")
    return o


def _check_writable(folder: Path, out: str | Path, what: str) -> None:
    """``folder`` (the nearest existing one of ``out``) must take new files."""
    if os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "read-only file system" if read_only else "permission denied"
    raise UserError(f"{what} {out}: {why} (cannot write in {folder})")


def check_output_file(out: str | Path, inputs: Iterable[str | Path | None] = (), *,
                      overwrite: bool = False, what: str = "-o") -> Path:
    """Like :func:`check_output` for a single output file (e.g. ``report.html``)."""
    o = check_not_input(out, inputs, what=what)
    if o.is_dir():
        raise UserError(f"{what} {out}: is a folder, not a file")
    if o.exists() and not overwrite:
        raise UserError(f"{what} {out}: already exists; choose another name or pass "
                        "--overwrite")
    probe = o.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {out}: {probe} is a file, not a folder")
    _check_writable(probe, out, what)
    return o


def agree(comm: Any, check: Callable[[], Any]) -> Any:
    """Run ``check`` on rank 0 only; every rank raises its UserError or gets its result.

    Checking on one rank keeps the ranks from racing (rank 1 must not see rank 0's first file
    as a clash) and makes all of them fail with the same line.
    """
    outcome: tuple[str, Any] = ("ok", None)
    if comm.rank == 0:
        try:
            outcome = ("ok", check())
        except UserError as exc:
            outcome = ("error", (str(exc), exc.exit_code))
        except OSError as exc:  # e.g. a read-only run folder: every rank must hear of it
            outcome = ("error", (describe_os_error(exc), 1))
    outcome = comm.bcast(outcome, root=0) if comm.size > 1 else outcome
    if outcome[0] == "error":
        raise UserError(outcome[1][0], exit_code=outcome[1][1])
    return outcome[1]


def claim_output(out: str | Path, check: Callable[[], T]) -> T:
    """Make this process the one writer of the folder ``out``.

    Make this process the one writer of the folder ``out``: ``check()`` (which writes
    nothing), take the folder's lock, ``check()`` again (a writer may have finished in
    between). A folder created for the lock is removed again when the check fails.

    Returns:
        What ``check`` returns.

    Raises:
        UserError: the check fails, or another command holds the folder.
    """
    check()
    o = _resolved(out)
    existed = o.exists()
    recover_staged(o)
    lock_folder(o)
    try:
        return check()
    except BaseException:
        if not existed:
            unlock_folder(o)
            shutil.rmtree(o, ignore_errors=True)
        raise


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.staging-"


def _old_prefix(out: Path) -> str:
    return f".{out.name}.old-"


def recover_staged(out: Path) -> None:
    """Undo what an interrupted :meth:`StagedFolder.commit` left.

    Undo what an interrupted :meth:`StagedFolder.commit` without an atomic swap left: the
    whole old set is renamed back when ``out`` itself is missing.
    """
    if out.exists() or not out.parent.is_dir():
        return
    for old in sorted(out.parent.glob(_old_prefix(out) + "*")):
        log.warning("%s: restoring the previous outputs from %s (an interrupted replace)",
                    out, old.name)
        os.replace(old, out)
        return


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` gets ``src``'s files as hard links (copies where links are refused)."""
    if src.is_symlink() or not src.is_dir():
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            shutil.copy2(src, dst, follow_symlinks=False)
        return
    dst.mkdir()
    for child in src.iterdir():
        _link_tree(child, dst / child.name)


class StagedFolder:
    """A new set of outputs written beside ``out`` and swapped in whole by :meth:`commit`.

    The caller holds ``out``'s lock (:func:`claim_output`); stagings left by a killed
    command are removed here. Files in ``out`` that the new set does not replace (the user's
    own, the lock) are carried over as hard links, so that nothing is lost by the swap.

    Args:
        out: The output folder (it exists: it holds the lock).
    """

    def __init__(self, out: str | Path) -> None:
        self.out = _resolved(out)
        for stale in self.out.parent.glob(_staging_prefix(self.out) + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.out.parent.glob(_old_prefix(self.out) + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.path = self.out.parent / f"{_staging_prefix(self.out)}{os.getpid()}"
        self.path.mkdir()

    def commit(self) -> None:
        """Swap the staged set in: ``out`` holds the old set or the new one at every moment."""
        for entry in self.out.iterdir():
            if not (self.path / entry.name).exists():
                _link_tree(entry, self.path / entry.name)
        from fileio.atomic import _fsync_dir, exchange_folders

        _fsync_dir(self.path)
        if exchange_folders(self.path, self.out):
            shutil.rmtree(self.path, ignore_errors=True)
            return
        # no atomic swap here (e.g. NFS): two renames; recover_staged() undoes a crash between
        old = self.out.parent / f"{_old_prefix(self.out)}{os.getpid()}"
        os.replace(self.out, old)
        os.replace(self.path, self.out)
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staging (the command failed: ``out`` keeps the old set)."""
        shutil.rmtree(self.path, ignore_errors=True)
