"""A live view of a running job from its run folder (``harness watch RUN``).

Everything comes from the files a run writes on the shared file system, so the view works from
a login node while the job runs on compute nodes:

* ``metrics.jsonl`` — step, images/s, the step times behind the ETA;
* ``power/node*/gpu_power.csv`` and ``node_power.csv`` — each node's latest GPU power, caps and
  non-GPU power (the node's name from ``node.json``);
* ``power/node*/governor_events.jsonl`` — the last budget crossing;
* ``job.yaml`` — total steps and the power budget;
* ``summary.json`` and ``.lock`` — whether the run has ended.

Files are read incrementally (only what was appended since the last poll; a long run's
sample files are entered near their end), so polling costs the same after hours as after
seconds. Nothing here writes to the run folder or takes its lock.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fileio.locks import holder_alive
from fileio.run_files import RESUME_KIND, node_label
from fileio.user_error import UserError
from harness.outputs.logs import RUN_ENDED

log = logging.getLogger(__name__)

#: How far before the end of a sample file reading starts the first time, in bytes.
TAIL_BYTES = 256 << 10


class _Tail:
    """The lines appended to one file since the last call (complete lines only)."""

    def __init__(self, path: Path, header: bool = False) -> None:
        self.path, self.header = path, header
        self.columns: list[str] | None = None
        self._offset: int | None = None
        self._rest = b""

    def new_lines(self) -> list[str]:
        """Complete lines written since the last call (none when the file is missing)."""
        try:
            with self.path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                fresh = self._offset is None or size < self._offset  # first time, rewritten
                if fresh and not self._enter(f, size):
                    return []
                assert self._offset is not None  # set before, or just now by _enter
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        data = self._rest + data
        *lines, self._rest = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines if line.strip()]

    def _enter(self, f: Any, size: int) -> bool:
        """Read the header and move to the first whole line of the tail.

        Read the header (CSV) and move to the first whole line of the last
        :data:`TAIL_BYTES`; False while the header is not completely written yet.
        """
        f.seek(0)
        if self.header:
            line = f.readline()
            if not line.endswith(b"\n"):
                return False
            self.columns = next(csv.reader([line.decode("utf-8", "replace")]), None)
        body = f.tell()
        start = max(body, size - TAIL_BYTES)
        f.seek(start - 1 if start > body else body)
        if start > body and f.read(1) != b"\n":
            f.readline()  # start on a line boundary
        self._offset, self._rest = f.tell(), b""
        return True

    def rows(self) -> list[dict[str, str]]:
        """New CSV rows as mappings of the header's columns."""
        lines = self.new_lines()
        if not lines or not self.columns:
            return []
        # A short or long row (a torn or foreign line) keeps the columns it has, as before.
        return [dict(zip(self.columns, r, strict=False))
                for r in csv.reader(io.StringIO("\n".join(lines)))]

    def records(self) -> list[dict[str, Any]]:
        """New JSON-lines records (bad lines skipped)."""
        out = []
        for line in self.new_lines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


