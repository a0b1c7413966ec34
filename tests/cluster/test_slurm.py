"""What broke when the generated sbatch scripts ran on a real 2-node Slurm (issue #23).

No Slurm daemons here: fake ``squeue``/``srun``/``sbatch`` executables on PATH (real processes,
real files), real training runs with Slurm's environment variables, real bash running the
generated script. The real-cluster tests live in tests/cluster/ with the ``slurm_cluster``
fixture.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
from pathlib import Path

import pytest

from fileio.user_error import UserError
from harness.cluster.distributed import DistInfo, SingleComm, mpi_world_mismatch
from harness.cluster.launcher import LaunchSpec, sbatch_script, time_limit_warning
from harness.cluster.slurm import (
    SlurmQueryError,
    node_name,
    parse_slurm_time,
    query_time_left_s,
    slurm_job,
)
from harness.config import load_job
from harness.training.loop import latest_resumable, slurm_time_left, time_limit_deadline
from tests.cluster.test_launcher import ATTEMPT
from tests.conftest import ROOT, run_harness

SMOKE = "jobs/smoke.yaml"


def _exe(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def _path_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "OMPI_", "PMI"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", **extra)
    return env


# ------------------------------------------------------------------ time left (squeue %L)

@pytest.mark.parametrize("text, seconds", [
    ("1:02:03", 3723), ("2-00:00:00", 172800), ("0:45", 45), ("12", 720),
    ("UNLIMITED", None)])
def test_squeue_time_formats(text: str, seconds: float | None) -> None:
    assert parse_slurm_time(text) == seconds


@pytest.mark.parametrize("text", ["INVALID", "NOT_SET", "1:xx", "-3"])
def test_squeue_answers_that_are_not_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_slurm_time(text)


def test_time_left_asks_squeue_for_this_job(tmp_path) -> None:
    log = tmp_path / "argv"
    squeue = _exe(tmp_path / "bin", "squeue", f'echo "$@" > {log}\necho "  1:02:03"\n')
    assert query_time_left_s("4242", squeue=str(squeue)) == 3723
    assert log.read_text().split() == ["-h", "-j", "4242", "-o", "%L"]
    _exe(tmp_path / "bin", "squeue", "echo UNLIMITED\n")
    assert query_time_left_s("1", squeue=str(squeue)) == math.inf


@pytest.mark.parametrize("body, expected", [
    ("echo INVALID\n", "squeue says the time left is 'INVALID'"),
    ("echo 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n",
     "squeue -j 7 failed: slurm_load_jobs error: Invalid job id specified"),
    ("exec sleep 30\n", "squeue gave no answer in 0.5 s"),
])
def test_time_left_failures_say_why(tmp_path, body: str, expected: str) -> None:
    squeue = _exe(tmp_path / "bin", "squeue", body)
    with pytest.raises(SlurmQueryError) as info:
        query_time_left_s("7", squeue=str(squeue), timeout_s=0.5)
    assert str(info.value) == expected
    with pytest.raises(SlurmQueryError, match="no-such-squeue not found on PATH"):
        query_time_left_s("7", squeue="no-such-squeue")


def test_the_deadline_follows_slurms_time_left_not_launch_time(tmp_path, caplog) -> None:
    # launch.time says 1 hour; `sbatch --time=10` made it 10 minutes: Slurm's answer wins.
    job = load_job(ROOT / SMOKE, ["launch.time=01:00:00", "launch.signal_lead_s=120"])
    squeue = _exe(tmp_path / "bin", "squeue", "echo 10:00\n")
    env = {"SLURM_JOB_ID": "9"}
    with caplog.at_level(logging.INFO):
        left = slurm_time_left(job.launch, SingleComm(), env=env, squeue=str(squeue))
    assert left == 600
    assert "Slurm job 9 has 0:10:00 left (squeue)" in caplog.text
    assert time_limit_deadline(job.launch, env, now=0.0, time_left_s=left) == 600 - 120 - 60
    assert slurm_time_left(job.launch, SingleComm(), env={}) is None  # outside Slurm


def test_without_squeue_launch_time_is_used_with_a_log_line(caplog) -> None:
    job = load_job(ROOT / SMOKE, ["launch.time=00:20:00"])
    import time

    env = {"SLURM_JOB_ID": "9", "SLURM_JOB_START_TIME": str(time.time() - 299.5)}
    with caplog.at_level(logging.INFO):
        left = slurm_time_left(job.launch, SingleComm(), env=env, squeue="no-such-squeue")
    assert left == pytest.approx(900, abs=2)
    assert ("cannot ask Slurm for the time left (no-such-squeue not found on PATH): using "
            "launch.time 00:20:00, 0:15:0") in caplog.text


def test_a_limit_that_leaves_no_time_to_train_is_warned_about(tmp_path, caplog) -> None:
    job = load_job(ROOT / SMOKE, ["launch.time=00:03:00"])
    squeue = _exe(tmp_path / "bin", "squeue", "echo 2:58\n")
    with caplog.at_level(logging.WARNING):
        slurm_time_left(job.launch, SingleComm(), env={"SLURM_JOB_ID": "3"}, squeue=str(squeue))
    assert ("the Slurm time limit leaves 0:00:00 to train: training stops "
            "launch.signal_lead_s (120) + 60 s before the limit; ask for more time "
            "(launch.time or sbatch --time) or lower launch.signal_lead_s") in caplog.text
    assert time_limit_warning(job.launch) == (
        "launch.time 00:03:00 leaves 0 s to train (training stops launch.signal_lead_s 120 + "
        "60 s before the limit): raise launch.time (or sbatch --time) or lower "
        "launch.signal_lead_s")
    assert time_limit_warning(load_job(ROOT / SMOKE, ["launch.time=00:06:00"]).launch) is None


def test_launch_warns_about_a_short_limit_in_one_line(tmp_path) -> None:
    proc = run_harness("launch", str(ROOT / SMOKE), "--scheduler", "slurm", "-o",
                       str(tmp_path / "s.sbatch"), "--set", "launch.time=00:03:00",
                       "--set", f"launch.run_dir={tmp_path / 'runs'}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [(
        f"harness: warning: {ROOT / SMOKE}: launch.time 00:03:00 leaves 0 s to train "
        "(training stops launch.signal_lead_s 120 + 60 s before the limit): raise launch.time "
        "(or sbatch --time) or lower launch.signal_lead_s")]


# ------------------------------------------------------------------ the sbatch script

SMOKE_2_NODES = """#!/bin/bash
#SBATCH --job-name=smoke
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --overcommit
#SBATCH --time=01:00:00
#SBATCH --chdir=/shared/harness
#SBATCH --output=/shared/harness/runs/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@120

