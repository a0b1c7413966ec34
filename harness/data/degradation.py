"""Degradations: how an LR face is made from its HR original (the LR "kernel").

The ASC19 organisers made their 24x28 LR images with MATLAB's antialiased bicubic
``imresize(hr, 1/4)``; :func:`matlab_imresize` reproduces it bit for bit (``matlab_bicubic``,
the default), and :func:`fingerprint` shows that on the 300 validation pairs (mean absolute
error 0.000; PIL's antialiased BICUBIC comes next with 0.29 grey levels). Training data, warped
training pairs and ``harness prepare`` all make LR images through :func:`downscale`; NIQE uses
:func:`matlab_imresize` for its half-scale features.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fileio.user_error import UserError
from harness.data.imageio import pair_by_name, read_rgb


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def _resize_matrix(in_len: int, out_len: int, scale: float, antialiasing: bool) -> np.ndarray:
    """``(out_len, in_len)`` matrix M such that ``M @ x`` is MATLAB's 1-D bicubic resize of x.

    Mirrors MATLAB's ``contributions()``: output pixel k (1-based) samples the input at
    ``u = k / scale + 0.5 * (1 - 1 / scale)``; when shrinking with antialiasing the kernel is
    stretched by ``1 / scale``; out-of-range taps are folded back by symmetric padding.
    """
    kernel_width = 4.0
    shrink_aa = scale < 1 and antialiasing
    if shrink_aa:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if shrink_aa else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric padding exactly as MATLAB: aux = [1:n, n:-1:1], idx = aux(mod(idx-1, 2n)+1).
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    cols = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(matrix, (rows, cols.ravel()), weights.ravel())
    return matrix


def matlab_imresize(
    img: np.ndarray,
    scale: float | None = None,
    *,
    output_hw: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray:
    """Bicubic resize identical (to float precision) to MATLAB's ``imresize(img, scale)``.

    Unlike OpenCV or PIL, this uses MATLAB's symmetric border handling, and when shrinking
    (with ``antialiasing``) a kernel stretched by ``1/scale``. No rounding or clipping is done.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` array (any real dtype; computed in float64).
        scale: Factor applied to both sides; the output is ``ceil(H*scale) x ceil(W*scale)``.
        output_hw: Output ``(height, width)`` instead of ``scale`` (per-axis scale out/in).
        antialiasing: Widen the kernel when shrinking, as MATLAB does by default.

    Returns:
        float64 array of the new size with the same number of dimensions.
    """
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {arr.shape}")
    in_h, in_w = arr.shape[:2]
    if output_hw is not None:
        out_h, out_w = int(output_hw[0]), int(output_hw[1])
        scale_h, scale_w = out_h / in_h, out_w / in_w
    elif scale is not None and scale > 0:
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = float(scale)
    else:
        raise ValueError("give a positive scale or output_hw")
    m_h = _resize_matrix(in_h, out_h, scale_h, antialiasing)
    m_w = _resize_matrix(in_w, out_w, scale_w, antialiasing)
    out = np.tensordot(m_h, arr, axes=(1, 0))  # (out_h, W, ...)
    out = np.tensordot(m_w, out, axes=(1, 1))  # (out_w, out_h, ...)
    return np.swapaxes(out, 0, 1)


def _pil(resample: Image.Resampling) -> Callable[[np.ndarray, int], np.ndarray]:
    def down(hr: np.ndarray, factor: int) -> np.ndarray:
        h, w = hr.shape[:2]
        return np.asarray(Image.fromarray(hr).resize((w // factor, h // factor), resample))

    return down


def _cv2(flag_name: str) -> Callable[[np.ndarray, int], np.ndarray]:
    def down(hr: np.ndarray, factor: int) -> np.ndarray:
        import cv2

        h, w = hr.shape[:2]
        return cv2.resize(hr, (w // factor, h // factor), interpolation=getattr(cv2, flag_name))

    return down


def _matlab(hr: np.ndarray, factor: int) -> np.ndarray:
    out = matlab_imresize(hr, 1.0 / factor, antialiasing=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


#: Degradations by name: ``fn(hr uint8 HxWx3, factor) -> uint8``. PIL filters are
#: antialiased (support scaled by the factor); OpenCV's INTER_CUBIC is not. ``matlab_bicubic``
#: (:func:`matlab_imresize`, rounded) is what made the ASC19 LR images.
DEGRADATIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "pil_bicubic": _pil(Image.Resampling.BICUBIC),
    "pil_bilinear": _pil(Image.Resampling.BILINEAR),
    "pil_lanczos": _pil(Image.Resampling.LANCZOS),
    "cv2_cubic": _cv2("INTER_CUBIC"),
    "cv2_area": _cv2("INTER_AREA"),
    "nearest": _pil(Image.Resampling.NEAREST),
    "matlab_bicubic": _matlab,
}
#: The degradation that reproduces the organiser's LR images (see :func:`fingerprint`).
DEFAULT_DEGRADATION = "matlab_bicubic"


def check_degradation(name: str) -> str:
    """``name`` if it is in :data:`DEGRADATIONS`, else a :class:`UserError` listing them."""
    if name not in DEGRADATIONS:
        raise UserError(f"unknown degradation {name!r}: choose from {', '.join(DEGRADATIONS)}")
    return name


def downscale(hr: np.ndarray, name: str = DEFAULT_DEGRADATION, factor: int = 4) -> np.ndarray:
    """Shrinks an HR image by ``factor`` with a named degradation from :data:`DEGRADATIONS`.

    Args:
        hr: ``(H, W, 3)`` uint8 image, sides divisible by ``factor``.
        name: Degradation name.
        factor: Integer factor.

    Returns:
        ``(H/factor, W/factor, 3)`` uint8 image.
    """
    check_degradation(name)
    h, w = hr.shape[:2]
    if h % factor or w % factor:
        raise ValueError(f"{w}x{h} is not divisible by {factor}")
    return DEGRADATIONS[name](np.ascontiguousarray(hr), factor)


def fingerprint(
    hr_dir: str | Path,
    lr_dir: str | Path,
    *,
    kernels: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[tuple[str, float]]:
    """Guesses the degradation of an HR/LR set: mean absolute error per candidate.

    Each HR image (matched to LR by file stem) is shrunk by every kernel and compared with the
    given LR image.

    Args:
        hr_dir: HR images.
        lr_dir: LR images, an integer factor smaller.
        kernels: Candidate names (default: all of :data:`DEGRADATIONS`).
        limit: Use only the first this many pairs.

    Returns:
        ``[(kernel, mae in grey levels), ...]`` best (smallest) first.

    Raises:
        UserError: Missing images or a size that is not an integer multiple.
    """
    names = list(kernels) if kernels is not None else list(DEGRADATIONS)
    for k in names:
        check_degradation(k)
    pairs = pair_by_name(hr_dir, lr_dir)
    if limit is not None:
        pairs = pairs[:limit]
    sums = dict.fromkeys(names, 0.0)
    count = 0
    for p in pairs:
        hr, lr = read_rgb(p.hr), read_rgb(p.sr)
        fh, fw = hr.shape[0] / lr.shape[0], hr.shape[1] / lr.shape[1]
        if fh != fw or fh != int(fh):
            raise UserError(
                f"{p.sr}: {lr.shape[1]}x{lr.shape[0]} is not an integer fraction of "
                f"HR {hr.shape[1]}x{hr.shape[0]}"
            )
        for k in names:
            diff = downscale(hr, k, int(fh)).astype(np.int16) - lr.astype(np.int16)
            sums[k] += float(np.abs(diff).sum())
        count += lr.size
    return sorted(((k, sums[k] / count) for k in names), key=lambda kv: kv[1])
