"""The one GPU-control interface every backend implements.

Units are part of every name: power in milliwatts (``_mw``), energy in millijoules (``_mj``),
clocks in megahertz (``_mhz``), utilisation in percent. These are NVML's native units, so the NVML
backend passes values through unchanged and conversions to watts/joules happen in one place
(the sampler and governor).

Setters validate their arguments against the device's own range before touching hardware and
raise :class:`~power.errors.OutOfRangeError` otherwise; backends implement the ``_set_*`` hooks.
"""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from typing import Any

from power.errors import OutOfRangeError

SENSOR_KINDS = ("instant", "average", "unknown")
"""What a power reading means: the power now, an average over a window, or not known."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerSensor:
    """What :meth:`GPU.get_power_usage_mw` returns on one GPU.

    NVIDIA documents ``nvmlDeviceGetPowerUsage`` as instantaneous up to Volta and on A100/A30
    (GA100) but as a 1-second average on other Ampere and all newer GPUs (A10, L40S, H100,
    H200...). A 10 Hz governor fed a 1-s average reacts to power up to a second old, and the
    peak it logs is lower than the real one; the report shows this record next to the figures.
    """

    kind: str
    """``"instant"``, ``"average"`` or ``"unknown"``."""
    window_s: float | None
    """Averaging window of an ``"average"`` reading (0 for instant, None if unknown)."""
    source: str
    """Where the reading comes from, e.g. ``"NVML_FI_DEV_POWER_INSTANT"``."""
    note: str = ""
    """Why this source was chosen (e.g. the instant field is not supported by the driver)."""

    def __post_init__(self) -> None:
        if self.kind not in SENSOR_KINDS:
            raise ValueError(f"PowerSensor.kind must be one of {SENSOR_KINDS}, got {self.kind!r}")
        if self.window_s is not None and self.window_s < 0:
            raise ValueError(f"PowerSensor.window_s must be >= 0, got {self.window_s}")

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (the ``sensors`` entries of ``power_sensors.json``)."""
        return asdict(self)

    def label(self) -> str:
        """Short human-readable form, e.g. ``"average (1 s) via nvmlDeviceGetPowerUsage"``."""
        if self.kind == "average":
            win = "?" if self.window_s is None else f"{self.window_s:g}"
            return f"average ({win} s) via {self.source}"
        return f"{self.kind} via {self.source}"


