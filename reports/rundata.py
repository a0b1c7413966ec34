"""Read run and sweep directories into plain data for the report (no torch, no pynvml).

Every reader is tolerant: a missing or unreadable file becomes None (and a line in
:attr:`RunData.problems`), so a report of a half-finished run still renders. Only a path that
is not a run directory at all raises :class:`~fileio.user_error.UserError`.

The file formats are those written by :mod:`harness.outputs.run_folders`, :mod:`harness.train`,
:mod:`harness.infer` / :mod:`harness.scoring.score_folders` and :mod:`power.sampler` /
:mod:`power.governor`.
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import yaml

from fileio.run_files import (
    continued_branch,
    infer_power_dir,
    node_label,
    read_csv_rows,
    read_metrics,
)
from fileio.user_error import UserError

if TYPE_CHECKING:
    from power.cluster_series import ClusterSeries

log = logging.getLogger(__name__)

__all__ = ["NodePower", "PowerData", "RunData", "SweepData", "load_run", "load_sweep",
           "read_power_dir"]


@dataclass(slots=True)
class NodePower:
    """One node's power files (``power/nodeNNN/``).

    Times are seconds since that node's sampler / governor started.
    """

    name: str
    """Folder name, e.g. ``node000``."""
    host: str = ""
    """The node's name (``node.json``: Slurm's name for it, else its host name); empty for
    runs recorded before folders carried it."""
    gpu_t_s: dict[int, list[float]] = field(default_factory=dict)
    """Per GPU index: sample times."""
    gpu_power_w: dict[int, list[float]] = field(default_factory=dict)
    """Per GPU index: power draw at each sample."""
    gpu_limit_w: dict[int, list[float]] = field(default_factory=dict)
    """Per GPU index: power limit (cap) at each sample."""
    node_t_s: list[float] = field(default_factory=list)
    """Times of the node samples (CPU, DRAM, overhead)."""
    node_other_w: list[float] = field(default_factory=list)
    """Non-GPU power of the node at each node sample."""
    other_estimated: bool = False
    """True when the non-GPU power is an estimate (no RAPL / meter)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Governor events (``governor_events.jsonl``), in file order."""
    summary: dict[str, Any] | None = None
    """``governor_summary.json``."""
    unix_offset_s: float | None = None
    """Wall-clock UTC (Unix s) minus ``time_s`` of the GPU samples (None for runs recorded
    before samples carried wall-clock time)."""
    sensors: list[dict[str, Any]] = field(default_factory=list)
    """``power_sensors.json``: per GPU, which power reading it uses (kind, window, source)."""

    @property
    def label(self) -> str:
        """How reports name the node: ``node000 (gpu-a17)``, or the folder name alone."""
        return node_label(self.name, self.host)

    def total_series(self) -> tuple[list[float], list[float]]:
        """The node's total power (all GPUs + non-GPU) at each GPU sample time."""
        by_t: dict[float, float] = defaultdict(float)
        for gpu, ts in self.gpu_t_s.items():
            for t, w in zip(ts, self.gpu_power_w[gpu], strict=True):
                by_t[t] += w
        times = sorted(by_t)
        totals = [by_t[t] + interp_at(t, self.node_t_s, self.node_other_w) for t in times]
        return times, totals


