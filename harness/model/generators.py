"""Generators (the SR networks in ``kernels/``) as a job uses them: build, load, place, run.

Every command that touches a generator comes here, and builds it with one function,
:func:`make_generator`, from the ``model`` section: training builds one (fresh, or started from
``model.init_from``) and checks it before its run folder exists; inference and the power sweep
load a checkpoint or the weights shipped in ``kernels/weights``. One place also decides the
device and the CPU threads of a rank, so training and inference agree.

Example::

    model, source = make_generator(job.model, "infer", device="cpu")  # shipped weights
    sr = super_resolve(model, lr_batch, tta_flip=True)                 # (N, 3, 4H, 4W)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fileio.user_error import UserError
from harness.config import ModelConfig
from harness.outputs import checkpoints as ckpt

if TYPE_CHECKING:
    import torch

    from harness.cluster.distributed import DistInfo


#: What :func:`make_generator` builds a generator for.
GeneratorUse = Literal["train", "check", "infer"]

#: Device nodes without which no CUDA device can exist: NVIDIA, WSL2's GPU, AMD ROCm.
_GPU_NODES = ("/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def resolve_device(choice: str, info: DistInfo, key: str = "train.device") -> str:
    """Return the torch device for this rank: ``cpu`` or ``cuda:N``.

    ``cpu`` or ``cuda:N`` for this rank (``auto`` picks CUDA when present); ``key`` names
    the setting in the error when CUDA is asked for but absent. ``auto`` on a machine without
    a GPU device node is ``cpu`` without importing torch (~1 s).
    """
    if choice == "cpu" or (choice == "auto" and not any(Path(n).exists() for n in _GPU_NODES)):
        return "cpu"
    import torch

    if choice == "auto" and not torch.cuda.is_available():
        return "cpu"
    if not torch.cuda.is_available():
        raise UserError(f"{key}: cuda requested but torch sees no GPU (run `harness doctor`)")
    return f"cuda:{info.local_rank % torch.cuda.device_count()}"


def rank_threads(requested: int, info: DistInfo) -> int:
    """Return the CPU threads for this rank.

    CPU threads for this rank: ``requested``, or 0: the cores this rank owns (cores / local
    ranks).
    """
    return requested or max(1, (os.cpu_count() or 1) // info.local_world_size)


def set_threads(requested: int, info: DistInfo) -> int:
    """Set torch's CPU threads for this rank (see :func:`rank_threads`) and return the number."""
    import torch

    n = rank_threads(requested, info)
    torch.set_num_threads(n)
    return n


def model_kwargs(model: ModelConfig) -> dict[str, Any]:
    """Generator keyword arguments of the ``model`` section: integral numbers become ints."""
    out: dict[str, Any] = {"scale": model.scale}
    for k, v in model.args.items():
        out[k] = int(v) if float(v).is_integer() else float(v)
    return out


