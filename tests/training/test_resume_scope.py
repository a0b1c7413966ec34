"""Issue #32: a run stopped by SIGINT or SIGKILL and resumed has one scope for its power figures
(every attempt: energy, window, images) and one branch in its metrics (the one that went on).

Real training processes, really signalled; the report is read from the same run folder.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fileio.run_files import continued_branch, read_metrics
from power.attempts import read_attempts
from tests.conftest import ROOT, run_harness

SMOKE = str(ROOT / "jobs/smoke.yaml")
CKPT_EVERY = 20


def _train_steps(records: list[dict]) -> list[int]:
    return [r["step"] for r in records if r.get("kind") == "train"]


def _sampled_s(csv_path: Path) -> float:
    try:
        rows = csv_path.read_text().splitlines()
    except OSError:
        return 0.0
    try:
        return float(rows[-2].split(",")[0]) if len(rows) > 2 else 0.0
    except ValueError:
        return 0.0


def _start_and_stop(parent: Path, sig: signal.Signals) -> Path:
    """A real training run, stopped by ``sig`` once it has logged steps past a checkpoint and
    rank 0 has recorded its images; returns its run folder."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "train", "--job", SMOKE, "--quiet", "--run-dir",
         str(parent), "--set", "power.enabled=true", "--set", "train.steps=100000",
         "--set", f"train.ckpt_every={CKPT_EVERY}", "--set", "train.log_every=1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
            runs = [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
            if runs:
                run = runs[0]
                steps = _train_steps(read_metrics(run / "metrics.jsonl")) \
                    if (run / "metrics.jsonl").is_file() else []
                attempts = read_attempts(run / "power")
                # well past a checkpoint, not on one: steps to be trained twice; samples and
                # image counts on disk (both are flushed every second)
                if steps and steps[-1] >= CKPT_EVERY + 7 and steps[-1] % CKPT_EVERY > 5 \
                        and attempts and attempts[-1].images > 0 \
                        and _sampled_s(run / "power" / "node000" / "gpu_power.csv") > 2.5:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("training did not get past its first checkpoint in 240 s")
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run is not None
    assert not (run / "summary.json").exists()  # the stopped attempt wrote no summary
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_power_and_metrics_after_a_stop_and_resume(tmp_path: Path, sig: signal.Signals) -> None:
    run = _start_and_stop(tmp_path, sig)
    killed_steps = _train_steps(read_metrics(run / "metrics.jsonl"))
    first = read_attempts(run / "power")
    assert len(first) == 1 and first[0].images > 0 and first[0].ended is False
    last_ckpt = max(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.pt"))
    assert killed_steps[-1] > last_ckpt  # steps after the checkpoint: a branch to abandon
    end = last_ckpt + 6
    again = run_harness("train", "--job", SMOKE, "--quiet", "--resume", str(run), "--set",
                        "power.enabled=true", "--set", f"train.steps={end}", "--set",
                        f"train.ckpt_every={CKPT_EVERY}", "--set", "train.log_every=1")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    p = summary["power"]

    # one scope: every attempt's images, energy and window
    attempts = read_attempts(run / "power")
    assert [a.ended for a in attempts] == [False, True]
    assert attempts[1].images == (end - last_ckpt) * 4 == summary["images"]
    assert p["images"] == attempts[0].images + attempts[1].images
    assert p["attempts"] == 2 and p["attempts_killed"] == 1 and p["segments"] == 2
    assert p["j_per_image"] == pytest.approx(p["energy_j"] / p["images"], rel=1e-9)
    assert p["avg_cluster_w"] == pytest.approx(p["energy_j"] / p["window_s"], rel=1e-9)
    assert p["images_per_s"] == pytest.approx(p["images"] / p["window_s"], rel=1e-9)

    from reports.rundata import load_run

    data = load_run(run)
    segs = data.train_power.series.segments
    assert len(segs) == 2 and all(s.energy_j > 0 and s.seconds > 0 for s in segs)
    # the stopped attempt's window ends at its own last sample, before the next one starts
    assert segs[0].end_unix_s < segs[1].start_unix_s
    assert segs[0].end == ("last sample" if sig == signal.SIGKILL else "restore")
    figures = data.train_power.figures
    for key in ("energy_j", "window_s", "avg_cluster_w", "images", "j_per_image",
                "images_per_s_per_w", "peak_cluster_w"):
        assert figures[key] == pytest.approx(p[key], rel=1e-9), key
    # the stopped attempt's energy is in: about its share of the windows, never negative
    assert p["energy_j"] > 2 * segs[1].energy_j

    # metrics: the resume is marked; readers keep the branch that continued, each step once
    raw = read_metrics(run / "metrics.jsonl")
    markers = [r for r in raw if r.get("kind") == "resume"]
    assert [m["step"] for m in markers] == [last_ckpt]
    assert len(_train_steps(raw)) > len(set(_train_steps(raw)))  # both branches are on disk
    kept = _train_steps(continued_branch(raw))
    assert kept == sorted(set(kept)) and kept[-1] == end
    assert _train_steps(data.metrics) == kept
    val = [m["step"] for m in data.metrics if m.get("kind") == "val"]
    assert len(val) == len(set(val))


@pytest.mark.slow
def test_a_report_of_a_second_attempt_in_progress_gives_no_per_image_figure(
        tmp_path: Path) -> None:
    """A clean stop wrote a summary (1 window); the next attempt was killed before writing
    its own: the report draws 2 windows and must not divide both windows' energy by the first
    one's images (main: J/image about twice the truth)."""
    first = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path),
                        "--set", "power.enabled=true", "--set", "train.steps=100000",
                        "--set", "train.log_every=1", "--stop-after", "30")
    assert first.returncode == 0, first.stderr[-2000:]
    run = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["power"]["segments"] == 1
    from reports.rundata import load_run

    # a second attempt, SIGKILLed after its samples reached the disk
    _start_and_stop_resumed(run)
    data = load_run(run)
    f = data.train_power.figures
    assert f["segments"] == 2 and f["energy_j"] > summary["power"]["energy_j"]
    assert f["j_per_image"] is None and f["images_per_s_per_w"] is None


def _start_and_stop_resumed(run: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "train", "--job", SMOKE, "--quiet", "--resume",
         str(run), "--set", "power.enabled=true", "--set", "train.steps=100000", "--set",
         "train.log_every=1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            attempts = read_attempts(run / "power")
            if len(attempts) == 2 and attempts[1].images > 0 and _sampled_s(
                    run / "power" / "node000" / "gpu_power.csv") > 2.5:
                break
            time.sleep(0.2)
        proc.kill()
    finally:
        proc.wait()
