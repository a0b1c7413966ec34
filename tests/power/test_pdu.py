"""The simulated rack PDU: PSU curve, fans, switch, the meter's averaging, latency and noise."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from harness.cluster.distributed import SingleComm, dist_info_from_env
from harness.config import load_job
from power.config import FieldError, PowerConfig
from power.pdu import (
    FanModel,
    PduCsv,
    PsuCurve,
    RackWallModel,
    SimulatedPdu,
    WallReading,
    read_pdu_csv,
    wall_stats,
)
from power.session import PowerSession
from tests.conftest import ROOT

DEMO = ROOT / "jobs" / "demo.yaml"


def test_psu_curve_matches_platinum_points_and_interpolates() -> None:
    psu = PsuCurve(rating_w=2000.0)
    assert psu.efficiency(200.0) == pytest.approx(0.85)
    assert psu.efficiency(400.0) == pytest.approx(0.90)
    assert psu.efficiency(1000.0) == pytest.approx(0.93)
    assert psu.efficiency(2000.0) == pytest.approx(0.91)
    assert psu.efficiency(3000.0) == pytest.approx(0.91)  # beyond rating: last point
    assert psu.efficiency(700.0) == pytest.approx(0.915)  # halfway between 20 % and 50 %
    assert psu.ac_w(1000.0) == pytest.approx(1000.0 / 0.93)


def test_psu_curve_rejects_bad_points() -> None:
    with pytest.raises(ValueError):
        PsuCurve(rating_w=0.0)
    with pytest.raises(ValueError):
        PsuCurve(points=((0.1, 0.9), (0.0, 0.8)))
    with pytest.raises(ValueError):
        PsuCurve(points=((0.0, 1.2),))


def test_fans_rise_with_load_from_idle_to_max() -> None:
    fans = FanModel(idle_w=30.0, max_w=150.0, full_load_w=2000.0)
    assert fans.fan_w(0.0) == 30.0
    assert fans.fan_w(1000.0) == pytest.approx(30.0 + 120.0 * 0.25)
    assert fans.fan_w(2000.0) == 150.0
    assert fans.fan_w(5000.0) == 150.0


def test_rack_wall_is_above_components_by_psu_fans_and_switch() -> None:
    model = RackWallModel(psu=PsuCurve(rating_w=2000.0), switch_w=60.0)
    nodes = [1200.0, 1200.0]
    per_node = (1200.0 + FanModel().fan_w(1200.0)) / PsuCurve(rating_w=2000.0).efficiency(
        1200.0 + FanModel().fan_w(1200.0))
    assert model.wall_w(nodes) == pytest.approx(2 * per_node + 60.0)
    assert model.wall_w(nodes) >= 1.05 * sum(nodes)


def test_meter_averages_one_second_windows_and_reports_late() -> None:
    pdu = SimulatedPdu(window_s=1.0, latency_s=1.0, noise_w=0.0)
    # 1000 W for the first half of second 100, 2000 W for the second half.
    pdu.observe(100.0, 1000.0)
    pdu.observe(100.5, 2000.0)
    pdu.observe(101.0, 500.0)
    assert pdu.read() is None  # window [100, 101) closed, but published only at 102
    pdu.observe(101.9, 500.0)
    assert pdu.read() is None
    pdu.observe(102.0, 500.0)
    reading = pdu.read()
    assert reading is not None
    assert reading.unix_s == 101.0
    assert reading.published_s == 102.0
    assert reading.wall_w == pytest.approx(1500.0)
    assert pdu.read() is None  # each reading is returned once
    pdu.observe(103.0, 500.0)
    second = pdu.read()
    assert second is not None and second.unix_s == 102.0 and second.wall_w == pytest.approx(500.0)


def test_meter_read_returns_newest_when_several_are_published() -> None:
    pdu = SimulatedPdu(latency_s=0.0, noise_w=0.0)
    for i in range(50):
        pdu.observe(10.0 + 0.1 * i, float(i))
    pdu.observe(15.0, 0.0)
    reading = pdu.read()
    assert reading is not None and reading.unix_s == 15.0
    assert reading.wall_w == pytest.approx(sum(range(40, 50)) / 10)


def test_meter_noise_is_seeded() -> None:
    def series(seed: int) -> list[float]:
        pdu = SimulatedPdu(latency_s=0.0, noise_w=10.0, seed=seed)
        out = []
        for i in range(20):
            pdu.observe(float(i), 1000.0)
            r = pdu.read()
            if r is not None:
                out.append(r.wall_w)
        return out

    assert series(1) == series(1)
    assert series(1) != series(2)
    assert any(abs(w - 1000.0) > 0.5 for w in series(1))
    assert all(abs(w - 1000.0) < 60 for w in series(1))


def test_pdu_csv_round_trip_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "power" / "pdu.csv"
    out = PduCsv(path)
    out.write(WallReading(1764916800.0, 2950.04))
    out.close()
    lines = path.read_text().splitlines()
    assert lines == ["unix_s,utc,wall_w", "1764916800.000,2025-12-05T06:40:00.000Z,2950.0"]
    assert read_pdu_csv(path) == [WallReading(1764916800.0, 2950.0)]
    again = PduCsv(path)  # a resumed run appends, never overwrites
    again.write(WallReading(1764916801.0, 2900.0))
    again.close()
    assert [r.wall_w for r in read_pdu_csv(path)] == [2950.0, 2900.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("unix_s,utc,wall_w\n1.0,x,nan\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_pdu_csv(bad)


def test_config_sim_pdu_off_by_default_and_validated() -> None:
    assert PowerConfig().sim_pdu is False
    assert PowerConfig(sim_pdu=True).sim_pdu is True
    with pytest.raises(FieldError, match="fan_idle_w"):
        PowerConfig(fan_idle_w=200.0, fan_max_w=150.0)
    with pytest.raises(FieldError, match="psu_rating_w"):
        PowerConfig(psu_rating_w=0.0)
    assert not math.isnan(PowerConfig().pdu_latency_s)


def test_wall_stats_counts_crossings_and_their_length() -> None:
    rows = [WallReading(float(t), w) for t, w in
            enumerate([2900.0, 3100.0, 3050.0, 2950.0, 3200.0, 2800.0])]
    stats = wall_stats(rows, 3000.0, source="test")
    assert stats == {"source": "test", "peak_w": 3200.0, "avg_w": 3000.0, "crossings": 2,
                     "longest_crossing_s": 2.0, "samples": 6}
    assert wall_stats(rows, 3000.0, source="t", since_unix_s=5.0)["crossings"] == 0


def test_session_with_sim_pdu_logs_the_wall_and_summary_equals_the_log(tmp_path: Path) -> None:
    job = load_job(str(DEMO), ["power.enabled=true", "power.backend=simulated",
                               "power.sim_pdu=true", "power.budget_w=1500",
                               "power.pdu_latency_s=0.5"])
    session = PowerSession(job.power, dist_info_from_env({}), SingleComm(), tmp_path)
    with session:
        time.sleep(4.0)
    summary = session.summary(0)
    rows = read_pdu_csv(tmp_path / "power" / "pdu.csv")
    assert len(rows) >= 2
    wall = summary["wall"]
    assert wall["samples"] == len(rows)
    assert wall["peak_w"] == max(r.wall_w for r in rows)
    assert wall["avg_w"] == pytest.approx(sum(r.wall_w for r in rows) / len(rows), abs=0.05)
    # The wall carries PSU losses, fans and the switch above the components.
    assert wall["avg_w"] >= 1.05 * summary["avg_cluster_w"], (wall, summary["avg_cluster_w"])


def test_tracker_learns_the_meters_bias_with_the_delay_aligned() -> None:
    from power.pdu import WallTracker

    model = RackWallModel(psu=PsuCurve(rating_w=2000.0))
    tracker = WallTracker(model, k=3.0)
    pdu = SimulatedPdu(latency_s=1.0, noise_w=2.0, seed=3)
    for i in range(300):  # 30 s at 10 Hz; a load step at 15 s
        t = 1000.0 + 0.1 * i
        nodes = [800.0 if i < 150 else 1600.0]
        tracker.observe(t, nodes)
        pdu.observe(t, model.wall_w(nodes) + 100.0)  # the real wall draws 100 W more
        reading = pdu.read()
        if reading is not None:
            tracker.correct(reading)
    excess = model.wall_w([1600.0]) - 1600.0
    assert tracker.correction_w == pytest.approx(100.0, abs=5.0)
    assert 0 < tracker.guard_w < 30.0  # from the noise, not the step (the windows align)
    assert tracker.offset_w() == pytest.approx(excess + tracker.correction_w + tracker.guard_w)


def test_governor_holds_the_budget_less_the_wall_offset() -> None:
    from power.clock import SimClock
    from power.governor import Governor
    from power.simulated import constant_load, make_simulated_gpus

    clock = SimClock()
    gpus = make_simulated_gpus("A100-SXM4", 4, clock=clock, loads=constant_load(0.95))
    gov = Governor(gpus, budget_w=1200.0, headroom_w=0.0, clock=clock, handle_signals=False)
    gov.wall_offset = lambda: 400.0
    with gov:
        for _ in range(30):
            clock.advance(0.05)
            gov.step()
    assert gov.last_decision is not None
    assert sum(gov.last_decision.limits_w) <= 800.0 + 1e-6


def test_bad_or_dying_meter_puts_the_caps_at_the_fail_safe_floor(caplog) -> None:
    from power.pdu import WallTracker

    now = [1000.0]
    tracker = WallTracker(RackWallModel(), budget_w=3000.0, silent_after_s=3.0,
                          clock=lambda: now[0])
    tracker.observe(999.5, [1000.0])
    tracker.correct(WallReading(1000.0, 1200.0))
    assert tracker.fault is None and tracker.offset_w() < 3000.0
    tracker.correct(WallReading(1001.0, -5.0))  # negative
    assert tracker.offset_w() == 3000.0 and tracker.faults == 1
    tracker.correct(WallReading(1002.0, 1200.0))  # reads again
    assert tracker.fault is None
    tracker.correct(WallReading(1003.0, 40000.0))  # absurd: > 10x the budget
    assert tracker.offset_w() == 3000.0 and tracker.faults == 2
    tracker.correct(WallReading(1004.0, 1200.0))
    now[0] = 1010.0  # the meter dies: silent past 3 s
    assert tracker.offset_w() == 3000.0 and tracker.faults == 3
    assert "wall meter PDU silent" in caplog.text and "reads -5 W" in caplog.text


def test_real_meter_command_is_logged_and_summarised(tmp_path: Path) -> None:
    script = tmp_path / "meter.sh"
    script.write_text("#!/bin/sh\necho 2.5\n")  # kW
    script.chmod(0o755)
    job = load_job(str(DEMO), ["power.enabled=true", "power.backend=simulated",
                               f"power.pdu_command={script}", "power.pdu_scale=1000"])
    session = PowerSession(job.power, dist_info_from_env({}), SingleComm(), tmp_path)
    with session:
        time.sleep(3.5)
    summary = session.summary(0)
    rows = read_pdu_csv(tmp_path / "power" / "pdu.csv")
    assert len(rows) >= 2 and all(r.wall_w == 2500.0 for r in rows)
    assert summary["wall"]["samples"] == len(rows) and summary["wall"]["peak_w"] == 2500.0
    assert summary["wall"]["source"].startswith("meter: ")
