"""TensorBoard scalars and ``scalars.csv`` of a run (``train.tensorboard: true``), on rank 0.

A :class:`harness.training.hooks.StepHook`: after every step it writes the loss terms
(``loss/<term>``), ``lr``, ``images_per_s`` and, when the power session has a reading,
``power/cluster_w``, ``power/budget_w``, ``power/caps_w`` (sum of the GPUs' caps) and
``power/j_per_image`` (cluster W / images/s of the step); after every validation ``val/is``,
``val/psnr`` (and the other ``val_*`` figures). Events go through
:class:`torch.utils.tensorboard.SummaryWriter` to ``<run>/tensorboard/``
(``tensorboard --logdir <run>/tensorboard``); the same scalars go to ``<run>/scalars.csv``
(``step,time_s,tag,value``, one row per scalar), for a spreadsheet or pandas. Both are written
only when ``train.tensorboard`` is on: ``metrics.jsonl`` already holds the logged figures of
every run. A resumed run appends to both (TensorBoard shows the steps after the resume point).
"""
from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fileio.user_error import UserError
from harness.training.hooks import StepEnd

TENSORBOARD_DIR = "tensorboard"
"""The event files' folder under the run folder."""
SCALARS_CSV = "scalars.csv"
"""The CSV of the same scalars, in the run folder."""

LiveReading = Callable[[], "dict[str, float] | None"]


def check_tensorboard() -> None:
    """Fail in one line when ``train.tensorboard`` is on and the package is missing.

    Raises:
        UserError: ``torch.utils.tensorboard`` cannot be imported.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise UserError(f"train.tensorboard: true needs the tensorboard package ({exc}): "
                        "pip install tensorboard (setup.cfg pins it), or set "
                        "train.tensorboard: false") from None


class ScalarsHook:
    """Writes each step's and each validation's scalars to TensorBoard and ``scalars.csv``.

    Args:
        run_dir: The run folder.
        batch_size: The global batch (images of one step).
        live: The power session's latest reading (``cluster_w``, ``budget_w``, ``caps_w``),
            or None when there is none.
    """

    def __init__(self, run_dir: Path, *, batch_size: int,
                 live: LiveReading | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir, self.batch_size, self.live = run_dir, batch_size, live
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
        path = run_dir / SCALARS_CSV
        new = not path.exists()
        self._file: IO[str] = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "time_s", "tag", "value"])
        self._t0 = time.perf_counter()

    def with_power(self, live: LiveReading) -> ScalarsHook:
        """This hook, reading the power session's ``live`` from now on."""
        self.live = live
        return self

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar at ``step`` in both outputs."""
        self.writer.add_scalar(tag, value, step)
        self._csv.writerow([step, f"{time.perf_counter() - self._t0:.3f}", tag, repr(value)])

    def on_step_start(self, step: int) -> None:
        """Nothing."""

    def on_step_end(self, end: StepEnd) -> None:
        """The step's loss terms, learning rate, images/s and power figures."""
        step = end.done
        for name, value in end.terms.items():
            self.scalar(f"loss/{name}", float(value), step)
        self.scalar("lr", end.lr, step)
        ips = end.batch_size / end.step_time_s if end.step_time_s > 0 else 0.0
        self.scalar("images_per_s", ips, step)
        reading: dict[str, Any] | None = self.live() if self.live is not None else None
        if reading:
            for key in ("cluster_w", "budget_w", "caps_w"):
                if reading.get(key) is not None:
                    self.scalar(f"power/{key}", float(reading[key]), step)
            if reading.get("cluster_w") is not None and ips > 0:
                self.scalar("power/j_per_image", float(reading["cluster_w"]) / ips, step)

    def on_validation(self, step: int, res: dict[str, float]) -> None:
        """A validation's figures (``val_is`` as ``val/is``, ``val_psnr`` as ``val/psnr``)."""
        for key, value in res.items():
            if key.startswith("val_") and key != "val_n":
                self.scalar(f"val/{key.removeprefix('val_')}", float(value), step)

    def close(self) -> None:
        """Flush and close both outputs."""
        self.writer.close()
        self._file.close()
