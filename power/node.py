"""Power of a node besides its GPUs: CPU package and DRAM, fixed overhead, external meters.

Sources, best first:

* An **external meter** command (``ipmitool dcmi power reading``, a PDU query...) whose output is
  parsed with a regular expression (:func:`parse_meter_output`). A wall/PSU meter sees the whole
  node, GPUs included, so by default the GPU power is subtracted to get the "other" power. The
  command runs in its own thread (:class:`ExternalMeter`): a reading takes its latest value
  without waiting, and a value too old to count (a slow or hung command) is not used; the
  node then falls back to RAPL or the estimate until the meter answers again.
* **RAPL** energy counters in ``/sys/class/powercap/intel-rapl:*`` (package and DRAM zones;
  core/uncore are inside the package and not added). Counters wrap at ``max_energy_range_uj``.
  Reading them usually needs root on current kernels.
* Otherwise an explicit **estimate** from ``psutil.cpu_percent`` and a CPU TDP figure; every
  reading that relies on it has ``estimated=True``.

A configurable fixed ``overhead_w`` (fans, NICs, disks) is added to RAPL and estimates. On a
machine without RAPL or a meter (like a VM), :class:`NodePower` degrades to the estimate
without errors.
"""
from __future__ import annotations

import logging
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from power.clock import Clock, MonotonicClock
from power.errors import NotSupportedError, PowerError

logger = logging.getLogger(__name__)

IPMI_DCMI_PATTERN = r"Instantaneous power reading:\s*([0-9]+(?:\.[0-9]+)?)\s*Watts"
"""Matches ``ipmitool dcmi power reading`` output."""


@dataclass(frozen=True, slots=True)
class NodeReading:
    """One reading of a node's non-GPU power. Units: W."""

    time_s: float
    cpu_w: float | None
    """CPU packages (RAPL or estimate), None if not measured."""
    dram_w: float | None
    """DRAM (RAPL), None if not measured."""
    overhead_w: float
    """Configured fixed overhead."""
    meter_w: float | None
    """External meter reading (whole node), None without a meter."""
    other_w: float
    """Power counted against the budget besides this node's GPUs."""
    estimated: bool
    """True if any part of ``other_w`` is an estimate rather than a measurement."""
    source: str
    """``"meter"``, ``"rapl"`` or ``"estimate"``."""
    meter_age_s: float | None = None
    """Age of the meter's latest value at this reading (None: no meter, or no answer yet);
    with ``source`` other than ``"meter"`` that value was too old to use."""


@dataclass(frozen=True, slots=True)
class RaplZone:
    """A RAPL zone that is counted (package or DRAM)."""

    path: Path
    name: str
    kind: str
    max_energy_range_uj: int


