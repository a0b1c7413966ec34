"""The face-recognizer interface and identity similarity (IS), the ASC19 FaceSR score.

IS of a super-resolved image against its high-resolution original is the cosine of the two
images' recognizer embeddings; the contest score is its mean over all pairs. The official
script embeds one pair per forward pass; :func:`identity_similarity` embeds ``batch_size``
pairs per pass, which gives the same numbers (see ``tests/test_recognizers.py``) much faster.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch

#: Nominal input size (height, width) of every recognizer: the ASC19 96x112 face crop.
NOMINAL_SIZE_HW: tuple[int, int] = (112, 96)


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """Raises TypeError/ValueError unless ``images`` is a float (N, 3, H, W) tensor.

    Args:
        images: The batch to check.
        what: Name used in the message.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{what}: expected shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{what}: expected float RGB in [0, 1], got dtype {images.dtype}")


class Recognizer(abc.ABC):
    """A frozen face recognizer that maps RGB face crops to L2-normalised embeddings.

    Attributes:
        name: Short name used in reports, e.g. ``"facenet"``.
        embedding_dim: Length D of an embedding.
        feature_layers: Names accepted by :meth:`features` (empty if unsupported).
        differentiable: Whether :meth:`embed` passes gradients to its input.
    """

    name: str = "recognizer"
    embedding_dim: int = 0
    feature_layers: tuple[str, ...] = ()
    differentiable: bool = False

    @abc.abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeds a batch of faces.

        Args:
            images: (N, 3, H, W) float32 RGB in [0, 1], nominally 112x96 (HxW); other sizes are
                resized as the recognizer's own preprocessing does.

        Returns:
            (N, D) L2-normalised embeddings on the recognizer's device (differentiable w.r.t.
            ``images`` when :attr:`differentiable`).
        """

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """Returns intermediate activations by layer name (for a perceptual/identity loss).

        Args:
            images: As for :meth:`embed`.
            layers: Names from :attr:`feature_layers`.

        Raises:
            NotImplementedError: This recognizer exposes no intermediate layers.
        """
        raise NotImplementedError(f"recognizer {self.name!r} does not expose intermediate features")

    @abc.abstractmethod
    def to(self, device: str | torch.device) -> Recognizer:
        """Moves the weights to ``device`` and returns ``self``."""

    @property
    def device(self) -> torch.device:
        """Device the weights live on (CPU unless overridden)."""
        return torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, embedding_dim={self.embedding_dim})"


def identity_similarity(
    rec: Recognizer, sr: torch.Tensor, hr: torch.Tensor, batch_size: int = 64
) -> np.ndarray:
    """Per-pair identity similarity: cosine of ``rec`` embeddings of SR vs HR.

    Args:
        rec: The recognizer.
        sr: (N, 3, H, W) float RGB in [0, 1], the super-resolved images.
        hr: (N, 3, H, W) float RGB in [0, 1], the originals, same order.
        batch_size: Pairs per forward pass (each pass embeds 2 * batch_size images).

    Returns:
        (N,) float64 cosines; their mean is the contest score.

    Raises:
        ValueError: Shapes or dtypes do not match, or ``batch_size < 1``.
    """
    check_images(sr, "sr")
    check_images(hr, "hr")
    if sr.shape[0] != hr.shape[0]:
        raise ValueError(f"sr has {sr.shape[0]} images but hr has {hr.shape[0]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.empty(sr.shape[0], dtype=np.float64)
    with torch.no_grad():
        for start in range(0, sr.shape[0], batch_size):
            stop = min(start + batch_size, sr.shape[0])
            if sr.shape[2:] == hr.shape[2:]:
                both = rec.embed(torch.cat([sr[start:stop], hr[start:stop]]))
                e_sr, e_hr = both[: stop - start], both[stop - start :]
            else:
                e_sr, e_hr = rec.embed(sr[start:stop]), rec.embed(hr[start:stop])
            e_sr = e_sr.detach().to("cpu", torch.float64)
            e_hr = e_hr.detach().to("cpu", torch.float64)
            cos = (e_sr * e_hr).sum(1) / (e_sr.norm(dim=1) * e_hr.norm(dim=1)).clamp_min(1e-12)
            out[start:stop] = cos.numpy()
    return out
