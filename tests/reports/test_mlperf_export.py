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


def test_mlperf_power_logs_cover_exactly_the_summary_and_report_window(tmp_path: Path) -> None:
    from power.cluster_series import read_cluster_series
    from power.mlperf import mlperf_energy_j
    from reports.mlperf_export import export_mlperf

    run = _simulated_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())["power"]
    series = read_cluster_series(run / "power")
    (seg,) = series.segments
    out = tmp_path / "mlperf"
    export_mlperf(run, out)
    events = [json.loads(line.split(":::MLLOG ", 1)[1])
              for line in (out / "result_0.txt").read_text().splitlines()]
    stamps = {e["key"]: e["time_ms"] for e in events if e["key"] in ("run_start", "run_stop")}
    readings = [json.loads(line.split(":::MLLOG ", 1)[1])
                for line in (out / "power" / "result_0" / "node_0.txt").read_text().splitlines()
                if '"power_reading"' in line]
    # The governor's start..restore window, which the summary states, not the samplers'
    # first..last sample (the sampler opens before the governor starts and samples after).
    assert stamps == {"run_start": round(seg.start_unix_s * 1000),
                      "run_stop": round(seg.end_unix_s * 1000)}
    assert (seg.end_unix_s - seg.start_unix_s) == pytest.approx(summary["window_s"], abs=1e-6)
    times = [r["time_ms"] for r in readings]
    assert times[0] == stamps["run_start"] and times[-1] == stamps["run_stop"]
    assert len(readings) == len(seg.unix_s)
    assert [r["value"] for r in readings] == pytest.approx(list(seg.node_w["node000"]))
    # MLPerf's summarizer, from these logs, finds the summary's energy (its own integration).
    assert mlperf_energy_j(out) == pytest.approx(summary["energy_j"], rel=0.03)
