"""Locations inside the project checkout (embedded data, shipped weights)."""
from __future__ import annotations

from pathlib import Path


def project_root() -> Path:
    """Return the checkout's root folder.

    The checkout's root folder: the parent of the ``harness`` package (this file is
    ``harness/data/locations.py``).
    """
    return Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The embedded data folder (``data/`` in the checkout)."""
    return project_root() / "data"


def embedded_asc19_dir() -> Path:
    """The vendored ASC19 validation set (``val_HR``/``val_LR``, 300 pairs)."""
    return data_dir() / "asc19-val"
