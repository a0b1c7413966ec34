"""The governor's view of the wall: predicted from the fast sensors, learned from the meter.

:class:`WallEstimator` predicts the rack's wall power each control period from every node's
``(GPU W, other W)`` and knows nothing of the simulator's truth; what it knows of the wall it
has from the meter (values and when they arrived) or from a calibrated
:class:`~power.wall_model.WallModel`:

- **with a model** (``power.wall_model: FILE``): prediction = the model, plus an online
  correction (moving mean of meter - model, each reading lined up with the model's mean over
  the window the reading covers, using the model's measured lag);
- **without**: prediction = ratio x components, the ratio and the meter's lag learned online
  (least squares through the origin over the last readings, at each candidate lag; the lag
  that leaves the smallest residual wins). Until readings arrive it assumes a conservative
  ratio (:data:`START_RATIO`: 80 % efficiency with fans).

The guardband is measured, not guessed: each reading is compared with what the governor
*predicted then* for the window it covers (correction as known at that time, so the meter's
averaging and lag are in the error), and the guard is ``k`` times that error's upper
semi-deviation (moving, :data:`ERROR_WEIGHT`: under-predictions only, over-predicting is
safe; for unbiased Gaussian errors it equals their sd, a bias to under-predict raises it).
Until it has
:data:`MIN_ERRORS` such errors the guard is the start guard: ``k`` x the model's residual
spread, or :data:`START_GUARD_FRACTION` of the budget without a model.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from power.pdu import RackWallModel, WallReading, WallTracker
from power.wall_model import LAG_CANDIDATES_S, WallModel

#: Wall / components assumed before any meter reading without a model (80 % efficient with
#: fans: safer than any 80 PLUS PSU at load).
START_RATIO = 1.25
#: Guard before enough measured errors, without a model, as a fraction of the budget.
START_GUARD_FRACTION = 0.05
#: Measured prediction errors needed before the guard comes from them.
MIN_ERRORS = 5
#: Weight of the newest prediction error in its moving mean and variance (memory of about
#: ten readings: an old transient, e.g. the correction catching up, fades out of the guard).
ERROR_WEIGHT = 0.1
#: Plausible wall / components (the components' CPU estimate may be high; no PSU loses half).
RATIO_RANGE = (0.8, 2.0)
#: The online ratio is fitted to readings whose components were within this fraction of now.
NEAR_FRACTION = 0.15
#: Lags the online learner tries, in s (the meter's delay after its window closes).
ONLINE_LAGS_S: tuple[float, ...] = tuple(x for x in LAG_CANDIDATES_S if x <= 3.0)[::2]


class WallEstimator(WallTracker):
    """Predicted wall minus components for the governor; see the module docstring.

    Args:
        model: A calibrated wall model, or ``None`` to learn the wall online.
        budget_w: The budget (a fault's offset; absurd readings are above 10x it).
        k: Guardband in standard deviations of the measured prediction error.
        window_s: The meter's averaging window (without a model).
        silent_after_s: A meter silent this long is a fault.
        name: The meter, for the log.
        clock: UNIX time source (the same as the meter's arrival times).
    """

    def __init__(self, model: WallModel | None, *, budget_w: float = 3000.0, k: float = 3.0,
                 window_s: float = 1.0, silent_after_s: float = 5.0, name: str = "PDU",
                 clock: Callable[[], float] = time.time, alpha: float = 0.3) -> None:
        super().__init__(RackWallModel(), k=k, alpha=alpha, budget_w=budget_w,
                         silent_after_s=silent_after_s, name=name, clock=clock)
        self.wall_model = model
        self.window_s = model.window_s if model is not None else window_s
        self.lag_s = model.lag_s if model is not None else 1.0
        self.ratio = START_RATIO
        self.readings = 0
        self.start_guard_w = (k * model.residual_sd_w if model is not None
                              else START_GUARD_FRACTION * budget_w)
        # (unix_s, components, model-only prediction, prediction as used then)
        self._hist: deque[tuple[float, float, float, float]] = deque(maxlen=300)
        self._pairs: deque[tuple[float, dict[float, float]]] = deque(maxlen=30)
        self._errors: deque[float] = deque(maxlen=60)
        self._under2 = 0.0

    # --- prediction ---------------------------------------------------------------------
    def _base_w(self, parts: Sequence[tuple[float, float]]) -> float:
        if self.wall_model is not None:
            return self.wall_model.rack_w(parts)
        return self.ratio * sum(g + c for g, c in parts)

    def observe_parts(self, unix_s: float, parts: Sequence[tuple[float, float]]) -> None:
        """Record this period's ``(GPU W, other W)`` of every node and predict the wall."""
        components = sum(g + c for g, c in parts)
        base = self._base_w(parts)
        predicted = base + (self.correction_w if self.wall_model is not None else 0.0)
        self._hist.append((unix_s, components, base, predicted))
        self._excess_w = predicted - components

    def observe(self, unix_s: float, node_component_w: Sequence[float]) -> None:
        """Like :meth:`observe_parts` with each node's power counted as GPU power."""
        self.observe_parts(unix_s, [(w, 0.0) for w in node_component_w])

    def _window_mean(self, end: float, column: int) -> float | None:
        start = end - self.window_s
        inside = [h[column] for h in self._hist if start <= h[0] < end]
        return sum(inside) / len(inside) if inside else None

    # --- correction ---------------------------------------------------------------------
    def correct(self, reading: WallReading) -> None:
        """Fold in one meter reading, aligned by its arrival time and the (measured) lag.

        A negative, non-finite or absurd reading (above 10x the budget) is a meter fault.
        """
        if not self._accept(reading):
            return
        arrival = reading.published_s if math.isfinite(reading.published_s) else reading.unix_s
        wall = reading.wall_w
        if self.wall_model is None:
            self._learn_ratio(arrival, wall)
        end = arrival - self.lag_s
        used = self._window_mean(end, 3)
        if used is not None and self.readings >= 3:
            error = wall - used
            self._errors.append(error)
            under2 = max(0.0, error) ** 2  # under-predictions only: over is on the safe side
            self._under2 = (under2 if len(self._errors) == 1
                            else self._under2 + ERROR_WEIGHT * (under2 - self._under2))
        if self.wall_model is not None:
            base = self._window_mean(end, 2)
            if base is not None:
                residual = wall - base
                self._residuals.append(residual)
                self.correction_w += self.alpha * (residual - self.correction_w)
        self.readings += 1

    def _learn_ratio(self, arrival: float, wall: float) -> None:
        means = {lag: m for lag in ONLINE_LAGS_S
                 if (m := self._window_mean(arrival - lag, 1)) is not None and m > 0}
        if not means:
            return
        self._pairs.append((wall, means))
        # The ratio near the operating point: readings whose components were within
        # NEAR_FRACTION of the latest (the wall's constant part, switch and idle fans, makes
        # the ratio of an idle start far higher than at load).
        now_c = self._hist[-1][1] if self._hist else 0.0
        near = [(w, m) for w, m in self._pairs
                if abs(m.get(self.lag_s, 0.0) - now_c) <= NEAR_FRACTION * now_c]
        pairs = near if len(near) >= 3 else list(self._pairs)
        best: tuple[float, float, float] | None = None  # (sd, lag, ratio)
        # Too few readings say nothing of the lag: keep the one in use until MIN_ERRORS.
        lags = ONLINE_LAGS_S if len(self._pairs) >= MIN_ERRORS else (self.lag_s,)
        for lag in lags:
            pts = [(w, m[lag]) for w, m in pairs if lag in m]
            if len(pts) < max(1, len(pairs) // 2):
                continue
            ratio = sum(w * c for w, c in pts) / sum(c * c for _, c in pts)
            res = [w - ratio * c for w, c in pts]
            sd = math.sqrt(sum(r * r for r in res) / len(res))
            # Ties go to the lag in use (a steady load says nothing about the lag).
            if best is None or sd < best[0] - 0.5 or (abs(sd - best[0]) <= 0.5
                                                      and lag == self.lag_s):
                best = (sd, lag, ratio)
        if best is not None:
            _, self.lag_s, ratio = best
            self.ratio = min(max(ratio, RATIO_RANGE[0]), RATIO_RANGE[1])

    # --- guard --------------------------------------------------------------------------
    @property
    def guard_w(self) -> float:
        """Guardband (W): k x the measured error's upper semi-deviation, else the start guard."""
        if len(self._errors) < MIN_ERRORS:
            return self.start_guard_w
        # Upper semi-deviation: for unbiased Gaussian errors sqrt(2 x mean(max(0, e)^2)) is
        # their sd; a bias towards under-prediction raises it, over-prediction does not.
        return self.k * math.sqrt(2.0 * self._under2)

    def offset_w(self) -> float:
        """Predicted wall minus components, guard included; the whole budget on a fault.

        Without a model and before any reading the conservative start ratio applies.
        """
        if self._clock() - self._last_good_s > self.silent_after_s:
            self._set_fault(f"wall meter {self.name} silent for {self.silent_after_s:g} s")
        if self.fault is not None:
            return self.budget_w
        return self._excess_w + self.guard_w  # the prediction holds the correction already

    def describe(self) -> dict[str, Any]:
        """What the governor held the wall with, for ``summary.json`` ``power.wall.model``."""
        n = len(self._errors)
        mean = sum(self._errors) / n if n else 0.0
        sd = math.sqrt(sum((e - mean) ** 2 for e in self._errors) / (n - 1)) if n > 1 else None
        out: dict[str, Any] = {
            "source": "calibrated model" if self.wall_model is not None else "learned online",
            "lag_s": self.lag_s, "guard_w": round(self.guard_w, 1),
            "prediction_error_mean_w": round(mean, 1) if n else None,
            "prediction_error_sd_w": round(sd, 1) if sd is not None else None,
            "readings": self.readings,
        }
        if self.wall_model is not None:
            m = self.wall_model
            out.update(fit=m.to_dict(), correction_w=round(self.correction_w, 1))
        else:
            out.update(ratio=round(self.ratio, 4))
        return out


def open_estimator(p: Any, *, window_s: float, silent_after_s: float,
                   name: str) -> WallEstimator:
    """The governor's wall estimator for a ``power`` section (``power.wall_model`` read).

    Args:
        p: The job's :class:`~power.config.PowerConfig`.
        window_s: The meter's averaging window.
        silent_after_s: A meter silent this long is a fault.
        name: The meter, for the log.
    """
    from power.wall_model import load_wall_model

    model = load_wall_model(p.wall_model) if p.wall_model else None
    return WallEstimator(model, budget_w=p.budget_w, window_s=window_s,
                         silent_after_s=silent_after_s, name=name)
