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
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from fileio.run_files import node_folder
from fileio.user_error import UserError
from power.backends import open_gpus, resolve_backend
from power.config import PowerConfig

if TYPE_CHECKING:
    from power.governor import Governor
    from power.gpu import GPU
    from power.sampler import PowerSampler

log = logging.getLogger(__name__)

#: Registers a callback run before a stalled job is aborted; returns its remover
#: (the harness passes :func:`harness.cluster.watchdog.on_stall`).
StallHook = Callable[[Callable[[], None]], Callable[[], None]]


class RankInfo(Protocol):
    """Where this rank is (the harness's ``DistInfo``)."""

    @property
    def local_rank(self) -> int:
        """This rank's index on its node."""

    @property
    def world_size(self) -> int:
        """The number of ranks in the job."""

    @property
    def node_index(self) -> int:
        """This rank's node, counted from 0."""

    @property
    def is_master(self) -> bool:
        """True on rank 0."""


class RankComm(Protocol):
    """The collectives the session needs (the harness's ``Comm``)."""

    def allreduce_sum(self, value: Any) -> Any:
        """Sum ``value`` over all ranks."""

    def gather(self, value: Any, root: int = 0) -> Any:
        """Gather ``value`` onto ``root``."""

    def bcast(self, value: Any, root: int = 0) -> Any:
        """Broadcast ``value`` from ``root``."""


