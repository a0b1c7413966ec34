"""``harness report``: one self-contained HTML file for the judges from run directories.

    harness report runs/demo-latest -o report.html
    harness report runs/a runs/b --sweep sweeps/a100 -o compare.html

Reads only the runs' JSON/CSV/PNG files (never torch or NVML), so it runs anywhere the run
directories were copied to.
"""
from __future__ import annotations

import argparse
import logging

from harness.errors import UserError

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
                        help="output file (default: report.html)")


def run(args: argparse.Namespace) -> int:
    """Render the report; returns the exit code."""
    from reports.render import write_report

    out = str(args.out)
    if not out or out.endswith(("/", "\\")):
        raise UserError(f"--out {out!r}: expected a file name, e.g. report.html")
    try:
        path = write_report(args.run_dirs, out, sweep_dir=args.sweep)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
