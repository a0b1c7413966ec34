"""The files of a run folder, shared by the harness (writer) and the report (reader).

The files of a run folder as both sides see them: the harness writes them, the report reads
them (without importing the harness).

Layout of ``runs/<name>-<YYYYmmdd-HHMMSS>/`` (written by :mod:`harness.outputs.run_folders`):
``job.yaml``, ``manifest.json``, ``metrics.jsonl``, ``summary.json``, ``train.log``,
``checkpoints/``, ``power/node<i>/`` and, after inference, ``infer/`` (the SR images and their
scores) with its power records beside it in ``infer.power/`` (see :func:`infer_power_dir`).
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

#: ``metrics.jsonl``'s marker of a resume: ``{"kind": "resume", "step": S, ...}``, written when
#: an attempt continues from the checkpoint of step S.
RESUME_KIND = "resume"


#: What the last line of ``train.log`` holds after its time stamp when a run ended on an error
#: or a signal (``harness.outputs.logs.RUN_ENDED``, written by the run or by ``harness launch``).
RUN_ENDED = "ERROR harness: the run ended: "


def run_end_reason(log_path: str | Path) -> str | None:
    """Why the run ended, from the last line of its ``train.log``; None if it does not say."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return None
    if not tail or RUN_ENDED not in tail[-1]:
        return None
    return tail[-1].split(RUN_ENDED, 1)[1].strip()


def infer_power_dir(sr_dir: str | Path) -> Path:
    """Where ``harness infer --out SR_DIR`` keeps its power records: ``SR_DIR.power/`` beside it.

    The SR folder is what a team hands in, so it holds the SR images (and their scores) only.
    Folders written before this rule kept them in ``SR_DIR/power/``; the report reads either.
    """
    sr = Path(sr_dir).absolute()
    return sr.with_name(sr.name + ".power")


def node_folder(index: int) -> str:
    """The folder of node ``index`` under ``power/``: ``node000``, ``node001``, ..."""
    return f"node{index:03d}"


def node_label(folder: str, host: str = "") -> str:
    """How every view names a node: ``node000 (gpu-a17)``, or the folder name alone.

    The folder name alone when no host was recorded, or the host is called as its folder.
    """
    return f"{folder} ({host})" if host and host != folder else folder


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` as written (a truncated last line is skipped).

    :func:`continued_branch` keeps the steps that the run continued from.
    """
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def continued_branch(records: list[Any]) -> list[Any]:
    """The records of the branch the run continued, each step once.

    At each resume marker (step S), records of an earlier attempt after step S (logged after
    its last checkpoint, then lost to a kill) are dropped: every step appears once, from the
    attempt that went on.
    """
    out: list[Any] = []
    for rec in records:
        if isinstance(rec, dict) and rec.get("kind") == RESUME_KIND:
            step = rec.get("step")
            if isinstance(step, (int, float)) and not isinstance(step, bool):
                out = [r for r in out if not (isinstance(r, dict)
                                              and isinstance(r.get("step"), (int, float))
                                              and r["step"] > step)]
        out.append(rec)
    return out


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Read the rows of a run folder's CSV file as dicts.

    The rows of a run folder's CSV file (power samples, per-image scores) as dicts; [] when
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
