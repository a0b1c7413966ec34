"""Data-parallel FaceSR training: the run of one job, from its data to its summary.

Every rank bootstraps through :mod:`harness.cluster.distributed`, builds its replica with
:func:`harness.training.engine.build_engine` (``torch.nn.parallel.DistributedDataParallel``
over gloo on CPU or NCCL on GPU, or Horovod's ``DistributedOptimizer`` with
``train.backend: horovod``) and steps through :class:`Trainer`. Sampling and augmentation are
pure functions of (seed, step, rank) (:mod:`harness.data.pairs`), so ``--resume`` continues
exactly where a run stopped. The command line is :mod:`harness.train`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from fileio.atomic import write_json_atomic
from fileio.user_error import UserError
from harness.cluster import watchdog
from harness.cluster.distributed import (
    Comm,
    DistInfo,
    describe_peer_loss,
    get_comm,
    get_dist_info,
    shutdown_torch_distributed,
    steps_comm,
)
from harness.cluster.slurm import (
    MIN_TRAIN_S,
    SlurmQueryError,
    parse_slurm_time,
    query_time_left_s,
    slurm_job,
)
from harness.cluster.watchdog import StallWatchdog, timeout_from_env, torch_timeout_s
from harness.config import JobConfig
from harness.data.loader import BatchLoader
from harness.data.pairs import PairSet, check_split, load_pairs, only_flips
from harness.model.generators import (
    check_checkpoint_model,
    model_kwargs,
    preflight_model,
    resolve_device,
    resolve_init_from,
    set_threads,
)
from harness.model.precision import autocast, resolve_precision
from harness.outputs import checkpoints as ckpt
from harness.outputs.logs import RunLog, choose_log_format
from harness.outputs.run_folders import (
    MetricsLog,
    create_run_dir,
    lock_run_everywhere,
    run_slurm_ids,
    update_manifest,
    write_manifest,
)
from harness.training.engine import (
    EmbeddingCache,
    Engine,
    TrainingDiverged,
    build_engine,
    param_checksum,
    uses_channels_last,
)
from harness.training.fit import (
    SKIP_STEPS,
    TIMED_FRACTION,
    TIMED_STEPS,
    FitPlan,
    apply_plan,
    fit_plan,
    plan_message,
)
from harness.training.progress import TrainProgress, print_summary
from harness.training.validate import validate

log = logging.getLogger(__name__)

_PROCESS_START = time.monotonic()
"""When this module was imported: the process's start, near enough, for Slurm time limits."""


