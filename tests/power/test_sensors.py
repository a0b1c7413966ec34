"""Which power reading each GPU generation gives, against a fake NVML (no GPU needed).

NVIDIA documents ``nvmlDeviceGetPowerUsage`` as instantaneous up to Volta/Turing and on GA100
(A100, A30), and as a 1-second average on other Ampere and newer GPUs; drivers from the R535
era on also answer ``NVML_FI_DEV_POWER_INSTANT`` through ``nvmlDeviceGetFieldValues``. The
fakes below return the real ``c_nvmlFieldValue_t`` structures with per-field return codes.
"""
from __future__ import annotations

import sys

import pynvml as real_pynvml
import pytest

from power import nvml
from power.errors import NotSupportedError, PowerError
from power.gpu import PowerSensor
from tests.power.test_nvml import FakeNvml

USAGE_MW = 250_000   # what nvmlDeviceGetPowerUsage returns (the 1-s average on new GPUs)
INSTANT_MW = 333_000  # what the instant field returns


class GenerationNvml(FakeNvml):
    """A fake NVML of one GPU generation.

    Args:
        name: Product name.
        arch: ``NVML_DEVICE_ARCH_*`` value (None: the call fails).
        field: ``"ok"``, ``"not_supported"`` (per-field return code) or ``"missing"`` (the
            driver has no ``nvmlDeviceGetFieldValues``).
    """

    def __init__(self, name: str, arch: int | None, field: str) -> None:
        super().__init__(n=1)
        self.name, self.arch, self.field = name, arch, field

    def nvmlDeviceGetName(self, h):
        self._call("nvmlDeviceGetName", h)
        return self.name

    def nvmlDeviceGetPowerUsage(self, h):
        self._call("nvmlDeviceGetPowerUsage", h)
        return USAGE_MW

    def nvmlDeviceGetArchitecture(self, h):
        self._call("nvmlDeviceGetArchitecture", h)
        if self.arch is None:
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return self.arch

    def nvmlDeviceGetFieldValues(self, h, field_ids):
        self._call("nvmlDeviceGetFieldValues", h, tuple(field_ids))
        if self.field == "missing":
            raise self.NVMLError(self.NVML_ERROR_FUNCTION_NOT_FOUND)
        values = (real_pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for v, fid in zip(values, field_ids, strict=True):
            v.fieldId = fid
            if self.field == "ok" and fid == self.NVML_FI_DEV_POWER_INSTANT:
                v.nvmlReturn = self.NVML_SUCCESS
                v.valueType = self.NVML_VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = INSTANT_MW
            else:
                v.nvmlReturn = self.NVML_ERROR_NOT_SUPPORTED
        return values


A = real_pynvml
GENERATIONS = {
    # name: (fake, expected kind, window, source, reading in mW)
    "V100, old driver": (("Tesla V100-SXM2-32GB", A.NVML_DEVICE_ARCH_VOLTA, "not_supported"),
                         "instant", 0.0, "nvmlDeviceGetPowerUsage", USAGE_MW),
    "A100, old driver": (("NVIDIA A100-SXM4-40GB", A.NVML_DEVICE_ARCH_AMPERE, "missing"),
                         "instant", 0.0, "nvmlDeviceGetPowerUsage", USAGE_MW),
    "A10, no field": (("NVIDIA A10", A.NVML_DEVICE_ARCH_AMPERE, "not_supported"),
                      "average", 1.0, "nvmlDeviceGetPowerUsage", USAGE_MW),
    "L40S, no field": (("NVIDIA L40S", A.NVML_DEVICE_ARCH_ADA, "not_supported"),
                       "average", 1.0, "nvmlDeviceGetPowerUsage", USAGE_MW),
    "H100, old driver": (("NVIDIA H100 80GB HBM3", A.NVML_DEVICE_ARCH_HOPPER, "missing"),
                         "average", 1.0, "nvmlDeviceGetPowerUsage", USAGE_MW),
    "H100, new driver": (("NVIDIA H100 80GB HBM3", A.NVML_DEVICE_ARCH_HOPPER, "ok"),
                         "instant", 0.0, "NVML_FI_DEV_POWER_INSTANT", INSTANT_MW),
    "H200, new driver": (("NVIDIA H200", A.NVML_DEVICE_ARCH_HOPPER, "ok"),
                         "instant", 0.0, "NVML_FI_DEV_POWER_INSTANT", INSTANT_MW),
    "unknown architecture": (("Mystery GPU", None, "not_supported"),
                             "unknown", None, "nvmlDeviceGetPowerUsage", USAGE_MW),
}


def _open(monkeypatch, fake, **kwargs):
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nvml.open_nvml_gpus(**kwargs)[0]


@pytest.mark.parametrize("case", list(GENERATIONS))
def test_each_generation_reads_the_best_power_it_offers(monkeypatch, case):
    args, kind, window, source, reading = GENERATIONS[case]
    g = _open(monkeypatch, GenerationNvml(*args))
    sensor = g.get_power_sensor()
    assert (sensor.kind, sensor.window_s, sensor.source) == (kind, window, source)
    assert g.get_power_usage_mw() == reading
    assert g.get_total_energy_consumption_mj() == 123_456_789  # energy: always the counter
    assert sensor.to_json()["kind"] == kind and source in sensor.label()


def test_probe_runs_once(monkeypatch):
    fake = GenerationNvml("NVIDIA H100 80GB HBM3", A.NVML_DEVICE_ARCH_HOPPER, "ok")
    g = _open(monkeypatch, fake)
    for _ in range(5):
        g.get_power_usage_mw()
    assert sum(c[0] == "nvmlDeviceGetFieldValues" for c in fake.calls) == 6  # probe + 5 reads
    assert not any(c[0] == "nvmlDeviceGetPowerUsage" for c in fake.calls)


def test_power_source_can_be_forced(monkeypatch):
    fake = GenerationNvml("NVIDIA H100 80GB HBM3", A.NVML_DEVICE_ARCH_HOPPER, "ok")
    g = _open(monkeypatch, fake, power_source="usage")
    assert g.get_power_sensor().kind == "average" and g.get_power_usage_mw() == USAGE_MW
    fake = GenerationNvml("NVIDIA L40S", A.NVML_DEVICE_ARCH_ADA, "not_supported")
    g = _open(monkeypatch, fake, power_source="instant")
    with pytest.raises(NotSupportedError, match="NVML_FI_DEV_POWER_INSTANT"):
        g.get_power_sensor()
    with pytest.raises(ValueError, match="power_source"):
        _open(monkeypatch, fake, power_source="fast")


def test_bindings_without_the_instant_field_fall_back(monkeypatch):
    fake = GenerationNvml("NVIDIA H100 80GB HBM3", A.NVML_DEVICE_ARCH_HOPPER, "ok")
    del fake.NVML_FI_DEV_POWER_INSTANT
    sensor = _open(monkeypatch, fake).get_power_sensor()
    assert sensor.kind == "average" and "too old" in sensor.note


def test_instant_field_failing_later_is_a_power_error(monkeypatch):
    fake = GenerationNvml("NVIDIA H100 80GB HBM3", A.NVML_DEVICE_ARCH_HOPPER, "ok")
    g = _open(monkeypatch, fake)
    assert g.get_power_usage_mw() == INSTANT_MW
    fake.field = "not_supported"
    with pytest.raises(PowerError):
        g.get_power_usage_mw()


def test_power_sensor_validates():
    with pytest.raises(ValueError, match="kind"):
        PowerSensor(kind="fast", window_s=0, source="x")
    with pytest.raises(ValueError, match="window_s"):
        PowerSensor(kind="average", window_s=-1, source="x")
