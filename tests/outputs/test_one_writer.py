"""An output folder has one writer (fileio/locks.py), and ``--overwrite`` is all-or-nothing
(harness/outputs/write_checks.py StagedFolder): real ``harness infer`` processes, one of them
SIGKILLed half-way."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_harness

VAL = ROOT / "data/asc19-val"
N = 12
INFER = ["infer", "--job", "jobs/smoke.yaml", "--set", "model.name=bicubic", "--set",
         "model.args={}", "--set", "infer.batch_size=2", "--quiet"]


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """HR, LR and a darker LR set (same names: a second infer gives other SR images)."""
    hr, lr, dark = tmp_path / "hr", tmp_path / "lr", tmp_path / "dark"
    for d in (hr, lr, dark):
        d.mkdir()
    for p in sorted((VAL / "val_HR").iterdir())[:N]:
        shutil.copy(p, hr / p.name)
        shutil.copy(VAL / "val_LR" / p.name, lr / p.name)
        im = np.asarray(Image.open(VAL / "val_LR" / p.name).convert("RGB"))
        Image.fromarray((im // 2).astype(np.uint8)).save(dark / p.name)
    return hr, lr, dark


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.suffix in (".png", ".json", ".csv")}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start_stopped(args: list[str], stage: str) -> subprocess.Popen:
    """A ``harness`` process that SIGSTOPs itself at ``stage`` (waited for)."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT,
                            env=_env(HARNESS_FAULT_STALL_AT=stage, HARNESS_FAULT_STALL_RANK="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return proc
        if proc.poll() is not None:
            pytest.fail(f"ended before {stage}: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"never reached {stage}")


def test_overwrite_killed_half_way_keeps_the_old_set_whole(inputs, tmp_path: Path) -> None:
    hr, lr, dark = inputs
    out = tmp_path / "sr"
    first = run_harness(*INFER, "--lr", str(lr), "--hr", str(hr), "--out", str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    (out / "my-notes.txt").write_text("the user's own file")
    old = _digest(out)
    first_scores = (out / "scores.json").read_text()
    assert len([n for n in old if n.endswith(".png")]) == N
    proc = _start_stopped([*INFER, "--lr", str(dark), "--hr", str(hr), "--out", str(out),
                           "--overwrite"], "infer batch 3")
    # half the new images are written (in the staging folder): kill -9 now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _digest(out) == old  # the old images with their old scores, untouched
    assert (out / "my-notes.txt").read_text() == "the user's own file"
    # the next replace completes: every image new, and scores.json says so
    again = run_harness(*INFER, "--lr", str(dark), "--hr", str(hr), "--out", str(out),
                        "--overwrite")
    assert again.returncode == 0, again.stderr[-2000:]
    new = _digest(out)
    assert all(new[n] != old[n] for n in old)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["meta"]["sr_dir"] == str(out) and scores["meta"]["lr_dir"] == str(dark)
    assert sorted(r["name"] + ".png" for r in scores["per_image"]) == \
        sorted(n for n in new if n.endswith(".png"))
    before = json.loads(first_scores)["summary"]["metrics"]["psnr"]["mean"]
    assert scores["summary"]["metrics"]["psnr"]["mean"] < before - 1  # darker inputs
    assert (out / "my-notes.txt").read_text() == "the user's own file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sr.")]  # no staging left


def test_a_second_writer_is_refused_naming_the_holder(inputs, tmp_path: Path) -> None:
    hr, lr, _ = inputs
    out = tmp_path / "sr"
    holder = _start_stopped([*INFER, "--lr", str(lr), "--out", str(out)], "infer batch 1")
    try:
        second = run_harness(*INFER, "--lr", str(lr), "--out", str(out), "--overwrite")
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"in use by another process (pid {holder.pid} on " in lines[0], lines[0]
        assert "infer" in lines[0] and str(out) in lines[0]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # a dead holder holds nothing
    third = run_harness(*INFER, "--lr", str(lr), "--out", str(out), "--overwrite")
    assert third.returncode == 0, third.stderr[-2000:]
    assert len(list(out.glob("*.png"))) == N


def test_runs_created_in_the_same_second_get_distinct_folders(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from harness.cluster.distributed import SingleComm
    from harness.config import load_job
    from harness.outputs.run_folders import create_run_dir

    job = load_job(ROOT / "jobs/smoke.yaml")
    with ThreadPoolExecutor(8) as pool:  # eight starts racing for one name
        made = list(pool.map(lambda _: create_run_dir(job, SingleComm(), tmp_path), range(8)))
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)
    stamps = {p.name.split("-")[1] + p.name.split("-")[2] for p in made}
    assert len(stamps) <= 2  # (the same second, or two)
    assert any(p.name.endswith("-2") for p in made)


def test_resume_repairs_a_torn_last_line_of_metrics_jsonl(tmp_path: Path) -> None:
    first = run_harness("train", "--job", "jobs/smoke.yaml", "--quiet", "--run-dir",
                        str(tmp_path), "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-2000:]
    run = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink())
    metrics = run / "metrics.jsonl"
    whole = metrics.read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in whole] == [1, 2]
    with open(metrics, "a") as fh:
        fh.write('{"kind": "train", "step": 3, "lo')  # the crash came mid-write
    again = run_harness("train", "--job", "jobs/smoke.yaml", "--quiet", "--resume", str(run))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "torn last line" in again.stderr
    records = [json.loads(ln) for ln in metrics.read_text().splitlines()]  # every line parses
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert records[:2] == [json.loads(ln) for ln in whole]
