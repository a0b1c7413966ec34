"""The report's wall card: the PDU's peak (summary power.wall) first among the power cards."""
from __future__ import annotations

from reports.render import _wall_kpi


def test_wall_card_shows_the_pdu_peak_and_alerts_on_a_crossing() -> None:
    summary = {"power": {"wall": {"source": "simulated PDU", "peak_w": 3324.5, "avg_w": 3239.9,
                                  "crossings": 1, "longest_crossing_s": 95.0, "samples": 99}}}
    card = str(_wall_kpi(summary, 3000.0))
    assert "peak at the wall W" in card and (">3324<" in card or ">3325<" in card)
    assert "mean 3240 W, 1 crossing(s), budget 3000 W" in card
    assert "kpi alert" in card
    ok = str(_wall_kpi({"power": {"wall": {"peak_w": 2828.0, "avg_w": 2772.0,
                                           "crossings": 0}}}, 3000.0))
    assert "kpi alert" not in ok and ">2828<" in ok


def test_no_wall_card_without_a_meter() -> None:
    assert _wall_kpi({"power": {"enabled": True}}, 3000.0) is None
    assert _wall_kpi({}, 3000.0) is None


def test_power_chart_draws_the_pdu_and_the_fit_from_a_real_session(tmp_path) -> None:  # noqa: ANN001
    import time

    from harness.cluster.distributed import SingleComm, dist_info_from_env
    from harness.config import load_job
    from power.calibrate import calibrate
    from power.session import PowerSession
    from power.wall_model import save_wall_model
    from reports import plots
    from reports.render import _phase_power
    from reports.rundata import read_power_dir
    from tests.conftest import ROOT

    job = load_job(str(ROOT / "jobs" / "demo.yaml"),
                   ["power.enabled=true", "power.backend=simulated", "power.sim_pdu=true"])
    model = save_wall_model(calibrate(job.power, levels=5, hold_s=4.0).model,
                            tmp_path / "wall.json")
    job = load_job(str(ROOT / "jobs" / "demo.yaml"),
                   ["power.enabled=true", "power.backend=simulated", "power.sim_pdu=true",
                    f"power.wall_model={model}"])
    session = PowerSession(job.power, dist_info_from_env({}), SingleComm(), tmp_path / "run")
    with session:
        time.sleep(4.0)
    summary = session.summary(0)
    pd = read_power_dir(tmp_path / "run" / "power", summary)
    assert pd is not None and pd.pdu_series is not None
    assert len(pd.pdu_series[0]) == summary["wall"]["samples"]
    chart = str(plots.power_timeline(pd, key="t", title="training"))
    assert "at the wall (PDU, 1-s readings)" in chart
    block = str(_phase_power(pd, "training", "t"))
    fit = summary["wall"]["model"]["fit"]
    assert "Wall model: calibrated (power.wall_model)" in block and str(model) in block
    assert f"residual sd {fit['residual_sd_w']:.1f} W" in block
    assert f"{fit['lag_s']:.1f} s after a 1.0 s window" in block
