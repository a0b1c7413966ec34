"""The cluster's power series and its figures.

The cluster's power series and its figures: the one computation behind the run summary
(``summary.json`` / ``scores.json``, written by :mod:`power.session`) and the report's chart
and cards (:mod:`reports`), so that every figure a judge sees comes from the samples drawn.

Time base: wall-clock UTC (Unix seconds), the ``unix_s`` column every sample carries. Each
node's total (its GPUs' ``power_w`` plus its non-GPU ``other_w``, taken at the same sampler
tick) is linearly interpolated between that node's own samples, and the cluster power is the
sum over nodes, plus the shared equipment's power (switch, from the governor's start event),
at every instant any node sampled (nodes' samplers start at different moments; none is shifted).

Window: from the governor's ``start`` event to its ``restore`` event (the caps in force), per
run segment (a resumed run appends a segment); with several nodes, from the last node's start
to the first node's restore, when every node was governed. Both window edges are points of the
series (interpolated), so a crossing still open at the restore is counted and closed there.
Every segment takes only the samples of its own sampler (a sampler's ``time_s`` restarts at 0,
and so do its cumulative energy columns): without a ``restore`` event (a killed attempt) a
segment ends at its own sampler's last sample, never in the next attempt's samples.

Figures over the window: peak (highest point), energy (from the samplers' cumulative
``energy_j`` columns, i.e. the GPUs' energy counters, differenced across the window edges, plus
the switch), average (energy / window) and budget crossings
(:func:`power.crossings.budget_crossings`).

Samples that are not finite or are negative are excluded (counted in ``excluded``), never
averaged in.
"""
from __future__ import annotations

import json
import logging
import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from power.clock import utc_iso
from power.crossings import CrossingStats, budget_crossings

log = logging.getLogger(__name__)

ALIGNMENT = ("UTC; each node linearly interpolated between its own samples and summed at "
             "every node's sample instant; window from the governor's start to its restore")
"""How the cluster series is built, for the summary and the report to state."""


@dataclass(frozen=True, slots=True)
class NodeSeries:
    """One node's total power at each sampler tick, on UTC, and its governor windows."""

    name: str
    unix_s: tuple[float, ...]
    """Sample instants (Unix s, UTC), ascending."""
    total_w: tuple[float, ...]
    """GPUs + non-GPU power of the node at each instant. Units: W."""
    energy_j: tuple[float, ...]
    """Cumulative energy since the segment's sampler started (GPU counters + node other)."""
    windows: tuple[tuple[float, float | None], ...] = ()
    """Per segment: the governor's (start, restore) Unix times; restore None if missing."""
    shared_overhead_w: float = 0.0
    """Switch power counted once for the cluster (from the governor's start event)."""
    excluded: int = 0
    """Sampler ticks left out: a non-finite or negative reading."""
    run_starts: tuple[int, ...] = (0,)
    """Index of the first sample of each sampler run (one per attempt of a resumed run): the
    energy columns count from each run's own start."""
    run_opened: tuple[float, ...] = ()
    """When each sampler run opened (``unix_s - time_s`` of its samples): before its own
    governor's start, after the previous attempt's."""
    utc: bool = True
    """False for files written before samples carried ``unix_s``: times are then seconds
    since the node's sampler started (no common time base)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One governed window of the cluster series."""

    start_unix_s: float
    end_unix_s: float
    end: str
    """``"restore"`` or ``"last sample"`` (no restore recorded)."""
    unix_s: tuple[float, ...]
    watts: tuple[float, ...]
    """Cluster power at each instant. Units: W."""
    node_w: dict[str, tuple[float, ...]]
    """Each node's total at the same instants (interpolated)."""
    energy_j: float

    @property
    def seconds(self) -> float:
        """Length of the window."""
        return self.end_unix_s - self.start_unix_s


