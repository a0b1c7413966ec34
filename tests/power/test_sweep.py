"""Power sweep on simulated GPUs: follows the model, restores settings, resumes, CLI errors."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.commands.power_sweep import main as sweep_main
from power.clock import SimClock
from power.node import NodePower
from power.simulated import (
    SimStateFile,
    constant_load,
    get_profile,
    make_simulated_gpus,
    relative_throughput,
)
from power.sweep import (
    POINT_KEYS,
    ModelPacedWorkload,
    SettingsGuard,
    SweepMismatchError,
    SweepSpec,
    check_settings,
    load_sweep,
    pareto_flags,
    parse_range,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[2]
H100 = get_profile("H100-SXM5")
ACTIVITY, MEMORY_BOUND, BASE = 0.9, 0.3, 1980.0


def sim_setup(n=4, mode="power_limit", steps=40, warmup_s=0.2, state_path=None):
    clock = SimClock()
    gpus = make_simulated_gpus(H100, n, clock=clock, loads=constant_load(ACTIVITY, MEMORY_BOUND),
                               state_path=state_path)
    wl = ModelPacedWorkload(gpus, kind="train", batch_size=8, images_per_s_at_max=BASE)
    spec = SweepSpec(job="t", workload="train", mode=mode, gpu=gpus[0].get_name(), gpus=n,
                     simulated=True, batch_size=8, warmup_steps=5, steps=steps,
                     warmup_s=warmup_s)
    node = NodePower(cpu_tdp_w=200, overhead_w=100, rapl=None, cpu_percent=lambda: 50.0,
                     clock=clock)
    return clock, gpus, wl, spec, node


def expected(limit_w=None, lock_mhz=None):
    """(images/s, W) of one GPU straight from the simulator's model."""
    f = H100.settled_clock_scalar_mhz(limit_w or H100.default_limit_w, ACTIVITY, lock_mhz)
    return (BASE * float(relative_throughput(H100, f, MEMORY_BOUND)),
            float(H100.power_w(f, ACTIVITY)))


def test_simulated_sweep_follows_the_model(tmp_path):
    clock, gpus, wl, spec, node = sim_setup()
    limits = parse_range("200:700:50")
    assert len(limits) == 11
    t0 = time.perf_counter()
    doc = run_sweep(gpus, wl, spec, limits, tmp_path, clock=clock, node=node)
    wall_s = time.perf_counter() - t0
    assert wall_s < 60  # the bound; it takes well under a second
    pts = doc["points"]
    assert [p["setting"] for p in pts] == limits
    for p in pts:
        ips, w = expected(p["setting"])
        assert p["images_per_s"] == pytest.approx(ips, rel=0.01), p
        assert p["avg_gpu_w"] == pytest.approx(w, rel=0.01), p
        assert w - 1 <= p["peak_gpu_w"] <= w + 6 * 0.005 * H100.tdp_w  # reading noise only
        # Node: 4 GPUs + estimated CPU (200 W TDP at 50 % -> 130 W) + 100 W overhead.
        assert p["avg_node_w"] == pytest.approx(4 * p["avg_gpu_w"] + 230, rel=0.01)
        assert p["j_per_image"] == pytest.approx(p["avg_gpu_w"] / p["images_per_s"])
        assert p["images_per_s_per_w"] == pytest.approx(p["images_per_s"] / p["avg_gpu_w"])
        assert p["is"] is None and p["unit"] == "W" and list(p) == list(POINT_KEYS)
    # The limit binds below ~670 W: throughput rises strictly with it, then saturates.
    ips = [p["images_per_s"] for p in pts]
    assert all(a < b for a, b in itertools.pairwise(ips))
    assert ips[0] / ips[-1] == pytest.approx(expected(200)[0] / expected(700)[0], rel=0.01)
    # The front: from the cap with the fewest node joules per image up (issue #32: counted
    # on GPU watts alone every point of this rising curve was "Pareto").
    node_j = [p["avg_node_w"] / p["images_per_s"] for p in pts]
    best = node_j.index(min(node_j))
    assert [p["pareto"] for p in pts] == [k >= best for k in range(len(pts))]
    assert 0 < best < len(pts) - 1
    assert [g.get_power_limit_mw() for g in gpus] == [700_000] * 4
    on_disk = load_sweep(tmp_path)
    assert on_disk == json.loads(json.dumps(doc))
    assert set(on_disk) == {"job", "workload", "mode", "gpu", "simulated", "points", "plan"}
    rows = (tmp_path / "sweep.csv").read_text().splitlines()
    assert rows[0] == ",".join(POINT_KEYS) and len(rows) == 12
    assert (tmp_path / "samples" / "200W" / "gpu_power.csv").is_file()


