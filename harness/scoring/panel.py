"""A panel of recognizers: ``--recognizer facenet,dlib[,onnx:PATH][,sphere20a:PATH]``.

Every recognizer of a panel scores the same images in one pass over the folders (each PNG read
and decoded once, see :func:`harness.scoring.score_folders.score_pairs`). The first one is the
*primary*: its IS is ``is`` (and ``is_bicubic``) in records, as with one recognizer; the others
add ``is_<label>`` and ``is_<label>_bicubic``. Each is judged by the scale-free rule of
:func:`harness.scoring.identity.judge_scores`, and :func:`panel_summary` keeps, per recognizer,
IS, the impostor mean, the normalised IS, rank-1, AUC and the gain over bicubic.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fileio.user_error import UserError

if TYPE_CHECKING:
    import torch

    from harness.scoring.recognizers import Recognizer

#: Suffix of a bicubic-baseline key (the same as score_folders.BICUBIC_SUFFIX).
_BIC = "_bicubic"


def split_panel(spec: str | Sequence[str]) -> list[str]:
    """The recognizer specs of a panel, in order (``"facenet,dlib"`` -> two specs).

    Raises:
        UserError: An empty panel, a bad spec, or a recognizer named twice.
    """
    from harness.scoring.recognizers import parse_recognizer_spec

    specs = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    specs = [s for s in specs if s]
    if not specs:
        raise UserError("--recognizer: no recognizer named (e.g. facenet or facenet,dlib)")
    seen: set[tuple[str, str]] = set()
    for s in specs:
        key = parse_recognizer_spec(s)
        if key in seen:
            raise UserError(f"--recognizer {','.join(specs)}: {s} is named twice")
        seen.add(key)
    return specs


def spec_label(spec: str) -> str:
    """A short key for a spec: ``facenet``, ``dlib``, ``onnx_<file stem>``, ``sphere20a_<stem>``."""
    from harness.scoring.recognizers import parse_recognizer_spec

    name, path = parse_recognizer_spec(spec)
    if not path:
        return name
    stem = re.sub(r"[^a-z0-9]+", "_", Path(path).stem.lower()).strip("_")
    return f"{name}_{stem}" if stem else name


def labels_of(recognizers: Sequence[Any]) -> list[str]:
    """Unique labels of loaded recognizers (their ``panel_label`` or ``name``), in order."""
    out: list[str] = []
    for rec in recognizers:
        base = str(getattr(rec, "panel_label", None) or getattr(rec, "name", "recognizer"))
        label, k = base, 2
        while label in out:
            label, k = f"{base}{k}", k + 1
        out.append(label)
    return out


def is_key(labels: Sequence[str], i: int) -> str:
    """The record key of recognizer ``i``'s IS: ``is`` for the primary, else ``is_<label>``."""
    return "is" if i == 0 else f"is_{labels[i]}"


def load_panel(spec: str | Sequence[str], device: str | torch.device = "cpu", *,
               scoring_only: bool = False, precision: str = "fp32",
               threads: int | None = None) -> list[Recognizer]:
    """Loads every recognizer of a panel (see :func:`split_panel`), each labelled."""
    from harness.scoring.recognizers import load_recognizer

    out = []
    for s in split_panel(spec):
        rec = load_recognizer(s, device=device, scoring_only=scoring_only,
                              precision=precision, threads=threads)
        rec.panel_label = spec_label(s)  # type: ignore[attr-defined]
        out.append(rec)
    return out


