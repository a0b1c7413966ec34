"""A real training run holding the wall through a model made by ``harness power-calibrate``."""
from __future__ import annotations

import json
from pathlib import Path

from power.pdu import read_pdu_csv
from power.wall_model import load_wall_model
from tests.conftest import ROOT, run_harness

SMOKE = str(ROOT / "jobs/smoke.yaml")
PDU = ["--set", "power.enabled=true", "--set", "power.sim_pdu=true"]


def test_training_run_holds_the_wall_with_a_calibrated_model(tmp_path: Path) -> None:
    model_path = tmp_path / "wall.json"
    cal = run_harness("power-calibrate", "--job", SMOKE, *PDU, "--out", str(model_path))
    assert cal.returncode == 0, cal.stderr[-2000:]
    model = load_wall_model(model_path)
    runs = tmp_path / "runs"
    done = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(runs), *PDU,
                       "--set", f"power.wall_model={model_path}", "--set", "train.steps=250")
    assert done.returncode == 0, done.stderr[-3000:]
    run = next(p for p in runs.iterdir() if p.is_dir() and not p.is_symlink())
    wall = json.loads((run / "summary.json").read_text())["power"]["wall"]
    rows = read_pdu_csv(run / "power" / "pdu.csv")
    assert wall["samples"] == len(rows) >= 1
    assert wall["peak_w"] == max(r.wall_w for r in rows) <= 3000.0
    held = wall["model"]
    assert held["source"] == "calibrated model" and held["file"] == str(model_path)
    assert held["fit"] == model.to_dict()  # the file the job named, as fitted


def test_training_refuses_a_bad_wall_model_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "wall.json"
    bad.write_text('{"kind": "facesr-wall-model", "version": 1, "gpu_coef": "x"}')
    runs = tmp_path / "runs"
    for path in (bad, tmp_path / "missing.json"):
        done = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(runs), *PDU,
                           "--set", f"power.wall_model={path}", "--set", "train.steps=2")
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "power.wall_model" in lines[0] and str(path) in lines[0]
        assert "Traceback" not in done.stderr
    assert not runs.exists() or not any(runs.iterdir())
