"""The training engine of one rank: the replica, its optimiser and losses, and one step.

:func:`build_engine` makes, in a fixed order (the random draws of a seeded run depend on it),
the generator (optionally started from ``model.init_from``), its data-parallel wrapper (DDP over
gloo/NCCL, or Horovod), the recognizer(s) for the identity/feature losses and for validation,
the optional discriminator, the loss, and the optimiser with its learning-rate schedule.
:meth:`Engine.step` runs one optimiser step; :meth:`Engine.state` and :meth:`Engine.restore`
are what a checkpoint holds.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fileio.user_error import UserError
from harness.cluster.distributed import (
    Comm,
    DistInfo,
    Reducer,
    init_horovod,
    init_torch_distributed,
)
from harness.cluster.watchdog import timeout_from_env, torch_timeout_s
from harness.config import EvalConfig, LossConfig, ModelConfig, TrainConfig
from harness.model.generators import make_generator

if TYPE_CHECKING:
    from harness.scoring.recognizers import Recognizer
    from kernels.losses import CombinedLoss

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def uses_channels_last(train: TrainConfig) -> bool:
    """Return whether the generator and its batches run channels-last.

    Whether the generator and its input batches run channels-last: ``train.channels_last``,
    except under Horovod, whose collectives take contiguous tensors only.
    """
    return train.channels_last and train.backend != "horovod"


def lr_factor(step: int, t: TrainConfig) -> float:
    """Learning-rate multiplier at ``step`` of the ``train`` section ``t``.

    Linear warm-up, then the chosen schedule.
    """
    if t.warmup_steps and step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return 1.0
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    if t.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return 0.1 ** int(progress * 3)  # step: x0.1 at 1/3 and 2/3 of training


class EmbeddingCache:
    """Recognizer embeddings of HR targets, keyed by (pair index, mirrored)."""

    def __init__(self, recognizer: Any) -> None:
        self.recognizer = recognizer
        self._rows: dict[tuple[int, bool], Any] = {}

    def lookup(self, keys: list[tuple[int, bool]], hr: torch.Tensor) -> torch.Tensor:
        """Embeddings of the batch ``hr`` whose items are ``keys``; computes what is missing."""
        missing = [j for j, k in enumerate(keys) if k not in self._rows]
        if missing:
            with torch.no_grad():
                rows = self.recognizer.embed(hr[missing]).detach()
            for j, row in zip(missing, rows, strict=True):
                self._rows[keys[j]] = row
        return torch.stack([self._rows[k] for k in keys])


def param_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers (equal on every in-sync replica)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class LRPlan:
    """The schedule the learning-rate scheduler follows.

    Its factor function reads :attr:`train` at every step, so that :meth:`Engine.reschedule`
    can change it.

    Attributes:
        train: The ``train`` section whose steps, warm-up and schedule set the factor.
    """

    train: TrainConfig

    def scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A LambdaLR on ``opt`` whose factor is :func:`lr_factor` of :attr:`train`.

        The factor is a plain function, which the scheduler leaves out of its saved state (a
        checkpoint holds what it held before).
        """
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, self.train))


