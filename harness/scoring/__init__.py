"""Scoring super-resolved faces.

Scoring super-resolved faces: identity similarity (:mod:`.identity`), image metrics
(:mod:`.metrics`), recognizers (:mod:`.recognizers`) and whole folders (:mod:`.score_folders`).

This package file holds the one registry of metrics, :data:`METRICS`: adding a metric is one
entry here (plus its test). It imports nothing heavy — each metric's function is imported when
it is first computed — so that job validation can check names without scipy or OpenCV.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _image_metric(function: str, **kwargs: Any) -> Callable[..., float]:
    """``(sr, hr, shave) -> float`` calling :mod:`harness.scoring.metrics` ``function``."""
    def compute(sr: Any, hr: Any, shave: int) -> float:
        from harness.scoring import metrics

        fn = getattr(metrics, function)
        if function == "niqe":  # no reference: the SR image alone
            return fn(sr, shave=shave)
        return fn(sr, hr, shave=shave, **kwargs)
    return compute


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric that ``evaluate``, ``infer --hr`` and validation can compute."""

    name: str
    """Key in job files, ``--metrics``, ``scores.json`` and ``per_image.csv``."""
    label: str
    """How tables and the report name it."""
    digits: int
    """Decimals shown."""
    higher_is_better: bool
    """Direction (NIQE and RMSE: lower is better)."""
    compute: Callable[..., float] | None
    """``(sr, hr, shave) -> float`` per image; None for IS, which the recognizer computes in
    batches (:mod:`harness.scoring.identity`)."""

    def describe(self) -> dict[str, Any]:
        """What a reader of ``scores.json`` needs to show it (written into its meta)."""
        return {"label": self.label, "digits": self.digits,
                "higher_is_better": self.higher_is_better}


#: Every metric, in the order records list them.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("is", "IS", 4, True, None),
    Metric("psnr", "PSNR (dB)", 3, True, _image_metric("psnr")),
    Metric("ssim", "SSIM", 4, True, _image_metric("ssim")),
    Metric("psnr_y", "PSNR (Y, dB)", 3, True, _image_metric("psnr", y_channel=True)),
    Metric("ssim_y", "SSIM (Y)", 4, True, _image_metric("ssim", y_channel=True)),
    Metric("rmse", "RMSE", 3, False, _image_metric("rmse")),
    Metric("niqe", "NIQE", 3, False, _image_metric("niqe")),
)}

#: Metric names :func:`harness.scoring.score_folders.score_pairs` accepts, in record order.
ALL_METRICS: tuple[str, ...] = tuple(METRICS)