def panel_summary(stats: Mapping[str, Mapping[str, float]], labels: Sequence[str],
                  separations: Mapping[str, Mapping[str, Any]],
                  verdicts: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per recognizer: the figures ``scores.json`` keeps and the report shows.

    Args:
        stats: ``summary["metrics"]`` (means of ``is``, ``is_<label>`` and their baselines).
        labels: The panel's labels, primary first.
        separations: Per label, ``{"sr": SeparationStats dict, "bicubic": ... or None}``.
        verdicts: Per label, what :func:`~harness.scoring.identity.judge_scores` said.

    Returns:
        ``{label: {"primary", "verdict", "is", "impostor", "normalized_is", "rank1", "auc",
        "is_bicubic", "impostor_bicubic", "normalized_is_bicubic", "rank1_bicubic",
        "gain"}}`` (bicubic figures and the gain only when LR was given for every pair).
    """
    out: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(labels):
        key = is_key(labels, i)
        row: dict[str, Any] = {"primary": i == 0, "key": key, "verdict": verdicts.get(label)}
        if key in stats:
            row["is"] = stats[key]["mean"]
        sep = separations.get(label) or {}
        for what, suffix in (("sr", ""), ("bicubic", _BIC)):
            s = sep.get(what)
            if s:
                row["impostor" + suffix] = s["impostor"]
                row["normalized_is" + suffix] = s["normalized_is"]
                row["rank1" + suffix] = s["rank1"]
                row["auc" + suffix] = s["auc"]
                row["chance_rank1"] = s["chance_rank1"]
        bic = stats.get(key + _BIC)
        if bic is not None and key in stats and bic["count"] == stats[key]["count"]:
            row["is_bicubic"] = bic["mean"]
            base = bic["mean"]
            row["gain"] = (stats[key]["mean"] - base) / (1.0 - base) if base < 1.0 else None
        out[label] = row
    return out


#: Columns of the panel table: (key in a panel row, heading, decimals, signed).
PANEL_COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("is", "IS", 4, False),
    ("impostor", "impost.", 4, False),
    ("normalized_is", "norm.", 4, False),
    ("rank1", "rank-1", 3, False),
    ("is_bicubic", "IS bic", 4, False),
    ("normalized_is_bicubic", "norm. bic", 4, False),
    ("gain", "gain", 4, True),
)


def panel_rows(identity: Mapping[str, Mapping[str, Any]],
               trained_against: Sequence[str] = ()) -> list[list[str]]:
    """Text rows of the panel, for the CLI table and the report.

    Each row: the label (``*`` after a recognizer the model trained against), then
    :data:`PANEL_COLUMNS` and the verdict.
    """
    rows = []
    for label, row in identity.items():
        cells = [label + (" *" if label in trained_against else "")]
        for key, _, digits, signed in PANEL_COLUMNS:
            v = row.get(key)
            cells.append("" if not isinstance(v, (int, float)) else
                         f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}")
        cells.append(str(row.get("verdict") or ""))
        rows.append(cells)
    return rows


def render_panel(summary: Mapping[str, Any]) -> Any:
    """A rich table of ``summary["identity"]`` (None without a panel)."""
    identity = summary.get("identity")
    if not identity:
        return None
    from rich.table import Table

    table = Table(title="Identity under each recognizer (each SR face against every HR face)")
    table.add_column("recognizer")
    for _, heading, _, _ in PANEL_COLUMNS:
        table.add_column(heading, justify="right")
    table.add_column("verdict")
    for cells in panel_rows(identity):
        table.add_row(*cells)
    table.caption = ("impost. = mean cosine to other people's HR; norm. = (IS - impost.) / "
                     "(1 - impost.); gain = (IS - IS_bic) / (1 - IS_bic); rank-1 chance = 1/N; "
                     "AUC in scores.json")
    return table


def parse_loss_panel(spec: str) -> list[tuple[str, float]]:
    """The recognizers of a loss and their weights.

    ``"facenet"`` or ``"facenet@0.7,sphere20a:PATH@0.3"`` (a missing weight is 1).

    Raises:
        UserError: A bad spec or weight, a recognizer named twice, or no weight above 0.
    """
    out: list[tuple[str, float]] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        rec, _, w = part.rpartition("@") if "@" in part else (part, "", "1")
        try:
            weight = float(w)
        except ValueError:
            raise UserError(f"loss.recognizer {spec!r}: weight {w!r} of {rec} is not a "
                            "number") from None
        if not weight >= 0 or weight == float("inf"):
            raise UserError(f"loss.recognizer {spec!r}: weight of {rec} must be >= 0")
        out.append((rec.strip(), weight))
    split_panel([r for r, _ in out])  # names and duplicates checked
    if not any(w > 0 for _, w in out):
        raise UserError(f"loss.recognizer {spec!r}: every weight is 0")
    return out


def load_loss_recognizer(spec: str, device: str | torch.device = "cpu") -> Any:
    """The loss network of ``loss.recognizer``.

    One recognizer, or a :class:`kernels.losses.RecognizerEnsemble` of several with their
    weights.
    """
    from harness.scoring.recognizers import load_recognizer

    members = parse_loss_panel(spec)
    if len(members) == 1:
        return load_recognizer(members[0][0], device=device)
    from kernels.losses import RecognizerEnsemble

    return RecognizerEnsemble([(spec_label(s), load_recognizer(s, device=device), w)
                               for s, w in members])
