"""``harness evaluate``: score SR images against HR.

``harness evaluate``: score SR images against HR (IS, PSNR, SSIM, NIQE, RMSE), sharded over
MPI ranks when started under mpirun (results gathered on rank 0, identical to one process).

PI (PIRM's perceptual index) needs the Ma et al. model, which ships nowhere offline: it is not
offered here and never estimated.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from harness.cluster.distributed import get_comm
from harness.outputs.logs import LOG_FORMATS, table_console
from harness.scoring import ALL_METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``harness evaluate``'s arguments to ``parser``."""
    parser.add_argument("--hr", required=True, metavar="DIR", help="reference HR images")
    parser.add_argument("--sr", required=True, metavar="DIR",
                        help="super-resolved images, matched to HR by file name")
    parser.add_argument("--lr", metavar="DIR",
                        help="LR inputs: adds the bicubic baseline and the normalised gain "
                             "(IS - IS_bicubic) / (1 - IS_bicubic)")
    parser.add_argument("--recognizer", default="facenet",
                        help="facenet (embedded, default), dlib (extra 'quality'), "
                             "sphere20a:PATH (official ASC19 SphereFace weights) or onnx:PATH "
                             "(ArcFace-style model); a comma list (facenet,dlib) scores with "
                             "each in one pass: the first gives 'is', the others 'is_<name>', "
                             "each with impostor mean, normalised IS, rank-1 and gain")
    parser.add_argument("--metrics", default="is,psnr,ssim",
                        help=f"comma list of {', '.join(ALL_METRICS)} (default: "
                             "is,psnr,ssim). "
                             "PI is not available: it needs the Ma et al. model, which is "
                             "not shipped")
    parser.add_argument("--shave", type=int, default=0, help="border pixels ignored by PSNR/SSIM")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="pairs per recognizer pass (each pass embeds twice as many "
                             "images; default: 16, the fastest on CPUs)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32 (default): the score; bf16: faster where there are bf16 "
                             "units (FaceNet through OpenVINO on CPUs, autocast on GPUs), "
                             "approximate (mean IS within ~1e-3), and said so")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the recognizer runs (default: auto, CUDA when present; "
                             "one GPU per local rank)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                        help="progress: rich bar, plain lines, off, or auto (default)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for scores.json and per_image.csv (default: print the "
                             "scores only, so that re-scoring never replaces another "
                             "command's results, e.g. infer's scores.json with its power "
                             "figures)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier `harness evaluate` result in --out (never "
                             "infer's scores)")


def run(args: argparse.Namespace) -> int:
    """Score the SR folder against HR and return the exit code."""
    from fileio.user_error import UserError

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if "pi" in metrics:
        raise UserError("--metrics pi: the perceptual index needs the Ma et al. model, which "
                        "is not shipped with the harness; use niqe, or supply the model")
    from harness.cluster.distributed import get_dist_info
    from harness.data.imageio import pair_by_name
    from harness.lists import shard
    from harness.model.generators import rank_threads, resolve_device
    from harness.outputs.logs import CountProgress, choose_log_format
    from harness.outputs.write_checks import agree, claim_output
    from harness.scoring.score_folders import check_scores_output, evaluate_dirs

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.shave < 0:
        raise UserError(f"--shave {args.shave}: must be 0 or more")
    if args.out:
        agree(get_comm(), lambda: claim_output(args.out, lambda: check_scores_output(
            args.out, [args.hr, args.sr, args.lr], overwrite=args.overwrite)))
    info = get_dist_info()
    device = resolve_device(args.device, info, key="--device")
    pairs = pair_by_name(args.hr, args.sr, args.lr)
    mine = len(shard(pairs, info.rank, info.world_size))
    mode = choose_log_format(args.log_format, info.launcher) if info.is_master else "off"
    from harness.cluster.command_comm import collectives_comm, raise_if_peer_lost
    from harness.cluster.distributed import shutdown_torch_distributed
    from harness.cluster.watchdog import DEFAULT_TIMEOUT_S

    # A lost node is named (gloo), not Open MPI's silent exit 14.
    comm = collectives_comm(info, get_comm(), DEFAULT_TIMEOUT_S)
    try:
        with CountProgress("evaluate", mine, mode, of_all=len(pairs)) as bar:
            result = evaluate_dirs(args.hr, args.sr, args.out, lr_dir=args.lr,
                                   recognizer=args.recognizer, metrics=metrics,
                                   batch_size=args.batch_size, shave=args.shave, device=device,
                                   progress=bar.advance, precision=args.precision,
                                   threads=rank_threads(0, info), comm=comm)
        print_scores(result, args.sr)
        if result is not None and not args.out:
            print("scores not saved (pass --out DIR to write scores.json and per_image.csv)")
        comm.barrier()
    except Exception as exc:  # noqa: BLE001 - only a lost peer is translated
        raise_if_peer_lost(exc, "no scores written; run the command again once the nodes are "
                                "back, or on the nodes left")
        raise
    shutdown_torch_distributed()
    return 0


def print_scores(result: dict[str, Any] | None, sr_dir: str) -> None:
    """The score table and the files written (rank 0's result; None elsewhere prints nothing)."""
    if result is None:
        return
    from harness.scoring.score_folders import render_table

    console = table_console()
    console.print(render_table(result["summary"], title=f"Scores of {sr_dir}"))
    from harness.scoring.panel import render_panel

    panel = render_panel(result["summary"])
    if panel is not None:
        console.print(panel)
    lr_kernel = result["summary"].get("lr_kernel")
    if lr_kernel:
        console.print(lr_kernel["line"])
    precision = (result.get("meta") or {}).get("precision", "fp32")
    if precision != "fp32":
        console.print(f"[yellow]note:[/] IS computed in {precision}: approximate (within "
                      "~1e-3 of the fp32 score); use --precision fp32 for the score")
    if result.get("paths"):
        console.print("wrote " + ", ".join(str(p) for p in result["paths"]))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.commands.evaluate`` (the same as ``harness evaluate``)."""
    from harness.commands.common import command_main

    return command_main("evaluate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
