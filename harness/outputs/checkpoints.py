"""Checkpoints: atomic writes, safe loads, and pruning to the last K plus the best.

A checkpoint is a plain dict of tensors and Python scalars/containers, saved with
``torch.save`` to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a crash can never leave a half-written checkpoint under a checkpoint's name.
Loading always uses ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fileio.atomic import atomic_write
from fileio.user_error import UserError

CKPT_RE = re.compile(r"^ckpt-(\d{6,})\.pt$")
BEST_NAME = "best.pt"


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint taken after ``step`` steps."""
    return f"ckpt-{step:06d}.pt"


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """Save ``obj`` to ``path`` via a temporary file and ``os.replace``."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), fsync=True)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``).

    Raises:
        UserError: the file is missing, truncated, or not a checkpoint of this harness.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: checkpoint not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is a bad file
        raise UserError(f"{p}: cannot load checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise UserError(f"{p}: not a harness checkpoint (no 'model' entry)")
    return obj


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the numbered checkpoints in ``folder``, oldest first."""
    d = Path(folder)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found)


def latest(folder: str | Path) -> Path | None:
    """The most recent numbered checkpoint in ``folder``, if any."""
    items = list_checkpoints(folder)
    return items[-1][1] if items else None


def prune(folder: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest numbered checkpoints; returns what was deleted."""
    items = list_checkpoints(folder)
    doomed = [p for _, p in items[:-keep_last]] if keep_last > 0 else [p for _, p in items]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


#: What a full (resumable) checkpoint holds besides the model.
FULL_KEYS = ("optimizer", "scheduler", "step")


def is_run_dir(path: str | Path) -> bool:
    """A run folder of this harness: it has ``job.yaml`` and ``manifest.json``."""
    p = Path(path)
    return (p / "job.yaml").is_file() and (p / "manifest.json").is_file()


def resolve_resume_path(target: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) that ``--resume target`` names, from the paths alone.

    The checks of :func:`resolve_resume` that read no checkpoint: ``harness launch`` makes
    them before it starts any rank.

    Raises:
        UserError: not a run folder, no checkpoint in it, or a file outside its
            ``checkpoints/``.
    """
    p = Path(target).expanduser()
    if p.is_dir():
        run_dir = p.resolve()
        if not is_run_dir(run_dir):
            raise UserError(f"--resume {target}: not a run folder (no job.yaml and "
                            "manifest.json)")
        found = latest(run_dir / "checkpoints")
        if found is None:
            raise UserError(f"--resume {target}: no checkpoints to resume from")
    elif p.is_file():
        found = p.resolve()
        run_dir = found.parent.parent
        if found.parent.name != "checkpoints" or not is_run_dir(run_dir):
            raise UserError(f"--resume {target}: not a checkpoint of a run folder "
                            "(RUN/checkpoints/ckpt-NNNNNN.pt); to start from these weights, "
                            "use model.init_from")
    else:
        raise UserError(f"--resume {target}: no such run directory or checkpoint")
    return run_dir, found


def resolve_resume(target: str | Path, check_model: Callable[[dict[str, Any], str], object]
                   | None = None) -> tuple[Path, Path]:
    """Turn ``--resume`` (a run directory or a checkpoint file) into (run_dir, checkpoint).

    Everything is checked before the caller writes anything: the folder is a run folder
    (``job.yaml`` + ``manifest.json``), a file lies in that folder's ``checkpoints/``, the
    checkpoint is a full one (optimizer, schedule, step; ``best.pt`` holds weights only), and
    ``check_model(state, where)`` accepts its model (it raises :class:`UserError` if not).

    Raises:
        UserError: any of these does not hold (one line naming the file).
    """
    run_dir, found = resolve_resume_path(target)
    state = load(found)
    missing = [k for k in FULL_KEYS if k not in state]
    if missing:
        raise UserError(f"--resume {target}: {found.name} holds weights only (no "
                        f"{', '.join(missing)}); resume from the run folder or a "
                        "ckpt-NNNNNN.pt, or start a new run with model.init_from")
    if check_model is not None:
        check_model(state, f"--resume {found}")
    return run_dir, found
