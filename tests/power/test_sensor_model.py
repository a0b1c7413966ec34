"""The simulator's sensor model: averaging window, update period and noise."""
from __future__ import annotations

import numpy as np
import pytest

from power.clock import SimClock
from power.simulated import (
    AVERAGE_1S_SENSOR,
    ArrayLoad,
    SensorModel,
    SimulatedGPU,
    get_profile,
)

H100 = get_profile("H100-SXM5")


def _step_gpu(sensor, clock):
    # Activity 0.2 for 5 s, then 1.0: a load step at t = 5 s.
    load = ArrayLoad(0.5, np.array([0.2] * 10 + [1.0] * 30), memory_bound=0.3)
    return SimulatedGPU(0, H100, clock=clock, load=load, noise_fraction=0.0,
                        settle_time_s=0.0, sensor=sensor)


def _trace(gpu, clock, until_s=9.0, dt=0.01):
    out = []
    while clock.now() < until_s - 1e-9:
        clock.advance(dt)
        out.append((clock.now(), gpu.true_power_w(), gpu.get_power_usage_mw() / 1000))
    return np.array(out)


def test_instant_sensor_follows_the_true_power():
    clock = SimClock()
    tr = _trace(_step_gpu("instant", clock), clock)
    assert np.allclose(tr[:, 1], tr[:, 2], atol=1e-3)
    assert _step_gpu("instant", SimClock()).get_power_sensor().kind == "instant"


def test_one_second_average_lags_and_hides_the_step():
    clock = SimClock()
    gpu = _step_gpu(AVERAGE_1S_SENSOR, clock)
    assert gpu.get_power_sensor().kind == "average"
    assert gpu.get_power_sensor().window_s == 1.0
    tr = _trace(gpu, clock)
    t, true_w, read_w = tr.T
    low, high = true_w[t < 4.9].mean(), true_w[t > 5.1].mean()
    assert high > low + 300
    # Half a second after the step the reading is still only about half way up ...
    i = np.searchsorted(t, 5.5)
    assert abs(read_w[i] - (low + high) / 2) < 0.1 * (high - low)
    # ... and a full window (+ one refresh) later it has caught up.
    j = np.searchsorted(t, 6.15)
    assert read_w[j] == pytest.approx(high, rel=1e-3)
    # The reading is held between 100 ms refreshes.
    k = np.searchsorted(t, 5.52)
    assert read_w[k] == read_w[k + 5]
    # Energy between samples stays exact whatever the reading does.
    e0 = gpu.get_total_energy_consumption_mj()
    clock.advance(1.0)
    e1 = gpu.get_total_energy_consumption_mj()
    assert (e1 - e0) / 1000 == pytest.approx(gpu.true_power_w(), rel=1e-3)


def test_averaged_peak_is_lower_than_the_true_peak():
    clock = SimClock()
    spiky = np.tile([1.0] * 3 + [0.2] * 7, 20)  # 150 ms bursts every 500 ms
    load = ArrayLoad(0.05, spiky)
    inst = SimulatedGPU(0, H100, clock=clock, load=load, noise_fraction=0.0, settle_time_s=0.0)
    avg = SimulatedGPU(1, H100, clock=clock, load=load, noise_fraction=0.0, settle_time_s=0.0,
                       sensor=AVERAGE_1S_SENSOR)
    peaks = [0.0, 0.0]
    for step in range(900):
        clock.advance(0.01)  # the model advances lazily: query it at every step
        inst.true_power_w(), avg.true_power_w()
        if step < 150:  # skip the first window (before t=0 the sensor extrapolates)
            continue
        peaks[0] = max(peaks[0], inst.get_power_usage_mw() / 1000)
        peaks[1] = max(peaks[1], avg.get_power_usage_mw() / 1000)
    assert peaks[1] < 0.8 * peaks[0]


def test_sensor_noise_and_validation():
    clock = SimClock()
    noisy = SimulatedGPU(0, H100, clock=clock, sensor=SensorModel(noise_fraction=0.02))
    values = [noisy.get_power_usage_mw() / 1000 for _ in range(400)]
    assert np.std(values) == pytest.approx(0.02 * H100.tdp_w, rel=0.2)
    with pytest.raises(ValueError, match="window_s"):
        SensorModel(window_s=-1)
    with pytest.raises(ValueError, match="unknown sensor"):
        SimulatedGPU(0, H100, clock=clock, sensor="perfect")
