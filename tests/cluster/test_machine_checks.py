"""harness doctor: GPU checks through the power interface, job requirements, exit codes."""
from __future__ import annotations

import json

import power
from harness.cluster.machine_checks import check_gpus, job_can_run, plan_checks, run_checks
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
    from harness.cluster.machine_checks import job_requirements

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
    import harness.cluster.machine_checks as doctor
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
