"""A tiny escaping template helper: every value is HTML-escaped unless it is :class:`Markup`.

The report is built from strings found in run directories (job names, file names, host names,
spec values), any of which may contain ``<``, ``&`` or quotes. Building HTML only through
:func:`render` and :func:`el` means text is escaped by default and markup must be marked as
such explicitly::

    render("<td class='{cls}'>{value}</td>", cls="best", value=job_name)
    el("td", job_name, cls="best")
"""
from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["Markup", "el", "esc", "fmt_num", "join", "render"]


class Markup(str):
    """A string that is already safe HTML (never escaped again)."""

    __slots__ = ()


def esc(value: Any) -> Markup:
    """Escape ``value`` as HTML text or attribute content (quotes included), unless Markup."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def render(template: str, **values: Any) -> Markup:
    """Fill ``{name}`` fields of a trusted template with escaped values.

    Args:
        template: Trusted HTML with ``str.format`` fields (no format specs: format numbers
            before passing them).
        **values: Field values; escaped unless they are :class:`Markup`.

    Returns:
        The filled template, as Markup.
    """
    return Markup(template.format(**{k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """Concatenate parts, escaping those that are not Markup."""
    return Markup(sep.join(esc(p) for p in parts))


def el(tag: str, *children: Any, **attrs: Any) -> Markup:
    """One element: ``el("a", "text", href="#x", cls="c")`` -> ``<a href="#x" class="c">text</a>``.

    Attribute names come from the code (``cls`` and ``for_`` map to ``class`` and ``for``;
    underscores become dashes); attribute values and text children are escaped. An attribute
    set to None or False is left out; True gives a bare attribute.

    Args:
        tag: Element name (trusted).
        *children: Content; strings are escaped, Markup is kept.
        **attrs: Attributes.

    Returns:
        The element as Markup.
    """
    parts = [tag]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = {"cls": "class", "for_": "for"}.get(name, name.replace("_", "-"))
        parts.append(name if value is True else f'{name}="{esc(value)}"')
    inner = join(children)
    if tag in ("img", "br", "meta", "hr", "col"):
        return Markup(f"<{' '.join(parts)}>")
    return Markup(f"<{' '.join(parts)}>{inner}</{tag}>")


def fmt_num(value: Any, digits: int = 3, *, signed: bool = False) -> str:
    """A number for a table cell; ``—`` when missing or not finite.

    Args:
        value: A number, or None / anything non-numeric.
        digits: Digits after the decimal point for floats.
        signed: Always show the sign (for gains).
    """
    if isinstance(value, bool) or value is None:
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:+d}" if signed else f"{value:d}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(v):
        return "—"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``12th``, ``13th``, ``21st``, ``22nd``..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