class StopSignals:
    """SIGUSR1 and SIGTERM ask training to stop at the next step boundary.

    Slurm sends SIGUSR1 ``launch.signal_lead_s`` before the time limit (see the generated
    sbatch script) and SIGTERM when it cancels a job; either way the run writes a checkpoint and
    ends cleanly (GPU settings restored by the power session), and ``--resume`` continues it.
    Handlers are installed only in the main thread and put back on exit.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._prev: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev.clear()


class Trainer:
    """The state of one run on one rank: engine, data, run folder, best score, checkpoints."""

    def __init__(self, job: JobConfig, info: DistInfo, comm: Comm, engine: Engine,
                 train_set: PairSet, val_set: PairSet, run_dir: Path) -> None:
        # comm: every collective of training and its power session (gloo once DDP has set up
        # torch.distributed, see steps_comm)
        self.job, self.info, self.comm, self.engine = job, info, comm, engine
        self.train_set, self.val_set, self.run_dir = train_set, val_set, run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.start_step, self.best_is, self.best_step = 0, -math.inf, -1
        self.last_saved: Path | None = None
        self.val_res: dict[str, float] = {}
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", info.is_master)
        self.batches = BatchLoader(train_set, job, info.rank, info.world_size)
        t, loss_rec = job.train, engine.loss_rec
        self.precision = resolve_precision(t.precision, engine.device)
        self.channels_last = uses_channels_last(job)
        self.autocast = autocast(engine.device, self.precision)
        # HR targets take only two forms each when augmentation just mirrors: embed them once.
        self.emb_cache = (EmbeddingCache(loss_rec) if job.loss.identity and loss_rec is not None
                          and only_flips(job.data.augment) else None)
        # Fault injection for tests of the divergence path (see the README's testing notes).
        self.fault_nan_step = int(os.environ.get("HARNESS_FAULT_NAN_STEP", "0") or 0)
        self.time_left_s: float | None = None
        """Seconds the Slurm job had left at :attr:`time_left_at` (None: outside Slurm)."""
        self.time_left_at: float | None = None
        self.watchdog: StallWatchdog = watchdog.current()
        self.watchdog.configure(hint=f"the last checkpoint is resumable: --resume {run_dir}")
        self.planned_steps = job.train.steps
        """``train.steps`` as the job gave it (before ``train.fit_to_minutes``)."""
        self.fit: FitPlan | None = None
        """The plan of ``train.fit_to_minutes`` (made in this start or kept from the first)."""
        self._fit_mark: float | None = None
        self._fit_steps = 0

    def apply_plan(self, plan: FitPlan) -> None:
        """Train ``plan``'s steps, cadences and schedule from now on (every rank)."""
        self.fit = plan
        self.job = dataclasses.replace(self.job, train=apply_plan(self.job.train, plan))
        self.engine.reschedule(self.job)

    def restore(self, path: Path) -> None:
        """Continue from the full checkpoint ``path`` (step, best score, RNG of this rank)."""
        state = ckpt.load(path)
        self.engine.restore(state)
        self.start_step = int(state["step"])
        self.best_is = float(state.get("best_is", -math.inf))
        self.best_step = int(state.get("best_step", -1))
        rng_states = state.get("rng", [])
        if self.info.rank < len(rng_states):
            torch.set_rng_state(rng_states[self.info.rank])
        if self.info.is_master:
            log.info("resuming %s from step %d (%s)", self.run_dir, self.start_step, path)
        if isinstance(state.get("fit"), dict):
            self._keep_plan(FitPlan.from_dict(state["fit"]))

    def _keep_plan(self, plan: FitPlan) -> None:
        """A resumed run keeps the plan of its first start: no re-fitting, whatever the time
        of this start, unless this start asks for other steps (``--set train.steps=N``)."""
        steps = self.job.train.steps
        if steps == plan.planned_steps:
            self.apply_plan(plan)
            if self.info.is_master and plan.lowered:
                log.info("keeping the fitted plan of this run: %d steps of the %d planned",
                         plan.fitted_steps, plan.planned_steps)
            return
        self.fit = plan  # recorded, but not followed: the job asks for other steps
        if self.info.is_master:
            log.info("train.steps %d differs from the fitted plan's %d (fitted to %d): "
                     "training %d steps, no re-fitting", steps, plan.planned_steps,
                     plan.fitted_steps, steps)

    def _meta(self) -> dict[str, Any]:
        return {"model_name": self.job.model.name, "model_kwargs": model_kwargs(self.job),
                "job": self.job.to_dict()}

    def save(self, step: int) -> None:
        """Write the full checkpoint after ``step`` (rank 0) and keep the last K."""
        rngs = self.comm.gather(torch.get_rng_state(), root=0)
        if not self.info.is_master:
            return
        state = {**self.engine.state(), "step": step, "best_is": self.best_is,
                 "best_step": self.best_step, "rng": rngs, **self._meta(),
                 "fit": self.fit.to_dict() if self.fit is not None else None}
        try:
            saved = ckpt.save_atomic(state, self.ckpt_dir / ckpt.checkpoint_name(step))
        except OSError as exc:  # disk full, quota: say what is safe and how to go on
            from fileio.user_error import describe_os_error

            where = (f"last good checkpoint {self.last_saved}" if self.last_saved
                     else "no checkpoint was written yet")
            raise UserError(f"{describe_os_error(exc)}; step {step} not saved, {where}; make "
                            f"room and continue with --resume {self.run_dir}",
                            exit_code=1) from exc
        self.last_saved = saved
        ckpt.prune(self.ckpt_dir, self.job.train.keep_last)

    def validate(self, step: int) -> None:
        """Score the held-out pairs; a better IS replaces ``best.pt``."""
        e = self.engine
        res = validate(e.model, self.val_set, e.eval_rec, self.info, self.comm, device=e.device,
                       batch_size=self.job.eval.batch_size, metrics=self.job.eval.metrics)
        if "val_is" in res and res["val_is"] > self.best_is:
            self.best_is, self.best_step = res["val_is"], step
            if self.info.is_master:
                ckpt.save_atomic({"model": e.model.state_dict(), "step": step,
                                  "val_is": self.best_is, **self._meta()},
                                 self.ckpt_dir / ckpt.BEST_NAME)
        self.metrics.write({"kind": "val", "step": step, **res,
                            "best_is": self.best_is if self.best_is > -math.inf else None})
        self.val_res = res

    def step(self, step: int) -> tuple[dict[str, float], int]:
        """Train on the batch of ``step``; returns the mean loss terms and this rank's images."""
        idx, lr, hr, flips = self.batches.get(step)
        lr, hr = lr.to(self.engine.device), hr.to(self.engine.device)
        if self.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        hr_emb = (self.emb_cache.lookup(list(zip(idx, flips)), hr)
                  if self.emb_cache is not None else None)
        try:
            terms = self.engine.step(lr, hr, hr_emb, self.autocast,
                                     poison=self.fault_nan_step == step + 1)
        except TrainingDiverged:
            where = (f"; last good checkpoint: {self.last_saved}" if self.last_saved
                     else "; no checkpoint was written yet")
            raise TrainingDiverged(f"loss became non-finite at step {step + 1}{where}",
                                   exit_code=3) from None
        return terms, len(idx)

    def loop(self, power: Any, display: TrainProgress, stop_after: int | None,
             signals: StopSignals | None = None) -> dict[str, Any]:
        """Steps from ``start_step`` to the end (or a stop); returns counts and how it ended."""
        t, comm = self.job.train, self.comm
        images, t_start = 0, time.perf_counter()
        own = t_start + t.max_minutes * 60 if t.max_minutes else math.inf
        slurm = t_start + time_limit_deadline(self.job, now=self.time_left_at,
                                              time_left_s=self.time_left_s) - time.monotonic()
        deadline = min(own, slurm)
        out_of_time = (f"train.max_minutes ({t.max_minutes:g})" if own <= slurm
                       else "the Slurm time limit")
        done, stopped_early = self.start_step, False
        while done < t.steps:
            step = done
            self.watchdog.arm(step + 1)
            t0 = time.perf_counter()
            terms, mine = self.step(step)
            lr_now = self.engine.sched.get_last_lr()[0]
            self.engine.sched.step()
            dt = time.perf_counter() - t0
            images += t.batch_size  # the global batch: every rank counts the whole job's
            power.add_images(mine)  # the session sums this rank's share over ranks
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                self.metrics.write({"kind": "train", "step": done, "lr": lr_now, "loss": terms,
                                    "step_time_s": dt, "images_per_s": t.batch_size / dt,
                                    "time_s": time.perf_counter() - t_start})
            display.update(done, terms.get("total", float("nan")), self.val_res.get("val_is"))
            if self._fit_due(done, min_s=TIMED_FRACTION * (deadline - t_start)
                             if math.isfinite(deadline) else 0.0):
                self._time_fit(done, t_start, deadline, out_of_time)
                t = self.job.train
                display.set_total(t.steps)
            if t.val_every and done % t.val_every == 0 and done != t.steps:
                self.watchdog.disarm("validation")
                self.validate(done)
            if t.ckpt_every and done % t.ckpt_every == 0 and done != t.steps:
                self.watchdog.disarm("checkpoint")
                self.save(done)
            if stop_after is not None and done >= stop_after:
                return {"final_step": done, "images": images, "t_start": t_start,
                        "stopped_early": True, "interrupted": True}
            # One collective: rank 0's clock decides the deadline, any rank's signal stops all.
            received = signals.received if signals is not None else None
            flags = comm.allgather_ints((int(time.perf_counter() > deadline),
                                         int(signal.Signals[received]) if received else 0))
            stopped_by = next((signal.Signals(s).name for _, s in flags if s), None)
            if stopped_by:
                return {"final_step": done, "images": images, "t_start": t_start,
                        "stopped_early": True, "interrupted": True, "stopped_by": stopped_by}
            if flags[0][0] and done < t.steps:
                stopped_early = True  # out of time: finish like a completed run
                break
        return {"final_step": done, "images": images, "t_start": t_start,
                "stopped_early": stopped_early, "interrupted": False,
                "out_of_time": out_of_time if stopped_early else None}

    def _fit_due(self, done: int, min_s: float) -> bool:
        """Whether step ``done`` ends the timing of ``train.fit_to_minutes`` (the same on
        every rank: rank 0's clock decides); marks its start on the way.

        The timing covers at least :data:`~harness.training.fit.TIMED_STEPS` steps after the
        first :data:`~harness.training.fit.SKIP_STEPS` and at least ``min_s`` seconds. Only
        a new run's first start fits.
        """
        t = self.job.train
        if (not t.fit_to_minutes or self.fit is not None or self.start_step > 0
                or done >= t.steps or done < SKIP_STEPS + TIMED_STEPS):
            if done == SKIP_STEPS:
                self._fit_mark = time.perf_counter()
            return False
        assert self._fit_mark is not None
        self._fit_steps = done - SKIP_STEPS
        long_enough = (time.perf_counter() - self._fit_mark >= min_s
                       if self.info.is_master else None)
        return bool(self.comm.bcast(long_enough, root=0))

    def _time_fit(self, done: int, t_start: float, deadline: float, limit: str) -> None:
        """Time one validation pass and a checkpoint's serialisation, plan the steps on rank
        0 (:func:`harness.training.fit.fit_plan`), broadcast the plan and follow it."""
        import io

        assert self._fit_mark is not None
        step_s = (time.perf_counter() - self._fit_mark) / self._fit_steps
        self.watchdog.disarm("fitting train.steps")
        t0 = time.perf_counter()
        e = self.engine
        validate(e.model, self.val_set, e.eval_rec, self.info, self.comm, device=e.device,
                 batch_size=self.job.eval.batch_size, metrics=self.job.eval.metrics)
        validation_s = time.perf_counter() - t0
        plan: dict[str, Any] | None = None
        if self.info.is_master:
            t0 = time.perf_counter()
            torch.save({**e.state(), **self._meta()}, io.BytesIO())
            checkpoint_s = 2 * (time.perf_counter() - t0)  # and its write, and best.pt
            now = time.perf_counter()
            if math.isinf(deadline):
                log.info("train.fit_to_minutes: no time limit (train.max_minutes 0, no "
                         "Slurm limit): training all %d steps", self.job.train.steps)
            else:
                fitted = fit_plan(self.job.train, done=done, elapsed_s=now - t_start,
                                  step_s=step_s, validation_s=validation_s,
                                  checkpoint_s=checkpoint_s, budget_s=deadline - t_start,
                                  limit=limit)
                log.info("%s", plan_message(fitted))
                plan = fitted.to_dict()
                update_manifest(self.run_dir, {"fit": plan})
        plan = self.comm.bcast(plan, root=0)
        if plan is not None:
            self.apply_plan(FitPlan.from_dict(plan))

    def summary(self, ended: dict[str, Any], elapsed: float,
                power_summary: dict[str, Any]) -> dict[str, Any]:
        """The run summary every rank returns (``summary.json``)."""
        t, info, images = self.job.train, self.info, ended["images"]
        checksums = self.comm.allgather(param_checksum(self.engine.model))
        best_path = self.ckpt_dir / ckpt.BEST_NAME
        return {
            "run_dir": str(self.run_dir), "job": self.job.name, "steps": ended["final_step"],
            "planned_steps": self.planned_steps, "target_steps": t.steps,
            "fit": self.fit.to_dict() if self.fit is not None else None,
            "world_size": info.world_size, "backend": t.backend, "device": self.engine.device,
            "precision": self.precision,
            "images": images, "train_time_s": elapsed,
            "images_per_s": images / elapsed if elapsed > 0 else 0.0,
            "best_val_is": self.best_is if self.best_is > -math.inf else None,
            "best_step": self.best_step,
            **{f"final_{k}": v for k, v in self.val_res.items()},
            "checkpoint": str(self.last_saved) if self.last_saved else None,
            "best_checkpoint": str(best_path) if best_path.exists() else None,
            "stopped_early": ended["stopped_early"],
            # What ended the run before train.steps: a signal, or the time limit it reached.
            "stopped_by": ended.get("stopped_by") or ended.get("out_of_time"),
            "interrupted": bool(ended.get("interrupted")),
            "power": power_summary,
            "param_checksums": checksums, "replicas_in_sync": len(set(checksums)) == 1,
        }


