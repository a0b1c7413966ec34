"""Issue #32: meter logs a careless team (or a flaky PDU) hands in, through ``harness report
--meter`` in a fresh process, on a run folder written by the real sampler and governor.

The run's governed window is 2025-01-01T00:00:50Z .. 00:01:10Z (20 s) at about 1440 W under a
1500 W budget (see :func:`tests.reports.test_meter._run`).
"""
from __future__ import annotations

import html as html_mod
import json
import re
from pathlib import Path

import pytest

from power.clock import SIM_WALL_ORIGIN_S as T0
from tests.conftest import run_harness
from tests.reports.test_meter import _run


def _csv(path: Path, rows: list[tuple], header: str = "unix_s,watts") -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(str(c) for c in r) for r in rows) + "\n")
    return path


def _report(run: Path, meter: Path, out: Path):  # noqa: ANN202 - CompletedProcess
    return run_harness("report", str(run), "--meter", str(meter), "-o", str(out))


def _text(out: Path) -> str:
    return html_mod.unescape(re.sub(r"<[^>]+>", " ", out.read_text()))


def _card(text: str, label: str) -> str:
    """The value after a headline card's label."""
    m = re.search(re.escape(label) + r"\s+(.+?)\s{2,}", text)
    assert m, label
    return m.group(1)


def test_the_headline_card_shows_the_meter_crossing(tmp_path: Path) -> None:
    run = _run(tmp_path)
    rows = [(T0 + s, 1900.0 if s in (60, 61) else 1450.0) for s in range(40, 81)]
    out = tmp_path / "r.html"
    proc = _report(run, _csv(tmp_path / "pdu.csv", rows), out)
    assert proc.returncode == 0, proc.stderr
    fig = json.loads((run / "power" / "meter_comparison.json").read_text())
    assert fig["meter_crossings"]["count"] == 1
    from reports.rundata import load_run

    ours = load_run(run).train_power.figures["crossings"]
    text = _text(out)
    # main: the card showed ours alone, the meter's crossing only in a section further down
    assert _card(text, "budget crossings") == f"{ours} ours · 1 meter"
    assert re.search(r'class="kpi alert"><div class="label">budget crossings', out.read_text())


def test_duplicated_time_stamps_never_invent_crossings(tmp_path: Path) -> None:
    run = _run(tmp_path)
    # the same instant twice with other readings (two meters in one file): 1400/1600 alternate
    rows = [r for s in range(40, 81) for r in ((T0 + s, 1400.0), (T0 + s, 1600.0))]
    before = sorted(p.name for p in (run / "power").iterdir())
    proc = _report(run, _csv(tmp_path / "two.csv", rows), tmp_path / "r.html")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "appears again (line 2) with another reading" in err[0]
    assert "add an outlet column" in err[0]
    assert sorted(p.name for p in (run / "power").iterdir()) == before  # nothing written

    # the same rows exported twice: dropped, said, and the figures are those of one copy
    once = [(T0 + s, 1450.0) for s in range(40, 81)]
    proc = _report(run, _csv(tmp_path / "twice.csv", once + once), tmp_path / "r2.html")
    assert proc.returncode == 0, proc.stderr
    assert "41 duplicated row(s) dropped" in proc.stderr
    fig = json.loads((run / "power" / "meter_comparison.json").read_text())
    assert fig["samples"] == 21 and fig["meter_crossings"]["count"] == 0
    assert "41 duplicated row(s) dropped" in _text(tmp_path / "r2.html")


def test_a_log_covering_half_the_run_says_so(tmp_path: Path) -> None:
    run = _run(tmp_path)
    rows = [(T0 + s, 1450.0) for s in range(30, 61)]  # ends at 00:01:00, mid-run
    out = tmp_path / "r.html"
    proc = _report(run, _csv(tmp_path / "half.csv", rows), out)
    assert proc.returncode == 0, proc.stderr
    fig = json.loads((run / "power" / "meter_comparison.json").read_text())
    assert fig["covers_fraction"] == pytest.approx(0.5, abs=0.02)
    assert "the meter log covers 50% of the run's power window" in proc.stderr
    text = _text(out)
    assert "part of the run covered" in text and "figures are over that part only" in text


def test_a_sparse_log_spanning_the_run_is_called_sparse(tmp_path: Path) -> None:
    run = _run(tmp_path)
    rows = [(T0 + s, 1450.0) for s in (0, 30, 60, 90, 120)]  # one every 30 s: 1 inside
    proc = _report(run, _csv(tmp_path / "sparse.csv", rows), tmp_path / "r.html")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not overlap" not in proc.stderr  # main: "... does not overlap the run"
    assert "spans the run" in proc.stderr and "1 reading(s) inside it" in proc.stderr
    assert "export readings at a shorter interval" in proc.stderr


def test_an_outlet_that_stops_is_not_held_to_the_end(tmp_path: Path) -> None:
    run = _run(tmp_path)
    rows = [(T0 + s, "A1", 725.0) for s in range(40, 81)]
    rows += [(T0 + s, "A2", 725.0) for s in range(40, 61)]  # A2 stops at 00:01:00
    out = tmp_path / "r.html"
    proc = _report(run, _csv(tmp_path / "outlets.csv", rows, "unix_s,outlet,watts"), out)
    assert proc.returncode == 0, proc.stderr
    fig = json.loads((run / "power" / "meter_comparison.json").read_text())
    # the total is left out once A2 has been silent for 3 of its 1-s intervals (main: 21
    # samples with A2's 725 W held to the end, a meter average of 1450 W)
    assert fig["samples"] == 14 and fig["end_utc"].startswith("2025-01-01T00:01:03")
    assert fig["meter_avg_w"] == pytest.approx(1450.0)
    assert "outlet A2: no reading for more than 3 s" in proc.stderr
    assert "outlet A2: no reading for more than 3 s" in _text(out)
