"""Calibrate a wall model: step the caps with the rack meter attached, then fit.

:func:`calibrate` caps every GPU of this node at a staircase of levels (down from the
maximum, then back up, the CPU load alternating low and high on the simulated backend so the
two coefficients can be told apart), records each node's ``(GPU W, other W)`` every
``period_s`` and every meter reading with its arrival time, and fits
:func:`power.wall_model.fit_wall_model` (lag measured). On the simulated backend
(``power.backend: simulated`` with ``power.sim_pdu``) it runs on simulated time: a
calibration takes well under a second. With ``power.pdu_command`` it reads the real rack
meter in real time; the GPUs must be under a steady load meanwhile (e.g. a training run
started with the caps left to this command, or any burn-in tool).

The GPUs' original limits are put back at the end, however it ends.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from power.config import PowerConfig
from power.wall_model import MeterReading, Sample, WallModel, fit_wall_model

log = logging.getLogger(__name__)

#: CPU utilisation (%) the simulated CPU alternates between, level by level.
SIM_CPU_PERCENT: tuple[float, float] = (15.0, 90.0)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A calibration's fit and the data it came from."""

    model: WallModel
    samples: list[Sample]
    readings: list[MeterReading]
    caps_w: list[float]
    """The per-GPU caps stepped through, in order."""


def cap_staircase(lo_w: float, hi_w: float, levels: int) -> list[float]:
    """``levels`` caps from ``hi_w`` down to ``lo_w``, then back up (the top not repeated)."""
    if levels < 2:
        raise ValueError("levels must be >= 2")
    down = [hi_w - (hi_w - lo_w) * i / (levels - 1) for i in range(levels)]
    return down + down[-2::-1]


def calibrate(p: PowerConfig, *, levels: int = 6, hold_s: float = 4.0, period_s: float = 0.1,
              progress: Callable[[int, int, float], None] | None = None) -> Calibration:
    """Step the caps of this node's GPUs, read the meter, fit the wall model.

    Args:
        p: The power section: ``backend``, ``sim_*``, and ``sim_pdu`` or ``pdu_command``.
        levels: Cap levels between each GPU's lowest and highest limit.
        hold_s: Seconds at each level (at least a few meter readings).
        period_s: Component sampling period.
        progress: Called with (step, steps, cap W) at each level.

    Raises:
        ValueError: no meter configured, or too few readings / no variation to fit.
    """
    if not (p.sim_pdu or p.pdu_command):
        raise ValueError("no wall meter: set power.sim_pdu=true (simulated) or "
                         "power.pdu_command (a real rack PDU)")
    from power.backends import open_gpus
    from power.node import NodePower
    from power.pdu import utc_text

    simulated = p.backend == "simulated" and p.sim_pdu
    cpu_pct = [SIM_CPU_PERCENT[0]]
    clock: Any
    if simulated:
        from power.clock import SimClock
        from power.simulated import constant_load

        clock = SimClock()
        gpus = open_gpus(p, clock, loads=[constant_load(0.95) for _ in
                                          range(p.sim_gpus_per_node)])
        node = NodePower(cpu_tdp_w=p.cpu_tdp_w, overhead_w=p.node_overhead_w, rapl=None,
                         cpu_percent=lambda: cpu_pct[0], clock=clock)
    else:
        from power.clock import MonotonicClock

        clock = MonotonicClock()
        gpus = open_gpus(p, clock)
        node = NodePower(cpu_tdp_w=p.cpu_tdp_w, overhead_w=p.node_overhead_w, clock=clock)
    meter = _open_meter(p, clock)
    originals = [g.get_power_limit_mw() for g in gpus]
    lo_mw, hi_mw = gpus[0].get_power_limit_constraints_mw()
    caps = cap_staircase(lo_mw / 1000.0, hi_mw / 1000.0, levels)
    samples: list[Sample] = []
    readings: list[MeterReading] = []
    try:
        for i, cap in enumerate(caps):
            if progress is not None:
                progress(i + 1, len(caps), cap)
            for g in gpus:
                g.set_power_limit_mw(int(round(cap * 1000)))
            cpu_pct[0] = SIM_CPU_PERCENT[i % 2]
            end = clock.now() + hold_s
            while clock.now() < end:
                gpu_w = sum(g.get_power_usage_mw() for g in gpus) / 1000.0
                other = node.other_power_w(gpu_w)
                now = clock.wall_time_s()
                samples.append(Sample(now, ((gpu_w, other),)))
                got = meter.step(now, gpu_w + other)
                if got is not None:
                    readings.append(got)
                clock.sleep(period_s)
    finally:
        for g, mw in zip(gpus, originals, strict=True):
            try:
                g.set_power_limit_mw(mw)
            except Exception as exc:  # noqa: BLE001 - put back what can be put back
                log.error("could not restore GPU limit: %s", exc)
        meter.close()
    model = fit_wall_model(samples, readings, window_s=meter.window_s, meter=meter.name,
                           fitted_utc=utc_text(time.time()))
    return Calibration(model, samples, readings, caps)


class _SimMeter:
    """The simulated rack PDU (truth model + 1-s meter) as calibration reads it."""

    def __init__(self, p: PowerConfig) -> None:
        from power.pdu import FanModel, PsuCurve, RackWallModel, SimulatedPdu

        self.truth = RackWallModel(psu=PsuCurve(rating_w=p.psu_rating_w),
                                   fans=FanModel(idle_w=p.fan_idle_w, max_w=p.fan_max_w,
                                                 full_load_w=p.psu_rating_w),
                                   switch_w=p.pdu_switch_w)
        self.pdu = SimulatedPdu(latency_s=p.pdu_latency_s, noise_w=p.pdu_noise_w,
                                seed=p.pdu_seed)
        self.window_s = self.pdu.window_s
        self.name = "simulated PDU"

    def step(self, now: float, components_w: float) -> MeterReading | None:
        self.pdu.observe(now, self.truth.wall_w([components_w]))
        r = self.pdu.read()
        return None if r is None else MeterReading(r.published_s, r.wall_w)

    def close(self) -> None:
        pass


class _CommandMeter:
    """A real rack meter (``power.pdu_command``), its readings stamped when they arrive."""

    def __init__(self, p: PowerConfig, clock: Any) -> None:
        from power.pdu import CommandWallMeter

        self.meter = CommandWallMeter(p.pdu_command, scale=p.pdu_scale,
                                      clock=clock.wall_time_s)
        self.window_s = self.meter.period_s
        self.name = f"meter: {p.pdu_command}"

    def step(self, now: float, components_w: float) -> MeterReading | None:
        r = self.meter.read()
        return None if r is None else MeterReading(r.unix_s, r.wall_w)

    def close(self) -> None:
        self.meter.close()


def _open_meter(p: PowerConfig, clock: Any) -> _SimMeter | _CommandMeter:
    return _CommandMeter(p, clock) if p.pdu_command else _SimMeter(p)
