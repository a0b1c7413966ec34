"""Time and energy to a target validation IS (``train.target_is``), MLPerf's headline.

The first validation whose IS reaches ``train.target_is`` is a :class:`TargetHit`: its step,
the IS, the training wall time of the run up to that moment (every start's, so a resumed run
counts the time its earlier starts trained) and the UTC instant. The cluster energy up to that
instant is integrated from the power samples every node wrote
(:meth:`power.cluster_series.ClusterSeries.energy_until`, over the same governed windows as
the summary's ``power.energy_j``) once the power session has closed,
so a hit of an earlier, killed start still gets its energy. ``summary.json`` ``target`` is
:func:`target_summary`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from power.cluster_series import read_cluster_series


@dataclass(frozen=True, slots=True)
class TargetHit:
    """The first validation that reached the target IS.

    Attributes:
        val_is: The validation IS measured then (``>= target_is``).
        step: The step validated.
        time_s: Training wall time of the run up to the end of that validation (every start).
        unix_s: When that validation ended (UTC Unix seconds).
    """

    val_is: float
    step: int
    time_s: float
    unix_s: float

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's form (``--resume`` keeps a target already reached)."""
        return {"is": self.val_is, "step": self.step, "time_s": self.time_s,
                "unix_s": self.unix_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TargetHit:
        """The hit :meth:`to_dict` wrote."""
        return cls(val_is=float(d["is"]), step=int(d["step"]), time_s=float(d["time_s"]),
                   unix_s=float(d["unix_s"]))


def reaches(target_is: float, val_is: float | None) -> bool:
    """Return whether a validation IS reaches ``target_is`` (0: no target)."""
    return target_is > 0 and val_is is not None and math.isfinite(val_is) \
        and val_is >= target_is


def target_summary(target_is: float, hit: TargetHit | None, best_is: float | None,
                   power_dir: Path | None) -> dict[str, Any]:
    """``summary.json`` ``target``: the hit's figures, or that the run did not reach it.

    Args:
        target_is: ``train.target_is``.
        hit: The first validation that reached it, if one did.
        best_is: The run's best validation IS (None: never validated).
        power_dir: The run's ``power/`` folder; None when power measurement is off.
    """
    out: dict[str, Any] = {"target_is": target_is, "reached": hit is not None,
                           "best_is": best_is, "is": None, "step": None, "time_s": None,
                           "energy_j": None, "energy_note": None}
    if hit is None:
        out["energy_note"] = "target not reached"
        return out
    out.update(hit.to_dict())
    out.pop("unix_s")
    if power_dir is None:
        out["energy_note"] = "power measurement off (power.enabled: false)"
        return out
    energy = read_cluster_series(power_dir).energy_until(hit.unix_s)
    out["energy_j"] = energy
    if energy is None:
        out["energy_note"] = "no power samples before the target was reached"
    return out
