"""``harness check-power``: the verdict line and exit codes on real PDU logs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from power.pdu import PduCsv, WallReading


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "check-power", *args],
                          capture_output=True, text=True, timeout=120)


def _write_run(tmp_path: Path, watts: list[float]) -> Path:
    run = tmp_path / "run"
    log = PduCsv(run / "power" / "pdu.csv")
    for i, w in enumerate(watts):
        log.write(WallReading(1764916800.0 + i, w))
    log.close()
    (run / "summary.json").write_text(json.dumps({"power": {"budget_w": 3000.0}}))
    return run


def test_compliant_run_exits_0_with_one_line(tmp_path: Path) -> None:
    run = _write_run(tmp_path, [2900.0, 2950.0, 2999.0])
    done = _run(str(run))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compliant: 3 wall readings, peak 2999 W <= budget 3000 W")
    assert len(done.stdout.splitlines()) == 1


def test_crossings_exit_1_with_utc_times_and_lengths(tmp_path: Path) -> None:
    run = _write_run(tmp_path, [2900.0, 3100.0, 3050.0, 2900.0, 3200.0])
    done = _run(str(run))
    assert done.returncode == 1
    assert "2 crossing(s)" in done.stdout
    assert "2025-12-05T06:40:00.000Z for 2 s (peak 3100 W)" in done.stdout
    assert "2025-12-05T06:40:03.000Z for 1 s (peak 3200 W)" in done.stdout


def test_user_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    done = _run(str(tmp_path / "missing"))
    assert done.returncode == 2 and "no such run folder" in done.stderr
    assert "Traceback" not in done.stderr
    run = _write_run(tmp_path, [2900.0])
    bad = tmp_path / "bad.csv"
    bad.write_text("unix_s,utc,wall_w\n1764916800,x,abc\n")
    done = _run(str(run), "--meter", str(bad))
    assert done.returncode == 2 and "bad.csv:2" in done.stderr
    assert "Traceback" not in done.stderr
