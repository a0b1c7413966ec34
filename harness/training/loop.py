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
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from fileio.atomic import write_json_atomic
from fileio.run_files import RESUME_KIND
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
from harness.config import DataConfig, JobConfig, LaunchConfig
from harness.data.loader import BatchLoader
from harness.data.pairs import PairSet, check_split, load_pairs, only_flips
from harness.model.generators import (
    check_checkpoint_model,
    make_generator,
    model_kwargs,
    resolve_device,
    resolve_init_from,
    set_threads,
)
from harness.model.precision import autocast, resolve_precision
from harness.outputs import checkpoints as ckpt
from harness.outputs.logs import RunLog, choose_log_format
from harness.outputs.run_folders import (
    MetricsLog,
    check_run_folder,
    create_run_dir,
    lock_run_everywhere,
    run_slurm_ids,
    update_manifest,
    write_manifest,
)
from harness.training.ema import make_ema
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
from harness.training.hooks import (
    DisplayHook,
    HookSet,
    MetricsHook,
    PowerImagesHook,
    PowerPhaseHook,
    StepEnd,
    StepHook,
    WatchdogHook,
)
from harness.training.progress import TrainProgress, print_summary
from harness.training.scalars import ScalarsHook, check_tensorboard
from harness.training.target import TargetHit, reaches, target_summary
from harness.training.validate import validate
from power.config import PowerConfig
from power.phases import CHECKPOINT, VALIDATION
from power.plan import LaunchPlan, plan_vs_achieved

log = logging.getLogger(__name__)

_PROCESS_START = time.monotonic()
"""When this module was imported: the process's start, near enough, for Slurm time limits."""


class StoppedInStartUp(KeyboardInterrupt):
    """A stop signal arrived before the first step: the run ends at once, as interrupted."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"interrupted by {signame} during start-up, before the first step "
                         "(no checkpoint: start a new run)")


class StopSignals:
    """SIGUSR1 and SIGTERM ask training to stop at the next step boundary.

    Slurm sends SIGUSR1 ``launch.signal_lead_s`` before the time limit (see the generated
    sbatch script) and SIGTERM when it cancels a job; either way the run writes a checkpoint and
    ends cleanly (GPU settings restored by the power session), and ``--resume`` continues it.
    Handlers are installed only in the main thread and put back on exit.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self, starting: bool = False) -> None:
        self.received: str | None = None
        #: While True (start-up: nothing to checkpoint yet), a signal raises
        #: :class:`StoppedInStartUp` at once: ``mpirun`` SIGKILLs its ranks about half a second
        #: after its SIGTERM, too soon for a start-up to reach a step boundary.
        self.starting = starting
        # What signal.signal returned: a handler, SIG_DFL/SIG_IGN, or None (not set from Python).
        self._prev: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signal.Signals(signum).name
        if self.starting:
            self.starting = False  # raised once; a second signal during the unwinding is noted
            raise StoppedInStartUp(self.received)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, prev in self._prev.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev.clear()


