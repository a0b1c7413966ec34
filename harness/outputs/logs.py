"""Logging for people and for log files: one time format (UTC), rank tags, the run's log file.

Interactive terminals get rich displays; anything else (a file, a pipe, a launcher's
pseudo-terminal) gets plain, timestamped lines. Records of ranks other than 0 carry
``host:rank`` so that a warning in a 16-rank log says where it came from.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_FORMATS = ("auto", "rich", "plain", "off")
"""Accepted values of ``--log-format``."""

_RUN_END_LOGGER, _RUN_END_MESSAGE = "harness", "the run ended: "
RUN_ENDED = f"ERROR {_RUN_END_LOGGER}: {_RUN_END_MESSAGE}"
"""What the last line of a run's log says after its time stamp when the run ended with an
error (see :class:`RunLog`; ``harness watch`` ends on it): level, logger, then the message."""


def choose_log_format(requested: str, launcher: str | None, stream: Any = None) -> str:
    """``rich``, ``plain`` or ``off`` for ``requested`` (one of :data:`LOG_FORMATS`).

    ``auto`` is ``rich`` only for an interactive terminal of a process no launcher started
    (``mpirun`` gives each rank a pseudo-terminal that is nobody's screen), else ``plain``.
    """
    if requested != "auto":
        return requested
    stream = stream if stream is not None else sys.stdout
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    return "rich" if interactive and launcher in (None, "none") else "plain"


def table_console() -> Any:
    """A ``rich`` console for tables: styled on a terminal, plain text under a launcher (as
    :func:`choose_log_format`: ``mpirun`` gives each rank a pseudo-terminal, and escape codes
    would end up in the job's log file)."""
    from rich.console import Console

    from harness.cluster.distributed import get_dist_info

    launched = get_dist_info().launcher not in (None, "none")
    return Console(force_terminal=False) if launched else Console()


#: Keys of the warnings :func:`warn_once` has logged in this process.
_WARNED: set[str] = set()


def warn_once(logger: logging.Logger, key: str, msg: str, *args: Any) -> bool:
    """Log a warning about something every rank sees alike (an input, a score) once per job.

    Only rank 0 logs it (the other ranks would repeat it word for word), and only the first
    time ``key`` comes up in this process (not once per batch, validation or call).

    Returns:
        Whether it was logged here.
    """
    from harness.cluster.distributed import get_dist_info

    if key in _WARNED or get_dist_info().rank != 0:
        return False
    _WARNED.add(key)
    logger.warning(msg, *args)
    return True


def reset_warn_once() -> None:
    """Forget what :func:`warn_once` logged (for tests, and for a new job in one process)."""
    _WARNED.clear()


def utc_formatter(where: str = "") -> logging.Formatter:
    """``2026-11-30T11:07:10Z INFO name: message`` (``where``, e.g. ``node3:5 ``, before name)."""
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s",
                            datefmt="%Y-%m-%dT%H:%M:%SZ")
    fmt.converter = time.gmtime
    return fmt


def setup_logging(verbose: bool = False, rank: int = 0, world_size: int = 1) -> None:
    """Log records to stderr in the one UTC format; other ranks' records say ``host:rank``
    (the node's name as Slurm says it, else the host name)."""
    from harness.cluster.slurm import node_name

    where = f"{node_name()}:{rank} " if world_size > 1 and rank != 0 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(utc_formatter(where))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class RunLog:
    """While open, rank 0's log records and progress lines also go to ``path`` (appended).

    When the block ends with an exception, the file gets one ``ERROR`` line saying why the
    run ended (``describe(exc)``, else the exception's own words) before it is closed: the
    run folder keeps the reason even when the launcher's output is lost (a ``srun`` killed
    with its node). The line goes to the file alone; the command prints its own on stderr.
    """

    def __init__(self, path: Path | None,
                 describe: Callable[[BaseException], str | None] | None = None) -> None:
        self.path = path
        self.describe = describe
        self._handler: logging.Handler | None = None

    def __enter__(self) -> RunLog:
        if self.path is not None:
            self._handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
            self._handler.setFormatter(utc_formatter())
            logging.getLogger().addHandler(self._handler)
            logging.getLogger("harness.progress").addHandler(self._handler)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if self._handler is not None and exc is not None:
            self._record_end(exc)
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            logging.getLogger("harness.progress").removeHandler(self._handler)
            self._handler.close()

    def _record_end(self, exc: BaseException) -> None:
        assert self._handler is not None
        why = self.describe(exc) if self.describe is not None else None
        if why is None:
            if isinstance(exc, KeyboardInterrupt):
                why = "interrupted"
            else:
                words = str(exc).strip().splitlines()
                why = f"{type(exc).__name__}: {words[0] if words else '(no message)'}"
        record = logging.LogRecord(_RUN_END_LOGGER, logging.ERROR, __file__, 0,
                                   _RUN_END_MESSAGE + "%s", (why,), None)
        self._handler.handle(record)


class CountProgress:
    """Progress of ``total`` items on rank 0: a rich bar, or a plain line every ``interval_s``.

    Args:
        label: What is counted (``"infer"``, ``"evaluate"``).
        total: Items to do.
        mode: ``rich``, ``plain`` or ``off`` (see :func:`choose_log_format`).
        interval_s: Seconds between plain lines (the last item always prints).
    """

    def __init__(self, label: str, total: int, mode: str, interval_s: float = 10.0) -> None:
        self.label, self.total, self.mode, self.interval_s = label, total, mode, interval_s
        self.done = 0
        self._bar: Any = None
        self._t0 = self._last = 0.0

    def __enter__(self) -> CountProgress:
        self._t0 = self._last = time.perf_counter()
        if self.mode == "rich":
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int) -> None:
        """``n`` more items are done."""
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
        now = time.perf_counter()
        if self.mode == "plain" and (now - self._last >= self.interval_s
                                     or self.done >= self.total):
            self._last = now
            rate = self.done / (now - self._t0) if now > self._t0 else 0.0
            logging.getLogger(f"harness.{self.label}").info(
                "%d/%d done (%.1f/s)", self.done, self.total, rate)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
