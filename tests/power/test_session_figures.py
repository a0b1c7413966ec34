"""The power session's figures come from the samples the report draws, over one window
(governor start to restore); every JSON file of a session and of a sweep is strict JSON."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.cluster.distributed import SingleComm, dist_info_from_env
from harness.config import load_job
from power.session import PowerSession
from power.sweep import run_sweep
from tests.conftest import ROOT


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_session_summary_counts_the_crossing_open_at_the_restore(tmp_path: Path) -> None:
    """A budget below what 4 GPUs at their lowest caps draw: over budget until the restore.
    The summary (after the session) counts that crossing, and it equals the report's figures
    from the same files; every JSON file of the session is strict JSON."""
    job = load_job(str(ROOT / "jobs" / "demo.yaml"),
                   ["power.budget_w=500", "power.headroom_w=10", "power.sim_gpus_per_node=4"])
    session = PowerSession(job.power, dist_info_from_env({}), SingleComm(), tmp_path)
    with session:
        time.sleep(0.8)
        session.add_images(40)
    summary = session.summary(40)
    assert summary["crossings"] == 1  # 2c5bdf3: 0 (the open crossing was not counted)
    assert summary["crossing_time_s"] == pytest.approx(summary["window_s"], rel=0.05)
    # One window for throughput, watts and joules, and it is stated.
    assert summary["window_s"] > 0.5 and summary["window_start_utc"].endswith("Z")
    assert summary["images_per_s"] == pytest.approx(40 / summary["window_s"])
    assert summary["j_per_image"] == pytest.approx(summary["energy_j"] / 40)
    assert summary["images_per_s_per_w"] == pytest.approx(
        summary["images_per_s"] / summary["avg_cluster_w"])

    from reports.rundata import read_power_dir

    pd = read_power_dir(tmp_path / "power", summary)
    figures = pd.figures
    for key in ("crossings", "peak_cluster_w", "energy_j", "window_s", "j_per_image"):
        assert figures[key] == pytest.approx(summary[key]), key
    t, w = pd.cluster_series()
    assert max(w) == pytest.approx(summary["peak_cluster_w"])
    assert t[-1] == pytest.approx(summary["window_s"])

    for path in sorted((tmp_path / "power").rglob("*.json*")):
        text = path.read_text()
        docs = text.splitlines() if path.suffix == ".jsonl" else [text]
        for doc in docs:
            _strict(doc)
    _strict(json.dumps(summary, allow_nan=False))


def test_sweep_files_are_strict_json_with_a_nan_figure(tmp_path: Path) -> None:
    """A NaN in what a sweep writes is written as null, never as NaN."""
    from tests.power.test_sweep import sim_setup

    clock, gpus, wl, spec, node = sim_setup(n=2, steps=10)
    doc = run_sweep(gpus, wl, spec, [300, 400], tmp_path, clock=clock, node=node,
                    meta={"note": float("nan")})
    assert doc["points"]
    for name in ("sweep.json", "sweep_meta.json"):
        _strict((tmp_path / name).read_text())
    assert _strict((tmp_path / "sweep_meta.json").read_text())["note"] is None