def build_generator(name: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    """Build a generator, turning bad names/arguments into a user error on ``model``."""
    from kernels import build_model

    try:
        return build_model(name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model.args: {exc}") from None


def _load_weights(model: torch.nn.Module, state: dict[str, Any], where: str) -> None:
    """``model.load_state_dict(state["model"])``; a mismatch is one line naming ``where``."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{where}: weights do not fit ({str(exc).splitlines()[0]})") from None


def resolve_init_from(cfg: ModelConfig) -> Path:
    """The checkpoint file named by ``model.init_from`` (see :class:`ModelConfig`).

    Raises:
        UserError: ``shipped`` without (intact) shipped weights for this model, or no such file.
    """
    spec = cfg.init_from
    if spec == "shipped":
        from kernels.shipped import shipped_checkpoint

        try:
            found = shipped_checkpoint(cfg.name, model_kwargs(cfg))
        except ValueError as exc:  # checksum mismatch
            raise UserError(f"model.init_from: {exc}") from None
        if found is None:
            raise UserError(f"model.init_from: no shipped weights for {cfg.name} with "
                            f"{dict(cfg.args)}")
        return Path(found)
    path = Path(spec).expanduser()
    if not path.is_file() and not path.is_absolute():
        from harness.data.locations import project_root

        path = project_root() / spec
    if not path.is_file():
        raise UserError(f"model.init_from: {spec}: no such checkpoint file")
    return path


def check_init_from(cfg: ModelConfig, path: Path) -> None:
    """Check ``model.init_from`` without building the model.

    Everything :func:`load_initial_weights` checks, without building the model: called
    before a run folder exists, so a bad ``model.init_from`` leaves nothing behind.
    """
    _check_init_state(cfg, path, ckpt.load(path))


def _check_init_state(cfg: ModelConfig, path: Path, state: dict[str, Any]) -> None:
    check_checkpoint_model(state, f"model.init_from: {path}",
                           default=(cfg.name, model_kwargs(cfg)))
    kwargs = state.get("model_kwargs")
    if state.get("model_name", cfg.name) != cfg.name or (
            kwargs is not None and dict(kwargs) != model_kwargs(cfg)):
        raise UserError(f"model.init_from: {path} holds {state.get('model_name')} "
                        f"{dict(kwargs or {})}, the job builds {cfg.name} "
                        f"{model_kwargs(cfg)}")


def load_initial_weights(model: torch.nn.Module, cfg: ModelConfig, path: Path) -> None:
    """Load the generator weights in ``path`` (see :func:`resolve_init_from`) into ``model``.

    Raises:
        UserError: not a checkpoint, or weights of another architecture than the job's.
    """
    state = ckpt.load(path)
    _check_init_state(cfg, path, state)
    _load_weights(model, state, f"model.init_from: {path}")


def check_checkpoint_model(state: dict[str, Any], where: str, *,
                           expect: tuple[str, dict[str, Any]] | None = None,
                           default: tuple[str, dict[str, Any]] | None = None
                           ) -> tuple[str, dict[str, Any]]:
    """Validate a checkpoint's model metadata against its weights before building anything.

    The name must be a known generator, the arguments plain numbers/strings, and the network
    they describe (built on the ``meta`` device: no memory) must have exactly the shapes of the
    stored weights, so crafted metadata (a 100000-wide model) costs nothing and says so in one
    line. With ``expect``, the model must also be that (name, kwargs).

    Returns:
        (model name, keyword arguments) to build.

    Raises:
        UserError: any of that does not hold.
    """
    import torch

    from kernels import MODELS

    name = state.get("model_name", default[0] if default else None)
    kwargs = state.get("model_kwargs", default[1] if default else None)
    if not isinstance(name, str) or name not in MODELS:
        raise UserError(f"{where}: unknown model {str(name)[:60]!r} in the checkpoint "
                        f"(known: {', '.join(MODELS)})")
    if not isinstance(kwargs, dict) or not all(
            isinstance(k, str) and isinstance(v, (bool, int, float, str))
            for k, v in kwargs.items()):
        raise UserError(f"{where}: model_kwargs in the checkpoint is not a flat mapping of "
                        "names to numbers")
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in weights.values()):
        raise UserError(f"{where}: the checkpoint's 'model' entry is not a state dict")
    if expect is not None and (name, dict(kwargs)) != (expect[0], dict(expect[1])):
        raise UserError(f"{where}: holds {name} {dict(kwargs)}, the job builds {expect[0]} "
                        f"{dict(expect[1])} (a run resumes with the model it started with)")
    with torch.device("meta"):
        skeleton = build_generator(name, dict(kwargs))
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in weights.items()}
    if shapes != stored:
        bad = sorted(set(shapes) ^ set(stored)) or sorted(k for k in shapes
                                                           if shapes[k] != stored[k])
        raise UserError(f"{where}: the weights do not match the model the checkpoint names "
                        f"({name} {dict(kwargs)}; first difference: {bad[0][:80]})")
    return name, dict(kwargs)


def _load_generator(cfg: ModelConfig, checkpoint: str | None,
                    device: str) -> tuple[torch.nn.Module, str]:
    """The generator with its weights: from a checkpoint (its own model spec wins) or shipped.

    Args:
        cfg: The job's ``model`` section (what to build without a checkpoint, and the
            shipped weights to look for).
        checkpoint: A checkpoint file (``--checkpoint`` or ``infer.checkpoint``), or None for
            the shipped weights.
        device: Where the model goes.

    Returns:
        The model in eval mode on ``device``, and where its weights came from.

    Raises:
        UserError: no weights available for a trainable model, or a bad checkpoint.
    """
    path = checkpoint or None
    shipped = path is None
    if path is None:
        from kernels.shipped import shipped_checkpoint

        path = shipped_checkpoint(cfg.name, model_kwargs(cfg))
    if path is None:
        model = build_generator(cfg.name, model_kwargs(cfg))
        if any(p.requires_grad for p in model.parameters()):
            raise UserError(f"no --checkpoint given and no shipped weights for model "
                            f"{cfg.name} with {dict(cfg.args)}: train one first "
                            "(harness train) or pass --checkpoint")
        return model.to(device).eval(), "untrained (no parameters)"
    state = ckpt.load(path)
    if shipped:  # the project's own file, its SHA-256 checked: nothing crafted to catch
        name, kwargs = state["model_name"], dict(state["model_kwargs"])
    else:
        name, kwargs = check_checkpoint_model(state, str(path),
                                              default=(cfg.name, model_kwargs(cfg)))
    model = build_generator(name, kwargs)
    _load_weights(model, state, f"{path} (model {name})")
    return model.to(device).eval(), str(path)


def make_generator(cfg: ModelConfig, use: GeneratorUse = "train", *, device: str = "cpu",
                   init_from: Path | None = None, checkpoint: str | None = None,
                   untrainable_hint: str = " (use `harness infer` for the bicubic baseline)"
                   ) -> tuple[torch.nn.Module, str]:
    """Build the generator of the ``model`` section: the one path every command takes.

    Args:
        cfg: The ``model`` section.
        use: ``train``: the section's network with fresh weights (drawn from torch's global
            generator, which the caller seeds) or those of ``init_from``, in train mode; it
            must have trainable parameters. ``check``: the same checks as ``train``, on the
            ``meta`` device (no memory, no weights read into a model): what a start runs
            before its run folder exists. ``infer``: the weights of ``checkpoint`` (whose own
            model spec wins) or the shipped ones, in eval mode (a network without parameters
            needs none).
        device: Where the model goes (``train`` and ``infer``).
        init_from: ``train``/``check``: the resolved ``model.init_from`` checkpoint (see
            :func:`resolve_init_from`), or None for fresh weights.
        checkpoint: ``infer``: a checkpoint file, or None for the shipped weights.
        untrainable_hint: ``train``/``check``: what the error for a network without
            trainable parameters ends with (what to do instead).

    Returns:
        The model, and where its weights came from (a path, ``fresh``, ``meta``, or
        ``untrained (no parameters)``).

    Raises:
        UserError: a bad name or arguments, no trainable parameters (``train``/``check``),
            weights that are missing, not a checkpoint, or of another architecture.
    """
    if use == "infer":
        return _load_generator(cfg, checkpoint, device)
    if use == "check":
        import torch

        with torch.device("meta"):
            skeleton = build_generator(cfg.name, model_kwargs(cfg))
        _check_trainable(cfg, skeleton, untrainable_hint)
        if init_from is not None:
            check_init_from(cfg, init_from)
        return skeleton, "meta"
    model = build_generator(cfg.name, model_kwargs(cfg)).to(device)
    _check_trainable(cfg, model, untrainable_hint)
    if init_from is None:
        return model, "fresh"
    load_initial_weights(model, cfg, init_from)
    return model, str(init_from)


def _check_trainable(cfg: ModelConfig, model: torch.nn.Module, hint: str) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(f"model.name: {cfg.name} has no trainable parameters{hint}")


def super_resolve(model: torch.nn.Module, lr: torch.Tensor, tta_flip: bool = False,
                  precision: str = "fp32") -> torch.Tensor:
    """Super-resolve a batch, clamped to [0, 1].

    SR of a batch, clamped to [0, 1]; with ``tta_flip`` the mirror's output is averaged in.
    ``precision`` ``bf16`` runs the network under bf16 autocast (see
    :mod:`harness.model.precision`).
    """
    import torch

    from harness.model.precision import autocast

    n = lr.shape[0]
    if tta_flip:  # the image and its mirror in one pass: one larger batch runs faster
        lr = torch.cat([lr, lr.flip(-1)])
    lr = lr.contiguous(memory_format=torch.channels_last)  # the faster layout on CPUs too
    with torch.no_grad(), autocast(str(lr.device), precision):
        sr = model(lr).float()
    if tta_flip:
        sr = 0.5 * (sr[:n] + sr[n:].flip(-1))
    return sr.clamp(0.0, 1.0)
