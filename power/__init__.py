r"""GPU power measurement and a cluster-wide power governor (budget default 3000 W).

Pieces (all take their backend, clock and communicator as arguments - no globals):

* :class:`power.gpu.GPU` - the one control interface (units in names: mW, mJ, MHz).
  Backends: :func:`power.nvml.open_nvml_gpus` (real NVIDIA GPUs, respects
  ``CUDA_VISIBLE_DEVICES``), :func:`power.simulated.make_simulated_gpus` (physical model with
  V100/A100/H100/L40S/L4 profiles), :func:`power.replay.replay_gpus` (recorded CSV traces).
* :class:`power.node.NodePower` - CPU/DRAM via RAPL, else an estimate flagged
  ``estimated=True``; fixed overhead; optional external meter (``ipmitool dcmi power reading``).
* :class:`power.sampler.PowerSampler` - >= 10 Hz background time series into the run directory.
* :func:`power.policy.decide` - the pure capping policy; :class:`power.governor.Governor` -
  applies it every period across nodes and restores all limits on exit, exceptions, SIGINT and
  SIGTERM.

Typical use on local rank 0 of every node (``comm`` holds one process per node)::

    from power import Governor, MpiComm, NodePower, PowerSampler, open_nvml_gpus

    gpus = open_nvml_gpus()
    node = NodePower(cpu_tdp_w=2 * 165, overhead_w=80)
    comm = MpiComm.node_leaders(MPI.COMM_WORLD, local_rank)   # or SingleProcessComm()
    with PowerSampler(gpus, run_dir, node=node), \
         Governor(gpus, comm=comm, budget_w=3000, headroom_w=50,
                  other_power_w=node.other_power_w, run_dir=run_dir) as gov:
        for batch in loader:
            busy_s = train_step(batch)          # compute time, before the all-reduce wait
            gov.note_busy_time_s(0, busy_s)     # per local GPU, optional (straggler balancing)
            gov.step()                          # or gov.start() once for a background thread
    print(gov.summary(images=images_seen))    # W, J, crossings, images/s/W, J/image

Without hardware, swap ``open_nvml_gpus()`` for ``make_simulated_gpus("H100-SXM5", 4,
clock=clock)``; ``python -m power.demo`` runs a governed fake workload.
"""
from __future__ import annotations

from power.clock import Clock, MonotonicClock, SimClock
from power.comm import Communicator, InProcessGroup, MpiComm, SingleProcessComm
from power.errors import (
                          LibraryMissingError,
                          NoPermissionError,
                          NotSupportedError,
                          OutOfRangeError,
                          PowerError,
)
from power.governor import Crossing, Governor
from power.gpu import GPU
from power.node import ExternalMeter, NodePower, RaplReader, parse_meter_output
from power.nvml import open_nvml_gpus, shutdown_nvml
from power.policy import Decision, GpuReading, PolicyConfig, decide
from power.replay import load_trace, replay_gpus
from power.sampler import PowerSampler
from power.simulated import (
                          PROFILES,
                          GpuProfile,
                          SimulatedGPU,
                          get_profile,
                          make_simulated_gpus,
)

__all__ = [
                          "GPU",
                          "PROFILES",
                          "Clock",
                          "Communicator",
                          "Crossing",
                          "Decision",
                          "ExternalMeter",
                          "Governor",
                          "GpuProfile",
                          "GpuReading",
                          "InProcessGroup",
                          "LibraryMissingError",
                          "MonotonicClock",
                          "MpiComm",
                          "NoPermissionError",
                          "NodePower",
                          "NotSupportedError",
                          "OutOfRangeError",
                          "PolicyConfig",
                          "PowerError",
                          "PowerSampler",
                          "RaplReader",
                          "SimClock",
                          "SimulatedGPU",
                          "SingleProcessComm",
                          "decide",
                          "get_profile",
                          "load_trace",
                          "make_simulated_gpus",
                          "open_nvml_gpus",
                          "parse_meter_output",
                          "replay_gpus",
                          "shutdown_nvml",
]
