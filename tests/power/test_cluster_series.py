"""The cluster power series (power.cluster_series): one UTC time base, the governed window,
an open crossing counted, bad samples excluded."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from power.clock import utc_iso
from power.cluster_series import cluster_series, read_cluster_series, read_node_series
from tests.power.power_files import BUDGET_W, T0, two_nodes, write_node


def test_two_nodes_sum_on_utc_over_the_governed_window(tmp_path: Path) -> None:
    two_nodes(tmp_path)
    cs = read_cluster_series(tmp_path)
    assert cs.utc and cs.nodes == ("node000", "node001") and len(cs.segments) == 1
    seg = cs.segments[0]
    # From the last node's start to the first node's restore, both edges in the series.
    assert seg.start_unix_s == pytest.approx(T0 + 0.4) and seg.end == "restore"
    assert seg.end_unix_s == pytest.approx(T0 + 2.0)
    assert seg.unix_s[0] == seg.start_unix_s and seg.unix_s[-1] == seg.end_unix_s
    # Same UTC instants for both nodes: at 1.0 s both draw 1400 W.
    i = min(range(len(seg.unix_s)), key=lambda j: abs(seg.unix_s[j] - (T0 + 1.0)))
    assert seg.watts[i] == pytest.approx(2800.0)
    s = cs.stats(BUDGET_W)
    # Over budget from 1.5 s to the restore at 2.0 s: the open crossing counts, closed there.
    assert s["crossings"] == 1
    assert s["crossing_time_s"] == pytest.approx(0.5, abs=1e-3)
    # The 3200 W after the restore is outside the window; the peak is the governed 3100 W.
    assert s["peak_cluster_w"] == pytest.approx(3100.0)
    assert s["window_s"] == pytest.approx(1.6, abs=1e-3)
    # Energy from the cumulative columns across the window: 1.1 s at 2800 W, 0.5 s at 3100.
    assert s["energy_j"] == pytest.approx(1.1 * 2800 + 0.5 * 3100, rel=0.02)
    assert s["avg_cluster_w"] == pytest.approx(s["energy_j"] / s["window_s"])
    assert s["window_start_utc"] == utc_iso(T0 + 0.4)


def test_bad_samples_are_excluded_not_averaged_in(tmp_path: Path) -> None:
    write_node(tmp_path, 0, 0.0, 0.0, 2.5)
    path = tmp_path / "node000" / "gpu_power.csv"
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    fields[2] = "nan"
    lines[5] = ",".join(fields)
    fields = lines[7].split(",")
    fields[2] = "-5.0"
    lines[7] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    node = read_node_series(tmp_path / "node000")
    assert node is not None and node.excluded == 2
    s = cluster_series([node]).stats(BUDGET_W)
    assert s["samples_excluded"] == 2
    assert all(math.isfinite(v) for v in (s["peak_cluster_w"], s["avg_cluster_w"]))
    assert s["peak_cluster_w"] == pytest.approx(1600.0)
