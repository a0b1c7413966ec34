"""The ``power`` section of a job, and the one rule for a power budget.

:class:`PowerConfig` is the typed, validated ``power:`` mapping of a job file; job files are
still read in one place (:mod:`harness.config`), which builds this dataclass like every other
section. It lives here so that the power session (:mod:`power.session`) needs nothing from the
harness. :func:`check_budget` is the budget rule every part uses (config, governor, policy,
planner, crossings) and :data:`DEFAULT_BUDGET_W` the one default (the ASC19 limit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

#: The competition's whole-cluster limit (ASC19: 3000 W), the default budget everywhere.
DEFAULT_BUDGET_W = 3000.0


class FieldError(ValueError):
    """A value that fails validation.

    A value that fails validation; ``key`` is the dotted path below the section
    (:mod:`harness.config` adds the section and the file). ``str()`` is ``key: message``.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


#: Largest budget accepted, in W: 100 MW, several times the largest supercomputer's draw (a
#: budget beyond it is a typo, e.g. 3e12 for 3e3).
MAX_BUDGET_W: float = 1e8


def check_budget(budget_w: float, headroom_w: float = 0.0) -> None:
    """Check a budget and headroom (the one budget rule).

    The one budget rule: a finite budget in (0, :data:`MAX_BUDGET_W`] W and a headroom in
    [0, budget).

    Raises:
        FieldError: (a ``ValueError``) naming ``budget_w`` or ``headroom_w``.
    """
    if not (isinstance(budget_w, (int, float)) and math.isfinite(budget_w) and budget_w > 0):
        raise FieldError("budget_w", f"must be a finite number > 0, got {budget_w}")
    if budget_w > MAX_BUDGET_W:
        raise FieldError("budget_w", f"{budget_w:g} W is beyond any cluster (at most "
                         f"{MAX_BUDGET_W:g} W)")
    if not (isinstance(headroom_w, (int, float)) and math.isfinite(headroom_w)
            and 0 <= headroom_w < budget_w):
        raise FieldError("headroom_w", f"must be >= 0 and below budget_w ({budget_w:g}), "
                         f"got {headroom_w}")


