"""Training and inference end to end: real processes, real mpirun, real files."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fileio.run_files import read_metrics
from tests.conftest import ROOT, run_harness, run_mpi

SMOKE = str(ROOT / "jobs/smoke.yaml")


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"]["total"] for r in read_metrics(run_dir / "metrics.jsonl")
            if r["kind"] == "train"}


def _only_run(parent: Path) -> Path:
    runs = [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    latest = parent / f"{runs[0].name.split('-')[0]}-latest"
    assert latest.is_symlink() and latest.resolve() == runs[0].resolve()
    return runs[0]


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [1, 2])
def test_power_figures_count_the_images_really_processed(mpirun: str, tmp_path: Path,
                                                         ranks: int) -> None:
    """images/s/W and J/image come from the images trained on, however many ranks share them."""
    proc = run_mpi(mpirun, ranks, ["-m", "harness.train", "--job", SMOKE, "--quiet",
                                   "--run-dir", str(tmp_path), "--set", "train.steps=3",
                                   "--set", "power.enabled=true"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((_only_run(tmp_path) / "summary.json").read_text())
    p = summary["power"]
    assert summary["images"] == 3 * 4  # 3 steps of the global batch of 4
    assert p["images"] == summary["images"]
    assert p["j_per_image"] == pytest.approx(p["energy_j"] / summary["images"], rel=1e-6)
    assert p["j_per_image"] > 0


@pytest.mark.mpi
def test_two_ranks_stay_in_sync_and_resume_is_exact(mpirun: str, tmp_path: Path) -> None:
    base = ["-m", "harness.train", "--job", SMOKE, "--quiet", "--set", "train.steps=6",
            "--set", "data.augment.shift_px=1"]
    straight = tmp_path / "straight"
    proc = run_mpi(mpirun, 2, base + ["--run-dir", str(straight)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_a = _only_run(straight)
    summary = json.loads((run_a / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert summary["replicas_in_sync"] is True
    assert len(summary["param_checksums"]) == 2

    split = tmp_path / "split"
    proc = run_mpi(mpirun, 2, base + ["--run-dir", str(split), "--stop-after", "3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_b = _only_run(split)
    assert (run_b / "checkpoints" / "ckpt-000003.pt").is_file()
    proc = run_mpi(mpirun, 2, base + ["--resume", str(run_b)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _train_losses(run_a), _train_losses(run_b)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert b[step] == pytest.approx(a[step], abs=1e-5), (step, a, b)
    summary_b = json.loads((run_b / "summary.json").read_text())
    assert summary_b["param_checksums"] == summary["param_checksums"]


@pytest.mark.mpi
def test_inference_identical_for_one_and_two_ranks(mpirun: str, tmp_path: Path) -> None:
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = _only_run(tmp_path / "runs") / "checkpoints" / "ckpt-000004.pt"
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for name in sorted(os.listdir(ROOT / "data/asc19-val/val_LR"))[:13]:
        shutil.copy(ROOT / "data/asc19-val/val_LR" / name, lr_dir / name)
    common = ["-m", "harness.infer", "--job", SMOKE, "--lr", str(lr_dir), "--checkpoint",
              str(ckpt), "--quiet", "--set", "infer.batch_size=4"]
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"sr{n}"
        proc = run_mpi(mpirun, n, common + ["--out", str(out)])
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[n] = out
    names = sorted(os.listdir(outs[1]))
    assert names == sorted(os.listdir(lr_dir)) and len(names) == 13
    assert names == sorted(os.listdir(outs[2]))
    for name in names:
        a = np.asarray(Image.open(outs[1] / name))
        b = np.asarray(Image.open(outs[2] / name))
        assert a.shape == (112, 96, 3)
        assert np.array_equal(a, b), name


def _run_train(tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    return run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path / "runs"),
                       *extra, env=env)


def _one_error_line(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("harness")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.mpi
def test_batch_not_divisible_by_ranks(mpirun: str, tmp_path: Path) -> None:
    proc = run_mpi(mpirun, 2, ["-m", "harness.train", "--job", SMOKE, "--quiet", "--run-dir",
                               str(tmp_path), "--set", "train.batch_size=3"])
    assert proc.returncode == 2
    assert "train.batch_size 3 cannot be split across 2 ranks" in proc.stderr
    assert "Traceback" not in proc.stderr


def _pairs_folder(tmp_path: Path, n: int) -> Path:
    root = tmp_path / "pairs"
    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir()
    for name in sorted(os.listdir(ROOT / "data/asc19-val/val_HR"))[:n]:
        shutil.copy(ROOT / "data/asc19-val/val_HR" / name, root / "HR" / name)
        shutil.copy(ROOT / "data/asc19-val/val_LR" / name, root / "LR" / name)
    return root


@pytest.mark.mpi
def test_more_ranks_than_images(mpirun: str, tmp_path: Path) -> None:
    root = _pairs_folder(tmp_path, 1)
    proc = run_mpi(mpirun, 2, ["-m", "harness.train", "--job", SMOKE, "--quiet", "--run-dir",
                               str(tmp_path), "--set", f"data.train={root}",
                               "--set", "train.batch_size=2"])
    assert proc.returncode == 2
    assert "2 ranks but only 1 training pairs" in proc.stderr


def test_empty_data_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_error_line(_run_train(tmp_path, "--set", f"data.train={empty}"))
    assert f"{empty}: no image files" in line


def test_corrupt_training_image_is_named(tmp_path: Path) -> None:
    root = _pairs_folder(tmp_path, 4)
    (root / "HR" / "302.png").write_bytes(b"not a png at all")
    line = _one_error_line(_run_train(tmp_path, "--set", f"data.train={root}"))
    assert "302.png: cannot read as an image" in line


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    env = dict(os.environ, HARNESS_FAULT_NAN_STEP="3")
    proc = _run_train(tmp_path, "--set", "train.ckpt_every=2", env=env)
    line = _one_error_line(proc)
    assert proc.returncode == 3
    run = _only_run(tmp_path / "runs")
    good = run / "checkpoints" / "ckpt-000002.pt"
    assert f"loss became non-finite at step 3; last good checkpoint: {good}" in line
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert files == ["ckpt-000002.pt"]  # nothing half-written, nothing after the NaN
    import torch

    state = torch.load(good, weights_only=True)
    assert state["step"] == 2


def test_untrainable_and_unknown_model_args(tmp_path: Path) -> None:
    line = _one_error_line(_run_train(tmp_path, "--set", "model.args={nonsense: 3}"))
    assert "model.args:" in line and "nonsense" in line


def test_init_from_loads_generator_weights(tmp_path: Path) -> None:
    import torch

    from harness.config import load_job
    from harness.model.generators import (
        build_generator,
        load_initial_weights,
        model_kwargs,
        resolve_init_from,
    )

    job = load_job(SMOKE)
    torch.manual_seed(1)
    source = build_generator("srresnet", model_kwargs(job.model))
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5)  # the zero-initialised tail would otherwise match any fresh model
    path = tmp_path / "src.pt"
    torch.save({"model": source.state_dict(), "model_name": "srresnet",
                "model_kwargs": model_kwargs(job.model)}, path)
    job = load_job(SMOKE, [f"model.init_from={path}"])
    torch.manual_seed(2)
    target = build_generator("srresnet", model_kwargs(job.model))
    assert resolve_init_from(job.model) == path
    load_initial_weights(target, job.model, path)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_init_from_runs_and_refuses_other_architectures(tmp_path: Path) -> None:
    assert _run_train(tmp_path).returncode == 0
    ckpt_file = _only_run(tmp_path / "runs") / "checkpoints" / "ckpt-000004.pt"
    proc = _run_train(tmp_path / "b", "--set", f"model.init_from={ckpt_file}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"generator initialised from {ckpt_file}" in proc.stderr
    line = _one_error_line(_run_train(tmp_path / "c", "--set", f"model.init_from={ckpt_file}",
                                      "--set", "model.args={num_feat: 16, num_blocks: 1}"))
    assert "model.init_from:" in line and "num_feat': 8" in line
    line = _one_error_line(_run_train(tmp_path / "d", "--set", "model.init_from=shipped"))
    assert "model.init_from: no shipped weights for srresnet" in line
    line = _one_error_line(_run_train(tmp_path / "e", "--set", "model.init_from=nope.pt"))
    assert "model.init_from: nope.pt: no such checkpoint file" in line
    assert not (tmp_path / "e" / "runs").exists()  # refused before any run folder is made


@pytest.mark.mpi
def test_sigusr1_checkpoints_stops_cleanly_and_resumes(mpirun: str, tmp_path: Path) -> None:
    """What Slurm's `--signal=USR1@lead` does to a run: checkpoint, exit 0, resumable."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import mpi_env

    cmd = [mpirun, "-np", "2", "--bind-to", "none", sys.executable, "-m", "harness.train",
           "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path), "--set", "train.steps=100000",
           "--set", "train.ckpt_every=0"]
    proc = subprocess.Popen(cmd, env=mpi_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics = list(tmp_path.glob("smoke-*/metrics.jsonl"))
            if metrics and metrics[0].stat().st_size > 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("training never logged a step")
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    run = _only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGUSR1" and summary["stopped_early"] is True
    step = summary["steps"]
    assert 0 < step < 100000
    assert (run / "checkpoints" / f"ckpt-{step:06d}.pt").is_file()
    assert "--resume" in err
    resumed = run_mpi(mpirun, 2, ["-m", "harness.train", "--job", SMOKE, "--quiet", "--resume",
                                  str(run), "--set", "train.steps=100000", "--stop-after",
                                  str(step + 2)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_train_losses(run))[-1] == step + 2


def test_resumed_run_reports_whole_run_power(tmp_path: Path) -> None:
    """After --resume the power figures cover both segments, not only the last."""
    base = ["train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path), "--set",
            "train.steps=4", "--set", "power.enabled=true"]
    first = run_harness(*base, "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    run = _only_run(tmp_path)
    part = json.loads((run / "summary.json").read_text())["power"]
    again = run_harness(*base, "--resume", str(run))
    assert again.returncode == 0, again.stderr[-2000:]
    whole = json.loads((run / "summary.json").read_text())["power"]
    assert part["images"] == 2 * 4 and whole["images"] == 4 * 4
    assert whole["energy_j"] > part["energy_j"] and whole["segments"] == 2
    assert whole["j_per_image"] == pytest.approx(whole["energy_j"] / 16, rel=1e-9)
    assert whole["peak_cluster_w"] >= part["peak_cluster_w"]


def test_out_of_time_ends_the_run_and_says_so(tmp_path: Path) -> None:
    """train.max_minutes ends a run early like a finished one (validated, checkpointed), says
    which limit and where to resume, and --resume takes it to the planned end."""
    base = ["train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path), "--set",
            "train.steps=50"]
    proc = run_harness(*base, "--set", "train.max_minutes=0.0001")  # 6 ms: one step
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["interrupted"] is False
    assert summary["stopped_by"] == "train.max_minutes (0.0001)"
    step = summary["steps"]
    assert 0 < step < 50
    assert (run / "checkpoints" / f"ckpt-{step:06d}.pt").is_file()
    assert f"reached train.max_minutes (0.0001) after step {step} of 50" in proc.stderr
    assert f"--resume {run}" in proc.stderr
    resumed = run_harness("train", "--job", SMOKE, "--quiet", "--resume", str(run),
                          "--set", "train.steps=50")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 50
    assert "reached" not in resumed.stderr
