"""``harness runs [DIR ...]``: one table of training runs from their run folders.

One row per run folder named, or found one level below each DIR: status (done, running,
crashed, stopped...), steps, best held-out IS, images/s, average and peak cluster W, J/image,
crossings of the budget (governor and wall meter), time and energy to the target IS, and a
planned run's predicted figures beside the achieved ones. A rich table on a terminal, plain
text in a pipe, or ``--csv`` / ``--json``. The rows are those of the report's comparison table
(:mod:`reports.runs_table`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fileio.user_error import UserError

if TYPE_CHECKING:
    from reports.runs_table import RunRow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``harness runs``' arguments to ``parser``."""
    from reports.runs_table import SORT_KEYS

    parser.add_argument("dirs", nargs="*", metavar="DIR", default=["runs"],
                        help="run folders, or folders holding them (default: runs)")
    parser.add_argument("--sort", choices=SORT_KEYS, default="name", metavar="COL",
                        help="column to sort by (default: name; one of: "
                             f"{', '.join(SORT_KEYS)}); runs without the figure come last")
    parser.add_argument("--desc", action="store_true", help="sort descending")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true",
                     help="print CSV (every column) instead of a table")
    out.add_argument("--json", action="store_true",
                     help="print JSON (every column) instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the table of runs; return the exit code."""
    from reports.runs_table import (
        find_run_dirs,
        format_csv,
        format_json,
        format_table,
        read_run,
        sort_rows,
    )

    paths = [Path(d) for d in args.dirs]
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: no such folder (give run folders, or folders holding them)")
        if not p.is_dir():
            raise UserError(f"{p}: not a folder (give run folders, or folders holding them)")
    run_dirs = find_run_dirs(paths)
    if not run_dirs:
        raise UserError(f"{', '.join(args.dirs)}: no run folders found (a run folder holds "
                        "manifest.json or summary.json)")
    rows = sort_rows([read_run(d) for d in run_dirs], args.sort, descending=args.desc)
    if args.csv:
        sys.stdout.write(format_csv(rows))
    elif args.json:
        sys.stdout.write(format_json(rows))
    elif sys.stdout.isatty():
        _print_rich(rows)
    else:
        sys.stdout.write(format_table(rows))
    return 0


def _print_rich(rows: Sequence[RunRow]) -> None:
    """The table on a terminal: the same columns and cells as the plain one."""
    from rich.console import Console
    from rich.table import Table

    from reports.runs_table import cell, shown_columns

    cols = shown_columns(rows)
    cells = [[cell(c, getattr(r, c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for i, (c, w) in enumerate(zip(cols, widths, strict=True)):
        table.add_column(c, justify="left" if i < 2 else "right", no_wrap=True, min_width=w)
    for line in cells:
        table.add_row(*line)
    console = Console()
    needed = sum(widths) + 2 * (len(cols) - 1)
    if needed > console.width:  # a wide table wraps on the terminal instead of losing digits
        console = Console(width=needed)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.runs`` (the same as ``harness runs``)."""
    from harness.commands.common import command_main

    return command_main("runs", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
