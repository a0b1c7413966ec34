"""``harness report``: one self-contained HTML file for the judges from run directories.

    harness report runs/demo-latest -o report.html
    harness report runs/a runs/b --sweep sweeps/a100 -o compare.html
    harness report runs/final --meter organisers-pdu.csv --meter-utc-offset-h 8
    harness report runs/final --mlperf-out mlperf/

Reads only the runs' JSON/CSV/PNG files (never torch or NVML), so it runs anywhere the run
directories were copied to.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fileio.user_error import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness report``."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories (runs/<name>-<timestamp>); several give a "
                             "comparison table")
    parser.add_argument("--sweep", metavar="SWEEP_DIR",
                        help="a power-sweep directory (with sweep.json): adds the "
                             "throughput-vs-power chart and the chosen cap plan")
    parser.add_argument("-o", "--out", default="report.html", metavar="HTML",
                        help="output file (default: report.html); an existing file is replaced "
                             "only if it is an earlier harness report, or with --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace -o even if it is not a harness report (never an input or "
                             "a run's own file), and a meter log imported before")
    parser.add_argument("--mlperf-out", metavar="DIR",
                        help="also write each run's MLPerf-style result and power logs "
                             "(result_<i>.txt, power/result_<i>/node_<n>.txt) into DIR; needs "
                             "mlperf-logging")
    parser.add_argument("--mlperf-org", default="facesr", metavar="ORG",
                        help="submission_org of the MLPerf logs (default: facesr)")
    meter = parser.add_argument_group("the organisers' (or your own) PDU / meter log")
    meter.add_argument("--meter", metavar="CSV",
                       help="meter log (CSV of time and watts; columns in power/meter_log.py): "
                            "lined up with each run by wall-clock time and saved in its power "
                            "folder(s); the report then shows both curves, the difference and "
                            "the budget crossings the meter saw")
    meter.add_argument("--meter-utc-offset-h", type=float, default=0.0, metavar="H",
                       help="the meter logs local time H hours ahead of UTC (default: 0, UTC)")
    meter.add_argument("--meter-offset-s", type=float, default=0.0, metavar="S",
                       help="shift the meter's times by S seconds (a meter clock that is off)")
    meter.add_argument("--meter-time-column", metavar="NAME",
                       help="the time column (default: found by name)")
    meter.add_argument("--meter-power-column", action="append", metavar="NAME",
                       help="a power column in W (repeatable; several are summed; default: "
                            "found by name)")


def _check_out(out: str, args: argparse.Namespace) -> None:
    """Check the report's output path.

    Never write the report over an input; replace an existing file only if it is an earlier
    harness report or the user passed --overwrite. (A new file inside a run folder is fine:
    ``RUN/report.html`` is where the demo keeps it.)
    """
    from pathlib import Path

    from reports.render import GENERATOR

    path = Path(out).resolve()
    for given in (*args.run_dirs, args.sweep, getattr(args, "meter", None)):
        if given and Path(given).resolve() == path:
            raise UserError(f"-o {out}: is also an input; choose another file name")
    if path.is_dir():
        raise UserError(f"-o {out}: is a folder, not a file")
    is_report = False
    if path.exists():
        with open(path, "rb") as fh:
            head = fh.read(2048).decode("utf-8", "replace")
        is_report = f'content="{GENERATOR}"' in head
    for given in (*args.run_dirs, args.sweep):
        # a run's (or a sweep's) own files are never replaced, not even with --overwrite
        if given and path.exists() and not is_report and path.is_relative_to(
                Path(given).resolve()):
            raise UserError(f"-o {out}: is a file of the run {given}, not a report; "
                            "choose another file name")
    if path.exists() and not is_report and not getattr(args, "overwrite", False):
        raise UserError(f"-o {out}: already exists and is not a harness report; choose "
                        "another name or pass --overwrite")


def run(args: argparse.Namespace) -> int:
    """Render the report; returns the exit code."""
    from reports.render import write_report

    out = str(args.out)
    if not out or out.endswith(("/", "\\")):
        raise UserError(f"--out {out!r}: expected a file name, e.g. report.html")
    _check_out(out, args)
    if getattr(args, "meter", None):
        _import_meter(args)
    try:
        path = write_report(args.run_dirs, out, sweep_dir=args.sweep)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if getattr(args, "mlperf_out", None):
        from reports.mlperf_export import export_mlperf

        for i, run_dir in enumerate(args.run_dirs):
            files = export_mlperf(run_dir, args.mlperf_out, index=i, org=args.mlperf_org)
            print(f"mlperf: {run_dir}: wrote {len(files)} file(s) into {args.mlperf_out}")
    return 0


def _import_meter(args: argparse.Namespace) -> None:
    """Import ``--meter`` into every run it overlaps (an error if it overlaps none)."""
    from reports.meter import import_meter
    from reports.rundata import coverage_note

    failures = []
    imported = 0
    for run_dir in args.run_dirs:
        try:
            for done in import_meter(run_dir, args.meter,
                                     utc_offset_h=args.meter_utc_offset_h,
                                     offset_s=args.meter_offset_s,
                                     time_column=args.meter_time_column,
                                     power_columns=args.meter_power_column,
                                     overwrite=getattr(args, "overwrite", False)):
                imported += 1
                c = done.figures.get("meter_crossings") or {}
                print(f"meter: {run_dir} {done.phase}: {done.figures['samples']} samples, "
                      f"meter - ours {done.figures['diff_mean_w']:+.0f} W on average, "
                      f"{c.get('count', 0)} budget crossing(s) as the meter saw them")
                for note in filter(None, [coverage_note(done.figures)]):
                    log.warning("meter: %s %s: %s", run_dir, done.phase, note)
        except UserError as exc:
            failures.append(str(exc))
    if not imported:
        raise UserError("; ".join(failures))
    for f in failures:
        log.warning("%s", f)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.report`` (the same as ``harness report``)."""
    from harness.commands.common import command_main

    return command_main("report", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
