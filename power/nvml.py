"""NVIDIA backend of :class:`power.gpu.GPU` through NVML.

This is the only module that imports ``pynvml`` (PyPI ``nvidia-ml-py``), and it does so lazily:
importing :mod:`power.nvml` makes no NVML call and does not even need the package installed.
Every NVML call goes through :func:`_nvml_errors`, which maps ``pynvml.NVMLError`` codes onto
:mod:`power.errors` (no permission, not supported, library missing, invalid argument).

Usage on a node (local rank 0 handles every GPU the node's job can see)::

    from power.nvml import open_nvml_gpus, shutdown_nvml
    gpus = open_nvml_gpus()          # respects CUDA_VISIBLE_DEVICES (indices or UUIDs)
    try:
        print([g.get_power_usage_mw() for g in gpus])
    finally:
        shutdown_nvml()

NVML reports power and limits in mW, energy in mJ and clocks in MHz, which are exactly the units
of the :class:`~power.gpu.GPU` interface, so values pass through unconverted.

Which power reading (:meth:`NvmlGPU.get_power_sensor`): NVIDIA documents
``nvmlDeviceGetPowerUsage`` as a 1-second average on Ampere (except GA100: A100, A30) and newer
GPUs, and as instantaneous before. Newer drivers expose the instantaneous value as the field
``NVML_FI_DEV_POWER_INSTANT`` of ``nvmlDeviceGetFieldValues``. With ``power_source="auto"``
each GPU is probed once: the instant field when the driver answers it, else
``nvmlDeviceGetPowerUsage``, classified as instant or 1-s average by architecture and name.
Energy always comes from ``nvmlDeviceGetTotalEnergyConsumption`` where it exists (Volta+),
which gives exact averages between any two samples.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from power.errors import (
    LibraryMissingError,
    NoPermissionError,
    NotSupportedError,
    OutOfRangeError,
    PowerError,
)
from power.gpu import GPU, PowerSensor

POWER_SOURCES = ("auto", "instant", "usage")
"""``auto``: instant field if supported, else ``nvmlDeviceGetPowerUsage``; ``instant``: the
instant field or an error; ``usage``: always ``nvmlDeviceGetPowerUsage``."""

INSTANT_FIELD = "NVML_FI_DEV_POWER_INSTANT"
USAGE_AVERAGE_WINDOW_S = 1.0
"""Averaging window of ``nvmlDeviceGetPowerUsage`` on Ampere (non-GA100) and newer GPUs."""
_GA100_NAMES = ("A100", "A30")

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _pynvml() -> ModuleType:
    """Import and return ``pynvml`` (looked up each time so tests can swap in a fake)."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise LibraryMissingError(
            "pynvml is not installed: pip install nvidia-ml-py"
        ) from exc


def _error_class(nvml: ModuleType, code: int) -> type[PowerError]:
    mapping: dict[str, type[PowerError]] = {
        "NVML_ERROR_NO_PERMISSION": NoPermissionError,
        "NVML_ERROR_NOT_SUPPORTED": NotSupportedError,
        "NVML_ERROR_FUNCTION_NOT_FOUND": NotSupportedError,
        "NVML_ERROR_LIBRARY_NOT_FOUND": LibraryMissingError,
        "NVML_ERROR_DRIVER_NOT_LOADED": LibraryMissingError,
        "NVML_ERROR_INVALID_ARGUMENT": OutOfRangeError,
    }
    for name, cls in mapping.items():
        if getattr(nvml, name, None) == code:
            return cls
    return PowerError


