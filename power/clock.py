"""Injectable time sources.

Everything in :mod:`power` that needs the time takes a :class:`Clock`, so tests can run minutes of
simulated time in milliseconds with :class:`SimClock`, and no policy code ever calls
``time.time()`` or ``time.sleep()`` itself.

Every power sample and governor event carries both clocks (:func:`time_fields`): ``mono_s``,
the monotonic time the code computes durations with, and ``unix_s``/``utc``, wall-clock UTC
that lines our figures up with a PDU or meter log. A simulated clock has a fixed wall-clock
origin (:data:`SIM_WALL_ORIGIN_S`) so simulated runs are reproducible to the byte.
"""
from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Any, Protocol

SIM_WALL_ORIGIN_S = 1_735_689_600.0
"""Wall-clock time of a :class:`SimClock` at 0 s: 2025-01-01T00:00:00Z."""


class Clock(Protocol):
    """A monotonic time source that can also wait and tell the wall-clock time."""

    def now(self) -> float:
        """Return the current time in seconds (monotonic, arbitrary origin)."""

    def sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` (a simulated clock just advances)."""

    def wall_time_s(self) -> float:
        """Return the wall-clock time now as seconds since the Unix epoch (UTC)."""


def utc_iso(unix_s: float) -> str:
    """Format Unix seconds as ISO 8601 UTC with microseconds: ``2025-01-01T00:00:00.250000Z``."""
    stamp = _dt.datetime.fromtimestamp(unix_s, tz=_dt.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def time_fields(clock: Any) -> dict[str, Any]:
    """Read ``clock`` once for a record: ``{"mono_s", "unix_s", "utc"}``.

    Clocks without :meth:`Clock.wall_time_s` (older third-party ones) fall back to
    :func:`time.time`.
    """
    mono = float(clock.now())
    wall = getattr(clock, "wall_time_s", None)
    unix = float(wall()) if callable(wall) else time.time()
    return {"mono_s": mono, "unix_s": unix, "utc": utc_iso(unix)}


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

    def wall_time_s(self) -> float:
        """Return :func:`time.time` (NTP-disciplined wall clock, as a meter log uses)."""
        return time.time()


class SimClock:
    """A simulated clock that only moves when told to; thread-safe.

    Args:
        start_s: Initial time in seconds.
        wall_origin_s: Wall-clock time (Unix seconds) at simulated time 0.
    """

    def __init__(self, start_s: float = 0.0, wall_origin_s: float = SIM_WALL_ORIGIN_S) -> None:
        self._now_s = float(start_s)
        self.wall_origin_s = float(wall_origin_s)
        self._lock = threading.Lock()

    def wall_time_s(self) -> float:
        """Return ``wall_origin_s`` plus the simulated time."""
        return self.wall_origin_s + self.now()

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
