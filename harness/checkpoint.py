"""Checkpoints: atomic writes, safe loads, and pruning to the last K plus the best.

A checkpoint is a plain dict of tensors and Python scalars/containers, saved with
``torch.save`` to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a crash can never leave a half-written checkpoint under a checkpoint's name.
Loading always uses ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fileio import atomic_write

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


def resolve_resume(target: str | Path) -> tuple[Path, Path]:
    """Turn ``--resume`` (a run directory or a checkpoint file) into (run_dir, checkpoint).

    Raises:
        UserError: no checkpoint to resume from.
    """
    p = Path(target)
    if p.is_dir():
        ckpt = latest(p / "checkpoints")
        if ckpt is None:
            raise UserError(f"{p}: no checkpoints to resume from")
        return p, ckpt
    if p.is_file():
        return p.parent.parent, p
    raise UserError(f"{p}: no such run directory or checkpoint")
