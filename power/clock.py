"""Injectable time sources.

Everything in :mod:`power` that needs the time takes a :class:`Clock`, so tests can run minutes of
simulated time in milliseconds with :class:`SimClock`, and no policy code ever calls
``time.time()`` or ``time.sleep()`` itself.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic time source that can also wait."""

    def now(self) -> float:
        """Return the current time in seconds (monotonic, arbitrary origin)."""

    def sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` (a simulated clock just advances)."""


class MonotonicClock:
    """Wall time from :func:`time.monotonic`; :meth:`sleep` really sleeps.

    Args:
        start_at_zero: Count from the moment of construction instead of the system's
            monotonic origin (simulated loads are functions of this time).
    """

    def __init__(self, start_at_zero: bool = False) -> None:
        self._origin = time.monotonic() if start_at_zero else 0.0

    def now(self) -> float:
        """Return :func:`time.monotonic` (minus the origin)."""
        return time.monotonic() - self._origin

    def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` (no-op when not positive)."""
        if seconds > 0:
            time.sleep(seconds)


class SimClock:
    """A simulated clock that only moves when told to; thread-safe.

    Args:
        start_s: Initial time in seconds.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the simulated time in seconds."""
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError(f"SimClock.advance: seconds must be >= 0, got {seconds}")
        with self._lock:
            self._now_s += seconds

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` instead of waiting."""
        self.advance(max(0.0, seconds))
