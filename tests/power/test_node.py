"""Node power: RAPL on a fake sysfs tree, the meter parser, and the estimate fallback."""
from __future__ import annotations

import logging
import time

import pytest

from power.clock import SimClock
from power.errors import PowerError
from power.node import ExternalMeter, NodePower, RaplReader, parse_meter_output


def make_zone(root, name, label, energy_uj, max_uj=262143328850):
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def set_energy(zone, uj):
    (zone / "energy_uj").write_text(f"{uj}\n")


def test_rapl_power_counts_package_and_dram_but_not_core_and_handles_wraparound(tmp_path):
    pkg0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, max_uj=10_000_000)
    core = make_zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    dram = make_zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000)
    pkg1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 3_000_000)
    clock = SimClock(100.0)
    rapl = RaplReader(tmp_path, clock=clock)
    assert rapl.available()
    assert sorted(z.kind for z in rapl.zones) == ["dram", "package", "package"]
    assert rapl.read_power_w() is None  # first call only sets the baseline
    clock.advance(2.0)
    set_energy(pkg0, 200_000)
    # pkg0 went 1.0 J -> 10.0 J (max) -> wrapped -> 0.2 J: +9.2 J in 2 s = 4.6 W
    set_energy(pkg1, 3_000_000 + 150_000_000)  # +150 J in 2 s = 75 W
    set_energy(dram, 2_000_000 + 20_000_000)  # +20 J = 10 W
    set_energy(core, 99_000_000)  # inside the package: ignored
    p = rapl.read_power_w()
    assert p["package"] == pytest.approx(4.6 + 75.0)
    assert p["dram"] == pytest.approx(10.0)

    node = NodePower(rapl=RaplReader(tmp_path, clock=clock), overhead_w=40, clock=clock,
                     cpu_percent=lambda: 50.0)
    clock.advance(1.0)
    set_energy(pkg1, 153_000_000 + 100_000_000)  # 100 W
    set_energy(dram, 22_000_000 + 5_000_000)  # 5 W
    r = node.read()
    assert r.source == "rapl" and r.estimated is False
    assert r.cpu_w == pytest.approx(100.0) and r.dram_w == pytest.approx(5.0)
    assert r.other_w == pytest.approx(145.0)


def test_unreadable_or_absent_rapl_degrades_to_a_flagged_estimate(tmp_path):
    # An empty powercap directory (like this VM) and a zone without a readable energy file.
    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "name").write_text("package-0\n")
    assert not RaplReader(tmp_path).available()
    node = NodePower(rapl=RaplReader(tmp_path), cpu_tdp_w=200, idle_fraction=0.25,
                     overhead_w=30, cpu_percent=lambda: 40.0)
    r = node.read()
    assert r.source == "estimate" and r.estimated is True
    assert r.cpu_w == pytest.approx(200 * (0.25 + 0.75 * 0.4))
    assert node.other_power_w() == pytest.approx(r.cpu_w + 30)
    # The real /sys of this machine: whatever it has, reading must not raise.
    assert NodePower(cpu_percent=lambda: 0.0).read().other_w >= 0


def test_meter_parser():
    text = ("    Instantaneous power reading:                   312 Watts\n"
            "    Minimum during sampling period:                 90 Watts\n")
    assert parse_meter_output(text) == 312.0
    assert parse_meter_output("Power: 1.25 kW", r"Power:\s*([\d.]+)\s*(?P<unit>kW|W)") == 1250.0
    with pytest.raises(PowerError, match="does not match"):
        parse_meter_output("Error: unable to establish IPMI v2 session")


def _wait_for(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_external_meter_subtracts_gpus_and_a_stale_value_is_estimated(caplog):
    clock = SimClock()
    calls = []

    def runner(cmd, timeout):
        calls.append(cmd)
        return "Instantaneous power reading: 1500 Watts"

    meter = ExternalMeter("ipmitool dcmi power reading", min_interval_s=60.0, clock=clock,
                          runner=runner)
    assert meter.command == ["ipmitool", "dcmi", "power", "reading"]
    node = NodePower(meter=meter, rapl=None, cpu_percent=lambda: 0.0, cpu_tdp_w=100,
                     idle_fraction=0.5, clock=clock)
    try:
        _wait_for(lambda: meter.latest() is not None)  # the first read started the thread
        r = node.read(gpu_power_w=1200.0)
        assert (r.source, r.meter_w, r.other_w, r.estimated) == ("meter", 1500.0, 300.0, False)
        assert r.meter_age_s == 0.0
        clock.advance(1.5)
        r = node.read(gpu_power_w=1200.0)
        assert r.source == "meter" and r.meter_age_s == pytest.approx(1.5)
        assert len(calls) == 1  # one command per min_interval_s, however often it is read
        # 120 s later the value is older than max(2 s, 2 x 60 s): not a reading any more.
        assert meter.max_age_s() == pytest.approx(120.0)
        clock.advance(120.0)
        with caplog.at_level(logging.WARNING, logger="power.node"):
            r = node.read(gpu_power_w=1200.0)
            node.read(gpu_power_w=1200.0)
        assert r.source == "estimate" and r.estimated and r.meter_w is None
        assert r.other_w == pytest.approx(50.0) and r.meter_age_s == pytest.approx(121.5)
        stale = [m for m in caplog.messages if "old" in m]
        assert len(stale) == 1 and "(ipmitool dcmi power reading)" in stale[0]
    finally:
        node.close()


def test_a_meter_that_never_answers_leaves_the_estimate():
    meter = ExternalMeter(["sh", "-c", "echo garbage"], min_interval_s=60.0)
    node = NodePower(meter=meter, rapl=None, cpu_percent=lambda: 0.0, cpu_tdp_w=100,
                     idle_fraction=0.5)
    try:
        node.start(0.1)
        time.sleep(0.3)
        r = node.read()
        assert (r.source, r.estimated, r.meter_age_s, r.other_w) == ("estimate", True, None, 50.0)
    finally:
        node.close()


def test_external_meter_command_failure_is_a_power_error():
    meter = ExternalMeter(["definitely-not-a-command-xyz"])
    with pytest.raises(PowerError, match="failed"):
        meter.read_w()