@dataclass
class Engine:
    """Everything one rank trains with.

    Everything one rank trains with. ``model`` is the bare generator, ``wrapped`` the
    data-parallel module the forward pass goes through.
    """

    train: TrainConfig
    """The ``train`` section (its ``grad_clip``; :meth:`reschedule` replaces it)."""
    device: str
    model: torch.nn.Module
    wrapped: torch.nn.Module
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    """AdamW, or Horovod's DistributedOptimizer around it (a subclass of the same)."""
    sched: torch.optim.lr_scheduler.LambdaLR
    reducer: Reducer
    loss_fn: CombinedLoss
    loss_rec: Any = None
    """A :class:`~harness.scoring.recognizers.Recognizer` or a
    :class:`kernels.losses.RecognizerEnsemble` (``loss.recognizer``), or None."""
    eval_rec: Recognizer | None = None
    disc: torch.nn.Module | None = None
    disc_opt: torch.optim.Optimizer | None = None
    hvd: Any = None
    """The ``horovod.torch`` module under Horovod (a foreign module), else None."""
    lr_plan: LRPlan | None = None
    """What :attr:`sched`'s factor function reads (None: a scheduler built elsewhere)."""

    def step(self, lr: torch.Tensor, hr: torch.Tensor, hr_emb: torch.Tensor | None,
             autocast: Any, poison: bool = False) -> dict[str, float]:
        """One optimiser step on this rank's batch; returns the loss terms averaged over ranks.

        Args:
            lr: This rank's LR batch.
            hr: The matching HR batch.
            hr_emb: The recognizer's embeddings of ``hr`` (None when no loss needs them).
            autocast: The context manager the forward pass runs under (precision).
            poison: Make the loss NaN (fault injection for tests of the divergence path).

        Raises:
            TrainingDiverged: the loss is not finite on some rank (checked before any update).
        """
        with autocast:
            sr = self.wrapped(lr)
            loss, terms = self.loss_fn(sr.float(), hr, hr_embeddings=hr_emb)
        if poison:
            loss = loss * float("nan")
            terms["total"] = float("nan")
        names = sorted(terms)
        reduced = self.reducer.mean([terms[n] for n in names] +
                                    [0.0 if math.isfinite(terms["total"]) else 1.0])
        if reduced[-1] > 0:
            raise TrainingDiverged("loss became non-finite", exit_code=3)
        if self.hvd is not None:
            self.opt.zero_grad()  # Horovod's DistributedOptimizer takes no set_to_none
        else:
            self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer_step()
        if self.disc is not None and self.disc_opt is not None:  # (built together)
            self.disc_opt.zero_grad(set_to_none=True)
            self.loss_fn.discriminator_loss(sr.detach().float(), hr).backward()
            self.disc_opt.step()
        return dict(zip(names, reduced[:-1], strict=True))

    def _optimizer_step(self) -> None:
        clip = self.train.grad_clip
        if not clip:
            self.opt.step()
        elif self.hvd is not None:  # Horovod: reduce gradients first, then clip them
            hvd_opt: Any = self.opt  # Horovod's DistributedOptimizer (foreign methods)
            hvd_opt.synchronize()
            torch.nn.utils.clip_grad_norm_(self.params, clip)
            with hvd_opt.skip_synchronize():
                hvd_opt.step()
        else:
            torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.opt.step()

    def reschedule(self, train: TrainConfig) -> None:
        """Follow ``train``'s schedule from now on (``train.fit_to_minutes`` changed its steps).

        The scheduler keeps its position (``last_epoch``); the learning rate of the next step
        is recomputed with the new schedule, exactly as a scheduler built with ``train`` would
        have set it (so a resumed fitted run continues bit for bit).
        """
        self.train = train
        assert self.lr_plan is not None, "reschedule needs the scheduler of build_engine"
        self.lr_plan.train = train
        # Step back and forth: the scheduler recomputes the rate of its position (and what
        # get_last_lr() says) with the new plan, through its public interface.
        self.sched.last_epoch -= 1
        self.sched.step()

    def state(self) -> dict[str, Any]:
        """Model, optimiser, schedule (and discriminator) state for a full checkpoint."""
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict()}
        if self.disc is not None and self.disc_opt is not None:
            state["discriminator"] = self.disc.state_dict()
            state["discriminator_optimizer"] = self.disc_opt.state_dict()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Load what :meth:`state` saved."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.disc is not None and self.disc_opt is not None and "discriminator" in state:
            self.disc.load_state_dict(state["discriminator"])
            self.disc_opt.load_state_dict(state["discriminator_optimizer"])


def _build_model(t: TrainConfig, cfg: ModelConfig, device: str, info: DistInfo, comm: Comm,
                 init_path: Path | None) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """The generator, its data-parallel wrapper, and Horovod (or None)."""
    model, _ = make_generator(cfg, "train", device=device, init_from=init_path)
    if init_path is not None and info.is_master:
        log.info("generator initialised from %s", init_path)
    if uses_channels_last(t):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs: Module.to lacks memory_format
    wrapped = model
    if info.distributed and t.backend == "ddp":
        init_torch_distributed(info, comm, backend="nccl" if device.startswith("cuda")
                               else "gloo", timeout_s=torch_timeout_s(
                                   timeout_from_env(t.collective_timeout_s)))
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[torch.device(device).index]
                      if device.startswith("cuda") else None)
    hvd = init_horovod(info) if t.backend == "horovod" else None
    return model, wrapped, hvd


def loss_recognizer(lo: LossConfig, device: str) -> Any:
    """The recognizer the identity/feature losses embed with (None when neither is on).

    One, or a weighted ensemble (``facenet@0.7,sphere20a:PATH@0.3``, see
    :func:`harness.scoring.panel.load_loss_recognizer`).
    """
    from harness.scoring.panel import load_loss_recognizer

    if not (lo.identity or lo.feature):
        return None
    return load_loss_recognizer(lo.recognizer, device=device)