def _open_run(job: JobConfig, info: DistInfo, comm: Comm, resume: str | None,
              run_parent: str | None) -> tuple[Path, Path | None, Path | None]:
    """(run folder, checkpoint to resume, ``model.init_from`` weights) for this start."""
    if resume == "auto":
        resume = latest_resumable(job, run_parent)
        if info.is_master:
            slurm = slurm_job()
            whose = (f"run of Slurm job {slurm.job_id}" if slurm is not None
                     else f"run of {job.name}")
            log.info("--resume auto: %s", f"continuing {resume}" if resume else "no earlier "
                     f"{whose} with a checkpoint: starting a new run")
    if resume:  # checked in full before anything is written; one writer per run folder
        run_dir, resume_ckpt = ckpt.resolve_resume(
            resume, lambda state, where: check_checkpoint_model(
                state, where, expect=(job.model.name, model_kwargs(job))))
        lock_run_everywhere(run_dir, comm)
        return run_dir, resume_ckpt, None
    # model.init_from is resolved before a run folder exists, so a typo leaves none.
    init_path = resolve_init_from(job) if job.model.init_from else None
    preflight_model(job, init_path)
    return create_run_dir(job, comm, run_parent), None, init_path


def latest_resumable(job: JobConfig, run_parent: str | None,
                     env: dict[str, str] | None = None) -> str | None:
    """The run ``--resume auto`` continues, or None for a new run.

    Under Slurm (``SLURM_JOB_ID`` set) only a run this same Slurm job started (a requeued job
    keeps its id) with a checkpoint: the newest run folder of the job whose manifest records
    that id. Outside Slurm, the job's latest run (``<run_dir>/<name>-latest``) if it holds a
    checkpoint.
    """
    parent = Path(run_parent or job.launch.run_dir)
    slurm = slurm_job(env)
    if slurm is None:
        link = parent / f"{job.name}-latest"
        return str(link.resolve()) if ckpt.latest(link / "checkpoints") is not None else None
    mine = [d for d in _run_folders(parent, job.name) if slurm.job_id in run_slurm_ids(d)]
    for run in sorted(mine, key=lambda d: d.name, reverse=True):
        if ckpt.latest(run / "checkpoints") is not None:
            return str(run.resolve())
    if mine:
        log.info("--resume auto: %s of Slurm job %s has no checkpoint yet", mine[-1],
                 slurm.job_id)
    return None


