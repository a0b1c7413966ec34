"""Sampler time series and energy integration; replay of recorded traces."""
from __future__ import annotations

import csv
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from power.clock import SimClock
from power.errors import PowerError
from power.node import NodePower
from power.replay import load_trace, replay_gpus
from power.sampler import GPU_COLUMNS, PowerSampler
from power.simulated import constant_load, make_simulated_gpus

TRACE = Path(__file__).parent / "traces" / "power_trace_2gpu.csv"


def test_energy_from_counters_and_trapezoid_agree_with_the_truth(tmp_path):
    clock = SimClock()
    with_counter = make_simulated_gpus("A100-SXM4", 2, clock=clock, loads=constant_load(0.7),
                                       noise_fraction=0.0)
    without = make_simulated_gpus("A100-SXM4", 1, clock=clock, loads=constant_load(0.7),
                                  noise_fraction=0.0, has_energy_counter=False, seed=1)
    node = NodePower(rapl=None, cpu_tdp_w=100, idle_fraction=0.5, overhead_w=20,
                     cpu_percent=lambda: 0.0, clock=clock)
    s = PowerSampler(with_counter + without, tmp_path, node=node, clock=clock,
                     flush_interval_s=0.5)
    s.open()
    truth_w = with_counter[0].true_power_w()
    for _ in range(101):  # 10 s at 10 Hz
        s.sample_once()
        clock.advance(0.1)
    s.stop()
    e = s.energy_j()
    # Constant power; stop() took the last sample at t = 10.1 s. Counter energy and the
    # trapezoid rule must both equal P * 10.1 s.
    assert e["gpus"][0] == pytest.approx(truth_w * 10.1, rel=1e-6)
    assert e["gpus"][2] == pytest.approx(without[0].true_power_w() * 10.1, rel=1e-6)
    assert e["node"] == pytest.approx(70.0 * 10.1)
    assert e["estimated"] is True
    rows = list(csv.DictReader(open(tmp_path / "gpu_power.csv")))
    assert tuple(rows[0]) == GPU_COLUMNS
    assert len(rows) == 3 * 102  # 101 samples + the final one taken by stop()
    assert float(rows[3]["time_s"]) == pytest.approx(0.1)
    assert float(rows[0]["power_w"]) == pytest.approx(truth_w, abs=1e-3)
    node_rows = list(csv.DictReader(open(tmp_path / "node_power.csv")))
    assert node_rows[-1]["estimated"] == "True" and node_rows[-1]["source"] == "estimate"
    # The sampler's GPU file is a replayable trace.
    assert sorted(load_trace(tmp_path / "gpu_power.csv")) == [0, 1, 2]


def test_background_thread_samples_at_10hz_monotonic_and_flushes(tmp_path):
    gpus = make_simulated_gpus("L4", 2, clock=SimClock())  # readings only; timestamps real
    s = PowerSampler(gpus, tmp_path, rate_hz=20, fmt="jsonl", flush_interval_s=0.1)
    s.start()
    time.sleep(0.6)
    flushed = (tmp_path / "power_samples.jsonl").read_text().splitlines()
    assert len(flushed) >= 3  # flushed while running: a crash would not lose them
    s.stop()
    s.stop()  # idempotent
    records = [json.loads(line) for line in (tmp_path / "power_samples.jsonl").open()]
    times = [r["time_s"] for r in records]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert 8 <= len(records) <= 16  # ~0.6 s at 20 Hz (+1 at stop), on a busy 2-core machine
    assert records[0]["gpus"][1]["gpu"] == 1


def test_replay_follows_the_trace_and_integrates_it():
    trace = load_trace(TRACE)
    assert sorted(trace) == [0, 1] and trace[0].duration_s == pytest.approx(4.0)
    clock = SimClock()
    gpus = replay_gpus(TRACE, clock=clock, min_limit_w=100, max_limit_w=400)
    clock.advance(0.05)  # halfway between the first two samples
    expected = 0.5 * (trace[1].power_w[0] + trace[1].power_w[1])
    assert gpus[1].get_power_usage_mw() == pytest.approx(expected * 1000, abs=1)
    clock.advance(3.95)
    e_j = gpus[0].get_total_energy_consumption_mj() / 1000
    t, p = trace[0].time_s, trace[0].power_w
    assert e_j == pytest.approx(float(np.sum(0.5 * (p[1:] + p[:-1]) * np.diff(t))), rel=1e-4)
    assert gpus[0].get_utilization_percent() == trace[0].util[-1]
    clock.advance(1.0)  # past the end: held at the last value
    assert gpus[0].get_total_energy_consumption_mj() / 1000 == pytest.approx(
        e_j + p[-1] * 1.0, rel=1e-4)
    gpus[0].set_power_limit_mw(200_000)
    assert gpus[0].get_power_limit_mw() == 200_000


def test_bad_trace_names_the_problem(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("time_s,gpu\n0,0\n")
    with pytest.raises(PowerError, match="power_w"):
        load_trace(bad)
    bad.write_text("time_s,gpu,power_w\n1,0,5\n0.5,0,5\n")
    with pytest.raises(PowerError, match=":3: time_s goes backwards"):
        load_trace(bad)


SLOW_METER = ["sh", "-c", "sleep 0.5; echo 'Instantaneous power reading: 350 Watts'"]
"""A real meter command that answers in ``ipmitool dcmi power reading``'s format after 0.5 s."""


def test_a_meter_slower_than_the_sampling_period_never_slows_the_gpu_samples(tmp_path, caplog):
    from power.clock import MonotonicClock
    from power.node import IPMI_DCMI_PATTERN, ExternalMeter

    clock = MonotonicClock()
    gpus = make_simulated_gpus("A100-SXM4", 2, clock=clock)
    meter = ExternalMeter(SLOW_METER, pattern=IPMI_DCMI_PATTERN, min_interval_s=0.0,
                          clock=clock)
    node = NodePower(meter=meter, meter_includes_gpus=False, rapl=None, cpu_tdp_w=100,
                     idle_fraction=0.5, overhead_w=20, cpu_percent=lambda: 0.0, clock=clock)
    s = PowerSampler(gpus, tmp_path, node=node, rate_hz=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="power.node"):
        s.start()
        time.sleep(3.0)
        s.stop()
    with open(tmp_path / "gpu_power.csv", newline="") as fh:
        ticks = sorted({float(r["time_s"]) for r in csv.DictReader(fh)})
    # 10 Hz for 3 s (+ the sample stop() takes): a blocking 0.5-s meter gave ~7 samples.
    assert len(ticks) >= 25, len(ticks)
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.35
    with open(tmp_path / "node_power.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(ticks)
    first = next(i for i, r in enumerate(rows) if r["source"] == "meter")
    assert 0.4 <= float(rows[first]["time_s"]) <= 1.2  # once the command has answered
    assert all(r["source"] == "estimate" and r["estimated"] == "True" and r["meter_age_s"] == ""
               and float(r["other_w"]) == pytest.approx(70.0) for r in rows[:first])
    after = rows[first:]
    assert all(r["source"] == "meter" and r["estimated"] == "False" for r in after)
    assert all(float(r["meter_w"]) == 350.0 == float(r["other_w"]) for r in after)
    assert all(0.0 <= float(r["meter_age_s"]) < 0.8 for r in after)  # refreshed every ~0.5 s
    slow = [m for m in caplog.messages if "longer than" in m]
    assert len(slow) == 1, caplog.messages
    assert "sleep 0.5" in slow[0] and "0.10 s sampling period" in slow[0]
    assert meter._thread is None  # the sampler started the meter's thread and stopped it
