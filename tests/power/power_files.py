"""Run-folder power files in the sampler's and governor's formats, for the tests of the
cluster series and of the report's power figures."""
from __future__ import annotations

import json
from pathlib import Path

from power.clock import SIM_WALL_ORIGIN_S as T0
from power.clock import utc_iso

BUDGET_W = 3000.0


def node_power_w(node: int, t: float) -> float:
    """A node's total power at ``t`` s after T0: 1400 W, 1550 W from 1.5 s on, 1600 W
    (caps restored) from 2.1 s on."""
    return 1600.0 if t >= 2.1 else 1550.0 if t >= 1.5 else 1400.0


def write_node(pdir: Path, node: int, offset_s: float, start_s: float, restore_s: float) -> None:
    """A node folder in the sampler's and governor's formats: 2 GPUs + 200 W other power,
    10 Hz from ``offset_s`` to 2.5 s after T0; governor start and restore at the given times."""
    d = pdir / f"node{node:03d}"
    d.mkdir(parents=True)
    gpu = ["time_s,gpu,power_w,energy_j,limit_w,util,clock,energy_avg_w,mono_s,unix_s,utc"]
    other = [("time_s,cpu_w,dram_w,overhead_w,meter_w,other_w,energy_j,estimated,source,"
              "mono_s,unix_s,utc")]
    energy = 0.0
    prev = None
    k = 0
    while offset_s + 0.1 * k <= 2.5 + 1e-9:
        t = offset_s + 0.1 * k
        w = node_power_w(node, t)
        if prev is not None:
            energy += 0.5 * (prev + w) * 0.1
        prev = w
        unix = T0 + t
        stamp = f"{t:.4f},{unix:.4f},{utc_iso(unix)}"
        for g in range(2):
            gpu.append(f"{0.1 * k:.4f},{g},{(w - 200) / 2:.3f},{energy * (w - 200) / w / 2:.3f},"
                       f"400.000,100,1410,,{stamp}")
        other.append(f"{0.1 * k:.4f},100.000,,100.000,,200.000,{energy * 200 / w:.3f},True,"
                     f"estimate,{stamp}")
        k += 1
    (d / "gpu_power.csv").write_text("\n".join(gpu) + "\n")
    (d / "node_power.csv").write_text("\n".join(other) + "\n")
    name = "governor_events.jsonl" if node == 0 else f"governor_events.rank{node}.jsonl"
    events = [{"event": "start", "wall_time": T0 + start_s, "rank": node, "budget_w": BUDGET_W,
               "headroom_w": 150.0},
              {"event": "restore", "wall_time": T0 + restore_s, "rank": node,
               "reason": "exit", "errors": []}]
    (d / name).write_text("".join(json.dumps(e) + "\n" for e in events))


def two_nodes(pdir: Path) -> None:
    """Samplers 0.3 s apart; governors start at 0.35/0.4 s and restore at 2.0/2.05 s."""
    write_node(pdir, 0, 0.0, 0.35, 2.05)
    write_node(pdir, 1, 0.3, 0.4, 2.0)