@dataclass(slots=True)
class PowerData:
    """A run phase's power folder (``power/``, ``infer.power/`` or an older ``infer/power/``)."""

    path: Path
    nodes: list[NodePower]
    summary: dict[str, Any] | None
    """The ``power`` block of ``summary.json`` (training) or of ``scores.json`` (inference)."""

    @property
    def budget_w(self) -> float | None:
        """The cluster budget, from the summary or the governor's start event."""
        for src in [self.summary or {}] + [n.summary or {} for n in self.nodes]:
            if _finite(src.get("budget_w")):
                return float(src["budget_w"])
        for n in self.nodes:
            for ev in n.events:
                if ev.get("event") == "start" and _finite(ev.get("budget_w")):
                    return float(ev["budget_w"])
        return None

    @property
    def headroom_w(self) -> float | None:
        """The governor's headroom below the budget."""
        for src in [self.summary or {}] + [n.summary or {} for n in self.nodes]:
            if _finite(src.get("headroom_w")):
                return float(src["headroom_w"])
        for n in self.nodes:
            for ev in n.events:
                if ev.get("event") == "start" and _finite(ev.get("headroom_w")):
                    return float(ev["headroom_w"])
        return None

    meter: dict[str, Any] | None = None
    """``meter_comparison.json`` (written by :func:`reports.meter.import_meter`)."""
    meter_series: tuple[list[float], list[float]] | None = None
    """The meter's ``(unix_s, watts)`` within this phase (``meter_log.csv``)."""

    pdu_series: tuple[list[float], list[float]] | None = None
    """The rack PDU's readings at the wall, ``(window end unix_s, W)`` (``pdu.csv``)."""

    series: ClusterSeries | None = None
    """The cluster power over the governed windows (:mod:`power.cluster_series`): what the
    chart draws and what :attr:`figures` come from."""

    def cluster_series(self) -> tuple[list[float], list[float]]:
        """Return cluster power against seconds since the first window's start.

        Cluster power against seconds since the first window's start (UTC time base;
        windows of a resumed run follow each other with their real gaps).
        """
        cs = self.series
        if cs is None or not cs.segments:
            return [], []
        t0 = cs.segments[0].start_unix_s
        return ([t - t0 for seg in cs.segments for t in seg.unix_s],
                [w for seg in cs.segments for w in seg.watts])

    def cluster_series_unix(self) -> tuple[list[float], list[float]]:
        """Cluster power on wall-clock time (Unix s UTC); empty when a node lacks UTC stamps.

        Nodes are lined up by their own wall clocks (NTP-synchronised on a cluster), not by
        their samplers' start times.
        """
        cs = self.series
        if cs is None or not cs.utc or not cs.segments:
            return [], []
        return ([t for seg in cs.segments for t in seg.unix_s],
                [w for seg in cs.segments for w in seg.watts])

    @property
    def figures(self) -> dict[str, Any]:
        """Return the phase's power figures.

        The phase's power figures: the summary block, with peak, average, energy,
        crossings and the window recomputed from :attr:`series` (the samples the chart
        draws) when the samples carry UTC, and images/s, images/s/W and J/image over that
        same window.
        """
        out = dict(self.summary or {})
        # a run in progress has no summary yet: the budget is the governor's (start event)
        for key, value in (("budget_w", self.budget_w), ("headroom_w", self.headroom_w)):
            if not _finite(out.get(key)) and value is not None:
                out[key] = value
        cs = self.series
        if cs is None or not cs.utc or not cs.segments:
            return out
        stats = cs.stats(self.budget_w)
        counted = out.get("segments", 1)  # windows the summary's images cover
        out.update({k: v for k, v in stats.items() if v is not None})
        images, seconds, energy = out.get("images"), stats["window_s"], stats["energy_j"]
        if _finite(counted) and stats["segments"] > counted:
            # more windows drawn than the summary's images cover (an attempt stopped or
            # running since, or a summary written before every attempt was counted): a
            # per-image figure would divide every window's energy by some windows' images
            out.update(images_per_s=None, images_per_s_per_w=None, j_per_image=None)
            return out
        if _finite(images) and images > 0:
            out["images_per_s"] = images / seconds if seconds > 0 else 0.0
            out["images_per_s_per_w"] = images / energy if energy > 0 else 0.0
            out["j_per_image"] = energy / images
        return out

    @property
    def sensor_kinds(self) -> dict[str, int]:
        """How many GPUs use each kind of power reading (``instant``, ``average``...)."""
        out: dict[str, int] = {}
        for n in self.nodes:
            for s in n.sensors:
                kind = str(s.get("kind") or "unknown")
                out[kind] = out.get(kind, 0) + 1
        return out


