"""The report's IS-vs-time and IS-vs-energy chart (``train.target_is``): the points' energy from
the power series, the target marked, the report's line, and the page in headless Chromium."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from power.cluster_series import ClusterSeries, Segment
from reports.render import write_report
from reports.target_chart import target_chart, target_points
from tests.reports.browser import inspect_page
from tests.reports.test_report import _artifact_dir, chromium, make_run  # noqa: F401

SERIES = ClusterSeries((Segment(1000.0, 1100.0, "restore", (1000.0, 1100.0), (2000.0, 2000.0),
                                {}, 200000.0),), ("node000",))
"""A constant 2000 W over 100 s of UTC time."""

VALS = [{"kind": "val", "step": s, "val_is": 0.5 + s / 100, "time_s": s * 2.0,
         "unix_s": 1000.0 + s * 2.0} for s in (10, 20, 30)]
HIT = {"target_is": 0.65, "reached": True, "best_is": 0.8, "is": 0.7, "step": 20,
       "time_s": 40.0, "energy_j": 80000.0, "energy_note": None}


def test_points_take_their_energy_from_the_series_up_to_each_validation() -> None:
    pts = target_points([{"kind": "train", "step": 1}, *VALS, {"kind": "val", "step": 5,
                                                                 "val_is": 0.4}], SERIES)
    assert pts == [(20.0, 0.6, pytest.approx(40000.0)), (40.0, 0.7, pytest.approx(80000.0)),
                   (60.0, 0.8, pytest.approx(120000.0))]  # the untimed record is left out
    assert [p[2] for p in target_points(VALS, None)] == [None, None, None]


def test_chart_marks_the_target_and_the_hit() -> None:
    svg = str(target_chart(VALS, SERIES, HIT, key="t"))
    assert "target IS 0.65" in svg and "reached" in svg
    assert "40 s" in svg and "80 kJ" in svg  # the hit's time and energy beside its ring
    assert "not reached" not in svg
    missed = str(target_chart(VALS, None, {**HIT, "reached": False}, key="m"))
    assert "IS against time (not reached)" in missed
    assert "no power samples at these validations" in missed
    assert target_chart([{"kind": "val", "step": 1, "val_is": 0.5}], SERIES, HIT, key="x") is None


def _target_run(tmp_path: Path) -> Path:
    run = make_run(tmp_path)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        if m["kind"] == "val":
            m.update(time_s=m["step"] * 0.4, unix_s=1767225600.0 + m["step"] * 0.4)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    summary = json.loads((run / "summary.json").read_text())
    summary["target"] = {**HIT, "target_is": 0.78, "step": 20, "time_s": 8.0, "is": 0.785,
                         "energy_j": None, "energy_note": "no power samples before the target"}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_states_the_target_line(tmp_path: Path) -> None:
    html = write_report([_target_run(tmp_path)], tmp_path / "r.html").read_text()
    assert "Time and energy to the target IS" in html
    assert ("Target IS 0.7800 reached at step 20 (validation IS 0.7850) after 8.0 s of "
            "training and energy unknown (no power samples before the target).") in html
    assert 'aria-label="r1-target"' in html


@pytest.mark.browser
def test_browser_shows_the_target_chart(chromium: str, tmp_path: Path,  # noqa: F811
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = _artifact_dir(tmp_path)
    html_path = write_report([_target_run(tmp_path)], out / "target.html")
    shot = out / "target.png"
    result = inspect_page(html_path, chromium=chromium, screenshot=shot, expressions={
        "chart_w": "document.querySelector('svg[aria-label=\"r1-target\"]')"
                   ".getBoundingClientRect().width",
        "line": "document.getElementById('r1-target-line').textContent"})
    with capsys.disabled():
        print(f"\ntarget chart: {html_path}\nscreenshot: {shot}")
    assert result.network_requests == [] and result.console_errors == []
    assert result.values["chart_w"] > 300
    assert result.values["line"].startswith("Target IS 0.7800 reached at step 20")