def _run_folders(parent: Path, name: str) -> list[Path]:
    try:
        return [d for d in parent.iterdir() if d.name.startswith(f"{name}-")
                and d.name != f"{name}-latest" and not d.is_symlink() and d.is_dir()]
    except OSError:
        return []


def slurm_time_left(job: JobConfig, comm: Comm, env: dict[str, str] | None = None,
                    squeue: str = "squeue") -> float | None:
    """Seconds the Slurm job has left at start-up, the same on every rank; None outside Slurm.

    Rank 0 asks ``squeue`` (bounded by :data:`harness.cluster.slurm.SQUEUE_TIMEOUT_S`), which
    knows the job's real limit (``sbatch --time`` overrides the script's); when it cannot
    answer, ``launch.time`` counted from the job's start is used, with a log line saying so.
    Collective: every rank must call it.
    """
    env = dict(os.environ) if env is None else env
    slurm = slurm_job(env)
    if slurm is None:
        return None
    left: float | None = None
    if comm.rank == 0:
        try:
            left = query_time_left_s(slurm.job_id, squeue=squeue)
            log.info("Slurm job %s has %s left (squeue)", slurm.job_id, _hms(left))
        except SlurmQueryError as exc:
            left = time_limit_deadline(job, env, now=0.0) + job.launch.signal_lead_s + 60.0
            log.warning("cannot ask Slurm for the time left (%s): using launch.time %s, "
                        "%s left", exc, job.launch.time, _hms(left))
        margin = job.launch.signal_lead_s + 60.0
        if left - margin < MIN_TRAIN_S:
            log.warning("the Slurm time limit leaves %s to train: training stops "
                        "launch.signal_lead_s (%d) + 60 s before the limit; ask for more time "
                        "(launch.time or sbatch --time) or lower launch.signal_lead_s",
                        _hms(max(left - margin, 0.0)), job.launch.signal_lead_s)
    return comm.bcast(left, root=0)


