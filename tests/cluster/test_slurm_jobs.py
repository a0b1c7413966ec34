"""The harness's jobs on a real 2-node Slurm (the ``slurm_cluster`` test bed): the sbatch scripts
``harness launch --scheduler slurm`` writes, run as they would be on a cluster.

Each test submits the tiny smoke job (``jobs/smoke.yaml``, 8-channel SRResNet, batch 4) on two
nodes, one rank each, and checks what the job really did: Slurm's final state, the run folder
(checkpoints, summary, manifest), the power samples of both nodes, Slurm's log. Measured figures
are printed (``pytest -s``): time to the first step, requeue-to-resume, node-loss detection.

The jobs import this checkout: Slurm hands the submitter's environment (``PYTHONPATH`` first
on this checkout, see ``SlurmCluster.full_env``) to the job, and the first test checks it on
both nodes.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import ROOT, JobResult
from tests.cluster.slurm_jobs import (
    ERROR_LINE,
    PROGRESS,
    SUBMITTED,
    Job,
    checkpoint_steps,
    cluster_series,
    governed_window,
    head_commit,
    job_processes,
    launch,
    load_checkpoint,
    rank_hosts,
    read_json,
    segments,
    submit,
)
from tests.conftest import run_harness

pytestmark = pytest.mark.cluster

HAVE_HOROVOD = importlib.util.find_spec("horovod") is not None
REQUIRE_HOROVOD = os.environ.get("HARNESS_REQUIRE_HOROVOD") == "1"


def figure(name: str, value: float, unit: str = "s") -> None:
    """A measured figure, printed for the record (``pytest -s``)."""
    print(f"\n[figure] {name}: {value:.1f} {unit}")


def assert_on_both_nodes(cluster, run_dir: Path) -> None:
    hosts = rank_hosts(run_dir)
    assert sorted(hosts) == [0, 1], hosts
    assert len(set(hosts.values())) == 2 and set(hosts.values()) <= set(cluster.nodes), hosts


def assert_completed(job: Job, result: JobResult) -> None:
    assert result[:3] == ("COMPLETED", 0, 0), f"{result}\n{job.log()[-4000:]}"


def loss_by_step(job: Job) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]["total"]) for r in job.train_records()}


@pytest.fixture(scope="module")
def ddp_run(slurm_cluster, tmp_path_factory):
    """The smoke job on 2 nodes (DDP over gloo, ranks started by ``srun --mpi=pmix``) from the
    generated script, run once for the tests that compare with it."""
    out = tmp_path_factory.mktemp("ddp")
    script = launch(slurm_cluster, out)
    t0 = time.monotonic()
    job = submit(slurm_cluster, script, out / "runs")
    first = job.wait_for_step(1, timeout=150)
    result = job.wait(timeout=150)
    return job, result, first - t0, time.monotonic() - t0


def test_ranks_import_this_checkout(slurm_cluster):
    """The premise of every test here: both nodes run this checkout's harness."""
    proc = slurm_cluster.srun("-N2", "-n2", sys.executable, "-c",
                              "import socket, harness; print(socket.gethostname(), "
                              "harness.__file__)", timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    assert len(seen) == 2 and set(seen) <= set(slurm_cluster.nodes), seen
    assert all(Path(f).resolve().parent.parent == ROOT for f in seen.values()), seen


def test_generated_sbatch_trains_on_two_nodes(slurm_cluster, ddp_run):
    job, result, to_first_step, total = ddp_run
    figure("2 nodes: sbatch to first training step", to_first_step)
    figure("2 nodes: sbatch to end of a 4-step job", total)
    assert_completed(job, result)
    run = job.run_dir()
    assert_on_both_nodes(slurm_cluster, run)
    manifest = read_json(run / "manifest.json")
    assert manifest["world_size"] == 2 and manifest["launcher"] == "slurm"
    assert manifest["git_commit"].split("-")[0] == head_commit()  # this checkout's code
    summary = read_json(run / "summary.json")
    assert summary["steps"] == 4 and summary["world_size"] == 2
    assert summary["replicas_in_sync"] is True and len(summary["param_checksums"]) == 2
    assert checkpoint_steps(run) == [2, 4]  # ckpt_every 2, keep_last 2
    assert load_checkpoint(run / "checkpoints" / "ckpt-000004.pt")["step"] == 4
    assert sorted(loss_by_step(job)) == [1, 2, 3, 4]


def test_mpirun_inside_the_allocation_trains_on_two_nodes(slurm_cluster, tmp_path):
    """``harness launch JOB`` (launcher openmpi: the mpirun line) run inside an sbatch
    allocation of 2 nodes: Open MPI takes the nodes from Slurm, one rank on each."""
    runs = tmp_path / "runs"
    runs.mkdir()
    sets = ["launch.launcher=openmpi", "launch.nodes=2", "launch.ranks_per_node=1",
            "train.precision=fp32", f"launch.run_dir={runs}"]
    script = tmp_path / "mpirun.sbatch"
    script.write_text("#!/bin/bash\nset -euo pipefail\n"
                      f"cd {ROOT}\n"
                      f"exec {sys.executable} -m harness launch jobs/smoke.yaml "
                      + " ".join(f"--set {s}" for s in sets) + "\n")
    job = submit(slurm_cluster, script, runs, "-N2", "--ntasks-per-node=1",
                 f"--output={runs}/slurm-%j.out")
    assert_completed(job, job.wait(timeout=180))
    run = job.run_dir()
    assert_on_both_nodes(slurm_cluster, run)
    assert read_json(run / "manifest.json")["launcher"] == "openmpi"  # mpirun started them
    summary = read_json(run / "summary.json")
    assert summary["steps"] == 4 and summary["replicas_in_sync"] is True
    assert checkpoint_steps(run) == [2, 4]


def test_srun_without_pmix_is_refused_in_one_line(slurm_cluster, tmp_path):
    """launch.srun_mpi none: every task is its own MPI world of one. The job fails at once
    with one line saying to use --mpi=pmix, and leaves no run folder behind."""
    script = launch(slurm_cluster, tmp_path, "launch.srun_mpi=none")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    result = job.wait(timeout=120)
    assert result.state == "FAILED", f"{result}\n{job.log()[-3000:]}"
    errors = ERROR_LINE.findall(job.log())
    assert errors and all("--mpi=pmix" in e for e in errors), job.log()[-3000:]
    assert "Traceback" not in job.log(), job.log()[-3000:]
    assert job.run_dirs() == []


def test_power_governors_of_both_nodes_hold_one_budget(slurm_cluster, tmp_path):
    """4 simulated A100s per node: uncapped the cluster would draw ~3900 W, so the 3000 W
    budget binds. The cluster series (both nodes' samples summed at the same UTC instants,
    while the governors held the caps) stays under it except for the crossings the summary
    counts, and the summary's peak is that series' peak."""
    budget = 3000.0
    # headroom 40 W (default 150): the governor aims close to the budget, so that crossings
    # happen now and then and their count is compared too
    script = launch(slurm_cluster, tmp_path, "power.enabled=true", "power.backend=simulated",
                    "power.sim_gpus_per_node=4", f"power.budget_w={budget}",
                    "power.headroom_w=40", "train.steps=400", "train.ckpt_every=0")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    assert_completed(job, job.wait(timeout=180))
    run = job.run_dir()
    assert_on_both_nodes(slurm_cluster, run)
    power = read_json(run / "summary.json")["power"]
    assert power["enabled"] and power["budget_w"] == budget
    window = governed_window(run / "power")
    switch_w = float((yaml.safe_load((run / "job.yaml").read_text())["power"] or {})
                     .get("switch_w", 0.0))  # the cluster's shared equipment, counted once
    series = cluster_series(run / "power", window, shared_w=switch_w)
    assert len(series.nodes) == 2, [n.folder for n in series.nodes]
    duration = window[1] - window[0]
    assert duration > 3 and len(series.unix_s) > 40, (duration, len(series.unix_s))
    # The budget binds on both nodes: their GPUs ran capped below the 400 W they start at. If
    # each node had held the whole budget alone (~1955 W each), no cap would have been needed.
    for node in series.nodes:
        capped = sum(limit < 399.0 for limit in node.limits_w) / len(node.limits_w)
        assert capped > 0.5, (node.folder, capped)
    crossings = series.crossings(budget)
    peak = max(series.watts)
    over_s = sum(c[1] for c in crossings)
    where = [(round(c[0] - window[0], 2), round(c[1], 2), round(c[2], 1)) for c in crossings]
    whole = cluster_series(run / "power", shared_w=switch_w)  # every sample, edges included
    print(f"\n[power] {len(series.unix_s)} points over the {duration:.1f} s the governors "
          f"held the caps: peak {peak:.1f} W, {len(crossings)} crossing(s) {over_s:.2f} s "
          f"{where}; summary.json: peak {power['peak_cluster_w']:.1f} W, "
          f"{power['crossings']} crossing(s) {power['crossing_time_s']:.2f} s; all samples "
          f"(limits restored at the end included): peak {max(whole.watts):.1f} W, "
          f"{len(whole.crossings(budget))} crossing(s)")
    # Every point above the budget lies in a counted crossing, and they are short.
    assert over_s <= 0.1 * duration, crossings
    assert (power["crossings"], power["peak_cluster_w"]) == (
        len(crossings), pytest.approx(peak, abs=1.0)), (
        f"summary.json says peak {power['peak_cluster_w']:.1f} W and {power['crossings']} "
        f"crossing(s); the samples of both nodes say peak {peak:.1f} W and {len(crossings)} "
        f"crossing(s) {where}")


@pytest.mark.skipif(not HAVE_HOROVOD and not REQUIRE_HOROVOD,
                    reason="Horovod is not installed (`make horovod`; CI sets "
                           "HARNESS_REQUIRE_HOROVOD=1)")
def test_horovod_across_two_nodes(slurm_cluster, tmp_path, ddp_run):
    """train.backend horovod across the nodes: completes with the replicas equal and the same
    losses, step by step, as the DDP run of the same job (the same averaged gradients)."""
    assert HAVE_HOROVOD, "HARNESS_REQUIRE_HOROVOD=1 but Horovod is not importable"
    script = launch(slurm_cluster, tmp_path, "train.backend=horovod")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    assert_completed(job, job.wait(timeout=180))
    run = job.run_dir()
    assert_on_both_nodes(slurm_cluster, run)
    summary = read_json(run / "summary.json")
    assert summary["backend"] == "horovod" and summary["world_size"] == 2
    assert summary["replicas_in_sync"] is True and len(summary["param_checksums"]) == 2
    hvd, ddp = loss_by_step(job), loss_by_step(ddp_run[0])
    assert sorted(hvd) == sorted(ddp) == [1, 2, 3, 4]
    for step, loss in ddp.items():
        assert hvd[step] == pytest.approx(loss, rel=1e-4), (step, hvd, ddp)


def _release_now(cluster, jobid: str) -> None:
    """A requeued job waits ~2.5 min (BeginTime); let it start now."""
    cluster.run(["scontrol", "update", f"JobId={jobid}", "StartTime=now"], timeout=15)
    cluster.run(["scontrol", "release", jobid], timeout=15)


def test_requeue_resumes_the_same_run_from_its_checkpoint(slurm_cluster, tmp_path):
    steps = 150
    script = launch(slurm_cluster, tmp_path, f"train.steps={steps}", "train.ckpt_every=10",
                    "train.log_every=1")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    job.wait_for_step(20, timeout=150)
    run = job.run_dir()
    requeued = time.monotonic()
    proc = slurm_cluster.run(["scontrol", "requeue", job.jobid], timeout=30)
    assert proc.returncode == 0, proc.stderr

    def resumed() -> bool:
        if job.state() == "PENDING":
            _release_now(slurm_cluster, job.jobid)
        return len(segments(job.train_records())) >= 2

    back = job.wait_for("the resumed attempt's first step", resumed, timeout=120, poll=0.3)
    figure("requeue to first step of the resumed attempt", back - requeued)
    assert_completed(job, job.wait(timeout=150))
    assert job.run_dirs() == [run], job.run_dirs()  # the same run folder, resumed
    first, second = segments(job.train_records())
    saved = second[0] - 1  # the checkpoint the second attempt started from
    assert first[0] == 1 and saved >= 10 and saved <= first[-1], (first[-1], second[:3])
    assert second[-1] == steps
    assert read_json(run / "summary.json")["steps"] == steps
    manifest = read_json(run / "manifest.json")
    assert len(manifest.get("resumes", [])) == 1, manifest.get("resumes")
    assert int(job.fields().get("Restarts", 0)) == 1
    # Slurm's log keeps both attempts (--open-mode=append): the first attempt's first step and
    # the second attempt's steps, in that order.
    shown = [int(m.group(1)) for m in PROGRESS.finditer(job.log())]
    assert 1 in shown and steps in shown and shown.index(1) < shown.index(steps), (
        shown, job.log()[-3000:])
    assert any(s > saved for s in shown[shown.index(1):]), shown


@pytest.mark.parametrize("how", ["USR1", "TERM"])
def test_scancel_checkpoints_and_stops_cleanly(slurm_cluster, tmp_path, how):
    """``scancel --signal=USR1`` (what Slurm sends before the limit): checkpoint, clean stop,
    exit 0, job COMPLETED. ``scancel`` (SIGTERM, KillWait later SIGKILL): checkpoint and stop
    within KillWait, job CANCELLED."""
    steps = 400
    script = launch(slurm_cluster, tmp_path, f"train.steps={steps}", "train.ckpt_every=0",
                    "train.log_every=1")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    job.wait_for_step(10, timeout=150)
    cmd = ["scancel", "--signal=USR1", job.jobid] if how == "USR1" else ["scancel", job.jobid]
    proc = slurm_cluster.run(cmd, timeout=30)
    assert proc.returncode == 0, proc.stderr
    result = job.wait(timeout=60)
    if how == "USR1":
        assert_completed(job, result)
    else:
        assert result.state == "CANCELLED", result
    run = job.run_dir()
    summary = read_json(run / "summary.json")
    assert summary["stopped_by"] == f"SIG{how}", summary["stopped_by"]
    stopped = summary["steps"]
    assert 10 <= stopped < steps
    assert checkpoint_steps(run)[-1] == stopped  # ckpt_every 0: the stop's own checkpoint
    assert load_checkpoint(run / "checkpoints" / f"ckpt-{stopped:06d}.pt")["step"] == stopped
    assert not ERROR_LINE.search(job.log()), job.log()[-3000:]


def test_slurm_time_limit_is_read_from_slurm_and_honoured(slurm_cluster, tmp_path):
    """``sbatch --time=2`` overrides the script's ``--time=01:00:00``: training stops before the
    2 minutes (launch.signal_lead_s 0: no warning signal, only the limit), checkpointed and
    saying which limit; the job COMPLETED instead of being killed at its limit."""
    steps = 100000
    script = launch(slurm_cluster, tmp_path, f"train.steps={steps}", "train.ckpt_every=0",
                    "train.log_every=10", "launch.signal_lead_s=0", "launch.time=01:00:00")
    job = submit(slurm_cluster, script, tmp_path / "runs", "--time=2")
    assert job.fields().get("TimeLimit") == "00:02:00", job.fields().get("TimeLimit")
    result = job.wait(timeout=200)
    assert_completed(job, result)  # not TIMEOUT
    f = job.fields()
    start, end = (time.mktime(time.strptime(f[k], "%Y-%m-%dT%H:%M:%S"))
                  for k in ("StartTime", "EndTime"))
    figure("time-limit job: start to end (limit 120 s)", end - start)
    assert end - start < 120
    run = job.run_dir()
    summary = read_json(run / "summary.json")
    assert summary["stopped_early"] is True and summary["stopped_by"] == "the Slurm time limit"
    stopped = summary["steps"]
    assert 1 <= stopped < steps
    assert checkpoint_steps(run)[-1] == stopped
    log = (run / "train.log").read_text()
    assert "Slurm time limit" in log, log[-2000:]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def test_node_lost_mid_run_ends_the_job_then_resume_on_the_node_left(slurm_cluster, tmp_path):
    """node1 crashes (its slurmd and the job's processes there SIGKILLed) after step 40: the ranks
    left end within the watchdog deadline (train.collective_timeout_s 5) with a line naming node1
    (on stderr, and as the last line of the run's train.log), and Slurm ends the job (node failure)
    and requeues it; with one node asked for, ``--resume auto`` continues the same run on node0
    alone from its checkpoint (or refuses a world-size change with one line)."""
    timeout_s = 5
    steps = 120
    script = launch(slurm_cluster, tmp_path, f"train.steps={steps}", "train.ckpt_every=20",
                    "train.log_every=1", f"train.collective_timeout_s={timeout_s}")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    job.wait_for_step(41, timeout=150)
    run = job.run_dir()
    lost = next(n for n in slurm_cluster.nodes if n != rank_hosts(run)[0])
    killed_at = time.monotonic()
    try:
        killed = slurm_cluster.script("kill-node", lost)
        assert killed.returncode == 0, killed.stderr
        pids = job_processes(slurm_cluster.netns(lost), job.jobid)
        assert pids, f"no processes of job {job.jobid} on {lost}"
        for pid in pids:
            os.kill(pid, 9)
        said = ended = survivors_gone = None
        left = next(n for n in slurm_cluster.nodes if n != lost)
        log = run / "train.log"  # rank 0's own log file, written on the node left
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (said is None or ended is None):
            now = time.monotonic()
            if survivors_gone is None and not job_processes(slurm_cluster.netns(left),
                                                            job.jobid, ranks_only=True):
                survivors_gone = now - killed_at
            if ended is not None and now - killed_at > ended + 5:
                break  # the log is complete
            if said is None and (any(lost in m.group(0) for m in ERROR_LINE.finditer(job.log()))
                                 or f"the run ended: lost contact with {lost}" in _text(log)):
                said = now - killed_at
            if ended is None and job.state() != "RUNNING":
                ended = now - killed_at
            time.sleep(0.2)
        at_loss = _text(log)  # before the resumed run appends to it
        watched = run_harness("watch", str(run), "--once", "--log-format", "plain", timeout=60)
        print(f"\n[node loss] ranks on {left} gone after {survivors_gone} s; job "
              f"{job.state()} after {ended} s; Slurm's log:\n"
              + "\n".join(job.log().splitlines()[-12:]))
        assert ended is not None, f"job still {job.state()} 120 s after {lost} was lost"
        figure(f"{lost} lost: job ended (Slurm's node-failure handling) after", ended)
        assert survivors_gone is not None
        figure(f"{lost} lost: the ranks on {left} ended after", survivors_gone)
        if said is not None:
            figure(f"{lost} lost: harness line naming it after", said)
        # The harness's part (checked at the end, after the resume): the ranks left stop
        # within the watchdog's deadline (a step's budget, a heartbeat, the abort), saying
        # which node was lost, in one line.
        late = []
        if survivors_gone > timeout_s + 10:
            late.append(f"the ranks on {left} ran on for {survivors_gone:.1f} s after {lost} "
                        f"was lost (train.collective_timeout_s {timeout_s})")
        if said is None or said > timeout_s + 10:
            late.append(f"no 'harness: error:' line naming {lost} within {timeout_s + 10} s "
                        f"(after {said} s); Slurm's log ends:\n"
                        + "\n".join(job.log().splitlines()[-40:])
                        + "\ntrain.log ends:\n" + "\n".join(at_loss.splitlines()[-8:]))
        elif f"ERROR harness: the run ended: lost contact with {lost}" not in at_loss:
            late.append(f"train.log does not end saying {lost} was lost:\n"
                        + "\n".join(at_loss.splitlines()[-5:]))
        elif f": lost contact with {lost}" not in watched.stdout.strip().splitlines()[-1]:
            late.append(f"harness watch did not end on the lost node: {watched.stdout[-500:]}"
                        f"{watched.stderr[-500:]}")
        if "Traceback" in job.log():
            late.append("a traceback instead of one line: "
                        + next(line for line in job.log().splitlines() if "Error" in line))
        # Slurm's part: with SlurmdTimeout 10 s it notices the node within a minute.
        assert ended <= 90, ended

        # Continue on the node left: one node, one task, the same Slurm job (requeued).
        job.wait_for("the job to leave COMPLETING",
                     lambda: job.state() not in ("RUNNING", "COMPLETING"), timeout=60)
        if job.state() != "PENDING":
            proc = slurm_cluster.run(["scontrol", "requeue", job.jobid], timeout=30)
            assert proc.returncode == 0, proc.stderr
        proc = slurm_cluster.run(["scontrol", "update", f"JobId={job.jobid}", "NumNodes=1",
                                  "NumTasks=1"], timeout=15)
        assert proc.returncode == 0, proc.stderr
        _release_now(slurm_cluster, job.jobid)
        result = job.wait(timeout=150)
        assert job.run_dirs() == [run], job.run_dirs()
        manifest = read_json(run / "manifest.json")
        resumes = manifest.get("resumes", [])
        assert [r["nodes"] for r in resumes] == [[left]], resumes  # on the node left alone
        world = resumes[0]["world_size"]
        # Slurm starts the job's tasks again (its stored SLURM_NTASKS), now all on the node
        # left; a world of another size must be handled or refused in one line.
        print(f"\n[node loss] resumed on {left}: world size {world} (was 2), {result.state}")
        if result.state == "COMPLETED":  # handled: the run continued from its checkpoint
            first, second = segments(job.train_records())
            assert second[0] - 1 in (20, 40) and second[-1] == steps, (first[-1], second[:3])
            assert read_json(run / "summary.json")["world_size"] == world
            assert rank_hosts(run) == {0: left, 1: lost}  # the manifest keeps the first start
        else:  # refused: one line saying why
            errors = ERROR_LINE.findall(job.log())
            assert len(errors) >= 1 and "world" in errors[-1].lower(), job.log()[-3000:]
        assert not late, "\n".join(late)
    finally:
        restarted = slurm_cluster.script("start-node", lost)
        slurm_cluster.run(["scancel", job.jobid], timeout=30)
    assert restarted.returncode == 0, restarted.stderr
    slurm_cluster.wait_nodes_idle(timeout=60)


def test_nothing_left_running(slurm_cluster):
    """The jobs of these tests are gone and every node is idle again."""
    proc = slurm_cluster.run(["squeue", "-h", "-o", "%i %T"], timeout=15)
    queued = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.strip())
    assert not set(queued) & set(SUBMITTED), queued
    slurm_cluster.wait_nodes_idle(timeout=60)



