"""Does the LR given match the LR kernel the model was trained on?

A team's biggest silent loss is a mismatched kernel: a model trained on MATLAB-bicubic LR
(the organiser's, see :func:`harness.data.degradation.fingerprint`) loses identity on LR made
another way, and nothing else says so. :func:`lr_kernel_check` fingerprints the LR of a scored
set against its HR (a few pairs, ~1 s) and compares the best-fitting kernel with the model's
``data.lr_kernel``; ``scores.json`` keeps the result as ``summary["lr_kernel"]`` and the report
prints it in one line beside the scores.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fileio.user_error import UserError

log = logging.getLogger(__name__)

#: Pairs fingerprinted (the organiser's LR is matched exactly on 20: MAE 0.00 grey levels).
PAIRS: int = 20
#: Mean absolute error (grey levels) below which the best kernel is taken as the LR's own.
MATCH_MAE: float = 0.5


def lr_kernel_check(hr_dir: str | Path, lr_dir: str | Path, trained: str | None) -> dict[str, Any]:
    """Fingerprints the LR and compares it with the kernel the model was trained on.

    Args:
        hr_dir: The HR images.
        lr_dir: The LR images given to the model.
        trained: The model's ``data.lr_kernel`` (None: unknown, only the fingerprint).

    Returns:
        ``{"best", "best_mae", "trained", "trained_mae", "match", "pairs", "line"}``: ``match``
        is True/False when ``trained`` is known and None otherwise; ``line`` says it in words.
        ``{"error": ...}`` when the LR cannot be fingerprinted (sizes not an integer multiple).
    """
    from harness.data.degradation import fingerprint

    try:
        fits = fingerprint(hr_dir, lr_dir, limit=PAIRS)
    except UserError as exc:
        return {"error": str(exc), "line": f"LR kernel not checked: {exc}"}
    if not fits:
        return {"error": "no pairs", "line": "LR kernel not checked: no pairs"}
    best, best_mae = fits[0]
    maes = dict(fits)
    out: dict[str, Any] = {"best": best, "best_mae": best_mae, "trained": trained,
                           "trained_mae": maes.get(trained) if trained else None,
                           "pairs": min(PAIRS, len(pair_names(hr_dir, lr_dir)))}
    own = best if best_mae < MATCH_MAE else None
    if trained is None:
        out["match"] = None
        out["line"] = (f"LR kernel: {own} (MAE {best_mae:.2f} grey levels)" if own else
                       f"LR kernel: none of the known kernels (closest {best}, MAE "
                       f"{best_mae:.2f})")
    elif own == trained or maes.get(trained, 99.0) < MATCH_MAE:
        out["match"] = True
        out["line"] = (f"LR kernel matches training: {trained} (MAE {maes[trained]:.2f} grey "
                       "levels)")
    else:
        out["match"] = False
        out["line"] = (f"LR KERNEL MISMATCH: the model was trained on {trained} LR (MAE "
                       f"{maes.get(trained, float('nan')):.2f} grey levels here) but this LR "
                       f"fits {best} (MAE {best_mae:.2f}); expect lower IS than in training")
        log.warning("%s", out["line"])
    return out


def pair_names(hr_dir: str | Path, lr_dir: str | Path) -> list[str]:
    """Names of the HR/LR pairs (matched by file stem)."""
    from harness.data.imageio import pair_by_name

    return [p.name for p in pair_by_name(hr_dir, lr_dir)]
