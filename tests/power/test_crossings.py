"""The shared definition of a budget crossing."""
from __future__ import annotations

import math

import pytest

from power.crossings import budget_crossings


def test_crossings_count_longest_total_and_peak():
    t = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    w = [900, 1100, 1200, 950, 1001, math.nan, 999, 1500]
    s = budget_crossings(t, w, 1000)
    assert s.count == 3
    assert [round(c.duration_s, 6) for c in s.intervals] == [0.2, 0.2, 0.0]  # last: open end
    assert s.longest_s == pytest.approx(0.2) and s.total_s == pytest.approx(0.4)
    assert s.peak_w == 1500 and s.samples == 7 and s.samples_over == 4
    assert s.count_longer_than(0.1) == 2 and s.count_longer_than(0.2) == 0
    assert s.to_json()["count"] == 3


def test_no_crossing_and_bad_input():
    s = budget_crossings([0, 1], [10, 20], 100)
    assert (s.count, s.longest_s, s.total_s, s.peak_w) == (0, 0.0, 0.0, None)
    with pytest.raises(ValueError, match="backwards"):
        budget_crossings([1, 0], [1, 1], 10)
    with pytest.raises(ValueError, match="2 times but 1"):
        budget_crossings([0, 1], [1], 10)
    with pytest.raises(ValueError, match="budget_w"):
        budget_crossings([0], [1], 0)
