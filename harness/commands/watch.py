"""``harness watch RUN``: a live view of a running job from its run folder.

Per-node and cluster watts against the budget, GPU caps, images/s, step, ETA and the last
budget crossing, read from the files the run writes (see :mod:`harness.outputs.watch`), so it
works from a login node on the shared file system. A live table on a terminal, plain
timestamped lines otherwise; it ends with exit 0 when the run ends (``summary.json`` written,
the last line of ``train.log`` saying why the run ended with an error, e.g. a lost node, or the
training process gone).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from fileio.user_error import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder (or its <name>-latest link)")
    parser.add_argument("--interval", type=float, default=2.0, metavar="S",
                        help="seconds between looks at the files (default: 2)")
    parser.add_argument("--log-format", choices=("auto", "rich", "plain"), default="auto",
                        help="rich: a live table; plain: one timestamped line per look; auto "
                             "(default): rich on a terminal, else plain")
    parser.add_argument("--once", action="store_true",
                        help="print the current state once and exit")


def run(args: argparse.Namespace) -> int:
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
    watcher = RunWatcher(args.run)
    mode = choose_log_format(args.log_format, None)
    if mode == "rich" and not args.once:
        from rich.live import Live

        with Live(render_table(watcher.poll()), refresh_per_second=4) as live:
            while not watcher.view.ended:
                time.sleep(args.interval)
                live.update(render_table(watcher.poll()))
        print(f"{utc_now()} {end_line(watcher.view)}", flush=True)
        return 0
    while True:
        view = watcher.poll()
        print(f"{utc_now()} {status_line(view)}", flush=True)
        if view.ended:
            print(f"{utc_now()} {end_line(view)}", flush=True)
            return 0
        if args.once:
            return 0
        time.sleep(args.interval)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.watch`` (the same as ``harness watch``)."""
    from harness.commands.common import command_main

    return command_main("watch", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
