"""``harness infer``: super-resolve a folder of LR faces.

``harness infer`` / ``python -m harness.infer``: super-resolve a folder of LR faces, sharded
over ranks, and score the outputs when HR references are given.

    python -m harness.infer --lr data/asc19-val/val_LR --out sr/        # shipped weights
    mpirun -np 16 python -m harness.infer --job jobs/asc19-final.yaml --lr LR --out SR --hr HR
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.commands.common import add_job_arguments, job_or_default, module_main
from harness.config import load_job
from harness.outputs.logs import LOG_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness infer`` / ``python -m harness.infer``."""
    add_job_arguments(parser, required=False, job_help="YAML job file (default: $HARNESS_JOB, "
                      "else jobs/asc19-cpu-ft.yaml, the recipe of the shipped weights, which "
                      "then super-resolve)")
    parser.add_argument("--lr", required=True, metavar="DIR",
                        help="folder of LR images, or embedded:heldout / embedded:train / "
                             "embedded:all (copied to OUT/inputs/{LR,HR} and scored)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the SR PNGs (created; same names as the LR files)")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="model checkpoint (default: infer.checkpoint of the job, "
                             "else the weights shipped for the job's model)")
    parser.add_argument("--hr", metavar="DIR",
                        help="HR folder: score the outputs (IS with the bicubic baseline, "
                             "PSNR, SSIM) and write scores.json beside them")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace SR files already in --out (never an input)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                        help="rich bar, plain lines, or auto (default: rich on an interactive "
                             "terminal outside a launcher)")


def run(args: argparse.Namespace) -> int:
    """Run inference from parsed arguments; returns the exit code."""
    from harness.cluster.distributed import get_dist_info
    from harness.commands.evaluate import print_scores
    from harness.workloads.sharded_inference import infer

    job = load_job(job_or_default(args.job, "asc19-cpu-ft.yaml"), args.overrides)
    result = infer(job, lr_dir=args.lr, out_dir=args.out, checkpoint=args.checkpoint,
                   hr_dir=args.hr, overwrite=args.overwrite,
                   log_format="off" if args.quiet else args.log_format)
    if result.get("scores") and get_dist_info().is_master:
        print_scores({"summary": result["scores"], "paths": result["score_paths"]}, args.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.infer``."""
    return module_main("harness.infer", "Sharded FaceSR inference (run under mpirun "
                       "for several ranks).", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
