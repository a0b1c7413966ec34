"""A simulated cluster under a noisy, changing load, governed for 60 simulated seconds.

Cluster choice (the issue asks for 16 nodes x 4 H100, but 64 H100 at their 200 W minimum
limit already draw 12.8 kW, so no controller could meet 3000 W): we keep the 16-node x 4-GPU
shape with the small L4 profile (40-72 W limits, 72 W TDP) and a scaled-down 5 W of other power
per node, and add a realistic small cluster (4 nodes x 2 A100-SXM4, 150 W of CPU/fans/NICs per
node). In both, the uncapped cluster exceeds 3000 W by a wide margin (checked below), and the
budget sits inside the feasible range.

The workload is one synchronous data-parallel job: every GPU processes one batch per step,
each GPU's compute time is ``work / relative_throughput(clock)``, and the step takes as long as
the slowest GPU (waiting GPUs keep drawing power: NCCL kernels spin). Activity changes in
random phases with noise, and every 15 s another GPU becomes a 12% straggler (more work per
step). Other node power drifts +-10%.

Each case runs three times: with instantaneous power readings (NVML's instant field); with
the 1-second averaged readings that ``nvmlDeviceGetPowerUsage`` gives on H100/H200/L40S/L4
(:data:`power.simulated.AVERAGE_1S_SENSOR`: 1-s window, 100 ms refresh, same noise), where the
governor by default takes each GPU's power from its energy counter over the last period; and
with the averaged readings fed to the policy as they are (``energy_power=False``).

Checked: (1) no crossing of 3000 W lasts more than 100 ms, neither in the noiseless truth
(sampled every 50 ms) nor as the governor measured it, (2) images processed >= 95% of the best
uniform static cap that never exceeds the budget, found by exhaustive search over the limit
range with the same model, (3) every limit is back at its original value afterwards. The
figures (crossing count, longest, total time over; throughput against the best static cap) are
printed with ``pytest -s``.
"""
from __future__ import annotations

import functools
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from power.clock import SimClock
from power.comm import InProcessGroup
from power.crossings import budget_crossings
from power.governor import Governor
from power.simulated import (
    SENSORS,
    get_profile,
    make_simulated_gpus,
    noisy_phase_load,
    relative_throughput,
)

BUDGET_W = 3000.0
PERIOD_S = 0.05
DURATION_S = 60.0
WARMUP_S = 0.5
STRAGGLER_WINDOW_S = 15.0
STRAGGLER_WORK = 1.12


@dataclass(frozen=True)
class Case:
    profile: str
    nodes: int
    gpus_per_node: int
    other_w_per_node: float


CASES = {
    "16x4-L4": Case("L4", 16, 4, 5.0),
    "4x2-A100": Case("A100-SXM4", 4, 2, 150.0),
}


def _other_w(case: Case, node: int, t: float) -> float:
    return case.other_w_per_node * (1.0 + 0.1 * math.sin(2 * math.pi * t / 20.0 + node))