def test_clock_sweep_follows_the_model_and_unlocks(tmp_path):
    clock, gpus, wl, spec, node = sim_setup(n=2, mode="clocks")
    clocks = parse_range("600:1800:200")
    doc = run_sweep(gpus, wl, spec, clocks, tmp_path, clock=clock, node=node)
    for p in doc["points"]:
        ips, w = expected(lock_mhz=p["setting"])
        assert p["unit"] == "MHz"
        assert p["images_per_s"] == pytest.approx(ips, rel=0.01)
        assert p["avg_gpu_w"] == pytest.approx(w, rel=0.01)
    assert all(g.locked_clocks_mhz is None for g in gpus)


def test_pareto_marks_dominated_points():
    # more images/s for fewer node joules per image beats a point; GPU watts when no node's
    pts = [{"avg_gpu_w": 100, "avg_node_w": 500, "images_per_s": 10},   # 50 J/img
           {"avg_gpu_w": 150, "avg_node_w": 550, "images_per_s": 9},    # beaten by the 1st
           {"avg_gpu_w": 200, "avg_node_w": 600, "images_per_s": 20},   # 30 J/img: beats 1st
           {"avg_gpu_w": 300, "avg_node_w": 700, "images_per_s": 21}]   # faster, dearer
    assert pareto_flags(pts) == [False, False, True, True]
    gpu_only = [{"avg_gpu_w": 100, "images_per_s": 10}, {"avg_gpu_w": 150, "images_per_s": 9},
                {"avg_gpu_w": 200, "images_per_s": 18}]
    assert pareto_flags(gpu_only) == [True, False, True]


class Interrupting(ModelPacedWorkload):
    """Raises KeyboardInterrupt at step ``stop_at`` (as a SIGINT handler would)."""

    def __init__(self, *a, stop_at, **kw):
        super().__init__(*a, **kw)
        self.stop_at, self.calls = stop_at, 0

    def step(self):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().step()


def test_interrupt_restores_and_rerun_resumes(tmp_path):
    clock, gpus, _wl, spec, node = sim_setup(n=2, steps=20, warmup_s=0.0)
    for g in gpus:
        g.set_power_limit_mw(650_000)  # a non-default original must come back
    limits = parse_range("300:650:50")
    wl = Interrupting(gpus, kind="train", batch_size=8, images_per_s_at_max=BASE,
                      stop_at=3 * 25 + 10)  # 5 warm-up + 20 measured steps per point
    with pytest.raises(KeyboardInterrupt):
        run_sweep(gpus, wl, spec, limits, tmp_path, clock=clock, node=node)
    assert [g.get_power_limit_mw() for g in gpus] == [650_000] * 2
    saved = load_sweep(tmp_path)["points"]
    assert [p["setting"] for p in saved] == [300, 350, 400]
    original = json.loads((tmp_path / "original_settings.json").read_text())
    assert original["power_limits_mw"] == [650_000, 650_000]

    seen = []
    wl2 = ModelPacedWorkload(gpus, kind="train", batch_size=8, images_per_s_at_max=BASE)
    doc = run_sweep(gpus, wl2, spec, limits, tmp_path, clock=clock, node=node,
                    on_point=lambda p, done, total: seen.append((p["setting"], done, total)))
    assert seen == [(450, 4, 8), (500, 5, 8), (550, 6, 8), (600, 7, 8), (650, 8, 8)]
    assert doc["points"][:3] == saved  # the saved points were kept, not re-measured
    assert [g.get_power_limit_mw() for g in gpus] == [650_000] * 2