set -euo pipefail
cd /shared/harness
mkdir -p runs
""" + ATTEMPT + """
export PYTHONUNBUFFERED=1
export PMIX_MCA_psec=native
export PMIX_MCA_gds=hash
export OMP_NUM_THREADS=1

srun --kill-on-bad-exit=1 --cpus-per-task=1 --mpi=pmix /shared/harness/.venv/bin/python \
-m harness.train --job jobs/smoke.yaml --resume auto --set launch.nodes=2
"""


def test_smoke_on_two_nodes_requeues_appends_and_resumes() -> None:
    job = load_job(ROOT / SMOKE, ["launch.nodes=2"])
    script = sbatch_script(LaunchSpec.of(job), SMOKE, python="/shared/harness/.venv/bin/python",
                           args=["--set", "launch.nodes=2"], workdir="/shared/harness")
    assert script == SMOKE_2_NODES


def test_hosts_exclusive_threads_and_binding_reach_the_script() -> None:
    job = load_job(ROOT / SMOKE, ["launch.nodes=2", "launch.hosts=[node0, node1]",
                                  "train.threads_per_rank=4", "power.enabled=true",
                                  "launch.bind_to=core", "launch.oversubscribe=false"])
    script = sbatch_script(LaunchSpec.of(job), SMOKE, workdir="/w")
    lines = script.splitlines()
    assert lines[1:8] == ["#SBATCH --job-name=smoke", "#SBATCH --nodes=2",
                          "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=4",
                          "#SBATCH --nodelist=node0,node1", "#SBATCH --exclusive",
                          "#SBATCH --time=01:00:00"]
    assert lines[-1].startswith("srun --kill-on-bad-exit=1 --cpus-per-task=4 --cpu-bind=cores "
                                "--mpi=pmix python -m harness.train")
    # Power governed but the user said no: no --exclusive (the doctor warns).
    job = load_job(ROOT / SMOKE, ["power.enabled=true", "launch.exclusive=false"])
    assert "--exclusive" not in sbatch_script(LaunchSpec.of(job), SMOKE)
    # Inference: its own threads, and no --resume.
    job = load_job(ROOT / SMOKE, ["infer.threads_per_rank=3"])
    script = sbatch_script(LaunchSpec.of(job), SMOKE, module="harness.infer")
    assert "#SBATCH --cpus-per-task=3\n" in script and "--resume" not in script


@pytest.mark.parametrize("override, expected", [
    ("launch.exclusive=sometimes", "launch.exclusive: expected true or false, got 'sometimes'"),
    ("launch.hosts=['a b', c]", "launch.hosts[0]: 'a b' is not a host name"),
    ("launch.hosts=['n%j', c]", "launch.hosts[0]: 'n%j' is not a host name"),
])
def test_new_script_values_are_validated(override: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_job(ROOT / SMOKE, ["launch.nodes=2", override])


def test_each_attempt_says_its_restart_count_in_the_log(tmp_path) -> None:
    """bash runs the script as Slurm would on the second attempt (after one requeue)."""
    calls = tmp_path / "srun-argv"
    bin_dir = tmp_path / "bin"
    _exe(bin_dir, "srun", f'printf "%s\\n" "$@" > {calls}\necho "PMIX $PMIX_MCA_psec"\n')
    workdir = tmp_path / "w"
    workdir.mkdir()
    job = load_job(ROOT / SMOKE, ["launch.nodes=2"])
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(LaunchSpec.of(job), SMOKE, workdir=str(workdir)))
    env = _path_env(bin_dir, SLURM_JOB_ID="77", SLURM_RESTART_COUNT="1",
                    SLURM_JOB_NODELIST="node[0-1]")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.endswith(" harness: Slurm job 77 attempt 2 (SLURM_RESTART_COUNT=1) on "
                          "node[0-1]") and first[:4].isdigit()
    assert second == "PMIX native"
    assert calls.read_text().split()[-4:] == ["--job", SMOKE, "--resume", "auto"]
    assert (workdir / "runs").is_dir()


def test_launch_creates_the_log_folder_before_sbatch_opens_it(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    seen = tmp_path / "seen"
    # A fake sbatch that, like Slurm, needs --output's folder to exist at submission.
    _exe(bin_dir, "sbatch", f'out=$(sed -n "s/^#SBATCH --output=//p" "$1")\n'
                            f'[ -d "$(dirname "$out")" ] || {{ echo "JobLaunchFailure" >&2; '
                            f'exit 1; }}\necho "$out" > {seen}\necho "Submitted batch job 5"\n')
    job = tmp_path / "job.yaml"
    job.write_text("name: sub\nlaunch:\n  run_dir: deep/logs\n")
    proc = run_harness("launch", str(job), "--submit", cwd=tmp_path, env=_path_env(bin_dir))
    assert proc.returncode == 0, proc.stderr
    assert "Submitted batch job 5" in proc.stdout
    assert seen.read_text().strip() == f"{tmp_path}/deep/logs/slurm-%j.out"  # absolute


# ------------------------------------------------------------------ one world per task

def test_srun_with_the_wrong_mpi_plugin_says_what_to_do() -> None:
    info = DistInfo(0, 0, 2, 1, "slurm")
    assert mpi_world_mismatch(info, 1) == (
        "srun started 2 tasks but each is its own MPI world: use srun --mpi=pmix (the PyPI "
        "Open MPI speaks PMIx only; launch.srun_mpi)")
    assert "built against another MPI" in mpi_world_mismatch(DistInfo(0, 0, 4, 2, "openmpi"), 2)
    # MPICH and Intel MPI (as MPI_Get_library_version names them) start under PMI-2.
    assert mpi_world_mismatch(info, 1, "MPICH Version: 5.0.2") == (
        "srun started 2 tasks but each is its own MPI world: use srun --mpi=pmi2 (MPICH starts "
        "under Slurm's PMI-2; launch.srun_mpi)")
    assert "--mpi=pmi2 (Intel MPI starts" in mpi_world_mismatch(
        info, 1, "Intel(R) MPI Library 2021.18.1 for Linux* OS")


def test_a_task_of_srun_mpi_none_is_one_line(tmp_path) -> None:
    """What `srun --mpi=none` gives each task: Slurm's variables for 2 tasks, an MPI world of
    one (mpi4py initialises as a singleton)."""
    pytest.importorskip("mpi4py")
    env = _path_env(tmp_path, SLURM_JOB_ID="12", SLURM_PROCID="0", SLURM_NTASKS="2",
                    SLURM_STEP_NUM_TASKS="2", SLURM_LOCALID="0", SLURM_NODEID="0",
                    SLURM_STEP_TASKS_PER_NODE="1(x2)", OMPI_ALLOW_RUN_AS_ROOT="1",
                    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("MASTER_ADDR", None)
    env.pop("MASTER_PORT", None)
    proc = run_harness("train", "--job", SMOKE, "--run-dir", str(tmp_path / "runs"),
                       env=env, timeout=240)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "harness: error: srun started 2 tasks but each is its own MPI world: use srun "
        "--mpi=pmix (the PyPI Open MPI speaks PMIx only; launch.srun_mpi)")
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ names and resumes

@pytest.mark.mpi_impl
def test_node_name_is_slurms_else_the_host_name() -> None:
    import socket

    assert node_name({"SLURMD_NODENAME": "node1"}) == "node1"
    assert node_name({}) == socket.gethostname()
    # Intel MPI's Hydra copies mpiexec's node's SLURMD_NODENAME to every rank (test bed: both
    # ranks said node0): a Hydra rank names its own host.
    assert node_name({"SLURMD_NODENAME": "node0", "I_MPI_HYDRA_UUID": "614a"}) == (
        socket.gethostname())
    job = slurm_job({"SLURM_JOB_ID": "5", "SLURM_RESTART_COUNT": "2", "SLURMD_NODENAME": "n0",
                     "SLURM_JOB_NODELIST": "n[0-1]", "SLURM_JOB_NAME": "smoke"})
    assert job is not None and job.to_dict() == {"job_id": "5", "restart_count": 2,
                                                 "job_name": "smoke", "nodelist": "n[0-1]",
                                                 "node": "n0"}
    assert job.attempt == 3 and slurm_job({}) is None


def _fake_run(parent: Path, name: str, job_id: str | None, ckpt: bool,
              resumed_by: str | None = None) -> Path:
    run = parent / name
    (run / "checkpoints").mkdir(parents=True)
    manifest: dict = {"world_size": 1}
    if job_id:
        manifest["slurm"] = {"job_id": job_id, "restart_count": 0}
    if resumed_by:
        manifest["resumes"] = [{"slurm": {"job_id": resumed_by, "restart_count": 0}}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    if ckpt:
        (run / "checkpoints" / "ckpt-000002.pt").write_bytes(b"x")
    return run


def test_resume_auto_under_slurm_continues_only_this_job_ids_run(tmp_path) -> None:
    job = load_job(ROOT / SMOKE)
    older = _fake_run(tmp_path, "smoke-20261201-100000", "100", ckpt=True)
    _fake_run(tmp_path, "smoke-20261201-110000", "200", ckpt=True)
    resumed = _fake_run(tmp_path, "smoke-20261201-090000", "50", ckpt=True, resumed_by="300")
    _fake_run(tmp_path, "smoke-20261201-120000", "400", ckpt=False)
    (tmp_path / "smoke-latest").symlink_to("smoke-20261201-110000")
    parent = str(tmp_path)
    assert latest_resumable(job, parent, env={"SLURM_JOB_ID": "100"}) == str(older)
    assert latest_resumable(job, parent, env={"SLURM_JOB_ID": "300"}) == str(resumed)
    assert latest_resumable(job, parent, env={"SLURM_JOB_ID": "999"}) is None  # a new job
    assert latest_resumable(job, parent, env={"SLURM_JOB_ID": "400"}) is None  # no ckpt yet
    # Outside Slurm: the latest run, as before.
    assert latest_resumable(job, parent, env={}) == str((tmp_path / "smoke-latest").resolve())


def test_requeued_training_resumes_its_own_run_and_records_the_attempts(tmp_path) -> None:
    """Real runs with Slurm's variables: job 101 stops after 2 steps; a new job 202 starts a new
    run; job 101 requeued (SLURM_RESTART_COUNT=1) continues its own run at step 3."""
    bin_dir = tmp_path / "bin"
    _exe(bin_dir, "squeue", "echo 1:00:00\n")
    runs = tmp_path / "runs"

    def train(job_id: str, restarts: str, *extra: str) -> subprocess.CompletedProcess:
        env = _path_env(bin_dir, SLURM_JOB_ID=job_id, SLURM_RESTART_COUNT=restarts,
                        SLURMD_NODENAME="node7", SLURM_JOB_NODELIST="node7")
        return run_harness("train", "--job", SMOKE, "--run-dir", str(runs), "--resume", "auto",
                           "--log-format", "plain", "--set", "power.enabled=true",
                           "--set", "power.backend=simulated", "--set", "power.sim_gpus_per_node=2",
                           *extra, env=env, timeout=240)

    first = train("101", "0", "--stop-after", "2")
    assert first.returncode == 0, first.stderr
    (run_a,) = [d for d in runs.iterdir() if not d.is_symlink()]
    other = train("202", "0", "--stop-after", "1")
    assert other.returncode == 0, other.stderr
    assert "no earlier run of Slurm job 202 with a checkpoint: starting a new run" in other.stderr
    again = train("101", "1")
    assert again.returncode == 0, again.stderr
    assert f"--resume auto: continuing {run_a}" in again.stderr
    assert "resuming" in again.stderr and "from step 2" in again.stderr
    assert len([d for d in runs.iterdir() if not d.is_symlink()]) == 2
    manifest = json.loads((run_a / "manifest.json").read_text())
    assert manifest["slurm"] == {"job_id": "101", "restart_count": 0, "job_name": "",
                                 "nodelist": "node7", "node": "node7"}
    assert manifest["nodes"] == ["node7"] and manifest["ranks"][0]["host"] == "node7"
    assert [r["slurm"]["restart_count"] for r in manifest["resumes"]] == [1]
    summary = json.loads((run_a / "summary.json").read_text())
    assert summary["steps"] == 4
    log = (run_a / "train.log").read_text()
    assert "Slurm job 101 attempt 1 (SLURM_RESTART_COUNT=0) on node7" in log
    assert "Slurm job 101 attempt 2 (SLURM_RESTART_COUNT=1) on node7" in log
    assert "Slurm job 101 has 1:00:00 left (squeue)" in log
    # The power folder keeps its index name and says which node it is; the report shows it.
    assert json.loads((run_a / "power/node000/node.json").read_text()) == {"index": 0,
                                                                            "host": "node7"}
    from reports.rundata import read_power_dir

    pd = read_power_dir(run_a / "power")
    assert pd is not None and [n.label for n in pd.nodes] == ["node000 (node7)"]


def test_other_ranks_log_tags_use_slurms_node_name(monkeypatch, capsys) -> None:
    from harness.outputs.logs import setup_logging

    monkeypatch.setenv("SLURMD_NODENAME", "node1")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(rank=3, world_size=4)
        logging.getLogger("harness.x").warning("hello")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    assert "WARNING node1:3 harness.x: hello" in capsys.readouterr().err

