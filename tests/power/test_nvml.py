"""NVML backend against a fake ``pynvml`` module (no GPU needed).

The fake reuses the real package's ``NVMLError`` class and constants, so error codes and
exception types are NVIDIA's, and replaces every function with a recording stub.
"""
from __future__ import annotations

import subprocess
import sys
import types

import pynvml as real_pynvml
import pytest

from power import nvml
from power.errors import (
    LibraryMissingError,
    NoPermissionError,
    NotSupportedError,
    OutOfRangeError,
    PowerError,
)

UUIDS = ["GPU-aaaa1111-0000-0000-0000-000000000000", "GPU-bbbb2222-0000-0000-0000-000000000000",
         "GPU-cccc3333-0000-0000-0000-000000000000", "GPU-dddd4444-0000-0000-0000-000000000000"]


class FakeNvml(types.ModuleType):
    def __init__(self, n=4, energy_supported=True, fail=None):
        super().__init__("pynvml")
        self.calls: list[tuple] = []
        self.initialised = False
        self.limits_mw = [400_000] * n
        self.n = n
        self.energy_supported = energy_supported
        self.fail = fail or {}  # function name -> NVML error code
        self.NVMLError = real_pynvml.NVMLError
        for name in dir(real_pynvml):
            if name.startswith("NVML_"):
                setattr(self, name, getattr(real_pynvml, name))

    def _call(self, name, *args):
        self.calls.append((name, *args))
        if name != "nvmlInit" and not self.initialised:
            raise self.NVMLError(self.NVML_ERROR_UNINITIALIZED)
        if name in self.fail:
            raise self.NVMLError(self.fail[name])

    def nvmlInit(self):
        self._call("nvmlInit")
        self.initialised = True

    def nvmlShutdown(self):
        self._call("nvmlShutdown")
        self.initialised = False

    def nvmlDeviceGetCount(self):
        self._call("nvmlDeviceGetCount")
        return self.n

    def nvmlDeviceGetHandleByIndex(self, i):
        self._call("nvmlDeviceGetHandleByIndex", i)
        return ("handle", i)

    def nvmlDeviceGetUUID(self, h):
        self._call("nvmlDeviceGetUUID", h)
        return UUIDS[h[1]].encode()  # old bindings return bytes

    def nvmlDeviceGetName(self, h):
        self._call("nvmlDeviceGetName", h)
        return "NVIDIA A100-SXM4-40GB"

    def nvmlDeviceGetPowerUsage(self, h):
        self._call("nvmlDeviceGetPowerUsage", h)
        return 250_500 + h[1]

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._call("nvmlDeviceGetTotalEnergyConsumption", h)
        if not self.energy_supported:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return 123_456_789

    def nvmlDeviceGetPowerManagementLimit(self, h):
        self._call("nvmlDeviceGetPowerManagementLimit", h)
        return self.limits_mw[h[1]]

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h):
        self._call("nvmlDeviceGetPowerManagementLimitConstraints", h)
        return [100_000, 400_000]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h):
        self._call("nvmlDeviceGetPowerManagementDefaultLimit", h)
        return 400_000

    def nvmlDeviceSetPowerManagementLimit(self, h, mw):
        self._call("nvmlDeviceSetPowerManagementLimit", h, mw)
        self.limits_mw[h[1]] = mw

    def nvmlDeviceGetSupportedMemoryClocks(self, h):
        self._call("nvmlDeviceGetSupportedMemoryClocks", h)
        return [1215, 405]

    def nvmlDeviceGetSupportedGraphicsClocks(self, h, mem):
        self._call("nvmlDeviceGetSupportedGraphicsClocks", h, mem)
        return [1410, 1395, 1000, 210] if mem == 1215 else [405]

    def nvmlDeviceGetDefaultApplicationsClock(self, h, kind):
        self._call("nvmlDeviceGetDefaultApplicationsClock", h, kind)
        return 1095

    def nvmlDeviceGetClockInfo(self, h, kind):
        self._call("nvmlDeviceGetClockInfo", h, kind)
        return {self.NVML_CLOCK_SM: 1380, self.NVML_CLOCK_MEM: 1215}[kind]

    def nvmlDeviceSetGpuLockedClocks(self, h, lo, hi):
        self._call("nvmlDeviceSetGpuLockedClocks", h, lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, h):
        self._call("nvmlDeviceResetGpuLockedClocks", h)

    def nvmlDeviceGetUtilizationRates(self, h):
        self._call("nvmlDeviceGetUtilizationRates", h)
        return types.SimpleNamespace(gpu=87, memory=40)


@pytest.fixture
def fake(monkeypatch):
    f = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", f)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return f


