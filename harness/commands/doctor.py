"""``harness doctor [JOB]``: render the doctor's checks as a table."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.commands.common import add_overrides
from harness.config import load_job
from harness.outputs.logs import table_console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``harness doctor``'s arguments to ``parser``."""
    parser.add_argument("job", nargs="?", metavar="JOB",
                        help="also check what this job needs (exit code 0 only if it can run)")
    add_overrides(parser)


def run(args: argparse.Namespace) -> int:
    """Run the doctor's checks, print them as a table and return the exit code."""
    from rich.table import Table

    from harness.commands.machine_checks import job_can_run, run_checks

    job = load_job(args.job, args.overrides) if args.job else None
    checks = run_checks(job)
    table = Table(title="harness doctor" + (f" — job {job.name}" if job else ""))
    for col in ("check", "status", "detail", "hint"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "warn": "yellow", "missing": "red"}
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail, c.hint)
    console = table_console()
    console.print(table)
    ok = job_can_run(checks)
    for c in checks:  # each blocker once more as one unwrapped line, for logs and scripts
        if c.required and c.status == "missing":
            print(f"harness doctor: {c.name}: {c.detail}" + (f" ({c.hint})" if c.hint else ""),
                  file=sys.stderr, flush=True)
    if job is not None:
        console.print(f"job {job.name}: " + ("[green]can run[/]" if ok else
                                            "[red]cannot run here[/] (see hints)"))
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.doctor`` (the same as ``harness doctor``)."""
    from harness.commands.common import command_main

    return command_main("doctor", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
