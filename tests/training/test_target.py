"""train.target_is / train.stop_at_target: the energy integral, the config checks, and real
runs that reach a target (stop, checkpoint, resume keeps it) and one that does not."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.training.target import TargetHit, reaches, target_summary
from power.cluster_series import ClusterSeries, Segment
from tests.conftest import ROOT, run_harness, run_mpi

SMOKE = str(ROOT / "jobs/smoke.yaml")


def _seg(t0: float, t1: float, watts: float) -> Segment:
    return Segment(t0, t1, "restore", (t0, t1), (watts, watts), {}, watts * (t1 - t0))


def test_energy_until_integrates_the_windows_up_to_the_moment() -> None:
    series = ClusterSeries((_seg(100.0, 110.0, 200.0), _seg(200.0, 210.0, 300.0)), ("n0",))
    assert series.energy_until(104.0) == pytest.approx(800.0)
    assert series.energy_until(150.0) == pytest.approx(2000.0)  # between the attempts
    assert series.energy_until(205.0) == pytest.approx(2000.0 + 1500.0)
    assert series.energy_until(999.0) == pytest.approx(5000.0)
    assert series.energy_until(50.0) is None  # before any governed window
    ramp = ClusterSeries((Segment(0.0, 10.0, "restore", (0.0, 10.0), (0.0, 100.0), {}, 500.0),),
                         ("n0",))
    assert ramp.energy_until(5.0) == pytest.approx(125.0)  # half the ramp: 0..50 W over 5 s


def test_reaches_and_the_summary_forms() -> None:
    assert reaches(0.5, 0.5) and not reaches(0.5, 0.49) and not reaches(0.0, 0.9)
    assert not reaches(0.5, None) and not reaches(0.5, math.nan)
    missed = target_summary(0.9, None, 0.61, None)
    assert missed["reached"] is False and missed["best_is"] == 0.61 and missed["step"] is None
    hit = TargetHit(val_is=0.7, step=40, time_s=12.5, unix_s=1.0)
    off = target_summary(0.6, hit, 0.7, None)
    assert (off["is"], off["step"], off["time_s"], off["energy_j"]) == (0.7, 40, 12.5, None)
    assert "power.enabled" in off["energy_note"]
    assert TargetHit.from_dict(hit.to_dict()) == hit


@pytest.mark.parametrize(("sets", "key"), [(["train.target_is=1.5"], "target_is"),
                                           (["train.stop_at_target=true"], "stop_at_target")])
def test_bad_target_settings_name_the_key(sets: list[str], key: str) -> None:
    from harness.config import load_job

    with pytest.raises(Exception, match=key):
        load_job(SMOKE, sets)


def _train(parent: Path, *sets: str):
    args = ["train", "--job", SMOKE, "--quiet", "--run-dir", str(parent),
            "--set", "eval.metrics=[is,psnr]", "--set", "power.enabled=true"]
    for s in sets:
        args += ["--set", s]
    return run_harness(*args)


def test_stop_at_target_records_time_and_energy_and_resume_keeps_it(tmp_path: Path) -> None:
    parent = tmp_path / "runs"
    # The smoke model's first validation scores ~0.6 on the embedded held-out pairs.
    proc = _train(parent, "train.target_is=0.05", "train.stop_at_target=true",
                  "train.val_every=2", "train.steps=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = (parent / "smoke-latest").resolve()
    s = json.loads((run / "summary.json").read_text())
    t = s["target"]
    assert t["reached"] is True and t["step"] == 2 and s["steps"] == 2
    assert s["stopped_by"] == "train.target_is"
    assert t["is"] == s["best_val_is"] >= 0.05
    assert 0 < t["time_s"] <= s["train_time_s"] + 1e-6
    assert 0 < t["energy_j"] <= s["power"]["energy_j"]
    assert "target IS 0.05 reached at step 2" in (run / "train.log").read_text()
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
           if '"val"' in line]
    assert [v["step"] for v in val] == [2]  # no second validation of the same step
    ckpt = torch.load(run / "checkpoints" / "ckpt-000002.pt", weights_only=True)
    assert ckpt["target"]["step"] == 2
    # A resume (stop still on) trains on past its validations and keeps the first hit.
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--resume", str(run),
                       "--set", "eval.metrics=[is,psnr]", "--set", "power.enabled=true",
                       "--set", "train.target_is=0.05", "--set", "train.stop_at_target=true",
                       "--set", "train.val_every=1", "--set", "train.steps=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s2 = json.loads((run / "summary.json").read_text())
    assert s2["steps"] == 4
    assert (s2["target"]["step"], s2["target"]["time_s"]) == (2, t["time_s"])
    assert s2["target"]["energy_j"] == pytest.approx(t["energy_j"], rel=1e-6)


def test_a_target_not_reached_says_so_with_the_best_is(tmp_path: Path) -> None:
    proc = _train(tmp_path / "runs", "train.target_is=0.999", "power.enabled=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "runs" / "smoke-latest" / "summary.json").read_text())
    assert s["target"]["reached"] is False
    assert s["target"]["best_is"] == s["best_val_is"] is not None
    assert s["target"]["energy_j"] is None and s["steps"] == 4


@pytest.mark.mpi
def test_stop_at_target_stops_every_rank_in_sync(mpirun: str, tmp_path: Path) -> None:
    proc = run_mpi(mpirun, 2, ["-m", "harness.train", "--job", SMOKE, "--quiet", "--run-dir",
                               str(tmp_path / "runs"), "--set", "eval.metrics=[is,psnr]",
                               "--set", "train.target_is=0.05", "--set",
                               "train.stop_at_target=true", "--set", "train.val_every=2",
                               "--set", "train.steps=8"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "runs" / "smoke-latest" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 2 and s["replicas_in_sync"]
    assert s["target"]["step"] == 2 and s["target"]["energy_j"] is None
    assert "power.enabled" in s["target"]["energy_note"]
