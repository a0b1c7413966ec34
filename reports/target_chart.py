"""Validation IS against training time and against energy, with ``train.target_is`` marked.

MLPerf Training's time-to-train and MLPerf Power's energy-to-train, for one run: every
validation record of ``metrics.jsonl`` that carries ``time_s`` (the run's training time) and
``unix_s`` is a point; its energy is the cluster energy of the governed windows up to
``unix_s`` (:meth:`power.cluster_series.ClusterSeries.energy_until`, the samples the power
chart draws). The target is a dashed line, and the first validation that reached it (the
summary's ``target``) a ring with its time and energy written beside it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from power.cluster_series import ClusterSeries
from reports.markup import Markup
from reports.plots import _TARGET, _figure, _finite, _with_rc, svg_of

_IS = "#1f77b4"


def target_points(metrics: Sequence[dict[str, Any]], series: ClusterSeries | None
                  ) -> list[tuple[float, float, float | None]]:
    """(training time s, validation IS, energy J or None) of every timed validation record."""
    out = []
    for m in metrics:
        if m.get("kind") != "val" or not (_finite(m.get("val_is")) and _finite(m.get("time_s"))):
            continue
        energy = (series.energy_until(float(m["unix_s"]))
                  if series is not None and _finite(m.get("unix_s")) else None)
        out.append((float(m["time_s"]), float(m["val_is"]), energy))
    return out


@_with_rc
def target_chart(metrics: Sequence[dict[str, Any]], series: ClusterSeries | None,
                 target: dict[str, Any] | None, key: str) -> Markup | None:
    """IS vs time and IS vs energy side by side, the target marked.

    Args:
        metrics: ``metrics.jsonl`` records.
        series: The training power series (None: power off; the energy panel says so).
        target: ``summary.json`` ``target`` (None: no ``train.target_is``).
        key: Unique chart key.

    Returns:
        The SVG, or None when no validation record carries a time (runs before this chart).
    """
    pts = target_points(metrics, series)
    if not pts:
        return None
    fig = _figure(9.5, 3.0)
    ax_t, ax_e = fig.subplots(1, 2)
    goal = target.get("target_is") if target else None
    reached = bool(target and target.get("reached"))
    ax_t.plot([p[0] for p in pts], [p[1] for p in pts], color=_IS, marker="o", ms=4, lw=1.5,
              label="validation IS")
    energy = [(p[2] / 1000.0, p[1]) for p in pts if p[2] is not None]
    if energy:
        ax_e.plot([e for e, _ in energy], [v for _, v in energy], color=_IS, marker="o", ms=4,
                  lw=1.5, label="validation IS")
    else:
        ax_e.text(0.5, 0.5, "no power samples at these validations", ha="center",
                  va="center", transform=ax_e.transAxes)
    for ax, x_key, scale in ((ax_t, "time_s", 1.0), (ax_e, "energy_j", 1000.0)):
        if _finite(goal):
            ax.axhline(goal, color=_TARGET, ls="--", lw=1.2, label=f"target IS {goal:g}")
        if reached and target is not None and _finite(target.get(x_key)):
            x, y = float(target[x_key]) / scale, float(target["is"])
            ax.plot([x], [y], "o", ms=11, mfc="none", mec=_TARGET, mew=2, label="reached")
            unit = "s" if scale == 1.0 else "kJ"
            # Left of the ring: the hit is often the last point (train.stop_at_target).
            ax.annotate(f"{x:.3g} {unit}", (x, y), xytext=(-9, -14), textcoords="offset points",
                        color=_TARGET, fontsize=8, ha="right")
        ax.set_ylabel("validation IS")
        if ax is ax_t or energy:
            ax.legend(loc="lower right")
    ax_t.set_xlabel("training time (s)")
    ax_e.set_xlabel("cluster energy (kJ)")
    missed = "" if reached or not _finite(goal) else " (not reached)"
    ax_t.set_title(f"IS against time{missed}")
    ax_e.set_title(f"IS against energy{missed}")
    return svg_of(fig, key)
