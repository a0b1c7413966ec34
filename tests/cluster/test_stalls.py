"""Every wait on another rank has a deadline (harness/cluster/watchdog.py): a rank stopped
(SIGSTOP) during start-up, sharded inference or distributed evaluation ends the job within
the budget with one line naming the rank and its host. Real ``mpirun -np 2``; the budget is
set short with ``$HARNESS_COLLECTIVE_TIMEOUT_S``."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, mpi_env

BUDGET_S = 3
#: Seconds past the budget a stall may take to end the job (stale-heartbeat detection, abort).
MARGIN_S = 8
INFER = ["-m", "harness.infer", "--job", "jobs/smoke.yaml", "--set", "model.name=bicubic",
         "--set", "model.args={}", "--set", "infer.batch_size=8", "--quiet",
         "--lr", "embedded:heldout"]


def _run_stalled(mpirun: str, tmp_path: Path, stage: str, args: list[str]
                 ) -> tuple[subprocess.CompletedProcess, float]:
    """``mpirun -np 2 python ARGS`` with rank 1 stopping at ``stage``; returns the process and
    how long after the stop the job ended (from rank 1's last heartbeat)."""
    env = mpi_env()
    env.update({"HARNESS_COLLECTIVE_TIMEOUT_S": str(BUDGET_S), "HARNESS_FAULT_STALL_AT": stage,
                "HARNESS_FAULT_STALL_RANK": "1",
                "HARNESS_PROGRESS_DIR": str(tmp_path / "progress")})
    cmd = [mpirun, "-np", "2", "--bind-to", "none", sys.executable, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
                          check=False)
    ended = time.time()
    # the heartbeat it wrote as it stopped (rank-1 itself may be newer: mpirun's SIGCONT
    # before its SIGKILL lets a fast rank run on for a moment)
    beat = json.loads((tmp_path / "progress" / "rank-1.stopped").read_text())
    assert beat["stage"] == stage  # it stopped where it was told to
    return proc, ended - float(beat["since"])


def _check_line(proc: subprocess.CompletedProcess, detected_s: float, waited_in: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "stopped responding" in ln]
    assert len(lines) == 1, proc.stderr[-3000:]
    host = socket.gethostname()
    assert lines[0].startswith(f"harness: error: rank 1 on {host} (pid "), lines[0]
    assert f"rank 0 on {host} waited" in lines[0] and waited_in in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert detected_s < BUDGET_S + MARGIN_S, f"the stall took {detected_s:.1f} s to end the job"
    print(f"stall detected and job ended {detected_s:.1f} s after the stop")


@pytest.mark.mpi
def test_rank_stopped_in_start_up_ends_the_job(mpirun: str, tmp_path: Path) -> None:
    """Rank 1 stops before MPI starts: rank 0 waits in MPI_Init (which holds the GIL)."""
    proc, took = _run_stalled(mpirun, tmp_path, "start-up",
                              [*INFER, "--out", str(tmp_path / "sr")])
    _check_line(proc, took, "MPI start-up")


@pytest.mark.mpi
def test_rank_stopped_in_sharded_inference_ends_the_job(mpirun: str, tmp_path: Path) -> None:
    proc, took = _run_stalled(mpirun, tmp_path, "infer batch 1",
                              [*INFER, "--out", str(tmp_path / "sr")])
    _check_line(proc, took, "allreduce")


@pytest.mark.mpi
def test_rank_stopped_in_distributed_evaluation_ends_the_job(mpirun: str,
                                                            tmp_path: Path) -> None:
    hr, sr = tmp_path / "hr", tmp_path / "sr"
    hr.mkdir()
    sr.mkdir()
    for p in sorted((ROOT / "data/asc19-val/val_HR").iterdir())[:8]:
        shutil.copy(p, hr / p.name)
        Image.open(ROOT / "data/asc19-val/val_LR" / p.name).resize(
            (96, 112), Image.Resampling.NEAREST).save(sr / p.name)
    proc, took = _run_stalled(mpirun, tmp_path, "evaluate batch 1",
                              ["-m", "harness", "evaluate", "--hr", str(hr), "--sr", str(sr),
                               "--metrics", "psnr", "--batch-size", "1"])
    _check_line(proc, took, "gather")


@pytest.mark.mpi
def test_a_job_without_stalls_leaves_no_heartbeats(mpirun: str, tmp_path: Path) -> None:
    env = mpi_env()
    env.update({"HARNESS_COLLECTIVE_TIMEOUT_S": str(BUDGET_S),
                "HARNESS_PROGRESS_DIR": str(tmp_path / "progress")})
    cmd = [mpirun, "-np", "2", "--bind-to", "none", sys.executable, *INFER, "--out",
           str(tmp_path / "sr")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "sr").glob("*.png"))) == 60
    assert json.loads((tmp_path / "sr" / "scores.json").read_text())["summary"]
    assert not (tmp_path / "progress").exists()
