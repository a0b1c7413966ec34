"""Bring a PDU/meter log into a run: ``harness report RUN --meter pdu.csv``.

For every power phase of the run (``power/`` for training, ``infer/power/`` for inference) that
the meter log overlaps in wall-clock time, :func:`import_meter` writes

* ``meter_log.csv`` - the meter's samples within the phase, normalised to ``unix_s,utc,watts``;
* ``meter_comparison.json`` - averages, peaks, energy, the difference meter - ours (mean,
  mean absolute, RMS, largest) and the budget crossings as the meter saw them (count, longest,
  total time over) next to ours at the same instants
  (:meth:`power.meter_log.MeterComparison.to_json`, plus ``source`` and ``imported_utc``).

The report then draws both curves and the difference. Accepted CSV layouts are documented in
:mod:`power.meter_log`. Only these two file names are ever written, inside the run's power
folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fileio.atomic import write_json_atomic, write_text_atomic
from fileio.user_error import UserError
from power.meter_log import MeterLogError, compare_with_meter, read_meter_log
from reports.rundata import load_run

METER_FILES = ("meter_log.csv", "meter_comparison.json")


@dataclass(frozen=True, slots=True)
class ImportedMeter:
    """One phase the meter log was lined up with."""

    phase: str
    """``"training"`` or ``"inference"``."""
    folder: Path
    figures: dict[str, Any]


def import_meter(run_dir: str | Path, meter_csv: str | Path, *, utc_offset_h: float = 0.0,
                 offset_s: float = 0.0, time_column: str | None = None,
                 power_columns: list[str] | None = None,
                 overwrite: bool = False) -> list[ImportedMeter]:
    """Line ``meter_csv`` up with every power phase of ``run_dir`` it overlaps.

    Args:
        run_dir: A run directory.
        meter_csv: The meter's CSV export.
        utc_offset_h: The meter's local-time offset from UTC (stamps without a zone).
        offset_s: Shift added to the meter's times.
        time_column: Name of the time column (default: found by name).
        power_columns: Names of the power columns (default: found by name).
        overwrite: Replace a meter log imported earlier (else that is an error: importing
            twice would silently replace the first import's figures).

    Returns:
        One entry per phase written.

    Raises:
        UserError: Unreadable log, it overlaps no phase of the run (says why), or a meter
            log was imported before and ``overwrite`` is false.
    """
    run = load_run(run_dir)
    if not overwrite:
        for pd in (run.train_power, run.infer_power):
            earlier = [pd.path / n for n in METER_FILES
                       if pd is not None and (pd.path / n).exists()]
            if earlier:
                raise UserError(f"{earlier[0]}: a meter log was imported into {run_dir} "
                                "before; pass --overwrite to replace it")
    try:
        meter = read_meter_log(meter_csv, time_column=time_column, power_columns=power_columns,
                               utc_offset_h=utc_offset_h)
    except MeterLogError as exc:
        raise UserError(str(exc)) from None
    done: list[ImportedMeter] = []
    reasons: list[str] = []
    for phase, pd in (("training", run.train_power), ("inference", run.infer_power)):
        if pd is None or not pd.nodes:
            continue
        t, w = pd.cluster_series_unix()
        try:
            comp = compare_with_meter(meter, t, w, budget_w=pd.budget_w, offset_s=offset_s)
        except MeterLogError as exc:
            reasons.append(f"{phase}: {exc}")
            continue
        figures = {"source": Path(meter_csv).name, "time_column": meter.time_column,
                   "power_columns": list(meter.power_columns),
                   "channels": list(meter.channels), **comp.to_json()}
        lines = ["unix_s,utc,watts"] + meter.to_csv().splitlines()[1:]
        keep = [ln for ln in lines[1:]
                if comp.unix_s[0] - 1e-6 <= float(ln.split(",")[0]) + offset_s
                <= comp.unix_s[-1] + 1e-6]
        if offset_s:
            keep = [_shift(ln, offset_s) for ln in keep]
        write_text_atomic(pd.path / "meter_log.csv", "\n".join([lines[0], *keep]) + "\n")
        write_json_atomic(pd.path / "meter_comparison.json", figures, indent=1)
        done.append(ImportedMeter(phase, pd.path, figures))
    if not done:
        why = "; ".join(reasons) or "the run has no power samples"
        raise UserError(f"{meter_csv}: not lined up with {run_dir}: {why}")
    return done


def _shift(line: str, offset_s: float) -> str:
    from power.clock import utc_iso

    t, _utc, w = line.split(",")
    shifted = float(t) + offset_s
    return f"{shifted:.3f},{utc_iso(shifted)},{w}"

