"""Identity similarity (IS), the ASC19 FaceSR score: the one implementation.

IS of a super-resolved image against its high-resolution original is the cosine of the two
images' recognizer embeddings; the contest score is its mean over all pairs. The official
script embeds one pair per forward pass; :func:`identity_similarity` embeds ``batch_size``
pairs per pass, which gives the same numbers (see ``tests/scoring/test_recognizers.py``) much
faster. Training validation, ``harness evaluate``, ``harness infer --hr`` and the power sweep
all score through this module.

Every batch of embeddings is checked before a cosine is taken (:func:`check_embeddings`:
finite, ``(N, D)``, not one vector for different faces), and the mean cosine between the
embeddings of *different* HR faces (the impostor cosine, :class:`ImpostorStats`, from the
embeddings already computed) is compared with the mean IS (:func:`judge_scores`): a recognizer
that finds different people as alike as an SR face and its original gives no score at all.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fileio.user_error import UserError
from harness.scoring.recognizers.base import Recognizer, check_images

if TYPE_CHECKING:  # imported where used: bf16 scoring through OpenVINO runs without torch
    import torch

log = logging.getLogger(__name__)

#: A recognizer whose different faces have a mean cosine at least this high cannot tell people
#: apart (FaceNet: ~0.1 on the ASC19 faces; a collapsed or random network: > 0.9).
IMPOSTOR_REFUSE: float = 0.5
#: How far the mean IS must lie above the impostor cosine for SR faces to count as recognised.
IS_MARGIN: float = 0.1
#: Rows closer than this (max abs difference of L2-normalised embeddings) are one vector.
_CONSTANT_TOL: float = 1e-6


@dataclass(slots=True)
class ImpostorStats:
    """Running mean of the cosine between embeddings of *different* HR faces.

    Fed by :func:`identity_similarity` with each batch's HR embeddings (all pairs within the
    batch, O(batch^2) dot products of vectors already computed). Sums add over batches and
    ranks (:meth:`merge`).
    """

    total: float = 0.0
    """Sum of the impostor cosines seen."""
    count: int = 0
    """How many there were."""

    def add(self, e_hr: np.ndarray) -> None:
        """Adds the cosines between every two rows of one batch's HR embeddings."""
        n = len(e_hr)
        if n < 2:
            return
        unit = e_hr / np.maximum(np.linalg.norm(e_hr, axis=1, keepdims=True), 1e-12)
        gram = unit @ unit.T
        self.total += float(gram.sum() - np.trace(gram))
        self.count += n * (n - 1)

    def merge(self, parts: Sequence[tuple[float, int]]) -> ImpostorStats:
        """The sum of ``(total, count)`` parts (from :meth:`part` of every rank)."""
        return ImpostorStats(sum(t for t, _ in parts), sum(c for _, c in parts))

    def part(self) -> tuple[float, int]:
        """What :meth:`merge` adds up (plain values, for a gather over ranks)."""
        return self.total, self.count

    @property
    def mean(self) -> float | None:
        """The mean impostor cosine; None before two faces were seen in one batch."""
        return self.total / self.count if self.count else None


def check_embeddings(e: np.ndarray, images: Any, rec: Recognizer) -> np.ndarray:
    """Refuses a batch of embeddings no score can come from; returns it as float64.

    Args:
        e: (N, D) embeddings of ``images`` (tensor or array).
        images: The N faces embedded (tensor (N, 3, H, W) or array (N, H, W, 3)).
        rec: The recognizer (its ``name`` and ``embedding_dim`` say what to expect).

    Raises:
        UserError: Not (N, D); NaN or infinite values; or one vector for different faces.
    """
    a = _float64(e)
    n = len(images)
    dim = rec.embedding_dim or (a.shape[1] if a.ndim == 2 else 0)
    if a.ndim != 2 or a.shape != (n, dim):
        raise UserError(f"recognizer {rec.name}: embeddings of shape {tuple(a.shape)} for {n} "
                        f"faces, expected ({n}, {dim}); no IS can be computed")
    bad = int((~np.isfinite(a)).any(axis=1).sum())
    if bad:
        raise UserError(f"recognizer {rec.name}: {bad} of {n} embeddings are not finite "
                        "(NaN or infinite); no IS can be computed")
    if n >= 2:
        unit = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        if float(np.abs(unit - unit[0]).max()) < _CONSTANT_TOL and _differ(images):
            raise UserError(f"recognizer {rec.name}: gives one embedding for {n} different "
                            "faces; no IS can be computed")
    return a


