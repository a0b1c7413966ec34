"""The rack's power at the wall: what the judges' PDU reads, simulated or measured.

The governor sees components (GPU sensors, a CPU estimate, a fixed overhead); the judges read a
rack PDU at the wall, which also carries PSU conversion losses, fans that rise with load, the
switch, and a meter that averages over 1 s and reports late. This module models that path and
defines the one interface a wall meter offers, :class:`WallMeter` (``read() -> reading | None``),
which the simulated PDU (:class:`SimulatedPdu`) implements and a real rack meter implements too.

Pure model pieces: :class:`PsuCurve` (AC in for DC out, an 80 PLUS Platinum-like default),
:class:`FanModel` (fan power by load) and :class:`RackWallModel` (a rack's wall power from its
nodes' component power). :class:`PduCsv` writes ``power/pdu.csv`` (``unix_s``, ``utc``,
``wall_w``) on the same UTC axis as the node series.
"""
from __future__ import annotations

import bisect
import csv
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TextIO

logger = logging.getLogger(__name__)

#: 80 PLUS Platinum-like efficiency by load fraction of the PSU rating (AC -> DC).
PLATINUM_CURVE: tuple[tuple[float, float], ...] = (
    (0.0, 0.70), (0.10, 0.85), (0.20, 0.90), (0.50, 0.93), (1.00, 0.91),
)

#: Header of ``power/pdu.csv``.
PDU_CSV_HEADER: tuple[str, str, str] = ("unix_s", "utc", "wall_w")


@dataclass(frozen=True, slots=True)
class WallReading:
    """One meter report: the mean wall power over ``[unix_s - window_s, unix_s)``."""

    unix_s: float
    """End of the averaging window (when the power was drawn), seconds since the epoch."""
    wall_w: float
    """Mean power at the wall over the window, in W."""
    window_s: float = 1.0
    """Length of the averaging window, in s."""
    published_s: float = math.nan
    """When the meter made the reading available (``unix_s`` + the meter's latency)."""


class WallMeter(Protocol):
    """A meter at the wall (a rack PDU): the simulated one here, or a real one."""

    def read(self) -> WallReading | None:
        """The newest reading not returned before, or ``None`` when there is none yet."""
        ...


@dataclass(frozen=True, slots=True)
class PsuCurve:
    """A power supply's efficiency (DC out / AC in) by load, linear between points.

    Args:
        rating_w: The PSU's rated DC output, in W (> 0).
        points: ``(load fraction, efficiency)`` pairs, load fractions ascending from 0,
            efficiencies in (0, 1]. Loads beyond the last point use the last efficiency.
    """

    rating_w: float = 3000.0
    points: tuple[tuple[float, float], ...] = PLATINUM_CURVE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rating_w) and self.rating_w > 0):
            raise ValueError(f"PsuCurve: rating_w must be > 0, got {self.rating_w}")
        loads = [p[0] for p in self.points]
        if not self.points or loads != sorted(loads) or loads[0] != 0.0:
            raise ValueError("PsuCurve: points must start at load 0 and ascend")
        if not all(0 < e <= 1 for _, e in self.points):
            raise ValueError("PsuCurve: efficiencies must be in (0, 1]")

    def efficiency(self, dc_w: float) -> float:
        """Efficiency at a DC output of ``dc_w`` W."""
        load = max(0.0, dc_w) / self.rating_w
        loads = [p[0] for p in self.points]
        i = bisect.bisect_right(loads, load)
        if i >= len(self.points):
            return self.points[-1][1]
        (l0, e0), (l1, e1) = self.points[i - 1], self.points[i]
        return e0 + (e1 - e0) * (load - l0) / (l1 - l0)

    def ac_w(self, dc_w: float) -> float:
        """AC power drawn at the wall for a DC output of ``dc_w`` W."""
        return max(0.0, dc_w) / self.efficiency(dc_w)