def _hms(seconds: float) -> str:
    if math.isinf(seconds):
        return "no limit"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def time_limit_deadline(job: JobConfig, env: dict[str, str] | None = None,
                        now: float | None = None, time_left_s: float | None = None) -> float:
    """``time.monotonic()`` by which a Slurm job must have stopped, else ``inf``.

    Inside a Slurm allocation (``SLURM_JOB_ID`` set) the job has ``time_left_s`` left from
    ``now`` (what :func:`slurm_time_left` asked squeue); without it, the ``launch.time`` limit
    counts from the allocation's start (``SLURM_JOB_START_TIME`` when Slurm sets it, else this
    process's start). Training stops ``launch.signal_lead_s`` plus a minute before it, so the
    final checkpoint is written in time even if the signal never comes.
    """
    env = dict(os.environ) if env is None else env
    if "SLURM_JOB_ID" not in env:
        return math.inf
    margin = job.launch.signal_lead_s + 60.0
    mono_now = time.monotonic() if now is None else now
    if time_left_s is not None:
        return mono_now + time_left_s - margin
    try:
        limit_s = parse_slurm_time(job.launch.time)
    except ValueError:
        limit_s = None
    if limit_s is None:
        return math.inf
    wall_now = time.time()
    try:
        started = float(env["SLURM_JOB_START_TIME"])
    except (KeyError, ValueError):
        started = wall_now - (time.monotonic() - _PROCESS_START)
    return mono_now + (started + limit_s - margin - wall_now)


