"""Render run directories (and optionally a power sweep) into one self-contained HTML file.

The page has no script and fetches nothing: faces are inline PNG data URIs, charts are inline
SVG drawn by matplotlib, and a Content-Security-Policy forbids any load other than ``data:``
images. Every string taken from a file is HTML-escaped (:mod:`reports.markup`). Output depends
only on the input files, so rendering the same directories twice gives identical bytes.

Element ids (stable, for navigation and tests): ``comparison`` (two or more runs), ``sweep``
(with ``--sweep``) and, for the i-th run (from 1), ``run-i`` holding ``ri-summary``,
``ri-samples``, ``ri-training``, ``ri-power`` and ``ri-system``.

Example::

    from reports.render import write_report
    write_report(["runs/smoke-latest"], "report.html", sweep_dir=None)
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from fileio.atomic import write_text_atomic
from reports import images, plots
from reports.markup import Markup, el, fmt_num, join, render
from reports.rundata import PowerData, RunData, SweepData, load_run, load_sweep

log = logging.getLogger(__name__)

__all__ = ["render_report", "section_ids", "write_report"]

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

CSS = """
:root { --fg:#1b1f24; --muted:#5b6570; --line:#d5dbe1; --bg:#ffffff; --card:#f6f8fa;
        --accent:#1f5fa8; --good:#d8f3dc; --bad:#c0392b; --warn:#fff3cd; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1180px;
       padding: 0 24px 48px; }
