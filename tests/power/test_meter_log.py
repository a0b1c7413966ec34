"""Reading PDU/meter logs in their common variants and lining them up with a run."""
from __future__ import annotations

import numpy as np
import pytest

from power.clock import SIM_WALL_ORIGIN_S as T0
from power.meter_log import (
    MeterLogError,
    compare_with_meter,
    parse_time,
    read_meter_log,
)


@pytest.mark.parametrize("text, expected", [
    ("2025-01-01T00:00:01.5Z", T0 + 1.5),
    ("2025-01-01T08:00:01+08:00", T0 + 1),
    ("2025-01-01 00:00:02", T0 + 2),
    ("2025/01/01 00:00:02.250", T0 + 2.25),
    ("01/01/2025 00:00:03", T0 + 3),
    (f"{T0 + 4:.3f}", T0 + 4),
    (f"{(T0 + 5) * 1000:.0f}", T0 + 5),
    ("Wed Jan 01 00:00:06 2025", T0 + 6),
])
def test_time_stamp_forms(text, expected):
    assert parse_time(text) == pytest.approx(expected)


def test_local_time_and_relative_seconds():
    assert parse_time("2025-01-01 08:00:00", utc_offset_h=8) == pytest.approx(T0)
    with pytest.raises(ValueError, match="relative seconds"):
        parse_time("12.5")
    with pytest.raises(ValueError, match="unrecognised"):
        parse_time("yesterday")


def _write(tmp_path, text, name="pdu.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text", [
    "timestamp,watts\n2025-01-01T00:00:00Z,1000\n2025-01-01T00:00:01Z,1200.5\n",
    "# exported by PDU-42\nTime (UTC);Power [kW]\n2025-01-01 00:00:00;1\n"
    "2025-01-01 00:00:01;1,2005\n",
    "Date,Time,Active Power (W)\n2025-01-01,00:00:00,1000\n2025-01-01,00:00:01,1200.5\n",
    f"unix_s\tpower_w\n{T0:.0f}\t1000\n{T0 + 1:.0f}\t1200.5\n",
    f"epoch,outlet1_w,outlet2_w\n{T0 * 1000:.0f},400,600\n{(T0 + 1) * 1000:.0f},600,600.5\n",
    # long format: one row per outlet per time, summed
    "timestamp,outlet,watts\n2025-01-01T00:00:00Z,A1,400\n2025-01-01T00:00:00Z,A2,600\n"
    "2025-01-01T00:00:01Z,A2,600.5\n2025-01-01T00:00:01Z,A1,600\n",
])
def test_meter_log_variants(tmp_path, text):
    log = read_meter_log(_write(tmp_path, text))
    assert log.unix_s.tolist() == pytest.approx([T0, T0 + 1])
    assert log.watts.tolist() == pytest.approx([1000, 1200.5])
    assert log.to_csv().splitlines()[1] == f"{T0:.3f},2025-01-01T00:00:00.000000Z,1000.000"


def test_explicit_columns_offset_and_errors(tmp_path):
    p = _write(tmp_path, "when,in_w,out_w\n2025-01-01T00:00:00Z,10,900\n")
    log = read_meter_log(p, time_column="when", power_columns=["out_w"], offset_s=-2)
    assert log.watts.tolist() == [900] and log.unix_s[0] == T0 - 2
    with pytest.raises(MeterLogError, match="no column 'x'"):
        read_meter_log(p, time_column="x")
    with pytest.raises(MeterLogError, match="no time column"):
        read_meter_log(_write(tmp_path, "a,watts\n1,2\n"))
    with pytest.raises(MeterLogError, match="no power column"):
        read_meter_log(_write(tmp_path, "time,volts\n2025-01-01T00:00:00Z,230\n"))
    with pytest.raises(MeterLogError, match=r"pdu.csv:3: .*unrecognised"):
        read_meter_log(_write(tmp_path, "time,watts\n2025-01-01T00:00:00Z,1\nnoon,2\n"))
    with pytest.raises(MeterLogError, match="no samples"):
        read_meter_log(_write(tmp_path, "time,watts\n"))