class HeldSignals:
    """Holds SIGINT, SIGTERM and SIGUSR1 back for a moment; :meth:`release` delivers them.

    Python runs signal handlers in the main thread, so recording one here defers it reliably;
    :meth:`release` puts the previous handlers back and raises the first held signal again, so
    it is handled exactly as if it had arrived then.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._prev: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def _hold(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum

    def __enter__(self) -> HeldSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._prev[sig] = signal.signal(sig, self._hold)
        return self

    def release(self, replay: bool = True) -> None:
        """Put the previous handlers back; with ``replay``, raise a held signal again."""
        for sig, prev in self._prev.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev.clear()
        if replay and self.received is not None:
            received, self.received = self.received, None
            signal.raise_signal(received)


@dataclasses.dataclass(frozen=True, slots=True)
class LoopEnd:
    """How :meth:`Trainer.loop` ended, the same on every rank.

    Attributes:
        final_step: The last step done.
        images: Images trained on in this start, over all ranks.
        t_start: ``time.perf_counter()`` when the loop started.
        stopped_early: The loop ended before ``train.steps``.
        interrupted: A signal or ``stop_after`` ended it (no final validation).
        stopped_by: The signal's name that stopped it, if one did.
        out_of_time: The time limit it reached (``train.max_minutes`` or Slurm's), if it did.
        at_target: ``train.stop_at_target`` ended it, right after the validation that
            reached ``train.target_is`` (no second final validation).
    """

    final_step: int
    images: int
    t_start: float
    stopped_early: bool
    interrupted: bool
    stopped_by: str | None = None
    out_of_time: str | None = None
    at_target: bool = False


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
        self.batches = BatchLoader(train_set, job.train, job.data, info.rank, info.world_size)
        t, loss_rec = job.train, engine.loss_rec
        self.precision = resolve_precision(t.precision, engine.device)
        self.channels_last = uses_channels_last(job.train)
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
        self.ema = make_ema(engine.model, job.train.ema)
        """EMA of the generator's weights (``train.ema``; None when off)."""
        self.target: TargetHit | None = None
        """The first validation that reached ``train.target_is`` (kept by ``--resume``)."""
        self.time_before_s = 0.0
        """Training wall time of the run's earlier starts (from the resumed checkpoint)."""
        self._t_loop: float | None = None
        self.scalars = (ScalarsHook(run_dir, batch_size=job.train.batch_size)
                        if job.train.tensorboard and info.is_master else None)
        """TensorBoard and ``scalars.csv`` writer (``train.tensorboard``, rank 0)."""

    def eval_model(self) -> torch.nn.Module:
        """The generator validation and ``best.pt`` use: the EMA weights when ``train.ema``."""
        return self.ema.model if self.ema is not None else self.engine.model

    def apply_plan(self, plan: FitPlan) -> None:
        """Train ``plan``'s steps, cadences and schedule from now on (every rank)."""
        self.fit = plan
        self.job = dataclasses.replace(self.job, train=apply_plan(self.job.train, plan))
        self.engine.reschedule(self.job.train)

    def restore(self, path: Path) -> None:
        """Continue from the full checkpoint ``path`` (step, best score, RNG of this rank)."""
        state = ckpt.load(path)
        self.engine.restore(state)
        self.start_step = int(state["step"])
        self.best_is = float(state.get("best_is", -math.inf))
        self.best_step = int(state.get("best_step", -1))
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if "ema" in state else state["model"])
        self.time_before_s = float(state.get("train_time_s", 0.0))
        if isinstance(state.get("target"), dict):
            self.target = TargetHit.from_dict(state["target"])
        rng_states = state.get("rng", [])
        if self.info.rank < len(rng_states):
            torch.set_rng_state(rng_states[self.info.rank])
        if self.info.is_master:
            log.info("resuming %s from step %d (%s)", self.run_dir, self.start_step, path)
        # Steps after this one that an earlier attempt logged (it was killed after its last
        # checkpoint) are an abandoned branch: readers keep the records after this marker.
        self.metrics.write({"kind": RESUME_KIND, "step": self.start_step, "checkpoint": str(path),
                            "unix_s": time.time()})
        if isinstance(state.get("fit"), dict):
            self._keep_plan(FitPlan.from_dict(state["fit"]))

    def _keep_plan(self, plan: FitPlan) -> None:
        """Return whether a resumed run keeps the plan of its first start.

        A resumed run keeps the plan of its first start: no re-fitting, whatever the time
        of this start, unless this start asks for other steps (``--set train.steps=N``).
        """
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
        return {"model_name": self.job.model.name, "model_kwargs": model_kwargs(self.job.model),
                "job": self.job.to_dict()}

    def save(self, step: int) -> None:
        """Write the full checkpoint after ``step`` (rank 0) and keep the last K."""
        rngs = self.comm.gather(torch.get_rng_state(), root=0)
        if not self.info.is_master:
            return
        state = {**self.engine.state(), "step": step, "best_is": self.best_is,
                 "best_step": self.best_step, "rng": rngs, **self._meta(),
                 "fit": self.fit.to_dict() if self.fit is not None else None,
                 "train_time_s": self.train_time_s(),
                 "target": self.target.to_dict() if self.target is not None else None}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        check_run_folder(self.run_dir)  # never recreate a deleted run folder
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
        res = validate(self.eval_model(), self.val_set, e.eval_rec, self.info, self.comm,
                       device=e.device, batch_size=self.job.eval.batch_size,
                       metrics=self.job.eval.metrics)
        if "val_is" in res and res["val_is"] > self.best_is:
            self.best_is, self.best_step = res["val_is"], step
            if self.info.is_master:
                ckpt.save_atomic({"model": self.eval_model().state_dict(), "step": step,
                                  "val_is": self.best_is, **self._meta()},
                                 self.ckpt_dir / ckpt.BEST_NAME)
        # time_s (the run's training time) and unix_s place it on the report's IS-vs-time and
        # IS-vs-energy chart (the energy from the power samples up to unix_s).
        self.metrics.write({"kind": "val", "step": step, **res,
                            "best_is": self.best_is if self.best_is > -math.inf else None,
                            "time_s": self.train_time_s(), "unix_s": time.time()})
        self.val_res = res
        if self.scalars is not None:
            self.scalars.on_validation(step, res)
        target_is = self.job.train.target_is
        if self.target is None and reaches(target_is, res.get("val_is")):
            self.target = TargetHit(val_is=res["val_is"], step=step,
                                    time_s=self.train_time_s(), unix_s=time.time())
            if self.info.is_master:
                log.info("target IS %.4g reached at step %d: validation IS %.4f after %.1f s "
                         "of training%s", target_is, step, res["val_is"], self.target.time_s,
                         " (train.stop_at_target: stopping)" if self.job.train.stop_at_target
                         else "")

    def train_time_s(self) -> float:
        """Training wall time of the run so far: earlier starts' and this start's loop."""
        mine = time.perf_counter() - self._t_loop if self._t_loop is not None else 0.0
        return self.time_before_s + mine

    def step(self, step: int) -> tuple[dict[str, float], int]:
        """Train on the batch of ``step``; returns the mean loss terms and this rank's images."""
        idx, lr, hr, flips = self.batches.get(step)
        lr, hr = lr.to(self.engine.device), hr.to(self.engine.device)
        if self.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        hr_emb = (self.emb_cache.lookup(list(zip(idx, flips, strict=True)), hr)
                  if self.emb_cache is not None else None)
        try:
            terms = self.engine.step(lr, hr, hr_emb, self.autocast,
                                     poison=self.fault_nan_step == step + 1)
            if self.ema is not None:
                self.ema.update(self.engine.model)
        except TrainingDiverged:
            where = (f"; last good checkpoint: {self.last_saved}" if self.last_saved
                     else "; no checkpoint was written yet")
            raise TrainingDiverged(f"loss became non-finite at step {step + 1}{where}",
                                   exit_code=3) from None
        return terms, len(idx)

    def loop(self, power: Any, display: TrainProgress, stop_after: int | None,
             signals: StopSignals | None = None) -> LoopEnd:
        """Steps from ``start_step`` to the end (or a stop); returns counts and how it ended."""
        t, comm = self.job.train, self.comm
        images, t_start = 0, time.perf_counter()
        self._t_loop = t_start
        own = t_start + t.max_minutes * 60 if t.max_minutes else math.inf
        slurm = t_start + time_limit_deadline(self.job.launch, now=self.time_left_at,
                                              time_left_s=self.time_left_s) - time.monotonic()
        deadline = min(own, slurm)
        out_of_time = (f"train.max_minutes ({t.max_minutes:g})" if own <= slurm
                       else "the Slurm time limit")
        done, stopped_early = self.start_step, False
        steps_hooks: list[StepHook] = [WatchdogHook(self.watchdog), PowerImagesHook(power),
                                       PowerPhaseHook(power), MetricsHook(self.metrics),
                                       DisplayHook(display)]
        if self.scalars is not None:
            steps_hooks.append(self.scalars.with_power(power.live))
        hooks = HookSet(steps_hooks)
        while done < t.steps:
            step = done
            hooks.on_step_start(step)
            t0 = time.perf_counter()
            terms, mine = self.step(step)
            lr_now = float(self.engine.sched.get_last_lr()[0])
            self.engine.sched.step()
            dt = time.perf_counter() - t0
            images += t.batch_size  # the global batch: every rank counts the whole job's
            done = step + 1
            hooks.on_step_end(StepEnd(
                done=done, steps=t.steps, log_every=t.log_every, lr=lr_now, terms=terms,
                step_time_s=dt, batch_size=t.batch_size, rank_images=mine, images=images,
                elapsed_s=time.perf_counter() - t_start, val_is=self.val_res.get("val_is")))
            if self._fit_due(done, min_s=TIMED_FRACTION * (deadline - t_start)
                             if math.isfinite(deadline) else 0.0):
                hooks.on_phase(VALIDATION)  # times a validation pass and a checkpoint
                self._time_fit(done, t_start, deadline, out_of_time)
                t = self.job.train
                display.set_total(t.steps)
            if t.val_every and done % t.val_every == 0 and done != t.steps:
                self.watchdog.disarm("validation")
                hooks.on_phase(VALIDATION)
                self.validate(done)
                if t.stop_at_target and self.target is not None and self.target.step == done:
                    # The same on every rank: the validation IS is gathered from all of them.
                    # Only a new hit stops: a resume past a target already reached trains on.
                    return LoopEnd(final_step=done, images=images, t_start=t_start,
                                   stopped_early=True, interrupted=False, at_target=True)
            if t.ckpt_every and done % t.ckpt_every == 0 and done != t.steps:
                self.watchdog.disarm("checkpoint")
                hooks.on_phase(CHECKPOINT)
                self.save(done)
            if stop_after is not None and done >= stop_after:
                return LoopEnd(final_step=done, images=images, t_start=t_start,
                               stopped_early=True, interrupted=True)
            # One collective: rank 0's clock decides the deadline, any rank's signal stops all.
            received = signals.received if signals is not None else None
            flags = comm.allgather_ints((int(time.perf_counter() > deadline),
                                         int(signal.Signals[received]) if received else 0))
            stopped_by = next((signal.Signals(s).name for _, s in flags if s), None)
            if stopped_by:
                return LoopEnd(final_step=done, images=images, t_start=t_start,
                               stopped_early=True, interrupted=True, stopped_by=stopped_by)
            if flags[0][0] and done < t.steps:
                stopped_early = True  # out of time: finish like a completed run
                break
        return LoopEnd(final_step=done, images=images, t_start=t_start,
                       stopped_early=stopped_early, interrupted=False,
                       out_of_time=out_of_time if stopped_early else None)

    def _fit_due(self, done: int, min_s: float) -> bool:
        """Return whether step ``done`` ends the timing of ``train.fit_to_minutes``.

        Whether step ``done`` ends the timing of ``train.fit_to_minutes`` (the same on
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
        """Time validation and a checkpoint, then plan the steps.

        Time one validation pass and a checkpoint's serialisation, plan the steps on rank
        0 (:func:`harness.training.fit.fit_plan`), broadcast the plan and follow it.
        """
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

    def summary(self, ended: LoopEnd, elapsed: float,
                power_summary: dict[str, Any]) -> dict[str, Any]:
        """The run summary every rank returns (``summary.json``)."""
        t, info, images = self.job.train, self.info, ended.images
        checksums = self.comm.allgather(param_checksum(self.engine.model))
        best_path = self.ckpt_dir / ckpt.BEST_NAME
        return {
            "run_dir": str(self.run_dir), "job": self.job.name, "steps": ended.final_step,
            # images, train_time_s and images_per_s below: this start's, from start_step on
            # (the power block covers every attempt)
            "start_step": self.start_step,
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
            "stopped_early": ended.stopped_early,
            # What ended the run before train.steps: a signal, or the time limit it reached.
            "stopped_by": ended.stopped_by or ended.out_of_time
            or ("train.target_is" if ended.at_target else None),
            "interrupted": ended.interrupted,
            "power": power_summary,
            **({"target": target_summary(
                t.target_is, self.target, self.best_is if self.best_is > -math.inf else None,
                self.run_dir / "power" if power_summary.get("enabled") else None)}
               if t.target_is > 0 else {}),
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
        def check(state: dict[str, Any], where: str) -> None:
            check_checkpoint_model(state, where, expect=(job.model.name,
                                                         model_kwargs(job.model)))
            check_resume_steps(int(state.get("step", 0)), job.train.steps, where)

        run_dir, resume_ckpt = ckpt.resolve_resume(resume, check)
        lock_run_everywhere(run_dir, comm)
        return run_dir, resume_ckpt, None
    # model.init_from is resolved before a run folder exists, so a typo leaves none.
    init_path = resolve_init_from(job.model) if job.model.init_from else None
    make_generator(job.model, "check", init_from=init_path)
    return create_run_dir(job, comm, run_parent), None, init_path


def check_resume_steps(step: int, steps: int, where: str) -> None:
    """Refuse to resume a checkpoint of ``step`` with fewer ``train.steps`` (before any write).

    Such a start trained nothing and wrote a summary of ``steps`` over the run's own.

    Raises:
        UserError: ``steps`` is below the checkpoint's step.
    """
    if steps < step:
        raise UserError(f"{where}: the checkpoint is at step {step} but train.steps is {steps}: "
                        f"a resume cannot go back; set train.steps to {step} or more (or start "
                        "a new run from it with --set model.init_from="
                        f"{where.removeprefix('--resume ')})")


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


def slurm_time_left(launch: LaunchConfig, comm: Comm, env: dict[str, str] | None = None,
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
            left = time_limit_deadline(launch, env, now=0.0) + launch.signal_lead_s + 60.0
            log.warning("cannot ask Slurm for the time left (%s): using launch.time %s, "
                        "%s left", exc, launch.time, _hms(left))
        margin = launch.signal_lead_s + 60.0
        if left - margin < MIN_TRAIN_S:
            log.warning("the Slurm time limit leaves %s to train: training stops "
                        "launch.signal_lead_s (%d) + 60 s before the limit; ask for more time "
                        "(launch.time or sbatch --time) or lower launch.signal_lead_s",
                        _hms(max(left - margin, 0.0)), launch.signal_lead_s)
    return comm.bcast(left, root=0)


def _hms(seconds: float) -> str:
    if math.isinf(seconds):
        return "no limit"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def time_limit_deadline(launch: LaunchConfig, env: dict[str, str] | None = None,
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
    margin = launch.signal_lead_s + 60.0
    mono_now = time.monotonic() if now is None else now
    if time_left_s is not None:
        return mono_now + time_left_s - margin
    try:
        limit_s = parse_slurm_time(launch.time)
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
        job: The whole job (this is a workload's entry point).
        resume: A run folder, a checkpoint, ``auto`` (see :func:`latest_resumable`) or None.
        run_parent: The folder the run folder is created in (None: ``launch.run_dir``).
        stop_after: End as if interrupted once this many steps are done (None: run to the end).
        log_format: ``auto``, ``rich``, ``plain`` or ``off`` (see :mod:`harness.outputs.logs`).
        log_interval_s: Seconds between plain progress lines (see :class:`TrainProgress`).

    Raises:
        UserError: bad data or job for this world size, a diverged loss (after keeping the
            last good checkpoint), or a missing engine.
    """
    # From here a SIGTERM or SIGUSR1 (mpirun passing on a Ctrl-C, a Slurm cancel) ends the run
    # said in train.log: during start-up at once, later at a step boundary with a checkpoint.
    # With the default action a rank still starting up died silently (an empty train.log).
    with StopSignals(starting=True) as signals:
        return _train(job, signals, resume=resume, run_parent=run_parent,
                      stop_after=stop_after, log_format=log_format,
                      log_interval_s=log_interval_s)