def _work(n_gpus: int, t: float, seed: int) -> np.ndarray:
    """Relative work per step of every GPU at time t (one straggler per window)."""
    window = int(t // STRAGGLER_WINDOW_S)
    straggler = np.random.default_rng([seed, window]).integers(n_gpus)
    work = np.ones(n_gpus)
    work[straggler] = STRAGGLER_WORK
    return work


def _loads(case: Case) -> list:
    n_total = case.nodes * case.gpus_per_node
    return [noisy_phase_load(seed=1000 + i, duration_s=DURATION_S + 1, dt_s=PERIOD_S,
                             warmup_s=WARMUP_S, activity_range=(0.65, 1.0),
                             memory_bound=0.2 + 0.2 * (i % 3) / 2) for i in range(n_total)]


def simulate(case: Case, sensor: str, run_dir, energy_power: bool | None = None
             ) -> dict[str, Any]:
    """Run the governed cluster for DURATION_S; return images, truth series and summary."""
    profile = get_profile(case.profile)
    n_total = case.nodes * case.gpus_per_node
    clock = SimClock()
    loads = _loads(case)
    nodes = [make_simulated_gpus(profile, case.gpus_per_node, clock=clock, seed=n,
                                 loads=loads[n * case.gpus_per_node:(n + 1) * case.gpus_per_node],
                                 sensor=SENSORS[sensor])
             for n in range(case.nodes)]
    all_gpus = [g for node in nodes for g in node]
    original_mw = [g.get_power_limit_mw() for g in all_gpus]
    group = InProcessGroup(case.nodes, timeout_s=60)
    govs = [Governor(nodes[n], comm=group.comm(n), budget_w=BUDGET_W, headroom_w=50.0,
                     other_power_w=(lambda _gpu_w, n=n: _other_w(case, n, clock.now())),
                     clock=clock, run_dir=run_dir / f"node{n}", handle_signals=False,
                     energy_power=energy_power)
            for n in range(case.nodes)]
    periods = int(DURATION_S / PERIOD_S)
    images = [0.0]
    truth_t: list[float] = []
    truth_w: list[float] = []

    def busy_times(t: float, gpus=all_gpus, first=0) -> np.ndarray:
        rel = np.array([g.relative_throughput() for g in gpus])
        return _work(n_total, t, seed=7)[first:first + len(gpus)] / rel

    def after_round() -> None:  # runs once per period while every node waits
        clock.advance(PERIOD_S)
        t = clock.now()
        images[0] += PERIOD_S * n_total / busy_times(t).max()
        truth_t.append(t)
        truth_w.append(sum(g.true_power_w() for g in all_gpus) + sum(
            _other_w(case, n, t) for n in range(case.nodes)))

    rounds = threading.Barrier(case.nodes, action=after_round, timeout=60)
    errors: list[BaseException] = []

    def node_main(n: int) -> None:
        try:
            with govs[n] as gov:
                for _ in range(periods):
                    busy = busy_times(clock.now(), nodes[n], n * case.gpus_per_node)
                    for j in range(case.gpus_per_node):
                        gov.note_busy_time_s(j, float(busy[j]))
                    gov.step()
                    rounds.wait()
        except BaseException as exc:
            errors.append(exc)
            group.abort()
            rounds.abort()

    threads = [threading.Thread(target=node_main, args=(n,)) for n in range(case.nodes)]
    # The nodes hand the GIL around three times per round; the default 5 ms switch interval
    # would make that dominate the run time.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
    finally:
        sys.setswitchinterval(old_interval)
    assert not errors, errors
    return {"images": images[0], "truth": budget_crossings(truth_t, truth_w, BUDGET_W),
            "measured_crossings": list(govs[0].crossings),
            "summary": govs[0].summary(images=images[0]), "periods": periods,
            "true_peak_w": max(truth_w),
            "restored": [g.get_power_limit_mw() for g in all_gpus] == original_mw}


@functools.cache
def best_static(case_name: str) -> dict[str, float]:
    """Exhaustive search for the best uniform static cap, on the same model and load."""
    case = CASES[case_name]
    profile = get_profile(case.profile)
    loads = _loads(case)
    n_total = case.nodes * case.gpus_per_node
    periods = int(DURATION_S / PERIOD_S)
    times = np.arange(1, periods + 1) * PERIOD_S
    act = np.array([[ld(t).activity for ld in loads] for t in times])
    mem = np.array([[ld(t).memory_bound for ld in loads] for t in times])
    work = np.array([_work(n_total, t, seed=7) for t in times])
    other = np.array([sum(_other_w(case, n, t) for n in range(case.nodes)) for t in times])
    grid = profile.clock_grid_mhz()
    p_grid = profile.power_w(grid, act[..., None]).astype(np.float32)
    caps = np.linspace(profile.min_limit_w, profile.max_limit_w, 65)
    out = {"images": 0.0, "cap_w": math.nan}
    for cap in caps:
        clocks = grid[np.maximum((p_grid <= cap).sum(-1) - 1, 0)]
        cluster_w = profile.power_w(clocks, act).sum(axis=1) + other
        if cap == caps[-1]:
            out["uncapped_peak_w"] = float(cluster_w.max())
            out["uncapped_mean_w"] = float(cluster_w.mean())
        if cluster_w.max() > BUDGET_W:
            continue
        step_s = (work / relative_throughput(profile, clocks, mem)).max(axis=1)
        static_images = float((PERIOD_S * n_total / step_s).sum())
        if static_images > out["images"]:
            out["images"], out["cap_w"] = static_images, float(cap)
    return out


VARIANTS = {"instant": ("instant", None), "average_1s": ("average_1s", None),
            "average_1s-reading-only": ("average_1s", False)}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case_name", list(CASES))
def test_governed_cluster_stays_under_budget_with_high_throughput(case_name, variant, tmp_path):
    sensor, energy_power = VARIANTS[variant]
    run = simulate(CASES[case_name], sensor, tmp_path, energy_power)
    static = best_static(case_name)
    summary, truth = run["summary"], run["truth"]
    measured = run["measured_crossings"]
    ratio = run["images"] / static["images"]
    print(f"\n{case_name} {variant}: throughput {ratio:.3f} x best static cap "
          f"({static['cap_w']:.1f} W); true crossings {truth.count} (longest "
          f"{truth.longest_s * 1000:.0f} ms, total {truth.total_s:.2f} s, peak "
          f"{truth.peak_w or 0:.0f} W); measured crossings {len(measured)} (longest "
          f"{max((c.duration_s for c in measured), default=0) * 1000:.0f} ms); avg "
          f"{summary['average_cluster_w']:.0f} W, measured peak {summary['peak_cluster_w']:.0f} W, "
          f"true peak {run['true_peak_w']:.0f} W")

    # (1) no crossing longer than 100 ms, neither measured (20 Hz) nor in the noiseless truth
    assert [c for c in measured if c.duration_s > 0.1 + 1e-9] == []
    assert truth.count_longer_than(0.1) == 0, truth.intervals
    assert summary["steps"] == run["periods"] + 1
    assert abs(summary["duration_s"] - DURATION_S) <= PERIOD_S + 1e-6

    # (2) throughput against the best uniform static cap
    assert static["images"] > 0, "no static cap meets the budget: the case is infeasible"
    # Meaningful: uncapped (default limits) the cluster is far over budget.
    assert static["uncapped_peak_w"] > 1.2 * BUDGET_W and static["uncapped_mean_w"] > BUDGET_W
    assert ratio >= 0.95
    assert summary["average_cluster_w"] < BUDGET_W
    assert 0.9 * BUDGET_W < summary["average_cluster_w"]  # the budget is actually used

    # (3) every limit restored
    assert run["restored"]
