"""Sharded FaceSR inference: LR folder in, SR PNGs out (same names), scored when HR is given.

Launch::

    python -m harness.infer --job jobs/demo.yaml --lr data/asc19-val/val_LR --out sr/
    mpirun -np 16 python -m harness.infer --job jobs/asc19-final.yaml --lr LR --out SR --hr HR

The LR files are cut into batches of ``infer.batch_size`` in name order and the batches are
dealt round-robin to ranks, so every image is processed in the same batch whatever the number
of ranks: the output is bit-identical for ``-np 1`` and ``-np N``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from harness import checkpoint as ckpt
from harness.cli import add_job_arguments, module_main
from harness.config import JobConfig, load_job
from harness.distributed import get_comm, get_dist_info
from harness.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness infer`` / ``python -m harness.infer``."""
    add_job_arguments(parser, required=False)  # default: jobs/asc19-cpu-ft.yaml (shipped weights)
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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    job = load_job(args.job or _default_job(), args.overrides)
    infer(job, lr_dir=args.lr, out_dir=args.out, checkpoint=args.checkpoint, hr_dir=args.hr,
          progress=not args.quiet)
    return 0


def _default_job() -> str:
    """The quality recipe, whose model's weights ship with the project."""
    from harness.paths import project_root

    return str(project_root() / "jobs" / "asc19-cpu-ft.yaml")


def load_generator(job: JobConfig, checkpoint: str | None, device: str):  # noqa: ANN201
    """The generator with its weights: from a checkpoint (its own model spec wins) or shipped.

    Raises:
        UserError: no weights available for a trainable model, or a bad checkpoint.
    """
    from harness.train import build_generator, model_kwargs

    path = checkpoint or job.infer.checkpoint or None
    if path is None:
        from kernels.shipped import shipped_checkpoint

        path = shipped_checkpoint(job.model.name, model_kwargs(job))
    if path is None:
        model = build_generator(job.model.name, model_kwargs(job))
        if any(p.requires_grad for p in model.parameters()):
            raise UserError(f"no --checkpoint given and no shipped weights for model "
                            f"{job.model.name} with {dict(job.model.args)}: train one first "
                            "(harness train) or pass --checkpoint")
        return model.to(device).eval(), "untrained (no parameters)"
    state = ckpt.load(path)
    name = state.get("model_name", job.model.name)
    kwargs = state.get("model_kwargs", model_kwargs(job))
    model = build_generator(name, dict(kwargs))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit model {name} "
                        f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), str(path)


def super_resolve(model, lr: "torch.Tensor", tta_flip: bool = False) -> "torch.Tensor":  # noqa: ANN001,F821
    """SR of a batch, clamped to [0, 1]; with ``tta_flip`` the mirror's output is averaged in."""
    import torch

    with torch.no_grad():
        sr = model(lr).float()
        if tta_flip:
            sr = 0.5 * (sr + model(lr.flip(-1)).float().flip(-1))
    return sr.clamp(0.0, 1.0)


def deal_batches(n_items: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Batches of consecutive indices, dealt round-robin: this rank's share."""
    batches = [list(range(i, min(i + batch_size, n_items)))
               for i in range(0, n_items, batch_size)]
    return batches[rank::world]


def infer(job: JobConfig, *, lr_dir: str, out_dir: str, checkpoint: str | None = None,
          hr_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Super-resolve every image in ``lr_dir`` into ``out_dir``; score if ``hr_dir`` is given.

    Returns:
        On every rank: counts, timing and (when scored) the score summary.
    """

    from harness.imageio import from_tensor, list_images, read_rgb, to_tensor, write_png
    from harness.power_session import power_session
    from harness.train import resolve_device, set_threads

    info, comm = get_dist_info(), get_comm()
    set_threads(job, info)
    device = resolve_device(job.train.device, info)
    out = Path(out_dir)
    if info.is_master:
        out.mkdir(parents=True, exist_ok=True)
        if lr_dir.startswith("embedded:"):
            from harness.data import materialize_split

            materialize_split(lr_dir, out / "inputs")
    comm.barrier()
    if lr_dir.startswith("embedded:"):
        lr_dir, hr_dir = str(out / "inputs" / "LR"), hr_dir or str(out / "inputs" / "HR")
    files = list_images(lr_dir)
    model, source = load_generator(job, checkpoint, device)
    mine = deal_batches(len(files), job.infer.batch_size, info.rank, info.world_size)
    t0 = time.perf_counter()
    done = 0
    bar = _bar(progress and info.is_master, sum(len(b) for b in mine))
    with power_session(job, info, comm, out) as power, bar:
        for batch in mine:
            images = [read_rgb(files[i]) for i in batch]
            # Images of other sizes in one batch are run one by one (any size works at 4x).
            groups: dict[tuple[int, ...], list[int]] = {}
            for j, im in enumerate(images):
                groups.setdefault(im.shape, []).append(j)
            for members in groups.values():
                lr = to_tensor([images[j] for j in members]).to(device)
                sr = super_resolve(model, lr, job.infer.tta_flip)
                for j, arr in zip(members, from_tensor(sr.cpu())):
                    write_png(out / (files[batch[j]].stem + ".png"), arr)
            done += len(batch)
            power.add_images(len(batch))
            bar.advance(len(batch))
        elapsed = time.perf_counter() - t0
        power_summary = power.summary(done)
    total = int(comm.allreduce_sum(done))
    wall = max(comm.allgather(elapsed))
    result: dict[str, Any] = {"images": total, "seconds": wall,
                              "images_per_s": total / wall if wall > 0 else 0.0,
                              "weights": source, "world_size": info.world_size,
                              "power": power_summary}
    comm.barrier()
    if info.is_master:
        log.info("wrote %d SR images to %s in %.1f s (%.1f images/s)", total, out, wall,
                 result["images_per_s"])
    if hr_dir:
        from harness.cli_evaluate import evaluate_dirs

        result["scores"] = evaluate_dirs(hr_dir=hr_dir, sr_dir=str(out), lr_dir=lr_dir,
                                         recognizer=job.eval.recognizer,
                                         metrics=job.eval.metrics, out_dir=str(out),
                                         batch_size=job.eval.batch_size, shave=job.eval.shave,
                                         info=info, comm=comm,
                                         extra_meta={"inference": result},
                                         print_table=True)
    return result


class _bar:
    """Rich progress bar on rank 0 only."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self._p = enabled, total, None

    def __enter__(self) -> "_bar":
        if self.enabled:
            from rich.progress import Progress

            self._p = Progress(transient=True)
            self._p.start()
            self._task = self._p.add_task("infer", total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.infer``."""
    return module_main("harness.infer", "Sharded FaceSR inference (run under mpirun "
                       "for several ranks).", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
