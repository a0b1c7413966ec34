"""Power sweep: measure throughput and power of a workload at a series of GPU settings.

For each setting (a power limit in W, or a locked maximum graphics clock in MHz) the sweep
applies it to every GPU through the :class:`~power.gpu.GPU` interface, runs ``warmup_steps``
workload steps, then measures ``steps`` steps while a :class:`~power.sampler.PowerSampler`
records GPU and node power into ``samples/<setting>/``. Original settings are put back when
the sweep ends, fails, or is stopped by SIGINT/SIGTERM (:class:`SettingsGuard`). Each point is
written to ``sweep.json``/``sweep.csv`` (atomically) as soon as it is measured, and a later run
with the same output folder and settings skips the points already there.

``sweep.json`` (the report codes against this; keep it exact)::

    {"job": str, "workload": "train" | "infer", "mode": "power_limit" | "clocks",
     "gpu": str, "simulated": bool,
     "points": [{"setting": float, "unit": "W" | "MHz", "images_per_s": float,
                 "avg_gpu_w": float, "peak_gpu_w": float, "avg_node_w": float,
                 "j_per_image": float, "images_per_s_per_w": float, "is": float | null,
                 "pareto": bool, "warmed_up": bool, "warmup_reason": str}],
     "plan": null | {...}}   # see power.planner.Plan.to_json

Per-GPU values: ``images_per_s``, ``avg_gpu_w`` and ``peak_gpu_w`` are for ONE GPU (the
average over the node's GPUs; ``peak_gpu_w`` is the highest single-GPU reading); ``j_per_image
= avg_gpu_w / images_per_s`` and ``images_per_s_per_w = images_per_s / avg_gpu_w`` are GPU
energy only. ``avg_node_w`` is the whole node: all its GPUs plus CPU/DRAM/overhead (as
:class:`~power.node.NodePower` reports it). ``is`` is the identity similarity of a fixed image
set produced at that setting (inference sweeps; null for training). ``pareto`` marks points no
other point beats on both higher ``images_per_s`` and lower node energy per image
(``avg_node_w / images_per_s``, :func:`pareto_flags`), among the warmed-up points.
``warmed_up`` is false, with ``warmup_reason`` saying why, for a point measured without a
warm-up (``warmup_steps=0`` and ``warmup_s=0``), after a warm-up shorter than the GPUs' power
sensor window (e.g. NVML's 1-s averaged power, :meth:`~power.gpu.GPU.get_power_sensor`): its
readings still average the previous setting in, or with readings that had not settled
(:func:`readings_settled`; the warm-up waits up to :data:`SETTLE_MAX_S` for them). Such points
are left out of the Pareto front and of plans (:func:`power.planner.curve_from_points`) unless
no point is warmed up (then the front is over every point and planning is refused). Points are
sorted by setting. ``sweep_meta.json`` holds what resuming needs (the settings fingerprint,
ranges).

Throughput: every workload step reports the images it processed per GPU and the time the GPUs
were busy with it. On real GPUs that is the measured (synchronised) step time. On simulated
GPUs (:class:`ModelPacedWorkload`) the busy time is ``images / (images_per_s_at_max x
relative throughput)`` from the simulator's model at the GPUs' present clock, and the sweep's
clock is advanced (or slept) by it, so the measured curve follows the model (a real CPU
workload may run inside each step; its own speed is ignored).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from fileio.atomic import write_json_atomic, write_text_atomic
from power.clock import Clock, MonotonicClock, SimClock
from power.errors import PowerError
from power.gpu import GPU, restore_gpu_settings
from power.node import NodePower
from power.sampler import PowerSampler
from power.signals import RaisingSignalHandlers, signals_blocked

logger = logging.getLogger(__name__)

MODES: dict[str, str] = {"power_limit": "W", "clocks": "MHz"}
"""Sweep mode -> unit of its settings."""

WORKLOADS = ("train", "infer")

SIM_LOADS: dict[str, tuple[float, float]] = {"train": (0.9, 0.3), "infer": (0.7, 0.45)}
"""Simulated ``(activity, memory_bound)`` of each workload: training switches harder; inference
is more memory-bound (assumptions, not measurements)."""

SIM_NOMINAL_IMAGES_PER_S: dict[str, float] = {
    "V100-SXM2": 250.0, "A100-SXM4": 620.0, "A100-PCIe": 620.0, "H100-SXM5": 1980.0,
    "L40S": 720.0, "L4": 240.0,
}
"""Nominal images/s of one simulated GPU at its maximum clock, used when no figure is given:
2 x the GPU's dense FP16 tensor TFLOPS. Placeholders with the right ratios between GPUs, not
measurements - pass ``images_per_s_at_max`` (``--sim-images-per-s``) to calibrate."""

POINT_KEYS = ("setting", "unit", "images_per_s", "avg_gpu_w", "peak_gpu_w", "avg_node_w",
              "j_per_image", "images_per_s_per_w", "is", "pareto", "warmed_up",
              "warmup_reason")
"""Keys of one point, in ``sweep.csv`` column order."""

MAX_POINTS = 200


class SweepMismatchError(ValueError):
    """An output folder holds a sweep measured with different settings."""


# --------------------------------------------------------------------------- settings


def parse_range(text: str, *, option: str = "--limits") -> list[float]:
    """Parse ``A:B:STEP`` (inclusive, ascending) or a comma list ``A,B,C`` into settings.

    Raises:
        ValueError: One line naming ``option``: malformed, ``A > B``, ``STEP <= 0``, a
            non-positive value, or more than 200 points.
    """
    s = text.strip()
    try:
        if ":" in s:
            parts = s.split(":")
            if len(parts) != 3:
                raise ValueError
            a, b, step = (float(p) for p in parts)
            if not all(math.isfinite(v) for v in (a, b, step)):
                raise ValueError
        else:
            values = [float(p) for p in s.split(",") if p.strip()]
            if not values or not all(math.isfinite(v) for v in values):
                raise ValueError
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected START:STOP:STEP (e.g. 150:400:25) or a "
                         "comma list (e.g. 200,250,300)") from None
    if ":" in s:
        if step <= 0:
            raise ValueError(f"{option} {text!r}: STEP must be > 0")
        if a > b:
            raise ValueError(f"{option} {text!r}: START must be <= STOP")
        n = math.floor((b - a) / step + 1e-9) + 1
        if n > MAX_POINTS:
            raise ValueError(f"{option} {text!r}: {n} points; at most {MAX_POINTS}")
        values = [round(a + i * step, 6) for i in range(n)]
    if any(v <= 0 for v in values):
        raise ValueError(f"{option} {text!r}: settings must be > 0")
    if len(values) > MAX_POINTS:
        raise ValueError(f"{option} {text!r}: {len(values)} points; at most {MAX_POINTS}")
    return sorted(set(values))


def setting_range(gpus: Sequence[GPU], mode: str) -> tuple[float, float]:
    """Return the range every GPU accepts: ``(min, max)`` W or MHz."""
    if mode == "power_limit":
        ranges = [tuple(v / 1000.0 for v in g.get_power_limit_constraints_mw()) for g in gpus]
    else:
        ranges = [tuple(float(v) for v in g.get_clock_range_mhz()) for g in gpus]
    return max(r[0] for r in ranges), min(r[1] for r in ranges)


def check_settings(settings: Sequence[float], gpus: Sequence[GPU], mode: str) -> None:
    """Reject settings outside what every GPU accepts.

    Raises:
        ValueError: Unknown mode, or one line naming the bad settings and the range.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    lo, hi = setting_range(gpus, mode)
    bad = [s for s in settings if not lo - 1e-9 <= s <= hi + 1e-9]
    if bad:
        unit = MODES[mode]
        what = "power limit" if mode == "power_limit" else "clock"
        shown = ", ".join(f"{b:g}" for b in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise ValueError(f"{what} {shown} {unit} outside the range of {gpus[0].get_name()}: "
                         f"{lo:g}-{hi:g} {unit}")


def default_settings(gpus: Sequence[GPU], mode: str, count: int = 9) -> list[float]:
    """``count`` evenly spaced whole-number settings over the GPUs' range."""
    lo, hi = setting_range(gpus, mode)
    lo_i, hi_i = math.ceil(lo), math.floor(hi)
    return sorted({float(round(lo_i + (hi_i - lo_i) * i / (count - 1))) for i in range(count)})


# --------------------------------------------------------------------------- apply / restore


class SettingsGuard:
    """Applies sweep settings to GPUs and always puts the originals back.

    On entry it records every GPU's power limit (and writes them to
    ``original_settings.json`` in ``record_dir`` for manual recovery). On exit - normal,
    exception, SIGINT or SIGTERM - it restores the limits and unlocks any clock it locked.
    Signal handling follows :class:`power.governor.Governor`: handlers are installed from the
    main thread only, never touch the GPUs, and raise (the previous handler's exception, e.g.
    ``KeyboardInterrupt``, or ``SystemExit(128 + signum)``) so the ``with`` block unwinds.

    Args:
        gpus: The GPUs to control.
        mode: ``"power_limit"`` or ``"clocks"``.
        record_dir: Where to write ``original_settings.json`` (None: nowhere).
        handle_signals: Install SIGINT/SIGTERM handlers while entered.
    """

    def __init__(self, gpus: Sequence[GPU], mode: str, *, record_dir: str | os.PathLike[str]
                 | None = None, handle_signals: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not gpus:
            raise ValueError("SettingsGuard needs at least one GPU")
        self.gpus = list(gpus)
        self.mode = mode
        self.record_dir = Path(record_dir) if record_dir is not None else None
        self.original_limits_mw: list[int] = []
        self._clocks_touched = False
        self._entered = False
        self._restored = False
        self._signals = RaisingSignalHandlers(self._note_signal, enabled=handle_signals)
        self.restore_errors: list[str] = []

    def __enter__(self) -> SettingsGuard:
        self.original_limits_mw = [g.get_power_limit_mw() for g in self.gpus]
        self._entered, self._restored = True, False
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.record_dir / "original_settings.json",
                              {"uuids": [g.get_uuid() for g in self.gpus],
                               "power_limits_mw": self.original_limits_mw}, indent=1)
        self._signals.install()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.restore()
        finally:
            self._signals.remove()

    def apply(self, setting: float) -> None:
        """Apply ``setting`` (W or MHz) to every GPU.

        Raises:
            OutOfRangeError: The setting is outside a GPU's range.
            RuntimeError: Called outside the ``with`` block.
        """
        if not self._entered or self._restored:
            raise RuntimeError("SettingsGuard.apply outside its with block")
        for g in self.gpus:
            if self.mode == "power_limit":
                g.set_power_limit_mw(round(setting * 1000))
            else:
                lo, _hi = g.get_clock_range_mhz()
                self._clocks_touched = True
                g.lock_gpu_clocks_mhz(lo, round(setting))

    def restore(self) -> None:
        """Put back every original limit and unlock clocks (idempotent)."""
        with signals_blocked():
            if not self._entered or self._restored:
                return
            self._restored = True
            self.restore_errors.extend(restore_gpu_settings(self.gpus, self.original_limits_mw,
                                                            self._clocks_touched))
            for e in self.restore_errors:
                logger.error("restore failed: %s", e)

    @staticmethod
    def _note_signal(signum: int) -> None:
        logger.warning("sweep: %s received, restoring GPU settings", signal.Signals(signum).name)


# --------------------------------------------------------------------------- workloads


class Workload(Protocol):
    """What the sweep runs at each setting."""

    kind: str
    """``"train"`` or ``"infer"``."""

    def step(self) -> tuple[int, float]:
        """Run one step; return (images processed per GPU, seconds the GPUs were busy)."""

    def quality(self) -> float | None:
        """Return the IS of the fixed image set at the present setting (None if not measured)."""


class ModelPacedWorkload:
    """Throughput from the simulator's model (simulated GPUs).

    Each step processes ``batch_size`` images per GPU in ``batch_size / (images_per_s_at_max x
    r)`` seconds, where ``r`` is the lowest :meth:`~power.simulated.SimulatedGPU.
    relative_throughput` among the GPUs now (they step together). ``inner``, if given, runs
    for real inside every step (``run_inner``) and supplies :meth:`quality`.

    Args:
        gpus: Simulated GPUs (need ``relative_throughput()``).
        kind: ``"train"`` or ``"infer"``.
        batch_size: Images per GPU per step.
        images_per_s_at_max: One GPU's throughput at its maximum clock.
        inner: A real workload (e.g. the job's model on the CPU), or None.
        run_inner: Run ``inner.step()`` inside every step (else only for :meth:`quality`).
    """

    simulated = True
    """Throughput comes from the model (the sweep may let warm-up time pass without steps)."""

    def __init__(self, gpus: Sequence[Any], *, kind: str, batch_size: int,
                 images_per_s_at_max: float, inner: Workload | None = None,
                 run_inner: bool = False) -> None:
        if kind not in WORKLOADS:
            raise ValueError(f"kind must be train or infer, got {kind!r}")
        if batch_size < 1 or not images_per_s_at_max > 0:
            raise ValueError("need batch_size >= 1 and images_per_s_at_max > 0")
        if not all(hasattr(g, "relative_throughput") for g in gpus):
            raise ValueError("ModelPacedWorkload needs simulated GPUs")
        self.gpus = list(gpus)
        self.kind = kind
        self.batch_size = batch_size
        self.images_per_s_at_max = float(images_per_s_at_max)
        self.inner = inner
        self.run_inner = run_inner and inner is not None

    def step(self) -> tuple[int, float]:
        """Run the inner step (if any) and return the model's busy time for one batch."""
        if self.run_inner:
            self.inner.step()  # type: ignore[union-attr]
        r = min(g.relative_throughput() for g in self.gpus)
        return self.batch_size, self.batch_size / (self.images_per_s_at_max * r)

    def quality(self) -> float | None:
        """The inner workload's quality, if any."""
        return self.inner.quality() if self.inner is not None else None


# --------------------------------------------------------------------------- measuring


def pareto_flags(points: Sequence[dict[str, Any]]) -> list[bool]:
    """True for the points on the front.

    On the front: no other point has at least their images/s for at most their node energy per
    image (``avg_node_w / images_per_s``), one of both strictly.

    Counted on GPU power alone, every point of a rising curve is on the front (a higher cap
    always buys images/s for watts) and the flag says nothing. The node's fixed power (CPU,
    fans, idle draw) is paid at every setting, so a cap below the node's most efficient one is
    beaten on both: more images/s and fewer joules per image. Points without node power fall
    back to GPU power. Points with ``warmed_up`` false neither join nor shape the front, unless
    no point is warmed up (then every point counts).
    """
    warm = [p for p in points if p.get("warmed_up", True) is not False]
    pool = warm or list(points)

    def j_per_image(p: dict[str, Any]) -> float:
        watts = p.get("avg_node_w") or p["avg_gpu_w"]
        return watts / p["images_per_s"] if p["images_per_s"] > 0 else math.inf

    out = []
    for p in points:
        if not any(p is q for q in pool):
            out.append(False)
            continue
        dominated = any(
            q is not p and q["images_per_s"] >= p["images_per_s"]
            and j_per_image(q) <= j_per_image(p)
            and (q["images_per_s"] > p["images_per_s"] or j_per_image(q) < j_per_image(p))
            for q in pool)
        out.append(not dominated)
    return out


def _run_step(workload: Workload, clock: Clock) -> tuple[int, float]:
    t0 = clock.now()
    images, busy_s = workload.step()
    if busy_s < 0 or not math.isfinite(busy_s):
        raise ValueError(f"workload step reported busy time {busy_s}")
    remaining = busy_s - (clock.now() - t0)
    if remaining > 0:
        clock.sleep(remaining)  # simulated GPUs: let the model's step time pass
    return images, busy_s


def sensor_window_s(gpus: Sequence[GPU]) -> float | None:
    """The longest power-averaging window among the GPUs' sensors (None: none known). Units: s."""
    windows = []
    for g in gpus:
        try:
            w = g.get_power_sensor().window_s
        except PowerError as exc:  # the window stays unknown
            logger.debug("power sensor of %s unknown: %s", g, exc)
            continue
        if w is not None:
            windows.append(float(w))
    return max(windows) if windows else None


def warmup_problem(warmup_steps: int, warmup_s: float, warmed_s: float,
                   window_s: float | None) -> str:
    """Why a point's warm-up does not count (``""`` when it does).

    Args:
        warmup_steps: Warm-up steps asked for.
        warmup_s: Warm-up seconds asked for.
        warmed_s: How long the warm-up lasted (clock time from applying the setting to the
            first measured step).
        window_s: The GPUs' power sensor window (:func:`sensor_window_s`).
    """
    if warmup_steps <= 0 and warmup_s <= 0:
        return "no warm-up (warmup_steps=0, warmup_s=0)"
    if window_s and warmed_s < window_s:
        return (f"warm-up {warmed_s:.2g} s shorter than the GPUs' {window_s:g}-s averaged power "
                "sensor")
    return ""


#: Readings are settled when, for every GPU, the mean of the last span and of the span before it
#: differ by at most this many W ...
SETTLE_W = 10.0
#: ... or this fraction of the latest mean, whichever is larger.
SETTLE_FRACTION = 0.03
#: Shortest span compared (the sensor's window when longer). Units: s.
SETTLE_SPAN_S = 0.5
#: How long a warm-up may go on past what was asked, waiting for the readings to settle. Units: s.
SETTLE_MAX_S = 10.0
#: Between two readings of a simulated workload's warm-up (it has no steps to wait on). Units: s.
SETTLE_POLL_S = 0.1


def readings_settled(readings: Sequence[tuple[float, Sequence[float]]], now: float,
                     span_s: float) -> str:
    """Whether the GPUs' power readings have settled after a change (``""``), else why not.

    Settled: for every GPU, the mean reading of the last ``span_s`` and the mean of the
    ``span_s`` before it (two readings at least in each) differ by at most :data:`SETTLE_W`
    or :data:`SETTLE_FRACTION` of the latest mean. A warm-up as long as the sensor's window
    can still hold a transient (the cap just lowered, the clocks still coming down); its
    length alone does not say.

    Args:
        readings: ``(time, [W per GPU])`` in time order, taken since the setting was applied.
        now: The present time on the same clock.
        span_s: The span compared.
    """
    last = [r for t, r in readings if now - span_s < t <= now]
    before = [r for t, r in readings if now - 2 * span_s < t <= now - span_s]
    if len(last) < 2 or len(before) < 2:
        return f"fewer than two power readings in each of the last two {span_s:g}-s spans"
    for gpu in range(len(last[0])):
        recent = sum(r[gpu] for r in last) / len(last)
        earlier = sum(r[gpu] for r in before) / len(before)
        if abs(recent - earlier) > max(SETTLE_W, SETTLE_FRACTION * recent):
            return (f"GPU {gpu}'s power readings still moving ({earlier:.0f} W then "
                    f"{recent:.0f} W over the last two {span_s:g}-s spans)")
    return ""


def _label(setting: float, unit: str) -> str:
    return f"{setting:g}{unit}".replace(".", "p")


def measure_point(gpus: Sequence[GPU], workload: Workload, guard: SettingsGuard,
                  setting: float, *, clock: Clock, warmup_steps: int, steps: int,
                  warmup_s: float = 0.0, sample_dir: str | os.PathLike[str],
                  node: NodePower | None = None, sample_hz: float = 10.0) -> dict[str, Any]:
    """Apply one setting, warm up, measure; return the point (``pareto`` not yet set).

    Warm-up lasts ``warmup_steps`` steps and at least ``warmup_s`` seconds of ``clock`` (with a
    ``simulated`` workload the rest of that time just passes, as the GPUs' load is modelled),
    and then goes on, for at most :data:`SETTLE_MAX_S` more, until the GPUs' power readings
    have settled (:func:`readings_settled`). The point has ``warmed_up`` false, and
    ``warmup_reason`` why, when there was no warm-up, it was shorter than the GPUs' power
    sensor window (:func:`warmup_problem`), or the readings had not settled.

    With a :class:`~power.clock.SimClock` power is sampled after every step; otherwise a
    background sampler runs at ``sample_hz``. Average power comes from the GPUs' energy
    counters (or the sampler's integral) over the measured steps.
    """
    unit = MODES[guard.mode]
    guard.apply(setting)
    start = clock.now()
    done = 0
    window = sensor_window_s(gpus)
    span = max(window or 0.0, SETTLE_SPAN_S)
    readings: list[tuple[float, list[float]]] = []
    unsettled = ""
    while warmup_steps > 0 or warmup_s > 0:
        asked = done >= warmup_steps and clock.now() - start >= warmup_s - 1e-9
        if asked:
            unsettled = readings_settled(readings, clock.now(), span)
            if not unsettled or clock.now() - start >= warmup_s + SETTLE_MAX_S:
                break
        if done >= warmup_steps and getattr(workload, "simulated", False):
            # Simulated GPUs settle with time whether or not steps run: skip slow real steps.
            clock.sleep(SETTLE_POLL_S if asked else max(1e-6, min(
                SETTLE_POLL_S, warmup_s - (clock.now() - start))))
        else:
            _run_step(workload, clock)
            done += 1
        readings.append((clock.now(), [g.get_power_usage_mw() / 1000.0 for g in gpus]))
    reason = warmup_problem(warmup_steps, warmup_s, clock.now() - start, window)
    if not reason and unsettled:
        reason = f"not settled after a {clock.now() - start:.2g}-s warm-up: {unsettled}"
    sampler = PowerSampler(gpus, sample_dir, node=node, rate_hz=sample_hz, clock=clock)
    in_loop = isinstance(clock, SimClock)
    images, busy_s = 0, 0.0
    t0 = clock.now()
    try:
        if in_loop:
            sampler.sample_once()
        else:
            sampler.start()
        for _ in range(steps):
            n, b = _run_step(workload, clock)
            images += n
            busy_s += b
            if in_loop:
                sampler.sample_once()
    finally:
        sampler.stop()
    duration_s = clock.now() - t0
    energy = sampler.energy_j()
    n_gpus = len(gpus)
    avg_gpu_w = sum(energy["gpus"]) / n_gpus / duration_s if duration_s > 0 else 0.0
    avg_node_w = ((sum(energy["gpus"]) + energy["node"]) / duration_s if duration_s > 0
                  else 0.0)
    peak_gpu_w = _peak_from_csv(Path(sample_dir) / "gpu_power.csv")
    ips = images / busy_s if busy_s > 0 else 0.0
    quality = workload.quality() if workload.kind == "infer" else None
    return {
        "setting": float(setting), "unit": unit, "images_per_s": ips, "avg_gpu_w": avg_gpu_w,
        "peak_gpu_w": peak_gpu_w, "avg_node_w": avg_node_w,
        "j_per_image": avg_gpu_w / ips if ips > 0 else 0.0,
        "images_per_s_per_w": ips / avg_gpu_w if avg_gpu_w > 0 else 0.0,
        "is": None if quality is None else float(quality), "pareto": False,
        "warmed_up": not reason, "warmup_reason": reason,
    }


def _peak_from_csv(path: Path) -> float:
    peak = 0.0
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            peak = max(peak, float(row["power_w"]))
    return peak


# --------------------------------------------------------------------------- results files


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepSpec:
    """What a sweep measures; resuming requires the same spec (settings may differ)."""

    job: str
    """Job name."""
    workload: str
    """``"train"`` or ``"infer"``."""
    mode: str
    """``"power_limit"`` or ``"clocks"``."""
    gpu: str
    """GPU product name."""
    gpus: int
    """GPUs on the node (all get every setting)."""
    simulated: bool
    """Simulated GPUs (throughput and power from the model)."""
    batch_size: int
    """Images per GPU per step."""
    warmup_steps: int
    """Unmeasured steps after each change of setting."""
    steps: int
    """Measured steps per setting."""
    warmup_s: float = 0.0
    """Warm up for at least this long too (power limits take effect within ~100 ms)."""
    extra: tuple[tuple[str, str], ...] = ()
    """Anything else that changes the numbers (e.g. simulated images/s, checkpoint)."""

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be train or infer, got {self.workload!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if (self.batch_size < 1 or self.steps < 1 or self.warmup_steps < 0 or self.gpus < 1
                or not self.warmup_s >= 0):
            raise ValueError("need batch_size >= 1, steps >= 1, warmup_steps >= 0, "
                             "warmup_s >= 0, gpus >= 1")

    def fingerprint(self) -> dict[str, Any]:
        """JSON-able form compared on resume."""
        d = asdict(self)
        d["extra"] = {k: v for k, v in self.extra}
        return d


def sweep_document(spec: SweepSpec, points: Sequence[dict[str, Any]],
                   plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the ``sweep.json`` object (points sorted by setting, Pareto flags set)."""
    pts = sorted((dict(p) for p in points), key=lambda p: p["setting"])
    for p in pts:
        if "warmed_up" not in p:  # measured before the warm-up was checked: judge the spec
            reason = warmup_problem(spec.warmup_steps, spec.warmup_s, spec.warmup_s, None)
            p["warmed_up"], p["warmup_reason"] = not reason, reason
    for p, flag in zip(pts, pareto_flags(pts), strict=True):
        p["pareto"] = flag
    return {"job": spec.job, "workload": spec.workload, "mode": spec.mode, "gpu": spec.gpu,
            "simulated": spec.simulated, "points": [{k: p[k] for k in POINT_KEYS} for p in pts],
            "plan": plan}


def write_sweep(out_dir: str | os.PathLike[str], doc: dict[str, Any],
                meta: dict[str, Any] | None = None) -> None:
    """Write ``sweep.json``, ``sweep.csv`` (and ``sweep_meta.json``) atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if meta is not None:
        write_json_atomic(out / "sweep_meta.json", meta, indent=1)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(POINT_KEYS)
    for p in doc["points"]:
        w.writerow(["" if p[k] is None else (f"{p[k]:.6g}" if isinstance(p[k], float) else p[k])
                    for k in POINT_KEYS])
    write_text_atomic(out / "sweep.csv", buf.getvalue())
    write_json_atomic(out / "sweep.json", doc, indent=1)
    if doc.get("plan") is not None:
        write_json_atomic(out / "plan.json", doc["plan"], indent=1)


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``sweep.json`` from a file or a sweep folder.

    Raises:
        ValueError: Missing, unreadable, or not a sweep (one line naming the file).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "sweep.json"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no sweep.json here (expected a folder written by the power "
                         "sweep)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: unreadable sweep file ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("points"), list):
        raise ValueError(f"{p}: not a sweep.json (no points list)")
    return doc


def run_sweep(gpus: Sequence[GPU], workload: Workload, spec: SweepSpec,
              settings: Sequence[float], out_dir: str | os.PathLike[str], *,
              clock: Clock | None = None, node: NodePower | None = None,
              sample_hz: float = 10.0, meta: dict[str, Any] | None = None,
              on_point: Callable[[dict[str, Any], int, int], None] | None = None,
              handle_signals: bool = True) -> dict[str, Any]:
    """Measure every setting not yet in ``out_dir`` and return the ``sweep.json`` object.

    Args:
        gpus: The node's GPUs (every one gets each setting).
        workload: What runs (see :class:`Workload`).
        spec: What is measured; an existing ``out_dir`` must hold the same spec.
        settings: Power limits (W) or clocks (MHz), checked against the GPUs' range.
        out_dir: Results folder (created; reused to resume).
        clock: Time source (default wall time; a :class:`~power.clock.SimClock` with
            simulated GPUs runs a sweep in milliseconds).
        node: Node power source for ``avg_node_w`` (None: GPUs only).
        sample_hz: Background sampling rate on a real clock.
        meta: Extra facts stored in ``sweep_meta.json`` (e.g. idle power, ranges).
        on_point: Called as ``on_point(point, done, total)`` after each new point.
        handle_signals: Restore on SIGINT/SIGTERM (main thread only).

    Raises:
        ValueError: Settings out of range or a spec mismatch (:class:`SweepMismatchError`).
        KeyboardInterrupt, SystemExit: On SIGINT/SIGTERM, after restoring the GPUs.
    """
    clock = clock or MonotonicClock()
    check_settings(settings, gpus, spec.mode)
    out = Path(out_dir)
    points = resume_points(out, spec)
    done = {round(p["setting"], 6) for p in points}
    todo = [s for s in settings if round(s, 6) not in done]
    if points:
        logger.info("resuming %s: %d point(s) already measured, %d to go", out, len(points),
                    len(todo))
    meta_doc = {"spec": spec.fingerprint(), **(meta or {})}
    write_sweep(out, sweep_document(spec, points), meta_doc)
    total = len(points) + len(todo)
    # One meter thread for the whole sweep: each point's sampler takes its latest value.
    owns_meter = node.start(1.0 / sample_hz) if node is not None and todo else False
    try:
        _measure_all(gpus, workload, spec, todo, out, points, total, clock=clock, node=node,
                     sample_hz=sample_hz, on_point=on_point, handle_signals=handle_signals)
    finally:
        if owns_meter:
            node.close()  # type: ignore[union-attr]
    return sweep_document(spec, points)


def _measure_all(gpus: Sequence[GPU], workload: Workload, spec: SweepSpec,
                 todo: Sequence[float], out: Path, points: list[dict[str, Any]], total: int, *,
                 clock: Clock, node: NodePower | None, sample_hz: float,
                 on_point: Callable[[dict[str, Any], int, int], None] | None,
                 handle_signals: bool) -> None:
    """Measure every setting of ``todo`` into ``points``, writing the sweep after each."""
    warned = False
    with SettingsGuard(gpus, spec.mode, record_dir=out, handle_signals=handle_signals) as guard:
        for s in todo:
            point = measure_point(gpus, workload, guard, s, clock=clock,
                                  warmup_steps=spec.warmup_steps, steps=spec.steps,
                                  warmup_s=spec.warmup_s,
                                  sample_dir=out / "samples" / _label(s, MODES[spec.mode]),
                                  node=node, sample_hz=sample_hz)
            points.append(point)
            if not point["warmed_up"] and not warned:
                warned = True
                logger.warning("sweep point %g %s not warmed up: %s; such points are left out "
                               "of the Pareto front and the plan (use --warmup-s at least the "
                               "sensor window)", s, point["unit"], point["warmup_reason"])
            write_sweep(out, sweep_document(spec, points))
            logger.info("sweep point %g %s: %.1f images/s per GPU, %.1f W avg per GPU",
                        s, point["unit"], point["images_per_s"], point["avg_gpu_w"])
            if on_point is not None:
                on_point(point, len(points), total)


def resume_points(out_dir: Path, spec: SweepSpec) -> list[dict[str, Any]]:
    """Points already measured in ``out_dir`` for ``spec`` ([] for a new folder).

    Raises:
        SweepMismatchError: The folder holds a sweep of a different spec (names the field).
    """
    if not (out_dir / "sweep.json").exists():
        return []
    try:
        meta = json.loads((out_dir / "sweep_meta.json").read_text(encoding="utf-8"))
        old = meta["spec"]
    except (OSError, ValueError, KeyError):
        raise SweepMismatchError(f"{out_dir}: has sweep.json but no readable sweep_meta.json; "
                                 "use a new --out") from None
    new = spec.fingerprint()
    for key in new:
        if old.get(key) != new[key]:
            raise SweepMismatchError(
                f"{out_dir}: holds a sweep with {key}={old.get(key)!r}, this one has "
                f"{key}={new[key]!r}; use a new --out (or the same settings to resume)")
    return list(load_sweep(out_dir)["points"])