def test_import_makes_no_nvml_call_and_does_not_need_pynvml():
    code = ("import sys; sys.modules['pynvml'] = None; import power, power.nvml, power.governor;"
            " print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_init_comes_first_and_values_pass_through_in_nvml_units(fake):
    gpus = nvml.open_nvml_gpus()
    assert fake.calls[0] == ("nvmlInit",)
    assert len(gpus) == 4
    g = gpus[2]
    assert g.get_power_usage_mw() == 250_502
    assert g.get_total_energy_consumption_mj() == 123_456_789
    assert g.supports_energy_counter() is True
    assert g.get_power_limit_constraints_mw() == (100_000, 400_000)
    assert g.get_default_power_limit_mw() == 400_000
    assert g.get_uuid() == UUIDS[2] and g.get_name().startswith("NVIDIA A100")
    assert g.get_clock_range_mhz() == (210, 1410)  # at the highest memory clock
    assert g.get_default_clock_mhz() == 1095
    assert g.get_gpu_clock_mhz() == 1380 and g.get_memory_clock_mhz() == 1215
    assert g.get_utilization_percent() == 87


def test_set_limit_validates_range_before_calling_nvml(fake):
    g = nvml.open_nvml_gpus()[1]
    g.set_power_limit_mw(250_000)
    assert fake.calls[-1] == ("nvmlDeviceSetPowerManagementLimit", ("handle", 1), 250_000)
    assert g.get_power_limit_mw() == 250_000
    n_calls = len(fake.calls)
    with pytest.raises(OutOfRangeError, match="450000 mW outside"):
        g.set_power_limit_mw(450_000)
    assert all(c[0] != "nvmlDeviceSetPowerManagementLimit" for c in fake.calls[n_calls:])
    g.reset_power_limit()
    assert fake.limits_mw[1] == 400_000
    g.lock_gpu_clocks_mhz(210, 1000)
    assert fake.calls[-1] == ("nvmlDeviceSetGpuLockedClocks", ("handle", 1), 210, 1000)
    with pytest.raises(OutOfRangeError):
        g.lock_gpu_clocks_mhz(1000, 2000)
    g.unlock_gpu_clocks()
    assert fake.calls[-1][0] == "nvmlDeviceResetGpuLockedClocks"


@pytest.mark.parametrize("code_name, exc", [
    ("NVML_ERROR_NO_PERMISSION", NoPermissionError),
    ("NVML_ERROR_NOT_SUPPORTED", NotSupportedError),
    ("NVML_ERROR_LIBRARY_NOT_FOUND", LibraryMissingError),
    ("NVML_ERROR_INVALID_ARGUMENT", OutOfRangeError),
    ("NVML_ERROR_GPU_IS_LOST", PowerError),
])
def test_nvml_errors_map_to_power_errors(fake, code_name, exc):
    g = nvml.open_nvml_gpus()[0]
    fake.fail["nvmlDeviceSetPowerManagementLimit"] = getattr(real_pynvml, code_name)
    with pytest.raises(exc) as info:
        g.set_power_limit_mw(200_000)
    assert isinstance(info.value.__cause__, real_pynvml.NVMLError)
    assert "nvml" in str(info.value).lower()


def test_missing_driver_and_missing_package(monkeypatch, fake):
    fake.fail["nvmlInit"] = real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    with pytest.raises(LibraryMissingError):
        nvml.open_nvml_gpus()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # "not installed"
    with pytest.raises(LibraryMissingError, match="nvidia-ml-py"):
        nvml.open_nvml_gpus()


def test_energy_counter_probe_caches_not_supported(fake):
    fake.energy_supported = False
    g = nvml.open_nvml_gpus()[0]
    assert g.supports_energy_counter() is False
    assert g.supports_energy_counter() is False
    assert sum(c[0] == "nvmlDeviceGetTotalEnergyConsumption" for c in fake.calls) == 1


@pytest.mark.parametrize("visible, expected", [
    (None, [0, 1, 2, 3]),
    ("2,0", [2, 0]),
    ("3,,1", [3]),  # CUDA stops at the first empty entry
    (UUIDS[3] + "," + UUIDS[1], [3, 1]),
    ("GPU-cccc", [2]),  # unique prefix
    ("bbbb2222", [1]),  # without the GPU- prefix
    ("", []),
])
def test_device_selection_respects_cuda_visible_devices(fake, monkeypatch, visible, expected):
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpus = nvml.open_nvml_gpus()
    assert [g.nvml_index for g in gpus] == expected
    assert [g.index for g in gpus] == list(range(len(expected)))


@pytest.mark.parametrize("visible, match", [
    ("7", "index 7"), ("GPU-ffff", "matches no GPU"), ("0,0", "listed twice"),
    ("MIG-1234", "MIG"),
])
def test_bad_visible_devices_are_reported(fake, visible, match):
    with pytest.raises(PowerError, match=match):
        nvml.open_nvml_gpus(visible)


def test_shutdown_never_raises(fake):
    nvml.shutdown_nvml()  # not initialised: NVML error is swallowed
    nvml.open_nvml_gpus()
    nvml.shutdown_nvml()
    assert fake.calls[-1] == ("nvmlShutdown",) and not fake.initialised
