"""One row per run folder: the data behind ``harness runs`` and the report's comparison table.

Pure functions over the files a run writes (``summary.json``, ``manifest.json``,
``metrics.jsonl``) plus one look at the run's lock (is its writer still alive?), so that
``harness runs`` and ``harness report`` with several runs show the same figures from the same
function (:func:`run_row`). No torch, no harness imports.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fileio.locks import holder_alive
from fileio.run_files import continued_branch, read_metrics, run_end_reason

SUMMARY_NAME = "summary.json"
MANIFEST_NAME = "manifest.json"


def _col(label: str, digits: int | None = None, better: str | None = None) -> Any:
    """A column's metadata.

    Its label in the report, the digits of its cells (None: as is; -1: three significant
    digits, for ratios), and which value is best (``max``/``min``; None: neither).
    """
    return field(default=None, metadata={"label": label, "digits": digits, "better": better})


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRow:
    """What ``harness runs`` shows for one run folder (None where the run did not record it)."""

    name: str
    """The run folder's name."""
    status: str
    """``done``; ``at target`` (``train.stop_at_target`` ended it early); ``stopped`` (a
    signal); ``out of time`` (``train.max_minutes`` or the Slurm limit); ``short`` (ended
    before ``train.steps`` otherwise); ``running`` (the process named in its lock still runs);
    ``interrupted`` (no summary, and its ``train.log`` ends saying it was interrupted or
    stopped: a signal in start-up, a Ctrl-C); ``crashed`` (no live writer, and no summary or
    steps logged after it)."""
    steps: int | None = _col("steps", 0)
    """Steps trained (running or crashed: the last step in ``metrics.jsonl``)."""
    best_is: float | None = _col("best val IS", 4, "max")
    """Best held-out identity similarity (running or crashed: from ``metrics.jsonl``)."""
    images_per_s: float | None = _col("train img/s", 1, "max")
    """Training images per second of the run's last start (``summary.json``)."""
    avg_w: float | None = _col("avg W", 0)
    """Average cluster power (W) over the governed windows."""
    peak_w: float | None = _col("peak W", 0, "min")
    """Peak cluster power (W)."""
    j_per_image: float | None = _col("train J/img", 2, "min")
    """Cluster joules per training image."""
    crossings: int | None = _col("crossings", 0, "min")
    """Times the cluster's measured power went over its budget."""
    wall_crossings: int | None = _col("wall crossings", 0, "min")
    """Times the wall meter (PDU, ``power.wall``) read above the budget."""
    target_is: float | None = _col("target IS", 4)
    """The run's target IS (summary ``target``)."""
    target_step: int | None = _col("step at target", 0, "min")
    """Step at which validation first reached it (None: not reached)."""
    target_time_s: float | None = _col("s to target", 1, "min")
    """Seconds of training to the target IS, if reached."""
    target_energy_j: float | None = _col("J to target", 0, "min")
    """Cluster joules to the target IS, if reached."""
    plan_images_per_s: float | None = _col("plan img/s", 1)
    """Images/s the run's power plan predicted (``harness launch --plan``)."""
    images_per_s_vs_plan: float | None = _col("img/s ÷ plan", -1)
    """Achieved over predicted images/s."""
    plan_w: float | None = _col("plan W", 0)
    """Cluster W the plan predicted."""
    w_vs_plan: float | None = _col("W ÷ plan", -1)
    """Achieved average over predicted cluster W."""