class RaplReader:
    """Reads RAPL package and DRAM energy counters and turns them into power.

    Args:
        root: The powercap directory (tests point this at a fake tree).
        clock: Time source.
    """

    def __init__(self, root: str | Path = "/sys/class/powercap",
                 clock: Clock | None = None) -> None:
        self.root = Path(root)
        self._clock = clock or MonotonicClock()
        self.zones = self._discover()
        self._last: dict[Path, int] = {}
        self._energy_uj: dict[Path, int] = {z.path: 0 for z in self.zones}
        self._last_t: float | None = None

    def _discover(self) -> list[RaplZone]:
        zones = []
        for path in sorted(self.root.glob("intel-rapl:*")):
            try:
                name = (path / "name").read_text().strip()
                (path / "energy_uj").read_text()
                max_uj = int((path / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                continue  # unreadable (permissions) or not a zone
            depth = path.name.count(":")
            if depth == 1 and name.startswith("package"):
                zones.append(RaplZone(path, name, "package", max_uj))
            elif name == "dram":
                zones.append(RaplZone(path, name, "dram", max_uj))
        return zones

    def available(self) -> bool:
        """Return True if at least one package zone is readable."""
        return any(z.kind == "package" for z in self.zones)

    def read_energy_j(self) -> dict[str, float]:
        """Return the energy per kind (``package``, ``dram``) since the first read. Units: J."""
        for z in self.zones:
            raw = int((z.path / "energy_uj").read_text())
            prev = self._last.get(z.path)
            if prev is not None:
                delta = raw - prev
                if delta < 0:  # the counter wrapped around
                    delta += z.max_energy_range_uj
                self._energy_uj[z.path] += delta
            self._last[z.path] = raw
        out: dict[str, float] = {}
        for z in self.zones:
            out[z.kind] = out.get(z.kind, 0.0) + self._energy_uj[z.path] / 1e6
        return out

    def read_power_w(self) -> dict[str, float] | None:
        """Return average power per kind since the previous call (None on the first call)."""
        if not self.zones:
            raise NotSupportedError(f"no readable RAPL zones under {self.root}")
        now = self._clock.now()
        before = {z.kind: 0.0 for z in self.zones}
        for z in self.zones:
            before[z.kind] += self._energy_uj[z.path] / 1e6
        first = self._last_t is None
        after = self.read_energy_j()
        dt = 0.0 if first else now - self._last_t  # type: ignore[operator]
        self._last_t = now
        if first or dt <= 0:
            return None
        return {k: (after[k] - before[k]) / dt for k in after}


def parse_meter_output(text: str, pattern: str = IPMI_DCMI_PATTERN) -> float:
    """Return the power in W found by ``pattern`` (first group) in a meter's output.

    A named group ``unit`` with ``kW`` or ``mW`` scales the value.

    Raises:
        PowerError: The pattern does not match.
    """
    m = re.search(pattern, text, flags=re.IGNORECASE)
    if m is None:
        first = text.strip().splitlines()[0] if text.strip() else "<empty>"
        raise PowerError(f"meter output does not match {pattern!r}: {first[:120]!r}")
    value = float(m.group(1))
    unit = (m.groupdict().get("unit") or "W").lower()
    return value * {"kw": 1000.0, "mw": 0.001}.get(unit, 1.0)


@dataclass(frozen=True, slots=True)
class MeterValue:
    """The latest answer of an :class:`ExternalMeter`'s command."""

    value_w: float
    """Whole-node power the command printed. Units: W."""
    taken_s: float
    """Clock time when the command answered (its output is at most this old)."""
    duration_s: float
    """How long that command ran. Units: s."""


class ExternalMeter:
    """Runs a command that prints the node's power, in its own background thread.

    The command runs one at a time (never overlapping, each bounded by ``timeout_s``), at most
    every ``min_interval_s`` (start to start); the sampler takes :meth:`latest` without ever
    waiting for the command, so a meter slower than the sampling period never slows the GPU
    samples. Each value carries when it was taken: :meth:`fresh` refuses one older than
    :meth:`max_age_s` (``max(stale_floor_s, 2 x the command's measured duration, 2 x
    min_interval_s)``), which is then not used as a reading.

    Args:
        command: Command line (string, split with ``shlex``, or token list).
        pattern: Regular expression whose first group is the power (see
            :func:`parse_meter_output`).
        timeout_s: Kill the command after this long.
        min_interval_s: Start the command at most this often (meters are slow).
        stale_floor_s: A value is never stale younger than this.
        clock: Time source (ages and durations are measured with it).
        runner: Runs the command and returns its stdout (injectable for tests).
    """

    def __init__(self, command: str | Sequence[str], *, pattern: str = IPMI_DCMI_PATTERN,
                 timeout_s: float = 5.0, min_interval_s: float = 1.0,
                 stale_floor_s: float = 2.0, clock: Clock | None = None,
                 runner: Callable[[list[str], float], str] | None = None) -> None:
        self.command = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.command:
            raise ValueError("ExternalMeter: empty command")
        if not (timeout_s > 0 and min_interval_s >= 0 and stale_floor_s > 0):
            raise ValueError("ExternalMeter: need timeout_s > 0, min_interval_s >= 0 and "
                             "stale_floor_s > 0")
        re.compile(pattern)
        self.pattern = pattern
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self.stale_floor_s = stale_floor_s
        self._clock = clock or MonotonicClock()
        self._runner = runner or _run_command
        self._lock = threading.Lock()
        self._latest: MeterValue | None = None
        self._last_duration_s: float | None = None
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._period_s: float | None = None
        self._warned_slow = False
        self._warned_stale = False
        self._closed = False

    @property
    def name(self) -> str:
        """The command line, as the user wrote it (for messages)."""
        return shlex.join(self.command)

    def read_w(self) -> float:
        """Run the command once now (blocking) and return the node power in W.

        Raises:
            PowerError: The command failed or its output did not match.
        """
        return parse_meter_output(self._runner(self.command, self.timeout_s), self.pattern)

    # --- background thread -------------------------------------------------------------
    def start(self, sample_period_s: float | None = None) -> bool:
        """Start the background thread (idempotent).

        Args:
            sample_period_s: The period the meter's values are taken at, for the warning
                when the command is slower than that.

        Returns:
            True if this call started the thread.
        """
        with self._lock:
            if sample_period_s is not None:
                self._period_s = sample_period_s
            if self._thread is not None:
                return False
            self._closed = False
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="power-meter", daemon=True)
            self._thread.start()
            return True

    def close(self) -> None:
        """Stop the background thread (a running command ends within ``timeout_s``)."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
            self._closed = True
        if thread is not None:
            thread.join(timeout=self.timeout_s + 1.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = self._clock.now()
            try:
                value: float | None = self.read_w()
                error = None
            except PowerError as exc:
                value, error = None, exc
            t1 = self._clock.now()
            duration = max(t1 - t0, 0.0)
            with self._lock:
                self._last_duration_s = duration
                if value is not None:
                    self._latest = MeterValue(value, t1, duration)
                else:
                    self._failures += 1
                failures = self._failures
                period = self._period_s
            if error is not None and (failures in (1, 10, 100) or failures % 1000 == 0):
                logger.warning("external meter failed (%d times), node power falls back: %s",
                               failures, error)
            if period is not None and duration > period and not self._warned_slow:
                self._warned_slow = True
                logger.warning("meter command (%s) takes %.2f s, longer than the %.2f s sampling "
                               "period: node power is its latest value, and a value older "
                               "than %.1f s is not used (estimated instead)", self.name,
                               duration, period, self.max_age_s())
            self._stop.wait(max(self.min_interval_s - duration, 0.0))

    def max_age_s(self) -> float:
        """The oldest a value may be and still count as a reading. Units: s."""
        with self._lock:
            duration = self._last_duration_s or 0.0
        return max(self.stale_floor_s, 2.0 * duration, 2.0 * self.min_interval_s)

    def latest(self) -> tuple[MeterValue, float] | None:
        """The latest value and its age now in s (None before the command first answered).

        Starts the thread on first use (not again after :meth:`close`); never waits for the
        command.
        """
        if self._thread is None and not self._closed:
            self.start()
        with self._lock:
            value = self._latest
        if value is None:
            return None
        return value, max(self._clock.now() - value.taken_s, 0.0)

    def fresh(self) -> tuple[MeterValue, float] | None:
        """:meth:`latest` if it is not older than :meth:`max_age_s`, else None (warns once)."""
        got = self.latest()
        if got is None:
            return None
        age = got[1]
        limit = self.max_age_s()
        if age > limit:
            if not self._warned_stale:
                self._warned_stale = True
                logger.warning("meter command (%s): latest value is %.1f s old (over %.1f s); "
                               "node power is estimated until it answers again", self.name,
                               age, limit)
            return None
        return got


def _run_command(command: list[str], timeout_s: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PowerError(f"meter command {command[0]!r} failed: {exc}") from exc
    if done.returncode != 0:
        raise PowerError(f"meter command {' '.join(command)!r} exited {done.returncode}: "
                         f"{done.stderr.strip()[:200]}")
    return done.stdout


class NodePower:
    """The node's non-GPU power from the best available source.

    Args:
        cpu_tdp_w: Total TDP of the node's CPU packages, for the estimate.
        idle_fraction: Share of TDP an idle CPU draws, for the estimate.
        overhead_w: Fixed extra power of the node (fans, NICs, disks).
        meter: External meter (preferred when given).
        meter_includes_gpus: The meter sees the whole node, so GPU power is subtracted.
        rapl: RAPL reader; ``"auto"`` probes ``/sys/class/powercap``, None disables RAPL.
        cpu_percent: Returns CPU utilisation in percent (default ``psutil.cpu_percent``).
        clock: Time source.
    """

    def __init__(self, *, cpu_tdp_w: float = 200.0, idle_fraction: float = 0.3,
                 overhead_w: float = 0.0, meter: ExternalMeter | None = None,
                 meter_includes_gpus: bool = True, rapl: RaplReader | str | None = "auto",
                 cpu_percent: Callable[[], float] | None = None,
                 clock: Clock | None = None) -> None:
        if cpu_tdp_w < 0 or overhead_w < 0:
            raise ValueError("NodePower: cpu_tdp_w and overhead_w must be >= 0")
        if not 0 <= idle_fraction <= 1:
            raise ValueError(f"NodePower: idle_fraction must be in [0, 1], got {idle_fraction}")
        self._clock = clock or MonotonicClock()
        self.cpu_tdp_w = cpu_tdp_w
        self.idle_fraction = idle_fraction
        self.overhead_w = overhead_w
        self.meter = meter
        self.meter_includes_gpus = meter_includes_gpus
        if rapl == "auto":
            rapl = RaplReader(clock=self._clock)
        self.rapl = rapl if isinstance(rapl, RaplReader) and rapl.available() else None
        if rapl is not None and self.rapl is None:
            logger.info("RAPL not readable here; CPU power will be estimated")
        if cpu_percent is None:
            import psutil

            psutil.cpu_percent(interval=None)  # prime: the first call always returns 0.0

            def psutil_percent() -> float:
                return psutil.cpu_percent(interval=None)

            cpu_percent = psutil_percent
        self._cpu_percent = cpu_percent
        self._last_rapl: dict[str, float] | None = None
        if self.rapl is not None:
            self.rapl.read_power_w()  # establish the baseline

    def read(self, gpu_power_w: float = 0.0) -> NodeReading:
        """Return the node's non-GPU power now.

        Args:
            gpu_power_w: This node's GPU power, subtracted from a whole-node meter reading.
        """
        now = self._clock.now()
        age: float | None = None
        if self.meter is not None:
            latest = self.meter.latest()
            age = None if latest is None else latest[1]
            got = self.meter.fresh() if latest is not None else None
            if got is not None:
                meter_w, age = got[0].value_w, got[1]
                other = max(meter_w - gpu_power_w, 0.0) if self.meter_includes_gpus else meter_w
                return NodeReading(now, None, None, 0.0, meter_w, other, False, "meter", age)
        if self.rapl is not None:
            try:
                powers = self.rapl.read_power_w()
                if powers is not None:
                    self._last_rapl = powers
                if self._last_rapl is not None:
                    cpu = self._last_rapl.get("package", 0.0)
                    dram = self._last_rapl.get("dram")
                    return NodeReading(now, cpu, dram, self.overhead_w, None,
                                       cpu + (dram or 0.0) + self.overhead_w, False, "rapl",
                                       age)
            except (OSError, PowerError) as exc:
                logger.warning("RAPL read failed, estimating: %s", exc)
        util = min(max(float(self._cpu_percent()), 0.0), 100.0)
        cpu = self.cpu_tdp_w * (self.idle_fraction + (1 - self.idle_fraction) * util / 100.0)
        return NodeReading(now, cpu, None, self.overhead_w, None, cpu + self.overhead_w, True,
                           "estimate", age)

    def start(self, sample_period_s: float | None = None) -> bool:
        """Start the meter's background thread, if there is a meter (idempotent).

        Args:
            sample_period_s: The sampler's period (the meter warns once if it is slower).

        Returns:
            True if this call started it (that caller then calls :meth:`close`).
        """
        return self.meter.start(sample_period_s) if self.meter is not None else False

    def close(self) -> None:
        """Stop the meter's background thread (idempotent)."""
        if self.meter is not None:
            self.meter.close()

    def other_power_w(self, gpu_power_w: float = 0.0) -> float:
        """Return :attr:`NodeReading.other_w` (for :class:`power.governor.Governor`)."""
        return self.read(gpu_power_w).other_w