def _train(job: JobConfig, signals: StopSignals, *, resume: str | None, run_parent: str | None,
           stop_after: int | None, log_format: str, log_interval_s: float) -> dict[str, Any]:
    """:func:`train` under its stop signals."""
    from power.backends import resolve_backend

    info, comm = get_dist_info(), get_comm()
    watchdog.current().configure(job.train.collective_timeout_s)
    job = dataclasses.replace(job, power=resolve_backend(job.power))
    threads = set_threads(job.train.threads_per_rank, info)
    device = resolve_device(job.train.device, info)
    train_set = load_pairs(job.data.train, job.data.lr_kernel)
    val_set = load_pairs(job.data.val, job.data.lr_kernel)
    check_split(len(train_set), job.train.batch_size, info.world_size, job.data.train)
    if job.train.tensorboard:
        check_tensorboard()
    refuse_overlap(train_set, val_set, job.data, info, comm)
    # A stop signal while the run folder is made is held until train.log is open, so a folder
    # never stays without the line saying how its run ended (a Ctrl-C there left none).
    held = HeldSignals().__enter__()
    try:
        run_dir, resume_ckpt, init_path = _open_run(job, info, comm, resume, run_parent)
    except BaseException:
        held.release(replay=False)
        raise
    with RunLog(run_dir / "train.log" if info.is_master else None, describe=_why_ended):
        held.release()
        slurm = slurm_job()
        if slurm is not None and info.is_master:
            log.info("Slurm job %s attempt %d (SLURM_RESTART_COUNT=%d) on %s", slurm.job_id,
                     slurm.attempt, slurm.restart_count, slurm.nodelist or slurm.node)
        write_manifest(run_dir, job, info, comm, device=device, threads=threads,
                       extra={"train_pairs": len(train_set), "val_pairs": len(val_set),
                              "backend": job.train.backend})
        engine = build_engine(info, comm, device, train=job.train, model_cfg=job.model,
                              loss=job.loss, evaluation=job.eval, init_path=init_path)
        trainer = Trainer(job, info, steps_comm(comm, torch_timeout_s(
            timeout_from_env(job.train.collective_timeout_s))), engine, train_set,
            val_set, run_dir)
        if resume_ckpt is not None:
            trainer.restore(resume_ckpt)
        trainer.time_left_at = time.monotonic()
        trainer.time_left_s = slurm_time_left(job.launch, comm)
        summary = _run(trainer, log_format, log_interval_s, stop_after, signals)
    shutdown_torch_distributed()
    return summary


