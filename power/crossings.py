"""Budget crossings of a power time series.

Budget crossings of a power time series: the one definition the governor, the meter
comparison and the simulation figures share.

A crossing starts at the first sample above the budget and ends at the first sample back at
or below it (so its duration is a multiple of the sampling interval, as the governor logs it);
a series that ends above the budget closes the crossing at its last sample. Pure: no I/O.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from power.config import check_budget


@dataclass(frozen=True, slots=True)
class CrossingInterval:
    """One stretch above the budget. Units: s, W."""

    start_s: float
    """Time of the first sample above the budget (in the series' own time base)."""
    duration_s: float
    """Until the first sample back at or below the budget."""
    peak_w: float
    """Highest sample during the crossing."""


@dataclass(frozen=True, slots=True)
class CrossingStats:
    """Summary of every crossing of one series."""

    budget_w: float
    intervals: tuple[CrossingInterval, ...]
    samples: int
    """Samples in the series."""
    samples_over: int
    """Samples above the budget."""

    @property
    def count(self) -> int:
        """Number of crossings."""
        return len(self.intervals)

    @property
    def longest_s(self) -> float:
        """Longest crossing (0 with none)."""
        return max((c.duration_s for c in self.intervals), default=0.0)

    @property
    def total_s(self) -> float:
        """Time spent above the budget."""
        return sum(c.duration_s for c in self.intervals)

    @property
    def peak_w(self) -> float | None:
        """Highest sample above the budget, None with no crossing."""
        return max((c.peak_w for c in self.intervals), default=None)

    def count_longer_than(self, seconds: float) -> int:
        """Crossings lasting more than ``seconds``."""
        return sum(c.duration_s > seconds + 1e-9 for c in self.intervals)

    def to_json(self) -> dict[str, Any]:
        """``{budget_w, count, longest_s, total_s, peak_w, samples, samples_over}``."""
        return {"budget_w": self.budget_w, "count": self.count, "longest_s": self.longest_s,
                "total_s": self.total_s, "peak_w": self.peak_w, "samples": self.samples,
                "samples_over": self.samples_over}


def budget_crossings(times_s: Sequence[float], watts: Sequence[float],
                     budget_w: float) -> CrossingStats:
    """Find where ``watts`` exceeds ``budget_w``.

    Args:
        times_s: Sample times, ascending.
        watts: Power at each time (non-finite samples are skipped). Units: W.
        budget_w: The budget. Units: W.

    Raises:
        ValueError: Lengths differ, times go backwards, or the budget is not positive.
    """
    if len(times_s) != len(watts):
        raise ValueError(f"budget_crossings: {len(times_s)} times but {len(watts)} values")
    check_budget(budget_w)
    intervals: list[CrossingInterval] = []
    start: float | None = None
    peak = 0.0
    last_t = -math.inf
    n = over = 0
    for t, w in zip(times_s, watts, strict=False):
        t, w = float(t), float(w)
        if t < last_t:
            raise ValueError(f"budget_crossings: time goes backwards at {t}")
        if not math.isfinite(w):
            continue
        last_t = t
        n += 1
        if w > budget_w:
            over += 1
            if start is None:
                start, peak = t, w
            else:
                peak = max(peak, w)
        elif start is not None:
            intervals.append(CrossingInterval(start, t - start, peak))
            start = None
    if start is not None:
        intervals.append(CrossingInterval(start, last_t - start, peak))
    return CrossingStats(float(budget_w), tuple(intervals), n, over)