@dataclass(frozen=True, slots=True)
class ClusterSeries:
    """The cluster power over every governed window (see the module docstring)."""

    segments: tuple[Segment, ...]
    nodes: tuple[str, ...]
    utc: bool = True
    excluded: int = 0
    alignment: str = ALIGNMENT

    @property
    def start_unix_s(self) -> float | None:
        """Start of the first window (the chart's time origin)."""
        return self.segments[0].start_unix_s if self.segments else None

    def stats(self, budget_w: float | None) -> dict[str, Any]:
        """Peak, average, energy, window and budget crossings over every window.

        Returns:
            ``window_s, window_start_utc, window_end_utc, segments, energy_j, avg_cluster_w,
            peak_cluster_w, crossings, crossing_time_s, longest_crossing_s, samples,
            samples_excluded, alignment`` (crossing fields None without a budget).
        """
        seconds = sum(s.seconds for s in self.segments)
        energy = sum(s.energy_j for s in self.segments)
        points = [w for s in self.segments for w in s.watts]
        out: dict[str, Any] = {
            "window_s": seconds, "segments": len(self.segments),
            "window_start_utc": utc_iso(self.segments[0].start_unix_s)
            if self.segments and self.utc else None,
            "window_end_utc": utc_iso(self.segments[-1].end_unix_s)
            if self.segments and self.utc else None,
            "energy_j": energy, "avg_cluster_w": energy / seconds if seconds > 0 else 0.0,
            "peak_cluster_w": max(points, default=0.0), "samples": len(points),
            "samples_excluded": self.excluded, "alignment": self.alignment,
            "crossings": None, "crossing_time_s": None, "longest_crossing_s": None,
        }
        cross = self.crossings(budget_w)
        if cross is not None:
            out.update(crossings=cross.count, crossing_time_s=cross.total_s,
                       longest_crossing_s=cross.longest_s)
        return out

    def energy_until(self, unix_s: float) -> float | None:
        """Energy of the governed windows up to ``unix_s``, in J (trapezoids of the series).

        What the run drew up to a moment (e.g. reaching ``train.target_is``); the windows'
        gaps (between a resumed run's attempts) count nothing.

        Returns:
            The energy, or None when no window started before ``unix_s`` or the samples carry
            no UTC time.
        """
        if not self.utc or not self.segments or self.segments[0].start_unix_s > unix_s:
            return None
        energy = 0.0
        for seg in self.segments:
            ts, ws = seg.unix_s, seg.watts
            for i in range(1, len(ts)):
                t0, t1 = ts[i - 1], min(ts[i], unix_s)
                if t1 <= t0:
                    break
                w1 = ws[i - 1] + (ws[i] - ws[i - 1]) * (t1 - t0) / (ts[i] - ts[i - 1])
                energy += 0.5 * (ws[i - 1] + w1) * (t1 - t0)
        return energy

    def crossings(self, budget_w: float | None) -> CrossingStats | None:
        """Budget crossings of every window, times in Unix s (None without a budget)."""
        if budget_w is None or not budget_w > 0:
            return None
        parts = [budget_crossings(s.unix_s, s.watts, budget_w) for s in self.segments]
        return CrossingStats(float(budget_w), tuple(c for p in parts for c in p.intervals),
                             sum(p.samples for p in parts), sum(p.samples_over for p in parts))


# --- reading a node's files ------------------------------------------------------------------


def _num(s: Any) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v


def _rows(path: Path) -> list[dict[str, str]]:
    from fileio.run_files import read_csv_rows

    try:
        return read_csv_rows(path)
    except ValueError as exc:
        log.warning("%s: %s", path, exc)
        return []


