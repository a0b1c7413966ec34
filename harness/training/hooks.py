"""The training loop's side work around each step, behind one typed hook protocol.

:meth:`harness.training.loop.Trainer.loop` runs the step, and calls a :class:`HookSet` before
it (:meth:`StepHook.on_step_start`) and after it (:meth:`StepHook.on_step_end`, with a
:class:`StepEnd`). The hooks here: the stall watchdog's heartbeat, the power session's image
count, the ``metrics.jsonl`` line and the progress display, in that order. What all ranks must
decide together (validation, checkpoints, fitting the steps, stopping) stays in the loop, which
announces each of those phases to the hooks that take phases (:class:`PhaseHook`,
:meth:`HookSet.on_phase`): the power session's governor holds its caps through them and
simulated GPUs follow them (:mod:`power.phases`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from harness.cluster.watchdog import StallWatchdog
from harness.outputs.run_folders import MetricsLog
from harness.training.progress import TrainProgress
from power.phases import TRAIN


@dataclass(frozen=True, slots=True)
class StepEnd:
    """What one finished step hands its hooks.

    Attributes:
        done: Steps done (the step just finished is ``done - 1``).
        steps: ``train.steps`` now (fitting may lower it during the run).
        log_every: ``train.log_every``.
        lr: The learning rate this step ran with.
        terms: The loss terms, averaged over ranks.
        step_time_s: Seconds the step took on this rank.
        batch_size: The global batch (``train.batch_size``).
        rank_images: Images this rank trained on in the step.
        images: Images trained on in this start so far, over all ranks.
        elapsed_s: Seconds since the loop started.
        val_is: The last validation IS, if any.
    """

    done: int
    steps: int
    log_every: int
    lr: float
    terms: dict[str, float]
    step_time_s: float
    batch_size: int
    rank_images: int
    images: int
    elapsed_s: float
    val_is: float | None


class StepHook(Protocol):
    """Side work at the start and the end of each training step (no collectives)."""

    def on_step_start(self, step: int) -> None:
        """Before step ``step`` (0-based) runs."""

    def on_step_end(self, end: StepEnd) -> None:
        """After a step, with what it did."""


@runtime_checkable
class PhaseHook(Protocol):
    """A hook that is also told when the loop enters a phase (validation, checkpoint...)."""

    def on_phase(self, phase: str) -> None:
        """The loop enters ``phase`` (one of :data:`power.phases.PHASES`)."""


class HookSet:
    """Hooks called in order.

    Args:
        hooks: The hooks, called in this order at both points (and, for those that are
            :class:`PhaseHook`, at each phase).
    """

    def __init__(self, hooks: Sequence[StepHook]) -> None:
        self.hooks = list(hooks)

    def on_phase(self, phase: str) -> None:
        """Calls every :class:`PhaseHook`'s :meth:`PhaseHook.on_phase`."""
        for hook in self.hooks:
            if isinstance(hook, PhaseHook):
                hook.on_phase(phase)

    def on_step_start(self, step: int) -> None:
        """Calls every hook's :meth:`StepHook.on_step_start`."""
        for hook in self.hooks:
            hook.on_step_start(step)

    def on_step_end(self, end: StepEnd) -> None:
        """Calls every hook's :meth:`StepHook.on_step_end`."""
        for hook in self.hooks:
            hook.on_step_end(end)


class WatchdogHook:
    """Arms the stall watchdog for each step (its deadline covers the step's collectives)."""

    def __init__(self, watchdog: StallWatchdog) -> None:
        self.watchdog = watchdog

    def on_step_start(self, step: int) -> None:
        """Arms the watchdog for step ``step + 1``."""
        self.watchdog.arm(step + 1)

    def on_step_end(self, end: StepEnd) -> None:
        """Nothing: the next step (or the loop's end) re-arms or disarms it."""


class PowerImagesHook:
    """Counts the images trained on in the power session (summed over ranks at the end)."""

    def __init__(self, power: PowerCounter) -> None:
        self.power = power

    def on_step_start(self, step: int) -> None:
        """Nothing."""

    def on_step_end(self, end: StepEnd) -> None:
        """Adds this rank's images and the job total so far."""
        self.power.add_images(end.rank_images, job_total=end.images)


class PowerPhaseHook:
    """Announces the loop's phase to the power session.

    Training at each step's start; validation, checkpoints and evaluation when the loop enters
    them (:meth:`HookSet.on_phase`).
    """

    def __init__(self, power: PhaseListener) -> None:
        self.power = power

    def on_step_start(self, step: int) -> None:
        """Training (a repeated phase is no change for the session)."""
        self.power.announce(TRAIN)

    def on_step_end(self, end: StepEnd) -> None:
        """Nothing."""

    def on_phase(self, phase: str) -> None:
        """Announces ``phase``."""
        self.power.announce(phase)


class PhaseListener(Protocol):
    """The part of a power session the phase hook uses."""

    def announce(self, phase: str) -> None:
        """The workload enters ``phase``."""


class PowerCounter(Protocol):
    """The part of a power session the hook uses."""

    def add_images(self, n: int, *, job_total: int | None = None) -> None:
        """Counts ``n`` images of this rank (and the job's running total)."""


class MetricsHook:
    """Writes a ``train`` record to ``metrics.jsonl`` every ``log_every`` steps and at the end."""

    def __init__(self, metrics: MetricsLog) -> None:
        self.metrics = metrics

    def on_step_start(self, step: int) -> None:
        """Nothing."""

    def on_step_end(self, end: StepEnd) -> None:
        """The record of step ``end.done`` when it is due."""
        if end.done % end.log_every == 0 or end.done == end.steps:
            self.metrics.write({"kind": "train", "step": end.done, "lr": end.lr,
                                "loss": end.terms, "step_time_s": end.step_time_s,
                                "images_per_s": end.batch_size / end.step_time_s,
                                "time_s": end.elapsed_s})


class DisplayHook:
    """Updates the progress display (bar or plain lines) after each step."""

    def __init__(self, display: TrainProgress) -> None:
        self.display = display

    def on_step_start(self, step: int) -> None:
        """Nothing."""

    def on_step_end(self, end: StepEnd) -> None:
        """Steps done, the total loss and the last validation IS."""
        self.display.update(end.done, end.terms.get("total", float("nan")), end.val_is)
