"""Charts for the report, drawn with matplotlib and returned as inline SVG.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, so no global
backend or figure registry is touched) and saved as SVG with text kept as text
(``svg.fonttype: none``: the browser's sans-serif font, nothing embedded or fetched), no date
in the metadata and a fixed per-figure id salt, so the same inputs give byte-identical output
and ids never clash between the figures of one page.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import matplotlib
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType  # matplotlib >= 3.9; annotations only

from reports.markup import Markup, ordinal
from reports.rundata import PowerData, SweepData, interp_at

__all__ = [
    "gpu_timelines",
    "is_histogram",
    "meter_chart",
    "mpl_text",
    "power_bars",
    "power_timeline",
    "svg_of",
    "sweep_chart",
    "thin",
    "training_curves",
]

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "text.usetex": False,
    "path.simplify": True,
}

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
_BUDGET = "#c0392b"
_TARGET = "#e67e22"


def mpl_text(value: Any, limit: int = 60) -> str:
    """Text from files made safe for matplotlib labels: ``$`` would start math mode."""
    s = str(value)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def svg_of(fig: Figure, key: str) -> Markup:
    """Serialise a figure as an inline ``<svg>`` element (no XML prolog or DOCTYPE).

    Args:
        fig: The figure.
        key: Unique within the page (used as the id salt so ids do not collide).
    """
    buf = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": f"report-{key}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    start = text.find("<svg")
    text = text[start:] if start >= 0 else text
    return Markup(text.replace("<svg", f'<svg class="chart" role="img" aria-label="{key}"', 1))


def _figure(width_in: float, height_in: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width_in, height_in), layout="constrained")


def _with_rc(fn):
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def thin(xs: Sequence[float], ys: Sequence[float], max_points: int = 1200
         ) -> tuple[list[float], list[float]]:
    """Shorten a long series for drawing, keeping each bucket's minimum and maximum.

    Hours of 10 Hz samples would make multi-megabyte SVGs; min/max buckets keep the peaks
    (what a power budget is about) visible.
    """
    n = len(xs)
    if n <= max_points:
        return list(xs), list(ys)
    size = math.ceil(n / (max_points // 2))
    out_x: list[float] = []
    out_y: list[float] = []
    for start in range(0, n, size):
        idx = range(start, min(n, start + size))
        finite = [i for i in idx if _finite(ys[i])]
        if not finite:
            continue
        lo = min(finite, key=lambda i: ys[i])
        hi = max(finite, key=lambda i: ys[i])
        for i in sorted({lo, hi}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


@_with_rc
def training_curves(metrics: Sequence[dict[str, Any]], key: str) -> Markup | None:
    """Loss terms per step, and the validation metrics, side by side.

    Args:
        metrics: ``metrics.jsonl`` records.
        key: Unique chart key.

    Returns:
        The SVG, or None when there is no train record.
    """
    train = [m for m in metrics if m.get("kind") == "train" and _finite(m.get("step"))]
    val = [m for m in metrics if m.get("kind") == "val" and _finite(m.get("step"))]
    if not train and not val:
        return None
    fig = _figure(9.5, 3.0)
    ax_loss, ax_val = fig.subplots(1, 2)
    terms: list[str] = []
    for m in train:
        for k, v in (m.get("loss") or {}).items():
            if k not in terms and _finite(v):
                terms.append(k)
    positive = True
    for i, term in enumerate(terms):
        pts = [(m["step"], m["loss"][term]) for m in train
               if isinstance(m.get("loss"), dict) and _finite(m["loss"].get(term))]
        if not pts:
            continue
        xs, ys = thin([x for x, _ in pts], [y for _, y in pts])
        positive = positive and all(y > 0 for y in ys)
        total = term == "total"
        ax_loss.plot(xs, ys, lw=1.4 if total else 1.2, color="#222222" if total else
                     _COLORS[i % 10], ls="--" if total else "-", zorder=3 if total else 2,
                     label=mpl_text(term), marker="." if len(xs) < 30 and not total else None)
    if terms and positive:
        ax_loss.set_yscale("log")
    ax_loss.set_title("training loss terms")
    ax_loss.set_xlabel("step")
    if terms:
        ax_loss.legend(loc="upper right")
    else:
        ax_loss.text(0.5, 0.5, "no loss records", ha="center", transform=ax_loss.transAxes)

    series = [("val_is", "validation IS", _COLORS[0], ax_val)]
    ax_psnr = None
    if any(_finite(m.get("val_psnr")) for m in val):
        ax_psnr = ax_val.twinx() if any(_finite(m.get("val_is")) for m in val) else ax_val
        series.append(("val_psnr", "validation PSNR (dB)", _COLORS[1], ax_psnr))
    plotted = False
    handles = []
    for k, label, color, ax in series:
        pts = [(m["step"], m[k]) for m in val if _finite(m.get(k))]
        if not pts:
            continue
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        (h,) = ax.plot(xs, ys, color=color, marker="o", ms=4, lw=1.5, label=label)
        ax.set_ylabel(label, color=color)
        handles.append(h)
        plotted = True
    if ax_psnr is not None and ax_psnr is not ax_val:
        ax_psnr.grid(False)
        ax_psnr.spines["right"].set_visible(True)
    ax_val.set_title("validation")
    ax_val.set_xlabel("step")
    if train:
        ax_val.set_xlim(0, max(m["step"] for m in train) * 1.02 + 1)
    if plotted:
        ax_val.legend(handles=handles, loc="lower right")
    else:
        ax_val.text(0.5, 0.5, "no validation records", ha="center", va="center",
                    transform=ax_val.transAxes)
    return svg_of(fig, key)


_MAX_MARKS = 300
"""At most this many ordinary cap changes are drawn (downsampled visibly, see
:func:`every_nth`); crossings, starts, restores and fail-safes are always drawn."""

#: Governor events that are always shown, in the chart and in the events table.
KEPT_EVENTS = frozenset({"start", "restore", "crossing", "fail_safe_cleared", "signal", "error",
                         "apply_error"})


def is_kept_event(ev: dict[str, Any]) -> bool:
    """Return True for an event never dropped by downsampling.

    True for an event never dropped by downsampling (start, restore, crossing, fail-safe,
    signal, error).
    """
    return ev.get("event") in KEPT_EVENTS or ev.get("reason") == "fail_safe"


def every_nth(items: Sequence[Any], limit: int) -> tuple[list[Any], int]:
    """Every Nth item so that at most ``limit`` remain (first one kept); returns (kept, N)."""
    if len(items) <= limit:
        return list(items), 1
    step = math.ceil(len(items) / limit)
    return list(items[::step]), step


def _event_time(ev: dict[str, Any], origin_unix_s: float | None) -> float | None:
    """Return where an event goes on the chart's time axis.

    Where an event goes on the chart's time axis (UTC seconds after ``origin_unix_s``;
    without UTC, its own ``t_s``).
    """
    if origin_unix_s is not None and _finite(ev.get("wall_time")):
        return float(ev["wall_time"]) - origin_unix_s
    t = ev.get("t_s")
    return float(t) if _finite(t) else None


def _event_marks(ax: Any, power: PowerData, origin_unix_s: float | None) -> str:
    """Shade the series' budget crossings and mark governor events on the chart's time axis.

    Every crossing, start, restore and fail-safe is drawn; ordinary cap changes beyond
    :data:`_MAX_MARKS` are thinned to every Nth, and the returned note says so ('' if none).
    """
    cs = power.series
    budget = power.budget_w
    cross = cs.crossings(budget) if cs is not None else None
    origin = origin_unix_s if origin_unix_s is not None else (cs.start_unix_s if cs else None)
    for k, c in enumerate(cross.intervals if cross is not None else ()):
        x0 = c.start_s - (origin or 0.0)
        ax.axvspan(x0, x0 + max(c.duration_s, 0.01), color=_BUDGET, alpha=0.18, lw=0,
                   label=None if k else "over budget")
    events = [ev for node in power.nodes for ev in node.events]
    caps = [ev for ev in events if ev.get("event") == "caps" and not is_kept_event(ev)]
    shown, step = every_nth(caps, _MAX_MARKS)
    seen: set[str] = set()
    styles = {"caps": ("#555555", 0.6, ":", "governor caps"),
              "fail_safe": (_BUDGET, 1.2, "-", "fail-safe caps"),
              "start": ("#2ca02c", 1.2, "-", "governor start"),
              "restore": ("#222222", 1.2, "-", "limits restored")}
    for ev in [e for e in events if is_kept_event(e) and e.get("event") != "crossing"] + shown:
        kind = "fail_safe" if ev.get("reason") == "fail_safe" else str(ev.get("event"))
        if kind not in styles:
            continue
        t = _event_time(ev, origin_unix_s)
        if t is None:
            continue
        color, lw, ls, label = styles[kind]
        ax.axvline(t, color=color, lw=lw, ls=ls, label=None if kind in seen else label)
        seen.add(kind)
    if step > 1:
        return f"governor cap changes: every {ordinal(step)} of {len(caps)} shown"
    return ""


@_with_rc
def _draw_pdu(ax: Any, power: PowerData, t0: float, utc: bool) -> float:
    """The PDU's readings at the wall, each held over the second it averaged; its top W."""
    if power.pdu_series is None or not utc:
        return 0.0
    ts, ws = power.pdu_series
    x = [t - t0 for t in ts]
    ax.step(*thin(x, ws), where="pre", lw=1.4, color="#9467bd",
            label="at the wall (PDU, 1-s readings)")
    return max(ws, default=0.0)


