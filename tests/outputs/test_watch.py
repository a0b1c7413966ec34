"""``harness watch RUN``: a live view of a real training run, read from its run folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from harness.outputs.watch import RunWatcher, _Tail, status_line
from tests.conftest import ROOT, run_harness


def test_watch_follows_a_real_run_to_its_end(tmp_path) -> None:
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "SLURMD_NODENAME": "node3"}
    train = subprocess.Popen(
        [sys.executable, "-m", "harness", "train", "--job", "jobs/smoke.yaml", "--run-dir",
         str(runs), "--log-format", "off", "--set", "power.enabled=true",
         "--set", "power.backend=simulated", "--set", "power.budget_w=3000",
         "--set", "train.steps=40", "--set", "train.ckpt_every=0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        run = runs / "smoke-latest"
        deadline = time.monotonic() + 180
        while not (run / "job.yaml").is_file() and train.poll() is None:
            assert time.monotonic() < deadline, "training never made its run folder"
            time.sleep(0.2)
        proc = run_harness("watch", str(run), "--log-format", "plain", "--interval", "0.5",
                           timeout=240)
    finally:
        _, err = train.communicate(timeout=240)
    assert train.returncode == 0, err
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 3
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
    assert all(re.match(stamp, line) for line in lines)
    # Real figures while it ran: cluster watts against the budget, the node by its name, caps.
    live = [ln for ln in lines if re.search(r"\| cluster \d+ W / budget 3000 W \(margin -?\d+ W\)",
                                            ln)]
    assert live, proc.stdout
    watts = [int(m.group(1)) for ln in live if (m := re.search(r"cluster (\d+) W", ln))]
    assert all(100 < w < 3000 for w in watts)  # 4 simulated A100s under load, under budget
    assert any(re.search(r"node000 \(node3\) \d+ W caps \d+,\d+,\d+,\d+ W", ln) for ln in live)
    assert any(re.search(r"step \d+/40 \(\d+%\) \| \d+\.\d images/s", ln) for ln in lines)
    assert re.search(r"run ended: 40 steps, \d+\.\d images/s, average \d+ W, peak \d+ W of "
                     r"3000 W, 0 crossing\(s\)$", lines[-1]), lines[-1]
    # Watching a finished run prints its state once and ends at once.
    again = run_harness("watch", str(run), "--log-format", "plain")
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1].endswith(
        lines[-1][21:])


def test_watch_of_a_folder_that_is_not_a_run_is_one_line(tmp_path) -> None:
    proc = run_harness("watch", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [(
        f"harness: error: {tmp_path}: not a run folder (no manifest.json, job.yaml or "
        "summary.json)")]
    proc = run_harness("watch", str(tmp_path / "nope"))
    assert proc.stderr.strip().splitlines() == [
        f"harness: error: {tmp_path / 'nope'}: no such run folder"]
    proc = run_harness("watch", str(tmp_path), "--interval", "0")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "harness: error: --interval: must be between 0.05 and 3600 seconds, got 0"]


def test_sample_files_are_read_from_near_their_end_and_incrementally(tmp_path) -> None:
    path = tmp_path / "gpu_power.csv"
    rows = [f"{i},0,{200 + i % 7}.0,1,300.0" for i in range(40_000)]  # ~1 MB
    path.write_text("time_s,gpu,power_w,energy_j,limit_w\n" + "\n".join(rows) + "\n")
    tail = _Tail(path, header=True)
    first = tail.rows()
    assert 0 < len(first) < 40_000 and first[-1]["time_s"] == "39999"
    assert set(first[0]) == {"time_s", "gpu", "power_w", "energy_j", "limit_w"}
    assert tail.rows() == []
    with path.open("a") as f:
        f.write("40000,0,250.0,1,3")  # half a line: not yet
    assert tail.rows() == []
    with path.open("a") as f:
        f.write("10.0\n")
    assert tail.rows() == [{"time_s": "40000", "gpu": "0", "power_w": "250.0", "energy_j": "1",
                            "limit_w": "310.0"}]


def test_status_line_of_a_run_without_power(tmp_path) -> None:
    (tmp_path / "job.yaml").write_text("train: {steps: 10}\npower: {enabled: false}\n")
    (tmp_path / "metrics.jsonl").write_text(
        '{"kind": "train", "step": 2, "images_per_s": 8.0, "time_s": 1.0}\n'
        '{"kind": "train", "step": 4, "images_per_s": 8.0, "time_s": 2.0}\n')
    view = RunWatcher(tmp_path).poll()
    assert status_line(view) == "step 4/10 (40%) | 8.0 images/s | ETA 0:00:03"
    assert view.ended  # no lock: nothing writes it


def test_watch_ends_on_the_logs_last_line_saying_why_the_run_ended(tmp_path) -> None:
    """A run whose rank 0 ended on an error (a lost node: no summary.json, and a writer on
    another host that this host cannot check) ends the watch with the log's reason; the same
    line followed by a later segment's lines does not."""
    from harness.outputs.watch import end_line

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 41, "time_s": 3.0}\n')
    lost = ("lost contact with node1 (10.77.0.11): a collective failed on node0 (RuntimeError: "
            "Connection reset by peer)")
    log = run / "train.log"
    log.write_text("2026-12-02T12:47:14Z INFO harness.progress: step 41/120 (34%)\n"
                   f"2026-12-02T12:47:15Z ERROR harness: the run ended: {lost}\n")
    view = RunWatcher(run).poll()
    assert view.ended and view.end_reason == lost
    assert end_line(view) == f"run ended at step 41: {lost}"

    with log.open("a") as f:  # resumed: the new segment logs on
        f.write("2026-12-02T12:48:01Z INFO harness.training.loop: --resume auto: continuing\n")
    view = RunWatcher(run).poll()
    assert view.end_reason is None


def test_an_ended_writer_not_yet_reaped_counts_as_gone(tmp_path):
    """A writer that died but was not reaped (a zombie: its parent, or a pid 1 that never reaps,
    has not waited on it) still answers ``kill -0``; it must not count as a live writer."""
    import socket

    from fileio.locks import _zombie
    from fileio.locks import holder_alive as writer_alive

    child = subprocess.Popen(["sleep", "0"])
    try:
        deadline = time.monotonic() + 10
        while not _zombie(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _zombie(child.pid)
        (tmp_path / ".lock").write_text(f"pid {child.pid} on {socket.gethostname()}\n")
        assert not writer_alive(tmp_path)
    finally:
        child.wait()
    assert not _zombie(os.getpid())
