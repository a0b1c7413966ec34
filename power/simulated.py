"""Simulated GPUs: a small physical model for tests, dry runs and demos.

Model (per GPU, ``x = f / f_max``):

* Voltage rises roughly linearly with the graphics clock ``f`` over the DVFS range:
  ``V(f) / V_max = v_min_ratio + (1 - v_min_ratio) * (f - f_min) / (f_max - f_min)``.
* Power is a static part (leakage, HBM/GDDR, board) plus CMOS dynamic power
  ``~ activity * f * V^2``, scaled so a "power virus" (activity 1) at ``f_max`` draws
  ``peak_power_w`` (slightly above TDP, so the default limit binds as on real boards)::

      P(f, a) = static_w + a * (peak_power_w - static_w) * x * (V(f) / V_max) ** 2

  ``activity`` in [0, 1] is how hard the running kernels switch (compute-heavy training ~0.8-1).
* Throughput follows a roofline-like split: a fraction ``m`` of the work at ``f_max`` is
  memory-bound and does not speed up with the clock, so throughput saturates as the clock (and
  power) rises::

      throughput(f) / throughput(f_max) = 1 / ((1 - m) / x + m)

* Driver behaviour: the GPU settles on the highest supported clock (``clock_step_mhz`` grid,
  at most the locked maximum) whose power at the present activity fits under the power limit
  (never below ``f_min``); it approaches that clock exponentially with time constant
  ``settle_time_s``, so a sudden load rise overshoots the limit briefly as on real boards.
* Readings come through a :class:`SensorModel`: the true power averaged over ``window_s``
  (0: instantaneous), refreshed every ``update_period_s`` (held in between), plus seeded
  Gaussian noise. :data:`INSTANT_SENSOR` is a perfect instant sensor (NVML's instant field,
  or ``nvmlDeviceGetPowerUsage`` on GA100 and older); :data:`AVERAGE_1S_SENSOR` mimics
  ``nvmlDeviceGetPowerUsage`` on H100/H200/L40S/L4 (a 1-s average). The energy counter
  integrates the true power exactly (trapezoid per update), starting from a seeded large offset
  like a long-running driver.

Time comes from an injected :class:`~power.clock.Clock`: with a :class:`~power.clock.SimClock`
a minute of operation takes milliseconds. State is advanced lazily whenever the GPU is queried
(a sensor's window is integrated from those updates, so query at least as often as the
resolution you need).

Profiles are datasheet-level approximations (TDP, power-limit range, clock range); the shape
constants (static power, ``v_min_ratio``) are plausible but not fitted to any measurement.

A simulated GPU can persist its settings (limit, clock lock) to a JSON file so that another
process can check what a governed process left behind (:class:`SimStateFile`).
"""
from __future__ import annotations

import bisect
import functools
import json
import math
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fileio.atomic import strict_json, write_text_atomic
from power.clock import Clock
from power.errors import NotSupportedError, PowerError
from power.gpu import GPU, PowerSensor