def test_a_node_lost_during_sharded_infer_is_named(slurm_cluster, tmp_path):
    """``harness infer`` on 2 nodes (srun, PMIx), this job alone on them: the rank on node1
    stops after its 3rd batch (fault injection), rank 0 finishes its share and waits on it;
    then node1 crashes (its slurmd and the job's processes there SIGKILLed). The rank left
    names node1 in one line (gloo; before, Open MPI ended it with exit 14 and no word)."""
    out, progress = tmp_path / "sr", tmp_path / "progress"
    script = launch(slurm_cluster, tmp_path, "model.name=bicubic", "model.args={}",
                    "infer.batch_size=2", "launch.env.HARNESS_FAULT_STALL_AT=infer batch 3",
                    f"launch.env.HARNESS_PROGRESS_DIR={progress}", workload="infer",
                    args=f"--lr embedded:all --out {out} --log-format plain")
    job = submit(slurm_cluster, script, tmp_path / "runs", "--exclusive")
    lost = "node1"
    job.wait_for("rank 1 stopped", lambda: (progress / "rank-1.stopped").is_file(), 180)
    time.sleep(2)  # rank 0 finishes its share and waits in a collective
    try:
        killed = slurm_cluster.script("kill-node", lost)
        assert killed.returncode == 0, killed.stderr
        for pid in job_processes(slurm_cluster.netns(lost), job.jobid):
            os.kill(pid, 9)
        job.wait_for("the lost node's line", lambda: "lost contact with" in job.log(), 60)
    finally:
        # The job first: while it holds node1, node1 comes back "allocated", never idle.
        slurm_cluster.run(["scancel", job.jobid], timeout=30)
        restarted = slurm_cluster.script("start-node", lost)
    assert restarted.returncode == 0, restarted.stderr
    slurm_cluster.wait_nodes_idle(timeout=60)
    log = job.log()
    said = [line for line in ERROR_LINE.findall(log) if "lost contact with" in line]
    assert len(said) == 1, log[-3000:]
    assert said[0].startswith(f"harness.infer: error: lost contact with {lost} (10.77.0.11)")
    assert "run the command again" in said[0]


def test_sharded_infer_on_two_nodes_logs_no_c10d_hostname_noise(slurm_cluster, tmp_path):
    """torch's c10d client connects to rank 0 at its IPv4-mapped address (``::ffff:ADDR``) and
    looks that up for its log; with IPv4-only host lines and no DNS that printed ``[c10d] The
    hostname of the client socket cannot be retrieved. err=-3`` once per rank at every start of
    a multi-node job. A 2-node sharded infer (gloo group, two ranks) must log none of it."""
    out = tmp_path / "sr"
    script = launch(slurm_cluster, tmp_path, "model.name=bicubic", "model.args={}",
                    workload="infer", args=f"--lr embedded:heldout --out {out} --log-format plain")
    job = submit(slurm_cluster, script, tmp_path / "runs")
    result = job.wait(timeout=240)
    log = job.log()
    assert_completed(job, result)
    assert len(list(out.glob("*.png"))) == 60, log[-3000:]
    noise = [line for line in log.splitlines() if "[c10d]" in line or "hostname of the client"
             in line]
    assert not noise, "\n".join(noise)
