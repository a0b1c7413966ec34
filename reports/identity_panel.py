"""The report's identity panel: IS under each recognizer scored, and the LR-kernel check.

Rendered from ``infer/scores.json`` only (``summary["identity"]`` and ``summary["lr_kernel"]``,
written by :func:`harness.scoring.score_folders.evaluate_dirs`); imports no torch. The
recognizer(s) the model was trained against (the job's ``loss.recognizer`` when its identity
or feature loss is on) are marked, so a judge sees at a glance whether a gain holds under a
recognizer the model never saw.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reports.markup import Markup, el, fmt_num, join

#: (key in a panel row, heading, decimals, signed) — the same columns as the CLI's table.
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("is", "IS", 4, False),
    ("impostor", "impostor", 4, False),
    ("normalized_is", "normalised IS", 4, False),
    ("rank1", "rank-1", 3, False),
    ("is_bicubic", "IS bicubic", 4, False),
    ("normalized_is_bicubic", "normalised bicubic", 4, False),
    ("gain", "gain over bicubic", 4, True),
)


def trained_against(job: Mapping[str, Any] | None) -> list[str]:
    """Labels of the recognizers the model's losses used (empty when unknown or none)."""
    loss = (job or {}).get("loss") or {}
    if not isinstance(loss, Mapping):
        return []
    if not (loss.get("identity") or loss.get("feature")):
        return []
    spec = str(loss.get("recognizer") or "facenet")
    return [s.strip().split("@")[0].split(":")[0].lower() for s in spec.split(",") if s.strip()]


def identity_panel(summary: Mapping[str, Any], job: Mapping[str, Any] | None) -> list[Markup]:
    """The panel table and the LR-kernel line (nothing when neither was recorded)."""
    parts: list[Markup] = []
    lr = summary.get("lr_kernel")
    if isinstance(lr, Mapping) and lr.get("line"):
        parts.append(el("p", el("b", "LR kernel: "), str(lr["line"]),
                        cls="note" if lr.get("match") is False else "small"))
    identity = summary.get("identity")
    if not isinstance(identity, Mapping) or not identity:
        return parts
    trained = trained_against(job)
    rows = []
    for label, row in identity.items():
        if not isinstance(row, Mapping):
            continue
        base = str(label).split("_")[0]
        mark = " ★ trained against" if base in trained else ""
        cells: list[Any] = [f"{label}{mark}"]
        cells += [fmt_num(row.get(k), d, signed=s) for k, _, d, s in COLUMNS]
        cells.append(str(row.get("verdict") or "—"))
        rows.append(cells)
    parts.append(el("h4", "Identity under each recognizer"))
    parts.append(_table(["recognizer", *[h for _, h, _, _ in COLUMNS], "verdict"], rows))
    parts.append(el("p", "Each SR face is compared with every HR face: normalised IS = (IS − "
                    "impostor) / (1 − impostor), where impostor is the mean cosine to other "
                    "people's HR; rank-1 = share of SR faces nearest their own HR (chance 1/N); "
                    "gain = (IS − IS_bicubic) / (1 − IS_bicubic). A recognizer whose cosines "
                    "all sit near 1 (dlib) is compared by these, not by raw IS.",
                    cls="small muted"))
    return parts


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Markup:
    head = join(el("th", h, cls="num" if 0 < i < len(headers) - 1 else None)
                for i, h in enumerate(headers))
    body = join(el("tr", join(el("td", c, cls="num" if 0 < i < len(r) - 1 else None)
                              for i, c in enumerate(r))) for r in rows)
    return el("div", el("table", el("thead", el("tr", head)), el("tbody", body)), cls="wide")
