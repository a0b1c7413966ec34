"""Identity similarity (IS), the ASC19 FaceSR score: the one implementation.

IS of a super-resolved image against its high-resolution original is the cosine of the two
images' recognizer embeddings; the contest score is its mean over all pairs. The official
script embeds one pair per forward pass; :func:`identity_similarity` embeds ``batch_size``
pairs per pass, which gives the same numbers (see ``tests/scoring/test_recognizers.py``) much
faster. Training validation, ``harness evaluate``, ``harness infer --hr`` and the power sweep
all score through this module.

Every batch of embeddings is checked before a cosine is taken (:func:`check_embeddings`:
finite, ``(N, D)`` with D >= 2, not one vector for different faces). Then one scale-free rule
(:func:`judge_scores`) asks how well the recognizer tells *these* faces apart: each SR face
against every HR face (:class:`Separation`, from the embeddings already computed) gives the
rank-1 identification rate, the AUC of genuine vs impostor cosines, and IS normalised by the
impostor baseline, (IS - impostor) / (1 - impostor). Near-constant embeddings and SR at chance
level give no score; a saturated recognizer (random weights) is warned about loudly; dlib,
whose cosines all sit near 1 but which separates people well, is scored.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fileio.user_error import UserError
from harness.scoring.recognizers.base import Recognizer, check_images

if TYPE_CHECKING:  # imported where used: bf16 scoring through OpenVINO runs without torch
    import torch

log = logging.getLogger(__name__)

#: A recognizer whose different faces have a mean cosine at least this high squeezes every
#: score toward 1 (FaceNet: ~0.05 on the ASC19 faces; dlib: ~0.86): read its normalised IS.
IMPOSTOR_COMPRESSED: float = 0.5
#: At least this high: saturated, as random or untrained weights are; warned loudly.
IMPOSTOR_SATURATED: float = 0.95
#: A recognizer whose impostor cosine is compressed (>= :data:`IMPOSTOR_COMPRESSED`) and that
#: finds the bicubic upscale of a 4x-downscaled face this close to the original (normalised IS
#: of the baseline) sees coarse pixels, not identity: random weights (sphere20a: 0.95, dlib
#: 0.62, FaceNet 0.63 on the ASC19 validation faces).
COARSE_BASELINE: float = 0.9
#: At least this high: every face embeds to nearly one vector (the whole scale from a stranger
#: to the same face spans under 0.01 of IS); refused.
IMPOSTOR_REFUSE: float = 0.99
#: An AUC of genuine vs impostor cosines fewer than this many null standard deviations above
#: 0.5 is chance: SR faces no closer to their own HR than to other people's.
CHANCE_Z: float = 3.0
#: Separation is measured on at most this many pairs (evenly spaced): an N x N cosine matrix.
MAX_FACES: int = 2000
#: Rows closer than this (max abs difference of L2-normalised embeddings) are one vector.
_CONSTANT_TOL: float = 1e-6


@dataclass(frozen=True, slots=True)
class SeparationStats:
    """How well a recognizer tells *these* faces apart: each SR face against every HR face.

    Scale-free: a recognizer whose cosines sit near 1 (dlib) and one spread over [-1, 1]
    (FaceNet) are judged alike, by ranks and by IS relative to the impostor baseline.
    """

    n: int
    """Pairs measured (at most :data:`MAX_FACES`)."""
    is_mean: float
    """Mean genuine cosine, cos(SR_i, HR_i), over the pairs measured."""
    impostor: float
    """Mean impostor cosine, cos(SR_i, HR_j) for j != i."""
    normalized_is: float
    """(IS - impostor) / (1 - impostor): 0 a stranger, 1 the same face."""
    rank1: float
    """Fraction of SR faces whose nearest HR face (by cosine) is their own."""
    auc: float
    """Probability that a genuine cosine beats an impostor cosine (ties count half)."""
    auc_z: float
    """(AUC - 0.5) over its standard deviation when nothing is recognised."""

    @property
    def chance_rank1(self) -> float:
        """Rank-1 of a guess: 1 / n."""
        return 1.0 / self.n

    def as_dict(self) -> dict[str, float]:
        """Plain values for ``scores.json``."""
        return {"n": self.n, "is": self.is_mean, "impostor": self.impostor,
                "normalized_is": self.normalized_is, "rank1": self.rank1,
                "chance_rank1": self.chance_rank1, "auc": self.auc}


@dataclass(slots=True)
class Separation:
    """Collects the SR and HR embeddings of scored pairs, to measure separation at the end.

    Fed by :func:`identity_similarity` with each batch's embeddings (already computed; kept as
    float32 unit vectors, 2 KiB per FaceNet pair). Parts add over batches and ranks
    (:meth:`part`, :meth:`merge`), pairs staying aligned.
    """

    sr: list[np.ndarray] = field(default_factory=list)
    """Unit SR embeddings, one (B, D) array per batch."""
    hr: list[np.ndarray] = field(default_factory=list)
    """Unit HR embeddings of the same pairs."""

    def add(self, e_sr: np.ndarray, e_hr: np.ndarray) -> None:
        """Keeps one batch's embeddings (pair i of ``e_sr`` is pair i of ``e_hr``)."""
        self.sr.append(_unit(e_sr))
        self.hr.append(_unit(e_hr))

    def part(self) -> tuple[np.ndarray, np.ndarray]:
        """What :meth:`merge` joins (plain arrays, for a gather over ranks)."""
        if not self.sr:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(self.sr), np.concatenate(self.hr)

    @staticmethod
    def merge(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> Separation:
        """Every rank's :meth:`part` as one collection."""
        return Separation([s for s, _ in parts if len(s)], [h for s, h in parts if len(s)])

    @property
    def count(self) -> int:
        """Pairs collected."""
        return sum(len(s) for s in self.sr)

    def measure(self) -> SeparationStats | None:
        """The separation of the pairs collected; None for fewer than 3 pairs."""
        sr, hr = self.part()
        n = len(sr)
        if n < 3:
            return None
        if n > MAX_FACES:
            keep = np.linspace(0, n - 1, MAX_FACES).round().astype(int)
            sr, hr, n = sr[keep], hr[keep], MAX_FACES
        gram = sr.astype(np.float64) @ hr.astype(np.float64).T
        genuine = np.diag(gram).copy()
        off = ~np.eye(n, dtype=bool)
        impostors = np.sort(gram[off])
        imp = float(impostors.mean())
        is_mean = float(genuine.mean())
        # A tie with the best impostor counts against: a constant network ranks nothing first.
        best_other = np.where(off, gram, -np.inf).max(axis=1)
        rank1 = float((genuine > best_other).mean())
        below = np.searchsorted(impostors, genuine, "left")
        ties = np.searchsorted(impostors, genuine, "right") - below
        auc = float((below + 0.5 * ties).sum() / (n * len(impostors)))
        n_imp = len(impostors)
        sd = float(np.sqrt((n + n_imp + 1) / (12.0 * n * n_imp)))
        return SeparationStats(
            n=n, is_mean=is_mean, impostor=imp,
            normalized_is=(is_mean - imp) / (1.0 - imp) if imp < 1.0 else float("nan"),
            rank1=rank1, auc=auc, auc_z=(auc - 0.5) / sd)


def _unit(e: Any) -> np.ndarray:
    a = _float64(e)
    return (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def check_embeddings(e: Any, images: Any, rec: Recognizer) -> np.ndarray:
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
    if dim < 2:
        raise UserError(f"recognizer {rec.name}: gives {dim}-d embeddings; every cosine of "
                        "1-d vectors is +1 or -1, so no IS can be computed")
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


def judge_scores(stats: SeparationStats | None, recognizer: str, what: str = "IS", *,
                 chance: str = "refuse", baseline: SeparationStats | None = None) -> str:
    """Refuses a score that cannot mean anything, warns on a saturated recognizer.

    The rule is scale-free: it asks how well the recognizer tells *these* faces apart
    (:class:`SeparationStats`), never how high its cosines are.

    Args:
        stats: The separation of the run (every rank's pairs), None when under 3 pairs.
        recognizer: Its name, for the message.
        what: What was scored, for the message (``IS``, ``validation IS``).
        chance: What SR faces at chance level get: ``refuse`` (evaluate, infer) or ``warn``
            (validation: an untrained model's SR carries no identity yet, and training goes
            on).
        baseline: The same recognizer's separation of the bicubic baseline, when measured:
            a compressed recognizer that finds it nearly perfect (:data:`COARSE_BASELINE`) is
            saturated too.

    Returns:
        ``ok``, ``compressed`` (impostor >= :data:`IMPOSTOR_COMPRESSED`: read the normalised
        IS) or ``saturated`` (>= :data:`IMPOSTOR_SATURATED`, warned); ``chance`` when warned
        of chance-level SR; ``unjudged`` without stats.

    Raises:
        UserError: Near-constant embeddings (impostor >= :data:`IMPOSTOR_REFUSE`), or SR faces
            no closer to their own HR than to others' (AUC within :data:`CHANCE_Z` null
            standard deviations of 0.5) when ``chance`` is ``refuse``.
    """
    if stats is None:
        return "unjudged"
    from harness.outputs.logs import warn_once

    imp = stats.impostor
    if imp >= IMPOSTOR_REFUSE:
        raise UserError(
            f"recognizer {recognizer} cannot tell faces apart: every face embeds to nearly one "
            f"vector (different people's faces have a mean cosine of {imp:.6f}, the {what} is "
            f"{stats.is_mean:.6f}); no score is reported")
    if stats.auc_z < CHANCE_Z:
        line = (f"SR faces are no closer to their own HR than to other people's under "
                f"recognizer {recognizer} (rank-1 {stats.rank1:.3f}, chance "
                f"{stats.chance_rank1:.3f}; AUC {stats.auc:.3f}, chance 0.5; {what} "
                f"{stats.is_mean:.4f} vs {imp:.4f} between different people)")
        if chance == "refuse":
            raise UserError(f"{line}: the recognizer or the SR images carry no identity; no "
                            "score is reported")
        warn_once(log, f"chance {recognizer}", "%s: not recognisable yet", line)
        return "chance"
    coarse = (baseline is not None and imp >= IMPOSTOR_COMPRESSED
              and baseline.normalized_is >= COARSE_BASELINE)
    if imp >= IMPOSTOR_SATURATED or coarse:
        warn_once(log, f"saturated {recognizer}",
                  "recognizer %s is SATURATED, as random or untrained weights are: different "
                  "people's faces have a mean cosine of %.4f (trained FaceNet ~0.05, dlib "
                  "~0.86)%s; its %s %.4f says little (normalised %.4f, rank-1 %.3f)",
                  recognizer, imp,
                  f" and a 4x-downscaled face is nearly its original to it (bicubic normalised "
                  f"IS {baseline.normalized_is:.3f})" if coarse and baseline else "",
                  what, stats.is_mean, stats.normalized_is, stats.rank1)
        return "saturated"
    return "compressed" if imp >= IMPOSTOR_COMPRESSED else "ok"


def cosines(e_sr: Any, e_hr: Any) -> np.ndarray:
    """Return the row-wise cosine of two (N, D) embedding batches.

    Row-wise cosine of two (N, D) embedding batches (tensors or arrays), in float64 on the
    CPU.
    """
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
    precision: str = "fp32", separation: Separation | None = None,
) -> np.ndarray:
    """Per-pair identity similarity: cosine of ``rec`` embeddings of SR vs HR.

    Args:
        rec: The recognizer.
        sr: (N, 3, H, W) float RGB in [0, 1], the super-resolved images.
        hr: (N, 3, H, W) float RGB in [0, 1], the originals, same order.
        batch_size: Pairs per forward pass (each pass embeds 2 * batch_size images).
        precision: ``fp32`` (the score) or ``bf16`` (faster, approximate; see
            :mod:`harness.model.precision`).
        separation: Collects the embeddings for :meth:`Separation.measure`.

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
            if separation is not None:
                separation.add(e_sr, e_hr)
    return out


def identity_similarity_arrays(rec: Recognizer, srs: Sequence[np.ndarray],
                               hrs: Sequence[np.ndarray], batch_size: int = 64,
                               precision: str = "fp32",
                               separation: Separation | None = None) -> np.ndarray:
    """Return the per-pair IS of uint8 ``(H, W, 3)`` images.

    Per-pair IS of uint8 ``(H, W, 3)`` images; pairs are grouped by HR size (a batch needs
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
                                          separation)
        else:
            from harness.data.imageio import to_tensor

            out[idx] = identity_similarity(rec, to_tensor([srs[i] for i in idx]),
                                           to_tensor([hrs[i] for i in idx]), batch_size,
                                           precision, separation)
    return out


def _native_similarity(rec: Recognizer, sr: np.ndarray, hr: np.ndarray,
                       batch_size: int, separation: Separation | None) -> np.ndarray:
    """:func:`identity_similarity`'s batching over uint8 (N, H, W, 3) arrays, in numpy."""
    out = np.empty(len(sr), dtype=np.float64)
    for start in range(0, len(sr), batch_size):
        stop = min(start + batch_size, len(sr))
        images = np.concatenate([sr[start:stop], hr[start:stop]])
        both = check_embeddings(rec.embed_arrays(images), images, rec)
        out[start:stop] = cosines(both[: stop - start], both[stop - start :])
        if separation is not None:
            separation.add(both[: stop - start], both[stop - start :])
    return out
