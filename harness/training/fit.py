"""Fitting ``train.steps`` to the machine (``train.fit_to_minutes``).

A job's step count is chosen on some machine; on a slower one the run reaches ``train.max_minutes``
(or the Slurm time limit) mid-schedule: the cosine never decays and the last steps run at a high
learning rate. With ``train.fit_to_minutes: true`` a new run times :data:`TIMED_STEPS` steps (and at
least :data:`TIMED_FRACTION` of the time limit) after the first :data:`SKIP_STEPS` (lazy
initialisation) and one validation pass on rank 0, and :func:`fit_plan` works out how many steps fit
in the time left after the validations and checkpoints the run will still make. When fewer than
planned fit, the run trains that many instead, with the schedule (cosine/step over the fitted steps;
a warm-up longer than a quarter of them shortened), ``val_every`` and ``ckpt_every`` scaled by the
same factor, so the run makes as many validations and checkpoints as planned and ends on time with a
completed schedule. The :class:`FitPlan` is broadcast from rank 0 so that every rank trains the same
steps, recorded in ``manifest.json`` (``fit``), ``summary.json``
(``planned_steps``, ``fit``) and every checkpoint, and a resumed run keeps it (no re-fitting).

The step time is measured while caches (HR embeddings) still fill, and on a shared machine
it varies: ``train.fit_margin`` of the time is left unplanned, and the run's deadline stays the
safety net (it still stops a run that turns out slower than timed).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

from harness.config import TrainConfig

log = logging.getLogger(__name__)

SKIP_STEPS = 2
"""Steps of a new run not timed (lazy initialisation, first allocations)."""
TIMED_STEPS = 5
"""Steps timed after :data:`SKIP_STEPS`, at least."""
TIMED_FRACTION = 0.05
"""Fraction of the time limit the timing lasts, at least (a few steps of a fast model are
too short a sample of a shared machine)."""


@dataclass(frozen=True)
class FitPlan:
    """The outcome of fitting: what was planned, what the run trains, and why."""

    planned_steps: int
    """``train.steps`` of the job."""
    fitted_steps: int
    """Steps the run trains (``planned_steps`` when they fit)."""
    steps_per_s: float
    """Measured training rate (rank 0's clock, collectives included)."""
    at_step: int
    """The step after which the plan was made."""
    budget_s: float
    """Seconds of training the limit allows, from the start of the loop."""
    validation_s: float
    """Seconds one validation pass took."""
    checkpoint_s: float
    """Seconds one checkpoint is estimated to take."""
    estimate_s: float
    """Seconds the planned steps would have taken (validations and checkpoints included)."""
    limit: str
    """The limit fitted to: ``train.max_minutes (8)`` or ``the Slurm time limit``."""
    val_every: int
    ckpt_every: int
    warmup_steps: int
    planned_val_every: int
    planned_ckpt_every: int
    planned_warmup_steps: int

    @property
    def lowered(self) -> bool:
        """Whether the run trains fewer steps than planned."""
        return self.fitted_steps < self.planned_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (``manifest.json``, ``summary.json``, checkpoints)."""
        return {**dataclasses.asdict(self), "lowered": self.lowered}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FitPlan:
        """The plan :meth:`to_dict` wrote (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


def _count(steps: int, every: int) -> int:
    """Intermediate events (validations, checkpoints) a run of ``steps`` makes every ``every``."""
    return (steps - 1) // every if every else 0


def _scaled(every: int, fitted: int, planned: int) -> int:
    """``every`` scaled by fitted/planned, rounded up so that no more events happen."""
    return max(1, math.ceil(every * fitted / planned)) if every else 0


def fit_plan(t: TrainConfig, *, done: int, elapsed_s: float, step_s: float,
             validation_s: float, checkpoint_s: float, budget_s: float,
             limit: str) -> FitPlan:
    """How many steps of ``t`` fit in ``budget_s`` after ``done`` steps in ``elapsed_s``.

    Args:
        t: The job's training section (``steps``, ``val_every``, ``ckpt_every``, warm-up).
        done: Steps trained so far (the first :data:`SKIP_STEPS` + :data:`TIMED_STEPS`).
        elapsed_s: Seconds since the loop started (the probe validation included).
        step_s: Measured seconds per step.
        validation_s: Measured seconds of one validation pass.
        checkpoint_s: Estimated seconds of one checkpoint.
        budget_s: Seconds the limit allows from the loop's start.
        limit: What the limit is, for messages (``train.max_minutes (8)``).

    Returns:
        The plan; ``fitted_steps == t.steps`` when the planned steps fit, else at least
        ``done + 1``.
    """
    planned = t.steps
    # Every validation and checkpoint still to come: the intermediate ones keep their number
    # (the cadence scales with the steps), and the final of each.
    reserve = ((_count(planned, t.val_every) + 1) * validation_s
               + (_count(planned, t.ckpt_every) + 1) * checkpoint_s)
    estimate = elapsed_s + (planned - done) * step_s + reserve
    # The margin (train.fit_margin) is left unplanned: a later, slower phase still ends in time.
    usable = budget_s * (1.0 - t.fit_margin)
    fitted = planned
    if estimate > usable:
        left = math.floor((usable - elapsed_s - reserve) / step_s) if step_s > 0 else 0
        fitted = min(planned, done + max(left, 1))
    val_every, ckpt_every, warmup = t.val_every, t.ckpt_every, t.warmup_steps
    if fitted < planned:
        val_every = _scaled(t.val_every, fitted, planned)
        ckpt_every = _scaled(t.ckpt_every, fitted, planned)
        if warmup > done and 4 * warmup > fitted:
            warmup = max(done, fitted // 4)
    return FitPlan(planned_steps=planned, fitted_steps=fitted,
                   steps_per_s=1.0 / step_s if step_s > 0 else math.inf, at_step=done,
                   budget_s=budget_s, validation_s=validation_s, checkpoint_s=checkpoint_s,
                   estimate_s=estimate, limit=limit, val_every=val_every,
                   ckpt_every=ckpt_every, warmup_steps=warmup,
                   planned_val_every=t.val_every, planned_ckpt_every=t.ckpt_every,
                   planned_warmup_steps=t.warmup_steps)


def apply_plan(t: TrainConfig, plan: FitPlan) -> TrainConfig:
    """``t`` with the plan's steps, cadences and warm-up."""
    return dataclasses.replace(t, steps=plan.fitted_steps, val_every=plan.val_every,
                               ckpt_every=plan.ckpt_every, warmup_steps=plan.warmup_steps)


def _minutes(seconds: float) -> str:
    m = seconds / 60.0
    return f"{m:.0f}" if m >= 10 else f"{m:.1f}" if m >= 0.1 else f"{m:.2g}"


def _rate(steps_per_s: float) -> str:
    return f"{steps_per_s:.2g}" if steps_per_s < 10 else f"{steps_per_s:.0f}"


def plan_message(plan: FitPlan) -> str:
    """The one log line that says what fitting decided."""
    head = (f"this machine runs {_rate(plan.steps_per_s)} steps/s: {plan.planned_steps} steps "
            f"would take {_minutes(plan.estimate_s)} min")
    if not plan.lowered:
        return f"{head}, within {_limit_minutes(plan)}; training all {plan.planned_steps}"
    changed = [f"{name} {old} -> {new}" for name, old, new in (
        ("val_every", plan.planned_val_every, plan.val_every),
        ("ckpt_every", plan.planned_ckpt_every, plan.ckpt_every),
        ("warmup_steps", plan.planned_warmup_steps, plan.warmup_steps)) if old != new]
    return (f"{head} > {_limit_minutes(plan)}; training {plan.fitted_steps} steps instead "
            f"(schedule over {plan.fitted_steps}" + "".join(f", {c}" for c in changed) + ")")


def _limit_minutes(plan: FitPlan) -> str:
    """``train.max_minutes 8`` (as the README says it) or ``the Slurm time limit (12 min)``."""
    if plan.limit.startswith("train.max_minutes (") and plan.limit.endswith(")"):
        return "train.max_minutes " + plan.limit[len("train.max_minutes ("):-1]
    return f"{plan.limit} ({_minutes(plan.budget_s)} min)"
