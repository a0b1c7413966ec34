"""The meter's view and the power sensor in the report: import a PDU log into a run whose
power was sampled on simulated 1-s-averaging GPUs, and render."""
from __future__ import annotations

import argparse
import json

import pytest

from fileio.user_error import UserError
from harness.commands import report as report_cli
from power.clock import SIM_WALL_ORIGIN_S as T0
from power.clock import SimClock
from power.governor import Governor
from power.node import NodePower
from power.sampler import PowerSampler
from power.simulated import constant_load, make_simulated_gpus
from reports.meter import import_meter
from reports.render import render_report
from reports.rundata import load_run

BUDGET_W = 1500.0


def _run(tmp_path):
    """A run with 20 s of governed power on 2 simulated H100 (1-s averaged readings)."""
    run = tmp_path / "run"
    node_dir = run / "power" / "node000"
    clock = SimClock(start_s=50.0)
    gpus = make_simulated_gpus("H100-SXM5", 2, clock=clock, loads=constant_load(0.9),
                               sensor="average_1s")
    node = NodePower(rapl=None, cpu_tdp_w=200, cpu_percent=lambda: 50.0, clock=clock)
    sampler = PowerSampler(gpus, node_dir, node=node, clock=clock)
    sampler.open()  # driven by hand on the simulated clock
    with Governor(gpus, budget_w=BUDGET_W, headroom_w=50, other_power_w=node.other_power_w,
                  clock=clock, run_dir=node_dir, handle_signals=False) as gov:
        for _ in range(200):
            clock.advance(0.1)
            gov.step()
            sampler.sample_once()
    sampler.stop()
    (run / "summary.json").write_text(json.dumps(
        {"job": "meter-demo", "power": {"enabled": True, "backend": "simulated",
                                        "simulated": True, "budget_w": BUDGET_W,
                                        "headroom_w": 50}}))
    return run


def _meter_csv(tmp_path, extra_w=60.0, burst=True):
    """The organisers' meter: 1 Hz, local time UTC+8, a bit above ours, one 2-s burst."""
    lines = ["Time;Power (kW)"]
    for s in range(80):
        w = 1440.0 + extra_w + (200.0 if burst and 60 <= s < 62 else 0.0)
        hh = 8
        lines.append(f"2025-01-01 {hh:02d}:{s // 60:02d}:{s % 60:02d};{w / 1000:.4f}"
                     .replace(".", ","))
    p = tmp_path / "pdu.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_import_and_render_meter_view(tmp_path):
    run = _run(tmp_path)
    done = import_meter(run, _meter_csv(tmp_path), utc_offset_h=8)
    assert [d.phase for d in done] == ["training"]
    fig = done[0].figures
    # The governed window, t = 50..70 s (start to restore), holds 21 of the meter's seconds.
    assert fig["source"] == "pdu.csv" and fig["samples"] == 21
    assert fig["meter_crossings"]["count"] == 1
    assert fig["meter_crossings"]["longest_s"] == pytest.approx(2.0)
    assert abs(fig["diff_mean_w"]) < 200
    assert (run / "power" / "meter_log.csv").read_text().startswith("unix_s,utc,watts\n")

    data = load_run(run)
    pd = data.train_power
    assert pd.sensor_kinds == {"average": 2}
    assert pd.nodes[0].unix_offset_s == pytest.approx(T0 + 50.0, abs=0.2)
    html = render_report([data])
    assert "The meter&#x27;s view" in html or "The meter's view" in html
    assert "budget crossings as the meter saw them" in html
    assert "1 (longest 2.00 s, total 2.00 s over)" in html
    assert "2 GPU(s) averaged" in html and "1 s window" in html
    assert "meter − ours (W)" in html  # the difference chart


def test_meter_that_does_not_overlap_is_refused(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(UserError, match=r"about \+8 h apart"):
        import_meter(run, _meter_csv(tmp_path))  # forgot the time zone
    args = argparse.Namespace(run_dirs=[str(run)], meter=str(_meter_csv(tmp_path)),
                              meter_utc_offset_h=8.0, meter_offset_s=0.0,
                              meter_time_column=None, meter_power_column=None,
                              sweep=None, out=str(tmp_path / "r.html"))
    assert report_cli.run(args) == 0
    assert "The meter" in (tmp_path / "r.html").read_text()


def test_importing_a_meter_log_twice_needs_overwrite(tmp_path):
    """A second import would silently replace the first's figures: refused, then allowed."""
    run = _run(tmp_path)
    meter = _meter_csv(tmp_path)
    import_meter(run, meter, utc_offset_h=8)
    imported = sorted(run.rglob("meter_*"))
    before = [p.read_bytes() for p in imported]
    with pytest.raises(UserError, match="pass --overwrite"):
        import_meter(run, _meter_csv(tmp_path, extra_w=90.0), utc_offset_h=8)
    assert [p.read_bytes() for p in imported] == before
    done = import_meter(run, _meter_csv(tmp_path, extra_w=90.0), utc_offset_h=8, overwrite=True)
    assert done and [p.read_bytes() for p in imported] != before
