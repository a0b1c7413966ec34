"""Generator speed on this CPU: parameters, ms per image, GFLOP/s against the matmul peak.

Run from the repository root::

    .venv/bin/python benchmarks/bench_kernels.py            # ~1-2 min on 2 idle cores
    .venv/bin/python benchmarks/bench_kernels.py --full     # adds wide RRDBs (several min)

For every generator configuration it times a batch of LR faces (default 16 x 3 x 28 x 24, the
ASC19 input) in inference (``torch.no_grad``, forward only) and training (forward, L1 loss,
backward) and reports the median (``--stat min``: the best) of ``--reps`` runs after one
warm-up. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; element-wise
work such as activations is not counted, so GFLOP/s is slightly understated). The reference
peak is the best measured fp32 throughput of a large ``torch.mm`` with the same thread count.

The header prints the 1-minute load average: on a shared machine, a load above the thread count
means the figures are inflated by contention (rerun when it is idle).

Sanity check (as in ReFrame): each model's output must have shape ``(N, 3, 4h, 4w)`` and be
finite, otherwise the script exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from kernels import build_model, count_parameters

CONFIGS: list[tuple[str, dict[str, object]]] = [
    ("bicubic", {}),
    ("srresnet", {"num_feat": 16, "num_blocks": 8}),
    ("srresnet", {"num_feat": 32, "num_blocks": 16}),
    ("srresnet", {"num_feat": 64, "num_blocks": 16}),
    ("rrdb", {"num_feat": 32, "num_block": 4, "num_grow_ch": 16}),
]
FULL_CONFIGS: list[tuple[str, dict[str, object]]] = [
    ("rrdb", {"num_feat": 64, "num_block": 6, "num_grow_ch": 32}),
    ("rrdb", {"num_feat": 64, "num_block": 23, "num_grow_ch": 32}),  # ESRGAN
]


@dataclass(frozen=True, slots=True)
class Result:
    """Figures for one generator configuration; times are per image."""

    label: str
    params: int
    forward_ms: float
    train_ms: float
    forward_gflop: float
    train_gflop: float

    @property
    def forward_gflops(self) -> float:
        """Achieved GFLOP/s in inference."""
        return self.forward_gflop / (self.forward_ms / 1e3)

    @property
    def train_gflops(self) -> float:
        """Achieved GFLOP/s in a training step (forward + backward)."""
        return self.train_gflop / (self.train_ms / 1e3)


def time_seconds(
    fn: Callable[[], object], reps: int, warmup: int = 1, stat: str = "median"
) -> float:
    """Median (or ``stat="min"``: best) wall time of ``fn()`` over ``reps`` timed calls.

    ``warmup`` untimed calls come first (oneDNN builds its kernels on the first call).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if stat == "min" else statistics.median(times)


def matmul_peak_gflops(size: int = 2048, reps: int = 5) -> float:
    """Measured fp32 ``torch.mm`` throughput for ``size x size`` matrices, in GFLOP/s."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    seconds = time_seconds(lambda: torch.mm(a, b), reps, warmup=2, stat="min")
    return 2 * size**3 / seconds / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the convolutions and matrix products ``fn()`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_model(
    name: str,
    kwargs: dict[str, object],
    lr: torch.Tensor,
    hr: torch.Tensor,
    reps: int,
    stat: str = "median",
) -> Result:
    """Time one generator in inference and training on the batch ``lr`` (targets ``hr``).

    Raises:
        RuntimeError: If the output has the wrong shape or non-finite values.
    """
    model = build_model(name, **kwargs)
    trainable = count_parameters(model, trainable_only=True) > 0

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(lr)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(lr)
        if trainable:
            (out - hr).abs().mean().backward()

    out = forward()
    if out.shape != hr.shape or not torch.isfinite(out).all():
        raise RuntimeError(f"{name} {kwargs}: bad output {tuple(out.shape)}")
    batch = lr.shape[0]
    label = name + "".join(f" {k}={v}" for k, v in kwargs.items())
    return Result(
        label=label,
        params=count_parameters(model),
        forward_ms=time_seconds(forward, reps, stat=stat) / batch * 1e3,
        train_ms=time_seconds(train_step, reps, stat=stat) / batch * 1e3,
        forward_gflop=count_flops(forward) / batch / 1e9,
        train_gflop=count_flops(train_step) / batch / 1e9,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every configuration, print the table; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch", type=int, default=16, help="LR images per batch")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions")
    parser.add_argument(
        "--stat", choices=("median", "min"), default="median",
        help="statistic over the repetitions (min is steadier on a shared machine)",
    )
    parser.add_argument("--full", action="store_true", help="add wide and ESRGAN-size RRDBNets")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lr = torch.rand(args.batch, 3, 28, 24)
    hr = torch.rand(args.batch, 3, 112, 96)
    peak = matmul_peak_gflops()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x "
        f"3x28x24 -> 3x112x96, {args.stat} of {args.reps}"
    )
    print(
        f"fp32 matmul peak (best 2048^3 torch.mm): {peak:.1f} GFLOP/s; "
        f"1-min load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'model':<44} {'params':>10} {'fwd ms/img':>10} {'fwd GFLOP':>9} {'fwd GF/s':>8} "
        f"{'%peak':>5} {'f+b ms/img':>10} {'f+b GFLOP':>9} {'f+b GF/s':>8} {'%peak':>5}"
    )
    print(header)
    print("-" * len(header))
    configs = CONFIGS + (FULL_CONFIGS if args.full else [])
    failed = False
    for name, kwargs in configs:
        try:
            r = bench_model(name, kwargs, lr, hr, args.reps, args.stat)
        except RuntimeError as err:
            print(f"SANITY FAILED: {err}")
            failed = True
            continue
        print(
            f"{r.label:<44} {r.params:>10,} {r.forward_ms:>10.2f} {r.forward_gflop:>9.3f} "
            f"{r.forward_gflops:>8.1f} {100 * r.forward_gflops / peak:>5.0f} "
            f"{r.train_ms:>10.2f} {r.train_gflop:>9.3f} {r.train_gflops:>8.1f} "
            f"{100 * r.train_gflops / peak:>5.0f}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
