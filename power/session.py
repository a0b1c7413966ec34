"""The power sampler and governor around a train/infer loop (see the ``power`` package).

:func:`power_session` is the only seam between the workloads and ``power/``: a context manager
that, on local rank 0 of every node, opens that node's GPUs (NVML, simulated or replayed),
starts the >= 10 Hz sampler and the governor's background control loop (nodes combine their
power over a communicator of node leaders: MPI, or a gloo group when the workload runs
on torch.distributed), and restores every GPU setting on exit —
normal, exception, SIGINT or SIGTERM. ``summary(images)`` gives the cluster figures that go
next to IS: average and peak W, energy, images/s/W, J/image and budget crossings.

With simulated GPUs the power figures come from the model in ``power.simulated`` (flagged
``simulated: true``) while images/s are this machine's real ones.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fileio.user_error import UserError
from power.backends import open_gpus, resolve_backend
from power.config import PowerConfig

log = logging.getLogger(__name__)

#: Registers a callback run before a stalled job is aborted; returns its remover
#: (the harness passes :func:`harness.cluster.watchdog.on_stall`).
StallHook = Callable[[Callable[[], None]], Callable[[], None]]


class RankInfo(Protocol):
    """Where this rank is (the harness's ``DistInfo``)."""

    local_rank: int
    world_size: int
    node_index: int
    is_master: bool


class RankComm(Protocol):
    """The collectives the session needs (the harness's ``Comm``)."""

    def allreduce_sum(self, value: Any) -> Any: ...
    def gather(self, value: Any, root: int = 0) -> Any: ...
    def bcast(self, value: Any, root: int = 0) -> Any: ...


class NullPowerSession:
    """Power measurement switched off (``power.enabled: false``)."""

    def __enter__(self) -> "NullPowerSession":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_images(self, n: int) -> None:
        """Count images processed by this rank (for images/s/W and J/image)."""

    def summary(self, images: int) -> dict[str, Any]:
        """Cluster power figures (collective over all ranks)."""
        return {"enabled": False}

    def live(self) -> dict[str, float] | None:
        """The governor's latest cluster power and the budget (node leaders), else None."""
        return None


class PowerSession(NullPowerSession):
    """Sampler + governor on each node leader; every rank counts images."""

    def __init__(self, settings: PowerConfig, info: RankInfo, comm: RankComm, out_dir: Path,
                 *, on_stall: StallHook | None = None) -> None:
        if not isinstance(settings, PowerConfig):
            raise TypeError(f"PowerSession takes a job's power section (job.power), not "
                            f"{type(settings).__name__}")
        self.settings, self.info, self.comm = resolve_backend(settings), info, comm
        self._on_stall = on_stall
        self.out_dir = Path(out_dir) / "power"
        self.leader = info.local_rank == 0
        self._gov = self._sampler = self._gpus = None
        self._open = False
        self._images = 0
        self._started_unix_s: float | None = None
        self._leaders = None
        self._plan = self._load_plan()
        if info.world_size > 1:
            from power import MpiComm

            raw = getattr(comm, "raw", None)
            if raw is not None:
                self._leaders = MpiComm.node_leaders(raw, info.local_rank)
            elif hasattr(comm, "node_leaders"):  # torchrun: a gloo group of node leaders
                self._leaders = comm.node_leaders(info.local_rank)
            else:
                raise UserError("power: several ranks need mpi4py or torch.distributed to "
                                "combine node power")

    def _load_plan(self) -> Any:  # power.plan.LaunchPlan | None
        """The power plan of ``power.plan``, else of ``$FACESR_POWER_PLAN``; None without."""
        import os

        from power.plan import PLAN_ENV, PlanError, load_plan

        path = self.settings.plan or os.environ.get(PLAN_ENV, "")
        if not path:
            return None
        try:
            return load_plan(path)
        except PlanError as exc:
            raise UserError(f"power.plan: {exc}") from None

    def _open_gpus(self):  # noqa: ANN202 - (list[GPU], power.Clock)
        """This node's GPUs and the clock that the sampler and governor must share."""
        from power import MonotonicClock

        p = self.settings
        if p.backend == "nvml":
            clock = MonotonicClock()
            return open_gpus(self.settings, clock), clock
        if p.backend == "replay":
            clock = MonotonicClock(start_at_zero=True)
            return open_gpus(self.settings, clock), clock
        from power.simulated import noisy_phase_load

        node = self.info.node_index
        # GPUs idle for the first second (the workload is still starting), then train-like.
        loads = [noisy_phase_load(seed=1000 * node + i, duration_s=24 * 3600.0, warmup_s=1.0)
                 for i in range(p.sim_gpus_per_node)]
        clock = MonotonicClock(start_at_zero=True)  # after the loads: their t=0 is now
        return open_gpus(self.settings, clock, loads=loads, seed=node), clock

    def __enter__(self) -> "PowerSession":
        self._images = 0
        self._open = True
        if not self.leader:
            return self
        from power import (
            ExternalMeter,
            Governor,
            NodePower,
            PowerSampler,
            SingleProcessComm,
        )

        p = self.settings
        node_dir = self.out_dir / f"node{self.info.node_index:03d}"
        node_dir.mkdir(parents=True, exist_ok=True)
        write_node_info(node_dir, self.info.node_index)
        self._gpus, clock = self._open_gpus()
        meter = ExternalMeter(p.meter_command) if p.meter_command else None
        node = NodePower(cpu_tdp_w=p.cpu_tdp_w, overhead_w=p.node_overhead_w, meter=meter)
        self._sampler = PowerSampler(self._gpus, node_dir, node=node, rate_hz=p.sample_hz,
                                     clock=clock)
        self._gov = Governor(self._gpus, comm=self._leaders or SingleProcessComm(),
                             budget_w=p.budget_w, headroom_w=p.headroom_w,
                             mode=p.mode,
                             other_power_w=node.other_power_w, shared_overhead_w=p.switch_w,
                             run_dir=node_dir, period_s=1.0 / p.control_hz, clock=clock)
        self._sampler.__enter__()
        self._started_unix_s = self._sampler.started_unix_s
        try:
            self._gov.__enter__()
            if p.mode != "clocks":
                self._start_capped(node)
            self._gov.start()
            if self._on_stall is not None:
                gov = self._gov
                self._forget_stall = self._on_stall(lambda: gov.restore("stalled rank"))
        except BaseException:
            self._sampler.__exit__(None, None, None)
            raise
        log.info("power: %d %s GPU(s) on node %d, budget %.0f W (headroom %.0f W)",
                 len(self._gpus), p.backend, self.info.node_index, p.budget_w, p.headroom_w)
        return self

    def _start_capped(self, node) -> None:  # noqa: ANN001 - power.NodePower
        """Before the first control period, cap every GPU at its planned cap (with a power
        plan) or at an even share of the budget.

        Uncapped GPUs could cross the budget in the time the governor needs for its first
        reading; starting from the plan or the even share (never above each GPU's current
        limit), the governor then moves the caps while there is room. Planned caps are set as
        planned (clamped to each GPU's range): the plan fits the budget by construction, and
        the governor's next period corrects them if this run draws more than the sweep did.
        """
        p = self.settings
        if self._plan is not None:
            from power.plan import starting_caps_mw

            ranges = [gpu.get_power_limit_constraints_mw() for gpu in self._gpus]
            caps = starting_caps_mw(self._plan, self.info.node_index, ranges)
            for gpu, cap in zip(self._gpus, caps):
                gpu.set_power_limit_mw(cap)
            log.info("power: node %d starts at the planned caps %s W (%s)",
                     self.info.node_index, [round(c / 1000) for c in caps], self._plan.source)
            return
        leaders = self._leaders.size if self._leaders is not None else 1
        counts = (self._leaders.allgather(len(self._gpus)) if self._leaders is not None
                  else [len(self._gpus)])
        others = node.other_power_w(0.0) * leaders + p.switch_w
        share_mw = 1000.0 * (p.budget_w - p.headroom_w - others) / max(sum(counts), 1)
        for gpu in self._gpus:
            lo, hi = gpu.get_power_limit_constraints_mw()
            target = int(min(max(share_mw, lo), hi, gpu.get_power_limit_mw()))
            gpu.set_power_limit_mw(target)

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        self._open = False
        if not self.leader or self._gov is None:
            return None
        getattr(self, "_forget_stall", lambda: None)()
        try:
            self._gov.stop()
        finally:
            try:
                self._gov.__exit__(exc_type, exc, tb)
            finally:
                self._sampler.__exit__(exc_type, exc, tb)
        return None

    def add_images(self, n: int) -> None:
        self._images += n

    def live(self) -> dict[str, float] | None:
        decision = getattr(self._gov, "last_decision", None)
        if decision is None or decision.cluster_power_w is None:
            return None
        return {"cluster_w": decision.cluster_power_w, "budget_w": self.settings.budget_w}

    def summary(self, images: int) -> dict[str, Any]:
        """Cluster power figures of this session (collective over all ranks).

        Call it after the ``with`` block: the figures cover the governed window, from the
        governor's start to its restore, and come from the samples every node wrote
        (:func:`power.cluster_series.cluster_series`, the computation the report draws), so
        the peak, energy and crossings (one still open at the restore included) are those of
        the chart. Images/s, images/s/W and J/image use the same window.

        Raises:
            RuntimeError: Called while the session is still open.
        """
        if self._open:
            raise RuntimeError("PowerSession.summary(): call it after the session has closed")
        total = int(self.comm.allreduce_sum(self._images))
        # Every node leader's GPUs' power readings (instant, 1-s average...), for the record.
        sensors = self.comm.gather(self._node_sensors(), root=0)
        series = self.comm.gather(self._node_series(), root=0)
        mine = None
        if self.info.is_master and self._gov is not None:
            from power.cluster_series import cluster_series

            g = self._gov.summary(images=total)
            p = self.settings
            s = cluster_series(series or []).stats(p.budget_w)
            seconds, energy = s["window_s"], s["energy_j"]
            mine = {
                "enabled": True, "backend": p.backend, "simulated": p.backend == "simulated",
                "gpus_per_node": len(self._gpus), "budget_w": p.budget_w,
                "headroom_w": p.headroom_w, **s,
                "governor_crossings": g["crossings"],
                "fail_safe_steps": g["fail_safe_steps"], "images": total,
                "images_per_s": total / seconds if seconds > 0 else 0.0,
                "images_per_s_per_w": total / energy if energy > 0 else 0.0,
                "j_per_image": energy / total if total > 0 else 0.0,
                "cpu_power_estimated": self._cpu_estimated(), "dir": str(self.out_dir),
                "power_sensors": [entry for node in sensors or [] if node for entry in node],
                "plan": self._plan.source if self._plan is not None else "",
            }
        return self.comm.bcast(mine, root=0) or {"enabled": True}

    def _node_series(self) -> Any:  # power.cluster_series.NodeSeries | None
        """This node's samples of this session (read back from its files); None off a leader."""
        if self._sampler is None:
            return None
        from power.cluster_series import read_node_series

        return read_node_series(self._sampler.run_dir, since_unix_s=self._started_unix_s)

    def _node_sensors(self) -> list[dict[str, Any]] | None:
        """This node's GPUs' power readings, each tagged with the node; None off a leader."""
        if self._sampler is None:
            return None
        return [{"node": self.info.node_index, **s} for s in self._sampler.sensors()]

    def _cpu_estimated(self) -> bool:
        try:
            return bool(self._sampler.node.read(0.0).estimated)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - informational only
            return True


#: Each ``power/nodeNNN/`` folder's metadata: which node it is (index and name).
NODE_INFO_NAME = "node.json"


def write_node_info(node_dir: Path, index: int) -> None:
    """Record in ``node_dir`` which node it belongs to: ``{"index": i, "host": name}``, the
    name as Slurm says it (``SLURMD_NODENAME``), else the host name. Folders stay
    ``node<index>`` (a stable order the reports read); the name is what people know."""
    import os
    import socket

    from fileio.atomic import write_json_atomic

    host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    write_json_atomic(node_dir / NODE_INFO_NAME, {"index": index, "host": host})


def power_session(settings: PowerConfig, info: RankInfo, comm: RankComm, out_dir: Path,
                  *, on_stall: StallHook | None = None) -> NullPowerSession:
    """The power session for a job's ``power`` settings (a no-op when ``enabled`` is false).

    Args:
        settings: The job's ``power`` section (``backend: auto`` is resolved on opening).
        info: This rank's place in the job.
        comm: The job's collectives (every rank takes part in :meth:`PowerSession.summary`).
        out_dir: The run folder; samples go to ``out_dir/power/node<i>/`` (with
            ``node.json``: the node's index and name).
        on_stall: Registers the GPU restore run before a stalled job is aborted.
    """
    if not settings.enabled:
        return NullPowerSession()
    return PowerSession(settings, info, comm, out_dir, on_stall=on_stall)


def combine_segments(earlier: dict[str, Any] | None, latest: dict[str, Any]) -> dict[str, Any]:
    """Whole-run power figures of a resumed run: ``earlier`` (the previous segments' summary)
    followed by ``latest`` (this segment's). Energy, images, crossings and their time add up;
    the peak is the larger; averages and per-image figures are recomputed from the sums.
    """
    if not earlier or not earlier.get("enabled") or not latest.get("enabled") \
            or "energy_j" not in latest:
        return latest

    def duration(s: dict[str, Any]) -> float:
        avg = float(s.get("avg_cluster_w") or 0.0)
        return float(s.get("energy_j") or 0.0) / avg if avg > 0 else 0.0

    out = dict(latest)
    energy = float(earlier.get("energy_j", 0.0)) + float(latest["energy_j"])
    images = int(earlier.get("images", 0)) + int(latest.get("images", 0))
    seconds = duration(earlier) + duration(latest)
    out.update(
        energy_j=energy, images=images,
        avg_cluster_w=energy / seconds if seconds > 0 else latest.get("avg_cluster_w", 0.0),
        peak_cluster_w=max(float(earlier.get("peak_cluster_w") or 0.0),
                           float(latest.get("peak_cluster_w") or 0.0)),
        crossings=int(earlier.get("crossings", 0)) + int(latest.get("crossings", 0)),
        crossing_time_s=float(earlier.get("crossing_time_s", 0.0))
        + float(latest.get("crossing_time_s", 0.0)),
        fail_safe_steps=int(earlier.get("fail_safe_steps", 0))
        + int(latest.get("fail_safe_steps", 0)),
        images_per_s=images / seconds if seconds > 0 else 0.0,
        images_per_s_per_w=images / energy if energy > 0 else 0.0,
        j_per_image=energy / images if images > 0 else 0.0,
        segments=int(earlier.get("segments", 1)) + 1,
    )
    return out