def test_exception_in_workload_restores_clocks_too(tmp_path):
    clock, gpus, _wl, spec, node = sim_setup(n=2, mode="clocks", warmup_s=0.0)
    wl = Interrupting(gpus, kind="train", batch_size=8, images_per_s_at_max=BASE, stop_at=50)
    wl.step = lambda: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        run_sweep(gpus, wl, spec, [900, 1200], tmp_path, clock=clock, node=node)
    assert all(g.locked_clocks_mhz is None for g in gpus)
    assert [g.get_power_limit_mw() for g in gpus] == [700_000] * 2


def test_resume_refuses_a_different_spec(tmp_path):
    clock, gpus, wl, spec, node = sim_setup(n=1, steps=5, warmup_s=0.0)
    run_sweep(gpus, wl, spec, [300], tmp_path, clock=clock, node=node)
    other = SweepSpec(**{**spec.fingerprint(), "steps": 6, "extra": ()})
    with pytest.raises(SweepMismatchError, match="steps=5.*steps=6"):
        run_sweep(gpus, wl, other, [300, 400], tmp_path, clock=clock, node=node)


def test_settings_guard_restores_on_exit_and_is_idempotent():
    clock = SimClock()
    gpus = make_simulated_gpus("A100-SXM4", 2, clock=clock)
    with SettingsGuard(gpus, "power_limit", handle_signals=False) as guard:
        guard.apply(250)
        assert [g.get_power_limit_mw() for g in gpus] == [250_000] * 2
    assert [g.get_power_limit_mw() for g in gpus] == [400_000] * 2
    guard.restore()
    with pytest.raises(RuntimeError):
        guard.apply(300)


