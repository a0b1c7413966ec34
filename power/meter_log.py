"""The organisers' (or a team's own) PDU / power-meter log: read it, line it up with a run, compare.

A judge trusts the meter on the wall, not NVML. :func:`read_meter_log` reads the meter's CSV
export into wall-clock UTC times and watts; :func:`compare_with_meter` lines it up with the
run's own cluster power (which carries UTC since issue #15, see :mod:`power.sampler`) and
reports both curves, their difference, and the budget crossings as the meter saw them.
Everything here is pure (no clock, no hardware); only :func:`read_meter_log` reads a file.

Expected CSV (the header row names the columns; case, spaces and units in brackets are
ignored; ``,``, ``;`` or tab separated; lines starting with ``#`` are skipped):

* **time** - one column named ``time``, ``timestamp``, ``datetime``, ``date_time``, ``utc``,
  ``unix_s``, ``epoch``, ``unix``, ``time_s`` or ``ts`` - or two columns ``date`` and ``time``.
  Values: ISO 8601 / ``YYYY-MM-DD HH:MM:SS[.fff]`` (with ``Z`` or ``+hh:mm``; without a zone
  they are taken as UTC unless ``utc_offset_h`` says the meter logs local time), ``DD/MM/YYYY
  HH:MM:SS``, or Unix epoch seconds (milliseconds if > 1e11).
* **power** - ``watts``, ``power_w``, ``power``, ``w``, ``active_power``, ``real_power``,
  ``p`` or any name ending in ``_w``/``(W)``; ``kw``/``power_kw``/``(kW)`` are scaled by 1000
  and ``mW`` by 1/1000. Several power columns (one per outlet or PSU) are summed.
* optional **channel** - ``outlet``, ``channel``, ``node``, ``host``, ``device``, ``pdu`` or
  ``psu``: a "long" log with one row per outlet per time; outlets are summed (each outlet's
  last reading is held until its next one, for at most :data:`HOLD_INTERVALS` of its own
  usual intervals: an outlet that stops reporting leaves the total incomplete, and those
  times are left out, with a note, rather than summed with a stale value).

A time stamp that appears twice (for the same outlet) is a duplicated row when the readings
agree (dropped, with a note) and an error when they differ (two meters in one log without an
outlet column?): alternating readings at one instant would invent budget crossings.

Example (``harness report RUN --meter pdu.csv``)::

    timestamp,outlet,watts
    2025-03-02T10:15:00.000Z,A1,712.5
    2025-03-02T10:15:00.000Z,A2,698.0
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from power.clock import utc_iso
from power.crossings import budget_crossings

log = logging.getLogger(__name__)

TIME_NAMES = ("time", "timestamp", "datetime", "date_time", "utc", "unix_s", "epoch", "unix",
              "time_s", "ts", "time_utc", "timestamp_utc")
POWER_NAMES = ("watts", "power_w", "power", "w", "active_power", "real_power", "p", "power_watts",
               "total_power", "active_power_w")
KW_NAMES = ("kw", "power_kw", "kilowatts", "active_power_kw")
CHANNEL_NAMES = ("outlet", "channel", "node", "host", "device", "pdu", "psu", "outlet_id")

_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S.%f",
                 "%Y/%m/%d %H:%M:%S", "%d/%m/%Y %H:%M:%S.%f", "%d/%m/%Y %H:%M:%S",
                 "%d.%m.%Y %H:%M:%S", "%a %b %d %H:%M:%S %Y")


class MeterLogError(ValueError):
    """The meter log cannot be read or lined up; the message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class MeterLog:
    """A meter log as wall-clock UTC times and total watts."""

    path: str
    unix_s: np.ndarray
    """Sample times, Unix seconds UTC, ascending."""
    watts: np.ndarray
    """Total power at each time (outlets/columns summed). Units: W."""
    time_column: str
    power_columns: tuple[str, ...]
    channels: tuple[str, ...]
    """Outlets of a long-format log (empty for a wide one)."""
    notes: tuple[str, ...] = ()
    """What reading the log changed (duplicated rows dropped, an outlet that stopped), said
    in the report and on the command line."""

    def to_csv(self) -> str:
        """The normalised log: ``unix_s,utc,watts``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("unix_s", "utc", "watts"))
        for t, p in zip(self.unix_s, self.watts, strict=True):
            w.writerow((f"{t:.3f}", utc_iso(float(t)), f"{p:.3f}"))
        return buf.getvalue()


def _norm(name: str) -> str:
    n = name.strip().lower()
    n = re.sub(r"[\[\(]\s*(k?w|mw)\s*[\]\)]", r"_\1", n)
    n = re.sub(r"[^a-z0-9]+", "_", n).strip("_")
    return n


def _scale(original: str) -> float | None:
    """Watts per unit of a column by its name, or None if it is not a power column."""
    n = _norm(original)
    if n in KW_NAMES or n.endswith("_kw"):
        return 1000.0
    if re.search(r"(^|[^a-z])mW\b|\(mW\)|\[mW\]", original.strip()):
        return 0.001
    if n in POWER_NAMES or n.endswith(("_w", "_watts")):
        return 1.0
    return None


_ZONE = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$")


def _zone(text: str) -> str:
    """The time zone a stamp states (``Z``, ``+08:00``...), '' for none or a Unix time."""
    s = text.strip()
    try:
        float(s)
        return "unix"
    except ValueError:
        pass
    m = _ZONE.search(s) if re.search(r"\d[T ]\d|\d:\d", s) else None
    if m is None:
        return ""
    z = m.group(0).upper()
    return "+00:00" if z in ("Z", "+00", "+0000", "+00:00", "-00:00") else z


def parse_time(text: str, *, utc_offset_h: float = 0.0) -> float:
    """Parse one time stamp to Unix seconds UTC (see the module docstring for the forms).

    Raises:
        ValueError: Unrecognised form.
    """
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v) or v < 1e8:
            raise ValueError(f"{text!r}: a number but not a Unix time (relative seconds cannot "
                             "be lined up; export wall-clock time stamps)")
        return v / 1000.0 if v > 1e11 else v
    iso = s.replace("Z", "+00:00").replace("z", "+00:00")
    stamp = None
    try:
        stamp = _dt.datetime.fromisoformat(iso)
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                stamp = _dt.datetime.strptime(s, fmt)
                break
            except ValueError:
                continue
    if stamp is None:
        raise ValueError(f"{text!r}: unrecognised time stamp")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone(_dt.timedelta(hours=utc_offset_h)))
    return stamp.timestamp()


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MeterLogError(f"{path}: cannot read the meter log ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) < 2:
        raise MeterLogError(f"{path}: no samples (need a header row and at least one row)")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
        delim = dialect.delimiter
    except csv.Error:
        delim = ","
    rows = list(csv.reader(lines, delimiter=delim))
    return rows[0], rows[1:]


def _columns(p: Path, header: Sequence[str], time_column: str | None,
             power_columns: Sequence[str] | None
             ) -> tuple[int | None, int, list[tuple[int, float]], int | None]:
    """Find the date, time, power and channel columns of a meter log's header.

    (date column, time column, [(power column, scale to W)], channel column) of a meter
    log's header, named or found by name.
    """
    names = [_norm(h) for h in header]
    index = {n: i for i, n in enumerate(names)}

    def pick(wanted: str) -> int:
        key = _norm(wanted)
        if key not in index:
            raise MeterLogError(f"{p}: no column {wanted!r}; columns: {', '.join(header)}")
        return index[key]

    date_col = None
    if time_column is not None:
        t_col = pick(time_column)
    elif "date" in index and "time" in index:
        date_col, t_col = index["date"], index["time"]
    else:
        found = [index[n] for n in TIME_NAMES if n in index]
        if not found:
            raise MeterLogError(f"{p}: no time column (expected one of {', '.join(TIME_NAMES)}, "
                                f"or date + time); columns: {', '.join(header)}")
        t_col = found[0]
    if power_columns:
        p_cols = [(pick(c), _scale(c) or 1.0) for c in power_columns]
    else:
        p_cols = [(i, sc) for i, h in enumerate(header)
                  if i not in (t_col, date_col) and (sc := _scale(h)) is not None]
        if not p_cols:
            raise MeterLogError(f"{p}: no power column (expected watts, power_w, power, kw... "
                                f"or a name ending in _w); columns: {', '.join(header)}")
    chan_col = next((index[n] for n in CHANNEL_NAMES if n in index), None)
    return date_col, t_col, p_cols, chan_col


def read_meter_log(path: str | os.PathLike[str], *, time_column: str | None = None,
                   power_columns: Sequence[str] | None = None, utc_offset_h: float = 0.0,
                   offset_s: float = 0.0) -> MeterLog:
    """Read a meter's CSV export (columns as in the module docstring).

    Args:
        path: The CSV file.
        time_column: Name of the time column (default: found by name).
        power_columns: Names of the power columns, in W (default: found by name).
        utc_offset_h: Offset of the meter's local time from UTC for stamps without a zone
            (e.g. 8 for a meter logging Beijing time).
        offset_s: Added to every time (a meter clock known to run ahead is corrected with a
            negative value).

    Raises:
        MeterLogError: Unreadable, no time or power column, a bad value (names file and line).
    """
    p = Path(path)
    header, rows = _rows(p)
    date_col, t_col, p_cols, chan_col = _columns(p, header, time_column, power_columns)

    times: list[float] = []
    watts: list[float] = []
    chans: list[str] = []
    first_zone: tuple[int, str] | None = None
    zeros: list[int] = []
    duplicates: list[int] = []
    seen: dict[tuple[float, str], tuple[int, int]] = {}  # (time, outlet) -> (line, index)
    for line, row in enumerate(rows, start=2):
        if len(row) < len(header):
            raise MeterLogError(f"{p}:{line}: {len(row)} fields, the header has {len(header)}")
        stamp = row[t_col] if date_col is None else f"{row[date_col]} {row[t_col]}"
        try:
            t = parse_time(stamp, utc_offset_h=utc_offset_h) + offset_s
            w = sum(float(row[i].replace(",", ".") if row[i].count(",") == 1
                          and "." not in row[i] else row[i]) * sc for i, sc in p_cols)
        except ValueError as exc:
            raise MeterLogError(f"{p}:{line}: {exc}") from None
        if not math.isfinite(w) or w < 0:
            raise MeterLogError(f"{p}:{line}: power {w} W is not a finite, non-negative "
                                "reading; fix or remove the row")
        zone = _zone(stamp)
        if first_zone is None:
            first_zone = (line, zone)
        elif zone != first_zone[1]:
            raise MeterLogError(
                f"{p}:{line}: time zone {zone or 'none'} differs from line {first_zone[0]}'s "
                f"({first_zone[1] or 'none'}); export the log in one time zone")
        if w == 0:
            zeros.append(line)  # a dropped reading, not a cluster drawing nothing
            continue
        chan = row[chan_col].strip() if chan_col is not None else ""
        earlier = seen.get((t, chan))
        if earlier is not None:
            if watts[earlier[1]] != w:
                raise MeterLogError(
                    f"{p}:{line}: time {stamp.strip()}{' outlet ' + chan if chan else ''} "
                    f"appears again (line {earlier[0]}) with another reading ({w:g} W vs "
                    f"{watts[earlier[1]]:g} W); keep one reading per time"
                    + ("" if chan_col is not None else " (several meters in one log? add an "
                       "outlet column)"))
            duplicates.append(line)
            continue
        seen[(t, chan)] = (line, len(watts))
        times.append(t)
        watts.append(w)
        chans.append(chan)
    if zeros:
        log.warning("%s: %d reading(s) of 0 W excluded (lines %s)", p, len(zeros),
                    ", ".join(map(str, zeros[:5])) + (" ..." if len(zeros) > 5 else ""))
    notes: list[str] = []
    if duplicates:
        notes.append(f"{len(duplicates)} duplicated row(s) dropped (same time and reading as an "
                     f"earlier row: lines {_lines(duplicates)})")
    if not times:
        raise MeterLogError(f"{p}: no reading above 0 W")
    channels = tuple(sorted(set(chans))) if chan_col is not None else ()
    if channels and len(channels) > 1:
        t_arr, w_arr, stale = _sum_channels(times, watts, chans)
        notes += stale
        if not len(t_arr):
            raise MeterLogError(f"{p}: no time at which every outlet has a recent reading; "
                                "export the outlets over the same period")
    else:
        order = np.argsort(np.array(times), kind="stable")
        t_arr, w_arr = np.array(times)[order], np.array(watts)[order]
    for note in notes:
        log.warning("%s: %s", p, note)
    return MeterLog(str(p), t_arr, w_arr, header[t_col] if date_col is None else "date+time",
                    tuple(header[i] for i, _ in p_cols), channels, tuple(notes))


def _lines(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:5])) + (" ..." if len(numbers) > 5 else "")


#: An outlet's reading is held for at most this many of its own usual (median) intervals.
HOLD_INTERVALS = 3.0


def _sum_channels(times: list[float], watts: list[float], chans: list[str]
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sum a long-format log over outlets on the union of time stamps (last value held).

    Times before an outlet's first reading are dropped (the total would be incomplete), and so
    are times more than :data:`HOLD_INTERVALS` of an outlet's usual intervals after its last
    reading (it stopped reporting, or has a gap): a held value there would be invented.

    Returns:
        Times, totals, and one note per outlet that stopped or paused.
    """
    by: dict[str, list[tuple[float, float]]] = {}
    for t, w, c in zip(times, watts, chans, strict=True):
        by.setdefault(c, []).append((t, w))
    grid = np.unique(np.array(times))
    start = max(min(t for t, _ in v) for v in by.values())
    grid = grid[grid >= start]
    total = np.zeros(len(grid))
    complete = np.ones(len(grid), dtype=bool)
    notes: list[str] = []
    for name, v in sorted(by.items()):
        v.sort()
        ts = np.array([t for t, _ in v])
        ws = np.array([w for _, w in v])
        at = np.searchsorted(ts, grid, side="right") - 1
        total += ws[at]
        if len(ts) < 2:
            continue
        hold = HOLD_INTERVALS * float(np.median(np.diff(ts)))
        fresh = grid - ts[at] <= hold
        if not fresh.all():
            lost = grid[~fresh]
            notes.append(f"outlet {name}: no reading for more than {hold:g} s "
                         f"({HOLD_INTERVALS:g} of its intervals) from {utc_iso(float(lost[0]))}"
                         f" to {utc_iso(float(lost[-1]))}; the total is left out there, not "
                         "held at its last value")
        complete &= fresh
    return grid[complete], total[complete], notes


