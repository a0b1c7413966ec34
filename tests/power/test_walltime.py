"""Wall-clock UTC (with the monotonic time beside it) on every power sample and event."""
from __future__ import annotations

import csv
import json
import time

import pytest

from power.clock import (
    SIM_WALL_ORIGIN_S,
    MonotonicClock,
    SimClock,
    time_fields,
    utc_iso,
)
from power.governor import Governor
from power.node import NodePower
from power.sampler import PowerSampler
from power.simulated import constant_load, make_simulated_gpus


def test_utc_iso_and_time_fields():
    assert utc_iso(SIM_WALL_ORIGIN_S + 0.25) == "2025-01-01T00:00:00.250000Z"
    clock = SimClock(start_s=3.0, wall_origin_s=1_000.0)
    assert time_fields(clock) == {"mono_s": 3.0, "unix_s": 1_003.0,
                                  "utc": "1970-01-01T00:16:43.000000Z"}
    real = time_fields(MonotonicClock())
    assert abs(real["unix_s"] - time.time()) < 1.0 and real["mono_s"] > 0

    class OldClock:  # a clock written before wall_time_s existed still works
        def now(self):
            return 1.0

    assert abs(time_fields(OldClock())["unix_s"] - time.time()) < 1.0


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_sample_has_utc_and_monotonic_time(tmp_path, fmt):
    clock = SimClock(start_s=100.0)
    gpus = make_simulated_gpus("H100-SXM5", 2, clock=clock, loads=constant_load(0.8),
                               noise_fraction=0.0)
    node = NodePower(rapl=None, cpu_percent=lambda: 50.0, clock=clock)
    s = PowerSampler(gpus, tmp_path, node=node, clock=clock, fmt=fmt)
    s.open()
    for _ in range(5):
        s.sample_once()
        clock.advance(0.1)
    s.stop()
    if fmt == "csv":
        rows = list(csv.DictReader(open(tmp_path / "gpu_power.csv")))
        node_rows = list(csv.DictReader(open(tmp_path / "node_power.csv")))
        assert len(node_rows) == 6 and node_rows[0]["utc"] == rows[0]["utc"]
    else:
        recs = [json.loads(line) for line in open(tmp_path / "power_samples.jsonl")]
        rows = [{**g, "time_s": r["time_s"], "mono_s": r["mono_s"], "unix_s": r["unix_s"],
                 "utc": r["utc"]} for r in recs for g in r["gpus"]]
    assert len(rows) == 12
    for row in rows:
        t, mono, unix = float(row["time_s"]), float(row["mono_s"]), float(row["unix_s"])
        assert mono == pytest.approx(100.0 + t, abs=1e-3)
        assert unix == pytest.approx(SIM_WALL_ORIGIN_S + mono, abs=1e-3)
        assert row["utc"] == utc_iso(unix)[:len(row["utc"])]
        assert row["utc"].startswith("2025-01-01T00:01:4") and row["utc"].endswith("Z")
    # The energy counter gives the exact average between samples (constant load here).
    avg = [r["energy_avg_w"] for r in rows[2:]]
    assert all(float(a) == pytest.approx(gpus[0].true_power_w(), rel=1e-3) for a in avg)
    assert rows[0]["energy_avg_w"] in ("", None)  # no previous sample
    sensors = json.loads((tmp_path / "power_sensors.json").read_text())
    assert sensors["started"]["utc"] == "2025-01-01T00:01:40.000000Z"
    assert [x["kind"] for x in sensors["sensors"]] == ["instant", "instant"]
    assert all(x["energy_counter"] for x in sensors["sensors"])


def test_every_governor_event_has_utc_and_monotonic_time(tmp_path):
    clock = SimClock(start_s=5.0)
    gpus = make_simulated_gpus("A100-SXM4", 2, clock=clock, loads=constant_load(1.0))
    with Governor(gpus, budget_w=500, headroom_w=10, clock=clock, run_dir=tmp_path,
                  handle_signals=False) as gov:
        for _ in range(20):
            clock.advance(0.05)
            gov.step()
    events = [json.loads(line) for line in open(tmp_path / "governor_events.jsonl")]
    assert {e["event"] for e in events} >= {"start", "caps", "restore"}
    for e in events:
        assert e["utc"] == utc_iso(e["wall_time"])
        assert e["wall_time"] == pytest.approx(SIM_WALL_ORIGIN_S + e["mono_s"])
        assert e["mono_s"] >= 5.0
    start = next(e for e in events if e["event"] == "start")
    assert start["power_sensors"] == ["instant via simulated"] * 2


def test_governor_takes_power_from_the_energy_counter_when_readings_are_averaged(tmp_path):
    from power.clock import SimClock as _SimClock

    clock = _SimClock()
    avg = make_simulated_gpus("H100-SXM5", 1, clock=clock, sensor="average_1s")
    inst = make_simulated_gpus("H100-SXM5", 1, clock=clock, seed=1)
    with Governor(avg + inst, budget_w=5000, clock=clock, handle_signals=False) as gov:
        assert gov.power_sources == ["energy", "reading"]
        for _ in range(3):
            clock.advance(0.05)
            gov.step()
    with Governor(avg, budget_w=5000, clock=clock, handle_signals=False,
                  energy_power=False) as gov:
        assert gov.power_sources == ["reading"]