@dataclass(frozen=True, kw_only=True, slots=True)
class GpuProfile:
    """Static description of a GPU model for the simulator."""

    name: str
    """Product name reported by :meth:`SimulatedGPU.get_name`."""
    tdp_w: float
    """Thermal design power (board power) in W."""
    min_limit_w: float
    """Lowest settable power limit in W."""
    max_limit_w: float
    """Highest settable power limit in W."""
    default_limit_w: float
    """Power limit at boot in W."""
    static_w: float
    """Power that does not depend on the graphics clock (leakage, memory, board) in W."""
    peak_power_w: float
    """Power at ``max_clock_mhz`` with activity 1 (no limit) in W."""
    min_clock_mhz: int
    """Lowest graphics clock in MHz."""
    max_clock_mhz: int
    """Highest (boost) graphics clock in MHz."""
    default_clock_mhz: int
    """Default applications (base) graphics clock in MHz."""
    memory_clock_mhz: int
    """Memory clock in MHz (fixed in this model)."""
    clock_step_mhz: int = 15
    """Spacing of supported graphics clocks in MHz."""
    v_min_ratio: float = 0.65
    """Voltage at ``min_clock_mhz`` relative to the voltage at ``max_clock_mhz``."""

    def __post_init__(self) -> None:
        if not 0 < self.min_limit_w <= self.default_limit_w <= self.max_limit_w:
            raise ValueError(f"GpuProfile {self.name}: need 0 < min_limit_w <= default_limit_w "
                             "<= max_limit_w")
        if not 0 <= self.static_w < self.peak_power_w:
            raise ValueError(f"GpuProfile {self.name}: need 0 <= static_w < peak_power_w")
        if not 0 < self.min_clock_mhz <= self.default_clock_mhz <= self.max_clock_mhz:
            raise ValueError(f"GpuProfile {self.name}: need 0 < min_clock_mhz <= "
                             "default_clock_mhz <= max_clock_mhz")
        if not 0 < self.v_min_ratio <= 1:
            raise ValueError(f"GpuProfile {self.name}: v_min_ratio must be in (0, 1]")
        if self.power_w(self.min_clock_mhz, 1.0) > self.min_limit_w:
            raise ValueError(f"GpuProfile {self.name}: power at min clock exceeds min_limit_w")

    def clock_grid_mhz(self) -> np.ndarray:
        """Return the supported graphics clocks, ascending. Units: MHz."""
        return _tables(self)[0].copy()

    def settled_clock_scalar_mhz(self, limit_w: float, activity: float,
                                 max_clock_mhz: float | None = None) -> float:
        """Scalar fast path of :meth:`settled_clock_mhz` (binary search on the clock grid)."""
        grid, dyn = _tables(self)
        if activity > 0:
            i = bisect.bisect_right(dyn, (limit_w - self.static_w) / activity) - 1
        else:
            i = len(grid) - 1
        if max_clock_mhz is not None:
            i = min(i, bisect.bisect_right(grid, max_clock_mhz) - 1)
        return float(grid[max(i, 0)])

    def power_w(self, clock_mhz: np.ndarray | float, activity: np.ndarray | float) -> np.ndarray:
        """Return the power draw at a clock and activity (broadcasts over arrays). Units: W."""
        f = np.asarray(clock_mhz, dtype=float)
        span = max(self.max_clock_mhz - self.min_clock_mhz, 1)
        v = self.v_min_ratio + (1.0 - self.v_min_ratio) * (f - self.min_clock_mhz) / span
        x = f / self.max_clock_mhz
        dynamic_w = self.peak_power_w - self.static_w
        return self.static_w + np.asarray(activity) * dynamic_w * x * v * v

    def settled_clock_mhz(self, limit_w: np.ndarray | float, activity: np.ndarray | float,
                          max_clock_mhz: np.ndarray | float | None = None) -> np.ndarray:
        """Return the clock the driver settles on under a power limit (broadcasts).

        Args:
            limit_w: Power limit in W.
            activity: Workload activity in [0, 1].
            max_clock_mhz: Upper clock lock in MHz (None: the profile's maximum).
        """
        grid = self.clock_grid_mhz()
        limit = np.asarray(limit_w, dtype=float)
        act = np.asarray(activity, dtype=float)
        cap = self.max_clock_mhz if max_clock_mhz is None else np.asarray(max_clock_mhz, float)
        shape = np.broadcast_shapes(limit.shape, act.shape, np.shape(cap))
        p = self.power_w(grid, np.broadcast_to(act, shape)[..., None])
        ok = (p <= np.broadcast_to(limit, shape)[..., None]) & (
            grid <= np.broadcast_to(cap, shape)[..., None])
        # Power rises with the clock, so the allowed clocks form a prefix of the grid.
        count = ok.sum(axis=-1)
        return grid[np.maximum(count - 1, 0)]


@functools.lru_cache(maxsize=64)
def _tables(profile: GpuProfile) -> tuple[np.ndarray, list[float]]:
    """Clock grid and the dynamic power at activity 1 on it (ascending) for one profile."""
    grid = np.arange(profile.min_clock_mhz, profile.max_clock_mhz + 1, profile.clock_step_mhz)
    if grid[-1] != profile.max_clock_mhz:
        grid = np.append(grid, profile.max_clock_mhz)
    grid = grid.astype(float)
    dyn = (profile.power_w(grid, 1.0) - profile.static_w).tolist()
    return grid, dyn


