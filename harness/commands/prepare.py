"""``harness prepare``: pack face images into shards, or fingerprint an HR/LR set.

``harness prepare``: pack a folder tree of face images into training shards (sharded over
MPI ranks), or ``--fingerprint`` an HR/LR set to find the kernel that made its LR images.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``harness prepare``'s arguments to ``parser``."""
    from harness.data.degradation import DEFAULT_DEGRADATION, DEGRADATIONS
    from harness.data.shards import CROPS

    parser.add_argument("src", nargs="?", metavar="SRC",
                        help="folder tree of face images (FFHQ 1024x1024 or 128x128, ASC19 "
                             "96x112 crops, ...)")
    parser.add_argument("--out", metavar="DIR", help="output folder for the packed shards")
    parser.add_argument("--kernel", default=DEFAULT_DEGRADATION, choices=sorted(DEGRADATIONS),
                        help=f"LR degradation (default: {DEFAULT_DEGRADATION}, which "
                             "reproduces the organiser's LR images exactly)")
    parser.add_argument("--crop", default="asc19", choices=CROPS,
                        help="how square aligned faces become 96x112 crops (default: asc19 "
                             "framing)")
    parser.add_argument("--shard-size", type=int, default=8192, help="pairs per shard file")
    parser.add_argument("--heldout-out", metavar="DIR",
                        help="also split SRC: every 5th image (in name order) is packed into "
                             "DIR instead of --out, a validation set with no face in common "
                             "with the training set (data.val: DIR)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing packed set in --out")
    parser.add_argument("--fingerprint", action="store_true",
                        help="instead of packing: report which kernel made --lr from --hr")
    parser.add_argument("--hr", metavar="DIR", help="HR folder (with --fingerprint)")
    parser.add_argument("--lr", metavar="DIR", help="LR folder (with --fingerprint)")
    parser.add_argument("--limit", type=int, help="with --fingerprint: use the first N pairs")


def run(args: argparse.Namespace) -> int:
    """Pack shards or fingerprint an HR/LR set, and return the exit code."""
    from fileio.user_error import UserError
    from harness.cluster.distributed import get_comm, get_dist_info
    from harness.data import degradation, shards
    from harness.outputs.logs import table_console

    console = table_console()
    if args.fingerprint:
        if not (args.hr and args.lr):
            raise UserError("--fingerprint needs --hr DIR and --lr DIR")
        from rich.table import Table

        ranking = degradation.fingerprint(args.hr, args.lr, limit=args.limit)
        table = Table(title=f"LR kernel fingerprint of {args.lr}")
        table.add_column("kernel")
        table.add_column("mean abs. error (grey levels)", justify="right")
        for name, mae in ranking:
            table.add_row(name, f"{mae:.4f}")
        console.print(table)
        console.print(f"best match: [bold]{ranking[0][0]}[/]")
        return 0
    if not (args.src and args.out):
        raise UserError("prepare needs SRC and --out DIR (or --fingerprint --hr --lr)")
    info, comm = get_dist_info(), get_comm()
    from harness.outputs.write_checks import agree, check_not_input

    agree(comm, lambda: check_not_input(args.out, [args.src]))  # never into or over SRC
    parts: list[tuple[str, Callable[[int], bool] | None]] = [(args.out, None)]
    if args.heldout_out:
        from harness.data.pairs import HELDOUT_EVERY

        every = HELDOUT_EVERY
        if os.path.abspath(args.heldout_out) == os.path.abspath(args.out):
            raise UserError(f"--heldout-out {args.heldout_out}: the same folder as --out; "
                            "give the held-out split a folder of its own")
        agree(comm, lambda: check_not_input(args.heldout_out, [args.src]))
        parts = [(args.out, lambda i: i % every != every - 1),
                 (args.heldout_out, lambda i: i % every == every - 1)]
    results = []
    for out, keep in parts:
        result = shards.prepare(args.src, out, kernel=args.kernel, crop=args.crop,
                                 rank=info.rank, world_size=info.world_size,
                                 shard_size=args.shard_size, progress=info.is_master,
                                 overwrite=args.overwrite, keep=keep)
        comm.barrier()
        if info.world_size > 1 and info.is_master:
            result = shards.merge_index(out)
        results.append(result)
    result = results[0]
    if info.is_master:
        n = result.get("count", result.get("written", "?"))
        skipped = result.get("skipped") or []
        console.print(f"packed {n} pairs into {args.out} (kernel {args.kernel}"
                      + (f", {len(skipped)} unreadable files skipped" if skipped else "")
                      + f"); train on it with --set data.train={args.out}")
    if info.is_master and args.heldout_out:
        held = results[1]
        console.print(f"held out {held.get('count', held.get('written', '?'))} pairs "
                      f"(every {HELDOUT_EVERY}th image) into {args.heldout_out}; validate on "
                      f"them with --set data.val={args.heldout_out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.prepare`` (the same as ``harness prepare``)."""
    from harness.commands.common import command_main

    return command_main("prepare", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
