"""Distributed bootstrap: launcher variables, sharding, and a real ``mpirun -np 2``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fileio.user_error import UserError
from harness.cluster.distributed import (
    DistInfo,
    SingleComm,
    dist_info_from_env,
    free_port,
    get_comm,
    get_dist_info,
    reset_comm,
    shard,
    slurm_tasks_on_node,
    unshard,
)
from harness.cluster.launcher import LaunchSpec, launch_command
from harness.config import load_job
from tests.conftest import ROOT, mpi_family, run_mpi


@pytest.mark.mpi_impl
@pytest.mark.parametrize("env,expected", [
    ({}, DistInfo(0, 0, 1, 1, "none")),
    ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"},
     DistInfo(5, 1, 16, 4, "openmpi")),
    ({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"},
     DistInfo(3, 1, 4, 2, "mpich")),
    ({"SLURM_PROCID": "7", "SLURM_NTASKS": "8", "SLURM_LOCALID": "3",
      "SLURM_NTASKS_PER_NODE": "4(x2)"}, DistInfo(7, 3, 8, 4, "slurm")),
    ({"RANK": "1", "WORLD_SIZE": "2"}, DistInfo(1, 1, 2, 2, "torchrun")),
])
def test_dist_info_from_env(env: dict[str, str], expected: DistInfo) -> None:
    assert dist_info_from_env(env) == expected


# What each launcher really sets (trimmed), and what the bootstrap must make of it.
LAUNCHER_ENVS = [
    ("openmpi", {"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "16",
                 "OMPI_COMM_WORLD_LOCAL_RANK": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
                 "PMIX_RANK": "6"}, DistInfo(6, 2, 16, 4, "openmpi")),
    ("openmpi inside an sbatch shell", {
        "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8",
        "OMPI_COMM_WORLD_LOCAL_RANK": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
        "SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"},
     DistInfo(3, 3, 8, 4, "openmpi")),
    ("mpich hydra", {"PMI_RANK": "5", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1",
                     "MPI_LOCALNRANKS": "4"}, DistInfo(5, 1, 8, 4, "mpich")),
    ("intel mpi", {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0",
                   "MPI_LOCALNRANKS": "2", "PMI_FD": "9",
                   "I_MPI_HYDRA_UUID": "614a0000-e93f-9ce4-db61-06002ad7165c"},
     DistInfo(2, 0, 4, 2, "intelmpi")),
    # MPICH under srun --mpi=pmi2 on the test bed (2 nodes, 1 task each): PMI_RANK/PMI_SIZE
    # without a local rank, so Slurm's say where the rank is (node 1, local rank 0 of 1).
    ("mpich under srun --mpi=pmi2", {
        "PMI_FD": "11", "PMI_JOBID": "1.0", "PMI_RANK": "1", "PMI_SIZE": "2",
        "SLURM_LOCALID": "0", "SLURM_NODEID": "1", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}, DistInfo(1, 0, 2, 1, "slurm")),
    ("PMI_RANK/PMI_SIZE alone", {"PMI_RANK": "1", "PMI_SIZE": "2"},
     DistInfo(1, 1, 2, 2, "mpich")),
    ("mpich with PMI_LOCAL_*", {"PMI_RANK": "3", "PMI_SIZE": "4", "PMI_LOCAL_RANK": "1",
                                "PMI_LOCAL_SIZE": "2"}, DistInfo(3, 1, 4, 2, "mpich")),
    ("srun uneven nodes", {"SLURM_PROCID": "6", "SLURM_NTASKS": "7", "SLURM_STEP_NUM_TASKS": "7",
                           "SLURM_LOCALID": "0", "SLURM_NODEID": "3",
                           "SLURM_STEP_TASKS_PER_NODE": "2(x3),1",
                           "SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_STEP_ID": "0"},
     DistInfo(6, 0, 7, 1, "slurm")),
    ("srun step smaller than the job", {
        "SLURM_PROCID": "1", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_STEP_TASKS_PER_NODE": "2",
        "SLURM_TASKS_PER_NODE": "4(x4)", "SLURM_NTASKS_PER_NODE": "4"},
     DistInfo(1, 1, 2, 2, "slurm")),
    ("torchrun", {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                  "GROUP_RANK": "1", "TORCHELASTIC_RUN_ID": "job",
                  "MASTER_ADDR": "node01", "MASTER_PORT": "29500"},
     DistInfo(5, 1, 8, 4, "torchrun")),
    ("torchrun started by srun (the agent's SLURM_* leak into workers)", {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
        "TORCHELASTIC_RUN_ID": "42", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
        "SLURM_LOCALID": "0", "SLURM_STEP_NUM_TASKS": "2"}, DistInfo(5, 1, 8, 4, "torchrun")),
    ("bare env:// variables", {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0",
                               "LOCAL_WORLD_SIZE": "2"}, DistInfo(0, 0, 4, 2, "torchrun")),
    ("no launcher, unrelated variables", {"SLURM_JOB_ID": "42", "PMI_FD": "3"},
     DistInfo(0, 0, 1, 1, "none")),
]


@pytest.mark.mpi_impl
@pytest.mark.parametrize("label,env,expected", LAUNCHER_ENVS, ids=[e[0] for e in LAUNCHER_ENVS])
def test_bootstrap_per_launcher(monkeypatch: pytest.MonkeyPatch, label: str,
                                env: dict[str, str], expected: DistInfo) -> None:
    for name in [n for n in os.environ if n.startswith(_LAUNCHER_PREFIXES)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_comm()
    assert get_dist_info() == expected
    assert dist_info_from_env(env) == expected


_LAUNCHER_PREFIXES = ("OMPI_", "PMI", "MPI_LOCAL", "SLURM_", "RANK", "WORLD_SIZE", "LOCAL_",
                      "TORCHELASTIC", "GROUP_RANK", "MASTER_", "I_MPI_")


@pytest.mark.parametrize("spec,node,expected", [
    ("4", 0, 4), ("4(x2)", 1, 4), ("2(x3),1", 2, 2), ("2(x3),1", 3, 1), ("2(x3),1", 4, None),
    ("1,3", 1, 3), ("x", 0, None),
])
def test_slurm_tasks_on_node(spec: str, node: int, expected: int | None) -> None:
    assert slurm_tasks_on_node(spec, node) == expected


def test_torchrun_without_rendezvous_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(_LAUNCHER_PREFIXES)]:
        monkeypatch.delenv(name)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}.items():
        monkeypatch.setenv(name, value)
    reset_comm()
    try:
        with pytest.raises(UserError) as info:
            get_comm()
    finally:
        reset_comm()
    assert str(info.value) == ("started by torchrun with 2 ranks without MPI, and MASTER_ADDR "
                               "and MASTER_PORT not set: use torchrun, or an MPI launcher with "
                               "mpi4py installed")


def test_node_index_and_master() -> None:
    info = DistInfo(6, 2, 16, 4, "openmpi")
    assert info.node_index == 1 and not info.is_master and info.distributed


def test_inconsistent_env_is_a_user_error() -> None:
    with pytest.raises(UserError, match="inconsistent"):
        dist_info_from_env({"PMI_RANK": "4", "PMI_SIZE": "4"})
    with pytest.raises(UserError, match="MPI_LOCALRANKID=2 local size 2 PMI_SIZE=4 are incons"):
        dist_info_from_env({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "2",
                            "MPI_LOCALNRANKS": "2"})


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (7, 2), (10, 3), (16, 16), (3, 5)])
def test_shard_unshard_round_trip(n: int, world: int) -> None:
    items = list(range(n))
    parts = [shard(items, r, world) for r in range(world)]
    assert sorted(sum(parts, [])) == items
    assert unshard(parts) == items


def test_single_comm() -> None:
    c = SingleComm()
    assert c.bcast(3) == 3 and c.allgather("x") == ["x"] and c.allreduce_sum(2.5) == 2.5


@pytest.mark.mpi
@pytest.mark.mpi_impl
def test_mpirun_two_ranks_agree_on_world_and_port(mpirun: str) -> None:
    proc = run_mpi(mpirun, 2, ["-m", "tests.mpi_programs.bootstrap_probe"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in rows) == [0, 1]
    assert {r["world_size"] for r in rows} == {2}
    assert {r["comm_size"] for r in rows} == {2}
    assert {r["launcher"] for r in rows} == {mpi_family(mpirun)}  # openmpi, mpich, intelmpi
    assert len({(r["addr"], r["port"]) for r in rows}) == 1
    assert 1024 <= rows[0]["port"] <= 65535
    assert {r["allreduce"] for r in rows} == {3.0}


@pytest.mark.mpi
def test_training_collectives_run_on_gloo_and_a_killed_rank_is_named(mpirun: str,
                                                                    monkeypatch) -> None:
    """After DDP's start-up, training's collectives (``steps_comm``) are a watched gloo group:
    objects and the per-step integers arrive in rank order, and when rank 1 is SIGKILLed
    mid-collective rank 0 gets an error it can put in one line. (Over the job's MPI
    communicator it never does: Open MPI ends it in C, exit 14 on Slurm, nothing said.)"""
    proc = run_mpi(mpirun, 2, ["-m", "tests.mpi_programs.lost_peer_probe"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = sorted((json.loads(line) for line in proc.stdout.splitlines()
                   if line.startswith("{")), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1]
    for r in rows:
        assert r["comm"] == "TorchComm"
        assert r["ints"] == [[0, 7], [1, 7]] and r["objects"] == [{"rank": 0}, {"rank": 1}]

    monkeypatch.setenv("PROBE_KILL_AFTER", "200")
    proc = run_mpi(mpirun, 2, ["-m", "tests.mpi_programs.lost_peer_probe"], timeout=120)
    lost = [json.loads(line) for line in proc.stdout.splitlines() if '"lost"' in line]
    assert proc.returncode != 0
    assert len(lost) == 1 and lost[0]["rank"] == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert lost[0]["lost"].startswith("lost contact with "), lost[0]


def test_torchrun_two_workers_bootstrap_without_mpi(tmp_path) -> None:
    """The line `harness launch` prints for launch.launcher=torchrun, run for real: two workers
    find their ranks and exchange objects through torch.distributed, never loading mpi4py."""
    job = load_job(ROOT / "jobs/smoke.yaml", ["launch.launcher=torchrun", "launch.nodes=1",
                                              "launch.ranks_per_node=2",
                                              f"launch.rdzv_port={free_port()}"])
    cmd = launch_command(LaunchSpec.of(job), "unused.yaml", python=sys.executable,
                         module="tests.mpi_programs.torchrun_probe")
    assert cmd[0] == "env" and "--rdzv-backend" in cmd
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_PREFIXES)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = sorted((json.loads(line) for line in proc.stdout.splitlines()
                   if line.startswith("{")), key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1]
    for r in rows:
        assert (r["world_size"], r["local_world_size"], r["launcher"]) == (2, 2, "torchrun")
        assert r["local_rank"] == r["rank"] == r["comm_rank"] and r["comm_size"] == 2
        assert r["comm"] == "TorchComm" and r["watched"] and not r["mpi4py_loaded"]
        assert r["allgather"] == [0, 10] and r["bcast"] == "from 0"
        assert r["allreduce"] == 4.0 and r["tensor_allreduce"] == 3.0
        assert r["argv"] == ["--job", "unused.yaml"]
    assert rows[0]["gather"] == [{"rank": 0}, {"rank": 1}] and rows[1]["gather"] is None
    assert rows[0]["leaders"] == [0] and rows[1]["leaders"] is None  # one node: one leader
    assert rows[0]["port"] == rows[1]["port"]


def test_a_lost_peer_is_one_line_naming_its_node() -> None:
    """gloo's words when the rank at the other end died become one line that names the
    node (from the address, through the host table) and the host that noticed it."""
    from harness.cluster.distributed import describe_peer_loss

    exc = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection "
                       "closed by peer [127.0.0.1]:40123; peer at [192.0.2.77]:5000")
    line = describe_peer_loss(exc, resolve={"192.0.2.77": "node1"}.get)
    assert line is not None and "\n" not in line
    assert line.startswith("lost contact with node1 (192.0.2.77)") and "Connection closed" in line
    assert describe_peer_loss(ValueError("a bug")) is None
    assert describe_peer_loss(RuntimeError("Connection reset by peer"), resolve=lambda a: None
                              ).startswith(
        "lost contact with another rank")
