"""Logging for people and for log files: one time format (UTC), rank tags, the run's log file.

Interactive terminals get rich displays; anything else (a file, a pipe, a launcher's
pseudo-terminal) gets plain, timestamped lines. Records of ranks other than 0 carry
``host:rank`` so that a warning in a 16-rank log says where it came from.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# warn_once lives below the data room (data and scoring warn through it); importable here too
from harness.cluster.rank_log import reset_warn_once, warn_once  # noqa: F401

LOG_FORMATS = ("auto", "rich", "plain", "off")
"""Accepted values of ``--log-format``."""

_RUN_END_LOGGER, _RUN_END_MESSAGE = "harness", "the run ended: "
RUN_ENDED = f"ERROR {_RUN_END_LOGGER}: {_RUN_END_MESSAGE}"  # = fileio.run_files.RUN_ENDED
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
    """Return a ``rich`` console for tables.

    A ``rich`` console for tables: styled on a terminal, plain text under a launcher (as
    :func:`choose_log_format`: ``mpirun`` gives each rank a pseudo-terminal, and escape codes
    would end up in the job's log file).
    """
    from rich.console import Console

    from harness.cluster.distributed import get_dist_info

    launched = get_dist_info().launcher not in (None, "none")
    return Console(force_terminal=False) if launched else Console()


def utc_formatter(where: str = "") -> logging.Formatter:
    """``2026-11-30T11:07:10Z INFO name: message`` (``where``, e.g. ``node3:5 ``, before name)."""
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {where}%(name)s: %(message)s",
                            datefmt="%Y-%m-%dT%H:%M:%SZ")
    fmt.converter = time.gmtime
    return fmt


def setup_logging(verbose: bool = False, rank: int = 0, world_size: int = 1) -> None:
    """Send log records to stderr in the one UTC format.

    Log records to stderr in the one UTC format; other ranks' records say ``host:rank``
    (the node's name as Slurm says it, else the host name).
    """
    from harness.cluster.slurm import node_name

    where = f"{node_name()}:{rank} " if world_size > 1 and rank != 0 else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(utc_formatter(where))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class RunLogHandler(logging.FileHandler):
    """The run log's file handler: a failed write (a full disk) ends the run with the file named.

    The standard handler prints a "--- Logging error ---" traceback for every record it cannot
    write (about 45 of them before the run ended on a full disk) and carries on. Here the first
    failure is kept, the handler writes nothing more, and the ``OSError`` (its ``filename`` set
    to the log) is raised in the main thread: the command prints it as one line.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.failed: OSError | None = None
        self._raised = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``; after a failed write, raise it once in the main thread instead."""
        if self.failed is None:
            super().emit(record)
        elif not self._raised and threading.current_thread() is threading.main_thread():
            self._raised = True  # a failure seen in another thread, said in the main one
            raise self.failed

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Keep the first failed write's ``OSError`` (naming the log), raised in the main thread."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        if self.failed is None:
            self.failed = OSError(exc.errno, exc.strerror, self.baseFilename)
        if not self._raised and threading.current_thread() is threading.main_thread():
            self._raised = True
            raise self.failed from None

    def close(self) -> None:
        """Close the file; after a failed write, drop the stream's unwritable buffer first."""
        if self.failed is not None and self.stream is not None:
            with contextlib.suppress(OSError, ValueError):  # its buffer cannot be written
                self.stream.close()
            self.stream = None
        super().close()


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
            self._handler = RunLogHandler(self.path)
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
            elif isinstance(exc, OSError):
                from fileio.user_error import describe_os_error

                why = describe_os_error(exc)
            else:
                words = str(exc).strip().splitlines()
                why = f"{type(exc).__name__}: {words[0] if words else '(no message)'}"
        record = logging.LogRecord(_RUN_END_LOGGER, logging.ERROR, __file__, 0,
                                   _RUN_END_MESSAGE + "%s", (why,), None)
        with contextlib.suppress(OSError):  # a full disk: the error that ended the run wins
            self._handler.handle(record)


class CountProgress:
    """Progress of ``total`` items on rank 0: a rich bar, or a plain line every ``interval_s``.

    Args:
        label: What is counted (``"infer"``, ``"evaluate"``).
        total: Items to do.
        mode: ``rich``, ``plain`` or ``off`` (see :func:`choose_log_format`).
        interval_s: Seconds between plain lines (the last item always prints).
        of_all: Items of every rank together, when ``total`` is this rank's share only: the
            lines then say so ("rank 0's share 32/32 done, of 40 on all ranks") instead of
            passing the share off as the whole.
    """

    def __init__(self, label: str, total: int, mode: str, interval_s: float = 10.0,
                 of_all: int | None = None) -> None:
        self.label, self.total, self.mode, self.interval_s = label, total, mode, interval_s
        self.of_all = of_all if of_all is not None and of_all != total else None
        self.done = 0
        self._bar: Any = None
        self._t0 = self._last = 0.0

    def __enter__(self) -> CountProgress:
        self._t0 = self._last = time.perf_counter()
        if self.mode == "rich":
            from rich.progress import Progress

            self._bar = Progress(transient=True)
            self._bar.start()
            what = self.label if self.of_all is None else (
                f"{self.label} (rank 0's {self.total} of {self.of_all})")
            self._task = self._bar.add_task(what, total=self.total)
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
            logger = logging.getLogger(f"harness.{self.label}")
            if self.of_all is None:
                logger.info("%d/%d done (%.1f/s)", self.done, self.total, rate)
            else:
                logger.info("rank 0's share %d/%d done (%.1f/s), of %d on all ranks",
                            self.done, self.total, rate, self.of_all)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