class NullPowerSession:
    """Power measurement switched off (``power.enabled: false``)."""

    def __enter__(self) -> NullPowerSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def add_images(self, n: int, *, job_total: int | None = None) -> None:
        """Count images processed by this rank (for images/s/W and J/image).

        ``job_total``: the whole job's images so far in this attempt, where the caller knows it
        (rank 0 records it, so that a killed attempt's images still count).
        """

    def summary(self, images: int) -> dict[str, Any]:
        """Cluster power figures (collective over all ranks)."""
        return {"enabled": False}

    def live(self) -> dict[str, float] | None:
        """The governor's latest cluster power and the budget (node leaders), else None."""
        return None

    def announce(self, phase: str) -> None:
        """The workload enters ``phase`` (one of :data:`power.phases.PHASES`)."""


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
        self._gov: Governor | None = None
        self._sampler: PowerSampler | None = None
        self._gpus: list[GPU] | None = None
        self._open = False
        self._images = 0
        self._started_unix_s: float | None = None
        self._ledger: Any = None  # power.attempts.AttemptLedger on rank 0
        self._leaders = None
        self._plan = self._load_plan()
        self.phases = _phase_board(self.settings)
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
        from power.plan import PlanError, plan_in_use

        try:
            return plan_in_use(self.settings.plan)
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
        loads = [noisy_phase_load(seed=1000 * node + i, duration_s=24 * 3600.0,
                                  warmup_s=0.0 if p.sim_phases else 1.0)
                 for i in range(p.sim_gpus_per_node)]
        if p.sim_phases:  # idle until the first step, then as the loop announces
            from power.phases import PhasedLoad

            loads = [PhasedLoad(load, self.phases) for load in loads]
        clock = MonotonicClock(start_at_zero=True)  # after the loads: their t=0 is now
        return open_gpus(self.settings, clock, loads=loads, seed=node), clock

    def __enter__(self) -> PowerSession:
        self._images = 0
        self._open = True
        if not self.leader:
            return self
        if self.info.is_master:
            from power.attempts import AttemptLedger

            self._ledger = AttemptLedger(self.out_dir)
            self._ledger.start()
        from power import (
            ExternalMeter,
            Governor,
            NodePower,
            PowerSampler,
            SingleProcessComm,
        )

        p = self.settings
        node_dir = self.out_dir / node_folder(self.info.node_index)
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
        if p.hold_phases:
            self._gov.phase_hold = self.phases.holding
        self._pdu = None
        if (p.sim_pdu or p.pdu_command) and self.info.node_index == 0:
            self._pdu = _open_sim_pdu(p, self.out_dir / "pdu.csv")
            self._gov.wall_parts_hook = self._pdu.feed
            if p.hold == "wall":
                self._gov.wall_offset = self._pdu.tracker.offset_w
        elif self.info.node_index == 0:
            log.warning("power: %s", WALL_NOT_MEASURED)
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
        """Cap every GPU before the first control period.

        Before the first control period, cap every GPU at its planned cap (with a power
        plan) or at an even share of the budget.

        Uncapped GPUs could cross the budget in the time the governor needs for its first
        reading; starting from the plan or the even share (never above each GPU's current
        limit), the governor then moves the caps while there is room. Planned caps are set as
        planned (clamped to each GPU's range): the plan fits the budget by construction, and
        the governor's next period corrects them if this run draws more than the sweep did.
        """
        p = self.settings
        gpus = self._gpus
        assert gpus is not None  # __enter__ opens them first
        if self._plan is not None:
            from power.plan import node_mismatch, starting_caps_mw

            ranges = [gpu.get_power_limit_constraints_mw() for gpu in gpus]
            refused, notes = node_mismatch(self._plan, self.info.node_index,
                                           gpus[0].get_name() if gpus else "",
                                           ranges)
            if refused is not None:
                raise UserError(f"power.plan: {refused}")
            for note in notes:
                log.warning("power.plan: %s", note)
            caps = starting_caps_mw(self._plan, self.info.node_index, ranges)
            for gpu, cap in zip(gpus, caps, strict=True):
                gpu.set_power_limit_mw(cap)
            log.info("power: node %d starts at the planned caps %s W (%s)",
                     self.info.node_index, [round(c / 1000) for c in caps], self._plan.source)
            return
        leaders = self._leaders.size if self._leaders is not None else 1
        counts = (self._leaders.allgather(len(gpus)) if self._leaders is not None
                  else [len(gpus)])
        others = node.other_power_w(0.0) * leaders + p.switch_w + _start_wall_excess_w(p, leaders)
        share_mw = 1000.0 * (p.budget_w - p.headroom_w - others) / max(sum(counts), 1)
        for gpu in gpus:
            lo, hi = gpu.get_power_limit_constraints_mw()
            target = int(min(max(share_mw, lo), hi, gpu.get_power_limit_mw()))
            gpu.set_power_limit_mw(target)

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        self._open = False
        if self._ledger is not None:
            self._ledger.flush()
        if not self.leader or self._gov is None:
            return None
        sampler = self._sampler
        assert sampler is not None  # __enter__ opens the sampler before the governor
        getattr(self, "_forget_stall", lambda: None)()
        try:
            self._gov.stop()
        finally:
            try:
                self._gov.__exit__(exc_type, exc, tb)
            finally:
                sampler.__exit__(exc_type, exc, tb)
                pdu = getattr(self, "_pdu", None)
                if pdu is not None:
                    pdu.close()
        return None

    def add_images(self, n: int, *, job_total: int | None = None) -> None:
        """Count ``n`` more images processed (and the job's total for the ledger)."""
        self._images += n
        if self._ledger is not None and job_total is not None:
            self._ledger.images(job_total)

    def announce(self, phase: str) -> None:
        """The workload enters ``phase`` (:mod:`power.phases`).

        Simulated GPUs follow it; the governor holds its caps through validation, checkpoints
        and evaluation.
        """
        self.phases.announce(phase)

    def live(self) -> dict[str, float] | None:
        """Return the governor's last cluster power and the budget, or None."""
        decision = getattr(self._gov, "last_decision", None)
        if decision is None or decision.cluster_power_w is None:
            return None
        return {"cluster_w": decision.cluster_power_w, "budget_w": self.settings.budget_w,
                "caps_w": float(sum(decision.limits_w))}

    def summary(self, images: int) -> dict[str, Any]:
        """Cluster power figures of the run, every attempt (collective over all ranks).

        Call it after the ``with`` block: the figures cover the governed windows of every
        attempt of the run (a resumed run's earlier ones too, however they ended), from each
        governor's start to its restore or, for a killed attempt, to its last sample, and come
        from the samples every node wrote (:func:`power.cluster_series.cluster_series`, the
        computation the report draws), so the peak, energy and crossings (one still open at
        the restore included) are those of the chart. Images are every attempt's too
        (``power/attempts.jsonl``, :mod:`power.attempts`); images/s, images/s/W and J/image
        use the same windows. Per-image figures are None when an earlier attempt's images
        are unknown (samples recorded before the ledger existed).

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
            assert self._gpus is not None  # opened with the governor
            from power.attempts import measured_images
            from power.cluster_series import cluster_series

            g = self._gov.summary(images=total)
            if self._ledger is not None:
                self._ledger.end(total, g["crossings"], g["fail_safe_steps"])
            p = self.settings
            cs = cluster_series(series or [])
            s = cs.stats(p.budget_w)
            seconds, energy = s["window_s"], s["energy_j"]
            counted = measured_images(self.out_dir, [seg.start_unix_s for seg in cs.segments],
                                      this_attempt=total)
            images_all = counted.images
            earlier = counted.attempts[:-1]
            killed = [a for a in earlier if not a.ended]
            mine = {
                "enabled": True, "backend": p.backend, "simulated": p.backend == "simulated",
                "gpus_per_node": len(self._gpus), "budget_w": p.budget_w,
                "headroom_w": p.headroom_w, **s,
                "scope": "every attempt of the run",
                "attempts": len(earlier) + 1, "attempts_killed": len(killed),
                "governor_crossings": g["crossings"] + sum(a.governor_crossings or 0
                                                           for a in earlier),
                "fail_safe_steps": g["fail_safe_steps"] + sum(a.fail_safe_steps or 0
                                                              for a in earlier),
                "images": images_all, "images_this_attempt": total,
                "attempts_without_samples": counted.without_samples,
                "segments_without_images": counted.unknown_segments,
                "images_per_s": images_all / seconds if images_all and seconds > 0 else None,
                "images_per_s_per_w": images_all / energy if images_all and energy > 0
                else None,
                "j_per_image": energy / images_all if images_all else None,
                "cpu_power_estimated": self._cpu_estimated(), "dir": str(self.out_dir),
                "power_sensors": [entry for node in sensors or [] if node for entry in node],
                "plan": self._plan.source if self._plan is not None else "",
            }
            pdu_csv = self.out_dir / "pdu.csv"
            if (p.sim_pdu or p.pdu_command) and pdu_csv.exists():
                from power.pdu import read_pdu_csv, wall_stats

                mine["wall"] = wall_stats(read_pdu_csv(pdu_csv), p.budget_w,
                                          source=("simulated PDU" if p.sim_pdu
                                                  else f"meter: {p.pdu_command}"),
                                          since_unix_s=self._started_unix_s or 0.0)
                pdu = getattr(self, "_pdu", None)
                mine["wall"]["meter_faults"] = pdu.tracker.faults if pdu is not None else 0
                describe = getattr(getattr(pdu, "tracker", None), "describe", None)
                if describe is not None and p.hold == "wall":
                    mine["wall"]["model"] = {**describe(), "file": p.wall_model}
            if killed:  # their governors wrote no counts: the samples' crossings still count
                mine["governor_counts_missing_attempts"] = len(killed)
        return self.comm.bcast(mine, root=0) or {"enabled": True}

    def _node_series(self) -> Any:  # power.cluster_series.NodeSeries | None
        """This node's samples of every attempt of the run (read back); None off a leader."""
        if self._sampler is None:
            return None
        from power.cluster_series import read_node_series

        return read_node_series(self._sampler.run_dir)

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