@pytest.mark.parametrize("text, message", [
    ("150:400", "expected START:STOP:STEP"),
    ("abc", "expected START:STOP:STEP"),
    ("400:150:25", "START must be <= STOP"),
    ("150:400:0", "STEP must be > 0"),
    ("0:400:100", "must be > 0"),
    ("1:100000:1", "at most 200"),
])
def test_parse_range_rejects_bad_text(text, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_range(text)
    assert "\n" not in str(err.value) and "--limits" in str(err.value)


def test_parse_range_forms():
    assert parse_range("150:400:25") == [150 + 25 * i for i in range(11)]
    assert parse_range("300,200,250,200") == [200, 250, 300]
    assert parse_range("1:2:0.25") == [1, 1.25, 1.5, 1.75, 2]


def test_out_of_range_limits_name_the_range():
    gpus = make_simulated_gpus(H100, 2, clock=SimClock())
    with pytest.raises(ValueError, match=r"power limit 150, 750 W outside the range of "
                                         r"Simulated H100-SXM5: 200-700 W"):
        check_settings([150, 300, 750], gpus, "power_limit")
    with pytest.raises(ValueError, match=r"clock 100 MHz .*345-1980 MHz"):
        check_settings([100], gpus, "clocks")


# --------------------------------------------------------------------------- CLI


def write_job(tmp_path: Path, profile="H100-SXM5", gpus=2) -> Path:
    job = tmp_path / "sweep.yaml"
    job.write_text(f"""name: sweeptest
model: {{name: bicubic}}
loss: {{pixel: 1.0}}
train: {{batch_size: 8, threads_per_rank: 1}}
power: {{backend: simulated, sim_profile: {profile}, sim_gpus_per_node: {gpus},
         budget_w: 3000, headroom_w: 150, node_overhead_w: 150, cpu_tdp_w: 205, switch_w: 60}}
launch: {{nodes: 4, ranks_per_node: 4, gpus_per_node: 4, run_dir: {tmp_path / 'runs'}}}
""")
    return job


@pytest.mark.parametrize("args, message", [
    (["--limits", "100:800:50"], ("power limit 100, 150, 750, 800 W outside the range of "
                                 "Simulated H100-SXM5: 200-700 W")),
    (["--limits", "200:x:50"], "--limits '200:x:50': expected START:STOP:STEP"),
    (["--clocks", "100:400:100"], "clock 100, 200, 300 MHz outside the range"),
    (["--steps", "0"], "--steps: must be >= 1"),
])
def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys, args, message):
    code = sweep_main(["--job", str(write_job(tmp_path)), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err


def test_cli_sweep_writes_results_and_plan(tmp_path, capsys):
    out = tmp_path / "o"
    code = sweep_main(["--job", str(write_job(tmp_path, gpus=4)), "--limits", "200:550:50",
                       "--out", str(out), "--objective", "sum", "--quiet"])
    assert code == 0
    doc = load_sweep(out)
    assert len(doc["points"]) == 8 and doc["simulated"] and doc["gpu"] == "Simulated H100-SXM5"
    plan = doc["plan"]
    assert plan == json.loads((out / "plan.json").read_text())
    assert plan["nodes"] == 2 and plan["gpus_per_node"] == 4
    assert plan["predicted_cluster_w"] <= 2850 and plan["margin_w"] >= 150
    assert sum(map(sum, plan["caps_w"])) <= 2850 - 60 - 2 * 355
    printed = capsys.readouterr().out
    assert plan["explanation"].split(" \u2192")[0] in " ".join(printed.split())
    meta = json.loads((out / "sweep_meta.json").read_text())
    assert meta["gpu_idle_w"] == H100.static_w and meta["spec"]["steps"] == 50
    # Planning again from the folder alone gives the same plan.
    assert sweep_main(["--plan-from", str(out), "--plan-nodes", "4", "--plan-gpus-per-node",
                       "4", "--objective", "sum", "--budget-w", "3000", "--headroom-w", "150",
                       "--switch-w", "60", "--quiet"]) == 0
    assert plan["explanation"].split(" \u2192")[0] in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_cli_infer_sweep_scores_identity_similarity(tmp_path, capsys):
    out = tmp_path / "o"
    code = sweep_main(["--job", str(write_job(tmp_path)), "--workload", "infer", "--limits",
                       "200,700", "--out", str(out), "--steps", "5", "--no-plan", "--quiet"])
    assert code == 0
    pts = load_sweep(out)["points"]
    scores = [p["is"] for p in pts]
    # The bicubic baseline on 16 held-out faces; capping never changes what is computed.
    assert 0.55 < scores[0] < 0.75 and scores[1] == scores[0]
    assert pts[0]["images_per_s"] < pts[-1]["images_per_s"]


def test_sigint_restores_limits_and_rerun_resumes(tmp_path):
    job = write_job(tmp_path)
    state, out = tmp_path / "gpus.json", tmp_path / "o"
    args = [sys.executable, "-m", "harness.commands.power_sweep", "--job", str(job), "--limits",
            "200:550:50", "--out", str(out), "--warmup-s", "0.2", "--steps", "20",
            "--sim-images-per-s", "200", "--batch-size", "4", "--no-plan", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*args, "--sim-clock", "real", "--sim-state", str(state)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no point saved: {proc.communicate()}")
            if (out / "sweep.json").exists() and load_sweep(out)["points"]:
                break
            time.sleep(0.05)
        during = SimStateFile.read(state)
        assert all(v["power_limit_mw"] < 700_000 for v in during.values())  # it is capping
        proc.send_signal(signal.SIGINT)
        _o, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    after = SimStateFile.read(state)
    assert [v["power_limit_mw"] for v in after.values()] == [700_000, 700_000]
    assert all(v["locked_clocks_mhz"] is None for v in after.values())
    saved = load_sweep(out)["points"]
    assert 1 <= len(saved) < 8

    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert f"{len(saved)} point(s) already measured, {8 - len(saved)} to go" in done.stderr
    final = load_sweep(out)["points"]
    assert [p["setting"] for p in final] == [200 + 50 * i for i in range(8)]
    for s in saved:  # kept as they were, not measured again
        f = next(p for p in final if p["setting"] == s["setting"])
        assert dict(f, pareto=None) == dict(s, pareto=None)


def test_cli_real_compute_on_simulated_gpus_keeps_the_model_curve(tmp_path):
    job = write_job(tmp_path, gpus=1)
    job.write_text(job.read_text().replace("model: {name: bicubic}",
                                           "model: {name: srresnet, args: {num_feat: 8, "
                                           "num_blocks: 1}}"))
    out = tmp_path / "o"
    code = sweep_main(["--job", str(job), "--limits", "300,600", "--out", str(out), "--compute",
                       "real", "--steps", "3", "--warmup-steps", "1", "--no-plan", "--quiet"])
    assert code == 0
    pts = load_sweep(out)["points"]
    for p in pts:  # the CPU's own training speed does not leak into the simulated curve
        ips, w = expected(p["setting"])
        assert p["images_per_s"] == pytest.approx(ips, rel=0.01)
        assert p["avg_gpu_w"] == pytest.approx(w, rel=0.01)
    assert json.loads((out / "sweep_meta.json").read_text())["compute"] == "real"


def test_resuming_from_a_corrupt_sweep_json_is_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    job = str(write_job(tmp_path))
    assert sweep_main(["--job", job, "--limits", "200:300:50", "--out", str(out),
                       "--quiet", "--no-plan"]) == 0
    (out / "sweep.json").write_text('{"points": [{"setting": 2')  # torn by a crash
    capsys.readouterr()
    code = sweep_main(["--job", job, "--limits", "200:300:50", "--out", str(out), "--quiet",
                       "--no-plan"])
    stderr = capsys.readouterr().err
    err = [ln for ln in stderr.splitlines() if "error" in ln]
    assert code == 2 and len(err) == 1 and "Traceback" not in stderr, stderr
    assert str(out / "sweep.json") in err[0] and "unreadable sweep file" in err[0]


# --------------------------------------------------------------------------- warm-up


def test_points_measured_without_warm_up_are_flagged_and_warned_once(tmp_path, caplog):
    import csv
    import logging

    from power.planner import NotWarmedUpError, curve_from_points

    clock, gpus, wl, _, node = sim_setup(n=2)
    spec = SweepSpec(job="t", workload="train", mode="power_limit", gpu=gpus[0].get_name(),
                     gpus=2, simulated=True, batch_size=8, warmup_steps=0, steps=20,
                     warmup_s=0.0)
    with caplog.at_level(logging.WARNING, logger="power.sweep"):
        doc = run_sweep(gpus, wl, spec, [300, 400, 500], tmp_path, clock=clock, node=node)
    reason = "no warm-up (warmup_steps=0, warmup_s=0)"
    assert [(p["warmed_up"], p["warmup_reason"]) for p in doc["points"]] == [(False, reason)] * 3
    with open(tmp_path / "sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["warmed_up"], r["warmup_reason"]) for r in rows] == [("False", reason)] * 3
    assert load_sweep(tmp_path)["points"][0]["warmed_up"] is False
    warned = [m for m in caplog.messages if "not warmed up" in m]
    assert len(warned) == 1 and "300 W" in warned[0] and reason in warned[0]
    assert any(p["pareto"] for p in doc["points"])  # none warmed up: the front is over all
    with pytest.raises(NotWarmedUpError, match=r"no sweep point is warmed up \(no warm-up"):
        curve_from_points(doc["points"])


def test_warm_up_waits_for_the_readings_to_settle(tmp_path):
    """Issue #32: a warm-up as long as the sensor's 1-s window was called warmed up while the
    300 W point's readings still came down from the previous cap (a peak of 372 W)."""
    clock = SimClock()
    gpus = make_simulated_gpus(H100, 2, clock=clock, loads=constant_load(ACTIVITY, MEMORY_BOUND),
                               sensor="average_1s")
    assert gpus[0].get_power_sensor().window_s == 1.0
    wl = ModelPacedWorkload(gpus, kind="train", batch_size=8, images_per_s_at_max=BASE)

    def spec(warmup_s):
        return SweepSpec(job="t", workload="train", mode="power_limit", gpu=gpus[0].get_name(),
                         gpus=2, simulated=True, batch_size=8, warmup_steps=5, steps=20,
                         warmup_s=warmup_s)

    for asked in (0.5, 1.0):  # shorter than the window, and as long: both wait to settle
        doc = run_sweep(gpus, wl, spec(asked), [300, 500], tmp_path / str(asked), clock=clock)
        assert [(p["warmed_up"], p["warmup_reason"]) for p in doc["points"]] == [(True, "")] * 2
        for p in doc["points"]:  # main: 372 W at the 300 W cap
            assert p["peak_gpu_w"] <= p["setting"] + 10, p


def test_readings_that_never_settle_are_flagged(tmp_path):
    from power.simulated import LoadPoint
    from power.sweep import SETTLE_MAX_S

    clock = SimClock()
    # the load keeps rising (about 45 W/s at the GPU): no warm-up length settles it
    rising = lambda t: LoadPoint(min(1.0, 0.05 + 0.08 * t), MEMORY_BOUND)  # noqa: E731
    gpus = make_simulated_gpus(H100, 2, clock=clock, loads=rising)
    wl = ModelPacedWorkload(gpus, kind="train", batch_size=8, images_per_s_at_max=BASE)
    spec = SweepSpec(job="t", workload="train", mode="power_limit", gpu=gpus[0].get_name(),
                     gpus=2, simulated=True, batch_size=8, warmup_steps=5, steps=20,
                     warmup_s=1.0)
    doc = run_sweep(gpus, wl, spec, [700], tmp_path, clock=clock)
    p = doc["points"][0]
    assert p["warmed_up"] is False
    assert p["warmup_reason"].startswith(f"not settled after a {1.0 + SETTLE_MAX_S:.2g}-s warm-up")
    assert "power readings still moving" in p["warmup_reason"]


def test_unwarmed_points_stay_out_of_the_front_and_the_plan():
    from power.planner import curve_from_points

    warm = {"setting": 350.0, "unit": "W", "avg_gpu_w": 340.0, "peak_gpu_w": 345.0,
            "images_per_s": 900.0, "warmed_up": True, "warmup_reason": ""}
    cold = {"setting": 300.0, "unit": "W", "avg_gpu_w": 330.0, "peak_gpu_w": 400.0,
            "images_per_s": 950.0, "warmed_up": False,
            "warmup_reason": "no warm-up (warmup_steps=0, warmup_s=0)"}
    # Cold, it "beats" the warm point on both axes; it is neither on nor shaping the front.
    assert pareto_flags([warm, cold]) == [True, False]
    assert [c.setting for c in curve_from_points([warm, cold])] == [350.0]


def test_cli_refuses_to_plan_when_no_point_is_warmed_up(tmp_path, capsys):
    job = write_job(tmp_path)
    job.write_text(job.read_text().replace("switch_w: 60", "switch_w: 60, sim_sensor: average_1s"))
    out = tmp_path / "o"
    code = sweep_main(["--job", str(job), "--limits", "300,400", "--out", str(out),
                       "--warmup-steps", "0", "--warmup-s", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and err[-1] == errors[0], err
    # (a short warm-up now waits for the readings to settle: only none at all is refused)
    assert "plan: no sweep point is warmed up (no warm-up" in errors[0]
    assert "Traceback" not in "\n".join(err)
    assert sum("not warmed up" in line for line in err) == 1  # the sweep's one warning
    assert [p["warmed_up"] for p in load_sweep(out)["points"]] == [False, False]