def power_timeline(power: PowerData, key: str, title: str) -> Markup | None:
    """Draw cluster and per-node power over the governed window.

    Cluster and per-node power over the governed window, with the budget, target,
    crossings and governor events, on one UTC time base (:mod:`power.cluster_series`).

    Returns:
        The SVG, or None when no samples were recorded.
    """
    cs = power.series
    if cs is None or not cs.segments:
        return None
    origin = cs.start_unix_s if cs.utc else None
    labels = {n.name: n.label for n in power.nodes}
    t0 = cs.start_unix_s or 0.0
    fig = _figure(9.5, 3.2)
    ax = fig.subplots()
    top = 0.0
    for k, seg in enumerate(cs.segments):
        x = [t - t0 for t in seg.unix_s]
        if len(cs.nodes) > 1:
            for i, name in enumerate(cs.nodes):
                if name in seg.node_w:
                    ax.plot(*thin(x, seg.node_w[name]), lw=0.9, color=_COLORS[(i + 1) % 10],
                            label=None if k else mpl_text(labels.get(name, name)))
        top = max(top, max(seg.watts, default=0.0))
        ax.plot(*thin(x, seg.watts), lw=1.8, color="#222222", label=None if k else (
            "cluster" if len(cs.nodes) > 1 else
            f"cluster ({mpl_text(labels.get(cs.nodes[0], cs.nodes[0]))})"))
    top = max(top, _draw_pdu(ax, power, t0, cs.utc))
    budget, headroom = power.budget_w, power.headroom_w
    if budget is not None:
        ax.axhline(budget, color=_BUDGET, lw=1.5, ls="--", label=f"budget {budget:.0f} W")
        if headroom:
            ax.axhline(budget - headroom, color=_TARGET, lw=1, ls=":",
                       label=f"target {budget - headroom:.0f} W")
    note = _event_marks(ax, power, origin)
    if note:
        ax.text(0.01, 0.98, note, transform=ax.transAxes, ha="left", va="top", fontsize=7,
                color="#555555")
    top = max(top, budget or 0)
    ax.set_ylim(0, top * 1.12)
    if origin is not None:
        from power.clock import utc_iso

        ax.set_xlabel(f"seconds after the governor started, {utc_iso(origin)[:22]} UTC")
    else:
        ax.set_xlabel("time since each node's sampler started (s; no UTC stamps)")
    ax.set_ylabel("power (W)")
    ax.set_title(mpl_text(title, 90))
    ax.legend(loc="lower right", ncol=3)
    return svg_of(fig, key)


