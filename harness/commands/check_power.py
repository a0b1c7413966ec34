"""``harness check-power RUN``: the judges' verdict from the wall meter's log.

Prints one line: compliant, or each crossing of the budget with its UTC start and length.
Exit 0 when compliant, 1 on a crossing, 2 on a user error (missing run folder, bad log).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fileio.user_error import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("run", metavar="RUN", help="a run folder (or its <name>-latest link)")
    parser.add_argument("--meter", metavar="PDU_LOG", default="",
                        help="the wall meter's log (unix_s,utc,wall_w); default: "
                             "RUN/power/pdu.csv")
    parser.add_argument("--budget-w", type=float, default=None, metavar="W",
                        help="the budget; default: the run's (summary.json), else 3000 W")


def _budget(run: Path, given: float | None) -> float:
    from power.config import DEFAULT_BUDGET_W

    if given is not None:
        if not given > 0:
            raise UserError(f"--budget-w: must be > 0, got {given}")
        return given
    try:
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        return float(summary["power"]["budget_w"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_BUDGET_W


def run(args: argparse.Namespace) -> int:
    """Print the verdict; 0 compliant, 1 crossed."""
    from power.pdu import read_pdu_csv, utc_text, wall_crossings

    folder = Path(args.run)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such run folder; give the folder `harness launch` "
                        "wrote (runs/<name>-<time>)")
    log = Path(args.meter) if args.meter else folder / "power" / "pdu.csv"
    if not log.is_file():
        raise UserError(f"{log}: no wall meter log; run with power.sim_pdu=true or give "
                        "--meter PDU_LOG")
    try:
        readings = read_pdu_csv(log)
    except (ValueError, OSError) as exc:
        raise UserError(f"{exc}; fix or remove the line") from None
    if not readings:
        raise UserError(f"{log}: the log holds no readings")
    budget = _budget(folder, args.budget_w)
    crossings = wall_crossings(readings, budget)
    peak = max(r.wall_w for r in readings)
    if not crossings:
        print(f"compliant: {len(readings)} wall readings, peak {peak:.0f} W <= budget "
              f"{budget:.0f} W ({log})")
        return 0
    parts = "; ".join(f"{utc_text(c.start_unix_s)} for {c.length_s:g} s (peak {c.peak_w:.0f} W)"
                      for c in crossings)
    print(f"NOT compliant: {len(crossings)} crossing(s) of {budget:.0f} W at the wall: {parts}")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.check_power`` (the same as ``harness check-power``)."""
    from harness.commands.common import command_main

    return command_main("check-power", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