COLUMNS = tuple(f.name for f in fields(RunRow))
SORT_KEYS = COLUMNS
#: Per column: (label, digits, better); ``name`` and ``status`` are text.
COLUMN_INFO: dict[str, tuple[str, int | None, str | None]] = {
    f.name: (f.metadata.get("label", f.name), f.metadata.get("digits"), f.metadata.get("better"))
    for f in fields(RunRow)}


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanFigures:
    """A row's plan columns (see :class:`RunRow`)."""

    plan_images_per_s: float | None
    images_per_s_vs_plan: float | None
    plan_w: float | None
    w_vs_plan: float | None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _section(doc: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = (doc or {}).get(key)
    return value if isinstance(value, dict) else {}


def _status(summary: dict[str, Any], target: dict[str, Any]) -> str:
    stopped_by = summary.get("stopped_by")
    if isinstance(stopped_by, str) and stopped_by:
        return "stopped" if stopped_by.startswith("SIG") else "out of time"
    steps, wanted = _int(summary.get("steps")), _int(summary.get("target_steps"))
    if steps is not None and wanted is not None and steps < wanted:
        return "at target" if _int(target.get("step")) is not None else "short"
    return "done"


def _logged(metrics: Sequence[dict[str, Any]]) -> tuple[int | None, float | None]:
    """Last training step and best validation IS in ``metrics.jsonl`` records."""
    steps = [s for r in metrics if r.get("kind") == "train" and (s := _int(r.get("step")))
             is not None]
    scores = [v for r in metrics if r.get("kind") == "val"
              and (v := _num(r.get("val_is"))) is not None]
    return (max(steps) if steps else None), (max(scores) if scores else None)


def run_row(name: str, summary: dict[str, Any] | None, *,
            manifest: dict[str, Any] | None = None,
            metrics: Sequence[dict[str, Any]] = (), alive: bool = False,
            ended: str | None = None) -> RunRow:
    """The table row of one run, from what its files hold.

    Args:
        name: The run folder's name.
        summary: ``summary.json`` (None: missing or unreadable).
        manifest: ``manifest.json`` (its ``plan`` gives a running run's predicted figures).
        metrics: ``metrics.jsonl``'s records (the branch that continued), for a run without a
            current summary.
        alive: The process named in the run's lock still runs.
        ended: Why the run ended, as the last line of its ``train.log`` says (None: it does
            not say).
    """
    last_step, logged_best = _logged(metrics)
    planned = _section(summary, "plan") or _section(manifest, "plan")
    plan = PlanFigures(plan_images_per_s=_num(planned.get("predicted_images_per_s")),
                       plan_w=_num(planned.get("predicted_cluster_w")),
                       images_per_s_vs_plan=_num(planned.get("images_per_s_ratio")),
                       w_vs_plan=_num(planned.get("cluster_w_ratio")))
    steps = _int((summary or {}).get("steps"))
    behind = last_step is not None and (steps is None or last_step > steps)
    if summary is None or alive or behind:  # no summary of the current attempt
        status = "running" if alive else "interrupted" if ended and (
            ended.startswith(("interrupted", "stopped"))) else "crashed"
        return RunRow(name=name, status=status, steps=last_step if behind else steps,
                      best_is=logged_best, **asdict(plan))
    power = _section(summary, "power")
    on = bool(power.get("enabled"))
    target = _section(summary, "target")
    reached = target.get("reached", True) is not False and _int(target.get("step")) is not None
    wall = _section(power, "wall")
    return RunRow(
        name=name, status=_status(summary, target if reached else {}), steps=steps,
        best_is=_num(summary.get("best_val_is")),
        images_per_s=_num(summary.get("images_per_s")),
        avg_w=_num(power.get("avg_cluster_w")) if on else None,
        peak_w=_num(power.get("peak_cluster_w")) if on else None,
        j_per_image=_num(power.get("j_per_image")) if on else None,
        crossings=_int(power.get("crossings")) if on else None,
        wall_crossings=_int(wall.get("crossings")) if on else None,
        target_is=_num(target.get("is")),
        target_step=_int(target.get("step")) if reached else None,
        target_time_s=_num(target.get("time_s")) if reached else None,
        target_energy_j=_num(target.get("energy_j")) if reached else None,
        **asdict(plan))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_run(run_dir: Path, *, alive: Callable[[Path], bool] = holder_alive) -> RunRow:
    """The row of one run folder (see :func:`run_row`); unreadable files count as missing."""
    try:
        metrics = continued_branch(read_metrics(run_dir / "metrics.jsonl"))
    except (OSError, ValueError):
        metrics = []
    return run_row(run_dir.resolve().name, _read_json(run_dir / SUMMARY_NAME),
                   manifest=_read_json(run_dir / MANIFEST_NAME), metrics=metrics,
                   alive=alive(run_dir), ended=run_end_reason(run_dir / "train.log"))


def is_run_dir(path: Path) -> bool:
    """A folder a training run made: it holds ``manifest.json`` or ``summary.json``."""
    return (path / MANIFEST_NAME).is_file() or (path / SUMMARY_NAME).is_file()


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run folders named, or found one level below each path, each once, in name order.

    ``*-latest`` links are skipped (their run is listed under its own name).
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(d: Path) -> None:
        real = d.resolve()
        if real not in seen:
            seen.add(real)
            out.append(d)

    for p in paths:
        if is_run_dir(p):
            add(p)
            continue
        for child in sorted(p.iterdir()) if p.is_dir() else []:
            if child.is_symlink() and child.name.endswith("-latest"):
                continue
            if child.is_dir() and is_run_dir(child):
                add(child)
    return out


def sort_rows(rows: Sequence[RunRow], key: str, *, descending: bool = False) -> list[RunRow]:
    """Rows sorted by column ``key``; runs without that figure always last."""
    have = [r for r in rows if getattr(r, key) is not None]
    missing = [r for r in rows if getattr(r, key) is None]
    return sorted(have, key=lambda r: getattr(r, key), reverse=descending) + missing


def shown_columns(rows: Sequence[RunRow]) -> list[str]:
    """The columns a table shows: name, status, steps, and every other one some row has."""
    return [c for c in COLUMNS
            if c in ("name", "status", "steps") or any(getattr(r, c) is not None for r in rows)]


def cell(column: str, value: Any) -> str:
    """One cell as text (``--`` where the run lacks the figure)."""
    if value is None:
        return "--"
    digits = COLUMN_INFO[column][1]
    if isinstance(value, float) and digits is not None:
        return f"{value:.3g}" if digits < 0 else f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[RunRow]) -> str:
    """A plain-text table, one line per run, with a header line.

    Columns no run has a figure for are left out (``--csv`` and ``--json`` keep them).
    """
    cols = shown_columns(rows)
    cells = [cols] + [[cell(c, getattr(r, c)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in cells) + "\n"


def format_csv(rows: Sequence[RunRow]) -> str:
    """CSV with every column name as header; empty cells where a run lacks a figure."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()


def format_json(rows: Sequence[RunRow]) -> str:
    """A JSON list of objects, one per run, every column (null where a run lacks a figure)."""
    return json.dumps([asdict(r) for r in rows], indent=1) + "\n"
