"""Careless-user cases found in hostile round 4's last pass: each is one line, exit 2, nothing
started or written."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, run_harness


@pytest.mark.parametrize("target", ["missing", "file", "folder"])
def test_launch_resume_of_a_wrong_path_is_refused_before_mpirun(tmp_path: Path,
                                                                target: str) -> None:
    path = tmp_path / "nothing-here"
    if target == "file":
        path = tmp_path / "weights.pt"
        path.write_bytes(b"not a checkpoint")
    elif target == "folder":
        path = tmp_path / "folder"
        path.mkdir()
    proc = run_harness("launch", str(ROOT / "jobs/smoke.yaml"), "--resume", str(path),
                       "--set", f"launch.run_dir={tmp_path / 'runs'}", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"harness: error: --resume {path}: "), lines
    assert "mpirun" not in proc.stdout + proc.stderr  # no launch line printed, no rank started
    assert not (tmp_path / "runs").exists()


def test_power_sweep_out_into_a_training_run_or_a_file_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "smoke-20261205-120000"
    run.mkdir()
    for name in ("job.yaml", "manifest.json", "summary.json", "train.log"):
        (run / name).write_text("kept\n")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept\n")
    sweep = ["power-sweep", "--job", str(ROOT / "jobs/smoke.yaml"), "--quiet",
             "--set", "power.backend=simulated", "--limits", "200,300"]
    for out, said in ((run, "holds other files (job.yaml, manifest.json, summary.json, "
                            "train.log) and no sweep.json to resume"),
                     (a_file, "is a file, not a folder")):
        proc = run_harness(*sweep, "--out", str(out), timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip() == f"harness: error: --out {out}: {said}" + (
            "; give a new or empty folder for the sweep" if out == run
            else "; give a new folder for the sweep (it is created)")
    assert sorted(p.name for p in run.iterdir()) == ["job.yaml", "manifest.json",
                                                      "summary.json", "train.log"]
    assert a_file.read_text() == "kept\n"
    # A new folder is fine, and the same folder again resumes the sweep.
    for _ in range(2):
        proc = run_harness(*sweep, "--out", str(tmp_path / "sweep"), timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "sweep" / "sweep.json").is_file()
