"""Ending a job whose rank stopped responding, instead of waiting at full power.

A rank that stops (SIGSTOP, a stuck NFS read, a hung GPU) leaves every other rank blocked in
the step's collective. A collective timeout alone does not end the job: the rank that times
out then waits in MPI shutdown for the stopped one. So every rank runs a
:class:`StallWatchdog` thread:

- the training loop calls :meth:`StallWatchdog.arm` at the start of each step (and
  :meth:`~StallWatchdog.disarm` around validation and checkpoints, which have no step budget);
- the thread writes ``<run>/.progress/rank-N`` (step, time) once a second, so the rank that
  reports a stall can name the ranks that stopped;
- when an armed step runs past ``train.collective_timeout_s``, the thread restores this node's
  GPU settings (the callbacks given to :func:`on_stall`), then the first rank to claim
  ``<run>/.progress/stalled`` prints one line naming the stalled ranks and the step, and
  the job is aborted as a whole (``MPI_Abort``; ``os._exit`` without MPI, which torchrun and
  Slurm's ``--kill-on-bad-exit`` turn into the end of the job). The last checkpoint stays
  resumable: checkpoints are written atomically, never half.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fileio.atomic import write_json_atomic

log = logging.getLogger(__name__)

#: Exit status of a job ended by the watchdog.
STALL_EXIT = 4

_CALLBACKS: list[Callable[[], None]] = []


def on_stall(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` (e.g. restore GPU limits) before a stalled job is aborted; returns a remover."""
    _CALLBACKS.append(fn)
    return lambda: _CALLBACKS.remove(fn) if fn in _CALLBACKS else None


#: The watchdog of the run in progress in this process (for :func:`job_was_aborted`).
_ACTIVE: list[StallWatchdog] = []


def reset() -> None:
    """Forget every :func:`on_stall` callback and the active watchdog (tests)."""
    _CALLBACKS.clear()
    _ACTIVE.clear()


def job_was_aborted() -> bool:
    """True when a watchdog of this job has ended it: the error this rank sees next (a peer's
    connection reset) is a consequence, not news, and is not printed."""
    return any((w.dir / "stalled").exists() for w in _ACTIVE)


def torch_timeout_s(collective_timeout_s: float) -> float:
    """torch.distributed's own collective timeout: longer than the watchdog's first-step
    budget, so that the watchdog ends the job with its one line before gloo/NCCL raise."""
    return 4 * collective_timeout_s + 30


def _abort_job(comm: Any) -> None:
    raw = getattr(comm, "raw", None)
    if raw is not None and getattr(raw, "Get_size", lambda: 1)() > 1:
        try:
            raw.Abort(STALL_EXIT)
        except Exception:  # noqa: BLE001 - fall through to _exit
            pass
    os._exit(STALL_EXIT)


