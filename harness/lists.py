"""List helpers every room may use (dealing work out to ranks and back).

Imports nothing of the project, so that data, cluster and scoring may all take them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Every ``world_size``-th item starting at ``rank`` (round-robin, order-preserving)."""
    return list(items[rank::world_size])


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """Inverse of :func:`shard`: interleave the per-rank lists back into the original order."""
    out: list[T] = []
    longest = max((len(p) for p in parts), default=0)
    for i in range(longest):
        for part in parts:
            if i < len(part):
                out.append(part[i])
    return out