def _differ(images: Any) -> bool:
    """Whether the batch holds at least two different images."""
    first = images[0]
    if hasattr(images, "detach"):
        import torch

        return not all(bool(torch.equal(first, images[i])) for i in range(1, len(images)))
    return not all(np.array_equal(first, images[i]) for i in range(1, len(images)))


def judge_scores(mean_is: float, impostors: ImpostorStats, recognizer: str,
                 what: str = "IS") -> None:
    """Refuses an IS that cannot mean anything; warns when SR faces are not recognised.

    Args:
        mean_is: The mean IS over every pair scored.
        impostors: The impostor cosines of the same run (every rank's, merged).
        recognizer: Its name, for the message.
        what: What was scored, for the message (``IS``, ``validation IS``).

    Raises:
        UserError: Different people's faces are as alike to the recognizer as an SR face and
            its original (impostor cosine >= :data:`IMPOSTOR_REFUSE` and within
            :data:`IS_MARGIN` of the IS): it cannot tell faces apart.
    """
    imp = impostors.mean
    if imp is None or not np.isfinite(mean_is):
        return
    if mean_is - imp < IS_MARGIN:
        if imp >= IMPOSTOR_REFUSE:
            raise UserError(
                f"recognizer {recognizer} cannot tell faces apart: different people's faces "
                f"have a mean cosine of {imp:.4f}, as high as the {what} {mean_is:.4f}; no "
                "score is reported")
        from harness.outputs.logs import warn_once

        warn_once(log, "SR faces not recognised", "%s %.4f is not clearly above the mean "
                  "cosine between different people's faces (%.4f): the SR faces are not "
                  "recognisable as their originals", what, mean_is, imp)


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
    precision: str = "fp32", impostors: ImpostorStats | None = None,
) -> np.ndarray:
    """Per-pair identity similarity: cosine of ``rec`` embeddings of SR vs HR.

    Args:
        rec: The recognizer.
        sr: (N, 3, H, W) float RGB in [0, 1], the super-resolved images.
        hr: (N, 3, H, W) float RGB in [0, 1], the originals, same order.
        batch_size: Pairs per forward pass (each pass embeds 2 * batch_size images).
        precision: ``fp32`` (the score) or ``bf16`` (faster, approximate; see
            :mod:`harness.model.precision`).
        impostors: Collects the cosines between different HR faces (see :func:`judge_scores`).

    Returns:
        (N,) float64 cosines; their mean is the contest score.

    Raises:
        ValueError: Shapes or dtypes do not match, or ``batch_size < 1``.
        UserError: The recognizer's embeddings give no score (:func:`check_embeddings`).
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
                images = torch.cat([sr[start:stop], hr[start:stop]])
                both = check_embeddings(rec.embed(images), images, rec)
                e_sr, e_hr = both[: stop - start], both[stop - start :]
            else:
                e_sr = check_embeddings(rec.embed(sr[start:stop]), sr[start:stop], rec)
                e_hr = check_embeddings(rec.embed(hr[start:stop]), hr[start:stop], rec)
            out[start:stop] = cosines(e_sr, e_hr)
            if impostors is not None:
                impostors.add(e_hr)
    return out


def identity_similarity_arrays(rec: Recognizer, srs: Sequence[np.ndarray],
                               hrs: Sequence[np.ndarray], batch_size: int = 64,
                               precision: str = "fp32",
                               impostors: ImpostorStats | None = None) -> np.ndarray:
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
                                          np.stack([hrs[i] for i in idx]), batch_size,
                                          impostors)
        else:
            from harness.data.imageio import to_tensor

            out[idx] = identity_similarity(rec, to_tensor([srs[i] for i in idx]),
                                           to_tensor([hrs[i] for i in idx]), batch_size,
                                           precision, impostors)
    return out


def _native_similarity(rec: Recognizer, sr: np.ndarray, hr: np.ndarray,
                       batch_size: int, impostors: ImpostorStats | None) -> np.ndarray:
    """:func:`identity_similarity`'s batching over uint8 (N, H, W, 3) arrays, in numpy."""
    out = np.empty(len(sr), dtype=np.float64)
    for start in range(0, len(sr), batch_size):
        stop = min(start + batch_size, len(sr))
        images = np.concatenate([sr[start:stop], hr[start:stop]])
        both = check_embeddings(rec.embed_arrays(images), images, rec)
        out[start:stop] = cosines(both[: stop - start], both[stop - start :])
        if impostors is not None:
            impostors.add(both[stop - start :])
    return out
