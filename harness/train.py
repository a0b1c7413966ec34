"""Data-parallel FaceSR training.

Launch on a cluster (one rank per GPU), on this machine, or as one plain process::

    mpirun -np 16 python -m harness.train --job jobs/asc19-final.yaml
    harness launch jobs/demo.yaml                  # builds and runs the mpirun line
    python -m harness.train --job jobs/smoke.yaml  # one process, no launcher

Every rank bootstraps through :mod:`harness.distributed`, then trains a replica wrapped in
``torch.nn.parallel.DistributedDataParallel`` (gloo on CPU, NCCL on GPU) or, with
``train.backend: horovod``, Horovod's ``DistributedOptimizer``. Sampling and augmentation
are pure functions of (seed, step, rank) (:mod:`harness.data`), so ``--resume`` continues
exactly where a run stopped.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from harness import checkpoint as ckpt
from harness.cli import add_job_arguments, module_main
from harness.config import JobConfig, load_job
from harness.data import (PairSet, batch_indices, check_split, load_pairs, make_batch,
                          only_flips)
from harness.distributed import (Comm, DistInfo, get_comm, get_dist_info,
                                 init_torch_distributed, shard, shutdown_torch_distributed)
from harness.errors import UserError
from harness.runs import MetricsLog, create_run_dir, write_json_atomic, write_manifest

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``harness train`` / ``python -m harness.train``."""
    add_job_arguments(parser)
    parser.add_argument("--resume", metavar="RUN_OR_CKPT",
                        help="continue a run from its latest checkpoint (a run directory) "
                             "or from a given checkpoint file")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="parent folder of run directories (default: launch.run_dir)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after step N with a checkpoint, as if interrupted")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    """Run training from parsed arguments; returns the exit code."""
    job = load_job(args.job, args.overrides)
    train(job, resume=args.resume, run_parent=args.run_dir, stop_after=args.stop_after,
          progress=not args.quiet)
    return 0


# --------------------------------------------------------------------------- set-up helpers


def resolve_device(choice: str, info: DistInfo) -> str:
    """``cpu`` or ``cuda:N`` for this rank (``auto`` picks CUDA when present)."""
    import torch

    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError("train.device: cuda requested but torch sees no GPU "
                        "(run `harness doctor`)")
    return f"cuda:{info.local_rank % torch.cuda.device_count()}"


