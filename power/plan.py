"""From ``plan.json`` to a launch: how many nodes and GPUs, and every GPU's starting cap.

``harness power-sweep`` writes ``plan.json`` (:meth:`power.planner.Plan.to_json`)::

    {"budget_w": 3000, "headroom_w": 150, "nodes": 4, "gpus_per_node": 4,
     "caps_w": [[190, 190, 190, 190], ...], ...}

This module reads it (:func:`load_plan`: a ``plan.json``, a ``sweep.json`` holding a plan, or a
sweep folder), turns it into the launch settings of a job (:func:`launch_overrides`: nodes,
ranks and GPUs per node, the budget, and ``FACESR_POWER_PLAN`` exported to every rank so each
node leader finds its caps), gives each node's GPUs their planned caps as *starting* limits
(:func:`starting_caps_mw`; the governor stays the safety net and moves them from there), and
says whether a plan fits the machine it is about to run on (:func:`check_plan_fits`, for
``harness doctor``). Everything is pure except :func:`load_plan`, which reads one file.

Uneven plans (the last node uses fewer GPUs) launch ``gpus_per_node`` ranks on every node, as
``mpirun --map-by ppr:N:node`` requires; a GPU the plan leaves unused starts at its lowest
limit, so the plan's power still holds.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLAN_ENV = "FACESR_POWER_PLAN"
"""Environment variable naming the plan file on every rank."""


class PlanError(ValueError):
    """A plan file is missing, unreadable or inconsistent (names the file and the key)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LaunchPlan:
    """The parts of ``plan.json`` a launch needs. Units: W."""

    source: str
    """The file it came from (for messages)."""
    budget_w: float
    headroom_w: float
    nodes: int
    """Powered nodes."""
    gpus_per_node: int
    """Most GPUs used on one node (ranks per node at launch)."""
    caps_w: tuple[tuple[float, ...], ...]
    """Per node, the cap of each used GPU."""
    gpu_models: tuple[str, ...] = ()
    """Per node, the GPU its caps were measured on (the sweep's GPU name); empty for plans
    written before it was recorded."""
    predicted_images_per_s: float | None = None
    """The cluster's images/s the planner predicted (from the sweep's workload); None for
    plans without it."""
    predicted_cluster_w: float | None = None
    """The cluster's W the planner predicted; None for plans without it."""

    @property
    def gpus(self) -> int:
        """GPUs the plan uses."""
        return sum(len(c) for c in self.caps_w)

    @property
    def uneven(self) -> bool:
        """True when some node uses fewer than ``gpus_per_node`` GPUs."""
        return any(len(c) != self.gpus_per_node for c in self.caps_w)


def _fail(source: str, key: str, why: str) -> PlanError:
    return PlanError(f"{source}: plan.{key}: {why}")


def parse_plan(doc: Mapping[str, Any], source: str = "plan") -> LaunchPlan:
    """Validate a plan object (``plan.json`` content).

    Raises:
        PlanError: A missing or bad key (the message names it).
    """
    if not isinstance(doc, Mapping):
        raise PlanError(f"{source}: expected a JSON object")

    def number(key: str, positive: bool = True) -> float:
        v = doc.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
                v <= 0 if positive else v < 0):
            raise _fail(source, key, f"must be a {'positive' if positive else 'non-negative'} "
                        f"number, got {v!r}")
        return float(v)

    budget = number("budget_w")
    headroom = number("headroom_w", positive=False)
    if headroom >= budget:
        raise _fail(source, "headroom_w", f"{headroom:g} must be below budget_w {budget:g}")
    caps = doc.get("caps_w")
    if not isinstance(caps, list) or not caps:
        raise _fail(source, "caps_w", "must be a non-empty list (one list of caps per node)")
    rows: list[tuple[float, ...]] = []
    for i, row in enumerate(caps):
        if not isinstance(row, list) or not row:
            raise _fail(source, f"caps_w[{i}]", "must be a non-empty list of caps in W")
        for j, c in enumerate(row):
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not (
                    math.isfinite(c) and c > 0):
                raise _fail(source, f"caps_w[{i}][{j}]", f"must be a positive number, got {c!r}")
        rows.append(tuple(float(c) for c in row))
    nodes = doc.get("nodes", len(rows))
    if not isinstance(nodes, int) or nodes != len(rows):
        raise _fail(source, "nodes", f"{nodes!r} but caps_w lists {len(rows)} node(s)")
    per = doc.get("gpus_per_node", max(len(r) for r in rows))
    if not isinstance(per, int) or per != max(len(r) for r in rows):
        raise _fail(source, "gpus_per_node", f"{per!r} but the fullest node in caps_w uses "
                    f"{max(len(r) for r in rows)}")
    models = doc.get("gpu_models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models) or (
            models and len(models) != len(rows)):
        raise _fail(source, "gpu_models", f"must list one GPU name per node of caps_w "
                    f"({len(rows)}), got {models!r}")
    predicted = {k: number(k, positive=False) if doc.get(k) is not None else None
                 for k in ("predicted_images_per_s", "predicted_cluster_w")}
    return LaunchPlan(source=source, budget_w=budget, headroom_w=headroom, nodes=nodes,
                      gpus_per_node=per, caps_w=tuple(rows), gpu_models=tuple(models),
                      **predicted)


