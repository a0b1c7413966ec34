"""train.tensorboard: a real short run whose event file TensorBoard's own reader reads back,
the same scalars in scalars.csv, and a missing package as one line."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_harness

SMOKE = str(ROOT / "jobs/smoke.yaml")


def test_tensorboard_events_hold_the_runs_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path / "runs"),
                       "--set", "train.tensorboard=true", "--set", "eval.metrics=[is,psnr]",
                       "--set", "power.enabled=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = (tmp_path / "runs" / "smoke-latest").resolve()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    val = [r for r in records if r["kind"] == "val"]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/total", "loss/pixel", "lr", "images_per_s", "val/is", "val/psnr",
            "power/cluster_w", "power/caps_w", "power/j_per_image"} <= tags
    loss = {e.step: e.value for e in acc.Scalars("loss/total")}
    assert sorted(loss) == [1, 2, 3, 4]  # every step (log_every 1 in the smoke job)
    for step, value in loss.items():  # float32 in the event file
        assert value == pytest.approx(train[step]["loss"]["total"], rel=1e-6)
    (final_is,) = acc.Scalars("val/is")
    assert final_is.step == val[-1]["step"] == 4
    assert final_is.value == pytest.approx(val[-1]["val_is"], rel=1e-6)
    assert all(e.value > 0 for e in acc.Scalars("power/cluster_w"))
    with (run / "scalars.csv").open() as f:
        rows = list(csv.DictReader(f))
    csv_loss = {int(r["step"]): float(r["value"]) for r in rows if r["tag"] == "loss/total"}
    assert csv_loss == {s: train[s]["loss"]["total"] for s in csv_loss} and len(csv_loss) == 4
    assert {r["tag"] for r in rows} == tags


def test_tensorboard_missing_is_one_line(tmp_path: Path) -> None:
    stub = tmp_path / "stub" / "tensorboard"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "stub"))
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path / "runs"),
                       "--set", "train.tensorboard=true", env=env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "tensorboard" in ln]
    assert len(lines) == 1 and "pip install tensorboard" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
