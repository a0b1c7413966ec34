"""Training losses for face super-resolution, and their weighted combination.

The contest scores identity similarity (cosine of a face recognizer's embeddings of SR and HR),
so besides the pixel loss the generator can be trained directly on that cosine
(:func:`identity_loss`), on the recognizer's intermediate features (:func:`feature_loss`) and
adversarially with ESRGAN's relativistic average GAN (:func:`relativistic_g_loss`).
:class:`CombinedLoss` adds the terms with the weights from the job file.

A recognizer is any object with

* ``embed(images) -> (N, D)``: L2-normalised embeddings of ``(N, 3, H, W)`` RGB in ``[0, 1]``,
  differentiable with respect to ``images``;
* ``features(images, layers: Sequence[str]) -> list[Tensor]``: the named intermediate
  activations, in the order of ``layers``.

The recognizer must stay frozen. The functions here compute the HR side under
``torch.no_grad()`` but cannot stop gradients of the SR side from reaching recognizer
parameters that still have ``requires_grad``; :class:`CombinedLoss` freezes them.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CombinedLoss",
    "RecognizerEnsemble",
    "FeatureKind",
    "PixelKind",
    "Recognizer",
    "feature_loss",
    "identity_loss",
    "pixel_loss",
    "relativistic_d_loss",
    "relativistic_g_loss",
]

logger = logging.getLogger(__name__)

PixelKind = Literal["l1", "charbonnier"]
FeatureKind = Literal["l1", "mse"]


@runtime_checkable
class Recognizer(Protocol):
    """What the losses need from a face recognizer (see the module docstring)."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` RGB in ``[0, 1]`` -> ``(N, D)`` L2-normalised embeddings."""
        ...

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """The activations of the named layers for ``images``, in the order of ``layers``."""
        ...


def pixel_loss(
    sr: torch.Tensor, hr: torch.Tensor, kind: PixelKind = "l1", eps: float = 1e-3
) -> torch.Tensor:
    """Mean per-pixel distance between the SR output and the HR target.

    Args:
        sr: Generator output, ``(N, C, H, W)``.
        hr: Target of the same shape.
        kind: ``"l1"`` for ``mean(|sr - hr|)``; ``"charbonnier"`` for
            ``mean(sqrt((sr - hr)^2 + eps^2))``, a smooth L1 (equal to ``eps`` at zero error).
        eps: Charbonnier smoothing, in the units of the images (``1e-3`` of the ``[0, 1]``
            range is a quarter of a grey level).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: If ``kind`` is unknown or the shapes differ.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"pixel_loss: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ")
    if kind == "l1":
        return F.l1_loss(sr, hr)
    if kind == "charbonnier":
        return torch.sqrt((sr - hr).square() + eps * eps).mean()
    raise ValueError(f"pixel_loss: kind must be 'l1' or 'charbonnier', got {kind!r}")


def identity_loss(
    recognizer: Recognizer,
    sr: torch.Tensor,
    hr: torch.Tensor | None = None,
    *,
    hr_embeddings: torch.Tensor | None = None,
    sr_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 - mean cosine`` between the recognizer's embeddings of SR and HR faces.

    This is one minus the contest's identity-similarity score, so minimising it optimises the
    score directly (for this recognizer).

    Args:
        recognizer: Object with ``embed`` (see :class:`Recognizer`).
        sr: Generator output, ``(N, 3, H, W)``; gradients flow back to it.
        hr: Targets; embedded without gradient. Unused if ``hr_embeddings`` is given.
        hr_embeddings: Precomputed ``(N, D)`` HR embeddings (e.g. cached per dataset).
        sr_embeddings: ``recognizer.embed(sr)`` if already computed (with gradient).

    Returns:
        A scalar tensor in ``[0, 2]``.

    Raises:
        ValueError: If neither ``hr`` nor ``hr_embeddings`` is given, or the batch sizes differ.
    """
    target = _hr_embeddings(recognizer, hr, hr_embeddings)
    embeddings = recognizer.embed(sr) if sr_embeddings is None else sr_embeddings
    if embeddings.shape != target.shape:
        raise ValueError(
            f"identity_loss: SR embeddings {tuple(embeddings.shape)} and HR embeddings "
            f"{tuple(target.shape)} differ"
        )
    # cosine_similarity re-normalises, so an embed() that forgets to is still scored correctly.
    return 1.0 - F.cosine_similarity(embeddings, target, dim=1).mean()