def load_plan(path: str | os.PathLike[str]) -> LaunchPlan:
    """Read a plan from ``plan.json``, a ``sweep.json`` holding one, or a sweep folder.

    Raises:
        PlanError: Missing, unreadable, no plan in the sweep, or invalid (names the key).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "plan.json" if (p / "plan.json").is_file() else p / "sweep.json"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"{p}: no such plan file (harness power-sweep writes plan.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{p}: unreadable plan ({exc.__class__.__name__}: {exc})") from None
    if isinstance(doc, dict) and "points" in doc:  # a sweep.json
        if not isinstance(doc.get("plan"), dict):
            raise PlanError(f"{p}: this sweep has no plan (it was run with --no-plan)")
        doc = doc["plan"]
    return parse_plan(doc, str(p))


def plan_in_use(plan_setting: str, environ: Mapping[str, str] | None = None
                ) -> LaunchPlan | None:
    """The plan a rank runs under: ``power.plan``, else ``$FACESR_POWER_PLAN``; None without.

    Raises:
        PlanError: The plan named is missing or invalid.
    """
    path = plan_setting or (os.environ if environ is None else environ).get(PLAN_ENV, "")
    return load_plan(path) if path else None


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanVsAchieved:
    """A plan's predicted images/s and cluster W beside what the run achieved. Units: W."""

    source: str
    """The plan file."""
    predicted_images_per_s: float | None
    predicted_cluster_w: float | None
    achieved_images_per_s: float | None = None
    """The run's training images/s (``summary.json`` ``images_per_s``)."""
    achieved_cluster_w: float | None = None
    """The run's average cluster W (``summary.json`` ``power.avg_cluster_w``)."""

    @staticmethod
    def _ratio(achieved: float | None, predicted: float | None) -> float | None:
        if achieved is None or not predicted:
            return None
        return achieved / predicted

    @property
    def images_per_s_ratio(self) -> float | None:
        """Achieved over predicted images/s (None when either is unknown)."""
        return self._ratio(self.achieved_images_per_s, self.predicted_images_per_s)

    @property
    def cluster_w_ratio(self) -> float | None:
        """Achieved over predicted cluster W (None when either is unknown)."""
        return self._ratio(self.achieved_cluster_w, self.predicted_cluster_w)

    def to_dict(self, *, achieved: bool = True) -> dict[str, Any]:
        """The ``plan`` block of ``summary.json`` (``achieved=False``: of ``manifest.json``)."""
        out: dict[str, Any] = {"source": self.source,
                               "predicted_images_per_s": self.predicted_images_per_s,
                               "predicted_cluster_w": self.predicted_cluster_w}
        if achieved:
            out.update(achieved_images_per_s=self.achieved_images_per_s,
                       images_per_s_ratio=self.images_per_s_ratio,
                       achieved_cluster_w=self.achieved_cluster_w,
                       cluster_w_ratio=self.cluster_w_ratio)
        return out

    def line(self) -> str:
        """One line for the log: predicted, achieved and their ratio."""
        def part(what: str, got: float | None, want: float | None, ratio: float | None,
                 digits: int) -> str:
            if want is None:
                return f"{what}: no prediction"
            text = f"{what}: predicted {want:.{digits}f}, achieved "
            text += "--" if got is None else f"{got:.{digits}f}"
            return text + ("" if ratio is None else f" (x{ratio:.3g})")

        return (f"plan {self.source}: " + part("images/s", self.achieved_images_per_s,
                                                self.predicted_images_per_s,
                                                self.images_per_s_ratio, 1)
                + "; " + part("cluster W", self.achieved_cluster_w, self.predicted_cluster_w,
                              self.cluster_w_ratio, 0))


