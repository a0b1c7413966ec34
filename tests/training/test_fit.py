"""train.fit_to_minutes: the plan (pure) and real runs that must fit their steps to a tiny
train.max_minutes, finish the fitted schedule, record it, and keep it on --resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fileio.run_files import read_metrics
from harness.config import TrainConfig
from harness.training.fit import FitPlan, apply_plan, fit_plan, plan_message
from tests.conftest import ROOT, run_harness

SMOKE = str(ROOT / "jobs/smoke.yaml")
# 20000 steps never fit in 12 s; a wide margin because the 2 cores are shared (noisy).
FIT = ["--set", "train.steps=20000", "--set", "train.max_minutes=0.2", "--set",
       "train.fit_to_minutes=true", "--set", "train.fit_margin=0.35", "--set",
       "train.val_every=5000", "--set", "train.ckpt_every=5000", "--set", "train.log_every=1"]


def _plan(**kw: float) -> FitPlan:
    t = TrainConfig(steps=500, val_every=100, ckpt_every=100, warmup_steps=20, max_minutes=8)
    args = {"done": 7, "elapsed_s": 20.0, "step_s": 1 / 0.6, "validation_s": 5.0,
            "checkpoint_s": 0.1, "budget_s": 480.0, "limit": "train.max_minutes (8)", **kw}
    return fit_plan(t, **args)


def test_plan_lowers_steps_and_scales_cadence_to_the_time_left() -> None:
    plan = _plan()
    # 480 s less the 10 % margin, 20 s spent, 5 validations and 5 checkpoints still to come.
    left = int((480 * 0.9 - 20 - 5 * 5.0 - 5 * 0.1) * 0.6)
    assert plan.lowered
    assert plan.fitted_steps == 7 + left
    assert plan.planned_steps == 500 and plan.at_step == 7
    assert plan.val_every == plan.ckpt_every == -(-100 * plan.fitted_steps // 500)
    assert (plan.fitted_steps - 1) // plan.val_every <= 4  # no more validations than planned
    assert plan.warmup_steps == 20  # a warm-up within a quarter of the fitted steps stays
    t = apply_plan(TrainConfig(steps=500, val_every=100, ckpt_every=100, warmup_steps=20), plan)
    assert (t.steps, t.val_every, t.ckpt_every) == (plan.fitted_steps, plan.val_every,
                                                    plan.ckpt_every)
    assert plan_message(plan) == (
        f"this machine runs 0.6 steps/s: 500 steps would take 14 min > "
        f"train.max_minutes 8; training {plan.fitted_steps} steps instead (schedule over "
        f"{plan.fitted_steps}, val_every 100 -> {plan.val_every}, ckpt_every 100 -> "
        f"{plan.ckpt_every})")
    assert FitPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_plan_keeps_steps_that_fit_and_shortens_a_long_warmup() -> None:
    fast = _plan(step_s=0.1)
    assert not fast.lowered and fast.fitted_steps == 500 and fast.val_every == 100
    assert plan_message(fast).endswith("within train.max_minutes 8; training all 500")
    slow = _plan(step_s=10.0)  # 45 steps fit: a 20-step warm-up is a quarter of them at most
    assert slow.fitted_steps == 45 and slow.warmup_steps == slow.fitted_steps // 4
    hopeless = _plan(step_s=1000.0)
    assert hopeless.fitted_steps == 8  # at least one more step; the deadline does the rest


def _run_dir(parent: Path) -> Path:
    return (parent / "smoke-latest").resolve()


def test_tiny_time_limit_fits_steps_and_finishes_the_schedule(tmp_path: Path) -> None:
    """A real run whose planned steps cannot fit: it trains the fitted steps to the end of
    the cosine, within train.max_minutes, and says and records so."""
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path), *FIT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run_dir(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    fit = summary["fit"]
    assert fit["lowered"] is True and fit["planned_steps"] == 20000
    fitted = fit["fitted_steps"]
    assert 7 <= fit["at_step"] < fitted < 20000
    assert ("steps/s: 20000 steps would take" in proc.stderr
            and f"> train.max_minutes 0.2; training {fitted} steps instead" in proc.stderr)
    # Finished the fitted schedule, on time, like a run that ran every step.
    assert summary["steps"] == summary["target_steps"] == fitted
    assert summary["planned_steps"] == 20000
    assert summary["stopped_early"] is False and summary["stopped_by"] is None
    assert summary["train_time_s"] < 12
    train = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["step"] == fitted
    assert train[-1]["lr"] < 1e-3 * 1e-3  # the cosine ended: ~0 of the 1e-3 peak
    assert train[len(train) // 2]["lr"] > 1e-3 * 0.2  # and it was scaled, not cut short
    assert json.loads((run / "manifest.json").read_text())["fit"] == fit
    vals = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "val"]
    assert vals[-1] == fitted and len(vals) <= 4  # 3 scaled intermediate + the final
    assert (run / "checkpoints" / f"ckpt-{fitted:06d}.pt").is_file()


def _stop_once_fitted(tmp_path: Path) -> tuple[Path, dict]:
    """Train with FIT and SIGTERM the run as soon as its manifest records the fitted plan (a
    fixed ``--stop-after`` came before the fit on a fast CPU): it checkpoints and stops."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "train", "--job", SMOKE,
                             "--quiet", "--run-dir", str(tmp_path), *FIT], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fit = None
    try:
        deadline = time.monotonic() + 120
        while fit is None and proc.poll() is None and time.monotonic() < deadline:
            manifest = tmp_path / "smoke-latest" / "manifest.json"
            try:
                fit = json.loads(manifest.read_text()).get("fit")
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and fit is not None, stderr[-3000:]
    return _run_dir(tmp_path), fit


def test_resumed_run_keeps_the_fitted_plan(tmp_path: Path) -> None:
    run, fit = _stop_once_fitted(tmp_path)
    first = json.loads((run / "summary.json").read_text())
    assert first["stopped_by"] == "SIGTERM", first["stopped_by"]
    assert fit["at_step"] <= first["steps"] < fit["fitted_steps"], (fit, first["steps"])
    again = run_harness("train", "--job", SMOKE, "--quiet", "--resume", str(run), *FIT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "this machine runs" not in again.stderr  # no re-fitting
    assert f"keeping the fitted plan of this run: {fit['fitted_steps']} steps" in again.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fit"] == fit and summary["steps"] == fit["fitted_steps"]
    assert summary["stopped_by"] is None
    assert json.loads((run / "manifest.json").read_text())["fit"] == fit
    train = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, fit["fitted_steps"] + 1))
    assert train[-1]["lr"] < 1e-6


@pytest.mark.parametrize(("fit", "shown"), [
    ({"planned_steps": 500, "fitted_steps": 380, "steps_per_s": 1.9, "lowered": True,
      "limit": "train.max_minutes (8)"},
     "380 of 500 planned (1.90 steps/s measured, train.max_minutes (8))"),
    ({"planned_steps": 500, "fitted_steps": 500, "steps_per_s": 3.0, "lowered": False,
      "limit": "train.max_minutes (8)"},
     "no: all 500 fit (3.00 steps/s measured, train.max_minutes (8))"),
    (None, "—"),
])
def test_report_run_section_shows_the_fit(tmp_path: Path, fit: dict | None,
                                          shown: str) -> None:
    from reports.render import _run_facts
    from reports.rundata import load_run

    (tmp_path / "summary.json").write_text(json.dumps({
        "job": "demo", "steps": 380, "planned_steps": 500, "fit": fit, "world_size": 2}))
    run = load_run(tmp_path)
    assert dict(_run_facts(run, run.summary))["steps fitted to the time limit"] == shown
