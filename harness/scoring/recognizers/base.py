"""The face-recognizer interface: RGB face crops in, L2-normalised embeddings out.

Identity similarity itself is computed in :mod:`harness.scoring.identity`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: FaceNetBf16 scores without it
    import torch

#: Nominal input size (height, width) of every recognizer: the ASC19 96x112 face crop.
NOMINAL_SIZE_HW: tuple[int, int] = (112, 96)


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """Raises TypeError/ValueError unless ``images`` is a float (N, 3, H, W) tensor.

    Args:
        images: The batch to check.
        what: Name used in the message.
    """
    import torch

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
        array_native: Whether :meth:`embed_arrays` is the recognizer's own path (numpy in and
            out, no torch); IS is then computed in numpy (see :mod:`harness.scoring.identity`).
        precision: The precision a compiled recognizer always runs at; None: the caller's
            (:func:`harness.model.precision.autocast`).
    """

    name: str = "recognizer"
    embedding_dim: int = 0
    feature_layers: tuple[str, ...] = ()
    differentiable: bool = False
    array_native: bool = False
    precision: str | None = None

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

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """Embeds a batch of uint8 faces without gradients: numpy in, numpy out.

        Args:
            images: (N, H, W, 3) uint8 RGB.

        Returns:
            (N, D) float32 L2-normalised embeddings. Default: through :meth:`embed`.
        """
        import torch

        from harness.data.imageio import to_tensor

        with torch.no_grad():
            return self.embed(to_tensor(list(images))).detach().cpu().float().numpy()

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """Returns intermediate activations by layer name (for a perceptual/identity loss).

        Args:
            images: As for :meth:`embed`.
            layers: Names from :attr:`feature_layers`.

        Raises:
            NotImplementedError: This recognizer exposes no intermediate layers.
        """
        raise NotImplementedError(f"recognizer {self.name!r} does not expose intermediate features")

    def use_channels_last(self) -> None:  # noqa: B027 (an optional hook: the default does nothing)
        """Run convolutions in the channels-last memory layout.

        Run convolutions in the channels-last memory layout (faster on CPUs; the same
        embeddings to float rounding). A no-op for recognizers without convolutions in torch.
        """

    def use_fast_inference(self) -> None:
        """Prepare for scoring only (no gradients).

        Prepare for scoring only (no gradients): the fastest path that gives the same
        embeddings to float rounding. Default: channels-last.
        """
        self.use_channels_last()

    @abc.abstractmethod
    def to(self, device: str | torch.device) -> Recognizer:
        """Moves the weights to ``device`` and returns ``self``."""

    @property
    def device(self) -> torch.device:
        """Device the weights live on (CPU unless overridden)."""
        import torch

        return torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, embedding_dim={self.embedding_dim})"


