"""No command writes over a run's own files or a user's input file (issue #22, family 3)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.conftest import run_harness


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "demo-20260101-000000"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"job": "demo", "steps": 1}))
    (run / "manifest.json").write_text(json.dumps({"job": "demo"}))
    (run / "job.yaml").write_text("name: demo\n")
    return run


def test_report_never_replaces_a_runs_own_file(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    before = _digest(run / "summary.json")
    proc = run_harness("report", str(run), "-o", str(run / "summary.json"), "--overwrite")
    assert proc.returncode == 2, proc.stderr
    assert "is a file of the run" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _digest(run / "summary.json") == before
    # a report beside the run's files is fine, and may be replaced by the next report
    ok = run_harness("report", str(run), "-o", str(run / "report.html"))
    assert ok.returncode == 0, ok.stderr
    again = run_harness("report", str(run), "-o", str(run / "report.html"))
    assert again.returncode == 0, again.stderr


def test_sim_state_that_is_not_ours_is_never_written(tmp_path: Path) -> None:
    from tests.conftest import ROOT

    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}\n')
    before = _digest(mine)
    proc = run_harness("power-sweep", "--job", str(ROOT / "jobs" / "smoke.yaml"),
                       "--set", "power.backend=simulated", "--limits", "200,300",
                       "--steps", "1", "--warmup-steps", "0", "--warmup-s", "0",
                       "--sim-state", str(mine), "--out", str(tmp_path / "sweep"), "--no-plan",
                       "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "not a simulated-GPU state file" in proc.stderr and "Traceback" not in proc.stderr
    assert _digest(mine) == before