@dataclass(frozen=True, slots=True)
class FanModel:
    """Node fans: ``idle_w`` at no load, rising with the square of the load to ``max_w``.

    Args:
        idle_w: Fan power at idle, in W.
        max_w: Fan power at ``full_load_w`` of component power and beyond, in W.
        full_load_w: Component power at which the fans run flat out, in W.
    """

    idle_w: float = 30.0
    max_w: float = 150.0
    full_load_w: float = 2000.0

    def __post_init__(self) -> None:
        if not (0 <= self.idle_w <= self.max_w and self.full_load_w > 0):
            raise ValueError("FanModel: need 0 <= idle_w <= max_w and full_load_w > 0")

    def fan_w(self, component_w: float) -> float:
        """Fan power for ``component_w`` W of component (GPU + CPU + overhead) power."""
        load = min(1.0, max(0.0, component_w) / self.full_load_w)
        return self.idle_w + (self.max_w - self.idle_w) * load * load


@dataclass(frozen=True, slots=True)
class RackWallModel:
    """A rack's power at the wall from its nodes' component power.

    Each node's DC load is its components plus its fans; the PSU curve turns that into AC; the
    rack's switch adds ``switch_w`` at the wall.
    """

    psu: PsuCurve = PsuCurve()
    fans: FanModel = FanModel()
    switch_w: float = 60.0

    def node_wall_w(self, component_w: float) -> float:
        """One node's wall power for ``component_w`` W of component power."""
        return self.psu.ac_w(component_w + self.fans.fan_w(component_w))

    def wall_w(self, node_component_w: Sequence[float]) -> float:
        """The rack's wall power for each node's component power."""
        return sum(self.node_wall_w(w) for w in node_component_w) + self.switch_w


class SimulatedPdu:
    """A simulated rack PDU: 1-s averages of the true wall power, reported late with noise.

    Each window's mean is reported ``latency_s`` after the window closes, with seeded Gaussian
    noise.

    Feed it the true wall power with :meth:`observe` (any rate, times ascending); :meth:`read`
    returns the newest published reading not yet returned, as of the last observed time.

    Args:
        window_s: Averaging window and report period, in s (> 0).
        latency_s: Delay between a window's end and its report, in s (>= 0).
        noise_w: Standard deviation of the reading noise, in W (>= 0).
        seed: Seed of the noise.
    """

    def __init__(self, *, window_s: float = 1.0, latency_s: float = 1.0, noise_w: float = 5.0,
                 seed: int = 0) -> None:
        if not (window_s > 0 and latency_s >= 0 and noise_w >= 0):
            raise ValueError("SimulatedPdu: need window_s > 0, latency_s >= 0, noise_w >= 0")
        self.window_s = window_s
        self.latency_s = latency_s
        self.noise_w = noise_w
        self._rng = random.Random(seed)
        self._now = -math.inf
        self._window: int | None = None
        self._energy_j = 0.0
        self._covered_s = 0.0
        self._last: tuple[float, float] | None = None
        self._pending: deque[WallReading] = deque()

    def observe(self, unix_s: float, wall_w: float) -> None:
        """The true wall power is ``wall_w`` W from ``unix_s`` until the next observation."""
        if unix_s < self._now:
            raise ValueError("SimulatedPdu.observe: times must ascend")
        if self._last is not None:
            self._integrate(self._last[0], unix_s, self._last[1])
        self._last = (unix_s, wall_w)
        self._now = unix_s

    def _integrate(self, t0: float, t1: float, w: float) -> None:
        while t0 < t1:
            k = math.floor(t0 / self.window_s)
            if self._window is None:
                self._window = k
            if k != self._window:
                self._close()
                self._window = k
            end = min(t1, (k + 1) * self.window_s)
            self._energy_j += w * (end - t0)
            self._covered_s += end - t0
            t0 = end
        if self._window is not None and t1 >= (self._window + 1) * self.window_s:
            self._close()
            self._window = math.floor(t1 / self.window_s)

    def _close(self) -> None:
        assert self._window is not None
        if self._covered_s > 0:
            end = (self._window + 1) * self.window_s
            mean = self._energy_j / self._covered_s + self._rng.gauss(0.0, self.noise_w)
            self._pending.append(WallReading(end, mean, self.window_s, end + self.latency_s))
        self._energy_j = 0.0
        self._covered_s = 0.0

    def read(self) -> WallReading | None:
        """The newest reading published by the last observed time, or ``None``."""
        newest = None
        while self._pending and self._pending[0].published_s <= self._now:
            newest = self._pending.popleft()
        return newest