def _events(node_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(node_dir.glob("governor_events*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a truncated last line
            if isinstance(rec, dict):
                out.append(rec)
    return out


def read_node_series(node_dir: str | Path, *, since_unix_s: float | None = None
                     ) -> NodeSeries | None:
    """One node's series from ``gpu_power.csv``, ``node_power.csv`` and the governor events.

    Args:
        node_dir: ``power/nodeNNN/``.
        since_unix_s: Keep only samples and windows from this time on (the session's own
            segment of a resumed run).

    Returns:
        None when the folder has no GPU samples.
    """
    node_dir = Path(node_dir)
    ticks: dict[str, list[float]] = {}  # tick key -> [t, gpu W, gpu J, bad, sampler run]
    order: list[str] = []
    utc = True
    run, last_time_s, opened = 0, -math.inf, math.nan
    for row in _rows(node_dir / "gpu_power.csv"):
        key = row.get("unix_s") or ""
        if not key:
            utc = False
            key = row.get("time_s") or ""
        t = _num(key)
        if t is None or not math.isfinite(t):
            continue
        since_start = _num(row.get("time_s"))
        if since_start is not None and math.isfinite(since_start):
            if since_start < last_time_s:  # time_s restarts: the next attempt's sampler
                run += 1
            if since_start < last_time_s or math.isnan(opened):
                opened = t - since_start
            last_time_s = since_start
        if key not in ticks:
            ticks[key] = [t, 0.0, 0.0, 0.0, float(run), opened]
            order.append(key)
        tick = ticks[key]
        w, e = _num(row.get("power_w")), _num(row.get("energy_j"))
        if w is None or not math.isfinite(w) or w < 0:
            tick[3] = 1.0
        else:
            tick[1] += w
        if e is not None and math.isfinite(e):
            tick[2] += e
    if not ticks:
        return None
    other: dict[str, tuple[float | None, float]] = {}
    for row in _rows(node_dir / "node_power.csv"):
        key = (row.get("unix_s") if utc else row.get("time_s")) or ""
        w, e = _num(row.get("other_w")), _num(row.get("energy_j"))
        other[key] = (w if w is not None and math.isfinite(w) and w >= 0 else None,
                      e if e is not None and math.isfinite(e) else 0.0)
    samples = []
    excluded = 0
    for key in order:
        t, gpu_w, gpu_j, bad, run_no, run_open = ticks[key]
        o_w, o_j = other.get(key, (0.0, 0.0))
        if bad or o_w is None:
            excluded += 1
            continue
        if since_unix_s is not None and t < since_unix_s:
            continue
        samples.append((t, gpu_w + o_w, gpu_j + o_j, run_no, run_open))
    samples.sort(key=lambda s: (s[3], s[0]))  # attempts follow each other; by time within one
    run_starts = tuple(i for i, s in enumerate(samples) if i == 0 or s[3] != samples[i - 1][3])
    windows: list[tuple[float, float | None]] = []
    switch_w = 0.0
    if utc:
        for ev in _events(node_dir):
            wall = _num(ev.get("wall_time"))
            if wall is None or not math.isfinite(wall):
                continue
            if since_unix_s is not None and wall < since_unix_s:
                continue
            if ev.get("event") == "start":
                windows.append((wall, None))
                sw = _num(ev.get("shared_overhead_w"))
                switch_w = sw if sw is not None and math.isfinite(sw) and sw >= 0 else switch_w
            elif ev.get("event") == "restore" and windows and windows[-1][1] is None:
                windows[-1] = (windows[-1][0], wall)
    if excluded:
        log.warning("%s: %d power sample(s) excluded (not finite or negative)", node_dir,
                    excluded)
    return NodeSeries(name=node_dir.name, unix_s=tuple(s[0] for s in samples),
                      total_w=tuple(s[1] for s in samples),
                      energy_j=tuple(s[2] for s in samples), windows=tuple(windows),
                      shared_overhead_w=switch_w, excluded=excluded,
                      run_starts=run_starts or (0,),
                      run_opened=tuple(samples[i][4] for i in run_starts), utc=utc)


# --- the cluster series ----------------------------------------------------------------------


def _interp(t: float, ts: Sequence[float], ws: Sequence[float]) -> float:
    """Piecewise-linear value at ``t``, held at the ends."""
    if t <= ts[0]:
        return ws[0]
    if t >= ts[-1]:
        return ws[-1]
    hi = bisect_right(ts, t)
    lo = hi - 1
    span = ts[hi] - ts[lo]
    return ws[hi] if span <= 0 else ws[lo] + (ws[hi] - ws[lo]) * (t - ts[lo]) / span


def _node_windows(node: NodeSeries) -> list[tuple[float, float, str, int, int]]:
    """The node's governed windows, each ``(start, end, how, lo, hi)``.

    ``lo:hi`` are the samples of the sampler run of the window's attempt (opened after the
    previous window's start, by this one's; empty when the attempt left no sample on disk, e.g.
    killed before its first flush); every sampler run is one window when the node has no
    governor events.
    """
    if not node.unix_s:
        return []
    bounds = list(node.run_starts) + [len(node.unix_s)]
    runs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    if not node.windows:
        return [(node.unix_s[lo], node.unix_s[hi - 1], "last sample", lo, hi)
                for lo, hi in runs if hi > lo]
    opened = list(node.run_opened) or [node.unix_s[0]]
    out = []
    for k, (start, end) in enumerate(node.windows):
        prev = node.windows[k - 1][0] if k else -math.inf
        mine = [r for r, o in zip(runs, opened, strict=False)
                if not math.isfinite(o) or prev < o <= start + _OPEN_SLACK_S]
        lo, hi = mine[-1] if mine else (0, 0)
        if end is not None:
            out.append((start, end, "restore", lo, hi))
        else:  # killed: the window ends at its own sampler's last sample
            last = node.unix_s[hi - 1] if hi > lo else start
            out.append((start, max(start, last), "last sample", lo, hi))
    return out


#: Clock resolution allowed between a sampler's opening and its governor's start (same host).
_OPEN_SLACK_S = 0.01


def cluster_series(nodes: Sequence[NodeSeries | None]) -> ClusterSeries:
    """Sum the nodes' series on their common UTC time base over the governed windows.

    Args:
        nodes: Every node's series (None entries, nodes without samples, are ignored).
    """
    present = [n for n in nodes if n is not None and n.unix_s]
    excluded = sum(n.excluded for n in present)
    if not present:
        return ClusterSeries((), (), excluded=excluded)
    utc = all(n.utc for n in present)
    switch_w = max(n.shared_overhead_w for n in present)
    per_node = [_node_windows(n) for n in present]
    segments: list[Segment] = []
    for k in range(max(len(w) for w in per_node)):
        mine = []
        for n, w in zip(present, per_node, strict=True):
            if k >= len(w):
                continue
            # Only this segment's sampler's samples: their energy columns restart with it.
            lo, hi = w[k][3], w[k][4]
            if hi > lo:
                mine.append((n.name, w[k], n.unix_s[lo:hi], n.total_w[lo:hi],
                             n.energy_j[lo:hi]))
        if not mine:
            continue
        start = max(m[1][0] for m in mine)
        end = min(m[1][1] for m in mine)
        if end < start:
            continue
        how = "restore" if all(m[1][2] == "restore" for m in mine) else "last sample"
        instants = {start, end}
        for _, _, ts, _, _ in mine:
            instants.update(ts[bisect_left(ts, start):bisect_right(ts, end)])
        times = sorted(instants)
        node_w = {name: tuple(_interp(t, ts, ws) for t in times)
                  for name, _, ts, ws, _ in mine}
        watts = tuple(sum(ws[i] for ws in node_w.values()) + switch_w
                      for i in range(len(times)))
        energy = sum(_interp(end, ts, es) - _interp(start, ts, es)
                     for _, _, ts, _, es in mine) + switch_w * (end - start)
        segments.append(Segment(start, end, how, tuple(times), watts, node_w, energy))
    return ClusterSeries(tuple(segments), tuple(n.name for n in present), utc=utc,
                         excluded=excluded)


def read_cluster_series(power_dir: str | Path) -> ClusterSeries:
    """:func:`cluster_series` of every ``power_dir/node*/`` folder."""
    power_dir = Path(power_dir)
    dirs = sorted(d for d in power_dir.iterdir() if d.is_dir() and d.name.startswith("node")) \
        if power_dir.is_dir() else []
    return cluster_series([read_node_series(d) for d in dirs])
