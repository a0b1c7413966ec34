"""A stop signal at any moment of start-up leaves a run folder that says why it ended, or none.

Found in hostile round 4: SIGINT to ``harness launch`` a few seconds into start-up left a run
folder with an empty ``train.log``. ``mpirun`` answers the forwarded signal with SIGTERM to the
ranks (whose default action killed a rank still starting up) and SIGKILL about half a second
later (too soon for a rank waiting in a collective). Ranks now end at once, saying so, while
starting up; the launcher gives a killed run's log its end line.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fileio.locks import lock_folder, unlock_folder
from harness.outputs.logs import RUN_ENDED
from harness.outputs.run_end import close_killed_runs
from reports.runs_table import read_run
from tests.conftest import ROOT, mpi_env


def _signal_after_folder(cmd: list[str], runs: Path, delay: float, sig: signal.Signals) -> str:
    """Start ``cmd``, send ``sig`` ``delay`` s after its run folder appears; its stderr."""
    proc = subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "harness", *cmd],
                            cwd=ROOT, env=mpi_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (runs.is_dir() and any(runs.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "no run folder appeared"
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return err


def _says_how_it_ended(run: Path) -> str:
    """Why the run ended, as its folder says; fails on a folder that says nothing."""
    if (run / "summary.json").is_file():
        return "summary"
    lines = (run / "train.log").read_text().strip().splitlines()
    assert lines and RUN_ENDED in lines[-1], f"{run}: train.log says nothing: {lines[-3:]}"
    return lines[-1].split(RUN_ENDED, 1)[1]


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4])
def test_sigint_to_launch_in_start_up_leaves_no_silent_run_folder(
        mpirun: str, tmp_path: Path, delay: float) -> None:
    runs = tmp_path / "runs"
    err = _signal_after_folder(["launch", str(ROOT / "jobs/smoke.yaml"), "--set",
                                f"launch.run_dir={runs}", "--set", "train.steps=100000"],
                               runs, delay, signal.SIGINT)
    assert "Traceback" not in err
    folders = [p for p in runs.iterdir() if not p.is_symlink()]
    assert len(folders) == 1
    _says_how_it_ended(folders[0])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_to_train_in_start_up_is_said_in_train_log(tmp_path: Path,
                                                           sig: signal.Signals) -> None:
    runs = tmp_path / "runs"
    err = _signal_after_folder(["train", "--job", "jobs/smoke.yaml", "--run-dir", str(runs),
                                "--set", "train.steps=100000"], runs, 0.0, sig)
    assert "Traceback" not in err
    (run,) = [p for p in runs.iterdir() if not p.is_symlink()]
    said = _says_how_it_ended(run)
    assert said == "summary" or "interrupted" in said
    if said != "summary":  # harness runs calls it so, not "crashed"
        assert read_run(run).status == "interrupted"


def _run_folder(parent: Path, stamp: str, log: str | None) -> Path:
    run = parent / f"smoke-{stamp}"
    run.mkdir(parents=True)
    if log is not None:
        (run / "train.log").write_text(log)
    return run


def test_the_launcher_ends_only_the_logs_of_its_own_killed_runs(tmp_path: Path) -> None:
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    old = time.strftime("%Y%m%d-%H%M%S", time.localtime(now - 3600))
    killed = _run_folder(tmp_path, stamp, "")
    missing_log = _run_folder(tmp_path, stamp + "-2", None)
    finished = _run_folder(tmp_path, stamp + "-3", "")
    (finished / "summary.json").write_text("{}")
    before = _run_folder(tmp_path, old, "")
    said = _run_folder(tmp_path, stamp + "-4", f"2026-12-05T12:00:00Z {RUN_ENDED}interrupted\n")
    live = _run_folder(tmp_path, stamp + "-5", "")
    (tmp_path / "smoke-latest").symlink_to(killed.name)
    other = tmp_path / f"smoke2-{stamp}"
    other.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from fileio.locks import lock_folder\n"
                               f"lock_folder({str(live)!r}); print('held', flush=True)\n"
                               "time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        closed = close_killed_runs(tmp_path, "smoke", now - 1, "stopped during start-up",
                                   wait_s=0.5)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(closed) == sorted([killed, missing_log])
    for run in closed:
        assert _says_how_it_ended(run) == "stopped during start-up"
        assert read_run(run).status == "interrupted"
        assert not (run / ".lock").exists()
    for run in (finished, before, live):
        assert (run / "train.log").read_text() == ""
    assert said.joinpath("train.log").read_text().count(RUN_ENDED) == 1
    assert not any(other.iterdir())
    lock_folder(live)  # the launcher's check left no lock of its own behind
    unlock_folder(live)


def test_the_report_side_reads_the_end_line_the_harness_writes() -> None:
    from fileio.run_files import RUN_ENDED as READ

    assert READ == RUN_ENDED
