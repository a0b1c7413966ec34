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
    """A value that fails validation; ``key`` is the dotted path below the section
    (:mod:`harness.config` adds the section and the file). ``str()`` is ``key: message``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


#: Largest budget accepted, in W: 100 MW, several times the largest supercomputer's draw (a
#: budget beyond it is a typo, e.g. 3e12 for 3e3).
MAX_BUDGET_W: float = 1e8


def check_budget(budget_w: float, headroom_w: float = 0.0) -> None:
    """The one budget rule: a finite budget in (0, :data:`MAX_BUDGET_W`] W and a headroom in
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

    def __post_init__(self) -> None:
        check_budget(self.budget_w, self.headroom_w)
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