def _hr_embeddings(
    recognizer: Recognizer, hr: torch.Tensor | None, hr_embeddings: torch.Tensor | None
) -> torch.Tensor:
    if hr_embeddings is not None:
        return hr_embeddings.detach()
    if hr is None:
        raise ValueError("identity_loss: pass hr or hr_embeddings")
    with torch.no_grad():
        return recognizer.embed(hr)


def feature_loss(
    recognizer: Recognizer,
    sr: torch.Tensor,
    hr: torch.Tensor | None,
    layers: Sequence[str],
    weights: Sequence[float] | None = None,
    *,
    kind: FeatureKind = "l1",
    hr_features: Sequence[torch.Tensor] | None = None,
    sr_features: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Weighted mean over layers of the L1 (or MSE) distance between recognizer activations.

    Args:
        recognizer: Object with ``features`` (see :class:`Recognizer`).
        sr: Generator output, ``(N, 3, H, W)``; gradients flow back to it.
        hr: Targets; their features are computed without gradient. Unused if ``hr_features``
            is given (then it may be ``None``).
        layers: Names of the recognizer layers to compare (at least one).
        weights: One non-negative weight per layer; default equal. The result is
            ``sum(w_i * d_i) / sum(w_i)``, so weights set the layers' relative importance only.
        kind: ``"l1"`` (mean absolute difference) or ``"mse"`` (mean squared difference).
        hr_features: Precomputed HR activations for ``layers``.
        sr_features: ``recognizer.features(sr, layers)`` if already computed (with gradient).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: On an empty ``layers``, a ``weights`` of the wrong length, negative or
            all-zero weights, an unknown ``kind`` or mismatched feature shapes.
    """
    if not layers:
        raise ValueError("feature_loss: layers must name at least one layer")
    if kind not in ("l1", "mse"):
        raise ValueError(f"feature_loss: kind must be 'l1' or 'mse', got {kind!r}")
    layer_weights = [1.0] * len(layers) if weights is None else [float(w) for w in weights]
    if len(layer_weights) != len(layers):
        raise ValueError(
            f"feature_loss: {len(layer_weights)} weights for {len(layers)} layers {list(layers)}"
        )
    if any(w < 0 for w in layer_weights) or sum(layer_weights) <= 0:
        raise ValueError(f"feature_loss: weights must be >= 0 and not all 0, got {layer_weights}")
    if hr_features is None:
        if hr is None:
            raise ValueError("feature_loss: pass hr or hr_features")
        with torch.no_grad():
            hr_features = recognizer.features(hr, layers)
    if sr_features is None:
        sr_features = recognizer.features(sr, layers)
    if len(sr_features) != len(layers) or len(hr_features) != len(layers):
        raise ValueError(
            f"feature_loss: recognizer returned {len(sr_features)}/{len(hr_features)} feature "
            f"maps for {len(layers)} layers"
        )
    distance = F.l1_loss if kind == "l1" else F.mse_loss
    total = sr.new_zeros(())
    for name, weight, sr_map, hr_map in zip(layers, layer_weights, sr_features, hr_features,
                                            strict=True):
        if sr_map.shape != hr_map.shape:
            raise ValueError(
                f"feature_loss: layer {name!r}: SR {tuple(sr_map.shape)} vs HR "
                f"{tuple(hr_map.shape)}"
            )
        if weight:
            total = total + weight * distance(sr_map, hr_map.detach())
    return total / sum(layer_weights)


def relativistic_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss for the discriminator (ESRGAN).

    ``0.5 * [BCE(real - mean(fake), 1) + BCE(fake - mean(real), 0)]``: the discriminator learns
    that real images look more real than the average fake, and vice versa. Pass logits of
    detached SR images (``discriminator(sr.detach())``).

    Args:
        real_logits: Discriminator logits of HR images, ``(N, 1)``.
        fake_logits: Discriminator logits of SR images, ``(M, 1)``.

    Returns:
        A scalar tensor (``log 2`` when all logits are equal).
    """
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_rel, torch.ones_like(real_rel))
        + F.binary_cross_entropy_with_logits(fake_rel, torch.zeros_like(fake_rel))
    )