def make_loss(lo: LossConfig, device: str,
              rec: Any = None) -> tuple[CombinedLoss, torch.nn.Module | None]:
    """Build the ``loss`` section's loss and its discriminator.

    The :class:`~kernels.losses.CombinedLoss` of ``lo`` on ``device`` embedding with ``rec``
    (see :func:`loss_recognizer`), and its discriminator (or None).
    """
    from kernels.losses import CombinedLoss

    disc = None
    if lo.adversarial:
        from kernels.discriminator_arch import VGGStyleDiscriminator

        disc = VGGStyleDiscriminator().to(device)
    loss_fn = CombinedLoss(pixel_weight=lo.pixel, identity_weight=lo.identity,
                           feature_weight=lo.feature, adversarial_weight=lo.adversarial,
                           recognizer=rec, discriminator=disc, pixel_kind=lo.pixel_kind,
                           feature_layers=lo.feature_layers)
    return loss_fn, disc


@dataclass(frozen=True, slots=True)
class Losses:
    """What :func:`_build_losses` builds: the loss and the networks it needs."""

    loss_fn: CombinedLoss
    loss_rec: Any
    """What the identity/feature losses embed with: a recognizer or an ensemble of several
    (None when neither is on)."""
    eval_rec: Recognizer | None
    """The recognizer validation scores IS with (None when ``eval.metrics`` has no ``is``)."""
    disc: torch.nn.Module | None
    disc_opt: torch.optim.Optimizer | None


def _build_losses(t: TrainConfig, lo: LossConfig, ev: EvalConfig, device: str) -> Losses:
    """The loss and the networks it needs: recognizers, discriminator and its optimiser."""
    from harness.scoring.recognizers import load_recognizer

    loss_rec = loss_recognizer(lo, device)
    if loss_rec is not None and t.channels_last:
        loss_rec.use_channels_last()
    eval_rec = None
    if "is" in ev.metrics:
        from harness.scoring.panel import split_panel

        first = split_panel(ev.recognizer)[0]  # a panel validates with its primary
        eval_rec = (loss_rec if loss_rec is not None and first == lo.recognizer
                    else load_recognizer(first, device=device))
    loss_fn, disc = make_loss(lo, device, loss_rec)
    disc_opt = (torch.optim.AdamW(disc.parameters(), lr=t.lr, betas=(0.9, 0.99))
                if disc is not None else None)
    return Losses(loss_fn=loss_fn, loss_rec=loss_rec, eval_rec=eval_rec, disc=disc,
                  disc_opt=disc_opt)


def build_engine(info: DistInfo, comm: Comm, device: str, *, train: TrainConfig,
                 model_cfg: ModelConfig, loss: LossConfig, evaluation: EvalConfig,
                 init_path: Path | None = None) -> Engine:
    """Seed torch and build this rank's :class:`Engine` (see the module docstring).

    Args:
        info: This rank's place in the world.
        comm: The collectives of the run (DDP's start-up).
        device: Where the replica runs.
        train: The ``train`` section (seed, optimiser, schedule, data-parallel backend).
        model_cfg: The ``model`` section (what :func:`~harness.model.generators.make_generator`
            builds).
        loss: The ``loss`` section.
        evaluation: The ``eval`` section (the recognizer validation scores IS with).
        init_path: The resolved ``model.init_from`` weights, or None.
    """
    t = train
    torch.manual_seed(t.seed)
    model, wrapped, hvd = _build_model(t, model_cfg, device, info, comm, init_path)
    params = [p for p in model.parameters() if p.requires_grad]
    reducer = Reducer(t.backend, info.world_size)
    losses = _build_losses(t, loss, evaluation, device)
    opt = torch.optim.AdamW(params, lr=t.lr, betas=(0.9, 0.99), weight_decay=t.weight_decay)
    if hvd is not None:
        # Every rank starts from fresh optimizer state or loads the same checkpoint, so only
        # the weights are broadcast (Horovod's broadcast_optimizer_state would take a
        # zero-gradient step, i.e. one step of weight decay).
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    # Built on the optimizer that steps: Horovod's wrapper is a new object, and loading a
    # checkpoint replaces its param groups, so a scheduler of the unwrapped one would set the
    # learning rate of groups nobody uses (the rate froze after a resume).
    lr_plan = LRPlan(t)
    sched = lr_plan.scheduler(opt)
    return Engine(train=t, device=device, model=model, wrapped=wrapped, params=params, opt=opt,
                  sched=sched, reducer=reducer, hvd=hvd, lr_plan=lr_plan,
                  loss_fn=losses.loss_fn, loss_rec=losses.loss_rec, eval_rec=losses.eval_rec,
                  disc=losses.disc, disc_opt=losses.disc_opt)
