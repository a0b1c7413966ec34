"""Exponential moving average (EMA) of the generator's weights (``train.ema``).

The shadow copy is updated after every optimizer step, ``shadow = decay * shadow + (1 - decay)
* weights``; buffers are copied. Every rank keeps the same shadow (DDP keeps the weights in
step), so validation on the EMA weights shards exactly as on the raw ones.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


class Ema:
    """A shadow copy of a model's weights, averaged with ``decay`` after each step."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        """Start the shadow from ``model``'s current weights.

        Args:
            model: The (unwrapped) generator.
            decay: Weight of the old shadow in each update, in (0, 1).
        """
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the shadow towards ``model``'s weights (call after each optimizer step)."""
        for shadow, param in zip(self.model.parameters(), model.parameters(), strict=True):
            shadow.lerp_(param.detach(), 1.0 - self.decay)
        for shadow_b, buf in zip(self.model.buffers(), model.buffers(), strict=True):
            shadow_b.copy_(buf)

    def state_dict(self) -> dict[str, Any]:
        """The shadow weights (a generator state dict, loadable by inference)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the shadow weights from :meth:`state_dict`."""
        self.model.load_state_dict(state)


def make_ema(model: torch.nn.Module, decay: float) -> Ema | None:
    """An :class:`Ema` of ``model`` when ``decay`` is on (> 0), else None (training as before)."""
    return Ema(model, decay) if decay > 0 else None
