"""The ``harness`` command line.

Each subcommand lives in the module that owns its concern and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. This module only wires them together,
turns :class:`~fileio.user_error.UserError` into one line on stderr with its exit code, and keeps
``harness --help`` fast by importing a subcommand's module only when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from harness.commands.common import run_guarded, setup_logging

#: Subcommand name -> (module, one-line help). Order is the order shown in ``--help``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("harness.commands.doctor", "check this machine (and a job's requirements)"),
    "launch": ("harness.commands.launch", "start a job with mpirun, or write a Slurm script"),
    "train": ("harness.train", "train a FaceSR model (one process, or under mpirun)"),
    "infer": ("harness.infer", "super-resolve a folder of LR faces (sharded over ranks)"),
    "evaluate": ("harness.commands.evaluate", "score SR images against HR: IS, PSNR, SSIM, NIQE"),
    "prepare": ("harness.commands.prepare", "pack face images into training shards, or "
                "fingerprint an LR set's kernel"),
    "watch": ("harness.commands.watch", ("follow a running job from its run folder: watts "
                                         "per node and cluster vs the budget, caps, ETA")),
    "check-power": ("harness.commands.check_power", "the judges' verdict from the wall meter's "
                    "log: compliant, or each crossing of the budget (exit 1)"),
    "report": ("harness.commands.report", "render the judges' HTML report from run directories"),
    "power-calibrate": ("harness.commands.power_calibrate",
                        "fit the wall model (PDU power from GPU and CPU power) by stepping "
                        "the caps with the rack meter attached"),
    "runs": ("harness.commands.runs", "one table of runs (status, IS, images/s, W, J/image); "
             "--csv, --json"),
    "power-sweep": ("harness.commands.power_sweep",
                    "measure images/s and W at a series of GPU caps; "
                    "plan nodes and caps under the budget"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="FaceSR cluster-competition harness: train, infer and score ASC19 face "
                    "super-resolution across MPI ranks under a cluster power budget.",
        epilog="Run `harness COMMAND --help` for the options of a command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"harness {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:]
                           + ".")
        p.set_defaults(_module=module)
        _load(module).add_arguments(p)
    return parser


def version() -> str:
    """The installed package's version and the checkout's git commit."""
    from importlib import metadata

    from harness.outputs.run_folders import git_commit

    try:
        v = metadata.version("facesr-harness")
    except metadata.PackageNotFoundError:
        v = "(not installed)"
    return f"{v} (commit {git_commit()[:12]})"


def _load(module: str):  # noqa: ANN202 - a module object
    return importlib.import_module(module)


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
