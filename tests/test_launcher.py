"""Launch lines are pure functions: compared as strings, no cluster needed."""
from __future__ import annotations

import subprocess

import pytest

from harness.config import load_job
from harness.launcher import format_command, mpirun_command, sbatch_script
from tests.conftest import ROOT, run_harness

FINAL = "jobs/asc19-final.yaml"


def test_final_mpirun_line_has_16_ranks() -> None:
    job = load_job(ROOT / FINAL)
    cmd = mpirun_command(job, FINAL, python="python", mpirun="mpirun")
    assert format_command(cmd) == (
        "mpirun -np 16 --host node01:4,node02:4,node03:4,node04:4 --map-by ppr:4:node "
        "--bind-to socket -x PYTHONUNBUFFERED=1 -x OMP_NUM_THREADS=4 -x NCCL_DEBUG=WARN "
        "python -m harness.train --job jobs/asc19-final.yaml")


def test_demo_mpirun_line_oversubscribes_and_runs_as_root() -> None:
    job = load_job(ROOT / "jobs/demo.yaml")
    cmd = mpirun_command(job, "jobs/demo.yaml", python="py", mpirun="/x/mpirun",
                         module="harness.infer", args=["--set", "train.steps=3"],
                         allow_root=True)
    assert format_command(cmd) == (
        "/x/mpirun -np 2 --allow-run-as-root --map-by ppr:2:node:OVERSUBSCRIBE --bind-to none "
        "-x PYTHONUNBUFFERED=1 -x OMP_NUM_THREADS=1 --mca btl self,sm --mca pml ob1 "
        "py -m harness.infer --job jobs/demo.yaml --set train.steps=3")


def test_final_sbatch_script() -> None:
    job = load_job(ROOT / FINAL, ["launch.partition=gpu", "launch.account=asc"])
    script = sbatch_script(job, FINAL, python="python", workdir="/shared/harness")
    assert script == """#!/bin/bash
#SBATCH --job-name=asc19-final
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --time=04:00:00
#SBATCH --partition=gpu
#SBATCH --account=asc
#SBATCH --output=runs/slurm-%j.out

set -euo pipefail
cd /shared/harness
mkdir -p runs
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=4
export NCCL_DEBUG=WARN

srun --mpi=pmix --cpu-bind=sockets python -m harness.train --job jobs/asc19-final.yaml
"""


def test_sbatch_script_is_valid_bash(tmp_path) -> None:
    job = load_job(ROOT / FINAL)
    path = tmp_path / "job.sbatch"
    path.write_text(sbatch_script(job, FINAL))
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_cli_dry_run_prints_the_line() -> None:
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert " -np 16 " in line
    assert line.endswith("--map-by ppr:4:node --bind-to socket -x PYTHONUNBUFFERED=1 "
                         "-x OMP_NUM_THREADS=4 -x NCCL_DEBUG=WARN python -m harness.train "
                         "--job jobs/asc19-final.yaml")


def test_cli_slurm_writes_script(tmp_path) -> None:
    out = tmp_path / "final.sbatch"
    proc = run_harness("launch", str(ROOT / FINAL), "--scheduler", "slurm", "-o", str(out),
                       "--python", "python")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "#SBATCH --nodes=4\n#SBATCH --ntasks-per-node=4\n#SBATCH --gpus-per-node=4" in text
    assert text.rstrip().endswith(f"--job {ROOT / FINAL}")


@pytest.mark.parametrize("sub", ["doctor", "launch"])
def test_every_subcommand_has_help(sub: str) -> None:
    proc = run_harness(sub, "--help")
    assert proc.returncode == 0
    assert "usage: harness " + sub in proc.stdout


def test_top_level_help_lists_subcommands() -> None:
    from harness.cli import SUBCOMMANDS

    proc = run_harness("--help")
    assert proc.returncode == 0
    for name in SUBCOMMANDS:
        assert name in proc.stdout
