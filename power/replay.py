"""Replay of recorded GPU power traces as :class:`power.gpu.GPU` objects.

Trace CSV format (what :class:`power.sampler.PowerSampler` writes to ``gpu_power.csv``):
header row with at least ``time_s,gpu,power_w`` and optionally ``util`` and ``clock``; one row
per GPU per sample; ``time_s`` ascending per GPU. Extra columns are ignored.

A :class:`ReplayGPU` reports the recorded power, linearly interpolated at the injected clock's
time since the replay started (held at the last value after the end, or looped). Its energy
counter is the exact integral of that interpolated power. Power-limit and clock settings are
accepted (validated and remembered) but do not change the recorded power: a replay reproduces
what happened, it does not model the response to new caps (use :mod:`power.simulated` for that).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from power.clock import Clock
from power.errors import PowerError
from power.gpu import GPU


@dataclass(frozen=True, slots=True)
class TraceSeries:
    """One GPU's recorded samples."""

    time_s: np.ndarray
    power_w: np.ndarray
    util: np.ndarray | None
    clock_mhz: np.ndarray | None

    @property
    def duration_s(self) -> float:
        """Time from the first to the last sample."""
        return float(self.time_s[-1] - self.time_s[0])


def load_trace(path: str | os.PathLike[str]) -> dict[int, TraceSeries]:
    """Read a trace CSV into ``{gpu: TraceSeries}``.

    Raises:
        PowerError: Missing columns, unparsable numbers, or time going backwards (the message
            names the file and line).
    """
    path = Path(path)
    rows: dict[int, list[tuple[float, float, float | None, float | None]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"time_s", "gpu", "power_w"} - set(reader.fieldnames or ())
        if missing:
            raise PowerError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                gpu = int(row["gpu"])
                t, p = float(row["time_s"]), float(row["power_w"])
                util = float(row["util"]) if row.get("util") not in (None, "") else None
                clock = float(row["clock"]) if row.get("clock") not in (None, "") else None
            except ValueError as exc:
                raise PowerError(f"{path}:{line}: {exc}") from exc
            if not math.isfinite(t):
                raise PowerError(f"{path}:{line}: time_s {row['time_s']!r} is not a finite number")
            if not (math.isfinite(p) and p > 0):
                raise PowerError(f"{path}:{line}: power_w {row['power_w']!r} for GPU {gpu} is "
                                 "not a positive finite number (a dropped reading? remove the row)")
            series = rows.setdefault(gpu, [])
            if series and t < series[-1][0]:
                raise PowerError(f"{path}:{line}: time_s goes backwards for GPU {gpu}")
            series.append((t, p, util, clock))
    if not rows:
        raise PowerError(f"{path}: no samples")
    out = {}
    for gpu, samples in sorted(rows.items()):
        arr = list(zip(*samples, strict=True))
        utils = None if any(u is None for u in arr[2]) else np.array(arr[2], float)
        clocks = None if any(c is None for c in arr[3]) else np.array(arr[3], float)
        out[gpu] = TraceSeries(np.array(arr[0], float), np.array(arr[1], float), utils, clocks)
    return out


class ReplayGPU(GPU):
    """A GPU that plays back one recorded :class:`TraceSeries`.

    Args:
        index: GPU index.
        series: The recording.
        clock: Time source; the replay starts at ``clock.now()`` at construction.
        min_limit_w: Lowest settable limit.
        max_limit_w: Highest settable limit (also the default limit).
        clock_range_mhz: Supported graphics clock range.
        loop: Restart from the beginning at the end instead of holding the last value.
        name: Reported product name.
    """

    def __init__(self, index: int, series: TraceSeries, *, clock: Clock, min_limit_w: float = 100,
                 max_limit_w: float = 400, clock_range_mhz: tuple[int, int] = (210, 1410),
                 loop: bool = False, name: str = "Replayed GPU") -> None:
        super().__init__(index)
        if len(series.time_s) < 1:
            raise ValueError("ReplayGPU: empty series")
        if not 0 < min_limit_w <= max_limit_w:
            raise ValueError("ReplayGPU: need 0 < min_limit_w <= max_limit_w")
        self.series = series
        self._clock = clock
        self._start = clock.now()
        self._loop = loop
        self._name = name
        self._range_mw = (int(min_limit_w * 1000), int(max_limit_w * 1000))
        self._limit_mw = self._range_mw[1]
        self._clock_range = clock_range_mhz
        self._locked: tuple[int, int] | None = None
        t, p = series.time_s - series.time_s[0], series.power_w
        self._t = t
        seg = 0.5 * (p[1:] + p[:-1]) * np.diff(t)
        self._cum_j = np.concatenate([[0.0], np.cumsum(seg)])

    def _elapsed(self) -> float:
        e = self._clock.now() - self._start
        d = float(self._t[-1])
        if self._loop and d > 0:
            return e % d
        return min(max(e, 0.0), d) if d > 0 else 0.0

    def _power_at(self, e: float) -> float:
        return float(np.interp(e, self._t, self.series.power_w))

    def get_name(self) -> str:
        """Return the configured name."""
        return self._name

    def get_uuid(self) -> str:
        """Return a UUID derived from the index."""
        return f"GPU-replay-{self.index:04d}"

    def get_power_usage_mw(self) -> int:
        """Return the recorded power now. Units: mW."""
        return int(round(self._power_at(self._elapsed()) * 1000))

    def supports_energy_counter(self) -> bool:
        """Replays always provide an energy counter."""
        return True

    def get_total_energy_consumption_mj(self) -> int:
        """Return the integral of the recorded power since the start. Units: mJ."""
        e_raw = max(self._clock.now() - self._start, 0.0)
        d = float(self._t[-1])
        loops, e = (divmod(e_raw, d) if self._loop and d > 0 else (0.0, min(e_raw, d)))
        i = int(np.searchsorted(self._t, e, side="right")) - 1
        i = min(max(i, 0), len(self._t) - 1)
        energy = loops * self._cum_j[-1] + self._cum_j[i]
        energy += 0.5 * (self.series.power_w[i] + self._power_at(e)) * (e - self._t[i])
        if not self._loop and e_raw > d:  # held at the last value after the end
            energy += float(self.series.power_w[-1]) * (e_raw - d)
        return int(energy * 1000)

    def get_power_limit_mw(self) -> int:
        """Return the remembered limit. Units: mW."""
        return self._limit_mw

    def get_power_limit_constraints_mw(self) -> tuple[int, int]:
        """Return the configured limit range. Units: mW."""
        return self._range_mw

    def get_default_power_limit_mw(self) -> int:
        """Return the maximum limit. Units: mW."""
        return self._range_mw[1]

    def _set_power_limit_mw(self, power_limit_mw: int) -> None:
        self._limit_mw = power_limit_mw

    def get_clock_range_mhz(self) -> tuple[int, int]:
        """Return the configured clock range. Units: MHz."""
        return self._clock_range

    def get_default_clock_mhz(self) -> int:
        """Return the top of the clock range. Units: MHz."""
        return self._clock_range[1]

    def get_gpu_clock_mhz(self) -> int:
        """Return the recorded clock (or the top of the range). Units: MHz."""
        if self.series.clock_mhz is None:
            return self._clock_range[1]
        return int(round(np.interp(self._elapsed(), self._t, self.series.clock_mhz)))

    def get_memory_clock_mhz(self) -> int:
        """Memory clocks are not recorded: return 0."""
        return 0

    def _lock_gpu_clocks_mhz(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        self._locked = (min_clock_mhz, max_clock_mhz)

    def unlock_gpu_clocks(self) -> None:
        """Forget the clock lock."""
        self._locked = None

    def get_utilization_percent(self) -> int:
        """Return the recorded utilisation (100 if not recorded)."""
        if self.series.util is None:
            return 100
        return int(round(np.interp(self._elapsed(), self._t, self.series.util)))


def replay_gpus(path: str | os.PathLike[str], *, clock: Clock, **kwargs: object) -> list[ReplayGPU]:
    """Return one :class:`ReplayGPU` per GPU in the trace at ``path`` (kwargs as ReplayGPU)."""
    return [ReplayGPU(i, series, clock=clock, **kwargs)  # type: ignore[arg-type]
            for i, (_gpu, series) in enumerate(sorted(load_trace(path).items()))]
