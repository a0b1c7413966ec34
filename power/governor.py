"""Cluster-wide power governor: keeps the whole cluster under a power budget.

One :class:`Governor` runs per node (on local rank 0) and controls every GPU of that node.
Each control period (:meth:`Governor.step`) it

1. reads its GPUs' power, limits and (if the training loop reports them) per-GPU busy times,
   plus the node's other power (CPU, DRAM, fans, NICs...) from ``other_power_w``;
2. exchanges these readings with every other node through ``comm.allgather``;
3. runs the pure policy :func:`power.policy.decide` on the cluster-wide readings (every node
   gets the same answer) and applies the caps of its own GPUs;
4. tracks cluster power, energy and budget crossings, and logs events to JSONL.

It is a context manager: on entry it records every GPU's power limit (and writes them to
``original_limits.rank<R>.json`` in the run directory for manual recovery) and runs a first
step so caps are in place before the workload starts; on exit - normal, exception, SIGINT or
SIGTERM - it puts every limit back and unlocks any clock it locked. Signal handlers are
installed only when entered from the main thread and chain to the previous handlers: a handler
never touches the GPUs itself (it could interrupt code holding a lock) but raises - the previous
Python handler's exception (``KeyboardInterrupt`` for SIGINT) or ``SystemExit(128 + signum)``
when there was none - so the ``with`` block unwinds and ``__exit__`` restores. If a previous
handler returns normally, the program chose to keep running and governing continues.

Clock locks cannot be read back through NVML, so the governor assumes clocks were unlocked
when it started and unlocks them on exit in ``clocks`` mode.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from fileio.atomic import dumps_json, write_json_atomic
from power.clock import Clock, MonotonicClock, time_fields
from power.comm import Communicator, SingleProcessComm
from power.config import DEFAULT_BUDGET_W, check_budget
from power.errors import PowerError
from power.gpu import GPU, restore_gpu_settings
from power.policy import (
    BUDGET_SHRINK,
    FAIL_SAFE,
    INFEASIBLE,
    MODES,
    OVERSHOOT,
    Decision,
    GpuReading,
    PolicyConfig,
    decide,
)
from power.signals import RaisingSignalHandlers, signals_blocked

logger = logging.getLogger(__name__)

_NOTABLE = (FAIL_SAFE, INFEASIBLE, OVERSHOOT, BUDGET_SHRINK)


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one node contributes to the all-gather each period."""

    rank: int
    readings: tuple[GpuReading, ...]
    other_power_w: float | None
    """CPU + DRAM + fixed node overhead (None if unknown)."""
    energy_j: float
    """Energy of this node's GPUs and other power since the governor started."""
    wall_offset_w: float = 0.0
    """Rank 0 only: predicted wall power minus component power, guardband included (0 when
    the wall is not held); every node's policy uses rank 0's value."""
    hold: bool = False
    """Rank 0 only: the workload is in a known phase that lowers the load (validation,
    checkpoint...): every node holds its caps (:mod:`power.phases`)."""


@dataclass(frozen=True, slots=True)
class Crossing:
    """One interval in which measured cluster power exceeded the budget."""

    start_s: float
    """Seconds after the governor started."""
    duration_s: float
    """From the first reading above the budget to the first one back under it."""
    peak_w: float
    """Highest cluster power measured during the crossing."""


