"""Cluster power planner: how many nodes and GPUs to power on, and at which caps.

Given the throughput-versus-power curve of one GPU of each node type (from ``harness
power-sweep``), a power budget and the fixed costs of a node, :func:`plan_cluster` chooses the
number of powered nodes, the GPUs used on each and every GPU's power cap so that the predicted
cluster throughput is as high as possible while the predicted cluster power

    switch + sum over powered nodes (CPU + overhead + idle unused GPUs + sum of GPU power)

stays at or below ``budget_w - headroom_w``. Everything here is pure (no I/O, no clock).

How it works:

* **Curves.** A curve is a list of :class:`CurvePoint` (setting, power counted against the
  budget, images/s per GPU). Between points the curve is piecewise linear. The optimiser works
  on the curve's *upper concave hull* (Pareto front): giving some GPUs the cap of one hull
  vertex and others the next one achieves every point on the hull segment between them on
  average, so the hull is what a cluster can reach.
* **Objective ``"sum"``** (independent GPUs, e.g. inference): for a fixed number of GPUs per
  node type, every GPU starts at the lowest setting and the remaining watts go to hull
  segments in order of decreasing slope (images/s per W) - exact for a concave curve. All GPUs
  end on hull vertices except at most one per type, which sits inside a segment; its setting
  is the highest one (on a ``cap_step_w`` grid) whose *measured* (interpolated) power still
  fits, and predictions always use the measured curve, never the hull.
* **Objective ``"sync"``** (synchronous data-parallel training: every step waits for the
  slowest GPU): cluster throughput is ``GPUs x min per-GPU throughput``, so GPUs of one type get
  equal caps and different types are matched in speed.
* **How many nodes/GPUs.** Every combination of used-GPU counts per type is tried (GPUs are
  packed densely onto nodes, which is optimal: a powered node costs its CPU and overhead even
  when its GPUs are capped, and an unused GPU on it still draws ``gpu_idle_w``).

Example (one node type, 4 nodes x 4 GPUs, 3000 W)::

    h100 = NodeType(name="H100", curve=curve_from_points(sweep["points"]), max_nodes=4,
                    gpus_per_node=4, node_other_w=355.0, gpu_idle_w=75.0)
    p = plan_cluster([h100], budget_w=3000, headroom_w=150, switch_w=60)
    print(p.explanation)
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from power.config import check_budget

OBJECTIVES = ("sum", "sync")


@dataclass(frozen=True, kw_only=True, slots=True)
class CurvePoint:
    """One measured operating point of one GPU. Units: W, images/s."""

    setting: float
    """The setting applied (a power cap in W, or a clock in MHz for clock sweeps)."""
    power_w: float
    """Power of the GPU at this setting that is counted against the budget."""
    images_per_s: float
    """Throughput of one GPU at this setting."""

    def __post_init__(self) -> None:
        for name in ("setting", "power_w", "images_per_s"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"CurvePoint.{name} must be a finite number >= 0, got {v}")


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeType:
    """A kind of node: its GPU's curve, how many such nodes exist and their fixed power."""

    name: str
    """Label used in the explanation (e.g. the GPU name)."""
    curve: tuple[CurvePoint, ...]
    """Measured points of one GPU (any order; at least one)."""
    max_nodes: int
    """Nodes of this type available."""
    gpus_per_node: int
    """GPUs in each node."""
    node_other_w: float
    """Power of a powered node besides its GPUs (CPU, DRAM, fans, NICs, disks). Units: W."""
    gpu_idle_w: float = 0.0
    """Power of an unused GPU in a powered node. Units: W."""

    def __post_init__(self) -> None:
        if not self.curve:
            raise ValueError(f"NodeType {self.name}: curve needs at least one point")
        if self.max_nodes < 0:
            raise ValueError(f"NodeType {self.name}: max_nodes must be >= 0, got {self.max_nodes}")
        if self.gpus_per_node < 1:
            raise ValueError(f"NodeType {self.name}: gpus_per_node must be >= 1, got "
                             f"{self.gpus_per_node}")
        if self.node_other_w < 0 or self.gpu_idle_w < 0:
            raise ValueError(f"NodeType {self.name}: node_other_w and gpu_idle_w must be >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class NodePlan:
    """What one powered node does."""

    node_type: str
    """Name of the node's :class:`NodeType`."""
    caps: tuple[float, ...]
    """Setting of each used GPU (W for power-limit curves)."""
    gpu_power_w: tuple[float, ...]
    """Predicted power of each used GPU. Units: W."""
    gpu_images_per_s: tuple[float, ...]
    """Predicted throughput of each used GPU."""
    idle_gpus: int
    """GPUs of the node left unused (each drawing ``gpu_idle_w``)."""
    other_w: float
    """CPU + overhead + idle GPUs of this node. Units: W."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """The planner's answer; :meth:`to_json` gives the ``plan`` object of ``sweep.json``."""

    budget_w: float
    headroom_w: float
    switch_w: float
    objective: str
    nodes: tuple[NodePlan, ...]
    """Powered nodes only."""
    predicted_cluster_w: float
    """Switch + nodes + GPUs. Units: W."""
    predicted_gpu_w: float
    """GPUs only. Units: W."""
    predicted_images_per_s: float
    """Cluster throughput (``"sync"``: GPUs x the slowest GPU's throughput)."""
    margin_w: float
    """``budget_w - predicted_cluster_w`` (at least ``headroom_w``)."""
    explanation: str
    """One paragraph saying what was chosen and why."""
    alternatives: tuple[tuple[int, float, float], ...] = field(default=())
    """Best ``(powered nodes, images/s, W)`` for each feasible count of powered nodes."""

    @property
    def gpus(self) -> int:
        """Number of GPUs used."""
        return sum(len(n.caps) for n in self.nodes)

    def to_json(self) -> dict[str, Any]:
        """The ``plan`` object of ``sweep.json``.

        ``nodes`` is the number of powered nodes, ``gpus_per_node`` the most GPUs used on one
        node (``len(caps_w[i])`` is node ``i``'s count) and ``caps_w`` the per-GPU caps.
        """
        return {
            "budget_w": self.budget_w, "headroom_w": self.headroom_w, "nodes": len(self.nodes),
            "gpus_per_node": max((len(n.caps) for n in self.nodes), default=0),
            "caps_w": [list(n.caps) for n in self.nodes],
            # the GPU each node's caps were measured on (its node type: the sweep's GPU name)
            "gpu_models": [n.node_type for n in self.nodes],
            "predicted_cluster_w": round(self.predicted_cluster_w, 3),
            "predicted_images_per_s": round(self.predicted_images_per_s, 3),
            "margin_w": round(self.margin_w, 3), "explanation": self.explanation,
        }


class InfeasibleError(ValueError):
    """Not even one GPU at its lowest setting fits under the budget."""


# --------------------------------------------------------------------------- curves


class NotWarmedUpError(ValueError):
    """No sweep point was measured after a warm-up, so none can be planned with."""


def curve_from_points(points: Sequence[Mapping[str, Any]], *, basis: str = "cap"
                      ) -> tuple[CurvePoint, ...]:
    """Turn ``sweep.json`` points into a curve.

    Points with ``warmed_up`` false (measured without a warm-up, or one shorter than the power
    sensor's window; see :mod:`power.sweep`) are left out.

    Args:
        points: Dicts with ``setting``, ``unit``, ``avg_gpu_w``, ``peak_gpu_w`` and
            ``images_per_s`` (per GPU).
        basis: Which power counts against the budget: ``"cap"`` (the power limit itself -
            a GPU cannot draw more for long, so the plan holds whatever the workload does;
            power-limit sweeps only), ``"avg"`` (measured average) or ``"peak"``.

    Raises:
        ValueError: Unknown basis, ``"cap"`` on a clock sweep, or no points.
        NotWarmedUpError: Every point has ``warmed_up`` false.
    """
    if basis not in ("cap", "avg", "peak"):
        raise ValueError(f"basis must be cap, avg or peak, got {basis!r}")
    if not points:
        raise ValueError("the sweep has no points")
    warm = [p for p in points if p.get("warmed_up", True) is not False]
    if not warm:
        why = points[0].get("warmup_reason") or "not warmed up"
        raise NotWarmedUpError(f"no sweep point is warmed up ({why}); measure again with a "
                               "warm-up at least as long as the power sensor's window "
                               "(--warmup-s)")
    points = warm
    out = []
    for p in points:
        if basis == "cap" and p.get("unit", "W") != "W":
            raise ValueError("basis 'cap' needs a power-limit sweep (settings in W); use avg "
                             "or peak for a clock sweep")
        power = {"cap": p["setting"], "avg": p["avg_gpu_w"], "peak": p["peak_gpu_w"]}[basis]
        out.append(CurvePoint(setting=float(p["setting"]), power_w=float(power),
                              images_per_s=float(p["images_per_s"])))
    return tuple(out)


def concave_front(curve: Sequence[CurvePoint]) -> list[CurvePoint]:
    """Return the upper concave hull's rising part, from the lowest-power point.

    Vertices are measured points, in increasing power; slopes strictly decrease and stay
    positive (watts beyond the highest throughput buy nothing). Of points with equal power
    the one with the higher throughput (then the lower setting) is kept.
    """
    by_power: dict[float, CurvePoint] = {}
    for p in sorted(curve, key=lambda q: (q.power_w, -q.images_per_s, q.setting)):
        by_power.setdefault(p.power_w, p)
    pts = list(by_power.values())
    hull: list[CurvePoint] = []
    for p in pts:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    # Keep only the rising part.
    out = [hull[0]]
    for p in hull[1:]:
        if p.images_per_s > out[-1].images_per_s:
            out.append(p)
        else:
            break
    return out


def _cross(a: CurvePoint, b: CurvePoint, c: CurvePoint) -> float:
    """> 0 if ``b`` lies below the chord ``a``-``c`` (so ``b`` is not on the upper hull)."""
    return ((b.power_w - a.power_w) * (c.images_per_s - a.images_per_s)
            - (b.images_per_s - a.images_per_s) * (c.power_w - a.power_w))


class _Measured:
    """Piecewise-linear interpolation of power and throughput over the setting."""

    def __init__(self, curve: Sequence[CurvePoint]) -> None:
        pts = sorted(curve, key=lambda p: p.setting)
        self.settings = np.array([p.setting for p in pts])
        self.power = np.array([p.power_w for p in pts])
        self.ips = np.array([p.images_per_s for p in pts])

    def power_w(self, setting: float) -> float:
        return float(np.interp(setting, self.settings, self.power))

    def images_per_s(self, setting: float) -> float:
        return float(np.interp(setting, self.settings, self.ips))


def _inside_setting(lo: CurvePoint, hi: CurvePoint, power_w: float, measured: _Measured,
                    step: float) -> float:
    """Highest setting in ``[lo, hi]`` on the ``step`` grid whose measured power <= power_w."""
    if power_w >= hi.power_w:
        return hi.setting
    a, b = sorted((lo.setting, hi.setting))
    best = lo.setting
    s = math.floor(b / step) * step
    while s > a:
        # Between two vertices measured power need not be monotone: take the
        # highest-throughput setting that fits.
        if (measured.power_w(s) <= power_w + 1e-9
                and measured.images_per_s(s) > measured.images_per_s(best)):
            best = s
        s -= step
    return best


# --------------------------------------------------------------------------- allocation


@dataclass(slots=True)
class _Type:
    spec: NodeType
    front: list[CurvePoint]
    measured: _Measured
    min_point: CurvePoint


def _alloc_sum(types: Sequence[_Type], counts: Sequence[int], watts: float,
               step: float) -> list[list[float]]:
    """Greedy marginal-gain allocation on the concave fronts; returns settings per type."""
    levels = [[0] * k for k in counts]  # index of each GPU's hull vertex
    inside: list[tuple[int, int, float]] = []  # (type, gpu, extra watts inside a segment)
    segments = []
    for t, (ty, k) in enumerate(zip(types, counts, strict=True)):
        if k == 0:
            continue
        for j in range(1, len(ty.front)):
            dp = ty.front[j].power_w - ty.front[j - 1].power_w
            di = ty.front[j].images_per_s - ty.front[j - 1].images_per_s
            segments.append((-di / dp, t, j, dp))
    segments.sort()
    left = watts
    for _neg_slope, t, j, dp in segments:
        k = counts[t]
        if left >= k * dp - 1e-9:
            levels[t] = [j] * k
            left -= k * dp
            continue
        full = int(left // dp)
        for g in range(full):
            levels[t][g] = j
        left -= full * dp
        if full < k and left > 1e-9:
            inside.append((t, full, left))
            left = 0.0
        break
    out: list[list[float]] = []
    for t, ty in enumerate(types):
        out.append([ty.front[j].setting for j in levels[t]])
    for t, g, extra in inside:
        ty = types[t]
        j = levels[t][g]
        lo, hi = ty.front[j], ty.front[min(j + 1, len(ty.front) - 1)]
        out[t][g] = _inside_setting(lo, hi, lo.power_w + extra, ty.measured, step)
    return out


def _uniform_candidates(ty: _Type, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Settings on the step grid with measured power and the best throughput at that power."""
    s = ty.measured.settings
    grid = np.unique(np.concatenate([s, np.arange(math.ceil(s.min() / step) * step, s.max(),
                                                  step)]))
    power = np.interp(grid, s, ty.measured.power)
    ips = np.interp(grid, s, ty.measured.ips)
    order = np.lexsort((-ips, power))
    grid, power, ips = grid[order], power[order], ips[order]
    keep = ips > np.maximum.accumulate(np.concatenate([[-np.inf], ips[:-1]]))
    return grid[keep], power[keep], ips[keep]


def _alloc_sync(types: Sequence[_Type], counts: Sequence[int], watts_total: float,
                step: float, cands: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]
                ) -> tuple[list[list[float]], float] | None:
    """Equal-speed allocation: the highest common per-GPU rate ``r`` that fits."""
    used = [t for t, k in enumerate(counts) if k]
    rates = np.unique(np.concatenate([cands[t][2] for t in used]))
    best = None
    lo, hi = 0, len(rates) - 1
    while lo <= hi:  # cost(r) rises with r, so binary search the largest feasible r
        mid = (lo + hi) // 2
        r = rates[mid]
        cost, pick = 0.0, []
        ok = True
        for t in used:
            _g, pw, ip = cands[t]
            i = int(np.searchsorted(ip, r - 1e-12))
            if i >= len(ip):
                ok = False
                break
            cost += counts[t] * pw[i]
            pick.append(i)
        if ok and cost <= watts_total + 1e-9:
            best = (mid, pick)
            lo = mid + 1
        else:
            hi = mid - 1
    if best is None:
        return None
    mid, pick = best
    settings: list[list[float]] = [[] for _ in types]
    for t, i in zip(used, pick, strict=True):
        settings[t] = [float(cands[t][0][i])] * counts[t]
    return settings, float(rates[mid])


# --------------------------------------------------------------------------- the planner


def plan_cluster(node_types: Sequence[NodeType], *, budget_w: float, headroom_w: float = 0.0,
                 switch_w: float = 0.0, objective: str = "sum", cap_step_w: float = 1.0,
                 unit: str = "W") -> Plan:
    """Choose powered nodes, used GPUs and per-GPU caps that maximise cluster throughput.

    Args:
        node_types: One entry per kind of node (each with its own measured curve).
        budget_w: Cluster power budget. Units: W.
        headroom_w: Margin kept free below the budget. Units: W.
        switch_w: Shared equipment (the switch), counted once. Units: W.
        objective: ``"sum"`` (independent GPUs) or ``"sync"`` (synchronous data parallel).
        cap_step_w: Granularity of a setting that falls between measured points.
        unit: Unit of the curves' settings, for the explanation (``"W"`` or ``"MHz"``).

    Returns:
        The best :class:`Plan`; ties go to the lower predicted power.

    Raises:
        ValueError: Bad arguments.
        InfeasibleError: Not even one GPU at its lowest setting fits.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    check_budget(budget_w, headroom_w)
    if switch_w < 0 or cap_step_w <= 0:
        raise ValueError("need switch_w >= 0 and cap_step_w > 0")
    if not node_types:
        raise ValueError("need at least one node type")
    types = []
    for nt in node_types:
        front = concave_front(nt.curve)
        types.append(_Type(nt, front, _Measured(nt.curve), front[0]))
    cands = [_uniform_candidates(ty, cap_step_w) for ty in types] if objective == "sync" else []
    limit_w = budget_w - headroom_w
    ranges = [range(ty.spec.max_nodes * ty.spec.gpus_per_node + 1) for ty in types]

    best: tuple[float, float, list[NodePlan]] | None = None
    by_nodes: dict[int, tuple[float, float]] = {}
    cheapest = math.inf
    for counts in itertools.product(*ranges):
        if not any(counts):
            continue
        nodes = [math.ceil(k / ty.spec.gpus_per_node) for k, ty in zip(counts, types, strict=True)]
        fixed = switch_w + sum(
            m * ty.spec.node_other_w + (m * ty.spec.gpus_per_node - k) * ty.spec.gpu_idle_w
            for k, m, ty in zip(counts, nodes, types, strict=True))
        floor_w = sum(k * ty.min_point.power_w for k, ty in zip(counts, types, strict=True))
        cheapest = min(cheapest, fixed + floor_w)
        if fixed + floor_w > limit_w + 1e-9:
            continue
        if objective == "sum":
            settings = _alloc_sum(types, counts, limit_w - fixed - floor_w, cap_step_w)
        else:
            got = _alloc_sync(types, counts, limit_w - fixed, cap_step_w, cands)
            if got is None:
                continue
            settings = got[0]
        node_plans = _layout(types, counts, settings)
        ips, total_w = _throughput(node_plans, objective), fixed + _gpu_w(node_plans)
        key = (ips, -total_w)
        m_total = sum(nodes)
        if m_total not in by_nodes or key > (by_nodes[m_total][0], -by_nodes[m_total][1]):
            by_nodes[m_total] = (ips, total_w)
        if best is None or key > (best[0], -best[1]):
            best = (ips, total_w, node_plans)
    if best is None:
        raise InfeasibleError(
            f"no plan fits {limit_w:.0f} W (budget {budget_w:.0f} W - headroom "
            f"{headroom_w:.0f} W): the cheapest option (one node, one GPU at its lowest "
            f"setting) needs {cheapest:.0f} W")
    ips, total_w, node_plans = best
    gpu_w = _gpu_w(node_plans)
    alternatives = tuple((m, v[0], v[1]) for m, v in sorted(by_nodes.items()))
    text = _explain(node_plans, types, budget_w=budget_w, headroom_w=headroom_w,
                    switch_w=switch_w, total_w=total_w, gpu_w=gpu_w, ips=ips,
                    objective=objective, alternatives=alternatives, unit=unit)
    return Plan(budget_w=budget_w, headroom_w=headroom_w, switch_w=switch_w,
                objective=objective, nodes=tuple(node_plans), predicted_cluster_w=total_w,
                predicted_gpu_w=gpu_w, predicted_images_per_s=ips,
                margin_w=budget_w - total_w, explanation=text, alternatives=alternatives)


def _layout(types: Sequence[_Type], counts: Sequence[int],
            settings: Sequence[Sequence[float]]) -> list[NodePlan]:
    """Pack each type's GPUs densely onto nodes (highest caps first)."""
    plans = []
    for ty, k, sets in zip(types, counts, settings, strict=True):
        g = ty.spec.gpus_per_node
        ordered = sorted(sets, reverse=True)
        for start in range(0, k, g):
            caps = tuple(float(c) for c in ordered[start:start + g])
            idle = g - len(caps)
            plans.append(NodePlan(
                node_type=ty.spec.name, caps=caps,
                gpu_power_w=tuple(ty.measured.power_w(c) for c in caps),
                gpu_images_per_s=tuple(ty.measured.images_per_s(c) for c in caps),
                idle_gpus=idle, other_w=ty.spec.node_other_w + idle * ty.spec.gpu_idle_w))
    return plans


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-6 else f"{v:.1f}"


def _gpu_w(node_plans: Sequence[NodePlan]) -> float:
    """The GPUs' predicted power of a layout."""
    return sum(sum(n.gpu_power_w) for n in node_plans)


def _throughput(node_plans: Sequence[NodePlan], objective: str) -> float:
    """Return the images/s of a layout.

    Images/s of a layout: the sum of its GPUs (``sum``), or every GPU at the slowest GPU's
    pace (``sync``: synchronous data parallel).
    """
    if objective == "sum":
        return sum(sum(n.gpu_images_per_s) for n in node_plans)
    per = [v for n in node_plans for v in n.gpu_images_per_s]
    return len(per) * min(per)


def _explain(node_plans: Sequence[NodePlan], types: Sequence[_Type], *, budget_w: float,
             headroom_w: float, switch_w: float, total_w: float, gpu_w: float, ips: float,
             objective: str, alternatives: Sequence[tuple[int, float, float]],
             unit: str) -> str:
    parts = []
    for ty in types:
        mine = [n for n in node_plans if n.node_type == ty.spec.name]
        if not mine:
            continue
        caps = Counter(c for n in mine for c in n.caps)
        used = sum(len(n.caps) for n in mine)
        common, _n_common = caps.most_common(1)[0]
        head = (f"{len(mine)} node{'s' if len(mine) > 1 else ''}"
                + (f" ({ty.spec.name})" if len(types) > 1 else "")
                + f" x {ty.spec.gpus_per_node} GPUs")
        if used < len(mine) * ty.spec.gpus_per_node:
            head += f" ({used} used)"
        head += f" at {_fmt(common)} {unit}"
        others = [f"{n} GPU{'s' if n > 1 else ''} at {_fmt(c)} {unit}"
                  for c, n in sorted(caps.items(), reverse=True) if c != common]
        if others:
            head += " (" + ", ".join(others) + ")"
        parts.append(head)
    fixed_desc = ", ".join(
        f"{sum(1 for n in node_plans if n.node_type == ty.spec.name)} x "
        f"{_fmt(ty.spec.node_other_w)} W node CPU+overhead" for ty in types
        if any(n.node_type == ty.spec.name for n in node_plans))
    idle = sum(n.idle_gpus for n in node_plans)
    text = (f"{' + '.join(parts)} \u2192 {total_w:.0f} W predicted (GPUs {gpu_w:.0f} W, "
            f"{fixed_desc}" + (f", {idle} idle GPU{'s' if idle > 1 else ''}" if idle else "")
            + (f", switch {_fmt(switch_w)} W" if switch_w else "")
            + f"), {budget_w - total_w:.0f} W margin to the {budget_w:.0f} W budget "
            f"(headroom {headroom_w:.0f} W), {ips:.0f} images/s")
    if objective == "sync":
        text += " (synchronous data parallel: every GPU runs at the slowest GPU's pace)"
    chosen = len(node_plans)
    if chosen < sum(ty.spec.max_nodes for ty in types):
        other = "/".join(f"{ty.spec.node_other_w:.0f}" for ty in types)
        more = [a for a in alternatives if a[0] > chosen]
        if more:
            m, v, _w = max(more, key=lambda a: a[1])
            text += (f". Powering {m} nodes would reach only {v:.0f} images/s: each node costs "
                     f"{other} W for its CPU and overhead before its GPUs do any work")
        else:
            text += (f". No plan with more powered nodes fits: each node costs {other} W for "
                     "its CPU and overhead before its GPUs do any work")
    return text + "."
