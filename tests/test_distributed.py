"""Distributed bootstrap: launcher variables, sharding, and a real ``mpirun -np 2``."""
from __future__ import annotations

import json

import pytest

from harness.distributed import DistInfo, SingleComm, dist_info_from_env, shard, unshard
from harness.errors import UserError
from tests.conftest import run_mpi


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


def test_node_index_and_master() -> None:
    info = DistInfo(6, 2, 16, 4, "openmpi")
    assert info.node_index == 1 and not info.is_master and info.distributed


def test_inconsistent_env_is_a_user_error() -> None:
    with pytest.raises(UserError, match="inconsistent"):
        dist_info_from_env({"PMI_RANK": "4", "PMI_SIZE": "4"})


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
def test_mpirun_two_ranks_agree_on_world_and_port(mpirun: str) -> None:
    proc = run_mpi(mpirun, 2, ["-m", "tests.mpi_programs.bootstrap_probe"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in rows) == [0, 1]
    assert {r["world_size"] for r in rows} == {2}
    assert {r["comm_size"] for r in rows} == {2}
    assert {r["launcher"] for r in rows} == {"openmpi"}
    assert len({(r["addr"], r["port"]) for r in rows}) == 1
    assert 1024 <= rows[0]["port"] <= 65535
    assert {r["allreduce"] for r in rows} == {3.0}