@dataclass(slots=True)
class RunData:
    """Everything the report shows about one run directory."""

    path: Path
    """The directory as given."""
    name: str
    """Display name: the resolved directory's name (``smoke-latest`` -> ``smoke-2026…``)."""
    summary: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    """The parsed ``job.yaml``."""
    job_text: str | None = None
    """``job.yaml`` verbatim."""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, Any] | None = None
    """``infer/scores.json``."""
    infer_dir: Path | None = None
    train_power: PowerData | None = None
    infer_power: PowerData | None = None
    problems: list[str] = field(default_factory=list)
    """Files that exist but could not be read."""

    @property
    def job_name(self) -> str:
        """The job's name from summary, job.yaml or the directory name."""
        for value in ((self.summary or {}).get("job"), (self.job or {}).get("name")):
            if isinstance(value, str) and value:
                return value
        return self.name

    @property
    def infer_summary(self) -> dict[str, Any]:
        """``scores.json``'s summary (empty when missing)."""
        s = (self.scores or {}).get("summary")
        return s if isinstance(s, dict) else {}

    @property
    def infer_meta(self) -> dict[str, Any]:
        """``scores.json``'s meta (empty when missing)."""
        m = (self.scores or {}).get("meta")
        return m if isinstance(m, dict) else {}

    @property
    def per_image(self) -> list[dict[str, Any]]:
        """``scores.json``'s per-image records (empty when missing)."""
        p = (self.scores or {}).get("per_image")
        return [r for r in p if isinstance(r, dict)] if isinstance(p, list) else []

    def metric(self, name: str) -> dict[str, Any]:
        """Summary statistics of one inference metric (``is``, ``is_bicubic``, ``psnr``…)."""
        m = self.infer_summary.get("metrics")
        v = m.get(name) if isinstance(m, dict) else None
        return v if isinstance(v, dict) else {}

    def metric_info(self, name: str) -> dict[str, Any]:
        """Return how to show metric ``name``.

        How to show metric ``name`` (``label``, ``digits``, ``higher_is_better``), as the
        scorer wrote it into ``scores.json``; for files written before it did, the name and 4
        digits.
        """
        info = self.infer_meta.get("metric_info")
        v = info.get(name) if isinstance(info, dict) else None
        out = {"label": name.upper(), "digits": 4, "higher_is_better": True}
        if isinstance(v, dict):
            out.update({k: v[k] for k in out if k in v and isinstance(v[k], type(out[k]))})
        return out

    @property
    def inference(self) -> dict[str, Any]:
        """``scores.json``'s ``meta.inference`` (images, seconds, images/s, power)."""
        i = self.infer_meta.get("inference")
        return i if isinstance(i, dict) else {}

    @property
    def sample_count(self) -> int:
        """Faces per group (best, median, worst) in the grid: the job's ``report.samples``."""
        rep = (self.job or {}).get("report")
        n = rep.get("samples") if isinstance(rep, dict) else None
        return int(n) if isinstance(n, (int, float)) and 1 <= n <= 50 else 6


