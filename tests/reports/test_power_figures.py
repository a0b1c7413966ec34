"""Every power figure of the report is true: cards from the samples the chart draws (one UTC
time base, the governed window), one window for images/s, W and J, nothing dropped silently."""
from __future__ import annotations

import json
import re
from pathlib import Path

from reports.render import render_report
from reports.rundata import load_run
from tests.power.power_files import BUDGET_W, T0, two_nodes


def _run(tmp_path: Path, *, caps_events: int = 0) -> Path:
    """A 2-node run whose summary.json says what the governor used to say (0 crossings, peak
    2851 W) while the samples cross the budget until the restore."""
    run = tmp_path / "run"
    run.mkdir()
    two_nodes(run / "power")
    if caps_events:
        events = run / "power" / "node000" / "governor_events.jsonl"
        lines = events.read_text().splitlines()
        caps = [json.dumps({"event": "caps", "wall_time": T0 + 0.4 + 1.5 * k / caps_events,
                            "t_s": 0.05 + 1.5 * k / caps_events, "reason": "raise",
                            "cluster_w": 2800.0, "limits_w": [300.0, 300.0]})
                for k in range(caps_events)]
        events.write_text("\n".join([lines[0], *caps, lines[1]]) + "\n")
    power = {"enabled": True, "backend": "simulated", "simulated": True, "gpus_per_node": 2,
             "budget_w": BUDGET_W, "headroom_w": 150.0, "avg_cluster_w": 2800.0,
             "peak_cluster_w": 2851.0, "energy_j": 1000.0, "crossings": 0,
             "crossing_time_s": 0.0, "images": 160, "images_per_s": 400.0,
             "images_per_s_per_w": 0.5, "j_per_image": 2.0}
    (run / "summary.json").write_text(json.dumps({"job": "fig", "steps": 10, "power": power,
                                                  "images_per_s": 100.0}))
    return run


def _kpi(html: str, label: str) -> str:
    m = re.search(r'<div class="label">' + re.escape(label) + r'</div><div class="value">'
                  r'([^<]*)</div>(?:<div class="sub">([^<]*)</div>)?', html)
    assert m, label
    return m.group(1) + "|" + (m.group(2) or "")


def test_cards_are_the_charted_samples_not_the_old_summary(tmp_path: Path) -> None:
    html = render_report([load_run(_run(tmp_path))])
    # The samples cross 3000 W from 1.5 s until the restore at 2.0 s (3100 W): 1 crossing.
    assert _kpi(html, "budget crossings").startswith("1|")
    assert _kpi(html, "peak cluster W").startswith("3,100|") or \
        _kpi(html, "peak cluster W").startswith("3100|")
    # images/s/W and J/image over the same 1.6-s window, and the window is said.
    sub = _kpi(html, "J/image (training)")
    assert "1.60-s power window" in sub
    energy = 1.1 * 2800 + 0.5 * 3100
    value = float(sub.split("|")[0].replace(",", ""))
    assert abs(value - energy / 160) < 0.02 * energy / 160
    # The chart's time axis is UTC from the governor's start.
    assert "seconds after the governor started, 2025-01-01T00:00:00.40" in html


def test_marks_and_events_are_thinned_visibly_and_keep_the_restore(tmp_path: Path) -> None:
    html = render_report([load_run(_run(tmp_path, caps_events=1074))])
    assert "governor cap changes: every 4th of 1074 shown" in html  # on the chart
    assert "ordinary cap changes: every 27th of 1074 shown" in html  # under the table
    assert html.count("limits restored") >= 2  # both nodes' restores, in the table
    assert "governor start" in html and "over budget" in html  # chart legend
