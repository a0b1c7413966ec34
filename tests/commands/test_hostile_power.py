"""Issue #32 (power, plans, reports): careless inputs end in one line, exit 2, no traceback."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_harness

SMOKE = str(ROOT / "jobs/smoke.yaml")
TRACE = ROOT / "tests/power/traces/power_trace_2gpu.csv"


@pytest.mark.parametrize("bad", ["nan", "-5.0"])
def test_a_replay_trace_with_a_bad_reading_is_one_line(tmp_path: Path, bad: str) -> None:
    rows = TRACE.read_text().splitlines()
    cells = rows[9].split(",")
    cells[2] = bad  # power_w of the 9th sample
    rows[9] = ",".join(cells)
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join(rows) + "\n")
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path / "runs"),
                       "--set", "train.steps=2", "--set", "power.enabled=true", "--set",
                       "power.backend=replay", "--set", f"power.replay_csv={trace}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert lines == [f"harness: error: {trace}:10: power_w {bad!r} for GPU 0 is not a "
                     "positive finite number (a dropped reading? remove the row)"]


@pytest.fixture(scope="module")
def h100_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sweep (simulated H100, 4 GPUs) with its plan: 1 node x 4 GPUs."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    proc = run_harness("power-sweep", "--job", SMOKE, "--set", "power.sim_profile=H100-SXM5",
                       "--out", str(out), env=dict(os.environ, COLUMNS="80"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out.joinpath("stdout.txt").write_text(proc.stdout)
    return out


def _train_with_plan(tmp_path: Path, plan: Path, *sets: str):  # noqa: ANN202
    args = ["train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path / "runs"), "--set",
            "train.steps=1", "--set", "power.enabled=true", "--set", f"power.plan={plan}"]
    for s in sets:
        args += ["--set", s]
    return run_harness(*args)


def test_a_plan_for_another_gpu_model_is_refused(h100_sweep: Path, tmp_path: Path) -> None:
    plan = json.loads((h100_sweep / "plan.json").read_text())
    assert plan["gpu_models"] == ["Simulated H100-SXM5"]
    proc = _train_with_plan(tmp_path, h100_sweep, "power.sim_profile=A100-SXM4")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(err) == 1, proc.stderr
    assert "the plan was made for Simulated H100-SXM5 GPUs; node 0 has Simulated A100-SXM4" \
        in err[0] and "harness power-sweep" in err[0]  # main: caps clamped to 400 W, no word


def test_a_plan_for_more_gpus_is_refused_and_fewer_is_said(h100_sweep: Path,
                                                           tmp_path: Path) -> None:
    proc = _train_with_plan(tmp_path / "a", h100_sweep, "power.sim_profile=H100-SXM5",
                            "power.sim_gpus_per_node=2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "the plan puts 4 GPU(s) on node 0, which has 2" in proc.stderr
    proc = _train_with_plan(tmp_path / "b", h100_sweep, "power.sim_profile=H100-SXM5",
                            "power.sim_gpus_per_node=6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "node 0 has 6 GPUs, the plan uses 4: the other 2 start at their lowest limit" \
        in proc.stderr


def test_plan_from_without_a_job_keeps_the_default_headroom_and_says_so(
        h100_sweep: Path) -> None:
    proc = run_harness("power-sweep", "--plan-from", str(h100_sweep))
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = [ln for ln in proc.stderr.splitlines() if "no --job" in ln]
    assert len(said) == 1 and "budget 3000 W, headroom 150 W, switch 0 W" in said[0]
    assert "headroom 150 W" in proc.stdout and "headroom 0 W" not in proc.stdout  # main: 0 W
    proc = run_harness("power-sweep", "--plan-from", str(h100_sweep), "--budget-w", "2500",
                       "--headroom-w", "100", "--switch-w", "0")
    assert proc.returncode == 0 and "no --job" not in proc.stderr


def test_the_sweep_table_fits_80_columns_and_marks_a_front(h100_sweep: Path) -> None:
    out = (h100_sweep / "stdout.txt").read_text().splitlines()
    table = out[out.index(next(ln for ln in out if "power sweep:" in ln)):]
    table = table[:next(i for i, ln in enumerate(table) if ln.startswith("results:"))]
    assert all(len(ln) <= 80 for ln in table)
    assert not any("…" in ln for ln in table)  # main: "setti…", "image…" twice
    header = next(ln for ln in table if "setting" in ln).split()
    assert header == ["setting", "img/s", "avg", "W", "peak", "W", "node", "W", "J/img",
                      "img/s/W", "front"]
    sweep = json.loads((h100_sweep / "sweep.json").read_text())
    flags = [p["pareto"] for p in sweep["points"]]
    assert any(flags) and not all(flags)  # main: every point marked
    rows = [ln for ln in table if ln.strip().split(" ")[0].isdigit()]
    assert [ln.rstrip().endswith("*") for ln in rows] == flags
