"""``harness watch RUN``: a live view of a running job from its run folder.

Per-node and cluster watts against the budget, GPU caps, images/s, step, ETA and the last
budget crossing, read from the files the run writes (see :mod:`harness.outputs.watch`), so it
works from a login node on the shared file system. A live table on a terminal, plain
timestamped lines otherwise; it ends with exit 0 when the run ends (``summary.json`` written,
the last line of ``train.log`` saying why the run ended with an error, e.g. a lost node, or the
training process gone), and with exit 1 when the run's files have been silent beyond a bound
while its writer is on another host (that host died with rank 0: ``--silent-after``).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from fileio.user_error import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``harness watch``'s arguments to ``parser``."""
    parser.add_argument("run", metavar="RUN", help="a run folder (or its <name>-latest link)")
    parser.add_argument("--interval", type=float, default=2.0, metavar="S",
                        help="seconds between looks at the files (default: 2)")
    parser.add_argument("--log-format", choices=("auto", "rich", "plain"), default="auto",
                        help="rich: a live table; plain: one timestamped line per look; auto "
                             "(default): rich on a terminal, else plain")
    parser.add_argument("--once", action="store_true",
                        help="print the current state once and exit")
    parser.add_argument("--silent-after", type=float, default=300.0, metavar="S",
                        help="give up (exit 1, one line) when no file of the run has changed "
                             "for S seconds, or 10 times the run's longest quiet spell if "
                             "longer, and its writer runs on another host (whose death "
                             "leaves no summary and no last log line); default: 300")


def run(args: argparse.Namespace) -> int:
    """Follow a run folder's progress and return the exit code."""
    from harness.outputs.logs import choose_log_format
    from harness.outputs.watch import (
        RunWatcher,
        end_line,
        render_table,
        status_line,
        utc_now,
    )

    if not 0.05 <= args.interval <= 3600:
        raise UserError(f"--interval: must be between 0.05 and 3600 seconds, got "
                        f"{args.interval:g}")
    if not 1 <= args.silent_after <= 7 * 86400:
        raise UserError(f"--silent-after: must be between 1 s and 7 days, got "
                        f"{args.silent_after:g}")
    watcher = RunWatcher(args.run, silent_after_s=args.silent_after)
    mode = choose_log_format(args.log_format, None)
    if mode == "rich" and not args.once:
        from rich.live import Live

        with Live(render_table(watcher.poll()), refresh_per_second=4) as live:
            while not watcher.view.ended:
                time.sleep(args.interval)
                live.update(render_table(watcher.poll()))
        print(f"{utc_now()} {end_line(watcher.view)}", flush=True)
        return 1 if watcher.view.silent_s is not None else 0
    while True:
        view = watcher.poll()
        print(f"{utc_now()} {status_line(view)}", flush=True)
        if view.ended:
            print(f"{utc_now()} {end_line(view)}", flush=True)
            return 1 if view.silent_s is not None else 0
        if args.once:
            return 0
        time.sleep(args.interval)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.watch`` (the same as ``harness watch``)."""
    from harness.commands.common import command_main

    return command_main("watch", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