def relative_throughput(profile: GpuProfile, clock_mhz: np.ndarray | float,
                        memory_bound: np.ndarray | float) -> np.ndarray:
    """Return throughput relative to running at ``profile.max_clock_mhz`` (broadcasts).

    Args:
        profile: The GPU model.
        clock_mhz: Graphics clock in MHz.
        memory_bound: Fraction of the work at max clock that is memory-bound, in [0, 1).
    """
    x = np.asarray(clock_mhz, dtype=float) / profile.max_clock_mhz
    m = np.asarray(memory_bound, dtype=float)
    return 1.0 / ((1.0 - m) / x + m)


PROFILES: dict[str, GpuProfile] = {
    p.name: p
    for p in (
        GpuProfile(name="V100-SXM2", tdp_w=300, min_limit_w=150, max_limit_w=300,
                   default_limit_w=300, static_w=45, peak_power_w=320, min_clock_mhz=135,
                   max_clock_mhz=1530, default_clock_mhz=1312, memory_clock_mhz=877),
        GpuProfile(name="A100-SXM4", tdp_w=400, min_limit_w=100, max_limit_w=400,
                   default_limit_w=400, static_w=55, peak_power_w=430, min_clock_mhz=210,
                   max_clock_mhz=1410, default_clock_mhz=1095, memory_clock_mhz=1215),
        GpuProfile(name="A100-PCIe", tdp_w=250, min_limit_w=150, max_limit_w=250,
                   default_limit_w=250, static_w=40, peak_power_w=270, min_clock_mhz=210,
                   max_clock_mhz=1410, default_clock_mhz=765, memory_clock_mhz=1215),
        GpuProfile(name="H100-SXM5", tdp_w=700, min_limit_w=200, max_limit_w=700,
                   default_limit_w=700, static_w=75, peak_power_w=740, min_clock_mhz=345,
                   max_clock_mhz=1980, default_clock_mhz=1590, memory_clock_mhz=2619),
        GpuProfile(name="L40S", tdp_w=350, min_limit_w=100, max_limit_w=350,
                   default_limit_w=350, static_w=35, peak_power_w=370, min_clock_mhz=210,
                   max_clock_mhz=2520, default_clock_mhz=1110, memory_clock_mhz=9001),
        GpuProfile(name="L4", tdp_w=72, min_limit_w=40, max_limit_w=72, default_limit_w=72,
                   static_w=16, peak_power_w=80, min_clock_mhz=210, max_clock_mhz=2040,
                   default_clock_mhz=795, memory_clock_mhz=6251),
    )
}