def relativistic_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss for the generator (ESRGAN).

    ``0.5 * [BCE(real - mean(fake), 0) + BCE(fake - mean(real), 1)]``, the discriminator's
    objective with the labels swapped. ``real_logits`` is detached here (as in BasicSR): the
    generator step must not accumulate gradients in the discriminator through the real images.

    Args:
        real_logits: Discriminator logits of HR images, ``(N, 1)``.
        fake_logits: Discriminator logits of SR images (not detached), ``(M, 1)``.

    Returns:
        A scalar tensor (``log 2`` when all logits are equal).
    """
    real_logits = real_logits.detach()
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
        + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel))
    )


class RecognizerEnsemble:
    """Several frozen recognizers as one loss network, each with a weight.

    :meth:`embed` concatenates ``sqrt(w_k / sum(w)) * e_k`` of the members' unit embeddings: a
    unit vector whose cosine with another is ``sum_k (w_k / sum(w)) * cos_k``. So
    :func:`identity_loss` of the ensemble is exactly the weighted mean of the members' identity
    losses, and everything built on one recognizer (the HR-embedding cache, DDP, the loss
    terms) works unchanged. :meth:`features` takes ``label/layer`` names (a bare name is the
    first member's) and scales each member's activations by its normalised weight, so an L1
    feature loss weighs members the same way.

    Args:
        members: ``(label, recognizer, weight)`` triples; weights >= 0, not all 0.

    Raises:
        ValueError: No members, a negative or non-finite weight, all weights 0, or a label
            used twice.
    """

    def __init__(self, members: Sequence[tuple[str, Recognizer, float]]) -> None:
        if not members:
            raise ValueError("RecognizerEnsemble: no members")
        labels = [m[0] for m in members]
        if len(set(labels)) != len(labels):
            raise ValueError(f"RecognizerEnsemble: a label is used twice in {labels}")
        for label, _, w in members:
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"RecognizerEnsemble: weight of {label} must be finite and "
                                 f">= 0, got {w}")
        total = sum(w for _, _, w in members)
        if total <= 0:
            raise ValueError("RecognizerEnsemble: all weights are 0")
        self.members = [(label, rec, w / total) for label, rec, w in members if w > 0]
        self.name = "+".join(f"{label}:{w:.2g}" for label, _, w in self.members)
        self.differentiable = all(getattr(r, "differentiable", True) for _, r, _ in self.members)

    @property
    def weights(self) -> dict[str, float]:
        """Normalised weight per member label (summing to 1)."""
        return {label: w for label, _, w in self.members}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, sum D_k)`` unit vectors: each member's embedding times sqrt(its weight)."""
        parts = [math.sqrt(w) * F.normalize(rec.embed(images).float(), dim=1)
                 for _, rec, w in self.members]
        return torch.cat(parts, dim=1)

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """The named activations (``label/layer``; bare: the first member's), weighted."""
        by_label = {label: (rec, w) for label, rec, w in self.members}
        first = self.members[0][0]
        wanted: dict[str, list[tuple[int, str]]] = {}
        for i, name in enumerate(layers):
            label, _, layer = name.rpartition("/")
            label = label or first
            if label not in by_label:
                raise ValueError(f"RecognizerEnsemble: no member {label!r} for layer {name!r}")
            wanted.setdefault(label, []).append((i, layer))
        out: list[torch.Tensor | None] = [None] * len(layers)
        for label, items in wanted.items():
            rec, w = by_label[label]
            feats = rec.features(images, [layer for _, layer in items])
            for (i, _), f in zip(items, feats, strict=True):
                out[i] = w * f
        return [f for f in out if f is not None]

    def to(self, device: str | torch.device) -> RecognizerEnsemble:
        """Moves every member."""
        for _, rec, _ in self.members:
            move = getattr(rec, "to", None)
            if move is not None:
                move(device)
        return self

    def use_channels_last(self) -> None:
        """Channels-last for every member that has it."""
        for _, rec, _ in self.members:
            getattr(rec, "use_channels_last", lambda: None)()


class CombinedLoss(nn.Module):
    """Weighted sum of the pixel, identity, feature and adversarial generator losses.

    A term whose weight is 0 is skipped entirely (the recognizer or discriminator is not run
    for it). The recognizer and discriminator are held as plain references, not submodules, so
    they stay out of this module's ``parameters()``, ``state_dict()`` and ``.to()``; the
    training loop owns them (and the discriminator's optimizer, see
    :meth:`discriminator_loss`). The generator's adversarial term back-propagates through the
    discriminator to ``sr`` without filling the discriminator's ``.grad``.

    Args:
        pixel_weight: Weight of :func:`pixel_loss`.
        identity_weight: Weight of :func:`identity_loss`; needs ``recognizer``.
        feature_weight: Weight of :func:`feature_loss`; needs ``recognizer`` and
            ``feature_layers``.
        adversarial_weight: Weight of :func:`relativistic_g_loss`; needs ``discriminator``.
        recognizer: Face recognizer (see :class:`Recognizer`). If it is an ``nn.Module`` its
            parameters are frozen (``requires_grad_(False)``) here, so SR gradients cannot
            reach them; its train/eval mode is left alone.
        discriminator: Module mapping ``(N, 3, H, W)`` images to ``(N, 1)`` logits.
        pixel_kind: ``"l1"`` or ``"charbonnier"``.
        charbonnier_eps: ``eps`` of the Charbonnier loss.
        feature_layers: Recognizer layer names for the feature loss.
        feature_layer_weights: Per-layer weights for the feature loss (default equal).
        feature_kind: ``"l1"`` or ``"mse"``.

    Raises:
        ValueError: On a negative or non-finite weight, all weights zero, a missing recognizer,
            discriminator or feature layers for a weighted term, or an unknown kind.
    """

    recognizer: Recognizer | None
    discriminator: nn.Module | None

    def __init__(
        self,
        *,
        pixel_weight: float = 1.0,
        identity_weight: float = 0.0,
        feature_weight: float = 0.0,
        adversarial_weight: float = 0.0,
        recognizer: Recognizer | None = None,
        discriminator: nn.Module | None = None,
        pixel_kind: PixelKind = "l1",
        charbonnier_eps: float = 1e-3,
        feature_layers: Sequence[str] = (),
        feature_layer_weights: Sequence[float] | None = None,
        feature_kind: FeatureKind = "l1",
    ) -> None:
        super().__init__()
        weights = {
            "pixel": pixel_weight,
            "identity": identity_weight,
            "feature": feature_weight,
            "adversarial": adversarial_weight,
        }
        for name, value in weights.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"CombinedLoss: {name}_weight must be finite and >= 0, got {value}"
                )
        if not any(weights.values()):
            raise ValueError("CombinedLoss: all loss weights are 0")
        if (identity_weight or feature_weight) and recognizer is None:
            raise ValueError("CombinedLoss: identity_weight/feature_weight > 0 need a recognizer")
        if feature_weight and not feature_layers:
            raise ValueError("CombinedLoss: feature_weight > 0 needs feature_layers")
        if adversarial_weight and discriminator is None:
            raise ValueError("CombinedLoss: adversarial_weight > 0 needs a discriminator")
        if pixel_kind not in ("l1", "charbonnier"):
            raise ValueError(
                f"CombinedLoss: pixel_kind must be 'l1' or 'charbonnier', got {pixel_kind!r}"
            )
        if feature_kind not in ("l1", "mse"):
            raise ValueError(
                f"CombinedLoss: feature_kind must be 'l1' or 'mse', got {feature_kind!r}"
            )

        self.weights: dict[str, float] = {k: float(v) for k, v in weights.items()}
        self.pixel_kind: PixelKind = pixel_kind
        self.charbonnier_eps = charbonnier_eps
        self.feature_layers = tuple(feature_layers)
        self.feature_layer_weights = (
            None if feature_layer_weights is None else tuple(feature_layer_weights)
        )
        self.feature_kind: FeatureKind = feature_kind
        if isinstance(recognizer, nn.Module):
            trainable = sum(p.requires_grad for p in recognizer.parameters())
            if trainable:
                logger.info("CombinedLoss: freezing %d recognizer parameter tensors", trainable)
            recognizer.requires_grad_(False)
        # Stored outside nn.Module's registry on purpose (see the class docstring).
        self.__dict__["recognizer"] = recognizer
        self.__dict__["discriminator"] = discriminator

    def forward(
        self,
        sr: torch.Tensor,
        hr: torch.Tensor,
        *,
        hr_embeddings: torch.Tensor | None = None,
        hr_features: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Generator loss for one batch.

        Args:
            sr: Generator output ``(N, 3, H, W)`` (unclamped).
            hr: Targets of the same shape.
            hr_embeddings: Optional precomputed HR embeddings for the identity term.
            hr_features: Optional precomputed HR activations for the feature term.

        Returns:
            ``(total, terms)``: the weighted sum to back-propagate, and the unweighted value of
            every computed term plus ``"total"``, as Python floats for logging.
        """
        terms: dict[str, torch.Tensor] = {}
        w = self.weights
        if w["pixel"]:
            terms["pixel"] = pixel_loss(sr, hr, self.pixel_kind, self.charbonnier_eps)
        sr_embeddings = sr_features = None
        shared = getattr(self.recognizer, "embed_with_features", None)
        if w["identity"] and w["feature"] and shared is not None:
            # One recognizer pass gives both terms (and one for HR when neither is cached).
            sr_embeddings, sr_features = shared(sr, self.feature_layers)
            if hr_embeddings is None and hr_features is None:
                with torch.no_grad():
                    hr_embeddings, hr_features = shared(hr, self.feature_layers)
        if w["identity"]:
            assert self.recognizer is not None  # __init__ refuses identity_weight without one
            terms["identity"] = identity_loss(
                self.recognizer, sr, hr, hr_embeddings=hr_embeddings, sr_embeddings=sr_embeddings
            )
        if w["feature"]:
            assert self.recognizer is not None  # __init__ refuses feature_weight without one
            terms["feature"] = feature_loss(
                self.recognizer,
                sr,
                hr,
                self.feature_layers,
                self.feature_layer_weights,
                kind=self.feature_kind,
                hr_features=hr_features,
                sr_features=sr_features,
            )
        if w["adversarial"]:
            terms["adversarial"] = self._generator_adversarial_loss(sr, hr)
        total = sum((w[name] * value for name, value in terms.items()), sr.new_zeros(()))
        logged = {name: float(value.detach()) for name, value in terms.items()}
        logged["total"] = float(total.detach())
        return total, logged

    def _generator_adversarial_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        # The generator step needs gradients through the discriminator to sr, but not into the
        # discriminator's weights (BasicSR also switches them off): cheaper, and its .grad
        # stays clean for its own step. The flags are restored afterwards.
        discriminator = self.discriminator
        assert discriminator is not None  # __init__ refuses adversarial_weight without one
        params = [p for p in discriminator.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                real_logits = discriminator(hr)
            fake_logits = discriminator(sr)
        finally:
            for p in params:
                p.requires_grad_(True)
        return relativistic_g_loss(real_logits, fake_logits)

    def discriminator_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Relativistic discriminator loss for one batch (``sr`` is detached here).

        Args:
            sr: Generator output ``(N, 3, H, W)``.
            hr: Targets of the same shape.

        Returns:
            A scalar tensor to back-propagate into the discriminator.

        Raises:
            ValueError: If this loss has no discriminator.
        """
        if self.discriminator is None:
            raise ValueError("CombinedLoss.discriminator_loss: no discriminator was given")
        return relativistic_d_loss(self.discriminator(hr), self.discriminator(sr.detach()))

    def extra_repr(self) -> str:
        """Describe the active loss weights and pixel loss in the repr."""
        active = ", ".join(f"{k}={v:g}" for k, v in self.weights.items() if v)
        return f"{active}, pixel_kind={self.pixel_kind!r}"
