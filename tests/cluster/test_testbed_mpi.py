"""This venv's MPI (Open MPI, MPICH or Intel MPI) on the 2-node Slurm test bed (issue 29).

Run under each MPI (``make test-mpi MPI=mpich|intel``; CI): srun with the plugin the harness
picks for it, the script of ``harness launch --scheduler slurm``, and for the Hydra MPIs
``harness launch`` inside an allocation (Hydra starts its proxies with srun).
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.cluster.launcher import DEFAULT_SRUN_MPI
from harness.cluster.mpi_impl import library_mpi, parse_library_version
from harness.commands.machine_checks import find_mpirun
from tests.cluster.conftest import ROOT
from tests.cluster.slurm_jobs import launch, rank_hosts, submit
from tests.cluster.test_testbed import PROBE, assert_two_ranks_over_tcp, probe_records

pytestmark = [pytest.mark.cluster, pytest.mark.mpi_impl]

#: MPICH's UCX netmod finds both namespaces on one kernel and talks through shared memory;
#: its OFI netmod with the tcp provider crosses the bridge as separate machines would.
OVER_TCP = {"mpich": {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}}


@pytest.fixture(scope="module")
def family() -> str:
    found = library_mpi()[0].family
    if found == "unknown":
        pytest.skip("mpi4py loads no MPI library here")
    return found


def test_srun_with_the_harness_plugin_spans_the_nodes(slurm_cluster, family: str) -> None:
    plugin = DEFAULT_SRUN_MPI[family]
    t0 = time.monotonic()
    proc = slurm_cluster.srun(f"--mpi={plugin}", "-N2", "-n2", sys.executable, str(PROBE),
                              timeout=120, env=OVER_TCP.get(family))
    print(f"\n[figure] srun --mpi={plugin} ({family}) 2 ranks on 2 nodes: "
          f"{time.monotonic() - t0:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_two_ranks_over_tcp(slurm_cluster, probe_records(proc.stdout))


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_sbatch_script_trains_on_two_nodes(slurm_cluster, family: str, tmp_path) -> None:
    """The script `harness launch --scheduler slurm` writes for this MPI (srun --mpi=pmix for
    Open MPI, pmi2 for MPICH and Intel MPI): one rank per node, each its node's local rank 0."""
    # launch.launcher stays auto (slurm_jobs' TWO_NODES says srun with pmix)
    script = launch(slurm_cluster, tmp_path, base=("launch.nodes=2", "launch.ranks_per_node=1",
                                                   "train.precision=fp32"))
    assert f"--mpi={DEFAULT_SRUN_MPI[family]} " in script.read_text()
    job = submit(slurm_cluster, script, tmp_path / "runs")
    result = job.wait(timeout=240)
    assert result[:3] == ("COMPLETED", 0, 0), f"{result}\n{job.log()[-3000:]}"
    run_dir = job.run_dir()
    hosts = rank_hosts(run_dir)
    assert sorted(hosts) == [0, 1] and len(set(hosts.values())) == 2, hosts
    m = _manifest(run_dir)
    assert [r["local_rank"] for r in m["ranks"]] == [0, 0]
    assert parse_library_version(m["mpi"]).family == family, m["mpi"]


def test_hydra_launch_inside_an_allocation(slurm_cluster, family: str, tmp_path) -> None:
    """`harness launch` (mpiexec, not srun) in a batch job on 2 nodes: Hydra starts its
    proxies through Slurm, without Slurm's pmix plugin (MpiDefault=pmix on the test bed)."""
    if family == "openmpi":
        pytest.skip("Hydra is MPICH's and Intel MPI's launcher")
    mpirun = find_mpirun()
    assert mpirun is not None
    runs = tmp_path / "runs"
    script = tmp_path / "hydra.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        cd {ROOT}
        export PATH={os.path.dirname(mpirun)}:$PATH
        timeout 200 {sys.executable} -m harness launch jobs/smoke.yaml \\
          --set launch.nodes=2 --set launch.ranks_per_node=1 --set launch.run_dir={runs}
        """))
    job = submit(slurm_cluster, script, runs, "-N2", "--ntasks-per-node=1",
                 f"--output={runs}/slurm-%j.out")
    runs.mkdir(parents=True, exist_ok=True)
    result = job.wait(timeout=240)
    assert result[:3] == ("COMPLETED", 0, 0), f"{result}\n{job.log()[-3000:]}"
    m = _manifest(job.run_dir())
    line = m["launch_line"]["launcher_line"]
    assert line.startswith("env SLURM_MPI_TYPE=none ") and " -n 2 -ppn 1 " in line, line
    assert m["launcher"] == family and m["world_size"] == 2
    assert sorted(m["nodes"]) == sorted(slurm_cluster.nodes[:2])
    assert [r["local_rank"] for r in m["ranks"]] == [0, 0]
