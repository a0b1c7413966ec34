"""SIGINT/SIGTERM handling shared by everything that changes GPU settings.

Restoring settings inside a signal handler could deadlock on a lock the interrupted code
holds, so the handler only notes the signal and raises: the exception unwinds (releasing
locks) and the owner's ``__exit__``/``finally`` restores. A previously installed handler is
chained: Python's default SIGINT handler raises ``KeyboardInterrupt``; a handler that simply
returns chooses to keep running.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any


class RaisingSignalHandlers:
    """Installs SIGINT/SIGTERM handlers that call ``on_signal(signum)`` and then raise.

    Args:
        on_signal: Called first with the signal number (set a stop flag, log an event).
        enabled: When False, :meth:`install` does nothing.
    """

    def __init__(self, on_signal: Callable[[int], None], enabled: bool = True) -> None:
        self._on_signal_cb = on_signal
        self._enabled = enabled
        self._prev: dict[int, Any] = {}

    def install(self) -> None:
        """Install the handlers (main thread only; signals set to SIG_IGN stay ignored)."""
        if not self._enabled or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            if prev == signal.SIG_IGN:
                continue
            self._prev[sig] = prev
            signal.signal(sig, self._handle)

    def remove(self) -> None:
        """Put the previous handlers back."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in self._prev.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._prev.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._on_signal_cb(signum)
        prev = self._prev.get(signum)
        if callable(prev):
            prev(signum, frame)  # e.g. default_int_handler raises KeyboardInterrupt
            return
        raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (main thread, POSIX) so a second signal cannot cut a restore."""
    can = (hasattr(signal, "pthread_sigmask")
           and threading.current_thread() is threading.main_thread())
    if not can:
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
