"""Sharded FaceSR inference: LR folder in, SR PNGs out (same names), scored when HR is given.

Launch::

    python -m harness.infer --job jobs/demo.yaml --lr data/asc19-val/val_LR --out sr/
    mpirun -np 16 python -m harness.infer --job jobs/asc19-final.yaml --lr LR --out SR --hr HR

The LR files are cut into batches of ``infer.batch_size`` in name order and the batches are
dealt round-robin to ranks, so every image is processed in the same batch whatever the number
of ranks: the output is bit-identical for ``-np 1`` and ``-np N``.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from fileio.run_files import infer_power_dir
from fileio.user_error import UserError
from harness.cluster.distributed import get_comm, get_dist_info
from harness.config import JobConfig
from harness.lists import shard
from harness.outputs.logs import CountProgress, choose_log_format

log = logging.getLogger(__name__)


def deal_batches(n_items: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Batches of consecutive indices, dealt round-robin: this rank's share."""
    batches = [list(range(i, min(i + batch_size, n_items)))
               for i in range(0, n_items, batch_size)]
    return shard(batches, rank, world)


def infer(job: JobConfig, *, lr_dir: str, out_dir: str, checkpoint: str | None = None,
          hr_dir: str | None = None, log_format: str = "auto",
          overwrite: bool = False) -> dict[str, Any]:
    """Super-resolve every image in ``lr_dir`` into ``out_dir``; score if ``hr_dir`` is given.

    ``out_dir`` is checked before anything is written (:func:`check_infer_output`): never an
    input, and existing files are replaced only with ``overwrite``. It is locked for this
    command (a second one is refused), and the new outputs are written beside it and swapped
    in whole at the end (:class:`~harness.outputs.write_checks.StagedFolder`): a run killed
    half-way leaves the old images with their old ``scores.json``.

    Returns:
        On every rank: counts, timing and (when scored) the score summary.
    """
    import dataclasses

    from harness.cluster import watchdog
    from harness.model.generators import make_generator, resolve_device, set_threads
    from power.backends import resolve_backend

    info, comm = get_dist_info(), get_comm()
    watchdog.current().configure(job.train.collective_timeout_s)
    job = dataclasses.replace(job, power=resolve_backend(job.power))
    set_threads(job.infer.threads_per_rank, info)
    device = resolve_device(job.train.device, info)
    final = Path(out_dir)
    from harness.outputs.write_checks import StagedFolder, agree, claim_output

    def check() -> None:
        check_infer_output(lr_dir, out_dir, hr_dir, checkpoint, overwrite)

    agree(comm, check)
    # (a bad checkpoint: no --out yet)
    model, source = make_generator(job.model, "infer", device=device,
                                   checkpoint=checkpoint or job.infer.checkpoint or None)
    agree(comm, lambda: claim_output(out_dir, check))  # this command is --out's one writer
    from harness.cluster.command_comm import collectives_comm, raise_if_peer_lost
    from harness.cluster.distributed import shutdown_torch_distributed

    # From here on, a lost node is named (gloo), not Open MPI's silent exit 14.
    comm = collectives_comm(info, comm, job.train.collective_timeout_s)
    # Everything is written into a staging folder beside --out and swapped in whole at the
    # end: an interrupted run (or --overwrite) leaves the old outputs or the new, never a mix.
    staged = StagedFolder(final) if info.is_master else None
    # Rank 0 always has the staging folder: every rank receives its path, never None.
    out = Path(cast(str, comm.bcast(str(staged.path) if staged else None, root=0)))
    try:
        result = _infer_into(job, info, comm, model, source, device, out, final, lr_dir,
                             hr_dir, log_format)
        comm.barrier()
        if staged is not None:
            _keep_power_beside(out, final)
            staged.commit()
            log.info("wrote %d SR images to %s", result["images"], final)
        comm.barrier()
    except UserError as exc:
        if staged is not None:
            staged.discard()
        if str(out) not in str(exc):
            raise
        # The staging folder is gone with the error: name the folder the user gave.
        raise UserError(str(exc).replace(str(out), str(final)), exc.exit_code,
                        every_rank=exc.every_rank) from None
    except BaseException as exc:
        if staged is not None:
            staged.discard()
        raise_if_peer_lost(exc, f"{final} keeps what it held before; run the command again "
                                "once the nodes are back, or on the nodes left")
        raise
    shutdown_torch_distributed()
    return result