h1 { font-size: 26px; margin: 24px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--fg); }
h3 { font-size: 16px; margin: 22px 0 8px; color: var(--accent); }
h4 { font-size: 14px; margin: 14px 0 6px; }
p { margin: 6px 0; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
nav { margin: 10px 0 20px; padding: 8px 12px; background: var(--card); border-radius: 6px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; white-space: nowrap; }
section { margin-bottom: 10px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px 3px 4px; text-align: left;
         vertical-align: top; }
th { font-weight: 600; background: var(--card); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: var(--good); font-weight: 700; }
.wide { overflow-x: auto; }
.kpis { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px;
        margin: 10px 0; }
.kpi { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
       padding: 8px 10px; }
.kpi .label { font-size: 12px; color: var(--muted); }
.kpi .value { font-size: 22px; font-weight: 700; font-variant-numeric: tabular-nums; }
.kpi .sub { font-size: 11px; color: var(--muted); }
.kpi.alert .value { color: var(--bad); }
.badge { display: inline-block; padding: 1px 7px; border-radius: 10px; font-size: 12px;
         background: var(--warn); border: 1px solid #e0c36a; margin-left: 6px; }
.note { background: var(--warn); border-left: 4px solid #e0c36a; padding: 6px 10px; margin: 8px 0; }
.absent { color: var(--muted); font-style: italic; }
.cols { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.cols > * { flex: 1 1 420px; min-width: 0; }
svg.chart { max-width: 100%; height: auto; display: block; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 10px; }
.case { border: 1px solid var(--line); border-radius: 6px; padding: 6px 8px; break-inside: avoid; }
.case .head { font-size: 12px; margin-bottom: 4px; }
.case .head b { text-transform: uppercase; }
.faces { display: flex; gap: 6px; }
figure.face { margin: 0; text-align: center; font-size: 11px; color: var(--muted); }
figure.face img, figure.face .missing { width: 120px; height: 140px; image-rendering: pixelated;
         display: block; border: 1px solid var(--line); }
figure.face .missing { display: flex; align-items: center; justify-content: center;
         background: var(--card); }
pre { background: var(--card); border: 1px solid var(--line); padding: 8px; font-size: 12px;
      overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
article.run { margin-top: 28px; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  nav { display: none; }
  h2 { break-after: avoid; }
  h3, h4 { break-after: avoid; }
  article.run { break-before: page; }
  .kpi, table, figure, svg.chart, .case, pre { break-inside: avoid; }
  .wide { overflow: visible; }
  table { font-size: 8.5pt; }
  pre { white-space: pre-wrap; font-size: 8pt; }
  .grid { grid-template-columns: 1fr 1fr; }
  figure.face img, figure.face .missing { width: 72px; height: 84px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

SECTIONS = ("summary", "samples", "training", "power", "system")


def section_ids(n_runs: int, sweep: bool) -> list[str]:
    """The ids of every section a report of ``n_runs`` runs (and maybe a sweep) contains."""
    ids = ["comparison"] if n_runs > 1 else []
    for i in range(1, n_runs + 1):
        ids += [f"run-{i}"] + [f"r{i}-{s}" for s in SECTIONS]
    return ids + (["sweep"] if sweep else [])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _absent(text: str) -> Markup:
    return el("p", text, cls="absent")


def _kv_table(rows: Sequence[tuple[str, Any]]) -> Markup:
    """A two-column table; values are escaped unless Markup."""
    body = join(el("tr", el("th", k), el("td", v)) for k, v in rows)
    return el("table", el("tbody", body), cls="kv")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], num_cols: set[int] | None = None,
           cls: str | None = None) -> Markup:
    """A table; ``num_cols`` are right-aligned; cells may be Markup (e.g. a ``<td>``)."""
    num_cols = num_cols or set()
    head = join(el("th", h, cls="num" if i in num_cols else None) for i, h in enumerate(headers))
    trs = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            if isinstance(c, Markup) and c.startswith("<td"):
                cells.append(c)
            else:
                cells.append(el("td", c, cls="num" if i in num_cols else None))
        trs.append(el("tr", join(cells)))
    return el("div", el("table", el("thead", el("tr", head)), el("tbody", join(trs)), cls=cls),
              cls="wide")


def _kpi(label: str, value: str, sub: str = "", alert: bool = False) -> Markup:
    return el("div", el("div", label, cls="label"), el("div", value, cls="value"),
              el("div", sub, cls="sub") if sub else "", cls="kpi alert" if alert else "kpi")


def _power_block(run: RunData, phase: str) -> dict[str, Any]:
    pd = run.train_power if phase == "train" else run.infer_power
    return (pd.summary or {}) if pd is not None else {}


def _power_enabled(block: dict[str, Any]) -> bool:
    return bool(block) and block.get("enabled", True) is not False


# --- summary ---------------------------------------------------------------------------------


GENERATOR = "facesr-harness report"
"""The page's ``<meta name="generator">``: how ``harness report`` knows a file it may replace."""


def _summary_section(run: RunData, i: int) -> Markup:
    s = run.summary or {}
    parts: list[Any] = [el("h3", "Summary")]
    if run.summary is None:
        parts.append(el("p", "summary.json is missing: the run did not finish (or is still "
                        "running); figures below come from the other files.", cls="note"))
    desc = (run.job or {}).get("description")
    if desc:
        parts.append(el("p", desc, cls="muted"))
    is_sr, is_bic = run.metric("is"), run.metric("is_bicubic")
    gain = run.infer_summary.get("is_normalized_gain")
    tp, ip = _power_block(run, "train"), _power_block(run, "infer")
    main_power = ip if _power_enabled(ip) else tp
    kpis = _kpis(run, s, tp, ip, main_power, is_sr, is_bic, gain)
    if kpis:
        parts.append(el("div", join(kpis), cls="kpis"))
    if any(b.get("simulated") for b in (tp, ip)):
        parts.append(el("p", "Power figures come from SIMULATED GPUs (power.backend: simulated); "
                        "throughput is this machine's real one.", cls="note"))

    parts += _quality_block(run, is_sr)
    parts += _power_table(run, i, s, tp, ip, main_power)
    facts = _run_facts(run, s)
    parts.append(el("h4", "Run"))
    parts.append(_kv_table(facts))
    if run.problems:
        parts.append(el("div", el("b", "Unreadable files: "),
                        join(run.problems, "; "), cls="note"))
    return el("section", join(parts), id=f"r{i}-summary")


def _kpis(run: RunData, s: dict[str, Any], tp: dict[str, Any], ip: dict[str, Any],
          main_power: dict[str, Any], is_sr: Any, is_bic: Any, gain: Any) -> list[Markup]:
    """The headline figures: IS (SR, bicubic, gain), images/s, images/s/W, J/image, peak W."""
    kpis: list[Markup] = []
    if is_sr:
        kpis.append(_kpi("IS mean (SR)", fmt_num(is_sr.get("mean"), 4),
                         f"median {fmt_num(is_sr.get('median'), 4)} · min "
                         f"{fmt_num(is_sr.get('min'), 4)}"))
        if is_bic:
            kpis.append(_kpi("IS mean (bicubic)", fmt_num(is_bic.get("mean"), 4),
                             f"median {fmt_num(is_bic.get('median'), 4)} · min "
                             f"{fmt_num(is_bic.get('min'), 4)}"))
        if _finite(gain):
            kpis.append(_kpi("normalised gain", fmt_num(gain, 4, signed=True),
                             "(IS − IS_bic) / (1 − IS_bic)", alert=gain < 0))
    if _finite(run.inference.get("images_per_s")):
        kpis.append(_kpi("inference images/s", fmt_num(run.inference["images_per_s"], 1),
                         f"{fmt_num(run.inference.get('images'))} images"))
    if _finite(s.get("images_per_s")):
        kpis.append(_kpi("training images/s", fmt_num(s["images_per_s"], 1),
                         f"{fmt_num(s.get('steps'))} steps"))
    if _power_enabled(main_power):
        phase = "inference" if main_power is ip else "training"
        kpis.append(_kpi(f"images/s/W ({phase})", fmt_num(main_power.get("images_per_s_per_w"), 4)))
        kpis.append(_kpi(f"J/image ({phase})", fmt_num(main_power.get("j_per_image"), 2)))
        peak = max((b.get("peak_cluster_w") for b in (tp, ip) if _finite(b.get("peak_cluster_w"))),
                   default=None)
        budget = main_power.get("budget_w")
        kpis.append(_kpi("peak cluster W", fmt_num(peak, 0), f"budget {fmt_num(budget, 0)} W",
                         alert=_finite(peak) and _finite(budget) and peak > budget))
        crossings = sum(int(b.get("crossings") or 0) for b in (tp, ip) if _power_enabled(b))
        kpis.append(_kpi("budget crossings", str(crossings), "training + inference",
                         alert=crossings > 0))
    return kpis


def _quality_block(run: RunData, is_sr: Any) -> list[Any]:
    """IS/PSNR/SSIM/NIQE/RMSE of the scored set against bicubic."""
    parts: list[Any] = []
    quality_rows = []
    stats = run.infer_summary.get("metrics")
    names = [k for k in (stats if isinstance(stats, dict) else {})
             if not k.endswith("_bicubic")]
    for name in names:
        info = run.metric_info(name)
        label, digits = info["label"], min(max(info["digits"], 0), 8)
        sr, bic = run.metric(name), run.metric(f"{name}_bicubic")
        if not sr:
            continue
        quality_rows.append([label] + [fmt_num(sr.get(k), digits)
                                       for k in ("mean", "median", "min", "max")]
                            + [fmt_num(bic.get(k), digits) for k in ("mean", "median", "min")])
    parts.append(el("h4", "Quality on the scored set"))
    if quality_rows:
        count = run.infer_summary.get("count")
        parts.append(_table(["metric", "SR mean", "SR median", "SR min", "SR max", "bicubic mean",
                             "bicubic median", "bicubic min"], quality_rows,
                            num_cols=set(range(1, 8))))
        meta = run.infer_meta
        parts.append(el("p", f"{fmt_num(count)} images scored with recognizer "
                        f"{meta.get('recognizer', '—')}; gain = (IS − IS_bicubic) / "
                        "(1 − IS_bicubic).", cls="small muted"))
        if not is_sr:
            parts.append(_absent("IS was not scored (eval.metrics without 'is')."))
    else:
        parts.append(_absent("No inference scores (infer/scores.json missing): run "
                             "`harness infer --out RUN/infer …` to add them."))

    return parts


def _power_table(run: RunData, i: int, s: dict[str, Any], tp: dict[str, Any],
                 ip: dict[str, Any], main_power: dict[str, Any]) -> list[Any]:
    """Throughput and power of training and inference side by side, with the W bars."""
    parts: list[Any] = []
    parts.append(el("h4", "Throughput and power"))
    rows = [
        ("images/s", fmt_num(s.get("images_per_s"), 2),
         fmt_num(run.inference.get("images_per_s"), 2)),
        ("images in the power window", fmt_num(tp.get("images")), fmt_num(ip.get("images"))),
        ("images/s (power window)", fmt_num(tp.get("images_per_s"), 2),
         fmt_num(ip.get("images_per_s"), 2)),
        ("images/s/W", fmt_num(tp.get("images_per_s_per_w"), 4),
         fmt_num(ip.get("images_per_s_per_w"), 4)),
        ("J/image", fmt_num(tp.get("j_per_image"), 2), fmt_num(ip.get("j_per_image"), 2)),
        ("energy (J)", fmt_num(tp.get("energy_j"), 0), fmt_num(ip.get("energy_j"), 0)),
        ("average cluster W", fmt_num(tp.get("avg_cluster_w"), 0),
         fmt_num(ip.get("avg_cluster_w"), 0)),
        ("peak cluster W", fmt_num(tp.get("peak_cluster_w"), 0),
         fmt_num(ip.get("peak_cluster_w"), 0)),
        ("budget W (headroom)", _budget_text(tp), _budget_text(ip)),
        ("budget crossings (time over, s)", _cross_text(tp), _cross_text(ip)),
        ("fail-safe steps", fmt_num(tp.get("fail_safe_steps")), fmt_num(ip.get("fail_safe_steps"))),
        ("power backend", _backend_text(tp), _backend_text(ip)),
    ]
    parts.append(_table(["", "training", "inference"], [list(r) for r in rows], num_cols={1, 2}))
    bars = plots.power_bars(
        [(ph, b.get("avg_cluster_w"), b.get("peak_cluster_w"))
         for ph, b in (("training", tp), ("inference", ip)) if _power_enabled(b)],
        main_power.get("budget_w") if _finite(main_power.get("budget_w")) else None,
        main_power.get("headroom_w") if _finite(main_power.get("headroom_w")) else None,
        key=f"r{i}-bars")
    if bars is not None:
        parts.append(el("div", bars, style="max-width:720px"))
    elif not _power_enabled(tp) and not _power_enabled(ip):
        parts.append(_absent("Power was not measured (power.enabled: false)."))

    return parts


def _run_facts(run: RunData, s: dict[str, Any]) -> list[tuple[str, str]]:
    """Key facts of the run (job, folder, steps, ranks, device, validation, checkpoint)."""
    return [("job", run.job_name), ("run directory", str(run.path)),
             ("steps", fmt_num(s.get("steps"))),
             ("ranks (world size)", fmt_num(s.get("world_size"))),
             ("backend / device", f"{s.get('backend', '—')} / {s.get('device', '—')}"),
             ("training time (s)", fmt_num(s.get("train_time_s"), 1)),
             ("best validation IS (step)",
              f"{fmt_num(s.get('best_val_is'), 4)} ({fmt_num(s.get('best_step'))})"
              if _finite(s.get("best_val_is")) else "—"),
             ("final validation IS / PSNR",
              f"{fmt_num(s.get('final_val_is'), 4)} / {fmt_num(s.get('final_val_psnr'), 3)}"),
             ("stopped early", fmt_num(s.get("stopped_early"))),
             ("replicas in sync", fmt_num(s.get("replicas_in_sync"))),
             ("checkpoint", s.get("checkpoint") or "—")]


def _budget_text(b: dict[str, Any]) -> str:
    if not _power_enabled(b):
        return "—"
    return f"{fmt_num(b.get('budget_w'), 0)} ({fmt_num(b.get('headroom_w'), 0)})"


def _cross_text(b: dict[str, Any]) -> str:
    if not _power_enabled(b):
        return "—"
    return f"{fmt_num(b.get('crossings'))} ({fmt_num(b.get('crossing_time_s'), 3)})"


def _backend_text(b: dict[str, Any]) -> str:
    if not b:
        return "—"
    if b.get("enabled") is False:
        return "off"
    sim = " (simulated)" if b.get("simulated") and b.get("backend") != "simulated" else ""
    return f"{b.get('backend', '?')}{sim}, {fmt_num(b.get('gpus_per_node'))} GPU(s)/node"


# --- samples ---------------------------------------------------------------------------------


def _first_dir(*candidates: Any) -> Path | None:
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def _face(label: str, path: Path | None = None, image: Image.Image | None = None) -> Markup:
    uri = None
    try:
        if image is not None:
            uri = images.png_data_uri(image)
        elif path is not None:
            uri = images.png_data_uri(path)
    except OSError as exc:
        log.warning("report: cannot embed %s: %s", path, exc)
    pic = (el("img", src=uri, alt=label, width="120", height="140") if uri
           else el("div", "missing", cls="missing"))
    return el("figure", pic, el("figcaption", label), cls="face")


def _samples_section(run: RunData, i: int) -> Markup:
    parts: list[Any] = [el("h3", "Sample faces")]
    records = run.per_image
    if run.infer_dir is None:
        parts.append(_absent("No inference output in this run (infer/ missing)."))
        return el("section", join(parts), id=f"r{i}-samples")
    if not records:
        parts.append(_absent("No per-image scores (infer/scores.json missing or empty)."))
        return el("section", join(parts), id=f"r{i}-samples")
    key = "is" if any(_finite(r.get("is")) for r in records) else (
        "psnr" if any(_finite(r.get("psnr")) for r in records) else None)
    if key is None:
        parts.append(_absent("Per-image records carry neither IS nor PSNR."))
        return el("section", join(parts), id=f"r{i}-samples")
    label = "IS" if key == "is" else "PSNR"
    if key != "is":
        parts.append(el("p", "IS was not scored: faces are ranked by PSNR.", cls="note"))
    meta = run.infer_meta
    sr_dir = _first_dir(run.infer_dir, meta.get("sr_dir"))
    lr_dir = _first_dir(run.infer_dir / "inputs" / "LR", meta.get("lr_dir"))
    hr_dir = _first_dir(run.infer_dir / "inputs" / "HR", meta.get("hr_dir"))
    picks = images.pick_samples(records, key, run.sample_count)
    parts.append(el("p", f"The {run.sample_count} best, median and worst faces of "
                    f"{len(records)} by per-image {label}: LR input | bicubic (PIL, from LR) | "
                    "SR | HR. Shown enlarged with square pixels.", cls="small muted"))
    cases = []
    for n, smp in enumerate(picks):
        rec = smp.record
        name = str(rec.get("name", ""))
        lr = images.find_image(lr_dir, name)
        hr = images.find_image(hr_dir, name)
        sr = images.find_image(sr_dir, name)
        bic = None
        if lr is not None:
            try:
                size = None
                if hr is not None:
                    with Image.open(hr) as him:
                        size = him.size
                bic = images.bicubic_upscale(lr, size)
            except (OSError, Image.DecompressionBombError) as exc:
                log.warning("report: bicubic of %s failed: %s", lr, exc)
        head = el("div", el("b", smp.group), f" · {name} · {label} SR "
                  f"{fmt_num(rec.get(key), 4 if key == 'is' else 2)} · bicubic "
                  f"{fmt_num(rec.get(key + '_bicubic'), 4 if key == 'is' else 2)}", cls="head")
        faces = el("div", _face("LR", lr), _face("bicubic", image=bic) if bic is not None
                   else _face("bicubic"), _face("SR", sr), _face("HR", hr), cls="faces")
        cases.append(el("div", head, faces, cls=f"case {smp.group}", id=f"r{i}-case-{n}"))
    hist = plots.is_histogram(records, key, key=f"r{i}-hist")
    parts.append(el("div", join(cases), cls="grid"))
    if hist is not None:
        parts.append(el("h4", f"Per-image {label}"))
        parts.append(el("div", hist, style="max-width:640px"))
    return el("section", join(parts), id=f"r{i}-samples")


# --- training --------------------------------------------------------------------------------


def _training_section(run: RunData, i: int) -> Markup:
    parts: list[Any] = [el("h3", "Training")]
    chart = plots.training_curves(run.metrics, key=f"r{i}-train")
    if chart is None:
        parts.append(_absent("No training records (metrics.jsonl missing or empty)."))
        return el("section", join(parts), id=f"r{i}-training")
    parts.append(chart)
    val = [m for m in run.metrics if m.get("kind") == "val"]
    if val:
        shown = val[-20:]
        rows = [[fmt_num(m.get("step")), fmt_num(m.get("val_n")), fmt_num(m.get("val_is"), 4),
                 fmt_num(m.get("val_psnr"), 3), fmt_num(m.get("best_is"), 4)] for m in shown]
        parts.append(el("h4", "Validation" + (f" (last {len(shown)} of {len(val)})"
                                              if len(val) > len(shown) else "")))
        parts.append(_table(["step", "images", "IS", "PSNR (dB)", "best IS so far"], rows,
                            num_cols={0, 1, 2, 3, 4}))
    else:
        parts.append(_absent("No validation records."))
    return el("section", join(parts), id=f"r{i}-training")


# --- power -----------------------------------------------------------------------------------


_EVENT_LIMIT = 40


def _events_table(pd: PowerData) -> Markup:
    rows = []
    for node in pd.nodes:
        for ev in node.events:
            kind = str(ev.get("event", ""))
            t = ev.get("t_s", ev.get("start_s"))
            detail = ""
            if kind == "caps":
                lim = [v for v in ev.get("limits_w") or [] if _finite(v)]
                detail = "; ".join(str(m) for m in ev.get("messages") or [])
                if lim:
                    detail = (detail + "; " if detail else "") + \
                        f"caps {min(lim):.0f}–{max(lim):.0f} W over {len(lim)} GPU(s)"
            elif kind == "crossing":
                detail = (f"{fmt_num(ev.get('duration_s'), 3)} s over budget, peak "
                          f"{fmt_num(ev.get('peak_w'), 0)} W")
            elif kind == "start":
                detail = (f"budget {fmt_num(ev.get('budget_w'), 0)} W, headroom "
                          f"{fmt_num(ev.get('headroom_w'), 0)} W, mode {ev.get('mode', '—')}, "
                          f"{fmt_num(ev.get('gpus'))} GPU(s)")
            elif kind == "restore":
                errs = ev.get("errors") or []
                detail = "limits restored" + (f"; errors: {'; '.join(map(str, errs))}"
                                              if errs else "")
            else:
                detail = ", ".join(f"{k}={v}" for k, v in ev.items()
                                   if k not in ("event", "wall_time", "utc", "mono_s", "rank", "t_s"))
            rows.append([node.label, kind, fmt_num(t, 3), str(ev.get("reason", "") or ""),
                         fmt_num(ev.get("cluster_w") if "cluster_w" in ev else None, 0), detail])
    if not rows:
        return _absent("No governor events recorded.")
    total = len(rows)
    out = [_table(["node", "event", "t (s)", "reason", "cluster W", "detail"],
                  rows[:_EVENT_LIMIT], num_cols={2, 4})]
    if total > _EVENT_LIMIT:
        out.append(el("p", f"… {total - _EVENT_LIMIT} more events in "
                      "power/node*/governor_events.jsonl.", cls="small muted"))
    return join(out)


def _phase_power(pd: PowerData | None, phase: str, key: str) -> Markup:
    parts: list[Any] = [el("h4", f"{phase.capitalize()}")]
    if pd is None or (pd.summary or {}).get("enabled") is False:
        parts.append(_absent(f"Power was not measured during {phase} "
                             "(power.enabled: false, or no power/ folder)."))
        return join(parts)
    sim = (pd.summary or {}).get("simulated")
    if sim:
        parts.append(el("p", "Simulated GPUs: these watts come from the power model, not from "
                        "hardware.", cls="note"))
    if any(n.other_estimated for n in pd.nodes):
        parts.append(el("p", "Non-GPU node power (CPU, DRAM, fans) is estimated (no RAPL or "
                        "meter readable).", cls="small muted"))
    if not pd.nodes:
        parts.append(_absent(f"No power samples ({pd.path.name}/node*/ missing)."))
        return join(parts)
    parts.append(_sensor_note(pd))
    chart = plots.power_timeline(pd, key=f"{key}-cluster",
                                 title=f"{phase}: cluster power ({len(pd.nodes)} node(s))")
    parts.append(chart if chart is not None else _absent("No power samples recorded."))
    parts.append(_meter_block(pd, phase, key))
    gpus = plots.gpu_timelines(pd, key=f"{key}-gpus")
    if gpus is not None:
        parts.append(gpus)
    parts.append(el("h4", f"Governor events ({phase})"))
    parts.append(_events_table(pd))
    return join(parts)


_SENSOR_TEXT = {"instant": "instantaneous", "average": "averaged", "unknown": "of unknown kind"}


def _sensor_note(pd: PowerData) -> Markup:
    """Which power reading the GPUs gave (instant, 1-s average...), from power_sensors.json."""
    kinds = pd.sensor_kinds
    if not kinds:
        return el("p", "Power sensor: not recorded (run made before power_sensors.json).",
                  cls="small muted", id=None)
    sources = sorted({f"{s.get('kind')}: {s.get('source')}"
                      + (f" ({s.get('window_s'):g} s window)" if s.get("kind") == "average"
                         and _finite(s.get("window_s")) else "")
                      for n in pd.nodes for s in n.sensors})
    text = ("Power sensor: " + ", ".join(f"{n} GPU(s) {_SENSOR_TEXT.get(k, k)}"
                                         for k, n in sorted(kinds.items()))
            + " — " + "; ".join(sources) + ".")
    if any(k != "instant" for k in kinds):
        return el("p", text + " Averaged readings lag and understate peaks; energy figures "
                  "come from the GPUs' energy counters and the governor takes power from them.",
                  cls="note")
    return el("p", text, cls="small muted")


def _meter_block(pd: PowerData, phase: str, key: str) -> Markup:
    m = pd.meter
    if not m:
        return join([])
    parts: list[Any] = [el("h4", f"The meter's view ({phase}: {m.get('source', 'meter log')})")]
    chart = plots.meter_chart(pd, key=f"{key}-meter",
                              title=f"{phase}: meter vs our cluster power")
    if chart is not None:
        parts.append(chart)
    mc = m.get("meter_crossings") or {}
    oc = m.get("ours_crossings") or {}
    rows = [
        ("samples lined up", fmt_num(m.get("samples")), f"{m.get('start_utc', '—')} .. "
         f"{m.get('end_utc', '—')}"),
        ("average W (meter / ours)", f"{fmt_num(m.get('meter_avg_w'), 0)} / "
         f"{fmt_num(m.get('ours_avg_w'), 0)}", ""),
        ("peak W (meter / ours)", f"{fmt_num(m.get('meter_peak_w'), 0)} / "
         f"{fmt_num(m.get('ours_peak_w'), 0)}", ""),
        ("energy kJ (meter / ours)", f"{fmt_num((m.get('meter_energy_j') or 0) / 1000, 1)} / "
         f"{fmt_num((m.get('ours_energy_j') or 0) / 1000, 1)}", ""),
        ("meter − ours, W", f"mean {fmt_num(m.get('diff_mean_w'), 1)}, mean |·| "
         f"{fmt_num(m.get('diff_mean_abs_w'), 1)}, RMS {fmt_num(m.get('diff_rms_w'), 1)}, "
         f"largest {fmt_num(m.get('diff_max_abs_w'), 1)}", ""),
        ("budget crossings as the meter saw them",
         f"{fmt_num(mc.get('count'))} (longest {fmt_num(mc.get('longest_s'), 2)} s, total "
         f"{fmt_num(mc.get('total_s'), 2)} s over)" if mc else "no budget known",
         f"ours at the same instants: {fmt_num(oc.get('count'))} (longest "
         f"{fmt_num(oc.get('longest_s'), 2)} s)" if oc else ""),
    ]
    if _finite(m.get("offset_s")) and m.get("offset_s"):
        rows.append(("meter clock shifted by", f"{fmt_num(m.get('offset_s'), 1)} s", ""))
    parts.append(_table(["", "value", "note"], rows))
    return join(parts)


def _power_section(run: RunData, i: int) -> Markup:
    parts: list[Any] = [el("h3", "Power"),
                        el("p", "Per node: GPUs plus non-GPU power; cluster: sum of nodes. "
                           "Dashed red: budget; dotted: governor target (budget − headroom); "
                           "shaded: over budget; vertical dotted lines: cap changes.",
                           cls="small muted")]
    parts.append(_phase_power(run.train_power, "training", f"r{i}-ptrain"))
    parts.append(_phase_power(run.infer_power if run.infer_dir is not None else None,
                              "inference", f"r{i}-pinfer"))
    return el("section", join(parts), id=f"r{i}-power")


# --- system ----------------------------------------------------------------------------------


def _system_section(run: RunData, i: int) -> Markup:
    parts: list[Any] = [el("h3", "System and reproducibility")]
    m = run.manifest
    if m is None:
        parts.append(_absent("manifest.json is missing."))
    else:
        facts = [("created", m.get("created", "—")), ("git commit", m.get("git_commit", "—")),
                 ("python", m.get("python", "—")), ("platform", m.get("platform", "—")),
                 ("CPU", m.get("cpu", "—")), ("CPU cores", fmt_num(m.get("cpu_count"))),
                 ("memory (GB)", fmt_num(m.get("memory_gb"), 1)),
                 ("world size", fmt_num(m.get("world_size"))),
                 ("launcher", m.get("launcher", "—")),
                 ("backend", m.get("backend", "—")),
                 ("nodes", ", ".join(map(str, m.get("nodes") or [])) or "—"),
                 ("train / val pairs",
                  f"{fmt_num(m.get('train_pairs'))} / {fmt_num(m.get('val_pairs'))}")]
        parts.append(_kv_table(facts))
        ranks = [r for r in m.get("ranks") or [] if isinstance(r, dict)]
        if ranks:
            parts.append(el("h4", "Ranks"))
            parts.append(_table(["rank", "local rank", "host", "pid", "device", "threads", "GPU"],
                                [[fmt_num(r.get("rank")), fmt_num(r.get("local_rank")),
                                  r.get("host", "—"), fmt_num(r.get("pid")),
                                  r.get("device", "—"), fmt_num(r.get("threads")),
                                  r.get("gpu", "—")] for r in ranks], num_cols={0, 1, 3, 5}))
        pkgs = m.get("packages") or {}
        if isinstance(pkgs, dict) and pkgs:
            parts.append(el("h4", "Package versions"))
            parts.append(_table(["package", "version"], [[k, v] for k, v in pkgs.items()]))
        cmd = m.get("command")
        if cmd:
            parts.append(el("h4", "Command"))
            parts.append(el("pre", " ".join(map(str, cmd)) if isinstance(cmd, list) else cmd))
    meta = run.infer_meta
    if meta:
        parts.append(el("h4", "Scoring"))
        parts.append(_kv_table([
            ("recognizer", meta.get("recognizer", "—")),
            ("metrics", ", ".join(map(str, meta.get("metrics") or [])) or "—"),
            ("weights", run.inference.get("weights", "—")),
            ("scored at", meta.get("created_utc", "—")),
            ("border shave (px)", fmt_num(meta.get("shave")))]))
    checks = (run.summary or {}).get("param_checksums")
    if isinstance(checks, list) and checks:
        parts.append(el("h4", "Parameter checksums per rank"))
        parts.append(el("pre", "\n".join(f"rank {r}: {c}" for r, c in enumerate(checks))))
    parts.append(el("h4", "Resolved job spec (job.yaml)"))
    parts.append(el("pre", run.job_text) if run.job_text else _absent("job.yaml is missing."))
    return el("section", join(parts), id=f"r{i}-system")


# --- comparison ------------------------------------------------------------------------------

#: (header, getter, better: "max" | "min" | None, digits)
_COLUMNS: list[tuple[str, Callable[[RunData], Any], str | None, int]] = [
    ("IS mean", lambda r: r.metric("is").get("mean"), "max", 4),
    ("IS median", lambda r: r.metric("is").get("median"), "max", 4),
    ("IS min", lambda r: r.metric("is").get("min"), "max", 4),
    ("bicubic IS", lambda r: r.metric("is_bicubic").get("mean"), None, 4),
    ("gain", lambda r: r.infer_summary.get("is_normalized_gain"), "max", 4),
    ("PSNR", lambda r: r.metric("psnr").get("mean"), "max", 2),
    ("SSIM", lambda r: r.metric("ssim").get("mean"), "max", 4),
    ("train img/s", lambda r: (r.summary or {}).get("images_per_s"), "max", 1),
    ("infer img/s", lambda r: r.inference.get("images_per_s"), "max", 1),
    ("train img/s/W", lambda r: _power_block(r, "train").get("images_per_s_per_w"), "max", 4),
    ("infer img/s/W", lambda r: _power_block(r, "infer").get("images_per_s_per_w"), "max", 4),
    ("train J/img", lambda r: _power_block(r, "train").get("j_per_image"), "min", 2),
    ("infer J/img", lambda r: _power_block(r, "infer").get("j_per_image"), "min", 2),
    ("avg W", lambda r: _power_block(r, "train").get("avg_cluster_w"), None, 0),
    ("peak W", lambda r: max((b.get("peak_cluster_w") for b in (_power_block(r, "train"),
                              _power_block(r, "infer")) if _finite(b.get("peak_cluster_w"))),
                             default=None), "min", 0),
    ("crossings", lambda r: (sum(int(b.get("crossings") or 0) for b in
                                 (_power_block(r, "train"), _power_block(r, "infer"))
                                 if _power_enabled(b))
                             if any(_power_enabled(_power_block(r, p)) for p in ("train", "infer"))
                             else None), "min", 0),
]


def _comparison_section(runs: Sequence[RunData]) -> Markup:
    values = [[getter(r) for _, getter, _, _ in _COLUMNS] for r in runs]
    best: list[float | None] = []
    for c, (_, _, better, _) in enumerate(_COLUMNS):
        col = [row[c] for row in values if _finite(row[c])]
        best.append(None if better is None or len(col) < 2 or len(set(col)) < 2
                    else (max(col) if better == "max" else min(col)))
    rows = []
    for i, (run, row) in enumerate(zip(runs, values), start=1):
        s = run.summary or {}
        cells: list[Any] = [el("td", el("a", run.name, href=f"#run-{i}")), run.job_name,
                            fmt_num(s.get("steps")), fmt_num(s.get("world_size"))]
        for c, (_, _, better, digits) in enumerate(_COLUMNS):
            v = row[c]
            text = fmt_num(v, digits, signed=_COLUMNS[c][0] == "gain")
            if best[c] is not None and _finite(v) and v == best[c]:
                cells.append(el("td", el("strong", text), cls="num best", title="best"))
            else:
                cells.append(text)
        rows.append(cells)
    headers = ["run", "job", "steps", "ranks"] + [h for h, _, _, _ in _COLUMNS]
    table = _table(headers, rows, num_cols=set(range(2, len(headers))), cls="comparison")
    return el("section", el("h2", "Comparison of runs"),
              el("p", "One row per run; the best value of each column is highlighted (higher is "
                 "better except J/image, peak W and crossings). Power columns marked train/infer "
                 "come from that phase's power session.", cls="small muted"),
              table, id="comparison")


# --- sweep -----------------------------------------------------------------------------------


def _sweep_section(sweep: SweepData) -> Markup:
    d = sweep.data
    parts: list[Any] = [el("h2", "Power sweep")]
    head = (f"job {d.get('job', '—')} · workload {d.get('workload', '—')} · mode "
            f"{d.get('mode', '—')} · GPU {d.get('gpu', '—')} · from {sweep.path}")
    parts.append(el("p", head, el("span", "simulated", cls="badge") if d.get("simulated")
                    else "", cls="muted"))
    chart = plots.sweep_chart(sweep, key="sweep")
    parts.append(chart if chart is not None else _absent("The sweep has no measured points."))
    pts = sweep.points
    if pts:
        rows = [[fmt_num(p.get("setting"), 0), str(p.get("unit", "")),
                 fmt_num(p.get("images_per_s"), 2), fmt_num(p.get("avg_gpu_w"), 1),
                 fmt_num(p.get("peak_gpu_w"), 1), fmt_num(p.get("avg_node_w"), 1),
                 fmt_num(p.get("j_per_image"), 3), fmt_num(p.get("images_per_s_per_w"), 4),
                 fmt_num(p.get("is"), 4), "yes" if p.get("pareto") else ""] for p in pts]
        parts.append(_table(["setting", "unit", "images/s", "avg GPU W", "peak GPU W",
                             "avg node W", "J/image", "images/s/W", "IS", "Pareto"], rows,
                            num_cols={0, 2, 3, 4, 5, 6, 7, 8}))
    plan = sweep.plan
    parts.append(el("h3", "Chosen plan"))
    if plan is None:
        parts.append(_absent("The sweep made no plan."))
    else:
        parts.append(_kv_table([
            ("budget W (headroom)", (f"{fmt_num(plan.get('budget_w'), 0)} "
                                    f"({fmt_num(plan.get('headroom_w'), 0)})")),
            ("nodes × GPUs per node", (f"{fmt_num(plan.get('nodes'))} × "
                                      f"{fmt_num(plan.get('gpus_per_node'))}")),
            ("predicted cluster W", fmt_num(plan.get("predicted_cluster_w"), 0)),
            ("predicted images/s", fmt_num(plan.get("predicted_images_per_s"), 1)),
            ("margin below budget (W)", fmt_num(plan.get("margin_w"), 0))]))
        caps = [c for c in plan.get("caps_w") or [] if isinstance(c, list)]
        if caps:
            parts.append(_table(["node", "per-GPU caps (W)"],
                                [[f"node{n:03d}", ", ".join(fmt_num(v, 0) for v in c)]
                                 for n, c in enumerate(caps)]))
        if plan.get("explanation"):
            parts.append(el("p", plan["explanation"]))
    return el("section", join(parts), id="sweep")


# --- page ------------------------------------------------------------------------------------


def _run_article(run: RunData, i: int) -> Markup:
    return el("article", el("h2", f"Run {i}: {run.name}"),
              _summary_section(run, i), _samples_section(run, i), _training_section(run, i),
              _power_section(run, i), _system_section(run, i), cls="run", id=f"run-{i}")


def render_report(runs: Sequence[RunData], sweep: SweepData | None = None,
                  title: str | None = None) -> str:
    """The whole report as one HTML document.

    Args:
        runs: Loaded run directories (at least one).
        sweep: A loaded power sweep, or None.
        title: Page title (default: built from the job names).

    Returns:
        The HTML text (deterministic for the same inputs).
    """
    if not runs:
        raise ValueError("render_report: need at least one run")
    jobs = list(dict.fromkeys(r.job_name for r in runs))
    title = title or f"FaceSR report: {', '.join(jobs)}"
    nav = [el("a", "comparison", href="#comparison")] if len(runs) > 1 else []
    for i, r in enumerate(runs, start=1):
        nav.append(el("a", f"run {i}: {r.name}", href=f"#run-{i}"))
        if len(runs) == 1:
            nav += [el("a", s, href=f"#r{i}-{s}") for s in SECTIONS]
    if sweep is not None:
        nav.append(el("a", "power sweep", href="#sweep"))
    body = [el("header", el("h1", title),
               el("p", f"{len(runs)} run(s): " + ", ".join(str(r.path) for r in runs)
                  + (f" · sweep: {sweep.path}" if sweep is not None else ""), cls="muted"),
               el("nav", join(nav, " ")), id="top")]
    if len(runs) > 1:
        body.append(_comparison_section(runs))
    body += [_run_article(r, i) for i, r in enumerate(runs, start=1)]
    if sweep is not None:
        body.append(_sweep_section(sweep))
    body.append(el("footer", "Rendered by `harness report` from the run directories' JSON, CSV "
                   "and PNG files only; self-contained (no scripts, no network)."))
    page = render(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"{GENERATOR}\">\n"
        "<title>{title}</title>\n<style>{css}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        csp=CSP, title=title, css=Markup(CSS), body=join(body, "\n"))
    return str(page)


def write_report(run_dirs: Sequence[str | Path], out: str | Path,
                 sweep_dir: str | Path | None = None) -> Path:
    """Load run directories (and a sweep), render, and write the HTML file.

    Args:
        run_dirs: Run directories, in table order.
        out: Output HTML path (parent folders are created).
        sweep_dir: A power-sweep directory (or its sweep.json), or None.

    Returns:
        The written path.

    Raises:
        UserError: A run directory or the sweep cannot be used.
    """
    runs = [load_run(d) for d in run_dirs]
    sweep = load_sweep(sweep_dir) if sweep_dir is not None else None
    html_text = render_report(runs, sweep)
    return write_text_atomic(out, html_text)