def train(job: JobConfig, *, resume: str | None = None, run_parent: str | None = None,
          stop_after: int | None = None, log_format: str = "auto",
          log_interval_s: float = 30.0) -> dict[str, Any]:
    """Train the job's generator; returns the run summary (on every rank).

    Args:
        resume: A run folder, a checkpoint, ``auto`` (see :func:`latest_resumable`) or None.
        log_format: ``auto``, ``rich``, ``plain`` or ``off`` (see :mod:`harness.outputs.logs`).

    Raises:
        UserError: bad data or job for this world size, a diverged loss (after keeping the
            last good checkpoint), or a missing engine.
    """
    from power.backends import resolve_backend

    info, comm = get_dist_info(), get_comm()
    watchdog.current().configure(job.train.collective_timeout_s)
    job = dataclasses.replace(job, power=resolve_backend(job.power))
    threads = set_threads(job.train.threads_per_rank, info)
    device = resolve_device(job.train.device, info)
    train_set = load_pairs(job.data.train, job.data.lr_kernel)
    val_set = load_pairs(job.data.val, job.data.lr_kernel)
    check_split(len(train_set), job.train.batch_size, info.world_size, job.data.train)
    run_dir, resume_ckpt, init_path = _open_run(job, info, comm, resume, run_parent)
    with RunLog(run_dir / "train.log" if info.is_master else None, describe=_why_ended):
        slurm = slurm_job()
        if slurm is not None and info.is_master:
            log.info("Slurm job %s attempt %d (SLURM_RESTART_COUNT=%d) on %s", slurm.job_id,
                     slurm.attempt, slurm.restart_count, slurm.nodelist or slurm.node)
        write_manifest(run_dir, job, info, comm, device=device, threads=threads,
                       extra={"train_pairs": len(train_set), "val_pairs": len(val_set),
                              "backend": job.train.backend})
        engine = build_engine(job, info, comm, device, init_path)
        trainer = Trainer(job, info, steps_comm(comm, torch_timeout_s(
            timeout_from_env(job.train.collective_timeout_s))), engine, train_set,
            val_set, run_dir)
        if resume_ckpt is not None:
            trainer.restore(resume_ckpt)
        trainer.time_left_at = time.monotonic()
        trainer.time_left_s = slurm_time_left(job, comm)
        summary = _run(trainer, log_format, log_interval_s, stop_after)
    shutdown_torch_distributed()
    return summary