def _infer_into(job: JobConfig, info: Any, comm: Any, model: Any, source: str, device: str,
                out: Path, final: Path, lr_dir: str, hr_dir: str | None,
                log_format: str) -> dict[str, Any]:
    """:func:`infer`'s work, written into ``out`` (the staging of ``final``)."""
    import torch

    from harness.cluster.watchdog import on_stall
    from harness.data.imageio import list_images
    from harness.model.precision import resolve_precision
    from power.session import power_session

    def shown(path: str | None) -> str | None:  # paths as they will be after the swap
        return path and path.replace(str(out), str(final), 1)

    if info.is_master and lr_dir.startswith("embedded:"):
        from harness.data.pairs import materialize_split

        materialize_split(lr_dir, out / "inputs")
    comm.barrier()
    if lr_dir.startswith("embedded:"):
        lr_dir, hr_dir = str(out / "inputs" / "LR"), hr_dir or str(out / "inputs" / "HR")
    files = list_images(lr_dir)
    model = model.to(memory_format=torch.channels_last)
    precision = resolve_precision(job.infer.precision, device)
    mine = deal_batches(len(files), job.infer.batch_size, info.rank, info.world_size)
    mode = choose_log_format(log_format, info.launcher) if info.is_master else "off"
    bar = CountProgress("infer", sum(len(b) for b in mine), mode, of_all=len(files))
    with power_session(job.power, info, comm, out, on_stall=on_stall) as power, bar:
        t0 = time.perf_counter()  # times inference, not the opening of GPUs and governor

        def on_batch(n: int) -> None:
            power.add_images(n)
            bar.advance(n)

        done = _run_batches(model, files, mine, out, device, job.infer.tta_flip, precision,
                            on_batch=on_batch)
        elapsed = time.perf_counter() - t0
    # After the session: images/s, W and J over one window, the governor's start to restore.
    power_summary = power.summary(done)
    if isinstance(power_summary, dict) and "dir" in power_summary:  # where it will be
        power_summary["dir"] = str(infer_power_dir(final))
    total = int(comm.allreduce_sum(done))
    wall = max(comm.allgather(elapsed))
    result: dict[str, Any] = {"images": total, "seconds": wall,
                              "images_per_s": total / wall if wall > 0 else 0.0,
                              "weights": source, "world_size": info.world_size,
                              "precision": precision,
                              "power": power_summary}
    comm.barrier()
    if info.is_master:
        log.info("super-resolved %d images in %.1f s (%.1f images/s)", total, wall,
                 result["images_per_s"])
    if hr_dir:
        from harness.scoring.score_folders import evaluate_dirs

        scored = evaluate_dirs(hr_dir, str(out), str(out), lr_dir=lr_dir,
                               recognizer=job.eval.recognizer, metrics=job.eval.metrics,
                               batch_size=job.eval.batch_size, shave=job.eval.shave, comm=comm,
                               device=device, precision=job.eval.precision,
                               lr_kernel=job.data.lr_kernel,
                               meta={"inference": result, "sr_dir": str(final),
                                     "hr_dir": shown(hr_dir), "lr_dir": shown(lr_dir)})
        result["scores"] = comm.bcast(scored and scored["summary"], root=0)
        result["score_paths"] = [shown(str(p)) for p in (scored or {}).get("paths") or []]
        comm.barrier()
    return result