class GPU(abc.ABC):
    """Abstract control and measurement interface of one GPU.

    Args:
        index: Index of the GPU as this process sees it (position in ``CUDA_VISIBLE_DEVICES``).
    """

    def __init__(self, index: int) -> None:
        if index < 0:
            raise ValueError(f"GPU index must be >= 0, got {index}")
        self.index = index

    def __repr__(self) -> str:
        return f"{type(self).__name__}(index={self.index})"

    # --- identity -------------------------------------------------------------------------
    @abc.abstractmethod
    def get_name(self) -> str:
        """Return the product name, e.g. ``"NVIDIA H100 80GB HBM3"``."""

    @abc.abstractmethod
    def get_uuid(self) -> str:
        """Return the device UUID (``"GPU-..."``)."""

    # --- power and energy -------------------------------------------------------------------
    @abc.abstractmethod
    def get_power_usage_mw(self) -> int:
        """Return the current power draw. Units: mW."""

    def get_power_sensor(self) -> PowerSensor:
        """Describe what :meth:`get_power_usage_mw` returns (instant or averaged).

        Backends override this; the default says honestly that nothing is known.
        """
        return PowerSensor(kind="unknown", window_s=None, source=type(self).__name__)

    @abc.abstractmethod
    def supports_energy_counter(self) -> bool:
        """Return True if :meth:`get_total_energy_consumption_mj` works on this device."""

    @abc.abstractmethod
    def get_total_energy_consumption_mj(self) -> int:
        """Return the energy used since the driver loaded. Units: mJ.

        Raises:
            NotSupportedError: The device has no energy counter (pre-Volta).
        """

    # --- power limit ------------------------------------------------------------------------
    @abc.abstractmethod
    def get_power_limit_mw(self) -> int:
        """Return the current power management limit. Units: mW."""

    @abc.abstractmethod
    def get_power_limit_constraints_mw(self) -> tuple[int, int]:
        """Return the ``(min, max)`` settable power limit. Units: mW."""

    @abc.abstractmethod
    def get_default_power_limit_mw(self) -> int:
        """Return the power limit the device boots with. Units: mW."""

    def set_power_limit_mw(self, power_limit_mw: int) -> None:
        """Set the power management limit after checking it against the device's range.

        Args:
            power_limit_mw: New limit. Units: mW.

        Raises:
            OutOfRangeError: ``power_limit_mw`` is outside :meth:`get_power_limit_constraints_mw`.
            NoPermissionError: The process may not change the limit.
        """
        lo, hi = self.get_power_limit_constraints_mw()
        value = int(round(power_limit_mw))
        if not lo <= value <= hi:
            raise OutOfRangeError(
                f"GPU {self.index}: power limit {value} mW outside the device range [{lo}, {hi}] mW"
            )
        self._set_power_limit_mw(value)

    def reset_power_limit(self) -> None:
        """Set the power limit back to :meth:`get_default_power_limit_mw`."""
        self.set_power_limit_mw(self.get_default_power_limit_mw())

    @abc.abstractmethod
    def _set_power_limit_mw(self, power_limit_mw: int) -> None:
        """Backend hook: apply an already validated limit. Units: mW."""

    # --- clocks -----------------------------------------------------------------------------
    @abc.abstractmethod
    def get_clock_range_mhz(self) -> tuple[int, int]:
        """Return the ``(min, max)`` supported graphics clock. Units: MHz."""

    @abc.abstractmethod
    def get_default_clock_mhz(self) -> int:
        """Return the default (applications) graphics clock. Units: MHz."""

    @abc.abstractmethod
    def get_gpu_clock_mhz(self) -> int:
        """Return the current graphics (SM) clock. Units: MHz."""

    @abc.abstractmethod
    def get_memory_clock_mhz(self) -> int:
        """Return the current memory clock. Units: MHz."""

    def lock_gpu_clocks_mhz(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        """Lock the graphics clock into ``[min_clock_mhz, max_clock_mhz]``.

        The power limit still applies: the driver lowers clocks below a lock to respect it.

        Raises:
            OutOfRangeError: The range is empty or outside :meth:`get_clock_range_mhz`.
        """
        lo, hi = self.get_clock_range_mhz()
        low, high = int(round(min_clock_mhz)), int(round(max_clock_mhz))
        if not lo <= low <= high <= hi:
            raise OutOfRangeError(
                f"GPU {self.index}: clock lock [{low}, {high}] MHz not within the device range "
                f"[{lo}, {hi}] MHz (or min > max)"
            )
        self._lock_gpu_clocks_mhz(low, high)

    @abc.abstractmethod
    def _lock_gpu_clocks_mhz(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        """Backend hook: apply an already validated clock lock. Units: MHz."""

    @abc.abstractmethod
    def unlock_gpu_clocks(self) -> None:
        """Remove any graphics clock lock (back to the driver's default boost behaviour)."""

    # --- utilisation ------------------------------------------------------------------------
    @abc.abstractmethod
    def get_utilization_percent(self) -> int:
        """Return the percentage of recent time a kernel was running (0-100)."""


def restore_gpu_settings(gpus: list[GPU] | tuple[GPU, ...], original_limits_mw: list[int],
                         unlock_clocks: bool) -> list[str]:
    """Put every GPU back to its original power limit and, if asked, unlock its clocks.

    The one restore the governor and the sweep share. Every GPU is tried even if one fails.

    Returns:
        One message per failure (empty when all went back).
    """
    from power.errors import PowerError

    errors: list[str] = []
    for i, g in enumerate(gpus):
        try:
            if g.get_power_limit_mw() != original_limits_mw[i]:
                g.set_power_limit_mw(original_limits_mw[i])
        except PowerError as exc:
            errors.append(f"GPU {i} limit: {exc}")
        if unlock_clocks:
            try:
                g.unlock_gpu_clocks()
            except PowerError as exc:
                errors.append(f"GPU {i} clocks: {exc}")
    return errors
