"""Training batches of one rank, made ahead of the step that needs them (``data.workers``).

A batch is a pure function of (seed, step, rank) (:func:`harness.data.pairs.batch_indices` and
an augmentation generator seeded by ``[seed, step, rank]``), so batches made by background
threads are bit-identical to batches made in the training loop: with ``data.workers: N`` the
next N steps' batches are prepared while the current step computes.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from harness.config import DataConfig, TrainConfig
from harness.data.pairs import PairSet, batch_indices, make_batch


class BatchLoader:
    """``get(step)`` -> ``(indices, lr, hr, flips)`` of this rank; prefetches with workers.

    Args:
        pairs: The training pairs.
        train: Batch size, seed and steps (``train``).
        data: Augmentation, degradation and ``data.workers`` (``data``).
        rank: This rank.
        world: Number of ranks.
    """

    def __init__(self, pairs: PairSet, train: TrainConfig, data: DataConfig, rank: int,
                 world: int) -> None:
        self.pairs, self.train, self.data, self.rank, self.world = pairs, train, data, rank, world
        self.workers = data.workers
        self._pool = ThreadPoolExecutor(self.workers, "batches") if self.workers else None
        self._pending: dict[int, Future] = {}

    def make(self, step: int) -> tuple[list[int], Any, Any, list[bool]]:
        """The batch of ``step`` (in the calling thread)."""
        t = self.train
        idx = batch_indices(len(self.pairs), t.batch_size, step, self.rank, self.world, t.seed)
        lr, hr, flips = make_batch(self.pairs, idx, self.data.augment,
                                   np.random.default_rng([t.seed, step, self.rank]),
                                   return_flips=True, lr_kernel=self.data.lr_kernel)
        return idx, lr, hr, flips

    def get(self, step: int) -> tuple[list[int], Any, Any, list[bool]]:
        """The batch of ``step``, and the next ``workers`` steps' batches set in motion."""
        if self._pool is None:
            return self.make(step)
        for ahead in range(step, min(step + self.workers + 1, self.train.steps)):
            if ahead not in self._pending:
                self._pending[ahead] = self._pool.submit(self.make, ahead)
        future = self._pending.pop(step, None)
        for stale in [s for s in self._pending if s < step]:
            self._pending.pop(stale).cancel()
        return future.result() if future is not None else self.make(step)

    def close(self) -> None:
        """Stop the worker threads (pending batches are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