def _keep_power_beside(staging: Path, final: Path) -> None:
    """Move the power records out of the staged SR set to :func:`infer_power_dir` of ``final``.

    The SR folder is what a team hands in: SR images and their scores, no power logs. An
    older records folder there is replaced (:func:`check_infer_output` allowed it).
    """
    records, staged = infer_power_dir(final), staging / "power"
    if not staged.is_dir():
        return
    if records.is_dir():
        shutil.rmtree(records)
    os.replace(staged, records)
    log.info("power records of this inference in %s", records)


def check_infer_output(lr_dir: str, out_dir: str, hr_dir: str | None,
                       checkpoint: str | None, overwrite: bool) -> None:
    """Refuse an ``--out`` that is, holds or lies in an input, or whose files would be replaced.

    Two LR files that would give one SR name (``a.png`` and ``a.jpg``) are refused too.
    """
    from fileio.user_error import UserError
    from harness.data.imageio import list_images
    from harness.outputs.write_checks import check_output

    names: list[str] = ["scores.json", "per_image.csv"]
    if lr_dir.startswith("embedded:"):
        names.append("inputs")
        from harness.data.pairs import load_pairs  # the split's names are the SR names

        names += [n + ".png" for n in load_pairs(lr_dir).names]
    else:
        seen: dict[str, str] = {}
        for f in list_images(lr_dir):
            stem = f.stem
            if stem in seen:
                raise UserError(f"--lr {lr_dir}: {seen[stem]} and {f.name} would both be "
                                f"written as {stem}.png; keep one image per name")
            seen[stem] = f.name
        names += [s + ".png" for s in seen]
        if hr_dir:
            _check_hr_pairs(hr_dir, lr_dir, seen)
    check_output(out_dir, [lr_dir, hr_dir, checkpoint], overwrite=overwrite, will_write=names)
    check_output(infer_power_dir(out_dir), [lr_dir, hr_dir, checkpoint], overwrite=overwrite,
                 what="--out's power records")


def _check_hr_pairs(hr_dir: str, lr_dir: str, lr_stems: Iterable[str]) -> None:
    """Refuse ``--hr`` images that no LR file would give an SR image for, before any work.

    The scoring would fail on them after the whole folder was super-resolved.
    """
    from fileio.user_error import UserError
    from harness.data.imageio import list_images

    have = set(lr_stems)
    missing = [f.name for f in list_images(hr_dir) if f.stem not in have]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise UserError(f"--hr {hr_dir}: {len(missing)} HR images have no LR image of the same "
                        f"name in --lr {lr_dir} ({shown}); add them to --lr or remove them "
                        "from --hr")


def _run_batches(model: Any, files: list[Path], batches: list[list[int]], out: Path,
                 device: str, tta_flip: bool, precision: str,
                 on_batch: Callable[[int], Any]) -> int:
    """Super-resolve ``batches`` of ``files`` into ``out``; returns the images done.

    PNG decoding runs ahead in a thread pool and encoding behind the compute (both release
    the GIL in zlib), so the forward passes do not wait on files. Images of other sizes in
    one batch are run one by one (any size works at 4x).
    """
    from concurrent.futures import ThreadPoolExecutor

    from harness.cluster import watchdog
    from harness.data.imageio import from_tensor, read_rgb, to_tensor, write_png
    from harness.model.generators import super_resolve

    done = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="png") as io:
        reads = io.map(lambda b: [read_rgb(files[i]) for i in b], batches)
        writes = []
        for k, (batch, images) in enumerate(zip(batches, reads, strict=True), 1):
            groups: dict[tuple[int, ...], list[int]] = {}
            for j, im in enumerate(images):
                groups.setdefault(im.shape, []).append(j)
            for members in groups.values():
                lr = to_tensor([images[j] for j in members]).to(device)
                sr = super_resolve(model, lr, tta_flip, precision)
                for j, arr in zip(members, from_tensor(sr.cpu()), strict=True):
                    writes.append(io.submit(write_png, out / (files[batch[j]].stem + ".png"),
                                            arr))
            done += len(batch)
            watchdog.progress(f"infer batch {k}")
            on_batch(len(batch))
        for w in writes:
            w.result()  # a failed write raises here
    return done
