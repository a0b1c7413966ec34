"""The GPU backends a job can name in ``power.backend``, in one registry.

Each backend opens this node's GPUs as :class:`power.gpu.GPU` objects:

* ``nvml`` — the node's NVIDIA GPUs through NVML (:mod:`power.nvml`), reading
  ``power.power_source``;
* ``replay`` — a recorded power trace (:mod:`power.replay`), ``power.replay_csv``;
* ``simulated`` — simulated GPUs of ``power.sim_profile`` (:mod:`power.simulated`).

``auto`` is not a backend but a choice: :func:`resolve_backend` makes it ``nvml`` where NVML
finds GPUs, else ``simulated``. Adding a backend is one entry in :data:`BACKENDS`.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fileio.user_error import UserError
from power.config import PowerConfig

log = logging.getLogger(__name__)


def _open_nvml(p: PowerConfig, clock: Any, **_: Any) -> list:
    from power.errors import PowerError
    from power.nvml import open_nvml_gpus

    try:
        return open_nvml_gpus(power_source=p.power_source)
    except PowerError as exc:
        raise UserError(f"power.backend: nvml: {exc} (run `harness doctor`; use "
                        "power.backend: simulated on machines without GPUs)") from None


def _open_replay(p: PowerConfig, clock: Any, **_: Any) -> list:
    from power.replay import replay_gpus

    if not Path(p.replay_csv).is_file():
        raise UserError(f"power.replay_csv: {p.replay_csv}: file not found")
    return replay_gpus(p.replay_csv, clock=clock)


def _open_simulated(p: PowerConfig, clock: Any, *, loads: Any = None, seed: int = 0,
                    state_path: str | None = None) -> list:
    from power.simulated import get_profile, make_simulated_gpus

    try:
        get_profile(p.sim_profile)
    except (KeyError, ValueError) as exc:
        raise UserError(f"power.sim_profile: {exc}") from None
    from power.errors import PowerError

    try:
        return make_simulated_gpus(p.sim_profile, p.sim_gpus_per_node, clock=clock,
                                   loads=loads, seed=seed, state_path=state_path,
                                   sensor=p.sim_sensor)
    except PowerError as exc:
        raise UserError(f"--sim-state {exc}") from None


#: ``power.backend`` -> opener ``(settings, clock, *, loads, seed, state_path) -> [GPU]``.
BACKENDS: dict[str, Callable[..., list]] = {
    "nvml": _open_nvml,
    "replay": _open_replay,
    "simulated": _open_simulated,
}


def resolve_backend(p: PowerConfig) -> PowerConfig:
    """Return ``p`` with ``backend: auto`` made concrete.

    ``p`` with ``backend: auto`` made concrete: ``nvml`` when NVML finds GPUs on this node,
    else ``simulated`` (said in the log). Other settings come back unchanged.
    """
    if p.backend != "auto":
        return p
    from power.nvml import open_nvml_gpus

    backend: Literal["nvml", "simulated"]
    try:
        backend = "nvml" if open_nvml_gpus() else "simulated"
    except Exception as exc:  # noqa: BLE001 - any failure to open NVML means: no NVML GPUs
        backend = "simulated"
        log.info("power.backend auto: no NVML GPUs here (%s): simulated GPUs", exc)
    return dataclasses.replace(p, backend=backend)


def open_gpus(p: PowerConfig, clock: Any, *, loads: Any = None, seed: int = 0,
              state_path: str | None = None) -> list:
    """Open this node's GPUs for ``p.backend``.

    This node's GPUs for ``p.backend`` (``auto`` resolved first): NVML, a replayed trace, or
    simulated GPUs (with ``loads``, ``seed`` and optional persisted ``state_path``).

    Raises:
        UserError: no NVML GPU, a missing trace, or an unknown simulation profile.
    """
    p = resolve_backend(p)
    return BACKENDS[p.backend](p, clock, loads=loads, seed=seed, state_path=state_path)
