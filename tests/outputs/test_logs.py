"""Log formats, progress lines, Slurm time limits: the pure parts of a night on a cluster."""
from __future__ import annotations

import io
import math
import time

import pytest

from harness.config import load_job
from harness.outputs.logs import choose_log_format
from harness.training.loop import parse_slurm_time, time_limit_deadline
from harness.training.progress import format_duration, progress_line
from tests.conftest import ROOT


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_rich_only_on_a_terminal_no_launcher_started() -> None:
    assert choose_log_format("auto", None, _Tty()) == "rich"
    assert choose_log_format("auto", "openmpi", _Tty()) == "plain"  # mpirun's pty
    assert choose_log_format("auto", None, io.StringIO()) == "plain"  # file or pipe
    assert choose_log_format("rich", "srun", io.StringIO()) == "rich"
    assert choose_log_format("off", None, _Tty()) == "off"


def test_progress_line_has_every_figure() -> None:
    line = progress_line(120, 200, 0.01234, 14.8, {"cluster_w": 2805.0, "budget_w": 3000.0},
                         0.7345, 192.0)
    assert line == ("step 120/200 (60%) | loss 0.0123 | 14.8 images/s | cluster 2805 W "
                    "(margin 195 W) | val IS 0.7345 | ETA 0:03:12")
    assert "val IS --" in progress_line(1, 2, 1.0, 1.0, None, None, math.inf)
    assert format_duration(math.inf) == "--" and format_duration(3725) == "1:02:05"


@pytest.mark.parametrize("text, seconds", [
    ("30", 1800), ("05:30", 330), ("01:00:00", 3600), ("2-00", 172800),
    ("1-02:03", 93780), ("1-02:03:04", 93784), ("UNLIMITED", None), ("", None)])
def test_slurm_time_formats(text: str, seconds: float | None) -> None:
    assert parse_slurm_time(text) == seconds


def test_time_limit_applies_inside_slurm_only() -> None:
    job = load_job(str(ROOT / "jobs" / "smoke.yaml"), ["launch.time=01:00:00",
                                                       "launch.signal_lead_s=120"])
    assert time_limit_deadline(job.launch, env={}) == math.inf
    start = time.time() - 600  # the allocation started 10 minutes ago
    deadline = time_limit_deadline(job.launch, env={"SLURM_JOB_ID": "7",
                                             "SLURM_JOB_START_TIME": str(start)}, now=0.0)
    assert deadline == pytest.approx(3600 - 600 - 120 - 60, abs=2)


def test_the_run_log_ends_with_why_the_run_ended(tmp_path) -> None:
    """An exception leaving the block puts one ERROR line in the file (the describer's words
    when it has some, else the exception's first line); a clean exit adds nothing."""
    import logging

    from harness.outputs.logs import RunLog

    path = tmp_path / "train.log"
    with RunLog(path):
        logging.getLogger("harness.x").warning("kept")
    assert "the run ended" not in path.read_text()

    def describe(exc: BaseException) -> str | None:
        return "lost contact with node1 (10.77.0.11)" if "reset" in str(exc) else None

    for exc in (RuntimeError("Connection reset by peer"), ValueError("bad\nsecond line")):
        try:
            with RunLog(path, describe=describe):
                raise exc
        except (RuntimeError, ValueError):
            pass
    lines = [line for line in path.read_text().splitlines() if "the run ended" in line]
    assert [line.split(" ", 1)[1] for line in lines] == [
        "ERROR harness: the run ended: lost contact with node1 (10.77.0.11)",
        "ERROR harness: the run ended: ValueError: bad"]
    assert not logging.getLogger().handlers or all(
        getattr(h, "baseFilename", None) != str(path) for h in logging.getLogger().handlers)
