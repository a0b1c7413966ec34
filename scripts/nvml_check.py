"""Check NVML power measurement and control on a real GPU machine.

Run: ``python scripts/nvml_check.py [--set-limit-w 250] [--seconds 2]``

For each visible GPU: name, UUID, power, energy counter over a short interval (vs the
power-based estimate), limit range and default. With permission (root), it lowers the limit
(to ``--set-limit-w`` or the middle of the range), reads it back, and restores the original.
Without a GPU or driver it prints one line and exits with status 1.
"""
from __future__ import annotations

import argparse
import sys
import time

from power.errors import NoPermissionError, NotSupportedError, PowerError
from power.nvml import open_nvml_gpus, shutdown_nvml


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set-limit-w", type=float, default=None)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    try:
        gpus = open_nvml_gpus()
    except PowerError as exc:
        print(f"nvml_check: no usable NVIDIA GPU here: {exc}")
        return 1
    if not gpus:
        print("nvml_check: NVML found no GPU (check CUDA_VISIBLE_DEVICES)")
        return 1
    status = 0
    try:
        for g in gpus:
            lo, hi = g.get_power_limit_constraints_mw()
            print(f"GPU {g.index}: {g.get_name()} {g.get_uuid()}")
            print(f"  limit {g.get_power_limit_mw() / 1000:.1f} W (default "
                  f"{g.get_default_power_limit_mw() / 1000:.1f} W, range {lo / 1000:.0f}-"
                  f"{hi / 1000:.0f} W); clocks {g.get_clock_range_mhz()} MHz, now "
                  f"{g.get_gpu_clock_mhz()} MHz; util {g.get_utilization_percent()}%")
            e0 = g.get_total_energy_consumption_mj() if g.supports_energy_counter() else None
            t0, samples = time.monotonic(), []
            while time.monotonic() - t0 < args.seconds:
                samples.append(g.get_power_usage_mw() / 1000)
                time.sleep(0.1)
            dt = time.monotonic() - t0
            mean_w = sum(samples) / len(samples)
            line = f"  power {mean_w:.1f} W mean of {len(samples)} samples"
            if e0 is not None:
                e_j = (g.get_total_energy_consumption_mj() - e0) / 1000
                line += f"; energy counter {e_j:.1f} J in {dt:.2f} s = {e_j / dt:.1f} W"
            else:
                line += "; no energy counter (pre-Volta): energy must be integrated"
            print(line)
            original = g.get_power_limit_mw()
            target = int((args.set_limit_w * 1000) if args.set_limit_w else (lo + hi) // 2)
            try:
                g.set_power_limit_mw(target)
                got = g.get_power_limit_mw()
                g.set_power_limit_mw(original)
                back = g.get_power_limit_mw()
                ok = got == target and back == original
                print(f"  set limit {target / 1000:.1f} W -> read {got / 1000:.1f} W; restored "
                      f"{back / 1000:.1f} W: {'OK' if ok else 'MISMATCH'}")
                status |= 0 if ok else 2
            except NoPermissionError:
                print("  setting limits: no permission (run as root to test control)")
            except (NotSupportedError, PowerError) as exc:
                print(f"  setting limits failed: {exc}")
                status |= 2
    finally:
        shutdown_nvml()
    return status


if __name__ == "__main__":
    sys.exit(main())
