"""Cluster planner: exact against exhaustive search, never over budget, explains itself."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from power.planner import (
    CurvePoint,
    InfeasibleError,
    NodeType,
    concave_front,
    curve_from_points,
    plan_cluster,
)
from power.simulated import get_profile, relative_throughput


def curve(pairs):
    """Power-limit curve from (cap W, images/s) pairs (power counted = the cap)."""
    return tuple(CurvePoint(setting=p, power_w=p, images_per_s=i) for p, i in pairs)


# A concave curve on a 25 W grid (marginal gains 100, 80, 60, 40, 20, 0 images/s per 25 W).
CONCAVE = curve([(100, 300), (125, 400), (150, 480), (175, 540), (200, 580), (225, 600),
                 (250, 600)])


def h100_curve(step_w: int = 50, activity: float = 0.9, memory_bound: float = 0.3,
               images_per_s_at_max: float = 1980.0):
    """Model curve of a simulated H100 (what a simulated sweep measures)."""
    prof = get_profile("H100-SXM5")
    pts = []
    for lim in range(int(prof.min_limit_w), int(prof.max_limit_w) + 1, step_w):
        f = prof.settled_clock_scalar_mhz(lim, activity)
        ips = images_per_s_at_max * float(relative_throughput(prof, f, memory_bound))
        pts.append(CurvePoint(setting=lim, power_w=lim, images_per_s=ips))
    return tuple(pts)


def exhaustive(nt: NodeType, *, budget_w, headroom_w, switch_w, grid_w, objective):
    """Best throughput over every per-GPU choice (off or a cap on ``grid_w``), brute force."""
    settings = np.array([p.setting for p in sorted(nt.curve, key=lambda p: p.setting)])
    ips_pts = np.array([p.images_per_s for p in sorted(nt.curve, key=lambda p: p.setting)])
    caps = np.arange(settings.min(), settings.max() + 1e-9, grid_w)
    opts_w = np.concatenate([[0.0], caps])            # 0 = GPU unused
    opts_ips = np.concatenate([[0.0], np.interp(caps, settings, ips_pts)])
    n = nt.max_nodes * nt.gpus_per_node
    idx = np.stack(np.meshgrid(*[np.arange(len(opts_w))] * n, indexing="ij"), -1).reshape(-1, n)
    used = idx > 0
    per_node_used = used.reshape(len(idx), nt.max_nodes, nt.gpus_per_node)
    powered = per_node_used.any(-1)
    idle = (powered[..., None] & ~per_node_used).sum((1, 2))
    total_w = (switch_w + powered.sum(1) * nt.node_other_w + idle * nt.gpu_idle_w
               + opts_w[idx].sum(1))
    if objective == "sum":
        ips = opts_ips[idx].sum(1)
    else:
        k = used.sum(1)
        slowest = np.where(used, opts_ips[idx], np.inf).min(1)
        ips = np.where(k > 0, k * np.where(k > 0, slowest, 0.0), 0.0)
    ok = (total_w <= budget_w - headroom_w + 1e-9) & used.any(1)
    return float(ips[ok].max()) if ok.any() else None


@pytest.mark.parametrize("objective", ["sum", "sync"])
@pytest.mark.parametrize("budget_w", [330, 420, 560, 700, 900, 1200])
def test_matches_exhaustive_search_on_a_small_case(budget_w, objective):
    nt = NodeType(name="g", curve=CONCAVE, max_nodes=2, gpus_per_node=2, node_other_w=120,
                  gpu_idle_w=30)
    plan = plan_cluster([nt], budget_w=budget_w, headroom_w=20, switch_w=40,
                        objective=objective, cap_step_w=5)
    best = exhaustive(nt, budget_w=budget_w, headroom_w=20, switch_w=40, grid_w=5,
                      objective=objective)
    assert plan.predicted_images_per_s == pytest.approx(best, abs=1e-6)
    assert plan.predicted_cluster_w <= budget_w - 20 + 1e-9
    assert plan.margin_w == pytest.approx(budget_w - plan.predicted_cluster_w)


def test_small_budget_leaves_the_second_node_off_and_big_budget_uses_it():
    nt = NodeType(name="g", curve=CONCAVE, max_nodes=2, gpus_per_node=2, node_other_w=120,
                  gpu_idle_w=30)
    small = plan_cluster([nt], budget_w=420, headroom_w=20, switch_w=40, cap_step_w=5)
    # 40 switch + 120 node + 2 x 100 W floor = 360 W; the last 40 W buy 160 images/s on the
    # steepest segments rather than a second node (120 W before any GPU works).
    assert len(small.nodes) == 1 and small.gpus == 2
    assert sorted(small.nodes[0].caps) == [115.0, 125.0]
    assert small.predicted_images_per_s == pytest.approx(400 + 300 + 15 * 4)
    big = plan_cluster([nt], budget_w=1200, headroom_w=20, switch_w=40, cap_step_w=5)
    assert len(big.nodes) == 2 and big.gpus == 4


def test_never_exceeds_the_budget_on_random_cases():
    rng = np.random.default_rng(7)
    for case in range(60):
        types = []
        for t in range(int(rng.integers(1, 3))):
            caps = np.sort(rng.choice(np.arange(100, 401, 10), size=int(rng.integers(2, 8)),
                                      replace=False)).astype(float)
            ips = np.cumsum(rng.uniform(-20, 120, len(caps))) + 200  # not always concave
            basis = rng.uniform(0.8, 1.05, len(caps)) * caps           # measured, may exceed cap
            types.append(NodeType(
                name=f"t{t}", curve=tuple(CurvePoint(setting=c, power_w=w, images_per_s=max(i, 0))
                                          for c, w, i in zip(caps, basis, ips, strict=True)),
                max_nodes=int(rng.integers(1, 4)), gpus_per_node=int(rng.integers(1, 5)),
                node_other_w=float(rng.uniform(0, 300)), gpu_idle_w=float(rng.uniform(0, 50))))
        budget = float(rng.uniform(500, 5000))
        headroom = float(rng.uniform(0, 200))
        objective = ("sum", "sync")[case % 2]
        try:
            plan = plan_cluster(types, budget_w=budget, headroom_w=headroom, switch_w=50,
                                objective=objective, cap_step_w=float(rng.choice([1, 5, 7.5])))
        except InfeasibleError:
            cheapest = min(50 + t.node_other_w + (t.gpus_per_node - 1) * t.gpu_idle_w
                           + min(p.power_w for p in t.curve) for t in types)
            assert cheapest > budget - headroom
            continue
        assert plan.predicted_cluster_w <= budget - headroom + 1e-6, case
        # Recompute the cluster power from the caps alone (measured curve interpolation).
        total = 50.0
        for n in plan.nodes:
            t = next(t for t in types if t.name == n.node_type)
            pts = sorted(t.curve, key=lambda p: p.setting)
            s = [p.setting for p in pts]
            total += t.node_other_w + n.idle_gpus * t.gpu_idle_w + sum(
                float(np.interp(c, s, [p.power_w for p in pts])) for c in n.caps)
            assert len(n.caps) + n.idle_gpus == t.gpus_per_node
            assert all(min(s) <= c <= max(s) for c in n.caps)
        assert total == pytest.approx(plan.predicted_cluster_w)
        per_type = {t.name: sum(1 for n in plan.nodes if n.node_type == t.name) for t in types}
        assert all(per_type[t.name] <= t.max_nodes for t in types)


def test_sum_plan_puts_all_but_one_gpu_per_type_on_measured_points():
    # (160 W, 490) lies below the chord (150, 480)-(175, 540): not a hull vertex.
    bumpy = curve([(100, 300), (125, 400), (150, 480), (160, 490), (175, 540), (200, 580)])
    assert [p.setting for p in concave_front(bumpy)] == [100, 125, 150, 175, 200]
    nt = NodeType(name="g", curve=bumpy, max_nodes=2, gpus_per_node=4, node_other_w=100)
    plan = plan_cluster([nt], budget_w=1585, cap_step_w=1)
    caps = [c for n in plan.nodes for c in n.caps]
    vertices = {100, 125, 150, 175, 200}
    assert sum(c not in vertices for c in caps) <= 1
    # 1585 W - 2 x 100 W nodes - 8 x 100 W floor = 585 W: 8 x 25 W on each of the two
    # steepest segments, then 7 GPUs to 175 W; the last 10 W leave one GPU at 160 W.
    assert sorted(caps) == [160] + [175] * 7
    assert plan.predicted_images_per_s == pytest.approx(7 * 540 + 490)


def test_concave_front_drops_points_below_the_hull_and_the_flat_tail():
    front = concave_front(CONCAVE)
    assert [p.setting for p in front] == [100, 125, 150, 175, 200, 225]  # 250 W buys nothing
    bumpy = curve([(100, 100), (150, 120), (200, 300), (250, 310)])
    assert [p.setting for p in concave_front(bumpy)] == [100, 200, 250]


def test_h100_4x4_at_3000_w_explains_its_answer():
    nt = NodeType(name="H100-SXM5", curve=h100_curve(), max_nodes=4, gpus_per_node=4,
                  node_other_w=205 + 150, gpu_idle_w=75)
    plan = plan_cluster([nt], budget_w=3000, headroom_w=150, switch_w=60, objective="sum")
    # 3 nodes need 60 + 3 x 355 + 9 x 200 W (dense packing, GPUs at their 200 W minimum)
    # + 3 idle x 75 W = 3150 W > 2850 W, so two nodes are powered, every GPU used.
    assert len(plan.nodes) == 2 and plan.gpus == 8
    assert plan.predicted_cluster_w <= 2850 + 1e-9
    assert plan.predicted_cluster_w == pytest.approx(2850, abs=8)  # the budget is used up
    caps = sorted(c for n in plan.nodes for c in n.caps)
    assert sum(caps) <= 2850 - 60 - 2 * 355
    text = plan.explanation
    assert text.startswith("2 nodes x 4 GPUs at 250 W")
    assert f"{plan.predicted_cluster_w:.0f} W predicted" in text
    assert f"{plan.margin_w:.0f} W margin to the 3000 W budget" in text
    assert f"{plan.predicted_images_per_s:.0f} images/s" in text
    for c in set(caps):
        assert f"at {c:.0f} W" in text
    assert "each node costs 355 W" in text
    js = plan.to_json()
    assert set(js) == {"budget_w", "headroom_w", "nodes", "gpus_per_node", "caps_w",
                       "predicted_cluster_w", "predicted_images_per_s", "margin_w",
                       "explanation", "gpu_models"}
    assert js["gpu_models"] == [n.node_type for n in plan.nodes]
    assert js["nodes"] == 2 and js["gpus_per_node"] == 4 and len(js["caps_w"]) == 2
    # Same answer as brute force over the powered-node count with uniform-grid caps.
    small = NodeType(name="H100", curve=h100_curve(), max_nodes=4, gpus_per_node=4,
                     node_other_w=355, gpu_idle_w=75)
    sync = plan_cluster([small], budget_w=3000, headroom_w=150, switch_w=60, objective="sync")
    assert [set(n.caps) for n in sync.nodes] == [{260.0}, {260.0}]  # (2850-770)/8 W each
    assert sync.predicted_images_per_s <= plan.predicted_images_per_s + 1e-6
    assert re.search(r"2 nodes x 4 GPUs at 260 W", sync.explanation)


def test_two_node_types_share_the_budget():
    h100 = NodeType(name="H100", curve=h100_curve(), max_nodes=1, gpus_per_node=4,
                    node_other_w=355, gpu_idle_w=75)
    l4 = NodeType(name="L4", curve=curve([(40, 150), (50, 190), (60, 215), (72, 230)]),
                  max_nodes=2, gpus_per_node=8, node_other_w=250, gpu_idle_w=16)
    both = plan_cluster([h100, l4], budget_w=3000, headroom_w=150, switch_w=60)
    only_h = plan_cluster([h100], budget_w=3000, headroom_w=150, switch_w=60)
    only_l = plan_cluster([l4], budget_w=3000, headroom_w=150, switch_w=60)
    assert both.predicted_cluster_w <= 2850 + 1e-9
    assert both.predicted_images_per_s >= max(only_h.predicted_images_per_s,
                                              only_l.predicted_images_per_s) - 1e-6
    assert {n.node_type for n in both.nodes} == {"H100", "L4"}
    assert "(H100)" in both.explanation and "(L4)" in both.explanation


def test_infeasible_budget_says_what_the_cheapest_option_needs():
    nt = NodeType(name="g", curve=CONCAVE, max_nodes=2, gpus_per_node=2, node_other_w=120,
                  gpu_idle_w=30)
    with pytest.raises(InfeasibleError, match=r"needs 290 W"):
        plan_cluster([nt], budget_w=250, headroom_w=0, switch_w=40)


def test_curve_from_sweep_points_and_bad_arguments():
    pts = [{"setting": 200.0, "unit": "W", "avg_gpu_w": 190.0, "peak_gpu_w": 205.0,
            "images_per_s": 900.0},
           {"setting": 300.0, "unit": "W", "avg_gpu_w": 280.0, "peak_gpu_w": 301.0,
            "images_per_s": 1200.0}]
    assert [p.power_w for p in curve_from_points(pts)] == [200.0, 300.0]
    assert [p.power_w for p in curve_from_points(pts, basis="avg")] == [190.0, 280.0]
    assert [p.power_w for p in curve_from_points(pts, basis="peak")] == [205.0, 301.0]
    with pytest.raises(ValueError, match="clock sweep"):
        curve_from_points([dict(pts[0], unit="MHz")], basis="cap")
    with pytest.raises(ValueError, match="objective"):
        plan_cluster([NodeType(name="g", curve=CONCAVE, max_nodes=1, gpus_per_node=1,
                               node_other_w=0)], budget_w=1000, objective="max")
    with pytest.raises(ValueError, match="gpus_per_node"):
        NodeType(name="g", curve=CONCAVE, max_nodes=1, gpus_per_node=0, node_other_w=0)
    with pytest.raises(ValueError, match="images_per_s"):
        CurvePoint(setting=1, power_w=1, images_per_s=math.nan)
