"""A wall model fitted to a meter: the rack's wall power from its nodes' GPU and CPU power.

``harness power-calibrate`` steps the caps with the rack meter attached and fits, per node,

    wall = intercept + gpu_coef * GPU W + cpu_coef * CPU W [+ quad * (node kW)^2]

(the quadratic term only where the PSU curve and the fans need it), over every node of the
rack, with the meter's lag measured (the delay that best lines the readings up with the
components). :class:`WallModel` is that fit with its error (residual spread and largest
residual), saved as JSON (:func:`save_wall_model`, never over an existing file) and read back
by :func:`load_wall_model` for a job's ``power.wall_model``. :func:`fit_wall_model` is pure.

The intercept is the rack's constant (switch, the calibrated nodes' fixed losses) for the
number of nodes calibrated; on another node count the governor's online correction learns
the difference (:mod:`power.wall_hold`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: ``kind`` of a wall model file.
WALL_MODEL_KIND = "facesr-wall-model"
#: Its format version.
WALL_MODEL_VERSION = 1
#: Lags tried when lining the meter up with the components, in s.
LAG_CANDIDATES_S: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(51))


class WallModelError(ValueError):
    """A wall model file that cannot be used; ``str()`` is one line naming the file."""


@dataclass(frozen=True, slots=True)
class WallModel:
    """A fitted wall model (per node terms plus the rack's constant) and its error."""

    intercept_w: float
    """The rack's constant at the wall (switch, fixed losses of the calibrated nodes), W."""
    gpu_coef: float
    """Wall W per W of a node's GPU power."""
    cpu_coef: float
    """Wall W per W of a node's other power (CPU estimate or RAPL, DRAM, overhead)."""
    quad_w_per_kw2: float
    """Wall W per (kW of a node's component power) squared: PSU curve and fans (0 = linear)."""
    residual_sd_w: float
    """Standard deviation of the fit's residuals (meter - model), W."""
    residual_max_w: float
    """Largest absolute residual, W."""
    lag_s: float
    """The meter's measured lag: a reading covers the ``window_s`` ending ``lag_s`` before it
    arrived."""
    window_s: float
    """The meter's averaging window, s."""
    samples: int
    """Meter readings fitted."""
    nodes: int
    """Nodes the rack had when calibrated."""
    form: str
    """``linear`` or ``linear+psu`` (with the quadratic term)."""
    meter: str = ""
    """What read the wall (``simulated PDU`` or the meter command)."""
    fitted_utc: str = ""
    """When the fit was made."""
    cpu_folded: bool = False
    """True when the calibration's CPU power did not vary apart from the GPUs' (one
    coefficient for both)."""

    def node_w(self, gpu_w: float, cpu_w: float) -> float:
        """One node's wall power less the rack's constant."""
        kw = (gpu_w + cpu_w) / 1000.0
        return self.gpu_coef * gpu_w + self.cpu_coef * cpu_w + self.quad_w_per_kw2 * kw * kw

    def rack_w(self, parts: Sequence[tuple[float, float]]) -> float:
        """The rack's wall power for each node's ``(GPU W, other W)``."""
        return self.intercept_w + sum(self.node_w(g, c) for g, c in parts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (with ``kind`` and ``version``)."""
        return {"kind": WALL_MODEL_KIND, "version": WALL_MODEL_VERSION, **asdict(self)}


_NUMBERS = ("intercept_w", "gpu_coef", "cpu_coef", "quad_w_per_kw2", "residual_sd_w",
            "residual_max_w", "lag_s", "window_s")


def wall_model_from_dict(data: Any, where: str = "wall model") -> WallModel:
    """A :class:`WallModel` from its JSON form.

    Raises:
        WallModelError: one line naming ``where`` and the bad field.
    """
    if not isinstance(data, dict) or data.get("kind") != WALL_MODEL_KIND:
        raise WallModelError(f"{where}: not a wall model (kind must be {WALL_MODEL_KIND!r}; "
                             "make one with `harness power-calibrate`)")
    if data.get("version") != WALL_MODEL_VERSION:
        raise WallModelError(f"{where}: version {data.get('version')!r} not supported "
                             f"(expected {WALL_MODEL_VERSION})")
    values: dict[str, Any] = {}
    for key in _NUMBERS:
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise WallModelError(f"{where}: {key} must be a finite number, got {v!r}")
        values[key] = float(v)
    for key in ("samples", "nodes"):
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise WallModelError(f"{where}: {key} must be an integer >= 1, got {v!r}")
        values[key] = v
    if data.get("form") not in ("linear", "linear+psu"):
        raise WallModelError(f"{where}: form must be 'linear' or 'linear+psu'")
    checks = [
        (0.5 <= values["gpu_coef"] <= 3.0, "gpu_coef must be between 0.5 and 3"),
        (0.0 <= values["cpu_coef"] <= 3.0, "cpu_coef must be between 0 and 3"),
        (values["residual_sd_w"] >= 0, "residual_sd_w must be >= 0"),
        (0 <= values["lag_s"] <= 60, "lag_s must be between 0 and 60"),
        (0 < values["window_s"] <= 60, "window_s must be in (0, 60]"),
    ]
    for ok, why in checks:
        if not ok:
            raise WallModelError(f"{where}: {why}")
    return WallModel(**values, form=data["form"], meter=str(data.get("meter", "")),
                     fitted_utc=str(data.get("fitted_utc", "")),
                     cpu_folded=bool(data.get("cpu_folded", False)))


def load_wall_model(path: str | Path) -> WallModel:
    """Read a wall model file.

    Raises:
        WallModelError: one line (missing, unreadable, not JSON, bad field).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WallModelError(f"{p}: no such wall model file; make one with "
                             "`harness power-calibrate --out FILE`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WallModelError(f"{p}: cannot read the wall model: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WallModelError(f"{p}: not JSON ({exc})") from None
    return wall_model_from_dict(data, str(p))


def save_wall_model(model: WallModel, path: str | Path) -> Path:
    """Write ``model`` to a new file ``path`` (an existing file is never replaced).

    Raises:
        FileExistsError: ``path`` exists.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("x", encoding="utf-8") as fh:
        fh.write(json.dumps(model.to_dict(), indent=1) + "\n")
    return p


@dataclass(frozen=True, slots=True)
class Sample:
    """The components at one instant: each node's ``(GPU W, other W)``."""

    unix_s: float
    parts: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class MeterReading:
    """A meter reading as the governor gets it: its value and when it arrived."""

    arrival_s: float
    wall_w: float


def _features(s: Sample) -> tuple[float, float, float]:
    gpu = sum(g for g, _ in s.parts)
    cpu = sum(c for _, c in s.parts)
    quad = sum(((g + c) / 1000.0) ** 2 for g, c in s.parts)
    return gpu, cpu, quad


def aligned_rows(samples: Sequence[Sample], readings: Sequence[MeterReading], lag_s: float,
                 window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean features over each reading's window ``[arrival - lag - window, arrival - lag)``.

    Returns:
        ``(X, y)``: one row ``(GPU W, other W, sum of node kW^2)`` per reading whose window
        holds samples, and the readings.
    """
    times = np.array([s.unix_s for s in samples])
    feats = np.array([_features(s) for s in samples]) if samples else np.zeros((0, 3))
    rows, ys = [], []
    for r in readings:
        end = r.arrival_s - lag_s
        lo, hi = np.searchsorted(times, end - window_s), np.searchsorted(times, end)
        if hi > lo:
            rows.append(feats[lo:hi].mean(axis=0))
            ys.append(r.wall_w)
    return np.array(rows).reshape(-1, 3), np.array(ys)


def _lstsq(cols: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.column_stack([np.ones_like(y), *cols])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return coef, y - a @ coef


def fit_wall_model(samples: Sequence[Sample], readings: Sequence[MeterReading], *,
                   window_s: float = 1.0, meter: str = "", fitted_utc: str = "",
                   lags_s: Sequence[float] = LAG_CANDIDATES_S) -> WallModel:
    """Fit the wall model to a calibration's samples and meter readings.

    The lag is the candidate whose linear fit leaves the smallest residual; the quadratic
    (PSU curve, fans) term is kept where it cuts the residual's spread by a fifth or more.

    Raises:
        ValueError: too few readings, or components that did not vary.
    """
    nodes = max((len(s.parts) for s in samples), default=0)
    if nodes < 1:
        raise ValueError("no component samples")
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    for lag in lags_s:
        x, y = aligned_rows(samples, readings, lag, window_s)
        if len(y) < 8:
            continue
        _, res = _lstsq([x[:, 0] + x[:, 1]], y)
        rms = float(np.sqrt(np.mean(res ** 2)))
        if best is None or rms < best[1] - 1e-9:
            best = (lag, rms, x, y)
    if best is None:
        raise ValueError(f"too few meter readings lined up with the samples ({len(readings)} "
                         "readings; at least 8 are needed)")
    lag, _, x, y = best
    total = x[:, 0] + x[:, 1]
    if float(np.std(total)) < 20.0:
        raise ValueError(f"the components hardly varied (sd {np.std(total):.1f} W): the caps "
                         "did not move the power; is the load running?")
    folded = (float(np.std(x[:, 1])) < 2.0
              or abs(float(np.corrcoef(x[:, 0], x[:, 1])[0, 1])) > 0.995)
    if folded:
        lin_cols: list[np.ndarray] = [total]
    else:
        lin_cols = [x[:, 0], x[:, 1]]
    coef_l, res_l = _lstsq(lin_cols, y)
    coef_q, res_q = _lstsq([*lin_cols, x[:, 2]], y)
    use_quad = len(y) >= 12 and float(np.std(res_q)) < 0.8 * float(np.std(res_l))
    coef, res = (coef_q, res_q) if use_quad else (coef_l, res_l)
    gpu_coef = float(coef[1])
    cpu_coef = gpu_coef if folded else float(coef[2])
    n_params = len(coef)
    sd = float(np.sqrt(np.sum(res ** 2) / max(len(y) - n_params, 1)))
    return WallModel(
        intercept_w=round(float(coef[0]), 3), gpu_coef=round(gpu_coef, 6),
        cpu_coef=round(cpu_coef, 6),
        quad_w_per_kw2=round(float(coef[-1]) if use_quad else 0.0, 4),
        residual_sd_w=round(sd, 2), residual_max_w=round(float(np.max(np.abs(res))), 2),
        lag_s=float(lag), window_s=window_s, samples=len(y), nodes=nodes,
        form="linear+psu" if use_quad else "linear", meter=meter, fitted_utc=fitted_utc,
        cpu_folded=folded)
