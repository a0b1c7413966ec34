"""Numeric precision of a forward pass: fp32, or bf16 autocast where the hardware has it.

bf16 matrix units (CUDA GPUs; on CPUs the AVX-512 BF16 or AMX instructions) run the networks
several times faster; the price is ~3 significant digits in activations. Scores stay fp32 by
default (``eval.precision``) and a bf16 score is always labelled approximate; inference may use
bf16 (``infer.precision: auto``) because its output is quantised to 8 bits anyway and the
difference is bounded by a test (``tests/model/test_precision.py``).
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")
"""Accepted values of the ``precision`` job keys."""


@functools.lru_cache(maxsize=1)
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX-BF16)."""
    try:
        flags = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(choice: str, device: str) -> str:
    """``fp32`` or ``bf16`` for ``choice`` on ``device`` (``auto``: bf16 where it is fast)."""
    if choice != "auto":
        return choice
    return "bf16" if device.startswith("cuda") or cpu_has_bf16() else "fp32"


def autocast(device: str, precision: str) -> Any:
    """A context in which the forward pass runs at ``precision`` (fp32: a no-op)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
