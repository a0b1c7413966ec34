"""power.session on simulated GPUs: the job's sensor settings, a plan's starting caps,
the sensors recorded in the summary, and torchrun's node leaders."""
from __future__ import annotations

import json

import pytest

import power.nvml
from fileio.user_error import UserError
from harness.cluster.distributed import DistInfo, SingleComm
from harness.config import job_from_dict
from power import MonotonicClock
from power.backends import open_gpus
from power.plan import PLAN_ENV
from power.session import PowerSession


def _job(**power_keys: object):
    return job_from_dict({"name": "t", "power": {"enabled": True, "backend": "simulated",
                                                  "sim_gpus_per_node": 4, **power_keys}}).power


def _single() -> DistInfo:
    return DistInfo(rank=0, local_rank=0, world_size=1, local_world_size=1, launcher="none")


def test_sim_sensor_reaches_the_simulated_gpus() -> None:
    default = open_gpus(_job(), MonotonicClock(start_at_zero=True))
    assert {g.get_power_sensor().kind for g in default} == {"instant"}
    avg = open_gpus(_job(sim_sensor="average_1s"), MonotonicClock(start_at_zero=True))
    assert {(g.get_power_sensor().kind, g.get_power_sensor().window_s) for g in avg} == {
        ("average", 1.0)}


def test_power_source_reaches_open_nvml_gpus(monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr(power.nvml, "open_nvml_gpus", lambda **kw: seen.update(kw) or ["gpu"])
    assert open_gpus(_job(backend="nvml", power_source="usage"), None) == ["gpu"]
    assert seen == {"power_source": "usage"}


def _run_session(job, tmp_path, monkeypatch) -> tuple[list[int], dict]:
    """Enter a session; return every GPU's limit (mW) when the governor starts, and the summary."""
    started: list[int] = []
    original = power.Governor.start

    def start(gov) -> None:
        started.extend(g.get_power_limit_mw() for g in gov.gpus)
        original(gov)

    monkeypatch.setattr(power.Governor, "start", start)
    with PowerSession(job, _single(), SingleComm(), tmp_path) as session:
        session.add_images(10)
    return started, session.summary(10)


def test_a_plan_sets_the_starting_caps(tmp_path, monkeypatch, caplog) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"budget_w": 3000, "headroom_w": 150, "nodes": 1,
                                "gpus_per_node": 3, "caps_w": [[250, 180, 390]]}))
    started, summary = _run_session(_job(plan=str(plan)), tmp_path, monkeypatch)
    # The planned caps; the 4th GPU (unplanned) at its lowest, and said.
    assert started == [250_000, 180_000, 390_000, 100_000]
    assert summary["plan"] == str(plan)
    assert "node 0 has 4 GPUs, the plan uses 3: the other 1 start at their lowest limit" \
        in caplog.text


def test_a_plan_for_another_gpu_is_refused_not_clamped(tmp_path, monkeypatch) -> None:
    """Issue #32: a cap outside this GPU's range was clamped into it without a word."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"budget_w": 3000, "headroom_w": 150, "nodes": 1,
                                "gpus_per_node": 3, "caps_w": [[250, 180, 420]]}))
    with pytest.raises(UserError, match=r"planned cap 420 W of node 0 GPU 2 is outside this "
                                        r"GPU's 100-400 W range \(a plan for another GPU\)"):
        _run_session(_job(plan=str(plan)), tmp_path, monkeypatch)


def test_the_plan_env_is_read_when_the_job_has_no_plan(tmp_path, monkeypatch) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"budget_w": 3000, "headroom_w": 150,
                                "caps_w": [[200, 200, 200, 200]]}))
    monkeypatch.setenv(PLAN_ENV, str(plan))
    started, _ = _run_session(_job(), tmp_path / "run", monkeypatch)
    assert started == [200_000] * 4


def test_without_a_plan_gpus_start_at_an_even_share(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(PLAN_ENV, raising=False)
    started, summary = _run_session(_job(), tmp_path, monkeypatch)
    # The even share, or lower where the governor's first step (on entry) already capped lower.
    assert len(started) == 4 and max(started) < 400_000
    assert summary["plan"] == ""


def test_a_bad_plan_is_one_line(tmp_path) -> None:
    with pytest.raises(UserError, match=r"power.plan: .*no such plan file"):
        PowerSession(_job(plan=str(tmp_path / "nope.json")), _single(), SingleComm(), tmp_path)


def test_summary_records_each_gpus_power_reading(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(PLAN_ENV, raising=False)
    _, summary = _run_session(_job(sim_sensor="average_1s"), tmp_path, monkeypatch)
    sensors = summary["power_sensors"]
    assert [s["gpu"] for s in sensors] == [0, 1, 2, 3]
    assert {(s["node"], s["kind"], s["window_s"]) for s in sensors} == {(0, "average", 1.0)}
    json.dumps(summary)  # summary.json-ready


class _TorchLikeComm(SingleComm):
    """A comm without ``raw`` (no mpi4py) that offers ``node_leaders``, as TorchComm does."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def node_leaders(self, local_rank: int):
        self.asked.append(local_rank)
        return power.SingleProcessComm() if local_rank == 0 else None


def test_torchrun_ranks_get_node_leaders_without_mpi(tmp_path) -> None:
    comm = _TorchLikeComm()
    info = DistInfo(rank=1, local_rank=1, world_size=2, local_world_size=2, launcher="torchrun")
    session = PowerSession(_job(), info, comm, tmp_path)
    assert comm.asked == [1] and session._leaders is None
    info0 = DistInfo(rank=0, local_rank=0, world_size=2, local_world_size=2, launcher="torchrun")
    assert PowerSession(_job(), info0, comm, tmp_path)._leaders is not None


def test_several_ranks_without_any_comm_are_refused(tmp_path) -> None:
    info = DistInfo(rank=0, local_rank=0, world_size=2, local_world_size=2, launcher="none")
    with pytest.raises(UserError, match="mpi4py or torch.distributed"):
        PowerSession(_job(), info, SingleComm(), tmp_path)