def utc_text(unix_s: float) -> str:
    """``unix_s`` as ISO-8601 UTC with milliseconds, e.g. ``2026-12-05T06:40:00.000Z``."""
    return datetime.fromtimestamp(unix_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class PduCsv:
    """Writes wall readings to ``power/pdu.csv`` (one rack series), flushed per row.

    An existing log (a resumed run) is appended to, never overwritten.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        fresh = not path.exists() or path.stat().st_size == 0
        self._fh: TextIO = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        if fresh:
            self._writer.writerow(PDU_CSV_HEADER)
        self._fh.flush()

    def write(self, reading: WallReading) -> None:
        """Append one reading."""
        self._writer.writerow((f"{reading.unix_s:.3f}", utc_text(reading.unix_s),
                               f"{reading.wall_w:.1f}"))
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def read_pdu_csv(path: Path) -> list[WallReading]:
    """The readings of a ``pdu.csv``.

    Raises:
        ValueError: naming the file and line when the header or a row is malformed.
    """
    out: list[WallReading] = []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or tuple(header[:3]) != PDU_CSV_HEADER:
            raise ValueError(f"{path}: not a PDU log (header must be {','.join(PDU_CSV_HEADER)})")
        for lineno, row in enumerate(rows, start=2):
            try:
                unix_s, wall_w = float(row[0]), float(row[2])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: bad row {row!r}") from None
            if not (math.isfinite(unix_s) and math.isfinite(wall_w)):
                raise ValueError(f"{path}:{lineno}: non-finite value in {row!r}")
            out.append(WallReading(unix_s, wall_w))
    return out


class WallTracker:
    """Predicts the wall's excess over the components, corrected online by a meter.

    Prediction: the wall model's excess (PSU losses, fans, switch) at the current component
    power. Correction: each meter reading is compared with the model's mean over the same
    window (the reading's own time, so the meter's delay is aligned), and the residual's
    moving mean is added. Guardband: ``k`` standard deviations of the recent residuals.

    Args:
        model: The rack's wall model.
        k: Guardband in residual standard deviations.
        alpha: Weight of the newest residual in the moving mean.
    """

    def __init__(self, model: RackWallModel, *, k: float = 3.0, alpha: float = 0.3,
                 budget_w: float = 3000.0, silent_after_s: float = 5.0, name: str = "PDU",
                 clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.k = k
        self.alpha = alpha
        self.budget_w = budget_w
        self.silent_after_s = silent_after_s
        self.name = name
        self._clock = clock
        self._last_good_s = clock()
        #: Meter faults seen (absurd, negative or a silent meter); each puts the caps at the
        #: fail-safe floor until good readings come back.
        self.faults = 0
        self.fault: str | None = None
        self.correction_w = 0.0
        self._history: deque[tuple[float, float]] = deque(maxlen=4096)  # (unix_s, model wall)
        self._residuals: deque[float] = deque(maxlen=60)
        self._excess_w = 0.0

    def observe(self, unix_s: float, node_component_w: Sequence[float]) -> None:
        """Record the model's wall for this period's component power."""
        wall = self.model.wall_w(node_component_w)
        self._history.append((unix_s, wall))
        self._excess_w = wall - sum(node_component_w)

    def correct(self, reading: WallReading) -> None:
        """Fold in one meter reading (its window aligned with the recorded predictions).

        A negative, non-finite or absurd reading (above 10x the budget) is a meter fault.
        """
        if not self._accept(reading):
            return
        start = reading.unix_s - reading.window_s
        inside = [w for t, w in self._history if start <= t < reading.unix_s]
        if not inside:
            return
        residual = reading.wall_w - sum(inside) / len(inside)
        self._residuals.append(residual)
        self.correction_w += self.alpha * (residual - self.correction_w)

    @property
    def guard_w(self) -> float:
        """Guardband from the measured residual spread (W)."""
        n = len(self._residuals)
        if n < 2:
            return 0.0
        mean = sum(self._residuals) / n
        return self.k * math.sqrt(sum((r - mean) ** 2 for r in self._residuals) / (n - 1))

    def _accept(self, reading: WallReading) -> bool:
        """Whether ``reading`` is a good one (both trackers' meter-fault rule).

        A negative, non-finite or absurd reading (above 10x the budget) is a meter fault; a
        good one clears a fault and restarts the silence clock.
        """
        if not (math.isfinite(reading.wall_w) and 0 <= reading.wall_w <= 10 * self.budget_w):
            self._set_fault(f"wall meter {self.name} reads {reading.wall_w:g} W")
            return False
        self._last_good_s = self._clock()
        self.fault = None
        return True

    def _set_fault(self, why: str) -> None:
        if self.fault is None:
            self.faults += 1
            logger.warning("power: %s: fail-safe caps until it reads again", why)
        self.fault = why

    def offset_w(self) -> float:
        """Predicted wall minus components now, correction and guardband included.

        On a meter fault (or a meter silent for ``silent_after_s``) the whole budget: the
        policy then holds every GPU at its floor (the fail-safe caps).
        """
        if self._clock() - self._last_good_s > self.silent_after_s:
            self._set_fault(f"wall meter {self.name} silent for {self.silent_after_s:g} s")
        if self.fault is not None:
            return self.budget_w
        return self._excess_w + self.correction_w + self.guard_w


class SimulatedRackPdu:
    """The rack's simulated PDU, fed each governor period and logging to ``pdu.csv``.

    Call it with every node's component power (the governor's ``wall_hook``, on one process
    only: node leader 0); it turns them into wall power (:class:`RackWallModel`), feeds the
    meter (:class:`SimulatedPdu`) at the current UTC time and writes each published reading.
    It is a :class:`WallMeter` too: :meth:`read` returns the newest reading it logged.
    """

    def __init__(self, model: RackWallModel, meter: SimulatedPdu, csv_path: Path,
                 clock: Callable[[], float] = time.time, budget_w: float = 3000.0,
                 tracker: WallTracker | None = None) -> None:
        self.model = model
        self.meter = meter
        self._clock = clock
        self._csv = PduCsv(csv_path)
        self._newest: WallReading | None = None
        self.samples = 0
        #: The governor's view (default: the simulated truth itself; a job passes a
        #: :class:`power.wall_hold.WallEstimator` that knows only the meter).
        self.tracker = tracker or WallTracker(
            model, budget_w=budget_w, clock=clock,
            silent_after_s=meter.window_s + meter.latency_s + 3.0, name="simulated PDU")

    def __call__(self, node_component_w: list[float]) -> None:
        """Feed one period's component power of every node (at the current UTC time)."""
        self.feed([(w, 0.0) for w in node_component_w])

    def feed(self, parts: list[tuple[float, float]]) -> None:
        """Feed one period's ``(GPU W, other W)`` of every node (``wall_parts_hook``)."""
        now = self._clock()
        node_component_w = [g + c for g, c in parts]
        self.meter.observe(now, self.model.wall_w(node_component_w))
        observe_parts = getattr(self.tracker, "observe_parts", None)
        if observe_parts is not None:
            observe_parts(now, parts)
        else:
            self.tracker.observe(now, node_component_w)
        reading = self.meter.read()
        if reading is not None:
            self.tracker.correct(reading)
            self._csv.write(reading)
            self._newest = reading
            self.samples += 1

    def read(self) -> WallReading | None:
        """The newest reading logged and not returned before, or ``None``."""
        reading, self._newest = self._newest, None
        return reading

    def close(self) -> None:
        """Close the log."""
        self._csv.close()


def wall_stats(readings: Sequence[WallReading], budget_w: float, *, source: str,
               since_unix_s: float = -math.inf) -> dict[str, Any]:
    """The wall verdict of a PDU series: the figures ``pdu.csv`` shows.

    Args:
        readings: The PDU's readings, in time order.
        budget_w: The power budget, in W.
        source: What read the wall (``simulated PDU``, a meter command...).
        since_unix_s: Only readings whose window ends at or after this time (this session).

    Returns:
        ``source``, ``peak_w``, ``avg_w``, ``crossings`` (runs of readings above the budget),
        ``longest_crossing_s`` (readings in the longest run times their window) and
        ``samples``.
    """
    rows = [r for r in readings if r.unix_s >= since_unix_s]
    crossings, run, longest = 0, 0, 0
    for r in rows:
        if r.wall_w > budget_w:
            run += 1
            crossings += run == 1
            longest = max(longest, run)
        else:
            run = 0
    return {
        "source": source,
        "peak_w": round(max((r.wall_w for r in rows), default=0.0), 1),
        "avg_w": round(sum(r.wall_w for r in rows) / len(rows), 1) if rows else 0.0,
        "crossings": crossings,
        "longest_crossing_s": longest * (rows[0].window_s if rows else 1.0),
        "samples": len(rows),
    }


@dataclass(frozen=True, slots=True)
class WallCrossing:
    """A run of PDU readings above the budget."""

    start_unix_s: float
    """Start of the first window above the budget."""
    length_s: float
    """Readings in the run times their window."""
    peak_w: float


def wall_crossings(readings: Sequence[WallReading], budget_w: float) -> list[WallCrossing]:
    """Every run of readings above ``budget_w``, in time order."""
    out: list[WallCrossing] = []
    run: list[WallReading] = []
    for r in [*readings, None]:
        if r is not None and r.wall_w > budget_w:
            run.append(r)
        elif run:
            out.append(WallCrossing(run[0].unix_s - run[0].window_s,
                                    len(run) * run[0].window_s, max(x.wall_w for x in run)))
            run = []
    return out


class CommandWallMeter:
    """A real rack meter: a command that prints the wall power, polled once a second.

    A background thread runs ``command`` (through the shell) every ``period_s``; each output's
    first number times ``scale`` is a reading of the last ``period_s``. A failing command or
    an unreadable output gives no reading (a meter that stays silent is a fault for
    :class:`WallTracker`).
    """

    def __init__(self, command: str, *, scale: float = 1.0, period_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        import threading

        self.command = command
        self.scale = scale
        self.period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._newest: WallReading | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wall-meter", daemon=True)
        self._thread.start()

    def poll(self) -> WallReading | None:
        """Run the command once; its reading, or ``None``."""
        import subprocess

        try:
            done = subprocess.run(self.command, shell=True, capture_output=True, text=True,
                                  timeout=max(self.period_s, 1.0))
            watts = float(done.stdout.split()[0]) * self.scale if done.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            watts = None
        if watts is None:
            logger.debug("wall meter %r gave no reading", self.command)
            return None
        now = self._clock()
        return WallReading(now, watts, self.period_s, now)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            reading = self.poll()
            if reading is not None:
                with self._lock:
                    self._newest = reading

    def read(self) -> WallReading | None:
        """The newest reading not returned before, or ``None``."""
        with self._lock:
            reading, self._newest = self._newest, None
        return reading

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(timeout=5.0)


class MeteredRack:
    """Node leader 0's real wall meter, logged to ``pdu.csv`` and held by the governor.

    The meter's readings go to ``pdu.csv`` and to a tracker fed each governor period (the
    governor's ``wall_hook``); the real-meter twin of :class:`SimulatedRackPdu`.
    """

    def __init__(self, model: RackWallModel, meter: CommandWallMeter, csv_path: Path,
                 budget_w: float = 3000.0, clock: Callable[[], float] = time.time,
                 tracker: WallTracker | None = None) -> None:
        self.meter = meter
        self._clock = clock
        self._csv = PduCsv(csv_path)
        self.samples = 0
        self.tracker = tracker or WallTracker(model, budget_w=budget_w, clock=clock,
                                              silent_after_s=meter.period_s + 4.0,
                                              name=repr(meter.command))

    def __call__(self, node_component_w: list[float]) -> None:
        """Feed one period's component power; log and fold in a new meter reading."""
        self.feed([(w, 0.0) for w in node_component_w])

    def feed(self, parts: list[tuple[float, float]]) -> None:
        """Feed one period's ``(GPU W, other W)`` of every node; log and fold in a reading."""
        observe_parts = getattr(self.tracker, "observe_parts", None)
        if observe_parts is not None:
            observe_parts(self._clock(), parts)
        else:
            self.tracker.observe(self._clock(), [g + c for g, c in parts])
        reading = self.meter.read()
        if reading is not None:
            self._csv.write(reading)
            self.samples += 1
            self.tracker.correct(reading)

    def close(self) -> None:
        """Stop the meter and close the log."""
        self.meter.close()
        self._csv.close()
