"""SphereFace ``sphere20a`` (512-d), the official ASC19 FaceSR scorer's recognizer.

The module's parameter names are those of clcarwin/sphereface_pytorch ``net_sphere.sphere20a``
so its published ``sphere20a_20171020.pth`` state dict loads with ``strict=True`` (the weights
are not in any package registry: the user supplies the file).

Preprocessing, exactly as the official ``evaluation_script/evaluate.py``: the image is read with
OpenCV (BGR uint8), ``cv2.resize(img, (96, 112), interpolation=cv2.INTER_CUBIC)``, then
``(x - 127.5) / 128``; the embedding is ``fc5`` (``feature=True``). :meth:`embed` receives RGB
floats in [0, 1]; it multiplies by 255, snaps to integers when the input holds 8-bit values
(straight-through, so gradients still flow) and flips to BGR. At 112x96 this path is
differentiable; at any other size the image is rounded to uint8 and resized with OpenCV
``INTER_CUBIC`` like the official script, and no gradient flows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fileio.user_error import UserError
from harness.scoring.recognizers.base import NOMINAL_SIZE_HW, Recognizer, check_images

logger = logging.getLogger(__name__)

#: Classes of CASIA-WebFace, the size of ``fc6`` in the official weights.
CASIA_CLASSES: int = 10574


class AngleLinear(nn.Module):
    """The A-Softmax classification layer; only its ``weight`` (in, out) matters here.

    Kept so that official checkpoints (which contain ``fc6.weight``) load strictly; the feature
    path never calls it.
    """

    def __init__(self, in_features: int, out_features: int, m: int = 4) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.m = m
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine of ``x`` with each class weight column (no margin), shape (B, classes)."""
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


class Sphere20a(nn.Module):
    """clcarwin/sphereface_pytorch ``sphere20a`` with identical parameter names.

    Args:
        classnum: Output classes of ``fc6`` (10574 for CASIA-WebFace weights).
        feature: Return the 512-d ``fc5`` feature from :meth:`forward` (as the scorer does).
    """

    def __init__(self, classnum: int = CASIA_CLASSES, feature: bool = True) -> None:
        super().__init__()
        self.classnum = classnum
        self.feature = feature
        widths = {1: (3, 64), 2: (64, 128), 3: (128, 256), 4: (256, 512)}
        counts = {1: 3, 2: 5, 3: 9, 4: 3}
        for stage, (cin, cout) in widths.items():
            for index in range(1, counts[stage] + 1):
                if index == 1:
                    conv = nn.Conv2d(cin, cout, 3, 2, 1)
                else:
                    conv = nn.Conv2d(cout, cout, 3, 1, 1)
                setattr(self, f"conv{stage}_{index}", conv)
                setattr(self, f"relu{stage}_{index}", nn.PReLU(cout))
        self.counts = counts
        self.fc5 = nn.Linear(512 * 7 * 6, 512)
        self.fc6 = AngleLinear(512, classnum)

    def _layer(self, stage: int, index: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"relu{stage}_{index}")(getattr(self, f"conv{stage}_{index}")(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 112, 96) BGR, (v - 127.5) / 128. Returns fc5 (B, 512) or fc6 logits."""
        for stage, count in self.counts.items():
            x = self._layer(stage, 1, x)
            for index in range(2, count + 1, 2):
                x = x + self._layer(stage, index + 1, self._layer(stage, index, x))
        x = self.fc5(x.flatten(1))
        return x if self.feature else self.fc6(x)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"sphere20a weights {path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"sphere20a weights {path}: cannot read ({first})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"sphere20a weights {path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_sphere20a(path: str | Path) -> Sphere20a:
    """Builds :class:`Sphere20a` and loads a clcarwin-format state dict strictly.

    Args:
        path: ``sphere20a_20171020.pth`` or any state dict of the same architecture.

    Raises:
        UserError: The file is missing, unreadable, or its keys/shapes do not match.
    """
    path = Path(path).expanduser()
    state = _read_state_dict(path)
    fc6 = state.get("fc6.weight")
    classnum = fc6.shape[1] if fc6 is not None and fc6.ndim == 2 else CASIA_CLASSES
    model = Sphere20a(classnum=classnum, feature=True)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"sphere20a weights {path}: not a net_sphere.sphere20a state dict "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    wrong = [k for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise UserError(
            f"sphere20a weights {path}: wrong shape for {wrong[0]} "
            f"({tuple(state[wrong[0]].shape)} != {tuple(expected[wrong[0]].shape)})"
        )
    model.load_state_dict(state, strict=True)
    return model


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """Official sphere20a preprocessing of RGB [0, 1] images (see the module docstring).

    Returns:
        (N, 3, 112, 96) BGR float32, ``(v - 127.5) / 128``.
    """
    x = images * 255.0
    if x.shape[2:] == NOMINAL_SIZE_HW:
        rounded = x.detach().round()
        if torch.all((x.detach() - rounded).abs() < 1e-3):
            x = x + (rounded - x.detach())  # exact 8-bit values, gradient passes straight through
    else:
        import cv2  # lazy: only the off-size path needs OpenCV

        height, width = NOMINAL_SIZE_HW
        u8 = x.detach().round().clamp(0, 255).to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
        resized = np.stack(
            [
                cv2.resize(
                    np.ascontiguousarray(img), (width, height), interpolation=cv2.INTER_CUBIC
                )
                for img in u8
            ]
        )
        x = torch.from_numpy(resized).permute(0, 3, 1, 2).to(images.device, torch.float32)
    return (x.flip(1) - 127.5) / 128.0


class SphereFaceRecognizer(Recognizer):
    """SphereFace sphere20a: ``fc5`` features, L2-normalised.

    Args:
        model: A loaded :class:`Sphere20a` (see :func:`load_sphere20a`).
        device: Where to put the weights.
    """

    name = "sphere20a"
    embedding_dim = 512
    differentiable = True  # at 112x96 only; other sizes go through OpenCV

    def __init__(self, model: Sphere20a, device: str | torch.device = "cpu") -> None:
        self.model = model
        self.model.feature = True
        self.model.eval()
        self.model.requires_grad_(False)
        self.model.to(device)

    @property
    def device(self) -> torch.device:
        """The device the network's weights are on."""
        return self.model.fc5.weight.device

    def to(self, device: str | torch.device) -> SphereFaceRecognizer:
        """Move the network to ``device``."""
        self.model.to(device)
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch of faces as L2-normalised vectors."""
        check_images(images)
        x = preprocess(images.to(self.device, torch.float32))
        return F.normalize(self.model(x), dim=1)
