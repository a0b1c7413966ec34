"""What a person sees of a training run: the live progress bar and the closing summary."""
from __future__ import annotations

from typing import Any


class TrainProgress:
    """A rich progress bar on rank 0 (no-op elsewhere or when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled, self.total, self.start = enabled, total, start
        self._progress = None

    def __enter__(self) -> "TrainProgress":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), transient=False)
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total,
                                                 completed=self.start, info="")
        return self

    def update(self, done: int, loss: float, val_is: float | None) -> None:
        """Show step ``done`` with the latest loss and validation IS."""
        if self._progress is None:
            return
        info = f"loss {loss:.4f}" + (f"  val IS {val_is:.4f}" if val_is is not None else "")
        self._progress.update(self._task, completed=done, info=info)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def print_summary(summary: dict[str, Any]) -> None:
    """Print the run's one-paragraph result (rank 0)."""
    from rich.console import Console

    c = Console()
    best = summary.get("best_val_is")
    c.print(f"[bold]run[/] {summary['run_dir']}: {summary['steps']} steps on "
            f"{summary['world_size']} rank(s), {summary['images_per_s']:.1f} images/s"
            + (f", best held-out IS {best:.4f} (step {summary['best_step']})"
               if best is not None else ""))
    p = summary.get("power") or {}
    if p.get("enabled"):
        c.print(f"[bold]power[/] avg {p.get('avg_cluster_w', 0):.0f} W, peak "
                f"{p.get('peak_cluster_w', 0):.0f} W (budget {p.get('budget_w', 0):.0f} W), "
                f"{p.get('images_per_s_per_w', 0):.4f} images/s/W, "
                f"{p.get('j_per_image', 0):.2f} J/image, crossings {p.get('crossings', 0)}")