#: Said once (node 0's log) when no meter reads the wall.
WALL_NOT_MEASURED = "wall not measured: PSU losses and fans not governed"


def _wall_model(p: PowerConfig) -> Any:  # power.pdu.RackWallModel
    """The rack's wall model from the ``power`` section (as :func:`_open_sim_pdu` builds it)."""
    from power.pdu import FanModel, PsuCurve, RackWallModel

    return RackWallModel(psu=PsuCurve(rating_w=p.psu_rating_w),
                         fans=FanModel(idle_w=p.fan_idle_w, max_w=p.fan_max_w,
                                       full_load_w=p.psu_rating_w),
                         switch_w=p.pdu_switch_w)


def _open_sim_pdu(p: PowerConfig, csv_path: Path) -> Any:  # power.pdu.SimulatedRackPdu
    """The rack's simulated PDU from the ``power`` section, logging to ``csv_path``."""
    from power.pdu import FanModel, PsuCurve, RackWallModel, SimulatedPdu, SimulatedRackPdu

    model = RackWallModel(psu=PsuCurve(rating_w=p.psu_rating_w),
                          fans=FanModel(idle_w=p.fan_idle_w, max_w=p.fan_max_w,
                                        full_load_w=p.psu_rating_w),
                          switch_w=p.pdu_switch_w)
    from power.wall_hold import open_estimator

    if p.pdu_command:
        from power.pdu import CommandWallMeter, MeteredRack

        cmd = CommandWallMeter(p.pdu_command, scale=p.pdu_scale)
        return MeteredRack(model, cmd, csv_path, budget_w=p.budget_w,
                           tracker=open_estimator(p, window_s=cmd.period_s,
                                                  silent_after_s=cmd.period_s + 4.0,
                                                  name=repr(p.pdu_command)))
    meter = SimulatedPdu(latency_s=p.pdu_latency_s, noise_w=p.pdu_noise_w, seed=p.pdu_seed)
    # The governor knows the meter's readings (and a calibrated model), never this truth model.
    return SimulatedRackPdu(model, meter, csv_path, budget_w=p.budget_w,
                            tracker=open_estimator(
                                p, window_s=meter.window_s,
                                silent_after_s=meter.window_s + meter.latency_s + 3.0,
                                name="simulated PDU"))


def _start_wall_excess_w(p: PowerConfig, nodes: int) -> float:
    """What the start caps leave for the wall's excess over the components (W).

    Holding the wall with a meter, the GPUs start at an even share of the budget less the
    model's excess (PSU losses, fans, switch) at the whole target, so that the first second,
    before the meter has reported, stays under the wall; the governor ramps from there. 0 when
    the components are held.
    """
    if p.hold != "wall" or not (p.sim_pdu or p.pdu_command):
        return 0.0
    from power.phases import wall_excess_w

    return wall_excess_w(_wall_model(p), p.budget_w - p.headroom_w, nodes)


def _phase_board(p: PowerConfig) -> Any:  # power.phases.PhaseBoard
    """The board of announced phases; simulated phases last at least ``power.sim_phase_s``."""
    from power.phases import PhaseBoard

    sim = p.sim_phases and p.backend == "simulated"
    return PhaseBoard(min_s=p.sim_phase_s if sim else 0.0)


def write_node_info(node_dir: Path, index: int) -> None:
    """Record in ``node_dir`` which node it belongs to.

    Record in ``node_dir`` which node it belongs to: ``{"index": i, "host": name}``, the
    name as Slurm says it (``SLURMD_NODENAME``), else the host name. Folders stay
    ``node<index>`` (a stable order the reports read); the name is what people know.
    """
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