def refuse_overlap(train_set: PairSet, val_set: PairSet, data: DataConfig, info: DistInfo,
                   comm: Comm) -> None:
    """Refuse to train on faces the run validates on (rank 0 hashes them, every rank stops).

    Raises:
        UserError: a validation face is also a training face (named).
    """
    from harness.data.overlap import overlap_message, shared_faces

    message = None
    if info.is_master:
        shared = shared_faces(train_set, val_set)
        if shared:
            message = overlap_message(shared, data.train, data.val, len(val_set))
    message = comm.bcast(message)
    if message is not None:
        raise UserError(message)


def _why_ended(exc: BaseException) -> str | None:
    """Return the line ``train.log`` ends with when training raised.

    The line ``train.log`` ends with when training raised: a lost node or rank named as
    the command names it, a user error's own line; anything else in the exception's words.
    """
    if isinstance(exc, (UserError, StoppedInStartUp)):
        return str(exc)
    return describe_peer_loss(exc)


def _run(trainer: Trainer, log_format: str, log_interval_s: float,
         stop_after: int | None, signals: StopSignals) -> dict[str, Any]:
    """Steps, final validation and checkpoint, summary (inside the power session)."""
    from harness.cluster.watchdog import on_stall
    from power.session import power_session

    job, info, run_dir = trainer.job, trainer.info, trainer.run_dir
    planned = _planned(job.power)
    if planned is not None and info.is_master:  # what the plan predicts, before the run
        update_manifest(run_dir, {"plan": plan_vs_achieved(planned).to_dict(achieved=False)})
    mode = choose_log_format(log_format, info.launcher) if info.is_master else "off"
    trainer.engine.wrapped.train()
    trainer.last_saved = ckpt.latest(trainer.ckpt_dir)
    with trainer.watchdog, \
            power_session(job.power, info, trainer.comm, run_dir, on_stall=on_stall) as power:
        display = TrainProgress(mode, total=trainer.job.train.steps, start=trainer.start_step,
                                batch_size=job.train.batch_size, interval_s=log_interval_s,
                                power=power.live)
        try:
            with display:
                signals.starting = False  # from the first step on: stop at a step boundary
                ended = trainer.loop(power, display, stop_after, signals)
                trainer.watchdog.disarm("the end of training")
                phases = PowerPhaseHook(power)
                if not ended.interrupted and not ended.at_target:
                    phases.on_phase(VALIDATION)
                    trainer.validate(ended.final_step)
                phases.on_phase(CHECKPOINT)
                trainer.save(ended.final_step)
                elapsed = time.perf_counter() - ended.t_start
        finally:
            trainer.batches.close()
    # After the session: the figures cover the governed window up to the restore.
    power_summary = power.summary(ended.images)
    trainer.metrics.close()
    if trainer.scalars is not None:
        trainer.scalars.close()
    summary = trainer.summary(ended, elapsed, power_summary)
    versus = None if planned is None else plan_vs_achieved(  # beside what the run achieved
        planned, images_per_s=summary["images_per_s"],
        cluster_w=power_summary.get("avg_cluster_w"))
    if versus is not None:
        summary["plan"] = versus.to_dict()
    if info.is_master:
        check_run_folder(run_dir)
        write_json_atomic(run_dir / "summary.json", summary)
        print_summary(summary)
        if versus is not None:
            log.info("%s", versus.line())
        if ended.interrupted and summary["stopped_by"]:
            log.warning("stopped by %s after step %d; checkpoint %s; continue with "
                        "--resume %s", summary["stopped_by"], summary["steps"],
                        summary["checkpoint"], run_dir)
        elif ended.out_of_time:
            log.warning("reached %s after step %d of %d: the run ended there, validated and "
                        "checkpointed; continue with --resume %s", ended.out_of_time,
                        summary["steps"], trainer.job.train.steps, run_dir)
    return summary


def _planned(power: PowerConfig) -> LaunchPlan | None:
    """The power plan the job was launched with (``harness launch --plan``), else None.

    Raises:
        UserError: the plan named is missing or invalid.
    """
    from power.plan import PlanError, plan_in_use

    try:
        return plan_in_use(power.plan)
    except PlanError as exc:
        raise UserError(f"power.plan: {exc}") from None
