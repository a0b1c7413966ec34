"""The Horovod engine (train.backend: horovod) when Horovod is installed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_harness, run_mpi

HAVE_HOROVOD = importlib.util.find_spec("horovod") is not None


@pytest.mark.mpi
@pytest.mark.skipif(not HAVE_HOROVOD, reason="Horovod is not installed: release 0.28.1 does not "
                    "build against torch 2.13 without patching CMAKE_CXX_STANDARD to 17 and "
                    "takes ~5 min to compile, so CI does not build it (see README)")
def test_horovod_two_ranks_train_in_sync(mpirun: str, tmp_path: Path) -> None:
    proc = run_mpi(mpirun, 2, ["-m", "harness.train", "--job", str(ROOT / "jobs/smoke.yaml"),
                               "--quiet", "--run-dir", str(tmp_path), "--set",
                               "train.backend=horovod"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["backend"] == "horovod" and summary["replicas_in_sync"] is True


@pytest.mark.skipif(HAVE_HOROVOD, reason="Horovod is installed")
def test_horovod_missing_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_harness("train", "--job", str(ROOT / "jobs/smoke.yaml"), "--quiet", "--run-dir",
                       str(tmp_path), "--set", "train.backend=horovod")
    assert proc.returncode == 2
    assert "Horovod is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr
