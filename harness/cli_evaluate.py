"""``harness evaluate``: score SR images against HR (IS, PSNR, SSIM, NIQE, RMSE), sharded over
MPI ranks when started under mpirun (results gathered on rank 0, identical to one process).

PI (PIRM's perceptual index) needs the Ma et al. model, which ships nowhere offline: it is not
offered here and never estimated.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from harness.distributed import Comm, DistInfo, get_comm, get_dist_info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hr", required=True, metavar="DIR", help="reference HR images")
    parser.add_argument("--sr", required=True, metavar="DIR",
                        help="super-resolved images, matched to HR by file name")
    parser.add_argument("--lr", metavar="DIR",
                        help="LR inputs: adds the bicubic baseline and the normalised gain "
                             "(IS - IS_bicubic) / (1 - IS_bicubic)")
    parser.add_argument("--recognizer", default="facenet",
                        help="facenet (embedded, default), sphere20a:PATH (official ASC19 "
                             "SphereFace weights) or onnx:PATH (ArcFace-style model)")
    parser.add_argument("--metrics", default="is,psnr,ssim",
                        help="comma list of is, psnr, ssim, niqe, rmse (default: is,psnr,ssim). "
                             "PI is not available: it needs the Ma et al. model, which is "
                             "not shipped")
    parser.add_argument("--shave", type=int, default=0, help="border pixels ignored by PSNR/SSIM")
    parser.add_argument("--batch-size", type=int, default=64, help="images per recognizer pass")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write scores.json and per_image.csv (default: --sr)")


def evaluate_dirs(*, hr_dir: str, sr_dir: str, lr_dir: str | None, recognizer: str,
                  metrics: Sequence[str], out_dir: str | None, batch_size: int, shave: int,
                  info: DistInfo | None = None, comm: Comm | None = None,
                  extra_meta: dict[str, Any] | None = None,
                  print_table: bool = True) -> dict[str, Any] | None:
    """Score a folder pair sharded over this job's ranks; rank 0 writes and prints the table."""
    from harness import evaluate

    info = info or get_dist_info()
    comm = comm or get_comm()
    result = evaluate.evaluate_dirs(
        hr_dir, sr_dir, out_dir, lr_dir=lr_dir, recognizer=recognizer, metrics=metrics,
        batch_size=batch_size, shave=shave, rank=info.rank, world_size=info.world_size,
        gather=(lambda recs: comm.gather(recs, root=0)) if info.world_size > 1 else None,
        meta=extra_meta)
    if result is not None and print_table:
        from rich.console import Console

        console = Console()
        console.print(evaluate.render_table(result["summary"], title=f"Scores of {sr_dir}"))
        if result.get("paths"):
            console.print("wrote " + ", ".join(str(p) for p in result["paths"]))
    comm.barrier()
    return result["summary"] if result is not None else None


def run(args: argparse.Namespace) -> int:
    from harness.errors import UserError

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if "pi" in metrics:
        raise UserError("--metrics pi: the perceptual index needs the Ma et al. model, which "
                        "is not shipped with the harness; use niqe, or supply the model")
    evaluate_dirs(hr_dir=args.hr, sr_dir=args.sr, lr_dir=args.lr, recognizer=args.recognizer,
                  metrics=metrics, out_dir=args.out or args.sr, batch_size=args.batch_size,
                  shave=args.shave)
    return 0
