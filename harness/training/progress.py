"""What a person sees of a training run: a live bar on a terminal, plain lines in a log.

In ``plain`` mode (see :func:`harness.outputs.logs.choose_log_format`) rank 0 prints a timestamped
line every ``interval_s`` seconds — step/total, loss, images/s, cluster W and the margin to the
budget, the last validation IS and the ETA — that a person can read the morning after; in ``rich``
mode a live bar. Either way the lines also reach ``<run>/train.log``
(:class:`harness.outputs.logs.RunLog`).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

from harness.outputs.logs import utc_formatter

log = logging.getLogger("harness.progress")

def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``--`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(done: int, total: int, loss: float, images_per_s: float,
                  power: dict[str, float] | None, val_is: float | None, eta_s: float) -> str:
    """One plain progress line (pure, for tests and the log)."""
    parts = [f"step {done}/{total} ({100.0 * done / max(total, 1):.0f}%)", f"loss {loss:.4f}",
             f"{images_per_s:.1f} images/s"]
    if power and power.get("cluster_w") is not None:
        parts.append(f"cluster {power['cluster_w']:.0f} W "
                     f"(margin {power['budget_w'] - power['cluster_w']:.0f} W)")
    parts.append(f"val IS {val_is:.4f}" if val_is is not None else "val IS --")
    parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


class TrainProgress:
    """Progress of the run on rank 0: rich bar, plain lines or nothing (other ranks).

    Args:
        mode: ``rich``, ``plain`` or ``off`` (see :func:`harness.outputs.logs.choose_log_format`).
        total: Last step of the run.
        start: Step the run starts from (non-zero when resumed).
        batch_size: Images per step (global), for images/s.
        interval_s: Seconds between plain lines (the first and the last step always print).
        power: Callable returning ``{"cluster_w", "budget_w"}`` or None (the power session).
    """

    def __init__(self, mode: str, total: int, start: int, batch_size: int = 0,
                 interval_s: float = 30.0, power: Any = None) -> None:
        self.mode, self.total, self.start, self.batch_size = mode, total, start, batch_size
        self.interval_s, self.power = interval_s, power
        self._progress: Any = None
        self._console: logging.Handler | None = None
        self._t0 = self._last_line = 0.0

    def __enter__(self) -> TrainProgress:
        self._t0 = time.perf_counter()
        self._last_line = -math.inf
        log.setLevel(logging.INFO)
        log.propagate = False  # its own handlers: train.log always, stderr in plain mode
        if self.mode == "plain":
            self._console = logging.StreamHandler(sys.stderr)
            self._console.setFormatter(utc_formatter())
            log.addHandler(self._console)
        if self.mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total,
                                                 completed=self.start, info="")
        return self

    def set_total(self, total: int) -> None:
        """The run's last step changed (``train.fit_to_minutes``)."""
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def update(self, done: int, loss: float, val_is: float | None) -> None:
        """Show step ``done`` with the latest loss and validation IS."""
        if self.mode == "off":
            return
        if self._progress is not None:
            info = f"loss {loss:.4f}" + (f"  val IS {val_is:.4f}" if val_is is not None else "")
            self._progress.update(self._task, completed=done, info=info)
        now = time.perf_counter()
        if now - self._last_line < self.interval_s and done not in (self.start + 1, self.total):
            return
        self._last_line = now
        elapsed, steps = now - self._t0, done - self.start
        rate = steps / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else math.inf
        log.info(progress_line(done, self.total, loss, self.batch_size * rate,
                               self.power() if self.power is not None else None, val_is, eta))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._console is not None:
            log.removeHandler(self._console)


def print_summary(summary: dict[str, Any]) -> None:
    """Log the run's result in two lines (rank 0; they reach ``train.log`` too)."""
    out = logging.getLogger("harness.train")
    best = summary.get("best_val_is")
    out.info("run %s: %d steps on %d rank(s), %.1f images/s%s", summary["run_dir"],
             summary["steps"], summary["world_size"], summary["images_per_s"],
             f", best held-out IS {best:.4f} (step {summary['best_step']})"
             if best is not None else "")
    p = summary.get("power") or {}
    if p.get("enabled"):
        def num(key: str, digits: int) -> str:  # None: not known (said in summary.json)
            v = p.get(key)
            return "—" if v is None else f"{v:.{digits}f}"

        attempts = p.get("attempts") or 1
        out.info("power: avg %s W, peak %s W (budget %s W), %s images/s/W, %s J/image, "
                 "crossings %s%s", num("avg_cluster_w", 0), num("peak_cluster_w", 0),
                 num("budget_w", 0), num("images_per_s_per_w", 4), num("j_per_image", 2),
                 p.get("crossings", 0), f" (over {attempts} attempts)" if attempts > 1 else "")
