"""The one atomic text write of the ``power`` package (which imports nothing from ``harness``).

The text goes to a temporary file in the target's folder, then replaces the target in one
rename, so a reader (the report, a resumed sweep, a second process sharing simulated GPU state)
never sees half a file.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Create or replace ``path`` with UTF-8 ``text`` atomically; returns the path."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
