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
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fileio.user_error import UserError, describe_os_error

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
        existing = sorted(p.name for p in o.iterdir())
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
