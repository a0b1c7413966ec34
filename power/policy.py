"""The capping policy: a pure function from cluster readings to new per-GPU caps.

:func:`decide` holds no state and reads no clock: everything it needs arrives as arguments
(the present limits are part of the readings), so it is tested exhaustively without hardware.
Every node of a governed cluster runs it on the same all-gathered readings and therefore reaches
the same decision; each node then applies the caps of its own GPUs.

Rules, in order:

1. **Fail-safe.** If any GPU's power reading is missing or older than ``stale_after_s`` (or the
   other node power is unknown), every GPU drops to a safe cap (its minimum limit unless
   ``safe_limit_w`` says otherwise) and the decision says why.
2. **Rebalance (budget-neutral).** If per-GPU busy (step compute) times are known, the
   straggler(s) get more power and the faster GPUs less, in proportion to how far each one's
   busy time is from the mean; GPUs drawing clearly less than their cap hand part of the unused
   slack back to the pool.
3. **Cut fast.** If the measured cluster power exceeds ``budget_w - headroom_w`` the excess is
   removed at once: caps go to the present draw minus a share of the excess proportional to
   how far each GPU is above its minimum. Independently, the sum of caps is always brought down
   to the GPU budget (``budget_w - headroom_w - other_power_w``), so when every GPU runs flat
   out the driver alone keeps the cluster under the budget.
4. **Raise slowly.** Unallocated GPU budget goes, at most ``raise_step_fraction`` of each GPU's
   limit range per call, to GPUs whose draw is at their cap (the ones that can use it).

In ``clocks`` mode the same power allocation is computed (``limit_w`` of a reading is
then the governor's soft allocation, not a hardware limit) and translated into a locked
maximum clock using ``P ~ f ** clock_exponent`` around the present operating point; clock
increases are rate-limited like limit increases.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from power.config import check_budget

MODES = ("power_limit", "clocks")

STEADY = "steady"
RAISE = "raise"
REBALANCE = "rebalance"
BUDGET_SHRINK = "budget_shrink"
OVERSHOOT = "overshoot"
INFEASIBLE = "infeasible"
FAIL_SAFE = "fail_safe"


@dataclass(frozen=True, kw_only=True, slots=True)
class GpuReading:
    """One GPU's state as the policy sees it. Units: W, s, MHz."""

    node: int
    """Rank of the node (governor) that owns the GPU."""
    gpu: int
    """Index of the GPU on its node."""
    power_w: float | None
    """Latest power draw, or None if it could not be read."""
    limit_w: float
    """Present power limit (``clocks`` mode: the present soft allocation)."""
    min_limit_w: float
    """Lowest settable limit."""
    max_limit_w: float
    """Highest settable limit."""
    age_s: float = 0.0
    """Age of ``power_w`` when the readings were gathered."""
    busy_s: float | None = None
    """Compute time of the last training step on this GPU (sync wait excluded), if known."""
    utilization_percent: float | None = None
    """NVML utilisation, if known (informational)."""
    clock_mhz: float | None = None
    """Present graphics clock (needed in ``clocks`` mode)."""
    locked_max_clock_mhz: float | None = None
    """Present upper clock lock, None if unlocked."""
    min_clock_mhz: float | None = None
    """Lowest supported graphics clock (``clocks`` mode)."""
    max_clock_mhz: float | None = None
    """Highest supported graphics clock (``clocks`` mode)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyConfig:
    """Tuning of :func:`decide`. Fractions of a GPU's limit range are per call (period)."""

    stale_after_s: float = 1.0
    """Readings older than this trigger the fail-safe."""
    near_limit_fraction: float = 0.05
    """A GPU drawing at least ``limit * (1 - this)`` counts as held back by its cap."""
    raise_step_fraction: float = 0.02
    """Largest cap increase per call, as a fraction of the GPU's limit range."""
    donate_fraction: float = 0.2
    """Share of an uncapped GPU's unused headroom under its cap returned per call."""
    straggler_gain: float = 1.0
    """Cap shift per unit of relative busy-time deviation, as a fraction of the range."""
    straggler_tolerance: float = 0.02
    """Relative busy-time deviations below this are ignored."""
    max_shift_fraction: float = 0.04
    """Largest straggler shift per call, as a fraction of the GPU's limit range."""
    safe_limit_w: float | None = None
    """Fail-safe cap per GPU (clamped to its range); None means its minimum limit."""
    clock_exponent: float = 2.0
    """Assumed ``P ~ f ** clock_exponent`` when converting power to a clock lock."""

    def __post_init__(self) -> None:
        for name in ("stale_after_s", "raise_step_fraction", "max_shift_fraction",
                     "clock_exponent"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PolicyConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("near_limit_fraction", "donate_fraction", "straggler_tolerance"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"PolicyConfig.{name} must be in [0, 1), got "
                                 f"{getattr(self, name)}")
        if self.straggler_gain < 0:
            raise ValueError(f"PolicyConfig.straggler_gain must be >= 0, got {self.straggler_gain}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` returns, in the order of the readings it was given."""

    limits_w: tuple[float, ...]
    """New power limit (``clocks`` mode: soft allocation) per GPU. Units: W."""
    clocks_mhz: tuple[float, ...] | None
    """New upper clock lock per GPU in ``clocks`` mode, else None. Units: MHz."""
    reason: str
    """The dominant rule: steady, raise, rebalance, budget_shrink, overshoot, infeasible or
    fail_safe."""
    messages: tuple[str, ...]
    """Human-readable explanations (why a fail-safe, what was infeasible)."""
    cluster_power_w: float | None
    """Measured cluster power (GPUs + other), None when unknown."""
    target_w: float
    """``budget_w - headroom_w``."""

    @property
    def fail_safe(self) -> bool:
        """True when the safe cap was applied."""
        return self.reason == FAIL_SAFE


def _cut(values: np.ndarray, floor: np.ndarray, amount: float) -> np.ndarray:
    """Lower ``values`` by ``amount`` in total, in proportion to how far each is above ``floor``."""
    room = np.maximum(values - floor, 0.0)
    total = float(room.sum())
    if amount <= 0 or total <= 0:
        return values.copy()
    return values - room * min(1.0, amount / total)


def _validate(budget_w: float, headroom_w: float, readings: Sequence[GpuReading],
              mode: str) -> None:
    check_budget(budget_w, headroom_w)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not readings:
        raise ValueError("readings must not be empty")
    for r in readings:
        if not 0 < r.min_limit_w <= r.max_limit_w:
            raise ValueError(f"node {r.node} GPU {r.gpu}: bad limit range "
                             f"[{r.min_limit_w}, {r.max_limit_w}] W")
        if mode == "clocks" and (r.min_clock_mhz is None or r.max_clock_mhz is None):
            raise ValueError(f"node {r.node} GPU {r.gpu}: clocks mode needs the clock "
                             "range in the readings")


def _is_stale(r: GpuReading, stale_after_s: float) -> bool:
    return r.power_w is None or not math.isfinite(r.power_w) or r.age_s > stale_after_s


def decide(*, budget_w: float, headroom_w: float, readings: Sequence[GpuReading],
           other_power_w: float | None, mode: str = "power_limit",
           config: PolicyConfig = PolicyConfig()) -> Decision:
    """Compute new caps that keep the cluster under ``budget_w - headroom_w``.

    Args:
        budget_w: Cluster power budget. Units: W.
        headroom_w: Margin kept below the budget for noise and reaction time. Units: W.
        readings: Every GPU of the cluster, in a fixed order (node, then GPU).
        other_power_w: Everything else the budget covers: CPUs, DRAM, fans, NICs, switch.
            None if unknown (triggers the fail-safe).
        mode: ``"power_limit"`` or ``"clocks"``.
        config: Tuning constants.

    Returns:
        The new caps and why they were chosen.

    Raises:
        ValueError: Invalid budget, headroom, mode or readings.
    """
    _validate(budget_w, headroom_w, readings, mode)
    cfg = config
    lo = np.array([r.min_limit_w for r in readings], dtype=float)
    hi = np.array([r.max_limit_w for r in readings], dtype=float)
    lim = np.clip(np.array([r.limit_w for r in readings], dtype=float), lo, hi)
    target = budget_w - headroom_w

    stale = [r for r in readings if _is_stale(r, cfg.stale_after_s)]
    if stale or other_power_w is None or not math.isfinite(other_power_w):
        return _fail_safe(readings, stale, lo, hi, target, mode, cfg)

    p = np.array([r.power_w for r in readings], dtype=float)
    other = float(other_power_w)
    measured = float(p.sum()) + other
    capped = p >= lim * (1.0 - cfg.near_limit_fraction)
    reasons: list[str] = []
    new, rel = _rebalance(readings, p, lim, lo, hi, capped, cfg, reasons)
    messages = _fit_budget(new, p, lim, lo, hi, capped, rel, cfg, reasons, measured=measured,
                           target=target, other=other)

    clocks = None
    if mode == "clocks":
        clocks = tuple(_clock_for(r, float(pw), float(a), cfg)
                       for r, pw, a in zip(readings, p, new, strict=True))
    return Decision(tuple(float(v) for v in new), clocks, reasons[0] if reasons else STEADY,
                    tuple(messages), measured, target)


def _fail_safe(readings: Sequence[GpuReading], stale: Sequence[GpuReading], lo: np.ndarray,
               hi: np.ndarray, target: float, mode: str, cfg: PolicyConfig) -> Decision:
    """Every GPU at the safe cap: readings are stale or missing, or other power is unknown."""
    safe = lo if cfg.safe_limit_w is None else np.clip(cfg.safe_limit_w, lo, hi)
    parts = [f"node {r.node} GPU {r.gpu} ("
             + ("no reading" if r.power_w is None else f"{r.age_s:.2f} s old") + ")"
             for r in stale[:8]]
    if len(stale) > 8:
        parts.append(f"and {len(stale) - 8} more")
    msg = ("stale or missing power readings: " + ", ".join(parts)) if stale else (
        "other node power unknown")
    clocks = (tuple(float(r.min_clock_mhz) for r in readings)  # type: ignore[arg-type]
              if mode == "clocks" else None)
    return Decision(tuple(float(v) for v in safe), clocks, FAIL_SAFE,
                    (msg + f"; safe cap applied to all {len(readings)} GPUs",), None, target)


def _rebalance(readings: Sequence[GpuReading], p: np.ndarray, lim: np.ndarray, lo: np.ndarray,
               hi: np.ndarray, capped: np.ndarray, cfg: PolicyConfig, reasons: list[str]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Move caps towards stragglers and away from GPUs below their cap.

    Caps moved towards stragglers and away from GPUs below their cap; (caps, relative
    lateness of each GPU).
    """
    span = hi - lo
    new = lim.copy()
    rel = np.zeros(len(readings))
    busy = [r.busy_s for r in readings]
    if len(readings) > 1 and all(b is not None and b > 0 for b in busy):
        b = np.array(busy, dtype=float)
        rel = b / b.mean() - 1.0
        rel[np.abs(rel) < cfg.straggler_tolerance] = 0.0
        if rel.any():
            limit_shift = cfg.max_shift_fraction * span
            new += np.clip(cfg.straggler_gain * rel * span, -limit_shift, limit_shift)
            reasons.append(REBALANCE)
    slack = np.where(capped, 0.0, np.maximum(lim * (1.0 - cfg.near_limit_fraction) - p, 0.0))
    new -= cfg.donate_fraction * slack
    return np.clip(new, lo, hi), rel


def _fit_budget(new: np.ndarray, p: np.ndarray, lim: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, capped: np.ndarray, rel: np.ndarray, cfg: PolicyConfig,
                reasons: list[str], *, measured: float, target: float, other: float
                ) -> list[str]:
    """Fit the caps into the budget; returns the messages.

    Cut ``new`` (in place) when the cluster is over target or the caps exceed the GPUs'
    share, else raise capped GPUs into the room left; returns the messages.
    """
    messages: list[str] = []
    gpu_budget = target - other
    span = hi - lo
    if measured > target:
        excess = measured - target
        new[:] = np.maximum(_cut(np.minimum(new, np.maximum(p, lo)), lo, excess), lo)
        reasons.insert(0, OVERSHOOT)
        messages.append(f"cluster {measured:.0f} W over target {target:.0f} W: cut {excess:.0f} W")
    if new.sum() > gpu_budget:
        if lim.sum() > gpu_budget and OVERSHOOT not in reasons:
            reasons.insert(0, BUDGET_SHRINK)
        new[:] = np.maximum(_cut(new, lo, float(new.sum()) - gpu_budget), lo)
        if lo.sum() > gpu_budget:
            reasons.insert(0, INFEASIBLE)
            messages.append(f"minimum limits ({lo.sum():.0f} W) + other power ({other:.0f} W) "
                            f"exceed the target {target:.0f} W")
    elif OVERSHOOT not in reasons:
        room = gpu_budget - float(new.sum())
        want = capped & (new < hi)
        inc = np.where(want, np.minimum(cfg.raise_step_fraction * span * (1.0 + np.maximum(rel, 0)),
                                        hi - new), 0.0)
        if inc.sum() > room:
            inc *= max(room, 0.0) / inc.sum()
        if inc.sum() > 1e-9:
            new += inc
            reasons.append(RAISE)
    return messages


def _clock_for(r: GpuReading, power_w: float, alloc_w: float, cfg: PolicyConfig) -> float:
    """Upper clock lock that should bring ``power_w`` to ``alloc_w``."""
    f_lo, f_hi = float(r.min_clock_mhz), float(r.max_clock_mhz)  # type: ignore[arg-type]
    current = r.locked_max_clock_mhz if r.locked_max_clock_mhz is not None else (
        r.clock_mhz if r.clock_mhz is not None else f_hi)
    ratio = alloc_w / max(power_w, 1e-3)
    f = current * ratio ** (1.0 / cfg.clock_exponent)
    f = min(f, current + cfg.raise_step_fraction * (f_hi - f_lo))
    return float(min(max(f, f_lo), f_hi))
