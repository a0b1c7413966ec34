"""Governor: restore on every exit path (in-process and in a real subprocess), fail-safe,
crossing logs, summary figures, and the in-process multi-node communicator."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from power.clock import SimClock
from power.comm import InProcessGroup
from power.errors import PowerError
from power.governor import Governor
from power.simulated import SimStateFile, constant_load, make_simulated_gpus

ROOT = Path(__file__).resolve().parents[2]


def sim_node(clock, n=4, activity=0.95, **kw):
    return make_simulated_gpus("A100-SXM4", n, clock=clock, loads=constant_load(activity), **kw)


def test_caps_apply_then_restore_on_normal_exit_with_summary_and_logs(tmp_path):
    clock = SimClock()
    gpus = sim_node(clock)
    with Governor(gpus, budget_w=1000, headroom_w=20, clock=clock, run_dir=tmp_path,
                  handle_signals=False) as gov:
        for _ in range(100):
            clock.advance(0.05)
            gov.step()
        assert sum(g.get_power_limit_mw() for g in gpus) / 1000 <= 980 + 1e-6
        assert sum(g.true_power_w() for g in gpus) <= 1000
    assert [g.get_power_limit_mw() for g in gpus] == [400_000] * 4
    s = gov.summary(images=5000)
    assert s["duration_s"] == pytest.approx(5.0)
    # Energy comes from the counters: close to average power * time, and under the budget.
    assert 900 < s["average_cluster_w"] < 1000
    assert s["energy_j"] == pytest.approx(s["average_cluster_w"] * 5.0)
    assert s["images_per_s"] == pytest.approx(1000)
    assert s["joules_per_image"] == pytest.approx(s["energy_j"] / 5000)
    assert s["images_per_s_per_w"] == pytest.approx(1000 / s["average_cluster_w"])
    # The governor starts on uncapped GPUs at 1.6 kW: exactly one crossing, at the start.
    assert s["crossings"] == 1 and gov.crossings[0].start_s == 0.0
    assert gov.crossings[0].peak_w > 1500
    events = [json.loads(line) for line in (tmp_path / "governor_events.jsonl").open()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "restore" and "crossing" in kinds
    assert events[1]["reason"] == "overshoot"
    saved = json.loads((tmp_path / "governor_summary.json").read_text())
    assert saved["crossings"] == 1
    assert json.loads((tmp_path / "original_limits.rank0.json").read_text())[
        "power_limits_mw"] == [400_000] * 4


def test_restore_on_exception_and_after_a_changed_original(tmp_path):
    clock = SimClock()
    gpus = sim_node(clock)
    gpus[1].set_power_limit_mw(300_000)  # the operator's setting must come back, not the default
    with pytest.raises(RuntimeError, match="boom"):
        with Governor(gpus, budget_w=800, clock=clock, handle_signals=False) as gov:
            clock.advance(0.05)
            gov.step()
            assert gpus[0].get_power_limit_mw() < 400_000
            raise RuntimeError("boom")
    assert [g.get_power_limit_mw() for g in gpus] == [400_000, 300_000, 400_000, 400_000]
    assert gov.step() is None  # closed: never touches the GPUs again


def test_locked_clocks_mode_unlocks_on_exit():
    clock = SimClock()
    gpus = sim_node(clock)
    with Governor(gpus, budget_w=900, clock=clock, mode="clocks",
                  handle_signals=False) as gov:
        for _ in range(60):
            clock.advance(0.05)
            gov.step()
        assert all(g.locked_clocks_mhz is not None for g in gpus)
        assert sum(g.true_power_w() for g in gpus) < 900
    assert all(g.locked_clocks_mhz is None for g in gpus)
    assert [g.get_power_limit_mw() for g in gpus] == [400_000] * 4


def test_stale_readings_trigger_fail_safe_across_nodes_and_it_is_logged(tmp_path):
    clock = SimClock()
    nodes = [sim_node(clock, n=2, seed=n) for n in range(2)]
    broken = {"on": False}
    real = nodes[1][0].get_power_usage_mw

    def flaky():
        if broken["on"]:
            raise PowerError("NVML: GPU is lost")
        return real()

    nodes[1][0].get_power_usage_mw = flaky
    group = InProcessGroup(2, timeout_s=20)
    govs = [Governor(nodes[n], comm=group.comm(n), budget_w=1400, clock=clock,
                     run_dir=tmp_path, handle_signals=False) for n in range(2)]
    decisions: list = [[], []]
    barrier = threading.Barrier(2, action=lambda: clock.advance(0.1))

    def run(n):
        with govs[n] as gov:
            for k in range(40):
                broken["on"] = 10 <= k < 25
                decisions[n].append(gov.step())
                barrier.wait()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    reasons = [d.reason for d in decisions[0]]
    assert [d.reason for d in decisions[1]] == reasons  # every node decides the same
    # The last good reading is at step 9 (t = 0.9 s); once it is more than 1 s old (step 19 or
    # 20, depending on float rounding of the summed 0.1 s steps) both nodes fail safe, and they
    # recover as soon as readings come back at step 25.
    first = reasons.index("fail_safe")
    assert first in (19, 20) and reasons[25] != "fail_safe"
    assert all(r == "fail_safe" for r in reasons[first:25])
    events = [json.loads(line) for line in (tmp_path / "governor_events.jsonl").open()]
    fs = [e for e in events if e.get("reason") == "fail_safe"]
    assert len(fs) == 1 and "node 1 GPU 0" in fs[0]["messages"][0]
    assert any(e["event"] == "fail_safe_cleared" for e in events)
    assert govs[0].fail_safe_count == 25 - first


def test_constructor_validates():
    clock = SimClock()
    gpus = sim_node(clock, n=1)
    with pytest.raises(ValueError, match="headroom_w"):
        Governor(gpus, budget_w=100, headroom_w=100, clock=clock)
    with pytest.raises(ValueError, match="mode"):
        Governor(gpus, mode="boost", clock=clock)
    with pytest.raises(ValueError, match="gpus"):
        Governor([], clock=clock)


def _start_demo(tmp_path, *extra):
    state, ready = tmp_path / "gpus.json", tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "power.demo", "--state-file", str(state), "--run-dir",
         str(tmp_path / "run"), "--ready-file", str(ready), "--budget-w", "1000", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, state, ready


def _wait_ready(proc, ready):
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"demo did not get ready: {proc.communicate()}")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_real_process_restores_limits_on_signal(tmp_path, sig):
    proc, state, ready = _start_demo(tmp_path)
    try:
        _wait_ready(proc, ready)
        capped = SimStateFile.read(state)
        assert all(v["power_limit_mw"] < v["default_power_limit_mw"] for v in capped.values())
        time.sleep(0.2)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # SIGTERM: SystemExit(128 + 15); SIGINT: KeyboardInterrupt, which CPython turns into death
    # by SIGINT (returncode -2) so the parent sees the conventional status.
    assert proc.returncode == (128 + sig if sig == signal.SIGTERM else -sig), err
    after = SimStateFile.read(state)
    assert [v["power_limit_mw"] for v in after.values()] == [400_000] * 4
    events = [json.loads(x) for x in (tmp_path / "run" / "governor_events.jsonl").open()]
    assert events[-2]["event"] == "signal" and events[-1]["event"] == "restore"


def test_real_process_restores_limits_when_the_loop_raises(tmp_path):
    proc, state, _ready = _start_demo(tmp_path, "--raise-after-steps", "5")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "simulated training failure" in err
    after = SimStateFile.read(state)
    assert [v["power_limit_mw"] for v in after.values()] == [400_000] * 4
    events = [json.loads(x) for x in (tmp_path / "run" / "governor_events.jsonl").open()]
    assert events[-1]["event"] == "restore" and "RuntimeError" in events[-1]["reason"]
    caps = [e for e in events if e["event"] == "caps"]
    assert caps and max(caps[0]["limits_w"]) < 400  # it really had capped before failing
