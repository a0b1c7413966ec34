"""The attempts of a run and the images each processed: ``power/attempts.jsonl``.

A run that is stopped (SIGINT, SIGTERM, a lost node, SIGKILL) and resumed has several
attempts; each appends its samples to the same ``power/node<i>/`` files and the run's figures
cover every attempt (one scope: energy, window, images). A killed attempt writes no summary, so
rank 0 records here, as it goes, how many images the whole job has processed in this attempt:
one ``start`` line when the power session opens, an ``images`` line at most once per
:data:`EVERY_S` seconds, and an ``end`` line with the attempt's final count and its governor's
counts when the session closes. A killed attempt's count is its last ``images`` line (at most
:data:`EVERY_S` seconds of images behind its last power sample).

Lines are JSON objects, appended and flushed (never rewritten): ``{"event": "start",
"unix_s": …, "utc": …}``, ``{"event": "images", "images": N, "unix_s": …}``, ``{"event":
"end", "images": N, "unix_s": …, "governor_crossings": c, "fail_safe_steps": f}``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from power.clock import utc_iso

#: The ledger's file name, directly below a run phase's ``power/`` folder.
ATTEMPTS_NAME = "attempts.jsonl"

#: Seconds between two ``images`` lines of one attempt.
EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt as its ledger lines tell it."""

    start_unix_s: float
    images: int
    """Images the whole job processed in this attempt (the last count recorded)."""
    ended: bool
    """The attempt's session closed (it wrote its ``end`` line); False for a killed one."""
    governor_crossings: int | None = None
    fail_safe_steps: int | None = None


class AttemptLedger:
    """Rank 0's writer of ``power/attempts.jsonl`` (see the module docstring).

    Args:
        power_dir: The run phase's ``power/`` folder (created if needed).
    """

    def __init__(self, power_dir: Path) -> None:
        power_dir.mkdir(parents=True, exist_ok=True)
        self.path = power_dir / ATTEMPTS_NAME
        self._fh: Any = None
        self._last_s = -math.inf
        self._pending: int | None = None

    def start(self) -> None:
        """Open the file and record this attempt's start."""
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by end()
        now = time.time()
        self._write({"event": "start", "unix_s": now, "utc": utc_iso(now)})

    def images(self, n: int) -> None:
        """The job's images so far in this attempt (written at most every :data:`EVERY_S`)."""
        self._pending = int(n)
        now = time.monotonic()
        if self._fh is not None and now - self._last_s >= EVERY_S:
            self._last_s = now
            self._write({"event": "images", "images": self._pending, "unix_s": time.time()})

    def flush(self) -> None:
        """Write the latest count now (the session closes, maybe on an exception)."""
        if self._fh is not None and self._pending is not None:
            self._last_s = time.monotonic()
            self._write({"event": "images", "images": self._pending, "unix_s": time.time()})

    def end(self, images: int, governor_crossings: int | None = None,
            fail_safe_steps: int | None = None) -> None:
        """Record the attempt's final count and close the file (idempotent)."""
        if self._fh is None:
            return
        self._write({"event": "end", "images": int(images), "unix_s": time.time(),
                     "governor_crossings": governor_crossings,
                     "fail_safe_steps": fail_safe_steps})
        self._fh.close()
        self._fh = None

    def _write(self, rec: dict[str, Any]) -> None:
        try:
            self._fh.write(json.dumps(rec) + "\n")
            self._fh.flush()
        except (OSError, ValueError):  # a full disk: the samples say more; never stop a run
            pass


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def read_attempts(power_dir: str | Path) -> list[Attempt]:
    """The attempts recorded in ``power_dir/attempts.jsonl``, oldest first.

    [] without the file; unreadable lines (e.g. a torn last one) are skipped.
    """
    path = Path(power_dir) / ATTEMPTS_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        event = rec.get("event")
        if event == "start":
            t = rec.get("unix_s")
            out.append({"start_unix_s": float(t) if isinstance(t, (int, float)) else math.nan,
                        "images": 0, "ended": False})
        elif event in ("images", "end") and out and not out[-1]["ended"]:
            n = _int(rec.get("images"))
            if n is not None:
                out[-1]["images"] = n
            if event == "end":
                out[-1].update(ended=True, governor_crossings=_int(rec.get("governor_crossings")),
                               fail_safe_steps=_int(rec.get("fail_safe_steps")))
    return [Attempt(**a) for a in out]


@dataclass(frozen=True, slots=True)
class CountedImages:
    """Images of the attempts whose energy was measured (see :func:`measured_images`)."""

    images: int | None
    """Sum over the attempts that have a governed window; None when a window has no attempt
    (samples recorded before this ledger existed): a per-image figure would be false."""
    attempts: list[Attempt]
    without_samples: int
    """Attempts with no window: killed before their first samples reached the disk; their
    images are left out, as their energy is."""
    unknown_segments: int


def measured_images(power_dir: str | Path, segment_starts: list[float],
                    this_attempt: int | None = None) -> CountedImages:
    """The images that go with the energy of the windows starting at ``segment_starts``.

    An attempt owns the windows that start between its ledger ``start`` and the next
    attempt's; ``this_attempt`` replaces the last attempt's count (the session's total).
    """
    attempts = read_attempts(power_dir)
    if not attempts and this_attempt is not None:  # no ledger (unwritable): this one alone
        attempts = [Attempt(-math.inf, int(this_attempt), True)]
    elif attempts and this_attempt is not None:
        last = attempts[-1]
        attempts[-1] = Attempt(last.start_unix_s, int(this_attempt), last.ended,
                               last.governor_crossings, last.fail_safe_steps)
    starts = [a.start_unix_s for a in attempts] + [math.inf]
    owned = [0] * len(attempts)
    unknown = 0
    for seg in segment_starts:
        k = next((i for i in range(len(attempts)) if starts[i] <= seg < starts[i + 1]), None)
        if k is None:
            unknown += 1
        else:
            owned[k] += 1
    images = (None if unknown
              else sum(a.images for a, n in zip(attempts, owned, strict=True) if n))
    return CountedImages(images, attempts, sum(1 for n in owned if not n), unknown)