class StallWatchdog:
    """Per-rank thread that ends the job when an armed step makes no progress.

    Args:
        timeout_s: Budget of one step (``train.collective_timeout_s``).
        rank: This rank.
        world_size: Ranks in the job (one rank: nothing to wait for, the thread is idle).
        run_dir: Run folder (shared by all ranks) for the progress files.
        comm: The job's communicator (its ``raw`` MPI communicator, if any, is aborted).
        abort: What ends the job (tests pass a fake).
    """

    def __init__(self, timeout_s: float, rank: int, world_size: int, run_dir: Path,
                 comm: Any = None, abort: Callable[[], None] | None = None) -> None:
        self.timeout_s, self.rank, self.world_size = float(timeout_s), rank, world_size
        self.dir = Path(run_dir) / ".progress"
        self.comm = comm
        self._abort = abort or (lambda: _abort_job(comm))
        self._armed_at: float | None = None
        self._budget = self.timeout_s
        self.stage = "start-up"
        self._steps_armed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired = False

    # --- main thread -----------------------------------------------------------------------
    def arm(self, step: int) -> None:
        """Step ``step`` begins: it must reach the next :meth:`arm` within the budget.

        ``HARNESS_FAULT_STALL_STEP=N`` (with ``HARNESS_FAULT_STALL_RANK``, default 1) makes
        that rank stop itself (SIGSTOP) at step N: the tests' stalled rank.
        """
        self.stage = f"step {step}"
        fault = os.environ.get("HARNESS_FAULT_STALL_STEP", "")
        if fault and int(fault) == step and self.rank == int(
                os.environ.get("HARNESS_FAULT_STALL_RANK", "1")):
            import signal

            os.kill(os.getpid(), signal.SIGSTOP)
        self._budget = self.timeout_s * (4 if self._steps_armed == 0 else 1)
        self._steps_armed += 1
        self._armed_at = time.monotonic()

    def disarm(self, stage: str = "") -> None:
        """Work with no step budget follows (validation, a checkpoint)."""
        if stage:
            self.stage = stage
        self._armed_at = None

    def __enter__(self) -> StallWatchdog:
        if self.world_size <= 1:
            return self
        try:
            self.dir.mkdir(exist_ok=True)
            if self.rank == 0:
                (self.dir / "stalled").unlink(missing_ok=True)
        except OSError as exc:
            log.warning("watchdog: %s: %s (stalled ranks will not be named)", self.dir, exc)
        self._heartbeat()
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)
        self._thread.start()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE and exc[0] is None:
            _ACTIVE.remove(self)  # on an exception, job_was_aborted() is still asked
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # --- watchdog thread -------------------------------------------------------------------
    def _heartbeat(self) -> None:
        rec = {"rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(),
               "stage": self.stage, "time": time.time()}
        try:  # a heartbeat a second: no fsync (a crash loses a heartbeat, never a file)
            write_json_atomic(self.dir / f"rank-{self.rank}", rec, indent=None, fsync=False)
        except OSError:
            pass

    def _run(self) -> None:
        tick = min(1.0, self.timeout_s / 4)
        while not self._stop.wait(tick):
            self._heartbeat()
            armed = self._armed_at
            if armed is not None and time.monotonic() - armed > self._budget:
                if self._peer_busy():  # a live rank still validating or checkpointing
                    continue
                self._fire(time.monotonic() - armed)
                return

    def _peer_busy(self) -> bool:
        """Every rank alive and one of them outside a step (validation, a slow checkpoint
        write): waiting for it is not a stall."""
        if self.stalled_ranks():
            return False
        for r in range(self.world_size):
            try:
                stage = json.loads((self.dir / f"rank-{r}").read_text()).get("stage", "")
            except (OSError, ValueError):
                continue
            if not str(stage).startswith("step "):
                return True
        return False

    def stalled_ranks(self, now: float | None = None) -> list[dict[str, Any]]:
        """Ranks whose heartbeat is older than 3 s or missing (their process is not running)."""
        now = time.time() if now is None else now
        out = []
        for r in range(self.world_size):
            try:
                rec = json.loads((self.dir / f"rank-{r}").read_text())
            except (OSError, ValueError):
                rec = {"rank": r, "time": 0.0}
            if now - float(rec.get("time", 0.0)) > max(3.0, 3 * min(1.0, self.timeout_s / 4)):
                out.append(rec)
        return out

    def describe(self, waited_s: float) -> str:
        """The one line a stalled job ends with."""
        stalled = self.stalled_ranks()
        if stalled:
            who = ", ".join(f"rank {r['rank']}"
                            + (f" on {r['host']} (pid {r['pid']}, last in {r['stage']})"
                               if "host" in r else "") for r in stalled)
        else:
            who = "another rank (all processes alive: a hung GPU or collective?)"
        return (f"harness: error: {who} stopped responding: rank {self.rank} on "
                f"{socket.gethostname()} waited {waited_s:.0f} s in {self.stage} "
                f"(train.collective_timeout_s {self.timeout_s:g}); ending the job; the last "
                f"checkpoint is resumable: --resume {self.dir.parent}")

    def _fire(self, waited_s: float) -> None:
        self.fired = True
        for fn in list(_CALLBACKS):  # restore this node's GPUs before anything is killed
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            t.join(timeout=5)
        first = True
        try:
            fd = os.open(self.dir / "stalled", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            os.close(fd)
        except FileExistsError:
            first = False
        except OSError:
            pass
        if first:
            print(self.describe(waited_s), file=sys.stderr, flush=True)
        else:
            time.sleep(2)  # let the first reporter abort the job
        self._abort()
