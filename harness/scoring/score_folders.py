"""Scoring super-resolved faces: identity similarity (IS) and image-quality metrics.

The contest score is the mean IS: the cosine similarity of a face recognizer's embeddings of
each SR image and its HR original. Alongside it this module measures PSNR/SSIM (RGB and the
BT.601 Y channel), RMSE and NIQE (see :mod:`harness.scoring.metrics`) and, when the LR inputs are
given, the same metrics for the PIL bicubic upscale of LR: the baseline any model must beat.

Library use (the ``harness evaluate`` command wraps :func:`evaluate_dirs`)::

    from harness.data.imageio import pair_by_name
    from harness.scoring.recognizers import load_recognizer
    pairs = pair_by_name("data/asc19-val/val_HR", "out/sr", lr_dir="data/asc19-val/val_LR")
    records = score_pairs(pairs, recognizer=load_recognizer("facenet"), metrics={"is", "psnr"})
    summary = summarize(records)
    write_scores("out/eval", records, summary, meta={"model": "edsr"})

Sharding: :func:`score_pairs` treats every pair independently, so rank ``r`` of ``w`` scores
``harness.cluster.distributed.shard(pairs, r, w)`` and ``unshard`` of the gathered parts equals the
records of one process.

SR images whose size differs from their HR are resized to the HR size with OpenCV's
``INTER_CUBIC`` (what the official ASC19 scorer does), and one warning says how many.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fileio.atomic import write_text_atomic
from fileio.user_error import UserError
from harness.cluster import watchdog
from harness.cluster.distributed import Comm, get_comm
from harness.data.imageio import Pair, pair_by_name, pil_bicubic_upscale, read_rgb
from harness.lists import shard, unshard
from harness.scoring import ALL_METRICS, METRICS
from harness.scoring import metrics as _m
from harness.scoring.identity import Separation, identity_similarity_arrays, judge_scores
from harness.scoring.panel import is_key, labels_of, load_panel, panel_summary

if TYPE_CHECKING:
    from rich.table import Table

    from harness.scoring.recognizers import Recognizer

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "evaluate_dirs",
    "render_table",
    "score_pairs",
    "summarize",
    "validate_metrics",
    "write_scores",
]

log = logging.getLogger(__name__)

#: What ``harness evaluate`` measures unless told otherwise.
DEFAULT_METRICS: frozenset[str] = frozenset(ALL_METRICS)
#: Suffix of the bicubic-baseline metrics (``psnr_bicubic``, ...).
BICUBIC_SUFFIX = "_bicubic"

def validate_metrics(metrics: Iterable[str]) -> list[str]:
    """Checks metric names and returns them in canonical order.

    Args:
        metrics: Names from :data:`ALL_METRICS`, or one comma-separated string (``"pi"`` is
            recognised only to explain why it is unavailable).

    Returns:
        The requested names ordered as in :data:`ALL_METRICS`.

    Raises:
        UserError: An unknown name, an empty set, or ``"pi"``.
    """
    if isinstance(metrics, str):  # "is,psnr" from a command line
        metrics = metrics.split(",")
    wanted = {str(m).strip().lower() for m in metrics if str(m).strip()}
    if "pi" in wanted:
        _m.perceptual_index(np.zeros((1, 1, 3), np.uint8))  # raises the explanatory UserError
    unknown = sorted(wanted - set(ALL_METRICS))
    if unknown:
        raise UserError(
            f"unknown metric(s) {', '.join(unknown)}: choose from {', '.join(ALL_METRICS)}"
        )
    if not wanted:
        raise UserError(f"no metrics selected: choose from {', '.join(ALL_METRICS)}")
    return [m for m in ALL_METRICS if m in wanted]


def _resize_to(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(img, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_CUBIC)


def _quality(
    names: Sequence[str],
    srs: Sequence[np.ndarray],
    hrs: Sequence[np.ndarray],
    shave: int,
    suffix: str,
) -> list[dict[str, float]]:
    rows = []
    for sr, hr in zip(srs, hrs, strict=True):
        row: dict[str, float] = {}
        for name in names:
            compute = METRICS[name].compute
            if compute is not None:
                row[name + suffix] = compute(sr, hr, shave)
        rows.append(row)
    return rows


def score_pairs(
    pairs: Sequence[Pair],
    *,
    recognizer: Recognizer | Sequence[Recognizer] | None,
    metrics: Iterable[str] = DEFAULT_METRICS,
    batch_size: int = 64,
    shave: int = 0,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
    separations: dict[str, dict[str, Separation]] | None = None,
) -> list[dict[str, Any]]:
    """Scores each pair; records come back in the order of ``pairs``.

    Args:
        pairs: From :func:`harness.data.imageio.pair_by_name` (or any subset of it).
        recognizer: Face recognizer for ``"is"`` (may be None when IS is not asked for), or
            a panel of them (:mod:`harness.scoring.panel`): every one embeds each batch read.
        metrics: Names from :data:`ALL_METRICS`.
        batch_size: Images read and embedded at a time.
        shave: Border pixels ignored by PSNR/SSIM/RMSE/NIQE (not by IS).
        progress: Called with the number of pairs just finished, after each batch.
        precision: Recognizer precision, ``fp32`` (the score) or ``bf16`` (approximate).
        separations: Filled per recognizer label with ``{"sr": Separation, "bicubic":
            Separation}``, for :func:`~harness.scoring.identity.judge_scores`.

    Returns:
        One dict per pair: ``name``, then each metric (``is``, ``psnr``, ``ssim``, ``psnr_y``,
        ``ssim_y``, ``rmse``, ``niqe`` as asked; ``is_<label>`` for each recognizer of a panel
        after the first) and, for pairs with an LR image, the same
        metrics of the bicubic upscale of LR with the suffix ``_bicubic`` (``is_bicubic``, ...),
        and ``sr_resized`` (True when SR had to be resized to the HR size). PSNR is ``inf`` for
        identical images.

    Raises:
        UserError: Unreadable images or bad metric names.
    """
    names = validate_metrics(metrics)
    if "is" in names and not recognizer:
        raise ValueError("metric 'is' needs a recognizer")
    panel = ([] if recognizer is None or "is" not in names
             else list(recognizer) if isinstance(recognizer, Sequence) else [recognizer])
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from concurrent.futures import ThreadPoolExecutor

    records: list[dict[str, Any]] = []
    chunks = [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]
    # Decoding the next chunk's PNGs overlaps the recognizer's work on this one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="png") as io:
        decoded = io.map(_read_chunk, chunks)
        for k, (chunk, images) in enumerate(zip(chunks, decoded, strict=True), 1):
            records += _score_chunk(chunk, images, names, panel, batch_size, shave,
                                    precision, separations)
            watchdog.progress(f"evaluate batch {k}")
            if progress is not None:
                progress(len(chunk))
    return records


def _warn_resized(records: Sequence[Mapping[str, Any]]) -> None:
    """One warning (for the whole job) naming the SR images resized to their HR size."""
    resized = [str(r["name"]) for r in records if r.get("sr_resized")]
    if resized:
        from harness.outputs.logs import warn_once

        warn_once(log, "sr resized",
                  "%d of %d SR images differ in size from their HR image and were resized to "
                  "it with OpenCV INTER_CUBIC, as the official scorer does (first: %s)",
                  len(resized), len(records), ", ".join(resized[:10]))


def check_distinct(hr_dir: str | Path, sr_dir: str | Path, pairs: Sequence[Pair]) -> None:
    """Refuses SR images that are their HR images: the same folder, or the same bytes.

    Raises:
        UserError: ``sr_dir`` resolves to ``hr_dir``, or every SR file is byte-identical to
            its HR file (a score of 1.0 that measures nothing).
    """
    import filecmp

    if Path(hr_dir).resolve() == Path(sr_dir).resolve():
        raise UserError(f"--sr {sr_dir}: is the HR folder {hr_dir}; SR images would be scored "
                        "against themselves")
    if pairs and all(filecmp.cmp(p.hr, p.sr, shallow=False) for p in pairs):
        raise UserError(f"--sr {sr_dir}: all {len(pairs)} SR files are byte-identical to their "
                        f"HR files in {hr_dir}; SR images would be scored against themselves")


_Images = tuple[list[np.ndarray], list[np.ndarray], dict[int, np.ndarray], list[str]]


def _read_chunk(chunk: Sequence[Pair]) -> _Images:
    """HR, SR (resized to HR where needed), bicubic upscales of LR by position, resized names."""
    hrs = [read_rgb(p.hr) for p in chunk]
    srs, resized = [], []
    for p, hr in zip(chunk, hrs, strict=True):
        sr = read_rgb(p.sr)
        if sr.shape != hr.shape:
            resized.append(p.name)
            sr = _resize_to(sr, hr.shape[:2])
        srs.append(sr)
    bics = {i: pil_bicubic_upscale(read_rgb(p.lr), (hrs[i].shape[1], hrs[i].shape[0]))
            for i, p in enumerate(chunk) if p.lr is not None}
    return hrs, srs, bics, resized


def _score_chunk(chunk: Sequence[Pair], images: _Images, names: Sequence[str],
                 panel: Sequence[Recognizer], batch_size: int, shave: int,
                 precision: str, separations: dict[str, dict[str, Separation]] | None
                 ) -> list[dict[str, Any]]:
    """The records of one chunk of pairs (see :func:`score_pairs`)."""
    hrs, srs, bics, resized = images
    with_lr = sorted(bics)
    labels = labels_of(panel)
    keys = [is_key(labels, i) for i in range(len(panel))]
    rows = _quality(names, srs, hrs, shave, "")
    bic_rows = (_quality(names, [bics[i] for i in with_lr], [hrs[i] for i in with_lr], shave,
                         BICUBIC_SUFFIX) if with_lr else [])
    for rec, label, key in zip(panel, labels, keys, strict=True):
        seps = (separations.setdefault(label, {"sr": Separation(), "bicubic": Separation()})
                if separations is not None else {})
        sims = identity_similarity_arrays(rec, srs, hrs, batch_size, precision, seps.get("sr"))
        for row, value in zip(rows, sims, strict=True):
            row[key] = float(value)
        if with_lr:
            sims = identity_similarity_arrays(rec, [bics[i] for i in with_lr],
                                              [hrs[i] for i in with_lr], batch_size, precision,
                                              seps.get("bicubic"))
            for row, value in zip(bic_rows, sims, strict=True):
                row[key + BICUBIC_SUFFIX] = float(value)
    for i, row in zip(with_lr, bic_rows, strict=True):
        rows[i].update(row)
    columns = keys + [n for n in names if n != "is"]  # "is" comes first in names too
    records = []
    for p, row in zip(chunk, rows, strict=True):
        record: dict[str, Any] = {"name": p.name}
        for name in columns:
            record[name] = row[name]
        if p.lr is not None:
            for name in columns:
                record[name + BICUBIC_SUFFIX] = row[name + BICUBIC_SUFFIX]
        record["sr_resized"] = p.name in resized
        records.append(record)
    return records


def _metric_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for rec in records:
        for k, v in rec.items():
            if (
                k not in keys
                and k != "name"
                and isinstance(v, (int, float))
                and not isinstance(v, bool)
            ):
                keys.append(k)
    return keys


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregates per-image records.

    Args:
        records: From :func:`score_pairs` (possibly concatenated over ranks).

    Returns:
        ``{"count": N, "resized": K, "metrics": {metric: {"mean", "median", "min", "max",
        "count"}}}``; ``metrics`` also holds the ``*_bicubic`` baselines when present, and
        ``"is_normalized_gain"`` = (IS - IS_bicubic) / (1 - IS_bicubic) of the means is added
        when both IS and its baseline were measured on all images (0: no better than bicubic,
        1: perfect identity).
    """
    stats: dict[str, dict[str, float]] = {}
    for key in _metric_keys(records):
        values = np.array([float(r[key]) for r in records if key in r], dtype=np.float64)
        stats[key] = {
            "mean": float(np.mean(values)),
            "median": float(np.median(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
            "count": int(values.size),
        }
    summary: dict[str, Any] = {
        "count": len(records),
        "resized": sum(1 for r in records if r.get("sr_resized")),
        "metrics": stats,
    }
    bic_key = "is" + BICUBIC_SUFFIX
    if "is" in stats and bic_key in stats and stats[bic_key]["count"] == stats["is"]["count"]:
        base = stats[bic_key]["mean"]
        summary["is_normalized_gain"] = (
            float((stats["is"]["mean"] - base) / (1.0 - base)) if base < 1.0 else math.nan
        )
    return summary


def _jsonable(obj: Any) -> Any:
    """Replace non-finite floats by strings JSON can hold.

    Replaces non-finite floats by the strings ``"inf"``, ``"-inf"``, ``"nan"`` (valid JSON;
    ``float()`` reads them back).
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_scores(
    out_dir: str | Path,
    records: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Writes ``scores.json`` (meta, summary, per-image records) and ``per_image.csv`` atomically.

    Non-finite numbers (PSNR of identical images) are written as ``"inf"``/``"nan"`` in JSON and
    ``inf``/``nan`` in the CSV.

    Args:
        out_dir: Folder to write into (created if needed).
        records: Per-image records from :func:`score_pairs`.
        summary: From :func:`summarize`.
        meta: Anything describing the run (folders, recognizer, model, ...).

    Returns:
        Paths of ``scores.json`` and ``per_image.csv``.
    """
    out = Path(out_dir)
    json_path, csv_path = out / "scores.json", out / "per_image.csv"
    meta = dict(meta or {})
    stats = summary.get("metrics") or {}
    meta.setdefault("metric_info", {k: METRICS[k].describe() for k in METRICS
                                    if k in stats or k + BICUBIC_SUFFIX in stats})
    doc = {"meta": meta, "summary": summary, "per_image": list(records)}
    write_text_atomic(json_path, json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")
    columns = ["name"] + [k for r in records for k in r if k != "name"]
    columns = list(dict.fromkeys(columns))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in rec.items()})
    write_text_atomic(csv_path, buf.getvalue())
    return json_path, csv_path


def _written_by_infer(path: Path) -> str | None:
    """Why ``path`` must never be replaced by a scoring command (None: it may be)."""
    if path.name != "scores.json":
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("meta") or {}
    except (OSError, ValueError, AttributeError):
        return "is not a scores file of `harness evaluate`"
    if isinstance(meta, dict) and "inference" in meta:
        return "holds `harness infer`'s scores (IS, bicubic baseline, power figures)"
    return None


def check_scores_output(out_dir: str | Path, inputs: Sequence[str | Path | None], *,
                        overwrite: bool = False) -> Path:
    """Check ``--out`` of ``harness evaluate`` before scoring.

    Check ``--out`` of ``harness evaluate`` before scoring (see
    :mod:`harness.outputs.write_checks`).

    An earlier evaluate result is replaced only with ``overwrite``; infer's ``scores.json``
    (with its power figures, which cannot be measured again) never is.
    """
    from harness.outputs.write_checks import check_output

    return check_output(out_dir, inputs, overwrite=overwrite,
                        will_write=("scores.json", "per_image.csv"),
                        protected=_written_by_infer)


def render_table(summary: Mapping[str, Any], title: str = "Scores") -> Table:
    """Return a rich table of a summary.

    A rich table of a summary: one row per metric (mean, median, min, max), the bicubic
    baseline beside it when measured, and the normalised IS gain in the caption.

    Args:
        summary: From :func:`summarize`.
        title: Table title.

    Returns:
        A ``rich.table.Table`` to print with a ``rich.console.Console``.
    """
    from rich.table import Table

    stats: Mapping[str, Mapping[str, float]] = summary.get("metrics", {})
    has_bic = any(k.endswith(BICUBIC_SUFFIX) for k in stats)
    table = Table(title=f"{title} ({summary.get('count', 0)} images)")
    table.add_column("metric")
    for col in ("mean", "median", "min", "max"):
        table.add_column(col, justify="right")
    if has_bic:
        table.add_column("bicubic mean", justify="right")
    for key, st in stats.items():
        if key.endswith(BICUBIC_SUFFIX):
            continue
        metric = METRICS.get(key)
        digits = metric.digits if metric else 4
        fmt = f"{{:.{digits}f}}"
        label = (metric.label if metric else f"IS ({key[3:]})" if key.startswith("is_")
                 else key)
        row = [label] + [
            fmt.format(st[c]) for c in ("mean", "median", "min", "max")
        ]
        if has_bic:
            bic = stats.get(key + BICUBIC_SUFFIX)
            row.append(fmt.format(bic["mean"]) if bic else "")
        table.add_row(*row)
    if "is_normalized_gain" in summary:
        gain = summary["is_normalized_gain"]
        table.caption = f"IS gain over bicubic, (IS - IS_bic) / (1 - IS_bic): {gain:.4f}"
    if summary.get("resized"):
        extra = f"{summary['resized']} SR images resized to HR size"
        table.caption = f"{table.caption}; {extra}" if table.caption else extra
    return table


def _check_shave(shave: int, pairs: Sequence[Pair]) -> None:
    """``shave`` must leave pixels of the first HR image (one line, not a traceback)."""
    if shave < 0:
        raise UserError(f"--shave {shave}: must be 0 or more")
    if shave and pairs:
        h, w = read_rgb(pairs[0].hr).shape[:2]
        if 2 * shave >= min(h, w):
            raise UserError(f"--shave {shave}: leaves nothing of a {w}x{h} image (at most "
                            f"{(min(h, w) - 1) // 2})")


def evaluate_dirs(
    hr_dir: str | Path,
    sr_dir: str | Path,
    out_dir: str | Path | None,
    *,
    lr_dir: str | Path | None = None,
    recognizer: Recognizer | str | None = "facenet",
    metrics: Iterable[str] = DEFAULT_METRICS,
    batch_size: int = 64,
    shave: int = 0,
    comm: Comm | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    precision: str = "fp32",
    fast: bool = True,
    threads: int | None = None,
    lr_kernel: str | None = None,
) -> dict[str, Any] | None:
    """What ``harness evaluate`` runs: pair, score this rank's share, gather, summarise, write.

    Args:
        hr_dir: Reference images.
        sr_dir: Super-resolved images (matched to HR by file stem).
        out_dir: Where rank 0 writes ``scores.json`` and ``per_image.csv`` (None: write nothing).
        lr_dir: Optional LR inputs, for the bicubic baseline.
        recognizer: A loaded recognizer, a list of them, or a spec: one for ``load_recognizer``
            or a comma-separated panel (``"facenet,dlib"``, :mod:`harness.scoring.panel`);
            unused without "is".
        metrics: Names from :data:`ALL_METRICS`.
        batch_size: Images per batch.
        shave: Border pixels ignored by the image-quality metrics.
        comm: The job's communicator (default: ``get_comm()``); each rank scores its
            :func:`~harness.cluster.distributed.shard` of the pairs, rank 0 gathers them.
        device: Device for a recognizer given by name.
        progress: Called with the number of pairs finished after each batch.
        meta: Extra fields for ``scores.json``'s ``meta``.
        precision: ``fp32`` (the score) or ``bf16`` (approximate; recorded in ``meta``).
        fast: Load a recognizer named here for scoring only (see
            :func:`~harness.scoring.recognizers.load_recognizer`: FaceNet on CPUs runs fp32
            through onnxruntime, the same scores to float rounding, and bf16 through OpenVINO).
        threads: CPU threads of the recognizer (see
            :func:`~harness.scoring.recognizers.load_recognizer`).
        lr_kernel: The LR kernel the model was trained on (``data.lr_kernel``): with
            ``lr_dir``, ``summary["lr_kernel"]`` says whether the LR given matches it
            (:func:`~harness.scoring.lr_check.lr_kernel_check`; None: the fingerprint only).

    Returns:
        On rank 0, ``{"summary", "records", "paths"}``; None on other ranks.
    """
    names = validate_metrics(metrics)
    comm = comm or get_comm()
    rank, world_size = comm.rank, comm.size
    pairs = pair_by_name(hr_dir, sr_dir, lr_dir)
    check_distinct(hr_dir, sr_dir, pairs)
    _check_shave(shave, pairs)
    mine = shard(pairs, rank, world_size)
    panel: list[Any] = []
    if "is" in names:
        if recognizer is None or isinstance(recognizer, str):
            panel = load_panel(recognizer or "facenet", device, scoring_only=fast,
                               precision=precision, threads=threads)
        else:
            panel = list(recognizer) if isinstance(recognizer, Sequence) else [recognizer]
    separations: dict[str, dict[str, Separation]] = {}
    records = score_pairs(
        mine,
        recognizer=panel or None,
        metrics=names,
        batch_size=batch_size,
        shave=shave,
        progress=progress,
        precision=precision,
        separations=separations,
    )
    gathered = _gather_and_judge(comm, records, separations, panel)
    if gathered is None:
        return None
    records, summary = gathered
    if lr_dir is not None:
        from harness.scoring.lr_check import lr_kernel_check

        summary["lr_kernel"] = lr_kernel_check(hr_dir, lr_dir, lr_kernel)
    paths: tuple[Path, Path] | None = None
    run_meta: dict[str, Any] = {"precision": precision}
    if out_dir is not None:
        run_meta = _scores_meta(hr_dir, sr_dir, lr_dir, panel, names, shave, precision,
                                world_size)
        run_meta.update(meta or {})
        paths = write_scores(out_dir, records, summary, run_meta)
    return {"summary": summary, "records": records, "paths": paths, "meta": run_meta}


def _gather_and_judge(comm: Comm, records: list[dict[str, Any]],
                      separations: dict[str, dict[str, Separation]], panel: Sequence[Any]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """Every rank's records on rank 0, summarised and judged (can these scores mean anything?).

    Every rank raises alike when they cannot. (records, summary) on rank 0, None on the others.
    """
    rank, world_size = comm.rank, comm.size
    mine_part = (records, {label: {k: sep.part() for k, sep in seps.items()}
                           for label, seps in separations.items()})
    parts = comm.gather(mine_part, root=0) if world_size > 1 else [mine_part]
    verdict: str | None = None
    summary: dict[str, Any] = {}
    if rank == 0:
        assert parts is not None  # gather's root receives every rank's part
        records = unshard([r for r, _ in parts])
        summary = summarize(records)
        _warn_resized(records)
        if panel:
            try:
                summary["identity"] = _judge_panel(summary, panel, [s for _, s in parts])
            except UserError as exc:
                verdict = str(exc)
    verdict = comm.bcast(verdict, root=0) if world_size > 1 else verdict
    if verdict:  # every rank stops alike, and nothing is written
        raise UserError(verdict)
    return (records, summary) if rank == 0 else None


def _judge_panel(summary: dict[str, Any], panel: Sequence[Any],
                 parts: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Every recognizer's separation (SR and bicubic) measured and judged.

    Returns the panel's figures for ``summary["identity"]``; raises the first refusal (a
    UserError).
    """
    labels = labels_of(panel)
    measured: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, str] = {}
    for label, rec in zip(labels, panel, strict=True):
        seps = {what: Separation.merge([p[label][what] for p in parts if label in p])
                for what in ("sr", "bicubic")}
        stats = {what: sep.measure() for what, sep in seps.items()}
        name = getattr(rec, "name", label)
        verdicts[label] = judge_scores(stats["sr"], name, baseline=stats["bicubic"])
        if stats["bicubic"] is not None:
            judge_scores(stats["bicubic"], name, "bicubic IS", chance="warn",
                         baseline=stats["bicubic"])
        measured[label] = {w: s.as_dict() if s else None for w, s in stats.items()}
    return panel_summary(summary["metrics"], labels, measured, verdicts)


def _scores_meta(hr_dir: str | Path, sr_dir: str | Path, lr_dir: str | Path | None,
                 recognizer: Any, names: Sequence[str], shave: int, precision: str,
                 world_size: int) -> dict[str, Any]:
    """``scores.json``'s meta for a scored folder: what was scored, how, and when."""
    return {
        "hr_dir": str(hr_dir),
        "sr_dir": str(sr_dir),
        "lr_dir": str(lr_dir) if lr_dir else None,
        "recognizer": (labels_of(recognizer)[0] if recognizer else None),
        "recognizers": labels_of(recognizer),
        "metrics": list(names),
        "shave": shave,
        "precision": precision,
        "approximate": precision != "fp32",
        "world_size": world_size,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
