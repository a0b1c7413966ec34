"""Identity similarity (IS), the ASC19 FaceSR score: the one implementation.

IS of a super-resolved image against its high-resolution original is the cosine of the two
images' recognizer embeddings; the contest score is its mean over all pairs. The official
script embeds one pair per forward pass; :func:`identity_similarity` embeds ``batch_size``
pairs per pass, which gives the same numbers (see ``tests/scoring/test_recognizers.py``) much
faster. Training validation, ``harness evaluate``, ``harness infer --hr`` and the power sweep
all score through this module.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.scoring.recognizers.base import Recognizer, check_images

if TYPE_CHECKING:  # imported where used: bf16 scoring through OpenVINO runs without torch
    import torch


def cosines(e_sr: Any, e_hr: Any) -> np.ndarray:
    """Row-wise cosine of two (N, D) embedding batches (tensors or arrays), in float64 on the
    CPU."""
    a, b = _float64(e_sr), _float64(e_hr)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                       1e-12)


def _float64(e: Any) -> np.ndarray:
    if hasattr(e, "detach"):  # a torch tensor, possibly on a GPU or in bf16
        import torch

        e = e.detach().to("cpu", torch.float64).numpy()
    return np.asarray(e, dtype=np.float64)


def identity_similarity(
    rec: Recognizer, sr: torch.Tensor, hr: torch.Tensor, batch_size: int = 64,
    precision: str = "fp32",
) -> np.ndarray:
    """Per-pair identity similarity: cosine of ``rec`` embeddings of SR vs HR.

    Args:
        rec: The recognizer.
        sr: (N, 3, H, W) float RGB in [0, 1], the super-resolved images.
        hr: (N, 3, H, W) float RGB in [0, 1], the originals, same order.
        batch_size: Pairs per forward pass (each pass embeds 2 * batch_size images).
        precision: ``fp32`` (the score) or ``bf16`` (faster, approximate; see
            :mod:`harness.model.precision`).

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
    import torch

    from harness.model.precision import autocast

    out = np.empty(sr.shape[0], dtype=np.float64)
    with torch.no_grad(), autocast(str(rec.device), precision):
        for start in range(0, sr.shape[0], batch_size):
            stop = min(start + batch_size, sr.shape[0])
            if sr.shape[2:] == hr.shape[2:]:
                both = rec.embed(torch.cat([sr[start:stop], hr[start:stop]]))
                e_sr, e_hr = both[: stop - start], both[stop - start :]
            else:
                e_sr, e_hr = rec.embed(sr[start:stop]), rec.embed(hr[start:stop])
            out[start:stop] = cosines(e_sr, e_hr)
    return out


def identity_similarity_arrays(rec: Recognizer, srs: Sequence[np.ndarray],
                               hrs: Sequence[np.ndarray], batch_size: int = 64,
                               precision: str = "fp32") -> np.ndarray:
    """Per-pair IS of uint8 ``(H, W, 3)`` images; pairs are grouped by HR size (a batch needs
    one size), each SR already at its HR's size.

    A recognizer whose own path takes arrays (:attr:`Recognizer.array_native`, e.g. FaceNet in
    bf16 through OpenVINO) embeds them as they are, without torch. Others get tensors
    (:func:`identity_similarity`).

    Raises:
        ValueError: The recognizer always runs at another precision.
    """
    if rec.precision not in (None, precision):
        raise ValueError(f"{rec.name} runs in {rec.precision}, not {precision}")
    native = rec.array_native
    out = np.empty(len(hrs), dtype=np.float64)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, hr in enumerate(hrs):
        groups.setdefault(hr.shape, []).append(i)
    for idx in groups.values():
        if native:
            out[idx] = _native_similarity(rec, np.stack([srs[i] for i in idx]),
                                          np.stack([hrs[i] for i in idx]), batch_size)
        else:
            from harness.data.imageio import to_tensor

            out[idx] = identity_similarity(rec, to_tensor([srs[i] for i in idx]),
                                           to_tensor([hrs[i] for i in idx]), batch_size,
                                           precision)
    return out


def _native_similarity(rec: Recognizer, sr: np.ndarray, hr: np.ndarray,
                       batch_size: int) -> np.ndarray:
    """:func:`identity_similarity`'s batching over uint8 (N, H, W, 3) arrays, in numpy."""
    out = np.empty(len(sr), dtype=np.float64)
    for start in range(0, len(sr), batch_size):
        stop = min(start + batch_size, len(sr))
        both = rec.embed_arrays(np.concatenate([sr[start:stop], hr[start:stop]]))
        out[start:stop] = cosines(both[: stop - start], both[stop - start :])
    return out