def check(condition: bool, key: str, message: str) -> None:
    """Raise :class:`FieldError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise FieldError(key, message)


@dataclass(frozen=True, kw_only=True, slots=True)
class PowerConfig:
    """Power measurement and the cluster-wide governor."""

    enabled: bool = False
    """Run the sampler and governor during train/infer."""
    backend: Literal["simulated", "nvml", "replay", "auto"] = "simulated"
    """Where GPU power comes from: simulated GPUs, NVIDIA NVML, or a recorded trace; ``auto``
    is NVML where this node has NVIDIA GPUs and simulated GPUs elsewhere (said in the log)."""
    budget_w: float = DEFAULT_BUDGET_W
    """Whole-cluster power budget in watts (GPUs + CPUs + node overhead + switch)."""
    headroom_w: float = 150.0
    """Safety margin kept below the budget."""
    mode: Literal["power_limit", "clocks"] = "power_limit"
    """Cap GPUs by power limit or by locked clocks."""
    control_hz: float = 10.0
    """Governor control frequency."""
    sample_hz: float = 10.0
    """Power sampling frequency (>= 10 Hz)."""
    stale_s: float = 1.0
    """Readings older than this trigger the fail-safe cap."""
    sim_profile: str = "A100-SXM4"
    """Simulated GPU profile (see ``power.simulated``)."""
    sim_gpus_per_node: int = 4
    """Simulated GPUs per node."""
    replay_csv: str = ""
    """Trace to replay when ``backend: replay``."""
    node_overhead_w: float = 150.0
    """Fixed per-node power besides CPUs and GPUs (fans, NICs, disks)."""
    switch_w: float = 0.0
    """Power of the cluster switch, counted once."""
    cpu_tdp_w: float = 205.0
    """CPU package TDP used to estimate CPU power where RAPL is unreadable."""
    meter_command: str = ""
    """Optional command printing node power (e.g. ``ipmitool dcmi power reading``). It runs in
    its own thread, so a command slower than the sampling period never delays the GPU samples;
    a value older than max(2 s, 2 x the command's run time, 2 s between runs) is not used (the
    node's power is then estimated, and says so)."""
    power_source: Literal["auto", "instant", "usage"] = "auto"
    """Which NVML power reading each GPU uses (``backend: nvml``): ``auto`` the instant field
    where the driver has it, else ``nvmlDeviceGetPowerUsage``; ``instant`` that field or an
    error; ``usage`` always ``nvmlDeviceGetPowerUsage`` (a 1-s average on Ampere and newer)."""
    sim_sensor: Literal["instant", "average_1s"] = "instant"
    """What a simulated GPU's power reading models (``backend: simulated``): a perfect
    instantaneous sensor, or ``nvmlDeviceGetPowerUsage``'s 1-s average."""
    plan: str = ""
    """A power plan (``plan.json``, a ``sweep.json`` holding one, or a sweep folder, from
    ``harness power-sweep``): ``harness launch`` starts its nodes and GPUs, and every GPU
    starts at its planned cap (the governor still moves it); empty = no plan."""

    sim_pdu: bool = False
    """Simulate the judges' rack PDU at the wall (PSU losses, fans, switch, a 1-s averaging,
    late, noisy meter; see ``power.pdu``); off by default."""
    psu_rating_w: float = 3000.0
    """Rated DC output of each node's PSU for the simulated PDU (80 PLUS Platinum-like curve)."""
    fan_idle_w: float = 30.0
    """Simulated fan power of a node at idle, in W."""
    fan_max_w: float = 150.0
    """Simulated fan power of a node at full load, in W."""
    pdu_switch_w: float = 60.0
    """Simulated rack switch power at the wall, in W."""
    pdu_latency_s: float = 1.0
    """Simulated PDU: delay between a 1-s window's end and its report, in s."""
    pdu_noise_w: float = 5.0
    """Simulated PDU: standard deviation of the reading noise, in W."""
    pdu_seed: int = 0
    """Simulated PDU: seed of the reading noise."""
    pdu_command: str = ""
    """A real rack meter: a command printing the rack's wall power (polled once a second);
    its readings go to ``power/pdu.csv`` and the governor holds them like ``sim_pdu``'s."""
    pdu_scale: float = 1.0
    """Multiplier turning ``pdu_command``'s number into W (e.g. 1000 for kW)."""
    hold: Literal["wall", "components"] = "wall"
    """With a wall meter (``sim_pdu``): hold the budget at the wall (predicted wall power,
    corrected by the meter) or only the components' sum (the old behaviour)."""
    wall_model: str = ""
    """A wall model from ``harness power-calibrate`` (JSON): with a wall meter the governor
    predicts the wall through it and corrects it online; empty = learn the wall from the
    meter online (see ``power.wall_hold``)."""

    sim_phases: bool = False
    """Simulated GPUs follow the phase the training loop announces (``power.phases``): idle at
    the start and while a checkpoint is written, a lighter forward-only load in validation and
    evaluation; off: the load depends on time only."""
    sim_phase_s: float = 2.0
    """With ``sim_phases``: the shortest simulated validation, checkpoint or evaluation, in s
    (what it takes on a GPU node, however fast this machine does it; 0: as announced)."""
    hold_phases: bool = True
    """Hold the GPU caps through announced validation, checkpoint and evaluation phases
    instead of letting them follow the lower draw down and ramping them back up after."""

    def __post_init__(self) -> None:
        check_budget(self.budget_w, self.headroom_w)
        check(0 <= self.sim_phase_s <= 600, "sim_phase_s", "must be between 0 and 600")
        check(self.psu_rating_w > 0, "psu_rating_w", "must be > 0")
        check(0 <= self.fan_idle_w <= self.fan_max_w, "fan_idle_w",
              "must be >= 0 and <= fan_max_w")
        check(self.pdu_switch_w >= 0, "pdu_switch_w", "must be >= 0")
        check(0 <= self.pdu_latency_s <= 60, "pdu_latency_s", "must be between 0 and 60")
        check(self.pdu_noise_w >= 0, "pdu_noise_w", "must be >= 0")
        check(self.pdu_scale > 0, "pdu_scale", "must be > 0")
        check(not (self.sim_pdu and self.pdu_command), "pdu_command",
              "give either sim_pdu or pdu_command, not both")
        check(0 < self.control_hz <= 100, "control_hz", "must be in (0, 100]")
        check(10 <= self.sample_hz <= 1000, "sample_hz", "must be between 10 and 1000")
        check(self.stale_s > 0, "stale_s", "must be > 0")
        check(1 <= self.sim_gpus_per_node <= 16, "sim_gpus_per_node", "must be between 1 and 16")
        check(self.node_overhead_w >= 0, "node_overhead_w", "must be >= 0")
        check(self.switch_w >= 0, "switch_w", "must be >= 0")
        check(self.cpu_tdp_w >= 0, "cpu_tdp_w", "must be >= 0")
        check(self.backend != "replay" or bool(self.replay_csv), "replay_csv",
               "must name a CSV trace when backend is replay")
        check(not any(ord(c) < 32 or ord(c) == 127 for c in self.plan), "plan",
              "contains a control character (newline, NUL, ...)")
        if self.wall_model:
            from power.wall_model import WallModelError, load_wall_model

            try:
                load_wall_model(self.wall_model)
            except WallModelError as exc:
                raise FieldError("wall_model", str(exc)) from None