class Governor:
    """Keeps a GPU cluster under a power budget; see the module docstring.

    Args:
        gpus: This node's GPUs.
        comm: Exchanges readings between nodes (default: a single node).
        budget_w: Cluster power budget. Units: W.
        headroom_w: Margin kept free below the budget. Units: W.
        mode: ``"power_limit"`` (cap power limits) or ``"clocks"`` (lock max clocks).
        other_power_w: Function of this node's GPU power (W) returning the node's other power
            (e.g. :meth:`power.node.NodePower.other_power_w`); None counts nothing.
        shared_overhead_w: Power of shared equipment (switch), counted once for the cluster.
        run_dir: Where ``governor_events*.jsonl`` and ``governor_summary.json`` go (None: none).
        clock: Time source (default: monotonic wall time).
        period_s: Control period of :meth:`start`'s background loop.
        policy: Policy tuning constants (default :class:`~power.policy.PolicyConfig`).
        handle_signals: Install SIGINT/SIGTERM handlers on entry (main thread only).
        busy_max_age_s: Busy times older than this are ignored by the policy.
        energy_power: Feed the policy the average power since the previous step computed from
            the energy counter instead of the power reading: True, False, or None (default)
            for GPUs whose reading is not instantaneous (a 1-s average reacts up to a second
            late; the counter's average over one period is at most one period old).
    """

    def __init__(self, gpus: Sequence[GPU], *, comm: Communicator | None = None,
                 budget_w: float = DEFAULT_BUDGET_W, headroom_w: float = 50.0,
                 mode: str = "power_limit",
                 other_power_w: Callable[[float], float] | None = None,
                 shared_overhead_w: float = 0.0, run_dir: str | os.PathLike[str] | None = None,
                 clock: Clock | None = None, period_s: float = 0.05,
                 policy: PolicyConfig | None = None, handle_signals: bool = True,
                 busy_max_age_s: float = 5.0, energy_power: bool | None = None) -> None:
        if not gpus:
            raise ValueError("Governor: gpus must not be empty")
        check_budget(budget_w, headroom_w)
        if mode not in MODES:
            raise ValueError(f"Governor: mode must be one of {MODES}, got {mode!r}")
        if not period_s > 0:
            raise ValueError(f"Governor: period_s must be > 0, got {period_s}")
        if shared_overhead_w < 0:
            raise ValueError(f"Governor: shared_overhead_w must be >= 0, got {shared_overhead_w}")
        self.gpus = list(gpus)
        self.comm: Communicator = comm or SingleProcessComm()
        self.budget_w = float(budget_w)
        self.headroom_w = float(headroom_w)
        self.mode = mode
        self.shared_overhead_w = float(shared_overhead_w)
        self.period_s = period_s
        self.policy = policy or PolicyConfig()
        #: Called on comm rank 0 each period with every node's component power (GPUs + other),
        #: e.g. to feed a simulated wall meter (:mod:`power.pdu`); None = no hook.
        self.wall_hook: Callable[[list[float]], None] | None = None
        #: Like ``wall_hook`` with each node's ``(GPU W, other W)`` (for a wall model of both).
        self.wall_parts_hook: Callable[[list[tuple[float, float]]], None] | None = None
        #: On comm rank 0: the wall's predicted excess over the components (W, guardband
        #: included), shared in the all-gather so the policy holds the wall; None = hold the
        #: components.
        self.wall_offset: Callable[[], float] | None = None
        #: On comm rank 0: True while the workload announces a phase that lowers the load
        #: (:meth:`power.phases.PhaseBoard.holding`); every node then holds its caps through
        #: it. None = never hold.
        self.phase_hold: Callable[[], bool] | None = None
        self._held_offset_w: float | None = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._other_fn = other_power_w
        self._clock = clock or MonotonicClock()
        self._busy_max_age_s = busy_max_age_s

        n = len(self.gpus)
        self._lock = threading.RLock()
        self._closed = False
        self._entered = False
        self._ranges_w = [tuple(v / 1000 for v in g.get_power_limit_constraints_mw())
                          for g in self.gpus]
        self._clock_ranges = ([g.get_clock_range_mhz() for g in self.gpus]
                              if mode == "clocks" else [None] * n)
        self._original_limits_mw: list[int] = []
        self._limit_w = [g.get_power_limit_mw() / 1000 for g in self.gpus]
        self._alloc_w = list(self._limit_w)
        self._locked_max: list[float | None] = [None] * n
        self._clocks_touched = False
        self._last_power_w: list[float | None] = [None] * n
        self._last_ok_s: list[float] = [-math.inf] * n
        self._read_errors = [0] * n
        self._busy: list[tuple[float, float] | None] = [None] * n
        self._energy_start_mj: list[int | None] = [None] * n
        self._energy_j = [0.0] * n
        self._energy_power = energy_power
        self._use_energy = [False] * n
        self.power_sources: list[str] = ["reading"] * n
        """Per GPU: ``"reading"`` (the sensor) or ``"energy"`` (counter average per step)."""
        self._other_energy_j = 0.0
        self._last_other_w: float | None = None
        self._last_t: float | None = None
        self._t0 = 0.0

        self.steps = 0
        self.fail_safe_count = 0
        self.crossings: list[Crossing] = []
        self._cross_start: float | None = None
        self._cross_peak = 0.0
        self._cluster_energy_j = 0.0
        self._peak_w = 0.0
        self._last_reason: str | None = None
        self._logged_limits: list[float] | None = None
        self.last_decision: Decision | None = None
        self.restore_errors: list[str] = []
        self.error: BaseException | None = None

        self._events_fh: Any = None
        self._signals = RaisingSignalHandlers(self._note_signal, enabled=handle_signals)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- public API -------------------------------------------------------------------------
    def __enter__(self) -> Governor:
        self._t0 = self._clock.now()
        self._original_limits_mw = [g.get_power_limit_mw() for g in self.gpus]
        for i, g in enumerate(self.gpus):
            try:
                if g.supports_energy_counter():
                    self._energy_start_mj[i] = g.get_total_energy_consumption_mj()
            except PowerError as exc:
                logger.warning("GPU %d: energy counter unusable (%s); integrating power", i, exc)
            if self._energy_start_mj[i] is not None and self._energy_power is not False:
                if self._energy_power:
                    self._use_energy[i] = True
                else:
                    try:
                        self._use_energy[i] = g.get_power_sensor().kind != "instant"
                    except PowerError:
                        self._use_energy[i] = True
            self.power_sources[i] = "energy" if self._use_energy[i] else "reading"
        self._entered = True
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / f"original_limits.rank{self.comm.rank}.json",
                              {"uuids": [g.get_uuid() for g in self.gpus],
                               "power_limits_mw": self._original_limits_mw}, indent=1)
        self._signals.install()
        self._log("start", budget_w=self.budget_w, headroom_w=self.headroom_w, mode=self.mode,
                  gpus=len(self.gpus), original_limits_mw=self._original_limits_mw,
                  power_sensors=self._sensor_labels(), power_sources=self.power_sources,
                  shared_overhead_w=self.shared_overhead_w, cluster_wide=False)
        try:
            self.step()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.restore(reason="exit" if exc_type is None else f"exception: {exc_type.__name__}")
        self._signals.remove()
        self._finish_crossing(self._last_t if self._last_t is not None else self._clock.now())
        if self.run_dir is not None and self.comm.rank == 0:
            write_json_atomic(self.run_dir / "governor_summary.json", self.summary(), indent=1)
        if self._events_fh is not None:
            self._events_fh.close()
            self._events_fh = None

    def note_busy_time_s(self, gpu: int, busy_s: float) -> None:
        """Report the compute time of the latest training step on local GPU ``gpu``.

        Busy time excludes waiting for the gradient all-reduce; the policy gives more power to
        GPUs whose busy time is longest (stragglers).
        """
        if busy_s <= 0 or not math.isfinite(busy_s):
            raise ValueError(f"busy_s must be a positive number, got {busy_s}")
        self._busy[gpu] = (self._clock.now(), float(busy_s))

    def step(self) -> Decision | None:
        """Run one control period (collective: every node must call it). None once closed."""
        with self._lock:
            if self._closed:
                return None
            report = self._local_report()
        reports = self.comm.allgather(report)
        with self._lock:
            if self._closed:
                return None
            return self._apply(reports)

    def start(self) -> None:
        """Run :meth:`step` every ``period_s`` in a background thread until :meth:`stop`.

        With ``mpi4py`` the communicator must be used by this thread only (a dedicated
        communicator, and MPI initialised with ``MPI_THREAD_MULTIPLE`` if other threads use MPI).
        """
        if self._thread is not None:
            raise RuntimeError("Governor already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="power-governor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background loop started by :meth:`start` (no-op otherwise)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(5.0, 10 * self.period_s))

    def restore(self, reason: str = "restore") -> None:
        """Put every GPU back to its original limit and unlock clocks; idempotent.

        After this the governor no longer changes anything (:meth:`step` returns None).
        """
        with self._lock, signals_blocked():
            if self._closed:
                return
            self._closed = True
            if not self._entered:
                return
            errors = restore_gpu_settings(self.gpus, self._original_limits_mw,
                                          self._clocks_touched)
            self.restore_errors.extend(errors)
            for e in errors:
                logger.error("restore failed: %s", e)
            self._log("restore", reason=reason, limits_mw=self._original_limits_mw,
                      errors=errors, cluster_wide=False)

    def summary(self, images: float | None = None) -> dict[str, Any]:
        """Return cluster-wide figures since entry.

        Args:
            images: Images processed cluster-wide, to add images/s, images/s/W and J/image.

        Returns:
            ``duration_s, average_cluster_w, peak_cluster_w, energy_j, crossings,
            crossing_time_s, longest_crossing_s, fail_safe_steps, steps, budget_w, headroom_w``
            (+ ``images, images_per_s, images_per_s_per_w, joules_per_image``).
        """
        duration = (self._last_t - self._t0) if self._last_t is not None else 0.0
        energy = self._cluster_energy_j
        avg = energy / duration if duration > 0 else 0.0
        out: dict[str, Any] = {
            "duration_s": duration, "average_cluster_w": avg, "peak_cluster_w": self._peak_w,
            "energy_j": energy, "crossings": len(self.crossings),
            "crossing_time_s": sum(c.duration_s for c in self.crossings),
            "longest_crossing_s": max((c.duration_s for c in self.crossings), default=0.0),
            "fail_safe_steps": self.fail_safe_count, "steps": self.steps,
            "budget_w": self.budget_w, "headroom_w": self.headroom_w,
            "restore_errors": list(self.restore_errors),
        }
        if images is not None:
            ips = images / duration if duration > 0 else 0.0
            out.update(images=images, images_per_s=ips,
                       images_per_s_per_w=ips / avg if avg > 0 else 0.0,
                       joules_per_image=energy / images if images > 0 else 0.0)
        return out

    # --- internals --------------------------------------------------------------------------
    def _sensor_labels(self) -> list[str]:
        labels = []
        for g in self.gpus:
            try:
                labels.append(g.get_power_sensor().label())
            except PowerError as exc:
                labels.append(f"unknown ({exc})")
        return labels

    def _local_report(self) -> NodeReport:
        now = self._clock.now()
        dt = 0.0 if self._last_t is None else now - self._last_t
        readings = []
        gpu_sum = 0.0
        for i, g in enumerate(self.gpus):
            prev = self._last_power_w[i]
            try:
                self._last_power_w[i] = g.get_power_usage_mw() / 1000.0
                self._last_ok_s[i] = now
            except PowerError as exc:
                self._read_errors[i] += 1
                if self._read_errors[i] in (1, 10, 100) or self._read_errors[i] % 1000 == 0:
                    logger.warning("GPU %d: power read failed (%d times): %s", i,
                                   self._read_errors[i], exc)
            power = self._last_power_w[i]
            start_mj = self._energy_start_mj[i]
            if start_mj is not None:
                before_j = self._energy_j[i]
                try:
                    self._energy_j[i] = (g.get_total_energy_consumption_mj()
                                         - start_mj) / 1000.0
                    # A counter that has not moved was not refreshed: keep the reading.
                    if (self._use_energy[i] and power is not None and dt > 0
                            and self._energy_j[i] > before_j):
                        power = (self._energy_j[i] - before_j) / dt
                except PowerError:
                    pass
            elif power is not None and prev is not None:
                self._energy_j[i] += 0.5 * (prev + power) * dt
            gpu_sum += power or 0.0
            if self.mode == "power_limit":
                try:
                    self._limit_w[i] = g.get_power_limit_mw() / 1000.0
                except PowerError:
                    pass
                limit, clock_kw = self._limit_w[i], {}
            else:
                limit = self._alloc_w[i]
                lo_c, hi_c = self._clock_ranges[i]  # type: ignore[misc]
                try:
                    clock = float(g.get_gpu_clock_mhz())
                except PowerError:
                    clock = None
                clock_kw = dict(clock_mhz=clock, locked_max_clock_mhz=self._locked_max[i],
                                min_clock_mhz=float(lo_c), max_clock_mhz=float(hi_c))
            busy = self._busy[i]
            busy_s = busy[1] if busy and now - busy[0] <= self._busy_max_age_s else None
            lo, hi = self._ranges_w[i]
            readings.append(GpuReading(
                node=self.comm.rank, gpu=i, power_w=power, limit_w=limit, min_limit_w=lo,
                max_limit_w=hi, age_s=max(0.0, now - self._last_ok_s[i]), busy_s=busy_s,
                **clock_kw))
        other: float | None = 0.0
        if self._other_fn is not None:
            try:
                other = float(self._other_fn(gpu_sum))
            except Exception as exc:
                logger.warning("other node power unavailable: %s", exc)
                other = None
        if other is not None:
            if self._last_other_w is not None:
                self._other_energy_j += 0.5 * (self._last_other_w + other) * dt
            self._last_other_w = other
        self._last_t = now
        offset = self.wall_offset() if self.wall_offset is not None else 0.0
        hold = self.phase_hold() if self.phase_hold is not None else False
        return NodeReport(self.comm.rank, tuple(readings), other,
                          sum(self._energy_j) + self._other_energy_j, offset, hold)

    def _apply(self, reports: Sequence[NodeReport]) -> Decision:
        now = self._last_t if self._last_t is not None else self._clock.now()
        readings = [r for rep in reports for r in rep.readings]
        others = [rep.other_power_w for rep in reports]
        other_total = (None if any(o is None for o in others)
                       else sum(others) + self.shared_overhead_w)  # type: ignore[arg-type]
        # Holding the wall: the components get the budget less the wall's predicted excess.
        offset_w, policy = self._phase_terms(reports[0])
        held_w = max(self.budget_w - offset_w, self.headroom_w + 1.0)
        decision = decide(budget_w=held_w, headroom_w=self.headroom_w, readings=readings,
                          other_power_w=other_total, mode=self.mode, config=policy)
        self.steps += 1
        offset = sum(len(rep.readings) for rep in reports[: self.comm.rank])
        mine = slice(offset, offset + len(self.gpus))
        self._set_caps(decision.limits_w[mine],
                       decision.clocks_mhz[mine] if decision.clocks_mhz else None)

        cluster_w = sum(r.power_w for r in readings if r.power_w is not None) + sum(
            o for o in others if o is not None) + self.shared_overhead_w
        self._peak_w = max(self._peak_w, cluster_w)
        self._cluster_energy_j = (sum(rep.energy_j for rep in reports)
                                  + self.shared_overhead_w * (now - self._t0))
        self._track_crossing(now, cluster_w)
        if self.wall_hook is not None and self.comm.rank == 0:
            self.wall_hook([sum(r.power_w for r in rep.readings if r.power_w is not None)
                            + (rep.other_power_w or 0.0) for rep in reports])
        if self.wall_parts_hook is not None and self.comm.rank == 0:
            self.wall_parts_hook([(sum(r.power_w for r in rep.readings if r.power_w is not None),
                                   rep.other_power_w or 0.0) for rep in reports])
        if decision.fail_safe:
            self.fail_safe_count += 1
        self._log_decision(now, decision, cluster_w,
                           [r.max_limit_w - r.min_limit_w for r in readings])
        self.last_decision = decision
        return decision

    def _phase_terms(self, first: NodeReport) -> tuple[float, PolicyConfig]:
        """The wall offset and the policy of this period, held through a known phase.

        Through a phase that lowers the load (rank 0's ``hold``), GPUs below their cap keep it
        (:func:`power.phases.hold_policy`) and the wall offset stays at least what it was when
        the phase began: the caps that held the wall before still hold it when the load comes
        back, with no ramp after the phase.
        """
        if not first.hold:
            if self._held_offset_w is not None:
                self._log("phase_hold_end", offset_w=round(self._held_offset_w, 1))
            self._held_offset_w = None
            return first.wall_offset_w, self.policy
        from power.phases import hold_policy

        if self._held_offset_w is None:
            self._log("phase_hold", offset_w=round(first.wall_offset_w, 1))
        self._held_offset_w = max(self._held_offset_w or 0.0, first.wall_offset_w)
        return self._held_offset_w, hold_policy(self.policy)

    def _set_caps(self, limits_w: Sequence[float], clocks: Sequence[float] | None) -> None:
        for i, g in enumerate(self.gpus):
            if self._closed:  # a signal handler restored the GPUs mid-loop
                return
            lo, hi = self._ranges_w[i]
            try:
                if self.mode == "power_limit":
                    new_w = min(max(limits_w[i], lo), hi)
                    threshold = 0.005 * (hi - lo)
                    if (abs(new_w - self._limit_w[i]) >= threshold
                            or new_w < self._limit_w[i] - 1e-3):
                        g.set_power_limit_mw(int(round(new_w * 1000)))
                        self._limit_w[i] = new_w
                else:
                    self._alloc_w[i] = min(max(limits_w[i], lo), hi)
                    lo_c, hi_c = self._clock_ranges[i]  # type: ignore[misc]
                    f = int(round(min(max(clocks[i], lo_c), hi_c)))  # type: ignore[index]
                    prev = self._locked_max[i]
                    if prev is None or abs(f - prev) >= 5:
                        self._clocks_touched = True
                        g.lock_gpu_clocks_mhz(lo_c, f)
                        self._locked_max[i] = float(f)
            except PowerError as exc:
                logger.warning("GPU %d: could not apply cap: %s", i, exc)
                self._log("apply_error", gpu=i, error=str(exc), cluster_wide=False)

    def _track_crossing(self, now: float, cluster_w: float) -> None:
        if cluster_w > self.budget_w:
            if self._cross_start is None:
                self._cross_start, self._cross_peak = now, cluster_w
            else:
                self._cross_peak = max(self._cross_peak, cluster_w)
        else:
            self._finish_crossing(now)

    def _finish_crossing(self, now: float) -> None:
        if self._cross_start is None:
            return
        c = Crossing(self._cross_start - self._t0, now - self._cross_start, self._cross_peak)
        self.crossings.append(c)
        self._cross_start = None
        self._log("crossing", start_s=c.start_s, duration_s=c.duration_s, peak_w=c.peak_w)

    def _log_decision(self, now: float, d: Decision, cluster_w: float,
                      spans_w: Sequence[float]) -> None:
        notable = d.reason in _NOTABLE and (d.reason != FAIL_SAFE or self._last_reason != FAIL_SAFE)
        if self._last_reason == FAIL_SAFE and d.reason != FAIL_SAFE:
            self._log("fail_safe_cleared", t_s=now - self._t0)
        limits = list(d.limits_w)
        old = self._logged_limits
        moved = old is None or len(old) != len(limits) or any(
            abs(a - b) >= 0.05 * span for a, b, span in zip(limits, old, spans_w, strict=True))
        if notable or moved:
            self._log("caps", t_s=now - self._t0, reason=d.reason, messages=list(d.messages),
                      cluster_w=cluster_w, limits_w=[round(v, 2) for v in limits],
                      clocks_mhz=list(d.clocks_mhz) if d.clocks_mhz else None)
            self._logged_limits = limits
        self._last_reason = d.reason

    def _log(self, event: str, *, cluster_wide: bool = True, **fields: Any) -> None:
        if self.run_dir is None or (cluster_wide and self.comm.rank != 0):
            return
        if self._events_fh is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            name = ("governor_events.jsonl" if self.comm.rank == 0
                    else f"governor_events.rank{self.comm.rank}.jsonl")
            self._events_fh = open(self.run_dir / name, "a", encoding="utf-8")
        stamp = time_fields(self._clock)
        record = {"event": event, "wall_time": stamp["unix_s"], "utc": stamp["utc"],
                  "mono_s": stamp["mono_s"], "rank": self.comm.rank, **fields}
        self._events_fh.write(dumps_json(record, indent=None) + "\n")
        self._events_fh.flush()

    # --- signals ----------------------------------------------------------------------------
    def _note_signal(self, signum: int) -> None:
        self._stop.set()
        self._log("signal", signal=signal.Signals(signum).name, cluster_wide=False)

    def _loop(self) -> None:
        next_t = self._clock.now()
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:
                self.error = exc
                logger.error("governor step failed, applying safe caps: %s", exc)
                self._log("error", error=repr(exc), cluster_wide=False)
                with self._lock:
                    if not self._closed:
                        self._set_caps([lo for lo, _ in self._ranges_w],
                                       [c[0] for c in self._clock_ranges if c is not None]
                                       if self.mode == "clocks" else None)
                return
            next_t += self.period_s
            self._stop.wait(max(0.0, next_t - self._clock.now()))
