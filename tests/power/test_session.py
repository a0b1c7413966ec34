"""The power session around a workload, on simulated GPUs: capped start, figures, restore."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.cluster.distributed import SingleComm, dist_info_from_env
from harness.config import load_job
from power.session import NullPowerSession, PowerSession, power_session
from tests.conftest import ROOT

DEMO = ROOT / "jobs" / "demo.yaml"


def _job(**power: object):
    sets = [f"power.{k}={v}" for k, v in {"enabled": "true", "backend": "simulated",
                                           **power}.items()]
    return load_job(str(DEMO), sets)


def test_disabled_power_is_a_no_op() -> None:
    job = load_job(str(DEMO), ["power.enabled=false"])
    session = power_session(job.power, dist_info_from_env({}), SingleComm(), Path("unused"))
    assert isinstance(session, NullPowerSession)
    assert session.summary(10) == {"enabled": False}


def test_session_starts_capped_reports_figures_and_restores_limits(tmp_path: Path) -> None:
    job = _job(budget_w=1500, headroom_w=100, sim_gpus_per_node=4, sim_profile="A100-SXM4")
    session = PowerSession(job.power, dist_info_from_env({}), SingleComm(), tmp_path)
    with session:
        gpus = session._gpus
        original = 400_000  # A100-SXM4's default limit
        caps = [g.get_power_limit_mw() for g in gpus]
        # Started below the default limit, and the GPUs' caps alone fit the budget.
        assert all(c < original for c in caps) and sum(caps) / 1000 <= 1500 - 100, caps
        time.sleep(1.5)
        session.add_images(120)
    summary = session.summary(120)
    assert [g.get_power_limit_mw() for g in gpus] == [original] * 4  # restored on exit
    assert summary["enabled"] and summary["simulated"] and summary["gpus_per_node"] == 4
    assert summary["images"] == 120
    assert summary["energy_j"] > 0
    assert summary["j_per_image"] == pytest.approx(summary["energy_j"] / 120, rel=1e-6)
    assert summary["peak_cluster_w"] <= 1500
    node_dir = tmp_path / "power" / "node000"
    assert (node_dir / "gpu_power.csv").stat().st_size > 0


def test_limits_are_restored_when_the_workload_fails(tmp_path: Path) -> None:
    session = PowerSession(_job().power, dist_info_from_env({}), SingleComm(), tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with session:
            gpus = session._gpus
            assert any(g.get_power_limit_mw() < 400_000 for g in gpus)
            raise RuntimeError("boom")
    assert all(g.get_power_limit_mw() == 400_000 for g in gpus)