def test_comparison_sees_what_the_meter_saw(tmp_path):
    # Our run: 2800 W flat, 10 Hz, 60 s. The meter (1 Hz) reads 5% more plus 40 W (AC losses,
    # fans) and catches a 3-s burst above the 3000 W budget that we also see (smaller).
    ours_t = T0 + np.arange(0, 60, 0.1)
    ours_w = np.full(len(ours_t), 2800.0)
    ours_w[(ours_t >= T0 + 20) & (ours_t < T0 + 23)] = 2900.0
    lines = ["timestamp,watts"]
    for s in range(-10, 70):  # the meter log starts before and ends after the run
        w = 1.05 * float(np.interp(T0 + s, ours_t, ours_w)) + 40
        lines.append(f"{T0 + s:.1f},{w}")
    meter = read_meter_log(_write(tmp_path, "\n".join(lines) + "\n"))
    c = compare_with_meter(meter, ours_t, ours_w, budget_w=3000)
    j = c.to_json()
    assert j["samples"] == 60  # 0..59 s inside the run
    assert j["diff_mean_w"] == pytest.approx(0.05 * j["ours_avg_w"] + 40, rel=1e-3)
    assert j["meter_crossings"]["count"] == 1
    assert j["meter_crossings"]["longest_s"] == pytest.approx(3.0)
    assert j["meter_crossings"]["total_s"] == pytest.approx(3.0)
    assert j["ours_crossings"]["count"] == 0
    assert j["meter_energy_j"] > j["ours_energy_j"]
    assert j["start_utc"] == "2025-01-01T00:00:00.000000Z"


def test_no_overlap_suggests_the_time_zone(tmp_path):
    meter = read_meter_log(_write(tmp_path, "time,watts\n2025-01-01 08:00:00,1\n"
                                  "2025-01-01 08:01:00,1\n"))
    with pytest.raises(MeterLogError, match=r"about \+8 h apart.*local time"):
        compare_with_meter(meter, [T0, T0 + 60], [1, 1], budget_w=3000)
    shifted = read_meter_log(tmp_path / "pdu.csv", utc_offset_h=8)
    assert compare_with_meter(shifted, [T0, T0 + 60], [1, 1], budget_w=3000).to_json()[
        "samples"] == 2


# --- bad readings (issue #22): refused with file and line, or excluded with a warning -------


@pytest.mark.parametrize("value, words", [("nan", "not a finite"), ("inf", "not a finite"),
                                          ("-12.5", "not a finite, non-negative")])
def test_non_finite_or_negative_meter_readings_are_refused_with_the_line(tmp_path, value, words):
    p = tmp_path / "m.csv"
    p.write_text("time,watts\n2025-01-01T00:00:00Z,2000\n"
                 f"2025-01-01T00:00:01Z,{value}\n2025-01-01T00:00:02Z,2000\n")
    with pytest.raises(MeterLogError, match=rf"m\.csv:3: power .* {words}"):
        read_meter_log(p)


def test_zero_meter_readings_are_excluded_with_a_warning(tmp_path, caplog):
    p = tmp_path / "m.csv"
    p.write_text("time,watts\n2025-01-01T00:00:00Z,2000\n2025-01-01T00:00:01Z,0\n"
                 "2025-01-01T00:00:02Z,2100\n")
    with caplog.at_level("WARNING"):
        log = read_meter_log(p)
    assert list(log.watts) == [2000.0, 2100.0]
    assert "1 reading(s) of 0 W excluded (lines 3)" in caplog.text


def test_mixed_time_zones_are_refused(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("time,watts\n2025-01-01T08:00:00+08:00,2000\n2025-01-01T00:00:01Z,2000\n")
    with pytest.raises(MeterLogError, match=r"m\.csv:3: time zone \+00:00 differs from line 2"):
        read_meter_log(p)
    p.write_text("time,watts\n2025-01-01 08:00:00,2000\n2025-01-01T00:00:01Z,2000\n")
    with pytest.raises(MeterLogError, match=r"m\.csv:3: time zone \+00:00 differs .*none"):
        read_meter_log(p)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_replay_traces_with_bad_watts_are_refused_with_the_line(tmp_path, value):
    from power.errors import PowerError
    from power.replay import load_trace

    p = tmp_path / "trace.csv"
    p.write_text(f"time_s,gpu,power_w\n0.0,0,250\n0.1,0,{value}\n")
    with pytest.raises(PowerError, match=r"trace\.csv:3: power_w .* not a positive finite"):
        load_trace(p)