def plan_vs_achieved(plan: LaunchPlan, *, images_per_s: float | None = None,
                     cluster_w: float | None = None) -> PlanVsAchieved:
    """The plan's predictions beside the achieved images/s and average cluster W (or None)."""
    return PlanVsAchieved(source=plan.source, predicted_images_per_s=plan.predicted_images_per_s,
                          predicted_cluster_w=plan.predicted_cluster_w,
                          achieved_images_per_s=images_per_s, achieved_cluster_w=cluster_w)


def launch_overrides(plan: LaunchPlan, *, ranks_per_gpu: int = 1,
                     plan_path: str | None = None) -> dict[str, Any]:
    """The job settings a planned launch changes, as ``{dotted.key: value}``.

    ``launch.nodes``, ``launch.ranks_per_node`` (``gpus_per_node x ranks_per_gpu``),
    ``launch.gpus_per_node``, ``power.budget_w``, ``power.headroom_w`` and, when
    ``plan_path`` is given, ``launch.env.FACESR_POWER_PLAN``.
    """
    if ranks_per_gpu < 1:
        raise ValueError(f"ranks_per_gpu must be >= 1, got {ranks_per_gpu}")
    out: dict[str, Any] = {
        "launch.nodes": plan.nodes,
        "launch.ranks_per_node": plan.gpus_per_node * ranks_per_gpu,
        "launch.gpus_per_node": plan.gpus_per_node,
        "power.budget_w": plan.budget_w,
        "power.headroom_w": plan.headroom_w,
    }
    if plan_path is not None:
        out[f"launch.env.{PLAN_ENV}"] = str(plan_path)
    return out


def set_arguments(overrides: Mapping[str, Any]) -> list[str]:
    """``KEY=VALUE`` strings for ``--set`` (numbers without a trailing ``.0``)."""
    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    return [f"{k}={fmt(v)}" for k, v in overrides.items()]


def starting_caps_mw(plan: LaunchPlan, node_index: int,
                     limit_ranges_mw: Sequence[tuple[int, int]]) -> list[int]:
    """Starting power limits of one node's GPUs: the planned caps, clamped to each range.

    A GPU beyond the plan's count for this node (or a node beyond the plan) starts at its
    lowest limit.

    Args:
        plan: The plan.
        node_index: This node's index (0-based, the launch order).
        limit_ranges_mw: ``(min, max)`` settable limit of each local GPU. Units: mW.
    """
    caps = plan.caps_w[node_index] if 0 <= node_index < plan.nodes else ()
    out = []
    for i, (lo, hi) in enumerate(limit_ranges_mw):
        want = round(caps[i] * 1000) if i < len(caps) else lo
        out.append(int(min(max(want, lo), hi)))
    return out


def node_mismatch(plan: LaunchPlan, node_index: int, gpu_model: str,
                  limit_ranges_mw: Sequence[tuple[int, int]]) -> tuple[str | None, list[str]]:
    """Whether ``plan`` was made for this node's GPUs.

    Returns ``(why it cannot start them, or None; what starts differently from the plan, one
    line each)``.

    Refused: another GPU model than the plan's for this node, fewer GPUs than the plan puts
    on it, or a planned cap outside this GPU's range (a plan for another GPU: its caps would
    be clamped into another curve). Said: GPUs the plan leaves unused, a node beyond the plan.

    Args:
        plan: The plan.
        node_index: This node's index.
        gpu_model: This node's GPU name (:meth:`power.gpu.GPU.get_name`).
        limit_ranges_mw: ``(min, max)`` settable limit of each local GPU. Units: mW.
    """
    here = len(limit_ranges_mw)
    if not 0 <= node_index < plan.nodes:
        return None, [f"node {node_index} is beyond the plan's {plan.nodes} node(s): its "
                      f"{here} GPU(s) start at their lowest limit"]
    caps = plan.caps_w[node_index]
    fix = ("make a plan on these GPUs (harness power-sweep) or leave power.plan empty")
    want = plan.gpu_models[node_index] if plan.gpu_models else ""
    if want and gpu_model and want != gpu_model:
        return (f"{plan.source}: the plan was made for {want} GPUs; node {node_index} has "
                f"{gpu_model}: its caps do not carry over; {fix}"), []
    if len(caps) > here:
        return (f"{plan.source}: the plan puts {len(caps)} GPU(s) on node {node_index}, which "
                f"has {here}; {fix}"), []
    for j, (cap, (lo, hi)) in enumerate(zip(caps, limit_ranges_mw, strict=False)):
        if not lo - 0.5 <= cap * 1000 <= hi + 0.5:
            return (f"{plan.source}: planned cap {cap:g} W of node {node_index} GPU {j} is "
                    f"outside this GPU's {lo / 1000:g}-{hi / 1000:g} W range (a plan for "
                    f"another GPU); {fix}"), []
    notes = []
    if len(caps) < here:
        notes.append(f"node {node_index} has {here} GPUs, the plan uses {len(caps)}: the other "
                     f"{here - len(caps)} start at their lowest limit")
    return None, notes


