"""plan.json -> launch settings, starting caps and the doctor's fit check (pure, no cluster)."""
from __future__ import annotations

import json

import pytest

from power.plan import (
    PLAN_ENV,
    PlanError,
    check_plan_fits,
    launch_overrides,
    load_plan,
    parse_plan,
    set_arguments,
    starting_caps_mw,
)
from power.planner import NodeType, curve_from_points, plan_cluster

PLAN = {"budget_w": 3000.0, "headroom_w": 150.0, "nodes": 3, "gpus_per_node": 4,
        "caps_w": [[250, 250, 250, 250], [250, 250, 240, 240], [200, 200, 200]],
        "predicted_cluster_w": 2840.0, "explanation": "..."}


def test_plan_from_the_planner_round_trips(tmp_path):
    points = [{"setting": s, "unit": "W", "avg_gpu_w": s * 0.9, "peak_gpu_w": s,
               "images_per_s": 100 * s ** 0.5} for s in (150, 200, 250, 300, 350, 400)]
    nt = NodeType(name="A100", curve=curve_from_points(points), max_nodes=4, gpus_per_node=4,
                  node_other_w=200.0, gpu_idle_w=50.0)
    doc = plan_cluster([nt], budget_w=3000, headroom_w=150).to_json()
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    plan = load_plan(tmp_path)  # a sweep folder with plan.json
    assert plan.nodes == doc["nodes"] and plan.gpus == sum(len(c) for c in doc["caps_w"])
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text(json.dumps({"points": [], "plan": doc}))
    from_sweep = load_plan(tmp_path / "s")  # a sweep folder whose sweep.json holds the plan
    assert (from_sweep.caps_w, from_sweep.nodes) == (plan.caps_w, plan.nodes)


def test_launch_overrides_and_set_arguments():
    plan = parse_plan(PLAN)
    ov = launch_overrides(plan, plan_path="sweeps/a/plan.json")
    assert ov == {"launch.nodes": 3, "launch.ranks_per_node": 4, "launch.gpus_per_node": 4,
                  "power.budget_w": 3000.0, "power.headroom_w": 150.0,
                  f"launch.env.{PLAN_ENV}": "sweeps/a/plan.json"}
    assert set_arguments(ov)[:2] == ["launch.nodes=3", "launch.ranks_per_node=4"]
    assert "power.budget_w=3000" in set_arguments(ov)
    assert launch_overrides(plan, ranks_per_gpu=2)["launch.ranks_per_node"] == 8
    assert plan.uneven and plan.gpus == 11


def test_starting_caps_are_the_plan_clamped_and_unplanned_gpus_start_low():
    plan = parse_plan(PLAN)
    ranges = [(100_000, 400_000)] * 4
    assert starting_caps_mw(plan, 1, ranges) == [250_000, 250_000, 240_000, 240_000]
    assert starting_caps_mw(plan, 2, ranges) == [200_000, 200_000, 200_000, 100_000]
    assert starting_caps_mw(plan, 0, [(100_000, 220_000)] * 4) == [220_000] * 4
    assert starting_caps_mw(plan, 7, ranges) == [100_000] * 4  # node outside the plan


def test_doctor_says_whether_the_plan_fits():
    plan = parse_plan(PLAN)
    ok = check_plan_fits(plan, gpus_here=4, limit_ranges_w=[(100, 400)] * 4, nodes_available=4,
                         job_budget_w=3000)
    assert [(c.name, c.status) for c in ok] == [
        ("plan GPUs per node", "ok"), ("plan nodes", "ok"), ("plan caps", "ok"),
        ("plan layout", "warn")]
    bad = {c.name: c for c in check_plan_fits(plan, gpus_here=2, limit_ranges_w=[(60, 72)] * 2,
                                             nodes_available=2, job_budget_w=2500)}
    assert bad["plan GPUs per node"].status == "fail"
    assert bad["plan nodes"].status == "fail" and "only 2" in bad["plan nodes"].detail
    assert bad["plan caps"].status == "fail" and "another GPU" in bad["plan caps"].detail
    assert bad["plan budget"].status == "warn"
    unknown = check_plan_fits(plan, gpus_here=4, limit_ranges_w=[(100, 400)])
    assert unknown[1].status == "warn"


@pytest.mark.parametrize("change, match", [
    ({"budget_w": -1}, "plan.budget_w"),
    ({"headroom_w": 3000}, "plan.headroom_w"),
    ({"caps_w": []}, "plan.caps_w"),
    ({"caps_w": [[250], "x"]}, r"plan.caps_w\[1\]"),
    ({"caps_w": [[250, None]], "nodes": 1, "gpus_per_node": 2}, r"plan.caps_w\[0\]\[1\]"),
    ({"nodes": 5}, "plan.nodes: 5 but caps_w lists 3"),
    ({"gpus_per_node": 8}, "plan.gpus_per_node"),
])
def test_bad_plans_name_the_key(change, match):
    with pytest.raises(PlanError, match=match):
        parse_plan({**PLAN, **change}, "p.json")


def test_missing_and_planless_files(tmp_path):
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(tmp_path / "nope.json")
    (tmp_path / "sweep.json").write_text(json.dumps({"points": [], "plan": None}))
    with pytest.raises(PlanError, match="no plan"):
        load_plan(tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanError, match="unreadable"):
        load_plan(tmp_path / "bad.json")


def test_a_plans_predictions_are_read_and_compared_with_what_a_run_achieved(tmp_path) -> None:
    from power.plan import PlanError, parse_plan, plan_in_use, plan_vs_achieved

    doc = {"budget_w": 3000, "headroom_w": 150, "caps_w": [[400, 400]],
           "predicted_images_per_s": 1240.0, "predicted_cluster_w": 1205.0}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    assert plan_in_use("", {}) is None
    plan = plan_in_use("", {"FACESR_POWER_PLAN": str(path)})
    assert plan is not None and plan_in_use(str(path), {}) == plan
    assert (plan.predicted_images_per_s, plan.predicted_cluster_w) == (1240.0, 1205.0)
    versus = plan_vs_achieved(plan, images_per_s=5.3, cluster_w=2386.0)
    assert versus.images_per_s_ratio == pytest.approx(5.3 / 1240.0)
    assert versus.cluster_w_ratio == pytest.approx(2386.0 / 1205.0)
    assert versus.to_dict(achieved=False) == {"source": str(path),
                                              "predicted_images_per_s": 1240.0,
                                              "predicted_cluster_w": 1205.0}
    assert versus.line() == (f"plan {path}: images/s: predicted 1240.0, achieved 5.3 "
                             "(x0.00427); cluster W: predicted 1205, achieved 2386 (x1.98)")
    # Power off: no achieved W, no ratio; a plan written before the predictions: none.
    off = plan_vs_achieved(plan, images_per_s=5.3).to_dict()
    assert (off["achieved_cluster_w"], off["cluster_w_ratio"]) == (None, None)
    old = parse_plan({k: v for k, v in doc.items() if not k.startswith("predicted")})
    assert plan_vs_achieved(old, images_per_s=5.3).line().endswith(
        "images/s: no prediction; cluster W: no prediction")
    with pytest.raises(PlanError, match="plan.predicted_cluster_w: must be a non-negative"):
        parse_plan({**doc, "predicted_cluster_w": "lots"})
