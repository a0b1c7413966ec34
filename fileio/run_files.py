"""The files of a run folder as both sides see them: the harness writes them, the report reads
them (without importing the harness).

Layout of ``runs/<name>-<YYYYmmdd-HHMMSS>/`` (written by :mod:`harness.outputs.run_folders`):
``job.yaml``, ``manifest.json``, ``metrics.jsonl``, ``summary.json``, ``train.log``,
``checkpoints/``, ``power/node<i>/`` and, after inference, ``infer/``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

#: The run folder's files, by role.
JOB_FILE = "job.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOG_FILE = "train.log"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a truncated last line is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a run folder's CSV file (power samples, per-image scores) as dicts; [] when
    the file does not exist.

    Raises:
        ValueError: the file cannot be read or parsed (the message says why).
    """
    p = Path(path)
    if not p.is_file():
        return []
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"unreadable ({exc})") from None
