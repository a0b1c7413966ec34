"""Face super-resolution networks and training losses.

Generators are chosen by name from the explicit :data:`MODELS` dict (no registry, no module
scanning)::

    from kernels import build_model, count_parameters
    net = build_model("srresnet", num_feat=32, num_blocks=8)   # (N,3,28,24) -> (N,3,112,96)
    print(count_parameters(net))

Every generator takes ``(N, 3, h, w)`` RGB in ``[0, 1]`` and returns ``(N, 3, scale*h,
scale*w)`` unclamped (clamp at inference). Files: ``bicubic_arch.py`` (PIL-exact bicubic),
``srresnet_arch.py``, ``rrdb_arch.py`` (ESRGAN, BasicSR names), ``discriminator_arch.py``,
``losses.py``.
"""
from __future__ import annotations

import inspect

from torch import nn

from kernels.bicubic_arch import BicubicUpsampler, bicubic_upsample
from kernels.discriminator_arch import VGGStyleDiscriminator
from kernels.rrdb_arch import RRDBNet, convert_esrgan_state_dict
from kernels.srresnet_arch import SRResNet

__all__ = [
    "MODELS",
    "BicubicUpsampler",
    "RRDBNet",
    "SRResNet",
    "VGGStyleDiscriminator",
    "bicubic_upsample",
    "build_model",
    "convert_esrgan_state_dict",
    "count_parameters",
]

MODELS: dict[str, type[nn.Module]] = {
    "bicubic": BicubicUpsampler,
    "srresnet": SRResNet,
    "rrdb": RRDBNet,
}
"""Generator name (as written in job files) -> class."""


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Construct the generator called ``name`` with keyword arguments.

    Args:
        name: A key of :data:`MODELS` (``"bicubic"``, ``"srresnet"``, ``"rrdb"``).
        **kwargs: Constructor arguments of that class, e.g. ``num_feat=32, scale=4``.

    Returns:
        The new module, in training mode, on the CPU.

    Raises:
        ValueError: If ``name`` is not a known model (the message lists the valid names).
        TypeError: If a keyword is not an argument of that model (the message names it and
            lists the accepted ones).
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}"
        ) from None
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"model {name!r} got unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model``.

    Args:
        model: Any module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The total number of elements over ``model.parameters()``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
