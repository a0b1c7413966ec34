"""Overhead of the 10 Hz power sampler relative to a training-like step.

Run: ``.venv/bin/python benchmarks/bench_sampler.py [--steps 30] [--gpus 4]``

Measures (1) the cost of one sample (4 simulated GPUs + node estimate, CSV write) and hence the
CPU share the sampler takes at 10 Hz, and (2) the median step time of a small conv net training
step on CPU (batch 16 of 3x28x24, like the harness's SR nets) with and without the sampler
running in the background. Target: overhead < 1% of the step time. Sampling real NVML GPUs
costs more per call than the simulator (~0.1-1 ms per query); rerun with real GPUs to check.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from power.clock import SimClock
from power.node import NodePower
from power.sampler import PowerSampler
from power.simulated import make_simulated_gpus


def conv_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor) -> None:
    opt.zero_grad()
    loss = torch.nn.functional.l1_loss(model(x), y)
    loss.backward()
    opt.step()


def median_step_s(steps: int, model, opt, x, y) -> float:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        conv_step(model, opt, x, y)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
        *[m for _ in range(6) for m in (torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU())],
        torch.nn.Conv2d(64, 48, 3, padding=1), torch.nn.PixelShuffle(4))
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x, y = torch.rand(16, 3, 28, 24), torch.rand(16, 3, 112, 96)
    conv_step(model, opt, x, y)  # warm-up

    gpus = make_simulated_gpus("A100-SXM4", args.gpus, clock=SimClock())
    with tempfile.TemporaryDirectory() as tmp:
        node = NodePower()
        s = PowerSampler(gpus, tmp, node=node)
        s.open()
        costs = []
        for _ in range(200):
            t = time.perf_counter()
            s.sample_once()
            costs.append(time.perf_counter() - t)
        s.stop()
        sample_s = statistics.median(costs)

        base = median_step_s(args.steps, model, opt, x, y)
        with PowerSampler(gpus, tmp + "/bg", node=node, rate_hz=args.rate_hz) as bg:
            sampled = median_step_s(args.steps, model, opt, x, y)
        base2 = median_step_s(args.steps, model, opt, x, y)
    base_s = min(base, base2)
    cpu_share = sample_s * args.rate_hz
    print(f"sample cost: {sample_s * 1e3:.3f} ms ({args.gpus} simulated GPUs + node, CSV)")
    print(f"sampler CPU share at {args.rate_hz:g} Hz: {cpu_share * 100:.3f}% of one core")
    print(f"step time: {base_s * 1e3:.1f} ms without, {sampled * 1e3:.1f} ms with sampler "
          f"({bg.samples} samples)")
    print(f"overhead per step (sampling work / step): "
          f"{cpu_share * 100:.3f}%  (target < 1%)")
    print(f"measured step-time difference: {(sampled / base_s - 1) * 100:+.2f}% "
          "(noisy on a shared machine)")


if __name__ == "__main__":
    main()