@dataclass(frozen=True, slots=True)
class MeterComparison:
    """The meter's view of a run next to the run's own."""

    unix_s: np.ndarray
    """Meter sample times inside the run."""
    meter_w: np.ndarray
    ours_w: np.ndarray
    """Our cluster power at the meter's times (linear interpolation)."""
    budget_w: float | None
    offset_s: float
    """Shift applied to the meter's times before lining up."""
    meter_crossings: Any
    """:class:`~power.crossings.CrossingStats` of the meter series (None without a budget)."""
    ours_crossings: Any
    """The same for our series at the meter's times."""
    run_unix_s: tuple[float, float] = (math.nan, math.nan)
    """First and last instant of our series (the run's power windows)."""
    notes: tuple[str, ...] = ()
    """The meter log's own notes (:attr:`MeterLog.notes`)."""

    @property
    def covers_fraction(self) -> float:
        """Share of the run's span that the lined-up meter readings span (1.0: all of it)."""
        run = self.run_unix_s[1] - self.run_unix_s[0]
        if not run > 0 or len(self.unix_s) < 2:
            return 0.0
        return min(1.0, float(self.unix_s[-1] - self.unix_s[0]) / run)

    @property
    def diff_w(self) -> np.ndarray:
        """Meter minus ours at each meter time."""
        return self.meter_w - self.ours_w

    def to_json(self) -> dict[str, Any]:
        """Figures for ``meter_comparison.json`` and the report."""
        d = self.diff_w
        span = float(self.unix_s[-1] - self.unix_s[0]) if len(self.unix_s) > 1 else 0.0
        out = {
            "samples": len(self.unix_s), "start_utc": utc_iso(float(self.unix_s[0])),
            "end_utc": utc_iso(float(self.unix_s[-1])), "duration_s": span,
            "offset_s": self.offset_s, "budget_w": self.budget_w,
            "meter_avg_w": float(self.meter_w.mean()), "ours_avg_w": float(self.ours_w.mean()),
            "meter_peak_w": float(self.meter_w.max()), "ours_peak_w": float(self.ours_w.max()),
            "diff_mean_w": float(d.mean()), "diff_mean_abs_w": float(np.abs(d).mean()),
            "diff_rms_w": float(np.sqrt((d ** 2).mean())), "diff_max_abs_w": float(np.abs(d).max()),
            "meter_energy_j": _trapezoid(self.unix_s, self.meter_w),
            "ours_energy_j": _trapezoid(self.unix_s, self.ours_w),
            "run_start_utc": utc_iso(self.run_unix_s[0]),
            "run_end_utc": utc_iso(self.run_unix_s[1]),
            "run_duration_s": self.run_unix_s[1] - self.run_unix_s[0],
            "covers_fraction": self.covers_fraction, "notes": list(self.notes),
        }
        if self.meter_crossings is not None:
            out["meter_crossings"] = self.meter_crossings.to_json()
            out["ours_crossings"] = self.ours_crossings.to_json()
        return out