@dataclass(slots=True)
class SweepData:
    """A power sweep (``SWEEP_DIR/sweep.json``)."""

    path: Path
    data: dict[str, Any]

    @property
    def points(self) -> list[dict[str, Any]]:
        """Measured points with a finite setting and throughput, sorted by setting."""
        pts = [p for p in self.data.get("points") or [] if isinstance(p, dict)
               and _finite(p.get("setting")) and _finite(p.get("images_per_s"))]
        return sorted(pts, key=lambda p: float(p["setting"]))

    @property
    def plan(self) -> dict[str, Any] | None:
        """The chosen cap plan, if the sweep made one."""
        plan = self.data.get("plan")
        return plan if isinstance(plan, dict) else None


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def interp_at(t: float, ts: list[float], ws: list[float]) -> float:
    """Piecewise-linear value at ``t`` (held at the ends; 0 with no samples)."""
    if not ts:
        return 0.0
    if t <= ts[0]:
        return ws[0]
    if t >= ts[-1]:
        return ws[-1]
    lo, hi = 0, len(ts) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ts[mid] <= t:
            lo = mid
        else:
            hi = mid
    span = ts[hi] - ts[lo]
    if span <= 0:
        return ws[hi]
    return ws[lo] + (ws[hi] - ws[lo]) * (t - ts[lo]) / span


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name}: unreadable ({exc})")
        return None


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; bad lines (e.g. a truncated last line) are skipped."""
    if not path.is_file():
        return []
    try:
        records = read_metrics(path)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name}: unreadable ({exc})")
        return []
    return [rec for rec in records if isinstance(rec, dict)]


def _float(s: Any) -> float | None:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _read_csv(path: Path, problems: list[str]) -> list[dict[str, str]]:
    try:
        return read_csv_rows(path)
    except ValueError as exc:
        problems.append(f"{path.name}: {exc}")
        return []


def _read_node(node_dir: Path, problems: list[str]) -> NodePower:
    node = NodePower(name=node_dir.name)
    offsets: list[float] = []
    for row in _read_csv(node_dir / "gpu_power.csv", problems):
        t, w = _float(row.get("time_s")), _float(row.get("power_w"))
        try:
            gpu = int(row.get("gpu") or "")
        except ValueError:
            continue
        if t is None or w is None:
            continue
        node.gpu_t_s.setdefault(gpu, []).append(t)
        node.gpu_power_w.setdefault(gpu, []).append(w)
        limit = _float(row.get("limit_w"))
        node.gpu_limit_w.setdefault(gpu, []).append(limit if limit is not None else math.nan)
        unix = _float(row.get("unix_s"))
        if unix is not None:
            offsets.append(unix - t)
    if offsets:
        offsets.sort()
        node.unix_offset_s = offsets[len(offsets) // 2]
    for row in _read_csv(node_dir / "node_power.csv", problems):
        t, w = _float(row.get("time_s")), _float(row.get("other_w"))
        if t is None or w is None:
            continue
        node.node_t_s.append(t)
        node.node_other_w.append(w)
        if str(row.get("estimated", "")).lower() == "true":
            node.other_estimated = True
    info = _read_json(node_dir / "node.json", problems)
    if isinstance(info, dict) and isinstance(info.get("host"), str):
        node.host = info["host"][:200]
    # Node leaders other than rank 0 write governor_events.rank<R>.jsonl.
    for events in sorted(node_dir.glob("governor_events*.jsonl")):
        node.events += _read_jsonl(events, problems)
    node.summary = _read_json(node_dir / "governor_summary.json", problems)
    sensors = _read_json(node_dir / "power_sensors.json", problems)
    if isinstance(sensors, dict) and isinstance(sensors.get("sensors"), list):
        node.sensors = [s for s in sensors["sensors"] if isinstance(s, dict)]
    return node


def _read_meter(path: Path, pd: PowerData, problems: list[str]) -> None:
    meter = _read_json(path / "meter_comparison.json", problems)
    if not isinstance(meter, dict):
        return
    pd.meter = meter
    ts: list[float] = []
    ws: list[float] = []
    for row in _read_csv(path / "meter_log.csv", problems):
        t, w = _float(row.get("unix_s")), _float(row.get("watts"))
        if t is not None and w is not None:
            ts.append(t)
            ws.append(w)
    pd.meter_series = (ts, ws) if ts else None


def _read_pdu(path: Path, pd: PowerData, problems: list[str]) -> None:
    """The wall series of ``path/pdu.csv`` (the simulated or real rack PDU), if there is one."""
    csv_path = path / "pdu.csv"
    if not csv_path.is_file():
        return
    from power.pdu import read_pdu_csv

    try:
        rows = read_pdu_csv(csv_path)
    except (OSError, ValueError) as exc:
        problems.append(f"PDU log not drawn: {exc}")
        return
    if rows:
        pd.pdu_series = ([r.unix_s for r in rows], [r.wall_w for r in rows])


def read_power_dir(path: Path, summary: dict[str, Any] | None = None) -> PowerData | None:
    """Read ``path/node*/`` (one folder per node); None when there is no such folder.

    Args:
        path: A run's ``power/``, ``infer.power/`` or older ``infer/power/`` folder.
        summary: The matching power summary block, kept alongside.
    """
    if not path.is_dir():
        return None if not summary else PowerData(path=path, nodes=[], summary=summary)
    problems: list[str] = []
    nodes = [_read_node(d, problems) for d in sorted(path.iterdir())
             if d.is_dir() and d.name.startswith("node")]
    from power.cluster_series import (
        read_cluster_series,  # importing power at use: see tests
    )

    pd = PowerData(path=path, nodes=nodes, summary=summary, series=read_cluster_series(path))
    _read_meter(path, pd, problems)
    _read_pdu(path, pd, problems)
    for p in problems:
        log.warning("%s: %s", path, p)
    return pd


def load_run(path: str | Path) -> RunData:
    """Read one run directory.

    Args:
        path: ``runs/<name>-<timestamp>`` (or a ``<name>-latest`` link to one).

    Returns:
        The run's data; missing files are None / empty.

    Raises:
        UserError: ``path`` is not a directory, or holds neither ``summary.json`` nor
            ``manifest.json`` (not a run directory).
    """
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such run directory")
    if not (p / "summary.json").is_file() and not (p / "manifest.json").is_file():
        raise UserError(f"{p}: not a run directory (no summary.json or manifest.json)")
    run = RunData(path=p, name=p.resolve().name)
    run.summary = _typed(p / "summary.json", _read_json(p / "summary.json", run.problems),
                         _SUMMARY_NUMBERS)
    run.manifest = _typed(p / "manifest.json", _read_json(p / "manifest.json", run.problems),
                          ("world_size", "cpu_count", "memory_gb"))
    job_path = p / "job.yaml"
    if job_path.is_file():
        try:
            run.job_text = job_path.read_text(encoding="utf-8")
            run.job = _dict_or_none(yaml.safe_load(run.job_text))
        except (OSError, UnicodeDecodeError) as exc:
            run.problems.append(f"job.yaml: unreadable ({exc})")
        except yaml.YAMLError as exc:
            run.problems.append(f"job.yaml: not valid YAML ({str(exc).splitlines()[0]})")
    run.metrics = continued_branch(_read_jsonl(p / "metrics.jsonl", run.problems))
    infer = p / "infer"
    if infer.is_dir():
        run.infer_dir = infer
        run.scores = _typed(infer / "scores.json",
                            _read_json(infer / "scores.json", run.problems), ())
        stats = (run.infer_summary or {}).get("metrics")
        for name, st in (stats.items() if isinstance(stats, dict) else ()):
            _typed(infer / "scores.json", st, ("mean", "median", "min", "max", "count"),
                   f"summary.metrics.{name}.")
    train_power = (run.summary or {}).get("power")
    train_power = train_power if isinstance(train_power, dict) else None
    run.train_power = read_power_dir(p / "power", train_power)
    infer_power = run.inference.get("power")
    infer_power = infer_power if isinstance(infer_power, dict) else None
    if run.infer_dir is not None:
        beside = infer_power_dir(infer)  # older infer runs kept it inside: infer/power
        run.infer_power = read_power_dir(beside if beside.is_dir() else infer / "power",
                                         infer_power)
    return run


#: Keys of ``summary.json`` that hold numbers (or null) when present.
_SUMMARY_NUMBERS = ("steps", "planned_steps", "target_steps", "world_size", "images",
                    "train_time_s", "images_per_s", "best_val_is", "best_step", "final_val_is",
                    "final_val_psnr", "final_val_n")


def _typed(path: Path, doc: Any, numbers: tuple[str, ...], prefix: str = "") -> dict | None:
    """``doc`` (a run file's parsed JSON) when it has the types the harness writes.

    Raises:
        UserError: One line naming the file and key: not a JSON object, or a number that is
            something else (a string, a list) — a report of such a file would show nonsense.
    """
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object, got {_json_type(doc)}; not a file "
                        "the harness wrote")
    for key in numbers:
        v = doc.get(key)
        if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)) \
                and not (isinstance(v, str) and v in ("nan", "inf", "-inf")):
            raise UserError(f"{path}: {prefix}{key}: expected a number, got {_json_type(v)} "
                            f"{json.dumps(v)[:40]}")
    return doc


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(v), "a number")


def _dict_or_none(v: Any) -> dict[str, Any] | None:
    return v if isinstance(v, dict) else None


def load_sweep(path: str | Path) -> SweepData:
    """Read a sweep directory (or its ``sweep.json``) with :func:`power.sweep.load_sweep`.

    Raises:
        UserError: No readable ``sweep.json`` there.
    """
    from power.sweep import load_sweep as read_sweep

    p = Path(path)
    try:
        data = read_sweep(p)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return SweepData(path=p if p.is_dir() else p.parent, data=data)


#: Below this share of the run's span a meter comparison says it covers part of the run.
FULL_COVER = 0.99


def coverage_note(figures: dict[str, Any]) -> str | None:
    """``the meter log covers 48% of the run …``, or None when it covers all of it.

    Said when the lined-up readings span less of the run's power window than
    :data:`FULL_COVER`; None also for an import written before coverage was recorded.
    """
    frac = figures.get("covers_fraction")
    if not isinstance(frac, (int, float)) or frac >= FULL_COVER:
        return None
    return (f"the meter log covers {100 * frac:.0f}% of the run's power window "
            f"({figures.get('start_utc', '?')} .. {figures.get('end_utc', '?')} of "
            f"{figures.get('run_start_utc', '?')} .. {figures.get('run_end_utc', '?')}): its "
            "figures are over that part only")
