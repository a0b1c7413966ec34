"""train.ema: the shadow weights' arithmetic, and a real run that validates, checkpoints and
resumes with them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.training.ema import Ema, make_ema
from tests.conftest import ROOT, run_harness

SMOKE = str(ROOT / "jobs/smoke.yaml")


def test_ema_update_is_the_decayed_average() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = Ema(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 1.2))  # 0.9*1 + 0.1*3
    assert not ema.model.weight.requires_grad
    assert make_ema(model, 0.0) is None


def test_ema_decay_out_of_range_is_a_user_error() -> None:
    from harness.config import load_job

    with pytest.raises(Exception, match="ema"):
        load_job(SMOKE, ["train.ema=1.5"])


def _run(parent: Path, *extra: str):
    return run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(parent), *extra)


def test_ema_run_checkpoints_validates_and_resumes_with_shadow_weights(tmp_path: Path) -> None:
    proc = _run(tmp_path / "runs", "--set", "train.ema=0.5", "--set", "eval.metrics=[is,psnr]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.is_symlink())
    last = torch.load(run / "checkpoints" / "ckpt-000004.pt", weights_only=True)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert "ema" in last
    assert best["step"] == 4
    differs = [k for k in last["ema"] if not torch.equal(last["ema"][k], last["model"][k])]
    assert differs, "the EMA weights equal the raw weights"
    for k, v in last["ema"].items():  # best.pt (what infer loads) holds the EMA weights
        assert torch.equal(best["model"][k], v), k
    # resume: the shadow continues from the checkpoint, not from the raw weights
    proc = _run(tmp_path / "runs", "--resume", str(run), "--set", "train.ema=0.5",
                "--set", "train.steps=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(run / "checkpoints" / "ckpt-000006.pt", weights_only=True)
    assert "ema" in resumed


def test_ema_off_checkpoints_have_no_shadow(tmp_path: Path) -> None:
    proc = _run(tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir() and not p.is_symlink())
    assert "ema" not in torch.load(run / "checkpoints" / "ckpt-000004.pt", weights_only=True)
