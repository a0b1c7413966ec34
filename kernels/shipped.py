"""Weights shipped with the project (``kernels/weights/``), found by model name and arguments.

``kernels/weights/MANIFEST.json`` lists each shipped checkpoint with the model name and
keyword arguments it was trained for, its SHA-256 and the recipe (job files, first stage first)
that produced it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def manifest(folder: Path = WEIGHTS_DIR) -> list[dict[str, Any]]:
    """Entries of the shipped-weights manifest (empty when nothing is shipped)."""
    path = folder / "MANIFEST.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("weights", []))


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_checkpoint(name: str, kwargs: dict[str, Any],
                       folder: Path = WEIGHTS_DIR) -> str | None:
    """Path of the shipped checkpoint for this model, after checking its checksum; else None.

    Raises:
        ValueError: the file exists but its checksum does not match the manifest.
    """
    for entry in manifest(folder):
        if entry.get("model") != name or entry.get("model_kwargs") != kwargs:
            continue
        path = folder / entry["file"]
        if not path.is_file():
            return None
        if sha256(path) != entry["sha256"]:
            raise ValueError(f"{path}: checksum mismatch with MANIFEST.json")
        return str(path)
    return None