@_with_rc
def meter_chart(power: PowerData, key: str, title: str) -> Markup | None:
    """The meter's curve over ours on a shared wall-clock axis, and their difference.

    Returns:
        The SVG, or None without an imported meter log or wall-clock samples.
    """
    if power.meter_series is None:
        return None
    mt, mw = power.meter_series
    ot, ow = power.cluster_series_unix()
    if not mt or not ot:
        return None
    t0 = min(mt[0], ot[0])
    fig = _figure(9.5, 4.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    x, y = thin([t - t0 for t in ot], ow)
    top.plot(x, y, lw=1.2, color="#222222", label="ours (GPUs + node power)")
    mx, my = thin([t - t0 for t in mt], mw)
    top.plot(mx, my, lw=1.4, color=_COLORS[0], label="meter", drawstyle="steps-post")
    budget = power.budget_w
    if budget is not None:
        top.axhline(budget, color=_BUDGET, lw=1.5, ls="--", label=f"budget {budget:.0f} W")
    peak = max(max(mw), max(ow), budget or 0)
    top.set_ylim(0, peak * 1.12)
    top.set_ylabel("power (W)")
    top.set_title(mpl_text(title, 90))
    top.legend(loc="lower right", ncol=3)
    ours_at = [interp_at(t, ot, ow) for t in mt]
    diff = [m - o for m, o in zip(mw, ours_at, strict=True)]
    dx, dy = thin([t - t0 for t in mt], diff)
    bottom.plot(dx, dy, lw=1.0, color=_COLORS[3], drawstyle="steps-post")
    bottom.axhline(0, color="#555555", lw=0.8)
    bottom.set_ylabel("meter − ours (W)")
    from power.clock import utc_iso

    bottom.set_xlabel(f"seconds after {utc_iso(t0)[:19]} UTC")
    return svg_of(fig, key)


@_with_rc
def gpu_timelines(power: PowerData, key: str, max_nodes: int = 8) -> Markup | None:
    """Per node: every GPU's power (solid) and power cap (dashed), small multiples."""
    nodes = [n for n in power.nodes if n.gpu_t_s][:max_nodes]
    if not nodes:
        return None
    cols = min(2, len(nodes))
    rows = math.ceil(len(nodes) / cols)
    fig = _figure(9.5, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(nodes):]:
        ax.set_visible(False)
    for ax, node in zip(axes.flat, nodes, strict=False):
        for gpu in sorted(node.gpu_t_s):
            color = _COLORS[gpu % 10]
            ax.plot(*thin(node.gpu_t_s[gpu], node.gpu_power_w[gpu]), lw=0.9, color=color,
                    label=f"GPU {gpu}")
            if any(_finite(v) for v in node.gpu_limit_w.get(gpu, [])):
                ax.plot(*thin(node.gpu_t_s[gpu], node.gpu_limit_w[gpu]), lw=0.8, ls="--",
                        color=color, alpha=0.7)
        ax.set_title(f"{mpl_text(node.label)}: GPU power (solid) and cap (dashed)")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("W")
        ax.set_ylim(bottom=0)
        if len(node.gpu_t_s) <= 10:
            ax.legend(loc="lower right", ncol=4, fontsize=7)
    return svg_of(fig, key)


@_with_rc
def is_histogram(records: Sequence[dict[str, Any]], metric: str, key: str) -> Markup | None:
    """Histogram of a per-image score for SR and for the bicubic baseline, with the means."""
    sr = [float(r[metric]) for r in records if _finite(r.get(metric))]
    if not sr:
        return None
    bic = [float(r[f"{metric}_bicubic"]) for r in records if _finite(r.get(f"{metric}_bicubic"))]
    lo, hi = min(sr + bic), max(sr + bic)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = [lo + (hi - lo) * i / 24 for i in range(25)]
    fig = _figure(6.0, 2.8)
    ax = fig.subplots()
    label = "IS" if metric == "is" else metric.upper()
    ax.hist(sr, bins=bins, color=_COLORS[0], alpha=0.75, label=f"SR ({len(sr)} images)")
    if bic:
        ax.hist(bic, bins=bins, histtype="step", color=_COLORS[1], lw=1.5, label="bicubic")
        ax.axvline(sum(bic) / len(bic), color=_COLORS[1], ls="--", lw=1)
    ax.axvline(sum(sr) / len(sr), color=_COLORS[0], ls="--", lw=1.2, label="means")
    ax.set_xlabel(f"per-image {label}")
    ax.set_ylabel("images")
    ax.set_title(f"distribution of per-image {label}")
    ax.legend(loc="upper left")
    return svg_of(fig, key)


@_with_rc
def power_bars(rows: Sequence[tuple[str, float | None, float | None]], budget_w: float | None,
               headroom_w: float | None, key: str) -> Markup | None:
    """Average and peak cluster power per phase against the budget line.

    Args:
        rows: ``(phase, avg_w, peak_w)``.
        budget_w: The budget (red line).
        headroom_w: Headroom below it (target line).
        key: Unique chart key.
    """
    rows = [r for r in rows if _finite(r[1]) or _finite(r[2])]
    if not rows:
        return None
    fig = _figure(6.0, 0.5 + 0.55 * len(rows))
    ax = fig.subplots()
    ys = list(range(len(rows)))
    peaks = [r[2] if _finite(r[2]) else 0.0 for r in rows]
    avgs = [r[1] if _finite(r[1]) else 0.0 for r in rows]
    ax.barh(ys, peaks, height=0.6, color="#f5b7b1", label="peak")
    ax.barh(ys, avgs, height=0.35, color=_COLORS[0], label="average")
    for y, a, p in zip(ys, avgs, peaks, strict=True):
        ax.text(p, y, f" {p:.0f} W peak", va="center", fontsize=7)
        if a:
            ax.text(a / 2, y, f"{a:.0f} W", va="center", ha="center", fontsize=7, color="white")
    ax.set_yticks(ys, [mpl_text(r[0]) for r in rows])
    ax.invert_yaxis()
    right = max(peaks + [budget_w or 0])
    if budget_w is not None:
        ax.axvline(budget_w, color=_BUDGET, lw=1.6, ls="--", label=f"budget {budget_w:.0f} W")
        if headroom_w:
            ax.axvline(budget_w - headroom_w, color=_TARGET, lw=1, ls=":", label="target")
    ax.set_xlim(0, right * 1.25)
    ax.set_xlabel("cluster power (W)")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    return svg_of(fig, key)


@_with_rc
def sweep_chart(sweep: SweepData, key: str) -> Markup | None:
    """Throughput against measured GPU power for every setting, the Pareto front, the plan.

    The Pareto flag of each point comes from ``sweep.json``; when absent it is computed here.
    """
    pts = [p for p in sweep.points if _finite(p.get("avg_gpu_w"))]
    if not pts:
        return None
    fig = _figure(9.5, 3.4)
    ax_tp, ax_eff = fig.subplots(1, 2)
    xs = [p["avg_gpu_w"] for p in pts]
    ys = [p["images_per_s"] for p in pts]
    flags: Sequence[Any] = [p.get("pareto") for p in pts]
    if not all(isinstance(f, bool) for f in flags):
        from power.sweep import pareto_flags

        flags = pareto_flags(pts)
    front = sorted((i for i, f in enumerate(flags) if f), key=lambda i: xs[i])
    ax_tp.scatter(xs, ys, s=22, color="#999999", zorder=2, label="measured settings")
    if front:
        ax_tp.plot([xs[i] for i in front], [ys[i] for i in front], "-o", color=_COLORS[0],
                   ms=5, lw=1.5, zorder=3, label="Pareto front")
    for p, x, y in zip(pts, xs, ys, strict=True):
        ax_tp.annotate(f"{p['setting']:.0f}", (x, y), textcoords="offset points", xytext=(3, 4),
                       fontsize=6.5, color="#555555")
    unit = pts[0].get("unit", "W")
    plan = sweep.plan
    if plan:
        flat = [c for node in plan.get("caps_w") or [] if isinstance(node, list)
                for c in node if _finite(c)]
        # Mark the measured setting closest to each distinct cap of the plan.
        chosen = set()
        for cap in sorted(set(flat)):
            ref = [p["setting"] for p in pts] if unit == "W" else xs
            chosen.add(min(range(len(pts)), key=lambda i: (abs(ref[i] - cap), i)))
        if chosen:
            order = sorted(chosen)
            ax_tp.scatter([xs[i] for i in order], [ys[i] for i in order], marker="*", s=160,
                          color=_COLORS[2], edgecolor="black", lw=0.5, zorder=4,
                          label="chosen plan")
    ax_tp.set_xlabel("average GPU power (W)")
    ax_tp.set_ylabel("images/s")
    ax_tp.set_title(f"throughput vs power (settings in {mpl_text(unit)})")
    ax_tp.legend(loc="lower right")

    eff = [p.get("images_per_s_per_w") for p in pts]
    sx = [p["setting"] for p in pts]
    if any(_finite(e) for e in eff):
        ax_eff.plot([s for s, e in zip(sx, eff, strict=True) if _finite(e)],
                    [e for e in eff if _finite(e)],
                    "-o", color=_COLORS[1], ms=4, label="images/s/W")
        ax_eff.set_ylabel("images/s/W")
    jpi = [p.get("j_per_image") for p in pts]
    if any(_finite(j) for j in jpi):
        ax_j = ax_eff.twinx()
        ax_j.plot([s for s, j in zip(sx, jpi, strict=True) if _finite(j)],
                  [j for j in jpi if _finite(j)],
                  "-s", color=_COLORS[4], ms=3, lw=1, label="J/image")
        ax_j.set_ylabel("J/image", color=_COLORS[4])
        ax_j.grid(False)
        ax_j.spines["right"].set_visible(True)
    ax_eff.set_xlabel(f"setting ({mpl_text(unit)})")
    ax_eff.set_title("energy efficiency per setting")
    ax_eff.legend(loc="upper left")
    return svg_of(fig, key)