def get_profile(name: str) -> GpuProfile:
    """Return the profile called ``name`` (see :data:`PROFILES`).

    Raises:
        ValueError: Unknown name (the message lists the known ones).
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown GPU profile {name!r}; known: {', '.join(PROFILES)}") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorModel:
    """How a simulated GPU's power reading relates to its true power.

    The reading at time ``t`` is the mean true power over ``[u - window_s, u]`` where ``u`` is
    the latest refresh (``t`` rounded down to a multiple of ``update_period_s``), plus noise.
    """

    window_s: float = 0.0
    """Averaging window in seconds (0: the instantaneous power)."""
    update_period_s: float = 0.0
    """How often the reading is refreshed in seconds (0: continuously)."""
    noise_fraction: float | None = None
    """Std of the reading noise relative to TDP (None: the GPU's ``noise_fraction``)."""

    def __post_init__(self) -> None:
        for name in ("window_s", "update_period_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SensorModel.{name} must be >= 0, got {getattr(self, name)}")
        if self.noise_fraction is not None and self.noise_fraction < 0:
            raise ValueError(f"SensorModel.noise_fraction must be >= 0, got {self.noise_fraction}")

    @property
    def kind(self) -> str:
        """``"instant"`` or ``"average"`` (as :class:`~power.gpu.PowerSensor` says)."""
        return "instant" if self.window_s == 0 else "average"


INSTANT_SENSOR = SensorModel()
"""A perfect instantaneous reading (NVML's instant field; ``GetPowerUsage`` up to GA100)."""

AVERAGE_1S_SENSOR = SensorModel(window_s=1.0, update_period_s=0.1)
"""``nvmlDeviceGetPowerUsage`` on Ampere (non-GA100) and newer: a 1-s average; the 100 ms
refresh is an assumption (NVIDIA does not document it)."""

SENSORS: dict[str, SensorModel] = {"instant": INSTANT_SENSOR, "average_1s": AVERAGE_1S_SENSOR}
"""Named sensor models (``power.sim_sensor`` of a job, tests)."""


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """What the workload asks of a GPU at one instant."""

    activity: float
    """Switching activity in [0, 1] (scales dynamic power)."""
    memory_bound: float = 0.3
    """Fraction of the work at max clock that is memory-bound, in [0, 1)."""
    utilization_percent: int = 100
    """Share of time a kernel runs, as NVML reports it."""


Load = Callable[[float], LoadPoint]
"""A workload: maps a time in seconds to the :class:`LoadPoint` at that time."""


def constant_load(activity: float = 0.9, memory_bound: float = 0.3,
                  utilization_percent: int = 100) -> Load:
    """Return a load that never changes."""
    point = LoadPoint(activity, memory_bound, utilization_percent)
    return lambda _t: point


class ArrayLoad:
    """A load sampled on a regular time grid (piecewise constant, held at the ends).

    Args:
        dt_s: Grid spacing in seconds.
        activity: Activity per grid step.
        memory_bound: Memory-bound fraction (scalar or per grid step).
        start_s: Time of the first grid step.
    """

    def __init__(self, dt_s: float, activity: np.ndarray, memory_bound: float | np.ndarray = 0.3,
                 start_s: float = 0.0) -> None:
        if dt_s <= 0:
            raise ValueError(f"ArrayLoad: dt_s must be > 0, got {dt_s}")
        self.dt_s = dt_s
        self.activity = np.clip(np.asarray(activity, dtype=float), 0.0, 1.0)
        self.memory_bound = np.broadcast_to(np.asarray(memory_bound, float), self.activity.shape)
        self.start_s = start_s

    def index(self, t: float) -> int:
        """Return the grid index in force at time ``t``."""
        i = int((t - self.start_s) / self.dt_s)
        return min(max(i, 0), len(self.activity) - 1)

    def __call__(self, t: float) -> LoadPoint:
        """Return the load at time ``t``."""
        i = self.index(t)
        a = float(self.activity[i])
        return LoadPoint(a, float(self.memory_bound[i]), 100 if a > 0.05 else 0)


def noisy_phase_load(*, seed: int, duration_s: float, dt_s: float = 0.05,
                     phase_s: tuple[float, float] = (2.0, 8.0),
                     activity_range: tuple[float, float] = (0.6, 1.0), noise: float = 0.03,
                     memory_bound: float = 0.3, warmup_s: float = 0.0,
                     warmup_activity: float = 0.1) -> ArrayLoad:
    """Generate a changing, noisy training-like load.

    The activity jumps to a new uniform random level in ``activity_range`` at the start of
    each phase (phase lengths uniform in ``phase_s``), with Gaussian noise of std ``noise`` on
    every step; the first ``warmup_s`` run at ``warmup_activity`` (data loading, start-up).
    """
    rng = np.random.default_rng(seed)
    n = int(math.ceil(duration_s / dt_s)) + 1
    activity = np.empty(n)
    i = 0
    while i < n:
        length = max(1, int(rng.uniform(*phase_s) / dt_s))
        activity[i:i + length] = rng.uniform(*activity_range)
        i += length
    activity += rng.normal(0.0, noise, n)
    activity[: int(warmup_s / dt_s)] = warmup_activity
    return ArrayLoad(dt_s, activity, memory_bound)


class SimStateFile:
    """A JSON file holding the settings of simulated GPUs, rewritten atomically on change.

    Format: ``{"gpus": {"<index>": {"uuid", "power_limit_mw", "default_power_limit_mw",
    "locked_clocks_mhz"}}}``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._gpus: dict[str, dict[str, object]] = {}
        if self.path.exists() or self.path.is_symlink():
            self._check_ours()

    def _check_ours(self) -> None:
        """Check that an existing file is a state file before rewriting it.

        An existing file is rewritten only if it is a state file like this one writes: a
        user's file given here by mistake is never replaced.
        """
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            ours = isinstance(data, dict) and set(data) == {"gpus"} and isinstance(
                data["gpus"], dict) and all(isinstance(v, dict) for v in data["gpus"].values())
        except (OSError, UnicodeDecodeError, ValueError):
            ours = False
        if not ours or self.path.is_symlink() or not self.path.is_file():
            raise PowerError(f"{self.path}: exists and is not a simulated-GPU state file (not "
                             "written over; give a new file name)")

    def update(self, index: int, **fields: object) -> None:
        """Merge ``fields`` into GPU ``index``'s entry and rewrite the file."""
        with self._lock:
            self._gpus.setdefault(str(index), {}).update(fields)
            # rewritten at every setting change: atomic, but not flushed to disk each time
            write_text_atomic(self.path, json.dumps(strict_json({"gpus": self._gpus}), indent=1,
                                                    sort_keys=True, allow_nan=False),
                              fsync=False)

    @staticmethod
    def read(path: str | os.PathLike[str]) -> dict[int, dict[str, object]]:
        """Return ``{index: fields}`` from a state file written by another process."""
        data = json.loads(Path(path).read_text())
        return {int(k): v for k, v in data["gpus"].items()}


class SimulatedGPU(GPU):
    """A GPU following the model in this module's docstring.

    Args:
        index: Index of the GPU on its node.
        profile: The GPU model.
        clock: Time source (a :class:`~power.clock.SimClock` for fast tests).
        load: Workload over time (default: constant activity 0.9).
        seed: Seed of the reading noise and the energy counter's start value.
        noise_fraction: Std of the power-reading noise relative to TDP.
        settle_time_s: Time constant of the driver's clock response.
        has_energy_counter: False mimics pre-Volta GPUs (energy must be integrated).
        state_file: Where to persist settings for other processes, if anywhere.
        uuid: Device UUID (default derived from ``seed`` and ``index``).
        sensor: How readings relate to the true power (default: instantaneous).
    """

    def __init__(self, index: int, profile: GpuProfile, *, clock: Clock,
                 load: Load | None = None, seed: int = 0, noise_fraction: float = 0.005,
                 settle_time_s: float = 0.02, has_energy_counter: bool = True,
                 state_file: SimStateFile | None = None, uuid: str | None = None,
                 sensor: SensorModel | str = INSTANT_SENSOR) -> None:
        super().__init__(index)
        if isinstance(sensor, str):
            if sensor not in SENSORS:
                raise ValueError(f"unknown sensor {sensor!r}; known: {', '.join(SENSORS)}")
            sensor = SENSORS[sensor]
        if sensor.noise_fraction is not None:
            noise_fraction = sensor.noise_fraction
        if noise_fraction < 0:
            raise ValueError(f"noise_fraction must be >= 0, got {noise_fraction}")
        if settle_time_s < 0:
            raise ValueError(f"settle_time_s must be >= 0, got {settle_time_s}")
        self.profile = profile
        self._clock = clock
        self._load = load or constant_load()
        self._rng = np.random.default_rng([seed, index])
        self._noise_w = noise_fraction * profile.tdp_w
        self._settle_s = settle_time_s
        self._has_energy = has_energy_counter
        self._state_file = state_file
        self._uuid = uuid or (f"GPU-{seed & 0xFFFFFFFF:08x}-5100-{index:04x}-"
                              f"{zlib.crc32(profile.name.encode()) & 0xFFFF:04x}")
        self._mutex = threading.Lock()
        self._limit_w = float(profile.default_limit_w)
        self._locked: tuple[int, int] | None = None
        self._t = clock.now()
        self._point = self._load(self._t)
        self._clock_mhz = float(self._target_clock(self._point))
        self._power_w = float(profile.power_w(self._clock_mhz, self._point.activity))
        self._energy_mj = float(self._rng.uniform(1e8, 1e9))
        self.sensor = sensor
        # (time, energy mJ, power W) at every update, as far back as the sensor looks.
        self._history: list[tuple[float, float, float]] = [(self._t, self._energy_mj,
                                                            self._power_w)]
        self._keep_s = sensor.window_s + sensor.update_period_s + 1.0
        self._persist()

    # --- model --------------------------------------------------------------------------
    def _target_clock(self, point: LoadPoint) -> float:
        cap = None if self._locked is None else self._locked[1]
        return self.profile.settled_clock_scalar_mhz(self._limit_w, point.activity, cap)

    def _advance(self) -> None:
        now = self._clock.now()
        dt = now - self._t
        if dt <= 0:
            return
        point = self._load(now)
        target = self._target_clock(point)
        decay = math.exp(-dt / self._settle_s) if self._settle_s > 0 else 0.0
        self._clock_mhz = target + (self._clock_mhz - target) * decay
        power = self._power(self._clock_mhz, point.activity)
        self._energy_mj += 0.5 * (self._power_w + power) * dt * 1000.0
        self._power_w, self._point, self._t = power, point, now
        if self.sensor.window_s or self.sensor.update_period_s:
            self._history.append((now, self._energy_mj, power))
            if self._history[0][0] < now - self._keep_s and len(self._history) > 2:
                cut = bisect.bisect_left(self._history, (now - self._keep_s,))
                del self._history[:max(0, min(cut, len(self._history) - 2))]

    def _energy_at_mj(self, t: float) -> float:
        """Return the energy counter at past time ``t``.

        Energy counter at past time ``t`` (linear between updates; extrapolated at the
        start with the first power).
        """
        h = self._history
        if t <= h[0][0]:
            return h[0][1] - h[0][2] * (h[0][0] - t) * 1000.0
        i = bisect.bisect_right(h, (t, math.inf, math.inf)) - 1
        if i >= len(h) - 1:
            return h[-1][1]
        (t0, e0, _), (t1, e1, _) = h[i], h[i + 1]
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0) if t1 > t0 else e1

    def _sensed_power_w(self) -> float:
        """What the sensor reports now (noiseless); :meth:`_advance` must have run."""
        s = self.sensor
        if not (s.window_s or s.update_period_s):
            return self._power_w
        u = self._t if s.update_period_s == 0 else (
            math.floor(self._t / s.update_period_s + 1e-9) * s.update_period_s)
        if s.window_s == 0:
            h = self._history
            i = max(bisect.bisect_right(h, (u, math.inf, math.inf)) - 1, 0)
            return h[i][2]
        return (self._energy_at_mj(u) - self._energy_at_mj(u - s.window_s)) / (
            1000.0 * s.window_s)

    def _power(self, clock_mhz: float, activity: float) -> float:
        p = self.profile
        v = p.v_min_ratio + (1.0 - p.v_min_ratio) * (clock_mhz - p.min_clock_mhz) / max(
            p.max_clock_mhz - p.min_clock_mhz, 1)
        return p.static_w + activity * (p.peak_power_w - p.static_w) * (
            clock_mhz / p.max_clock_mhz) * v * v

    def _persist(self) -> None:
        if self._state_file is not None:
            self._state_file.update(
                self.index, uuid=self._uuid, power_limit_mw=int(round(self._limit_w * 1000)),
                default_power_limit_mw=int(self.profile.default_limit_w * 1000),
                locked_clocks_mhz=list(self._locked) if self._locked else None)

    # --- simulation-only inspection ------------------------------------------------------
    def true_power_w(self) -> float:
        """Return the noiseless power draw now (simulation only). Units: W."""
        with self._mutex:
            self._advance()
            return self._power_w

    def relative_throughput(self) -> float:
        """Return the present throughput relative to max clock (simulation only)."""
        with self._mutex:
            self._advance()
            m = self._point.memory_bound
            return 1.0 / ((1.0 - m) * self.profile.max_clock_mhz / self._clock_mhz + m)

    @property
    def locked_clocks_mhz(self) -> tuple[int, int] | None:
        """Return the active clock lock, if any (simulation only)."""
        return self._locked

    # --- GPU interface -------------------------------------------------------------------
    def get_name(self) -> str:
        """Return the profile name prefixed with ``Simulated``."""
        return f"Simulated {self.profile.name}"

    def get_uuid(self) -> str:
        """Return the simulated UUID."""
        return self._uuid

    def get_power_usage_mw(self) -> int:
        """Return the power draw as the sensor model reports it, with noise. Units: mW."""
        with self._mutex:
            self._advance()
            noisy = self._sensed_power_w() + (self._rng.normal(0.0, self._noise_w)
                                              if self._noise_w else 0)
            return int(round(max(noisy, 0.0) * 1000))

    def get_power_sensor(self) -> PowerSensor:
        """Describe the sensor model (source ``"simulated"``)."""
        s = self.sensor
        return PowerSensor(kind=s.kind, window_s=s.window_s, source="simulated",
                           note=(f"refreshed every {s.update_period_s:g} s"
                                 if s.update_period_s else ""))

    def supports_energy_counter(self) -> bool:
        """Return whether this simulated GPU exposes an energy counter."""
        return self._has_energy

    def get_total_energy_consumption_mj(self) -> int:
        """Return the integrated energy. Units: mJ."""
        if not self._has_energy:
            raise NotSupportedError(f"simulated GPU {self.index}: no energy counter")
        with self._mutex:
            self._advance()
            return int(self._energy_mj)

    def get_power_limit_mw(self) -> int:
        """Return the power limit. Units: mW."""
        return int(round(self._limit_w * 1000))

    def get_power_limit_constraints_mw(self) -> tuple[int, int]:
        """Return the profile's limit range. Units: mW."""
        return int(self.profile.min_limit_w * 1000), int(self.profile.max_limit_w * 1000)

    def get_default_power_limit_mw(self) -> int:
        """Return the profile's default limit. Units: mW."""
        return int(self.profile.default_limit_w * 1000)

    def _set_power_limit_mw(self, power_limit_mw: int) -> None:
        with self._mutex:
            self._advance()
            self._limit_w = power_limit_mw / 1000.0
            self._persist()

    def get_clock_range_mhz(self) -> tuple[int, int]:
        """Return the profile's clock range. Units: MHz."""
        return self.profile.min_clock_mhz, self.profile.max_clock_mhz

    def get_default_clock_mhz(self) -> int:
        """Return the profile's default clock. Units: MHz."""
        return self.profile.default_clock_mhz

    def get_gpu_clock_mhz(self) -> int:
        """Return the present graphics clock. Units: MHz."""
        with self._mutex:
            self._advance()
            return int(round(self._clock_mhz))

    def get_memory_clock_mhz(self) -> int:
        """Return the memory clock. Units: MHz."""
        return self.profile.memory_clock_mhz

    def _lock_gpu_clocks_mhz(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        with self._mutex:
            self._advance()
            self._locked = (min_clock_mhz, max_clock_mhz)
            self._persist()

    def unlock_gpu_clocks(self) -> None:
        """Remove the clock lock."""
        with self._mutex:
            self._advance()
            self._locked = None
            self._persist()

    def get_utilization_percent(self) -> int:
        """Return the load's utilisation in percent."""
        with self._mutex:
            self._advance()
            return self._point.utilization_percent


def make_simulated_gpus(profile: str | GpuProfile, count: int, *, clock: Clock,
                        loads: Sequence[Load] | Load | None = None, seed: int = 0,
                        state_path: str | os.PathLike[str] | None = None,
                        **kwargs: object) -> list[SimulatedGPU]:
    """Return ``count`` simulated GPUs of one profile (one node's worth).

    Args:
        profile: Profile or its name in :data:`PROFILES`.
        count: Number of GPUs.
        clock: Shared time source.
        loads: One load for all, one per GPU, or None (constant).
        seed: Base seed (GPU ``i`` uses ``[seed, i]``).
        state_path: If given, every GPU persists its settings to this JSON file.
        **kwargs: Passed to :class:`SimulatedGPU`.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if loads is None or callable(loads):
        per_gpu = [loads] * count
    else:
        per_gpu = list(loads)
        if len(per_gpu) != count:
            raise ValueError(f"got {len(per_gpu)} loads for {count} GPUs")
    state = SimStateFile(state_path) if state_path is not None else None
    return [SimulatedGPU(i, prof, clock=clock, load=per_gpu[i], seed=seed, state_file=state,
                         **kwargs) for i in range(count)]  # type: ignore[arg-type]