def _why_ended(exc: BaseException) -> str | None:
    """The line ``train.log`` ends with when training raised: a lost node or rank named as
    the command names it, a user error's own line; anything else in the exception's words."""
    if isinstance(exc, UserError):
        return str(exc)
    return describe_peer_loss(exc)


def _previous_power(run_dir: Path) -> dict[str, Any] | None:
    """The power block of the summary the run's earlier segment wrote, if readable."""
    import json

    try:
        return json.loads((run_dir / "summary.json").read_text()).get("power")
    except (OSError, ValueError, AttributeError):
        return None


def _run(trainer: Trainer, log_format: str, log_interval_s: float,
         stop_after: int | None) -> dict[str, Any]:
    """Steps, final validation and checkpoint, summary (inside the power session)."""
    from harness.cluster.watchdog import on_stall
    from power.session import combine_segments, power_session

    job, info, run_dir = trainer.job, trainer.info, trainer.run_dir
    mode = choose_log_format(log_format, info.launcher) if info.is_master else "off"
    trainer.engine.wrapped.train()
    trainer.last_saved = ckpt.latest(trainer.ckpt_dir)
    with StopSignals() as signals, trainer.watchdog, \
            power_session(job.power, info, trainer.comm, run_dir, on_stall=on_stall) as power:
        display = TrainProgress(mode, total=trainer.job.train.steps, start=trainer.start_step,
                                batch_size=job.train.batch_size, interval_s=log_interval_s,
                                power=power.live)
        try:
            with display:
                ended = trainer.loop(power, display, stop_after, signals)
                trainer.watchdog.disarm("the end of training")
                if not ended["interrupted"]:
                    trainer.validate(ended["final_step"])
                trainer.save(ended["final_step"])
                elapsed = time.perf_counter() - ended["t_start"]
        finally:
            trainer.batches.close()
    # After the session: the figures cover the governed window up to the restore.
    power_summary = power.summary(ended["images"])
    trainer.metrics.close()
    if trainer.start_step > 0:  # resumed: the power figures cover the whole run
        power_summary = combine_segments(_previous_power(run_dir), power_summary)
    summary = trainer.summary(ended, elapsed, power_summary)
    if info.is_master:
        write_json_atomic(run_dir / "summary.json", summary)
        print_summary(summary)
        if ended["interrupted"] and summary["stopped_by"]:
            log.warning("stopped by %s after step %d; checkpoint %s; continue with "
                        "--resume %s", summary["stopped_by"], summary["steps"],
                        summary["checkpoint"], run_dir)
        elif ended.get("out_of_time"):
            log.warning("reached %s after step %d of %d: the run ended there, validated and "
                        "checkpointed; continue with --resume %s", ended["out_of_time"],
                        summary["steps"], trainer.job.train.steps, run_dir)
    return summary
