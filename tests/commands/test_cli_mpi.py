"""The scoring and packing commands under a real ``mpirun -np 2`` equal one process."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_harness, run_mpi

HR = ROOT / "data/asc19-val/val_HR"
LR = ROOT / "data/asc19-val/val_LR"


def _subset(tmp_path: Path, n: int) -> tuple[Path, Path, Path]:
    hr, lr, sr = tmp_path / "hr", tmp_path / "lr", tmp_path / "sr"
    for d in (hr, lr, sr):
        d.mkdir()
    for p in sorted(HR.iterdir())[:n]:
        shutil.copy(p, hr / p.name)
        shutil.copy(LR / p.name, lr / p.name)
        up = Image.open(LR / p.name).resize((96, 112), Image.Resampling.NEAREST)
        up.save(sr / p.name)
    return hr, lr, sr


@pytest.mark.mpi
def test_evaluate_two_ranks_equals_one_process(mpirun: str, tmp_path: Path) -> None:
    hr, lr, sr = _subset(tmp_path, 9)
    args = ["--hr", str(hr), "--sr", str(sr), "--lr", str(lr), "--metrics", "psnr,ssim,rmse"]
    one = run_harness("evaluate", *args, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_mpi(mpirun, 2, ["-m", "harness", "evaluate", *args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "scores.json").read_text())
    b = json.loads((tmp_path / "two" / "scores.json").read_text())
    assert a["summary"] == b["summary"]
    assert [r["name"] for r in b["per_image"]] == [p.stem for p in sorted(hr.iterdir())]
    assert a["per_image"] == b["per_image"]
    # mpirun gives ranks a pseudo-terminal: the table must still reach the log as plain text
    assert "PSNR" in two.stdout and "\x1b[" not in two.stdout
    assert (tmp_path / "two" / "per_image.csv").read_text() == \
        (tmp_path / "one" / "per_image.csv").read_text()
    # nearest-neighbour upscaling is worse than bicubic in PSNR
    m = a["summary"]["metrics"]
    assert m["psnr"]["mean"] < m["psnr_bicubic"]["mean"]


@pytest.mark.mpi
def test_prepare_two_ranks_then_train_on_the_shards(mpirun: str, tmp_path: Path) -> None:
    src = tmp_path / "faces" / "sub"
    src.mkdir(parents=True)
    # Training faces only: the held-out ones (every 5th) are the run's validation faces.
    for p in [p for i, p in enumerate(sorted(HR.iterdir())) if i % 5 != 4][:10]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "packed"
    proc = run_mpi(mpirun, 2, ["-m", "harness", "prepare", str(tmp_path / "faces"), "--out",
                               str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 10 and index["kernel"] == "matlab_bicubic"
    from harness.data.shards import PackedPairs

    packed = PackedPairs(out)
    lr, hr = packed[0]
    assert hr.shape == (112, 96, 3) and lr.shape == (28, 24, 3)
    # 96x112 inputs pass through unchanged, and matlab_bicubic reproduces the organiser's LR
    assert np.array_equal(hr, np.asarray(Image.open(HR / "301.png").convert("RGB")))
    assert np.array_equal(lr, np.asarray(Image.open(LR / "301.png").convert("RGB")))
    proc = run_harness("train", "--job", str(ROOT / "jobs/smoke.yaml"), "--quiet", "--run-dir",
                       str(tmp_path / "runs"), "--set", f"data.train={out}",
                       "--set", "train.steps=2")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_prepare_fingerprint_names_the_organisers_kernel() -> None:
    proc = run_harness("prepare", "--fingerprint", "--hr", str(HR), "--lr", str(LR),
                       "--limit", "40")
    assert proc.returncode == 0, proc.stderr
    assert "best match: matlab_bicubic" in proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if "pil_bicubic" in ln]
    assert rows and float(rows[0].split("│")[2]) < 0.5


def test_evaluate_missing_sr_names(tmp_path: Path) -> None:
    hr, lr, sr = _subset(tmp_path, 5)
    (sr / "302.png").unlink()
    (sr / "304.png").unlink()
    proc = run_harness("evaluate", "--hr", str(hr), "--sr", str(sr), "--metrics", "psnr")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "2" in lines[0] and "302" in lines[0] and "304" in lines[0]


def test_evaluate_refuses_pi() -> None:
    proc = run_harness("evaluate", "--hr", str(HR), "--sr", str(HR), "--metrics", "is,pi")
    assert proc.returncode == 2
    assert "Ma et al." in proc.stderr


@pytest.mark.slow
def test_evaluate_cli_bicubic_is_on_all_300_pairs(tmp_path: Path) -> None:
    """`harness evaluate` with PIL-bicubic-upscaled LR as SR: the known IS of 0.650."""
    sr = tmp_path / "sr"
    sr.mkdir()
    for p in sorted(LR.iterdir()):
        Image.open(p).convert("RGB").resize((96, 112), Image.Resampling.BICUBIC).save(sr / p.name)
    proc = run_harness("evaluate", "--hr", str(HR), "--sr", str(sr), "--metrics", "is",
                       "--out", str(tmp_path / "out"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "scores.json").read_text())["summary"]
    assert summary["count"] == 300
    assert summary["metrics"]["is"]["mean"] == pytest.approx(0.650, abs=0.01)
    assert summary["metrics"]["is"]["median"] == pytest.approx(0.664, abs=0.01)
