"""Known load steps: the phase a workload announces, what it does to simulated GPUs, and holds.

A training run changes its GPUs' load at moments it knows in advance: the start (the GPUs wait
for the first step), validation and evaluation (a forward-only pass, lighter and input-bound),
a checkpoint (the GPUs wait while the state is copied off and written). The workload announces
each phase (:meth:`PhaseBoard.announce`, through the training loop's typed hooks and the power
session); the board is read by

* the simulated GPUs (:class:`PhasedLoad`), whose load follows the phase, so the simulator
  shows these steps at the wall as a real node does;
* the governor (:meth:`PhaseBoard.holding`): through a phase that only lowers the load
  (:data:`HOLD_PHASES`) it keeps the caps that held the wall before it, instead of letting them
  follow the GPUs' lower draw down and ramping them back up afterwards
  (:func:`hold_policy`).

Pure pieces and a small thread-safe holder; no import-time side effects.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from power.pdu import RackWallModel
from power.policy import PolicyConfig
from power.simulated import Load, LoadPoint

START = "start"
TRAIN = "train"
VALIDATION = "validation"
CHECKPOINT = "checkpoint"
EVALUATION = "evaluation"

#: Every phase a workload may announce.
PHASES: tuple[str, ...] = (START, TRAIN, VALIDATION, CHECKPOINT, EVALUATION)

#: Phases whose GPU load is at most the training load: the governor holds the caps through
#: them (the draw falls, the caps that held the wall before stay valid when training resumes).
HOLD_PHASES: frozenset[str] = frozenset({VALIDATION, CHECKPOINT, EVALUATION})

#: What a simulated GPU does in each phase other than training (training follows the base
#: load): idle while the run starts and while a checkpoint is written; a forward-only,
#: input-bound pass (about half the training activity, mostly memory-bound) in validation and
#: evaluation.
SIM_PHASE_LOADS: dict[str, LoadPoint] = {
    START: LoadPoint(0.1, 0.3, 5),
    CHECKPOINT: LoadPoint(0.05, 0.3, 0),
    VALIDATION: LoadPoint(0.45, 0.5, 60),
    EVALUATION: LoadPoint(0.45, 0.5, 60),
}


class PhaseBoard:
    """The phase a workload is in, as announced; thread-safe.

    A phase that lowers the load (:data:`HOLD_PHASES`) lasts at least ``min_s`` seconds: on a
    real GPU node a checkpoint's write or a validation pass takes seconds, whatever it takes on
    the machine simulating the GPUs (``power.sim_phase_s``; 0 follows the announcements only).

    Args:
        min_s: Shortest length of a lowering phase, in s (>= 0).
        clock: Time source in s (default ``time.monotonic``).
        phase: The phase before the first announcement.
    """

    def __init__(self, *, min_s: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 phase: str = START) -> None:
        if min_s < 0:
            raise ValueError(f"PhaseBoard: min_s must be >= 0, got {min_s}")
        _check_phase(phase)
        self.min_s = min_s
        self._clock = clock
        self._lock = threading.Lock()
        self._phase = phase
        self._since = clock()
        self._pending: str | None = None
        self.announced: list[str] = []
        """Every phase change announced, in order (for the record and tests)."""

    def announce(self, phase: str) -> None:
        """The workload enters ``phase`` now (a repeated phase changes nothing).

        Raises:
            ValueError: ``phase`` is not one of :data:`PHASES`.
        """
        _check_phase(phase)
        with self._lock:
            if phase == (self._pending or self._phase):
                return
            self.announced.append(phase)
            now = self._clock()
            if self._phase in HOLD_PHASES and now - self._since < self.min_s:
                self._pending = phase  # the lowering phase is not over yet on the GPUs
                return
            self._phase, self._since, self._pending = phase, now, None

    def phase(self) -> str:
        """The phase in force now (a short lowering phase held to ``min_s``)."""
        with self._lock:
            if (self._pending is not None
                    and self._clock() - self._since >= self.min_s):
                self._phase, self._since = self._pending, self._since + self.min_s
                self._pending = None
            return self._phase

    def holding(self) -> bool:
        """True while the phase in force is one of :data:`HOLD_PHASES`."""
        return self.phase() in HOLD_PHASES


class PhasedLoad:
    """A simulated GPU's load that follows the announced phase.

    Training uses ``base`` (e.g. :func:`power.simulated.noisy_phase_load`); the other phases
    use :data:`SIM_PHASE_LOADS`.
    """

    def __init__(self, base: Load, board: PhaseBoard) -> None:
        self.base = base
        self.board = board

    def __call__(self, t: float) -> LoadPoint:
        """The load at time ``t`` in the phase in force now."""
        point = SIM_PHASE_LOADS.get(self.board.phase())
        return point if point is not None else self.base(t)


def hold_policy(policy: PolicyConfig) -> PolicyConfig:
    """``policy`` for a held phase: GPUs below their cap give none of it back.

    The policy's other rules still apply (a reading over the budget is cut at once; caps are
    raised only for GPUs drawing at them, within the budget).
    """
    return dataclasses.replace(policy, donate_fraction=0.0)


def wall_excess_w(model: RackWallModel, component_w: float, nodes: int) -> float:
    """The wall's excess over ``component_w`` W of components spread evenly over ``nodes``.

    What the run's start (a known step: every GPU from idle to full load at once, before the
    meter has reported) must leave free: the start caps are an even share of the budget less
    this (:func:`power.session._start_wall_excess_w`), and the governor ramps from there.
    """
    nodes = max(nodes, 1)
    return model.wall_w([component_w / nodes] * nodes) - component_w


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
