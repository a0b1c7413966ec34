"""The wall model: calibration on the simulated rack, the model file, the honest estimator."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fileio.user_error import UserError
from harness.cluster.distributed import SingleComm, dist_info_from_env
from harness.config import load_job
from power.calibrate import calibrate
from power.config import PowerConfig
from power.pdu import FanModel, PsuCurve, RackWallModel, SimulatedPdu, WallReading, read_pdu_csv
from power.session import PowerSession
from power.wall_hold import START_GUARD_FRACTION, WallEstimator
from power.wall_model import WallModelError, load_wall_model, save_wall_model
from tests.conftest import ROOT

DEMO = ROOT / "jobs" / "demo.yaml"


def _cfg(**kw: object) -> PowerConfig:
    return PowerConfig(enabled=True, sim_pdu=True, sim_gpus_per_node=8, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("latency_s", [1.0, 2.0])
def test_calibration_measures_the_meters_lag_and_fits_the_simulated_wall(latency_s: float) -> None:
    cal = calibrate(_cfg(pdu_latency_s=latency_s), levels=6, hold_s=4.0)
    m = cal.model
    assert m.lag_s == pytest.approx(latency_s, abs=0.15)
    assert m.samples >= 30 and m.nodes == 1
    # The fit reproduces the simulated truth at the readings to within a few noise sds.
    assert 5.0 / 2 < m.residual_sd_w < 30.0, m
    truth = RackWallModel(psu=PsuCurve(3000.0))
    for total in (1200.0, 2000.0, 2800.0):
        gpu, cpu = total - 300.0, 300.0
        assert m.rack_w([(gpu, cpu)]) == pytest.approx(truth.wall_w([total]), abs=4 * 30.0)
    # The caps went down and back up; the original limits were put back (sim GPUs are fresh).
    assert cal.caps_w[0] == cal.caps_w[-1] == max(cal.caps_w)


def test_model_file_round_trip_and_never_overwritten(tmp_path: Path) -> None:
    m = calibrate(_cfg(), levels=4, hold_s=4.0).model
    out = save_wall_model(m, tmp_path / "wall.json")
    assert load_wall_model(out) == m
    before = out.read_bytes()
    with pytest.raises(FileExistsError):
        save_wall_model(m, out)
    assert out.read_bytes() == before


@pytest.mark.parametrize(("text", "says"), [
    (None, "no such wall model file"),
    ("{not json", "not JSON"),
    ('{"kind": "something-else"}', "not a wall model"),
    ("GOOD:gpu_coef=NaN", "gpu_coef must be a finite number"),
    ("GOOD:lag_s=-1", "lag_s must be between 0 and 60"),
    ("GOOD:samples=0", "samples must be an integer >= 1"),
])
def test_bad_model_files_are_one_line_user_errors(tmp_path: Path, text: str | None,
                                                  says: str) -> None:
    path = tmp_path / "wall.json"
    if text is not None and text.startswith("GOOD:"):
        key, value = text[5:].split("=")
        data = calibrate(_cfg(), levels=4, hold_s=4.0).model.to_dict()
        data[key] = float(value) if key != "samples" else int(value)
        path.write_text(json.dumps(data).replace("NaN", "NaN"))
    elif text is not None:
        path.write_text(text)
    with pytest.raises(WallModelError, match=says):
        load_wall_model(path)
    with pytest.raises(UserError) as err:
        load_job(str(DEMO), [f"power.wall_model={path}"])
    assert "power.wall_model" in str(err.value) and says in str(err.value)
    assert "\n" not in str(err.value)


def _harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_power_calibrate_command_writes_a_model_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "wall.json"
    done = _harness("power-calibrate", "--job", str(DEMO), "--set", "power.sim_pdu=true",
                    "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "meter lag 1.0 s" in done.stdout and str(out) in done.stdout
    model = load_wall_model(out)
    assert model.meter == "simulated PDU" and model.lag_s == 1.0
    before = out.read_bytes()
    again = _harness("power-calibrate", "--job", str(DEMO), "--set", "power.sim_pdu=true",
                     "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr and out.read_bytes() == before
    no_meter = _harness("power-calibrate", "--job", str(DEMO), "--out", str(tmp_path / "x.json"),
                        cwd=tmp_path)
    assert no_meter.returncode == 2 and "no wall meter" in no_meter.stderr
    assert not (tmp_path / "x.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with_bad = _harness("power-calibrate", "--job", str(DEMO), "--set", "power.sim_pdu=true",
                        "--set", f"power.wall_model={bad}", "--out", str(tmp_path / "y.json"),
                        cwd=tmp_path)
    assert with_bad.returncode == 2 and "not a wall model" in with_bad.stderr
    assert len(with_bad.stderr.strip().splitlines()) == 1, with_bad.stderr
    helped = _harness("power-calibrate", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "power.wall_model" in helped.stdout


def _drive(est: WallEstimator, truth: RackWallModel, pdu: SimulatedPdu, t: list[float],
           seconds: float, component_w: float) -> None:
    end = t[0] + seconds
    while t[0] < end:
        est.observe_parts(t[0], [(component_w - 300.0, 300.0)])
        pdu.observe(t[0], truth.wall_w([component_w]))
        reading = pdu.read()
        if reading is not None:
            est.correct(reading)
        t[0] += 0.1


def test_online_estimator_starts_safe_then_learns_ratio_lag_and_its_guard() -> None:
    truth = RackWallModel()
    pdu = SimulatedPdu(latency_s=1.4, noise_w=5.0, seed=3)
    t = [1000.0]
    est = WallEstimator(None, budget_w=3000.0, clock=lambda: t[0])
    est.observe_parts(t[0], [(2300.0, 300.0)])
    true_excess = truth.wall_w([2600.0]) - 2600.0
    # Before any reading: a conservative ratio plus the start guard, above the true excess.
    assert est.offset_w() > true_excess + 0.5 * START_GUARD_FRACTION * 3000.0
    for level in (2600.0, 1500.0, 2600.0, 1800.0, 2600.0, 2200.0, 2600.0):
        _drive(est, truth, pdu, t, 6.0, level)
    assert est.lag_s == pytest.approx(1.4, abs=0.25)
    assert est.ratio == pytest.approx(truth.wall_w([2600.0]) / 2600.0, abs=0.03)
    _drive(est, truth, pdu, t, 20.0, 2600.0)
    # Holding at 2600 W: the offset covers the true excess with a measured guard, not 150 W.
    assert true_excess <= est.offset_w() <= true_excess + 90.0, (est.offset_w(), true_excess)
    assert est.guard_w < 80.0 and est.describe()["source"] == "learned online"


def test_estimator_with_a_model_corrects_a_meter_bias_online(tmp_path: Path) -> None:
    model = calibrate(_cfg(), levels=6, hold_s=4.0).model
    truth = RackWallModel(switch_w=160.0)  # a bigger switch and other fans than calibrated
    pdu = SimulatedPdu(latency_s=1.0, noise_w=5.0, seed=4)
    t = [2000.0]
    est = WallEstimator(model, budget_w=3000.0, clock=lambda: t[0])
    assert est.start_guard_w == pytest.approx(3.0 * model.residual_sd_w)
    _drive(est, truth, pdu, t, 40.0, 2600.0)
    # The meter reads more than the model says (another switch, other fans): learned online.
    miss = truth.wall_w([2600.0]) - model.rack_w([(2300.0, 300.0)])
    assert miss > 100.0
    assert est.correction_w == pytest.approx(miss, abs=20.0)
    true_excess = truth.wall_w([2600.0]) - 2600.0
    assert true_excess <= est.offset_w() <= true_excess + 100.0
    assert est.describe()["fit"]["lag_s"] == model.lag_s


def test_session_with_a_model_holds_the_wall_and_says_which_model(tmp_path: Path) -> None:
    path = save_wall_model(calibrate(_cfg(), levels=6, hold_s=4.0).model, tmp_path / "w.json")
    job = load_job(str(DEMO), ["power.enabled=true", "power.backend=simulated",
                               "power.sim_pdu=true", f"power.wall_model={path}"])
    session = PowerSession(job.power, dist_info_from_env({}), SingleComm(), tmp_path)
    with session:
        time.sleep(5.0)
    summary = session.summary(0)
    rows = read_pdu_csv(tmp_path / "power" / "pdu.csv")
    assert rows and max(r.wall_w for r in rows) <= 3000.0
    model = summary["wall"]["model"]
    assert model["source"] == "calibrated model" and model["fit"]["lag_s"] == 1.0
    assert model["readings"] >= 2


def test_estimator_fault_still_fails_safe() -> None:
    t = [0.0]
    est = WallEstimator(None, budget_w=3000.0, silent_after_s=3.0, clock=lambda: t[0])
    est.observe_parts(0.0, [(2000.0, 300.0)])
    est.correct(WallReading(1.0, -5.0, 1.0, 2.0))
    assert est.offset_w() == 3000.0 and est.faults == 1


def test_online_hold_from_an_idle_start_settles_fast_and_never_crosses() -> None:
    """Closed loop: a first-order load that wants more than the budget, held by the estimator."""
    truth = RackWallModel(psu=PsuCurve(3000.0), fans=FanModel(full_load_w=3000.0))
    pdu = SimulatedPdu(latency_s=1.0, noise_w=5.0, seed=0)
    t = [1000.0]
    est = WallEstimator(None, budget_w=3000.0, clock=lambda: t[0])
    component_w, walls = 400.0, []
    for i in range(900):
        est.observe_parts(t[0], [(component_w - 330.0, 330.0)])
        pdu.observe(t[0], truth.wall_w([component_w]))
        reading = pdu.read()
        if reading is not None:
            est.correct(reading)
            walls.append(reading.wall_w)
        demand = 400.0 if i < 10 else 2950.0  # idle for a second, then more than allowed
        component_w += 0.5 * (min(demand, 3000.0 - 150.0 - est.offset_w()) - component_w)
        t[0] += 0.1
    assert max(walls) <= 3000.0
    # Within 15 readings the wall is held near budget - headroom (2850 W), and stays there.
    assert min(walls[15:]) >= 2750.0, walls[:30]
    assert est.ratio == pytest.approx(truth.wall_w([2420.0]) / 2420.0, abs=0.01)
    assert est.lag_s == 1.0 and est.guard_w < 40.0
