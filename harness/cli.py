"""The ``harness`` command line.

Each subcommand lives in the module that owns its concern and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. This module only wires them together,
turns :class:`~harness.errors.UserError` into one line on stderr with its exit code, and keeps
``harness --help`` fast by importing a subcommand's module only when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from harness.errors import UserError

#: Subcommand name -> (module, one-line help). Order is the order shown in ``--help``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("harness.cli_doctor", "check this machine (and a job's requirements)"),
    "launch": ("harness.cli_launch", "start a job with mpirun, or write a Slurm script"),
    "train": ("harness.train", "train a FaceSR model (one process, or under mpirun)"),
    "infer": ("harness.infer", "super-resolve a folder of LR faces (sharded over ranks)"),
    "evaluate": ("harness.cli_evaluate", "score SR images against HR: IS, PSNR, SSIM, NIQE"),
    "prepare": ("harness.cli_prepare", "pack face images into training shards, or "
                "fingerprint an LR set's kernel"),
    "report": ("reports.cli", "render the judges' HTML report from run directories"),
    "power-sweep": ("harness.cli_sweep", "measure images/s and W at a series of GPU caps; "
                    "plan nodes and caps under the budget"),
}


def add_job_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--job JOB`` and repeatable ``--set KEY=VALUE`` overrides."""
    parser.add_argument("--job", required=required, metavar="JOB",
                        help="YAML job file (see jobs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a job value, e.g. --set train.lr=2e-4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="FaceSR cluster-competition harness: train, infer and score ASC19 face "
                    "super-resolution across MPI ranks under a cluster power budget.",
        epilog="Run `harness COMMAND --help` for the options of a command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:]
                           + ".")
        p.set_defaults(_module=module)
        _load(module).add_arguments(p)
    return parser


def _load(module: str):  # noqa: ANN202 - a module object
    return importlib.import_module(module)


def run_guarded(fn: Callable[[], int], prog: str = "harness", quiet: bool = False) -> int:
    """Run ``fn``; user errors become one line on stderr and their exit code.

    Args:
        fn: The command's body.
        prog: Name printed before the error.
        quiet: Do not print the error (ranks other than 0, whose rank 0 says the same).
    """
    try:
        return fn()
    except UserError as exc:
        if not quiet:
            print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130


def setup_logging(verbose: bool = False) -> None:
    """Plain logging to stderr for the command line."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


def module_main(prog: str, description: str,
                add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int],
                argv: Sequence[str] | None = None) -> int:
    """Entry point of a ``python -m harness.X`` module that ranks of an MPI job run.

    Only rank 0 prints user errors (every rank fails alike; one line is enough).
    """
    from harness.distributed import get_dist_info

    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    return run_guarded(lambda: run(args), prog=prog, quiet=not get_dist_info().is_master)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``harness`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    module = _load(args._module)
    return run_guarded(lambda: module.run(args))


if __name__ == "__main__":
    sys.exit(main())
