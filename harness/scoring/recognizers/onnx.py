"""Any ArcFace-style ONNX face recognizer, run with onnxruntime (CPU, or CUDA when available).

Expected model: one NCHW float input (usually 1x3x112x112 or Nx3x112x112) and an embedding as
its first output. Preprocessing:

1. RGB in [0, 1] -> 0..255.
2. Pad to a square with replicated border, the width difference split left/right. The
   ArcFace 112x112 alignment template is the SphereFace 96x112 one shifted 8 px right, so a
   96x112 ASC19 crop padded 8 px each side has the geometry ArcFace models were trained on.
3. Resize to the model's input H x W (read from the model; 112x112 if symbolic) with
   ``cv2.resize(INTER_LINEAR)`` when the size differs.
4. ``(x - mean) / std`` with mean = std = 127.5 by default, channel order RGB by default.

The output is L2-normalised. This path is **not differentiable** (numpy + onnxruntime): use it
for scoring, not as a training loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fileio.user_error import UserError
from harness.scoring.recognizers.base import Recognizer, check_images

logger = logging.getLogger(__name__)

_DEFAULT_HW = (112, 112)


def _static_dim(value: object, default: int) -> int:
    return value if isinstance(value, int) and value > 0 else default


class OnnxRecognizer(Recognizer):
    """Embeddings from an ONNX model through onnxruntime (no gradients).

    Args:
        path: The ``.onnx`` file.
        device: ``"cpu"`` or a CUDA device (uses CUDAExecutionProvider when installed).
        mean: Value subtracted from 0..255 pixels.
        std: Divisor applied after subtracting ``mean``.
        bgr: Feed BGR instead of RGB (some InsightFace exports expect BGR).

    Raises:
        UserError: The file is missing or onnxruntime cannot load it.
    """

    name = "onnx"
    differentiable = False

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        mean: float = 127.5,
        std: float = 127.5,
        bgr: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise UserError(f"onnx model {self.path}: file not found")
        self.mean = float(mean)
        self.std = float(std)
        self.bgr = bool(bgr)
        self._device = torch.device(device)
        self._session = self._open(self._device)
        inp = self._session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or _static_dim(shape[1], 3) != 3:
            raise UserError(
                f"onnx model {self.path}: expected one NCHW input with 3 channels, "
                f"got {inp.name} {shape}"
            )
        self._input_name = inp.name
        self.input_hw = (
            _static_dim(shape[2], _DEFAULT_HW[0]),
            _static_dim(shape[3], _DEFAULT_HW[1]),
        )
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        out_shape = self._session.get_outputs()[0].shape
        self.embedding_dim = _static_dim(out_shape[-1] if out_shape else None, 0)

    def _open(self, device: torch.device):  # -> onnxruntime.InferenceSession
        import onnxruntime  # lazy: only this recognizer needs it

        providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
        if (
            device.type == "cuda"
            and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        ):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        try:
            return onnxruntime.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"onnx model {self.path}: cannot load ({first})") from exc

    @property
    def device(self) -> torch.device:
        """The device the ONNX session runs on."""
        return self._device

    def to(self, device: str | torch.device) -> OnnxRecognizer:
        """Move the recognizer to ``device`` (a new session when it changes)."""
        device = torch.device(device)
        if device != self._device:
            self._session = self._open(device)
            self._device = device
        return self

    def preprocess(self, images: torch.Tensor) -> np.ndarray:
        """RGB [0, 1] (N, 3, H, W) -> the model's normalised NCHW float32 input."""
        import cv2  # lazy

        x = images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy() * np.float32(255)
        out_h, out_w = self.input_hw
        batch = []
        for img in x:
            height, width = img.shape[:2]
            if height >= width:
                extra = height - width
                pads = (0, 0, extra // 2, extra - extra // 2)
            else:
                extra = width - height
                pads = (extra // 2, extra - extra // 2, 0, 0)
            if any(pads):
                img = cv2.copyMakeBorder(img, *pads, cv2.BORDER_REPLICATE)
            if img.shape[:2] != (out_h, out_w):
                img = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
            batch.append(img)
        arr = np.stack(batch).transpose(0, 3, 1, 2)
        if self.bgr:
            arr = arr[:, ::-1]
        return np.ascontiguousarray((arr - self.mean) / self.std, dtype=np.float32)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeds ``images`` (no gradient); returns (N, D) float32 on :attr:`device`."""
        check_images(images)
        blob = self.preprocess(images)
        step = self._fixed_batch or max(len(blob), 1)
        outs = []
        for start in range(0, len(blob), step):
            chunk = blob[start : start + step]
            count = len(chunk)
            if self._fixed_batch and count < step:  # a fixed batch dim: pad the last chunk
                chunk = np.concatenate(
                    [chunk, np.zeros((step - count, *chunk.shape[1:]), chunk.dtype)]
                )
            outs.append(self._session.run(None, {self._input_name: chunk})[0][:count])
        emb = torch.from_numpy(np.concatenate(outs).reshape(len(blob), -1).astype(np.float32))
        return torch.nn.functional.normalize(emb, dim=1).to(self._device)