def _trapezoid(t: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(0.5 * (w[1:] + w[:-1]) * np.diff(t))) if len(t) > 1 else 0.0


def compare_with_meter(meter: MeterLog, ours_unix_s: Sequence[float], ours_w: Sequence[float],
                       *, budget_w: float | None, offset_s: float = 0.0) -> MeterComparison:
    """Line the meter up with our cluster series by wall-clock time and compare.

    Args:
        meter: The meter log.
        ours_unix_s: Our cluster power's sample times (Unix seconds UTC), ascending.
        ours_w: Our cluster power. Units: W.
        budget_w: The power budget, for the crossings (None: no crossings).
        offset_s: Extra shift of the meter's times.

    Raises:
        MeterLogError: No overlap in time (the message gives both ranges and, when they are a
            whole number of hours apart, suggests the time-zone option).
    """
    ot = np.asarray(ours_unix_s, dtype=float)
    ow = np.asarray(ours_w, dtype=float)
    if len(ot) < 2:
        raise MeterLogError("the run has fewer than two power samples with wall-clock time "
                            "(runs recorded before wall-clock stamps cannot be lined up)")
    mt = meter.unix_s + offset_s
    inside = (mt >= ot[0]) & (mt <= ot[-1])
    if inside.sum() < 2 and mt[0] <= ot[-1] and mt[-1] >= ot[0]:
        every = float(np.median(np.diff(mt))) if len(mt) > 1 else math.inf
        raise MeterLogError(
            f"{meter.path}: the meter log ({utc_iso(float(mt[0]))} .. {utc_iso(float(mt[-1]))}) "
            f"spans the run ({utc_iso(float(ot[0]))} .. {utc_iso(float(ot[-1]))}, "
            f"{ot[-1] - ot[0]:.1f} s) but has {int(inside.sum())} reading(s) inside it (one "
            f"every {every:g} s): too sparse to compare; export readings at a shorter interval "
            "(at least two inside the run)")
    if inside.sum() < 2:
        gap_h = (float(np.median(mt)) - float(np.median(ot))) / 3600.0
        hint = (f"; they are about {round(gap_h):+d} h apart: is the meter logging local time? "
                f"(utc_offset_h / --meter-utc-offset-h {round(gap_h):d})"
                if abs(gap_h) >= 0.5 and abs(gap_h - round(gap_h)) < 0.1 else "")
        raise MeterLogError(
            f"{meter.path}: meter log ({utc_iso(float(mt[0]))} .. {utc_iso(float(mt[-1]))}) "
            f"does not overlap the run ({utc_iso(float(ot[0]))} .. {utc_iso(float(ot[-1]))})"
            + hint)
    t = mt[inside]
    mw = meter.watts[inside]
    ours_at = np.interp(t, ot, ow)
    mc = oc = None
    if budget_w is not None:
        mc = budget_crossings(t, mw, budget_w)
        oc = budget_crossings(t, ours_at, budget_w)
    return MeterComparison(t, mw, ours_at, budget_w, offset_s, mc, oc,
                           (float(ot[0]), float(ot[-1])), meter.notes)