@dataclass(frozen=True, slots=True)
class PlanCheck:
    """One line of ``harness doctor`` about a plan."""

    name: str
    status: str
    """``"ok"``, ``"warn"`` or ``"fail"``."""
    detail: str


def check_plan_fits(plan: LaunchPlan, *, gpus_here: int,
                    limit_ranges_w: Sequence[tuple[float, float]],
                    nodes_available: int | None = None,
                    job_budget_w: float | None = None) -> list[PlanCheck]:
    """Does ``plan`` fit the machine it is about to run on?

    Args:
        plan: The plan.
        gpus_here: GPUs this node can use (NVML, after ``CUDA_VISIBLE_DEVICES``).
        limit_ranges_w: ``(min, max)`` settable limit of each of them. Units: W.
        nodes_available: Nodes the launch can use (``launch.hosts`` or the allocation);
            None when unknown.
        job_budget_w: The job's ``power.budget_w``, to flag a plan made for another budget.
    """
    out = []
    if gpus_here >= plan.gpus_per_node:
        out.append(PlanCheck("plan GPUs per node", "ok",
                             f"plan uses {plan.gpus_per_node}, this node has {gpus_here}"))
    else:
        out.append(PlanCheck("plan GPUs per node", "fail",
                             f"plan uses {plan.gpus_per_node} GPUs per node but this node has "
                             f"{gpus_here}"))
    if nodes_available is None:
        out.append(PlanCheck("plan nodes", "warn", f"plan uses {plan.nodes} node(s); how many "
                             "this launch gets is not known here"))
    elif nodes_available >= plan.nodes:
        out.append(PlanCheck("plan nodes", "ok",
                             f"plan uses {plan.nodes} of {nodes_available} node(s)"))
    else:
        out.append(PlanCheck("plan nodes", "fail", f"plan uses {plan.nodes} nodes but only "
                             f"{nodes_available} are available"))
    if limit_ranges_w:
        lo = max(r[0] for r in limit_ranges_w)
        hi = min(r[1] for r in limit_ranges_w)
        caps = [c for row in plan.caps_w for c in row]
        bad = [c for c in caps if not lo - 1e-9 <= c <= hi + 1e-9]
        if bad:
            out.append(PlanCheck("plan caps", "fail",
                                 f"{len(bad)} cap(s) outside this GPU's {lo:g}-{hi:g} W range "
                                 f"(e.g. {bad[0]:g} W): the plan was made for another GPU"))
        else:
            out.append(PlanCheck("plan caps", "ok", f"{min(caps):g}-{max(caps):g} W within "
                                 f"{lo:g}-{hi:g} W"))
    if job_budget_w is not None and abs(job_budget_w - plan.budget_w) > 1e-6:
        out.append(PlanCheck("plan budget", "warn", f"plan made for {plan.budget_w:g} W, the "
                             f"job says {job_budget_w:g} W (the launch uses the plan's)"))
    if plan.uneven:
        out.append(PlanCheck("plan layout", "warn", "uneven plan: every node starts "
                             f"{plan.gpus_per_node} ranks; GPUs the plan leaves unused start at "
                             "their lowest limit"))
    return out
