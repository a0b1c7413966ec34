"""What every subcommand shares: the ``--job``/``--set`` options and the one entry wrapper.

A subcommand module in this package exposes ``add_arguments(parser)`` and ``run(args) -> int``
and nothing else of interest; it parses and calls the library. Library code never imports
this package.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from fileio.user_error import UserError, describe_os_error


def add_overrides(parser: argparse.ArgumentParser,
                  help_text: str = "override a job value, e.g. --set train.lr=2e-4 "
                                   "(repeatable)") -> None:
    """Repeatable ``--set KEY=VALUE`` job overrides (``args.overrides``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help=help_text)


def add_job_arguments(parser: argparse.ArgumentParser, *, required: bool = True,
                      job_help: str = "YAML job file (see jobs/)") -> None:
    """``--job JOB`` and repeatable ``--set KEY=VALUE`` overrides."""
    parser.add_argument("--job", required=required, metavar="JOB", help=job_help)
    add_overrides(parser)


def run_guarded(fn: Callable[[], int], prog: str = "harness", quiet: bool = False) -> int:
    """Run ``fn``; user errors become one line on stderr and their exit code.

    Args:
        fn: The command's body.
        prog: Name printed before the error.
        quiet: Do not print the error (ranks other than 0, whose rank 0 says the same).
    """
    from power.errors import PowerError

    _skip_exit_collection()
    try:
        return fn()
    except (UserError, PowerError) as exc:
        # a PowerError is the hardware's or a trace's word (no permission, a NaN reading), said
        # with its file and line by the backend that raised it: the user's to fix, one line
        every_rank = getattr(exc, "every_rank", False)
        if not quiet or every_rank:
            if _debug() and isinstance(exc, PowerError):
                traceback.print_exc()
            print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        else:
            _let_rank0_speak()
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted below; bugs keep their traceback
        from harness.cluster.watchdog import STALL_EXIT, job_was_aborted

        if job_was_aborted() and not _debug():  # a stalled rank ended the job: said once
            return STALL_EXIT
        from harness.cluster.distributed import describe_peer_loss

        lost = describe_peer_loss(exc)
        if lost is not None and not _debug():  # a node or rank died: every rank left says so
            print(f"{prog}: error: {lost}", file=sys.stderr, flush=True)
            return 1
        if not isinstance(exc, OSError):
            raise
        if not quiet:  # the machine's fault, not a bug: one line (traceback under -v)
            if _debug():
                traceback.print_exc()
            print(f"{prog}: error: {describe_os_error(exc)}", file=sys.stderr, flush=True)
        return 1


#: How long a rank that leaves an error for rank 0 to print waits before it exits.
QUIET_EXIT_DELAY_S = 2.0


def _let_rank0_speak() -> None:
    """Let rank 0 print its error line before this rank exits.

    A rank that fails quietly (rank 0 prints the same line) waits a moment first: mpirun and
    ``srun --kill-on-bad-exit`` end the whole job at the first rank's non-zero exit, which
    could otherwise kill rank 0 before its line is out.
    """
    import time

    time.sleep(QUIET_EXIT_DELAY_S)


def _skip_exit_collection() -> None:
    """Freeze the garbage collector at interpreter exit.

    Freeze the garbage collector when the interpreter exits, after the other exit handlers:
    its final collections walk every object torch made at import (0.3-0.5 s per command) and
    free nothing that a process about to end needs freed. Files are closed by their writers.
    """
    import atexit
    import gc

    atexit.unregister(gc.freeze)  # once, even when called again (tests run many commands)
    atexit.register(gc.freeze)


def _debug() -> bool:
    """Tracebacks for environment errors: ``-v`` or ``HARNESS_DEBUG=1``."""
    return (os.environ.get("HARNESS_DEBUG", "") not in ("", "0")
            or logging.getLogger().isEnabledFor(logging.DEBUG))


def setup_logging(verbose: bool = False) -> None:
    """Log records to stderr in the harness's one format (see :mod:`harness.outputs.logs`)."""
    from harness.cluster.distributed import get_dist_info
    from harness.outputs.logs import setup_logging as setup

    info = get_dist_info()
    setup(verbose, info.rank, info.world_size)


def job_or_default(job: str | None, default: str) -> str:
    """Return the job to run: ``--job``, ``$HARNESS_JOB`` or ``default``.

    ``--job``, else ``$HARNESS_JOB``, else ``default`` (a path under ``jobs/``); rank 0 says
    which job it chose when the user did not name one.
    """
    if job:
        return job
    from harness.cluster.distributed import get_dist_info
    from harness.data.locations import project_root

    env = os.environ.get("HARNESS_JOB", "").strip()
    chosen = env or str(project_root() / "jobs" / default)
    if get_dist_info().is_master:
        logging.getLogger("harness").info(
            "job: %s (%s; choose another with --job FILE)", chosen,
            "from HARNESS_JOB" if env else "the default")
    return chosen


class _RankParser(argparse.ArgumentParser):
    """An argument parser whose usage errors only rank 0 prints (all ranks still exit 2)."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse API
        from harness.cluster.distributed import get_dist_info

        if get_dist_info().is_master:
            self.print_usage(sys.stderr)
            print(f"{self.prog}: error: {message}", file=sys.stderr, flush=True)
        else:
            _let_rank0_speak()
        sys.exit(2)


def module_main(prog: str, description: str,
                add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int],
                argv: Sequence[str] | None = None) -> int:
    """Entry point of a ``python -m harness.X`` module that ranks of an MPI job run.

    Only rank 0 prints usage and user errors (every rank fails alike; one line is enough).
    """
    from harness.cluster.distributed import get_dist_info

    parser = _RankParser(prog=f"python -m {prog}", description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    return run_guarded(lambda: run(args), prog=prog, quiet=not get_dist_info().is_master)




def command_main(name: str, doc: str | None,
                 add_arguments: Callable[[argparse.ArgumentParser], None],
                 run: Callable[[argparse.Namespace], int],
                 argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.NAME``: the same as ``harness NAME``."""
    first = (doc or name).strip().splitlines()[0]
    return module_main(f"harness.commands.{name}", first, add_arguments, run, argv)