def set_threads(job: JobConfig, info: DistInfo) -> int:
    """Set torch's CPU threads for this rank and return the number."""
    import torch

    n = job.train.threads_per_rank or max(1, (os.cpu_count() or 1) // info.local_world_size)
    torch.set_num_threads(n)
    return n


def model_kwargs(job: JobConfig) -> dict[str, Any]:
    """Generator keyword arguments: integral numbers become ints."""
    out: dict[str, Any] = {"scale": job.model.scale}
    for k, v in job.model.args.items():
        out[k] = int(v) if float(v).is_integer() else float(v)
    return out


def build_generator(name: str, kwargs: dict[str, Any]):  # noqa: ANN201 - nn.Module
    """Build a generator, turning bad names/arguments into a user error on ``model``."""
    from kernels import build_model

    try:
        return build_model(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model.args: {exc}") from None


def resolve_init_from(job: JobConfig) -> Path:
    """The checkpoint file named by ``model.init_from`` (see :class:`ModelConfig`).

    Raises:
        UserError: ``shipped`` without (intact) shipped weights for this model, or no such file.
    """
    spec = job.model.init_from
    if spec == "shipped":
        from kernels.shipped import shipped_checkpoint

        try:
            found = shipped_checkpoint(job.model.name, model_kwargs(job))
        except ValueError as exc:  # checksum mismatch
            raise UserError(f"model.init_from: {exc}") from None
        if found is None:
            raise UserError(f"model.init_from: no shipped weights for {job.model.name} with "
                            f"{dict(job.model.args)}")
        return Path(found)
    path = Path(spec).expanduser()
    if not path.is_file() and not path.is_absolute():
        from harness.paths import project_root

        path = project_root() / spec
    if not path.is_file():
        raise UserError(f"model.init_from: {spec}: no such checkpoint file")
    return path


def load_initial_weights(model, job: JobConfig, path: Path) -> None:  # noqa: ANN001 - nn.Module
    """Load the generator weights in ``path`` (see :func:`resolve_init_from`) into ``model``.

    Raises:
        UserError: not a checkpoint, or weights of another architecture than the job's.
    """
    state = ckpt.load(path)
    kwargs = state.get("model_kwargs")
    if state.get("model_name", job.model.name) != job.model.name or (
            kwargs is not None and dict(kwargs) != model_kwargs(job)):
        raise UserError(f"model.init_from: {path} holds {state.get('model_name')} "
                        f"{dict(kwargs or {})}, the job builds {job.model.name} "
                        f"{model_kwargs(job)}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"model.init_from: {path}: weights do not fit "
                        f"({str(exc).splitlines()[0]})") from None


def lr_factor(step: int, job: JobConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then the chosen schedule."""
    t = job.train
    if t.warmup_steps and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return 1.0
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    if t.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return 0.1 ** int(progress * 3)  # step: x0.1 at 1/3 and 2/3 of training


class Reducer:
    """Averages small lists of floats over ranks with the training engine's collectives."""

    def __init__(self, backend: str, world: int) -> None:
        self.backend, self.world = backend, world

    def mean(self, values: Sequence[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        import torch

        t = torch.tensor(list(values), dtype=torch.float64)
        if self.backend == "horovod":
            import horovod.torch as hvd

            t = hvd.allreduce(t, op=hvd.Sum)
        else:
            import torch.distributed as dist

            dist.all_reduce(t)
        return (t / self.world).tolist()


def _horovod():  # noqa: ANN202 - module
    try:
        import horovod.torch as hvd
    except ImportError:
        raise UserError("train.backend: horovod, but Horovod is not installed (see README: "
                        "build 0.28.1 with C++17), or use train.backend: ddp") from None
    return hvd


# --------------------------------------------------------------------------- validation


def validate(model, pairs: PairSet, recognizer, info: DistInfo, comm: Comm, *,  # noqa: ANN001
             device: str, batch_size: int = 32, metrics: Sequence[str] = ("is", "psnr")
             ) -> dict[str, float]:
    """Score the model on ``pairs``, sharded over ranks; every rank gets the same means.

    SR outputs are quantised to 8 bits first, exactly as saved PNGs would be.
    """
    import torch

    from harness.imageio import from_tensor
    from harness.metrics import psnr

    mine = shard(list(range(len(pairs))), info.rank, info.world_size)
    records: list[tuple[int, float, float]] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            lr, hr = make_batch(pairs, idx, None, np.random.default_rng(0))
            sr = model(lr.to(device)).float().clamp(0, 1).cpu()
            sr_u8 = from_tensor(sr)
            sr_q = torch.from_numpy(np.stack(sr_u8)).permute(0, 3, 1, 2).float() / 255.0
            if recognizer is not None and "is" in metrics:
                from harness.recognizers import identity_similarity

                cos = identity_similarity(recognizer, sr_q.to(device), hr.to(device))
            else:
                cos = np.full(len(idx), np.nan)
            for j, i in enumerate(idx):
                p = psnr(sr_u8[j], pairs.hr[i]) if "psnr" in metrics else float("nan")
                records.append((i, float(cos[j]), float(p)))
    model.train(was_training)
    every = sorted(r for part in comm.allgather(records) for r in part)
    out = {"val_n": len(every)}
    if every and recognizer is not None and "is" in metrics:
        out["val_is"] = float(np.mean([r[1] for r in every]))
    if every and "psnr" in metrics:
        out["val_psnr"] = float(np.mean([r[2] for r in every]))
    return out


# --------------------------------------------------------------------------- training


def train(job: JobConfig, *, resume: str | None = None, run_parent: str | None = None,
          stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the job's generator; returns the run summary (on every rank).

    Raises:
        UserError: bad data or job for this world size, a diverged loss (after keeping the
            last good checkpoint), or a missing engine.
    """
    import torch

    info, comm = get_dist_info(), get_comm()
    threads = set_threads(job, info)
    device = resolve_device(job.train.device, info)
    t = job.train

    train_set = load_pairs(job.data.train, job.data.lr_kernel)
    val_set = load_pairs(job.data.val, job.data.lr_kernel)
    check_split(len(train_set), t.batch_size, info.world_size, job.data.train)

    init_path = None
    if resume:
        run_dir, resume_ckpt = ckpt.resolve_resume(resume)
    else:
        if job.model.init_from:  # resolved before a run folder exists, so a typo leaves none
            init_path = resolve_init_from(job)
        run_dir, resume_ckpt = create_run_dir(job, comm, run_parent), None
    ckpt_dir = run_dir / "checkpoints"
    write_manifest(run_dir, job, info, comm, device=device, threads=threads,
                   extra={"train_pairs": len(train_set), "val_pairs": len(val_set),
                          "backend": t.backend})

    torch.manual_seed(t.seed)
    kwargs = model_kwargs(job)
    model = build_generator(job.model.name, kwargs).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError(f"model.name: {job.model.name} has no trainable parameters "
                        "(use `harness infer` for the bicubic baseline)")
    if init_path is not None:
        load_initial_weights(model, job, init_path)
        if info.is_master:
            log.info("generator initialised from %s", init_path)
    if device.startswith("cuda") and t.channels_last:
        model = model.to(memory_format=torch.channels_last)

    engine_model = model
    if info.distributed and t.backend == "ddp":
        init_torch_distributed(info, comm, backend="nccl" if device.startswith("cuda")
                               else "gloo")
        from torch.nn.parallel import DistributedDataParallel as DDP

        engine_model = DDP(model, device_ids=[torch.device(device).index]
                           if device.startswith("cuda") else None)
    hvd = _horovod() if t.backend == "horovod" else None
    if hvd is not None:
        hvd.init()
        if hvd.size() != info.world_size:
            raise UserError(f"Horovod sees {hvd.size()} ranks, the launcher {info.world_size}")
    reducer = Reducer(t.backend, info.world_size)

    from harness.recognizers import load_recognizer
    from kernels.losses import CombinedLoss

    loss_rec = (load_recognizer(job.loss.recognizer, device=device)
                if job.loss.identity or job.loss.feature else None)
    eval_rec = None
    if "is" in job.eval.metrics:
        eval_rec = (loss_rec if loss_rec is not None and job.eval.recognizer == job.loss.recognizer
                    else load_recognizer(job.eval.recognizer, device=device))
    disc = disc_opt = None
    if job.loss.adversarial:
        from kernels.discriminator_arch import VGGStyleDiscriminator

        disc = VGGStyleDiscriminator().to(device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=t.lr, betas=(0.9, 0.99))
    loss_fn = CombinedLoss(pixel_weight=job.loss.pixel, identity_weight=job.loss.identity,
                           feature_weight=job.loss.feature,
                           adversarial_weight=job.loss.adversarial, recognizer=loss_rec,
                           discriminator=disc, pixel_kind=job.loss.pixel_kind,
                           feature_layers=job.loss.feature_layers)

    opt = torch.optim.AdamW(params, lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, job))
    if hvd is not None:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(opt, root_rank=0)
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())

    start_step, best_is, best_step = 0, -math.inf, -1
    if resume_ckpt is not None:
        state = ckpt.load(resume_ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if disc is not None and "discriminator" in state:
            disc.load_state_dict(state["discriminator"])
            disc_opt.load_state_dict(state["discriminator_optimizer"])
        start_step = int(state["step"])
        best_is, best_step = float(state.get("best_is", -math.inf)), int(state.get("best_step",
                                                                                   -1))
        rng_states = state.get("rng", [])
        if info.rank < len(rng_states):
            torch.set_rng_state(rng_states[info.rank])
        if info.is_master:
            log.info("resuming %s from step %d (%s)", run_dir, start_step, resume_ckpt)

    metrics = MetricsLog(run_dir / "metrics.jsonl", info.is_master)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if device.startswith("cuda") and t.bf16 else nullcontext())

    from harness.power_session import power_session

    def save(step: int) -> Path | None:
        rngs = comm.gather(torch.get_rng_state(), root=0)
        if not info.is_master:
            return None
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "step": step, "best_is": best_is,
                 "best_step": best_step, "rng": rngs, "model_name": job.model.name,
                 "model_kwargs": kwargs, "job": job.to_dict()}
        if disc is not None:
            state["discriminator"] = disc.state_dict()
            state["discriminator_optimizer"] = disc_opt.state_dict()
        path = ckpt.save_atomic(state, ckpt_dir / ckpt.checkpoint_name(step))
        ckpt.prune(ckpt_dir, t.keep_last)
        return path

    def do_validate(step: int) -> dict[str, float]:
        nonlocal best_is, best_step
        res = validate(model, val_set, eval_rec, info, comm, device=device,
                       batch_size=job.eval.batch_size, metrics=job.eval.metrics)
        improved = "val_is" in res and res["val_is"] > best_is
        if improved:
            best_is, best_step = res["val_is"], step
            if info.is_master:
                ckpt.save_atomic({"model": model.state_dict(), "step": step,
                                  "val_is": best_is, "model_name": job.model.name,
                                  "model_kwargs": kwargs, "job": job.to_dict()},
                                 ckpt_dir / ckpt.BEST_NAME)
        metrics.write({"kind": "val", "step": step, **res,
                       "best_is": best_is if best_is > -math.inf else None})
        return res

    # HR targets take only two forms each when augmentation just mirrors: embed them once.
    emb_cache = (EmbeddingCache(loss_rec) if job.loss.identity and loss_rec is not None
                 and only_flips(job.data.augment) else None)
    # Fault injection for tests of the divergence path (documented in the README's testing notes).
    fault_nan_step = int(os.environ.get("HARNESS_FAULT_NAN_STEP", "0") or 0)
    display = _Progress(enabled=progress and info.is_master, total=t.steps, start=start_step)
    engine_model.train()
    last_saved: Path | None = ckpt.latest(ckpt_dir)
    images_done, t_start = 0, time.perf_counter()
    deadline = t_start + t.max_minutes * 60 if t.max_minutes else math.inf
    val_res: dict[str, float] = {}
    step = start_step
    stopped_early = interrupted = False
    with power_session(job, info, comm, run_dir) as power, display:
        for step in range(start_step, t.steps):
            t0 = time.perf_counter()
            idx = batch_indices(len(train_set), t.batch_size, step, info.rank,
                                info.world_size, t.seed)
            lr, hr, flips = make_batch(train_set, idx, job.data.augment,
                                       np.random.default_rng([t.seed, step, info.rank]),
                                       return_flips=True, lr_kernel=job.data.lr_kernel)
            lr, hr = lr.to(device), hr.to(device)
            hr_emb = (emb_cache.lookup([(i, f) for i, f in zip(idx, flips)], hr)
                      if emb_cache is not None else None)
            with autocast:
                sr = engine_model(lr)
                loss, terms = loss_fn(sr.float(), hr, hr_embeddings=hr_emb)
            if fault_nan_step == step + 1:
                loss = loss * float("nan")
                terms["total"] = float("nan")
            names = sorted(terms)
            reduced = reducer.mean([terms[n] for n in names] +
                                   [0.0 if math.isfinite(terms["total"]) else 1.0])
            if reduced[-1] > 0:
                where = f"; last good checkpoint: {last_saved}" if last_saved else (
                    "; no checkpoint was written yet")
                raise TrainingDiverged(f"loss became non-finite at step {step + 1}{where}",
                                       exit_code=3)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                if hvd is not None:
                    opt.synchronize()
                    torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
                    with opt.skip_synchronize():
                        opt.step()
                else:
                    torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
                    opt.step()
            else:
                opt.step()
            if disc is not None:
                disc_opt.zero_grad(set_to_none=True)
                loss_fn.discriminator_loss(sr.detach().float(), hr).backward()
                disc_opt.step()
            lr_now = sched.get_last_lr()[0]
            sched.step()
            dt = time.perf_counter() - t0
            images_done += t.batch_size
            power.add_images(t.batch_size)
            done = step + 1
            mean_terms = dict(zip(names, reduced[:-1]))
            if done % t.log_every == 0 or done == t.steps:
                metrics.write({"kind": "train", "step": done, "lr": lr_now,
                               "loss": mean_terms, "step_time_s": dt,
                               "images_per_s": t.batch_size / dt, "time_s":
                               time.perf_counter() - t_start})
            display.update(done, mean_terms.get("total", float("nan")), val_res.get("val_is"))
            if t.val_every and done % t.val_every == 0 and done != t.steps:
                val_res = do_validate(done)
            if t.ckpt_every and done % t.ckpt_every == 0 and done != t.steps:
                last_saved = save(done) or last_saved
            if stop_after is not None and done >= stop_after:
                interrupted = stopped_early = True
                break
            if comm.bcast(time.perf_counter() > deadline, root=0):
                stopped_early = True  # out of time: finish like a completed run
                break
        final_step = step + 1 if t.steps > start_step else start_step
        if not interrupted:
            val_res = do_validate(final_step)
        last_saved = save(final_step) or last_saved
        elapsed = time.perf_counter() - t_start
        power_summary = power.summary(images_done)
    metrics.close()
    checksums = comm.allgather(param_checksum(model))
    summary = {
        "run_dir": str(run_dir), "job": job.name, "steps": final_step,
        "world_size": info.world_size, "backend": t.backend, "device": device,
        "images": images_done, "train_time_s": elapsed,
        "images_per_s": images_done / elapsed if elapsed > 0 else 0.0,
        "best_val_is": best_is if best_is > -math.inf else None, "best_step": best_step,
        **{f"final_{k}": v for k, v in val_res.items()},
        "checkpoint": str(last_saved) if last_saved else None,
        "best_checkpoint": str(ckpt_dir / ckpt.BEST_NAME)
        if (ckpt_dir / ckpt.BEST_NAME).exists() else None,
        "stopped_early": stopped_early, "power": power_summary,
        "param_checksums": checksums, "replicas_in_sync": len(set(checksums)) == 1,
    }
    if info.is_master:
        write_json_atomic(run_dir / "summary.json", summary)
        _print_summary(summary)
    shutdown_torch_distributed()
    return summary


class EmbeddingCache:
    """Recognizer embeddings of HR targets, keyed by (pair index, mirrored)."""

    def __init__(self, recognizer) -> None:  # noqa: ANN001 - Recognizer
        self.recognizer = recognizer
        self._rows: dict[tuple[int, bool], Any] = {}

    def lookup(self, keys: list[tuple[int, bool]], hr):  # noqa: ANN001, ANN201 - tensors
        """Embeddings of the batch ``hr`` whose items are ``keys``; computes what is missing."""
        import torch

        missing = [j for j, k in enumerate(keys) if k not in self._rows]
        if missing:
            with torch.no_grad():
                rows = self.recognizer.embed(hr[missing]).detach()
            for j, row in zip(missing, rows):
                self._rows[keys[j]] = row
        return torch.stack([self._rows[k] for k in keys])


def param_checksum(model) -> str:  # noqa: ANN001 - nn.Module
    """SHA-256 of the model's parameters and buffers (equal on every in-sync replica)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Progress:
    """A rich progress bar on rank 0 (no-op elsewhere or when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled, self.total, self.start = enabled, total, start
        self._progress = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total,
                                                 completed=self.start, info="")
        return self

    def update(self, done: int, loss: float, val_is: float | None) -> None:
        if self._progress is None:
            return
        info = f"loss {loss:.4f}" + (f"  val IS {val_is:.4f}" if val_is is not None else "")
        self._progress.update(self._task, completed=done, info=info)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console

    c = Console()
    best = summary.get("best_val_is")
    c.print(f"[bold]run[/] {summary['run_dir']}: {summary['steps']} steps on "
            f"{summary['world_size']} rank(s), {summary['images_per_s']:.1f} images/s"
            + (f", best held-out IS {best:.4f} (step {summary['best_step']})"
               if best is not None else ""))
    p = summary.get("power") or {}
    if p.get("enabled"):
        c.print(f"[bold]power[/] avg {p.get('avg_cluster_w', 0):.0f} W, peak "
                f"{p.get('peak_cluster_w', 0):.0f} W (budget {p.get('budget_w', 0):.0f} W), "
                f"{p.get('images_per_s_per_w', 0):.4f} images/s/W, "
                f"{p.get('j_per_image', 0):.2f} J/image, crossings {p.get('crossings', 0)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.train``."""
    return module_main("harness.train", "Data-parallel FaceSR training (run under "
                       "mpirun for several ranks).", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