def _float(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@dataclass(slots=True)
class NodeView:
    """One node's latest power."""

    name: str
    """Folder name, ``node000``."""
    host: str = ""
    """The node's name (``node.json``)."""
    gpu_w: dict[int, float] = field(default_factory=dict)
    """Latest power of each GPU."""
    caps_w: dict[int, float] = field(default_factory=dict)
    """Latest cap of each GPU."""
    other_w: float = 0.0
    """Latest non-GPU power (CPU, DRAM, overhead)."""
    sample_unix_s: float | None = None
    """Wall-clock time of the latest GPU sample."""

    @property
    def label(self) -> str:
        """``node000 (gpu-a17)``, or the folder name (:func:`fileio.run_files.node_label`)."""
        return node_label(self.name, self.host)

    @property
    def total_w(self) -> float:
        """GPUs plus the rest of the node."""
        return sum(self.gpu_w.values()) + self.other_w


@dataclass(slots=True)
class WatchView:
    """What the watcher knows about the run after a poll."""

    run_dir: Path
    total_steps: int | None = None
    budget_w: float | None = None
    step: int = 0
    images_per_s: float | None = None
    eta_s: float | None = None
    nodes: list[NodeView] = field(default_factory=list)
    last_crossing: dict[str, Any] | None = None
    crossings: int = 0
    ended: bool = False
    summary: dict[str, Any] | None = None
    end_reason: str | None = None  # the log's last line when the run ended with an error
    silent_s: float | None = None
    """Set when the watch gave up: seconds with no file of the run changing, beyond the bound
    (see :meth:`RunWatcher.poll`), while the writer is on a host this one cannot check."""
    silent_bound_s: float | None = None
    """The bound ``silent_s`` passed."""

    @property
    def cluster_w(self) -> float | None:
        """Sum of the nodes' latest power; None before the first sample."""
        seen = [n for n in self.nodes if n.gpu_w]
        return sum(n.total_w for n in seen) if seen else None


def is_run_dir(path: Path) -> bool:
    """Return True for a folder a training or inference run made.

    True for a folder a training or inference run made (it has a manifest, a job copy or a
    summary).
    """
    return path.is_dir() and any((path / n).is_file() for n in ("manifest.json", "job.yaml",
                                                                   "summary.json"))


class RunWatcher:
    """Polls one run folder; :meth:`poll` returns the latest :class:`WatchView`.

    Raises:
        UserError: ``run_dir`` is missing or not a run folder.
    """

    #: How many of the run's longest quiet spell seen so far a silence must last to end the
    #: watch: a slow run that writes every minute gets ten minutes, not the minimum.
    SILENCE_FACTOR = 10.0

    def __init__(self, run_dir: str | Path, silent_after_s: float = 300.0) -> None:
        path = Path(run_dir)
        if not path.is_dir():
            raise UserError(f"{run_dir}: no such run folder")
        if not is_run_dir(path):
            raise UserError(f"{run_dir}: not a run folder (no manifest.json, job.yaml or "
                            "summary.json)")
        self.view = WatchView(run_dir=path)
        self._metrics = _Tail(path / "metrics.jsonl")
        self._log = _Tail(path / "train.log")
        self._last_log_line = ""
        self._nodes: dict[str, tuple[NodeView, _Tail, _Tail, _Tail]] = {}
        self._recent: list[tuple[int, float]] = []  # (step, time_s) of train records
        self._summary_mtime = self._mtime(path / "summary.json")
        self.silent_after_s = silent_after_s
        self._newest: float | None = None  # newest mtime of the run's files
        self._changed_at = time.time()  # when (here) a file of the run last changed
        self._longest_gap = 0.0
        self._read_job()

    @staticmethod
    def _mtime(path: Path) -> float | None:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    def _read_job(self) -> None:
        import yaml

        try:
            job = yaml.safe_load((self.view.run_dir / "job.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return
        if not isinstance(job, dict):
            return
        train, power = job.get("train") or {}, job.get("power") or {}
        steps = train.get("steps") if isinstance(train, dict) else None
        self.view.total_steps = steps if isinstance(steps, int) else None
        if isinstance(power, dict) and power.get("enabled"):
            self.view.budget_w = _float(power.get("budget_w"))

    def poll(self) -> WatchView:
        """Read what was appended since the last poll and return the updated view."""
        v = self.view
        if v.total_steps is None:
            self._read_job()  # job.yaml is written just after the folder
        for rec in self._metrics.records():
            if rec.get("kind") == RESUME_KIND:  # a new attempt: its time_s restarts at 0
                self._recent = []
                continue
            if rec.get("kind") != "train" or not isinstance(rec.get("step"), int):
                continue
            v.step = rec["step"]
            v.images_per_s = _float(rec.get("images_per_s"))
            t = _float(rec.get("time_s"))
            if t is not None:
                # the run's own cadence, for the silence bound (time_s restarts on a resume)
                last_t = self._recent[-1][1] if self._recent else 0.0
                self._longest_gap = max(self._longest_gap, t - last_t if t >= last_t else t)
                self._recent = [*self._recent[-19:], (v.step, t)]
        if v.total_steps and len(self._recent) >= 2:
            (s0, t0), (s1, t1) = self._recent[0], self._recent[-1]
            if s1 > s0:
                v.eta_s = max(v.total_steps - v.step, 0) * (t1 - t0) / (s1 - s0)
        self._poll_power()
        lines = self._log.new_lines()
        self._last_log_line = lines[-1] if lines else self._last_log_line
        _, marker, reason = self._last_log_line.partition(" " + RUN_ENDED)
        v.end_reason = reason.strip() if marker else None
        v.ended = v.end_reason is not None or self._ended()
        if v.ended and v.end_reason is None:
            v.summary = self._read_summary()
        if not v.ended:
            self._check_silence()
        return v

    def _check_silence(self) -> None:
        """End the watch when no file of the run has changed for longer than the bound.

        Only a writer on another host gets here (one on this host is checked by its pid): when
        that host dies with rank 0, nothing writes a summary or a last log line, and the watch
        would wait forever. The bound is ``silent_after_s``, or ``SILENCE_FACTOR`` times the
        longest quiet spell of the run seen so far, whichever is longer, so a slow run that
        writes rarely is not taken for a dead one.
        """
        run = self.view.run_dir
        files = [run / "metrics.jsonl", run / "train.log", run / "summary.json"]
        files += [f for d in self._nodes.values() for f in (d[1].path, d[2].path, d[3].path)]
        found = [m for m in (self._mtime(f) for f in files) if m is not None]
        newest = max(found, default=None)
        now = time.time()
        if newest is not None and newest != self._newest:
            if self._newest is None:  # the first look: the files' own age
                self._changed_at = min(now, newest)
            else:
                self._longest_gap = max(self._longest_gap, now - self._changed_at)
                self._changed_at = now
            self._newest = newest
        bound = max(self.silent_after_s, self.SILENCE_FACTOR * self._longest_gap)
        silent = now - self._changed_at
        if silent > bound:
            self.view.ended = True
            self.view.silent_s, self.view.silent_bound_s = silent, bound

    def _poll_power(self) -> None:
        power = self.view.run_dir / "power"
        try:
            dirs = sorted(d for d in power.iterdir() if d.is_dir() and d.name.startswith("node"))
        except OSError:
            dirs = []
        for d in dirs:
            if d.name not in self._nodes:
                node = NodeView(name=d.name)
                self._nodes[d.name] = (node, _Tail(d / "gpu_power.csv", header=True),
                                       _Tail(d / "node_power.csv", header=True),
                                       _Tail(d / "governor_events.jsonl"))
                self.view.nodes.append(node)
            node, gpus, other, events = self._nodes[d.name]
            if not node.host:
                try:
                    info = json.loads((d / "node.json").read_text(encoding="utf-8"))
                    node.host = str(info.get("host", ""))[:200] if isinstance(info, dict) else ""
                except (OSError, ValueError):
                    pass
            for row in gpus.rows():
                try:
                    gpu = int(row.get("gpu", ""))
                except ValueError:
                    continue
                w, cap = _float(row.get("power_w")), _float(row.get("limit_w"))
                if w is not None:
                    node.gpu_w[gpu] = w
                if cap is not None:
                    node.caps_w[gpu] = cap
                node.sample_unix_s = _float(row.get("unix_s")) or node.sample_unix_s
            for row in other.rows():
                w = _float(row.get("other_w"))
                if w is not None:
                    node.other_w = w
            for ev in events.records():
                if ev.get("event") == "crossing":
                    self.view.crossings += 1
                    self.view.last_crossing = ev
                elif ev.get("event") == "start" and self.view.budget_w is None:
                    self.view.budget_w = _float(ev.get("budget_w"))

    def _ended(self) -> bool:
        """Return True when the run has ended.

        The run has ended: a new ``summary.json``, or no process holds the run's lock (the
        log's last line saying so is read in :meth:`poll`: it also comes from other hosts).
        """
        mtime = self._mtime(self.view.run_dir / "summary.json")
        if mtime is not None and mtime != self._summary_mtime:
            return True
        return not holder_alive(self.view.run_dir)

    def _read_summary(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.view.run_dir / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def _fmt_w(w: float | None) -> str:
    return "--" if w is None else f"{w:.0f} W"


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "--"
    s = round(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def crossing_text(ev: dict[str, Any] | None, count: int) -> str:
    """``none`` or ``3, last at 06:50:01Z for 1.2 s, peak 3050 W``."""
    if ev is None:
        return "none"
    when = str(ev.get("utc", ""))[11:20] or "?"
    dur, peak = _float(ev.get("duration_s")), _float(ev.get("peak_w"))
    return (f"{count}, last at {when} for {dur if dur is not None else float('nan'):.1f} s, "
            f"peak {_fmt_w(peak)}")


def _step_text(v: WatchView) -> str:
    step = f"step {v.step}/{v.total_steps or '?'}" + (
        f" ({100 * v.step // v.total_steps}%)" if v.total_steps else "")
    rate = f"{v.images_per_s:.1f}" if v.images_per_s is not None else "--"
    return f"{step} | {rate} images/s"


def status_line(v: WatchView) -> str:
    """One plain line: step, images/s, cluster and budget, each node, last crossing, ETA."""
    parts = [_step_text(v)]
    cluster = v.cluster_w
    if cluster is not None or v.budget_w is not None:
        text = f"cluster {_fmt_w(cluster)}"
        if v.budget_w is not None:
            text += f" / budget {_fmt_w(v.budget_w)}"
            if cluster is not None:
                text += f" (margin {v.budget_w - cluster:.0f} W)"
        parts.append(text)
    for n in v.nodes:
        caps = ",".join(f"{n.caps_w[g]:.0f}" for g in sorted(n.caps_w))
        parts.append(f"{n.label} {_fmt_w(n.total_w if n.gpu_w else None)}"
                     + (f" caps {caps} W" if caps else ""))
    if v.nodes:
        parts.append(f"crossings {crossing_text(v.last_crossing, v.crossings)}")
    parts.append(f"ETA {_fmt_s(v.eta_s)}")
    return " | ".join(parts)


def end_line(v: WatchView) -> str:
    """The last line: how the run ended, from its summary when it wrote one."""
    if v.end_reason:  # the run's log says why (a lost node, a user error)
        return f"run ended at step {v.step}: {v.end_reason}"
    if v.silent_s is not None:
        from fileio.locks import holder

        who = holder(v.run_dir)
        writer = f"pid {who[0]} on {who[1]}" if who else "its writer"
        return (f"no file of the run has changed for {v.silent_s:.0f} s (bound "
                f"{v.silent_bound_s:.0f} s) at step {v.step}, no summary.json and no last line "
                f"in train.log: rank 0 ({writer}, not checkable from here) or its host is "
                f"probably gone; check that node, then continue with --resume {v.run_dir}")
    s = v.summary
    if not s:
        return f"run ended at step {v.step} without a summary.json (stopped or failed)"
    text = (f"run ended: {s.get('steps', v.step)} steps, "
            f"{_float(s.get('images_per_s')) or 0:.1f} images/s")
    p = s.get("power") or {}
    if isinstance(p, dict) and p.get("enabled") and "avg_cluster_w" in p:
        text += (f", average {_fmt_w(_float(p.get('avg_cluster_w')))}, peak "
                 f"{_fmt_w(_float(p.get('peak_cluster_w')))} of {_fmt_w(_float(p.get('budget_w')))}"
                 f", {p.get('crossings', 0)} crossing(s)")
    if s.get("stopped_by"):
        text += f" (stopped by {s['stopped_by']})"
    return text


def render_table(v: WatchView) -> Any:
    """The rich view: a table per node under a header line."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(f"{_step_text(v)} | ETA {_fmt_s(v.eta_s)}")
    table = Table(title=f"{v.run_dir}", expand=False)
    for col in ("node", "W", "GPU W", "caps W", "other W"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for n in v.nodes:
        table.add_row(n.label, _fmt_w(n.total_w if n.gpu_w else None),
                      ", ".join(f"{n.gpu_w[g]:.0f}" for g in sorted(n.gpu_w)),
                      ", ".join(f"{n.caps_w[g]:.0f}" for g in sorted(n.caps_w)),
                      f"{n.other_w:.0f}")
    cluster = v.cluster_w
    budget = v.budget_w
    style = "red" if cluster is not None and budget is not None and cluster > budget else "green"
    table.add_row("cluster", Text(_fmt_w(cluster), style=style),
                  "", f"budget {_fmt_w(budget)}", "")
    foot = Text(f"crossings: {crossing_text(v.last_crossing, v.crossings)}")
    return Group(head, table, foot)


def utc_now() -> str:
    """``2026-12-02T06:50:01Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