def _nvml_errors(func: F) -> F:
    """Decorator: re-raise any ``pynvml.NVMLError`` as the matching :mod:`power.errors` type."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nvml = _pynvml()
        try:
            return func(*args, **kwargs)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            cls = _error_class(nvml, code) if isinstance(code, int) else PowerError
            raise cls(f"NVML {func.__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def _field_number(nvml: ModuleType, field: Any) -> float:
    """The number in a ``c_nvmlFieldValue_t`` according to its ``valueType`` (power: uint mW)."""
    attr = {getattr(nvml, "NVML_VALUE_TYPE_DOUBLE", 0): "dVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG", 2): "ulVal",
            getattr(nvml, "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG", 3): "ullVal",
            getattr(nvml, "NVML_VALUE_TYPE_SIGNED_LONG_LONG", 4): "sllVal",
            getattr(nvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
            }.get(getattr(field, "valueType", None), "uiVal")
    return getattr(field.value, attr)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlGPU(GPU):
    """One NVIDIA GPU driven through NVML.

    Create these with :func:`open_nvml_gpus`, which initialises NVML and resolves
    ``CUDA_VISIBLE_DEVICES``.

    Args:
        index: Index as the process sees it (position in ``CUDA_VISIBLE_DEVICES``).
        nvml_index: NVML's index of the device (physical order).
        power_source: One of :data:`POWER_SOURCES` (see the module docstring).
    """

    @_nvml_errors
    def __init__(self, index: int, nvml_index: int, power_source: str = "auto") -> None:
        if power_source not in POWER_SOURCES:
            raise ValueError(f"power_source must be one of {POWER_SOURCES}, got {power_source!r}")
        super().__init__(index)
        self.nvml_index = nvml_index
        self.power_source = power_source
        self._handle = _pynvml().nvmlDeviceGetHandleByIndex(nvml_index)
        self._energy_supported: bool | None = None
        self._sensor: PowerSensor | None = None

    @_nvml_errors
    def get_name(self) -> str:
        """Return the product name."""
        return _text(_pynvml().nvmlDeviceGetName(self._handle))

    @_nvml_errors
    def get_uuid(self) -> str:
        """Return the device UUID (``"GPU-..."``)."""
        return _text(_pynvml().nvmlDeviceGetUUID(self._handle))

    @_nvml_errors
    def get_power_usage_mw(self) -> int:
        """Return the power draw from the source :meth:`get_power_sensor` names. Units: mW."""
        if self.get_power_sensor().source == INSTANT_FIELD:
            return self._read_instant_mw()
        return int(_pynvml().nvmlDeviceGetPowerUsage(self._handle))

    def get_power_sensor(self) -> PowerSensor:
        """Probe (once) which power reading this GPU offers; see the module docstring.

        Raises:
            NotSupportedError: ``power_source="instant"`` and the driver has no instant field.
        """
        if self._sensor is None:
            self._sensor = self._probe_sensor()
            logger.info("GPU %d: power reading %s", self.index, self._sensor.label())
        return self._sensor

    @_nvml_errors
    def _read_instant_mw(self) -> int:
        nvml = _pynvml()
        value = nvml.nvmlDeviceGetFieldValues(self._handle, [getattr(nvml, INSTANT_FIELD)])[0]
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(value.nvmlReturn)
        return int(_field_number(nvml, value))

    def _instant_unavailable(self) -> str | None:
        """None when the instant field works here, else why not."""
        nvml = _pynvml()
        if not hasattr(nvml, INSTANT_FIELD) or not hasattr(nvml, "nvmlDeviceGetFieldValues"):
            return "pynvml too old for NVML_FI_DEV_POWER_INSTANT (pip install -U nvidia-ml-py)"
        try:
            self._read_instant_mw()
        except PowerError as exc:
            return f"driver does not answer NVML_FI_DEV_POWER_INSTANT ({exc})"
        return None

    def _probe_sensor(self) -> PowerSensor:
        why = None
        if self.power_source in ("auto", "instant"):
            why = self._instant_unavailable()
            if why is None:
                return PowerSensor(kind="instant", window_s=0.0, source=INSTANT_FIELD)
            if self.power_source == "instant":
                raise NotSupportedError(f"GPU {self.index}: {why}")
        kind, note = self._usage_kind()
        return PowerSensor(kind=kind, window_s={"instant": 0.0, "average": USAGE_AVERAGE_WINDOW_S}
                           .get(kind), source="nvmlDeviceGetPowerUsage",
                           note="; ".join(n for n in (why, note) if n))

    def _usage_kind(self) -> tuple[str, str]:
        """What ``nvmlDeviceGetPowerUsage`` means on this GPU: (kind, reason)."""
        nvml = _pynvml()
        try:
            arch = int(_nvml_errors(nvml.nvmlDeviceGetArchitecture)(self._handle))
            name = self.get_name()
        except (PowerError, AttributeError) as exc:
            return "unknown", f"architecture unknown ({exc})"
        ampere = getattr(nvml, "NVML_DEVICE_ARCH_AMPERE", 7)
        if arch == getattr(nvml, "NVML_DEVICE_ARCH_UNKNOWN", 0xFFFFFFFF):
            return "unknown", "architecture unknown"
        if arch < ampere:
            return "instant", "pre-Ampere GPU: nvmlDeviceGetPowerUsage is instantaneous"
        if arch == ampere and any(n in name for n in _GA100_NAMES):
            return "instant", "GA100 (A100/A30): nvmlDeviceGetPowerUsage is instantaneous"
        return "average", ("Ampere (non-GA100) or newer: nvmlDeviceGetPowerUsage is a 1-s "
                           "average")

    def supports_energy_counter(self) -> bool:
        """Probe the energy counter once (Volta and newer have one) and cache the answer."""
        if self._energy_supported is None:
            try:
                self.get_total_energy_consumption_mj()
                self._energy_supported = True
            except NotSupportedError:
                self._energy_supported = False
        return self._energy_supported

    @_nvml_errors
    def get_total_energy_consumption_mj(self) -> int:
        """Return the energy used since the driver loaded. Units: mJ."""
        return int(_pynvml().nvmlDeviceGetTotalEnergyConsumption(self._handle))

    @_nvml_errors
    def get_power_limit_mw(self) -> int:
        """Return the current power management limit. Units: mW."""
        return int(_pynvml().nvmlDeviceGetPowerManagementLimit(self._handle))

    @_nvml_errors
    def get_power_limit_constraints_mw(self) -> tuple[int, int]:
        """Return the ``(min, max)`` settable power limit. Units: mW."""
        lo, hi = _pynvml().nvmlDeviceGetPowerManagementLimitConstraints(self._handle)
        return int(lo), int(hi)

    @_nvml_errors
    def get_default_power_limit_mw(self) -> int:
        """Return the default power limit. Units: mW."""
        return int(_pynvml().nvmlDeviceGetPowerManagementDefaultLimit(self._handle))

    @_nvml_errors
    def _set_power_limit_mw(self, power_limit_mw: int) -> None:
        _pynvml().nvmlDeviceSetPowerManagementLimit(self._handle, int(power_limit_mw))

    @_nvml_errors
    def get_clock_range_mhz(self) -> tuple[int, int]:
        """Return min/max supported graphics clock at the highest memory clock. Units: MHz."""
        nvml = _pynvml()
        memory_mhz = max(nvml.nvmlDeviceGetSupportedMemoryClocks(self._handle))
        clocks = nvml.nvmlDeviceGetSupportedGraphicsClocks(self._handle, memory_mhz)
        return int(min(clocks)), int(max(clocks))

    @_nvml_errors
    def get_default_clock_mhz(self) -> int:
        """Return the default applications graphics clock. Units: MHz."""
        nvml = _pynvml()
        return int(nvml.nvmlDeviceGetDefaultApplicationsClock(self._handle,
                                                              nvml.NVML_CLOCK_GRAPHICS))

    @_nvml_errors
    def get_gpu_clock_mhz(self) -> int:
        """Return the current SM clock. Units: MHz."""
        nvml = _pynvml()
        return int(nvml.nvmlDeviceGetClockInfo(self._handle, nvml.NVML_CLOCK_SM))

    @_nvml_errors
    def get_memory_clock_mhz(self) -> int:
        """Return the current memory clock. Units: MHz."""
        nvml = _pynvml()
        return int(nvml.nvmlDeviceGetClockInfo(self._handle, nvml.NVML_CLOCK_MEM))

    @_nvml_errors
    def _lock_gpu_clocks_mhz(self, min_clock_mhz: int, max_clock_mhz: int) -> None:
        _pynvml().nvmlDeviceSetGpuLockedClocks(self._handle, min_clock_mhz, max_clock_mhz)

    @_nvml_errors
    def unlock_gpu_clocks(self) -> None:
        """Reset locked graphics clocks."""
        _pynvml().nvmlDeviceResetGpuLockedClocks(self._handle)

    @_nvml_errors
    def get_utilization_percent(self) -> int:
        """Return GPU utilisation in percent."""
        return int(_pynvml().nvmlDeviceGetUtilizationRates(self._handle).gpu)


def parse_visible_devices(spec: str | None) -> list[str] | None:
    """Split a ``CUDA_VISIBLE_DEVICES`` value into entries; None means "all devices".

    Like CUDA, parsing stops at the first empty entry; an empty string means no device.

    Raises:
        NotSupportedError: A MIG instance is listed (NVML cannot measure MIG slices).
    """
    if spec is None:
        return None
    entries: list[str] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.upper().startswith("MIG"):
            raise NotSupportedError(
                f"CUDA_VISIBLE_DEVICES={spec!r}: MIG instances cannot be power-managed; "
                "list whole GPUs by index or UUID"
            )
        entries.append(entry)
    return entries


def _resolve(entries: Sequence[str], uuids: Sequence[str]) -> list[int]:
    """Map visible-device entries (indices, UUIDs or unique UUID prefixes) to NVML indices."""
    nvml_indices: list[int] = []
    for entry in entries:
        if entry.lstrip("-").isdigit():
            idx = int(entry)
            if not 0 <= idx < len(uuids):
                raise OutOfRangeError(
                    f"CUDA_VISIBLE_DEVICES: index {idx} but the node has {len(uuids)} GPU(s)"
                )
        else:
            key = entry.lower()
            if not key.startswith("gpu-"):
                key = "gpu-" + key
            matches = [i for i, u in enumerate(uuids) if u.lower().startswith(key)]
            if len(matches) != 1:
                what = "no GPU" if not matches else f"{len(matches)} GPUs"
                raise OutOfRangeError(f"CUDA_VISIBLE_DEVICES: {entry!r} matches {what}")
            idx = matches[0]
        if idx in nvml_indices:
            raise OutOfRangeError(f"CUDA_VISIBLE_DEVICES: device {entry!r} listed twice")
        nvml_indices.append(idx)
    return nvml_indices


@_nvml_errors
def open_nvml_gpus(visible_devices: str | None = "env", *,
                   power_source: str = "auto") -> list[NvmlGPU]:
    """Initialise NVML and return the GPUs this process may use.

    Args:
        visible_devices: A ``CUDA_VISIBLE_DEVICES``-style string (indices, ``GPU-`` UUIDs or
            unique UUID prefixes), None for every GPU of the node, or ``"env"`` (default) to
            read ``CUDA_VISIBLE_DEVICES`` from the environment.
        power_source: Which power reading to use (:data:`POWER_SOURCES`).

    Raises:
        LibraryMissingError: No ``pynvml`` or no NVIDIA driver.
        OutOfRangeError: An entry names no GPU or is listed twice.
    """
    nvml = _pynvml()
    nvml.nvmlInit()
    spec = os.environ.get("CUDA_VISIBLE_DEVICES") if visible_devices == "env" else visible_devices
    entries = parse_visible_devices(spec)
    count = int(nvml.nvmlDeviceGetCount())
    if entries is None:
        nvml_indices = list(range(count))
    elif all(e.lstrip("-").isdigit() for e in entries):
        nvml_indices = _resolve(entries, ["" for _ in range(count)])
    else:
        uuids = [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
                 for i in range(count)]
        nvml_indices = _resolve(entries, uuids)
    gpus = [NvmlGPU(index=i, nvml_index=n, power_source=power_source)
            for i, n in enumerate(nvml_indices)]
    logger.info("NVML: using GPU(s) %s of %d", nvml_indices, count)
    return gpus


def shutdown_nvml() -> None:
    """Shut NVML down (errors, e.g. "not initialised", are logged and ignored)."""
    try:
        nvml = _pynvml()
        nvml.nvmlShutdown()
    except (PowerError, Exception) as exc:
        logger.debug("nvmlShutdown: %s", exc)
