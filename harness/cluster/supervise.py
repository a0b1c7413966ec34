"""Run a launched job so that signals sent to the launcher reach it, and wait for it to end.

The job is ``mpirun``, ``torchrun`` or ``srun``.
A launcher that simply died on SIGTERM (a wrapper, ``timeout``, a CI cancel, a job manager)
left ``mpirun`` and the ranks running under init, holding the run's lock, and no checkpoint was
written. Here every catchable stop signal is forwarded to the job once and the launcher keeps
waiting: ``mpirun`` turns SIGTERM, SIGINT and SIGHUP into SIGTERM for the ranks (which write a
checkpoint and end cleanly, see ``harness.training.loop.StopSignals``) and passes SIGUSR1/SIGUSR2
on as they are.

The job runs in a session (and process group) of its own, so a Ctrl-C at the terminal reaches
it once (through the launcher) instead of twice (a second SIGINT makes ``mpirun`` abort
harder).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
"""The signals the launcher passes on to the job instead of dying of them."""


def run_forwarding_signals(cmd: Sequence[str], env: Mapping[str, str],
                           prog: str = "harness launch",
                           forwarded: list[str] | None = None) -> int:
    """Run ``cmd``; forward :data:`FORWARDED` signals to it; return its exit code.

    Args:
        cmd: The launch line.
        env: Its environment.
        prog: Name before the one line printed when a signal is forwarded.
        forwarded: Gets the name of each signal passed on (``SIGINT``, ...), in order.

    Returns:
        The job's exit code (``128 + N`` when it died of signal N).
    """
    if threading.current_thread() is not threading.main_thread():
        return subprocess.call(list(cmd), env=dict(env))
    # stdin from /dev/null: a job in a background process group that read the terminal would
    # be stopped (SIGTTIN); nothing the ranks run reads stdin.
    proc = subprocess.Popen(list(cmd), env=dict(env), stdin=subprocess.DEVNULL,
                            start_new_session=True)

    def forward(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if forwarded is not None:
            forwarded.append(name)
        print(f"{prog}: {name} passed on to {os.path.basename(cmd[0])} (pid {proc.pid}); "
              "waiting for the ranks to stop", file=sys.stderr, flush=True)
        try:
            proc.send_signal(signum)
        except ProcessLookupError:  # already gone: wait() below reaps it
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
