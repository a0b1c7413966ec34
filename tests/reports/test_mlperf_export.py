"""harness report --mlperf-out: a simulated run's power folder as MLPerf result and power logs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.cluster.distributed import DistInfo, SingleComm
from harness.config import job_from_dict
from power.session import PowerSession
from tests.conftest import run_harness

pytest.importorskip("mlperf_logging")


def _simulated_run(tmp_path: Path) -> Path:
    run = tmp_path / "sim-20260101-000000"
    job = job_from_dict({"name": "sim", "power": {"enabled": True, "backend": "simulated",
                                                  "sim_gpus_per_node": 2, "sample_hz": 20}})
    info = DistInfo(rank=0, local_rank=0, world_size=1, local_world_size=1, launcher="none")
    with PowerSession(job.power, info, SingleComm(), run) as session:
        time.sleep(1.0)
        session.add_images(500)
    (run / "summary.json").write_text(json.dumps({"job": "sim", "power": session.summary(500)}))
    return run


def test_report_writes_mlperf_logs_that_pass_the_checker(tmp_path: Path) -> None:
    from power.mlperf import check_power_log, check_result_log

    run = _simulated_run(tmp_path)
    out = tmp_path / "mlperf"
    proc = run_harness("report", str(run), "-o", str(tmp_path / "r.html"), "--mlperf-out",
                       str(out), "--mlperf-org", "TeamX")
    assert proc.returncode == 0, proc.stderr
    assert "mlperf:" in proc.stdout
    result = out / "result_0.txt"
    node = out / "power" / "result_0" / "node_0.txt"
    assert result.is_file() and node.is_file()
    text = result.read_text()
    assert '"TeamX"' in text and '"2xSimulated A100-SXM4"' in text
    assert node.read_text().count('"power_reading"') >= 10
    ok, messages = check_result_log(result)
    assert ok, messages
    ok, messages = check_power_log(node)
    assert ok, messages


def test_mlperf_out_without_power_samples_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "nopower"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    proc = run_harness("report", str(run), "-o", str(tmp_path / "r.html"), "--mlperf-out",
                       str(tmp_path / "m"))
    assert proc.returncode == 2 and "no power samples" in proc.stderr
