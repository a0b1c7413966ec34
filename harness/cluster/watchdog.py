"""Ending a job whose rank stopped responding, instead of waiting at full power.

A rank that stops (SIGSTOP, a stuck NFS read, a hung GPU) leaves every other rank blocked in
its next collective. A collective timeout alone does not end the job: the rank that times
out then waits in MPI shutdown for the stopped one. So every rank of a multi-rank job runs
one :class:`StallWatchdog` thread for the whole life of the process, from start-up (it is
started by :func:`harness.cluster.distributed.get_comm`, before MPI itself) to exit:

- every collective of the job's communicator (and MPI's start-up and shutdown) is a
  *bounded wait* (:meth:`StallWatchdog.waiting`), and so is each training step
  (:meth:`~StallWatchdog.arm`; :meth:`~StallWatchdog.disarm` around validation and
  checkpoints, which have no budget); work between waits reports progress
  (:meth:`~StallWatchdog.progress`: an inference or evaluation batch);
- the thread writes ``<progress dir>/rank-N`` (stage, time) once a second, so the rank that
  reports a stall can name the ranks that stopped;
- when a bounded wait runs past the budget and a peer's heartbeat is stale (its process is
  stopped), or a live peer has made no progress for 4 budgets outside a wait (a hung file
  system), or every rank is waiting (a hung collective), the thread restores this node's GPU
  settings (the callbacks given to :func:`on_stall`); then the first rank to claim
  ``<progress dir>/stalled`` prints one line naming the stalled ranks, their hosts and
  stages, and the job is aborted as a whole (``MPI_Abort``; ``os._exit`` without MPI, which
  mpirun, torchrun and Slurm's ``--kill-on-bad-exit`` turn into the end of the job).

The budget is one setting: ``train.collective_timeout_s`` of the job (default
:data:`DEFAULT_TIMEOUT_S`), overridden by ``$HARNESS_COLLECTIVE_TIMEOUT_S`` (which also
applies to commands without a job, such as ``harness evaluate``, and to start-up, before the
job is read). The progress folder is ``$HARNESS_PROGRESS_DIR``; else, on a job of several
nodes, ``runs/.progress/<job id>`` below the working folder (shared: ranks on other nodes
must be seen working), else a folder of this job under the system's temporary folder.

Fault injection for the tests: ``HARNESS_FAULT_STALL_AT=STAGE`` (``start-up``,
``infer batch 2``, ``evaluate batch 1``, ``step 6``; ``HARNESS_FAULT_STALL_STEP=N`` is
``step N``) makes rank ``HARNESS_FAULT_STALL_RANK`` (default 1) SIGSTOP itself there;
``HARNESS_FAULT_KILL_AT=STAGE`` makes rank ``HARNESS_FAULT_KILL_RANK`` (default 1) SIGKILL itself
there (a lost node, as its peers see it).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fileio.atomic import write_json_atomic
from harness.config import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, MIN_TIMEOUT_S

log = logging.getLogger(__name__)

#: Exit status of a job ended by the watchdog.
STALL_EXIT = 4

#: Environment variable that overrides the budget everywhere.
TIMEOUT_ENV = "HARNESS_COLLECTIVE_TIMEOUT_S"

#: Environment variable naming the heartbeat folder.
PROGRESS_DIR_ENV = "HARNESS_PROGRESS_DIR"

#: A live rank outside a wait may go this many budgets without progress (a long batch).
BUSY_FACTOR = 4

_CALLBACKS: list[Callable[[], None]] = []


def on_stall(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` (e.g. restore GPU limits) before a stalled job is aborted; returns a remover."""
    _CALLBACKS.append(fn)
    return lambda: _CALLBACKS.remove(fn) if fn in _CALLBACKS else None


#: The watchdog of this process (one per process; see :func:`start`).
_ACTIVE: list[StallWatchdog] = []


def reset() -> None:
    """Stop the process's watchdog and forget every :func:`on_stall` callback (tests)."""
    _CALLBACKS.clear()
    for w in _ACTIVE:
        w.close()
    _ACTIVE.clear()


def job_was_aborted() -> bool:
    """Return True when a watchdog of this job has ended it.

    True when a watchdog of this job has ended it: the error this rank sees next (a peer's
    connection reset) is a consequence, not news, and is not printed.
    """
    return any(w.fired or (w.dir / "stalled").exists() for w in _ACTIVE)


def torch_timeout_s(collective_timeout_s: float) -> float:
    """Return torch.distributed's own collective timeout in seconds.

    torch.distributed's own collective timeout: longer than the watchdog's first-step
    budget, so that the watchdog ends the job with its one line before gloo/NCCL raise.
    """
    return 4 * collective_timeout_s + 30


def timeout_from_env(default: float = DEFAULT_TIMEOUT_S) -> float:
    """``$HARNESS_COLLECTIVE_TIMEOUT_S`` if set, else ``default``.

    Bounded as the job's ``train.collective_timeout_s`` is (1 to 3600 s): ``inf`` or ``1e309``
    would overflow torch's timeout, and ``1e12`` end in a C++ timeout trace.

    Raises:
        UserError: the value is not a number of seconds within the bounds.
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not MIN_TIMEOUT_S <= value <= MAX_TIMEOUT_S:  # NaN fails too
        from fileio.user_error import UserError

        raise UserError(f"{TIMEOUT_ENV}={raw}: expected a number of seconds between "
                        f"{MIN_TIMEOUT_S:g} and {MAX_TIMEOUT_S:g} (as train.collective_timeout_s)")
    return value


def _job_id() -> str:
    """What the ranks of one launch share (and two launches do not)."""
    for name in ("HARNESS_JOB_ID", "PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid", "SLURM_JOB_ID",
                 "TORCHELASTIC_RUN_ID", "PMI_KVSNAME"):
        value = os.environ.get(name, "")
        if value:
            step = os.environ.get("SLURM_STEP_ID", "") if name == "SLURM_JOB_ID" else ""
            return "".join(c if c.isalnum() or c in "-_." else "_" for c in value + step)
    return f"ppid{os.getppid()}"


def progress_dir(multi_node: bool = False) -> Path:
    """Return the folder of the ranks' heartbeat files.

    ``$HARNESS_PROGRESS_DIR``; else, on a job of several nodes, ``runs/.progress/<job id>``
    below the working folder (the job's shared checkout: every node must see every rank's
    heartbeat, or a rank waiting while another node works would be taken for a stall); else
    ``<tmp>/harness-progress-<uid>/<job id>``.
    """
    env = os.environ.get(PROGRESS_DIR_ENV, "").strip()
    if env:
        return Path(env)
    if multi_node:
        return Path.cwd() / "runs" / ".progress" / _job_id()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"harness-progress-{uid}" / _job_id()


def _fault_stage() -> str:
    """Where the tests' fault injection stops a rank (empty: nowhere)."""
    step = os.environ.get("HARNESS_FAULT_STALL_STEP", "")
    return os.environ.get("HARNESS_FAULT_STALL_AT", "") or (f"step {int(step)}" if step else "")


def _abort_job(comm: Any) -> None:
    raw = getattr(comm, "raw", None)
    if raw is not None and getattr(raw, "Get_size", lambda: 1)() > 1:
        try:
            raw.Abort(STALL_EXIT)
        except Exception:  # noqa: BLE001 - fall through to _exit
            pass
    os._exit(STALL_EXIT)


class StallWatchdog:
    """Per-rank thread that ends the job when a wait on another rank runs past its budget.

    Args:
        timeout_s: The budget of one wait (``train.collective_timeout_s``).
        rank: This rank.
        world_size: Ranks in the job (one rank: nothing to wait for, the thread is idle).
        run_dir: Folder (shared by all ranks) for the heartbeat files (default:
            :func:`progress_dir`).
        multi_node: The ranks span several nodes (the default folder is then a shared one).
        comm: The job's communicator (its ``raw`` MPI communicator, if any, is aborted);
            may be set later with :meth:`attach`.
        abort: What ends the job (tests pass a fake).
    """

    def __init__(self, timeout_s: float, rank: int, world_size: int,
                 run_dir: Path | None = None, comm: Any = None,
                 abort: Callable[[], None] | None = None, *, multi_node: bool = False) -> None:
        self.timeout_s, self.rank, self.world_size = float(timeout_s), rank, world_size
        self.dir = Path(run_dir) if run_dir is not None else progress_dir(multi_node)
        self.comm = comm
        self.hint = ""
        self._abort = abort or (lambda: _abort_job(self.comm))
        self._lock = threading.Lock()
        self._bounded_at: float | None = None  # monotonic start of the current bounded wait
        self._budget = self.timeout_s
        self.stage = "start-up"
        self._since = time.time()  # wall time of the last progress
        self._unbounded = False
        self._steps_armed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired = False
        self._fault = _fault_stage()
        self._pid = os.getpid()
        self._exit_guard: contextlib.AbstractContextManager[None] | None = None

    # --- main thread -----------------------------------------------------------------------
    def attach(self, comm: Any) -> None:
        """The communicator to abort once MPI is up."""
        self.comm = comm

    def configure(self, timeout_s: float | None = None, hint: str | None = None) -> None:
        """Set the budget and the hint that ends the stall line.

        Set the budget (``$HARNESS_COLLECTIVE_TIMEOUT_S`` still wins) and the hint that ends
        the stall line (e.g. how to resume).
        """
        if timeout_s is not None:
            self.timeout_s = timeout_from_env(timeout_s)
            if self._bounded_at is None:
                self._budget = self.timeout_s
        if hint is not None:
            self.hint = hint

    def progress(self, stage: str) -> None:
        """This rank made progress and is now in ``stage`` (work with a budget, not a wait)."""
        with self._lock:
            self.stage, self._since, self._unbounded = stage, time.time(), False
        if stage == os.environ.get("HARNESS_FAULT_KILL_AT") and self.rank == int(
                os.environ.get("HARNESS_FAULT_KILL_RANK", "1")):
            os.kill(os.getpid(), signal.SIGKILL)
        if stage == self._fault and self.rank == int(
                os.environ.get("HARNESS_FAULT_STALL_RANK", "1")):
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass
            self._heartbeat()  # the stage it stops in, for the stall line
            with contextlib.suppress(OSError):  # kept for the tests: a rank continued by the
                # launcher's SIGCONT before its SIGKILL may beat again from a later stage
                write_json_atomic(self.dir / f"rank-{self.rank}.stopped", self._record(),
                                  indent=None, fsync=False)
            os.kill(os.getpid(), signal.SIGSTOP)

    def arm(self, step: int) -> None:
        """Mark the start of training step ``step``.

        Training step ``step`` begins: it must reach the next :meth:`arm` within the budget
        (the first step of a start gets 4x: lazy initialisation).
        """
        self.progress(f"step {step}")
        with self._lock:
            self._budget = self.timeout_s * (4 if self._steps_armed == 0 else 1)
            self._steps_armed += 1
            self._bounded_at = time.monotonic()

    def disarm(self, stage: str = "") -> None:
        """Work with no budget follows (validation, a checkpoint, the end of training)."""
        with self._lock:
            if stage:
                self.stage = stage
            self._since, self._unbounded, self._bounded_at = time.time(), True, None

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """A wait on the other ranks (a collective): it must end within the budget.

        Inside an armed training step the step's budget keeps running.
        """
        with self._lock:
            saved = (self.stage, self._bounded_at, self._budget, self._unbounded)
            self.stage = f"{what} ({saved[0]})" if saved[1] is None else saved[0]
            if self._bounded_at is None:
                self._bounded_at, self._budget = time.monotonic(), self.timeout_s
        try:
            yield
        finally:
            with self._lock:
                self.stage, self._bounded_at, self._budget, self._unbounded = saved
                self._since = time.time()

    @contextlib.contextmanager
    def blocking(self, what: str) -> Iterator[None]:
        """Watch a wait inside a call that holds the GIL.

        A wait inside a call that holds the GIL while it waits (MPI's start-up and
        shutdown: mpi4py's ``MPI_Init``/``MPI_Finalize``), where the watchdog thread cannot
        run: a forked child keeps this rank's heartbeat and deadline until the call returns,
        and ends the job (SIGKILL of this rank, which mpirun turns into the end of the job)
        when the wait will not end.
        """
        if self.world_size <= 1 or not hasattr(os, "fork"):
            with self.waiting(what):
                yield
            return
        import warnings

        with self.waiting(what):
            r, w = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the child runs no locks
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child; its coverage is not collected
                try:
                    os.close(w)
                    self._guard(r)
                finally:
                    os._exit(0)
            os.close(r)
            try:
                yield
            finally:
                os.close(w)  # the child sees end-of-file and exits
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass

    def _guard(self, fd: int) -> None:
        """The forked child of :meth:`blocking`: heartbeat for the parent until ``fd`` closes."""
        import select

        self._lock = threading.Lock()  # the parent's may have been held by its thread
        self._thread = None
        parent = self._pid

        def abort() -> None:
            os.kill(parent, signal.SIGKILL)
            os._exit(STALL_EXIT)

        self._abort = abort
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        while True:
            self._heartbeat()
            if select.select([fd], [], [], self._tick())[0]:
                return
            bounded, budget = self._bounded_at, self._budget
            if bounded is not None and time.monotonic() - bounded > budget \
                    and self.culprits() is not None:
                _CALLBACKS.clear()  # GPU libraries are not fork-safe; the parent restores
                self._fire(time.monotonic() - bounded)
                return

    def __enter__(self) -> StallWatchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to undo: the watchdog lives as long as the process (see :meth:`close`)."""

    def start(self) -> StallWatchdog:
        """Start the heartbeat thread (idempotent; idle with one rank)."""
        if self.world_size <= 1 or self._thread is not None:
            return self
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.rank == 0:
                (self.dir / "stalled").unlink(missing_ok=True)
        except OSError as exc:
            log.warning("watchdog: %s: %s (stalled ranks will not be named)", self.dir, exc)
        self._heartbeat()
        self._thread = threading.Thread(target=self._run, name="stall-watchdog", daemon=True)
        self._thread.start()
        if self not in _ACTIVE:
            _ACTIVE.append(self)
        return self

    def guard_shutdown(self) -> None:
        """Watch MPI's shutdown (``MPI_Finalize`` waits on the other ranks) until :meth:`close`."""
        self._exit_guard = self.blocking("MPI shutdown")
        self._exit_guard.__enter__()

    def close(self) -> None:
        """Stop the thread and remove this rank's heartbeat (the process ends normally)."""
        guard, self._exit_guard = self._exit_guard, None
        if guard is not None:
            guard.__exit__(None, None, None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            if not self.fired:
                try:
                    (self.dir / f"rank-{self.rank}").unlink(missing_ok=True)
                    self.dir.rmdir()  # the last rank out removes the job's folder
                except OSError:
                    pass

    # --- watchdog thread -------------------------------------------------------------------
    def _record(self) -> dict[str, Any]:
        with self._lock:
            return {"rank": self.rank, "host": socket.gethostname(), "pid": self._pid,
                    "stage": self.stage, "time": time.time(), "since": self._since,
                    "waiting": self._bounded_at is not None, "unbounded": self._unbounded}

    def _heartbeat(self) -> None:
        try:  # a heartbeat a second: no fsync (a crash loses a heartbeat, never a file)
            write_json_atomic(self.dir / f"rank-{self.rank}", self._record(), indent=None,
                              fsync=False)
        except OSError:
            pass

    def _tick(self) -> float:
        return min(1.0, self.timeout_s / 4)

    def _run(self) -> None:
        while not self._stop.wait(self._tick()):
            self._heartbeat()
            with self._lock:
                bounded, budget = self._bounded_at, self._budget
            if bounded is None or time.monotonic() - bounded <= budget:
                continue
            if self.culprits() is None:  # a live rank is still working
                continue
            self._fire(time.monotonic() - bounded)
            return

    def _records(self) -> list[dict[str, Any]]:
        out = []
        for r in range(self.world_size):
            try:
                rec = json.loads((self.dir / f"rank-{r}").read_text())
            except (OSError, ValueError):
                rec = {"rank": r, "time": 0.0}
            out.append(rec)
        return out

    def stalled_ranks(self, now: float | None = None) -> list[dict[str, Any]]:
        """Return the other ranks whose process is not running.

        Other ranks whose heartbeat is missing or older than 3 s (half the budget when
        that is longer, so that a busy machine's late heartbeat is not a stall): their
        process is not running.
        """
        now = time.time() if now is None else now
        stale_s = max(3.0, 3 * self._tick(), self.timeout_s / 2)
        return [rec for rec in self._records()
                if rec.get("rank") != self.rank and now - float(rec.get("time", 0.0)) > stale_s]

    def culprits(self, now: float | None = None) -> list[dict[str, Any]] | None:
        """Return the ranks that keep this rank waiting, or None.

        Why this rank's wait will not end: the stopped ranks; else the live ranks stuck
        outside a wait for :data:`BUSY_FACTOR` budgets; else ``[]`` when every rank waits (a
        hung collective). None while a live rank is still working.
        """
        now = time.time() if now is None else now
        stalled = self.stalled_ranks(now)
        if stalled:
            return stalled
        busy = [rec for rec in self._records()
                if not rec.get("waiting") and rec.get("rank") != self.rank]
        if not busy:
            return []
        stuck = [rec for rec in busy if not rec.get("unbounded") and
                 now - float(rec.get("since", now)) > BUSY_FACTOR * self.timeout_s]
        return stuck or None

    def describe(self, waited_s: float) -> str:
        """The one line a stalled job ends with."""
        culprits = self.culprits() or []
        if culprits:
            who = ", ".join(f"rank {r['rank']}"
                            + (f" on {r['host']} (pid {r['pid']}, last in {r['stage']})"
                               if "host" in r else " (no heartbeat seen: not started, or on "
                               f"another node without a shared ${PROGRESS_DIR_ENV})")
                            for r in culprits)
        else:
            who = "another rank (all processes alive: a hung GPU or collective?)"
        hint = f"; {self.hint}" if self.hint else ""
        return (f"harness: error: {who} stopped responding: rank {self.rank} on "
                f"{socket.gethostname()} waited {waited_s:.0f} s in {self.stage} "
                f"(train.collective_timeout_s / ${TIMEOUT_ENV} {self.timeout_s:g}); ending "
                f"the job{hint}")

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


def start(rank: int, world_size: int, multi_node: bool = False) -> StallWatchdog:
    """Make this process's watchdog (once) and return it.

    Its thread starts with :meth:`StallWatchdog.start` once MPI is up, MPI's start-up being
    watched by :meth:`StallWatchdog.blocking`. The budget comes from
    ``$HARNESS_COLLECTIVE_TIMEOUT_S`` or :data:`DEFAULT_TIMEOUT_S` until a job sets it with
    :meth:`~StallWatchdog.configure`.
    """
    if _ACTIVE:
        return _ACTIVE[0]
    wd = StallWatchdog(timeout_from_env(), rank, world_size, multi_node=multi_node)
    _ACTIVE.append(wd)
    return wd


def current() -> StallWatchdog:
    """This process's watchdog.

    The job's communicator starts it, so call :func:`harness.cluster.distributed.get_comm`
    first, as every workload does; without one, an idle watchdog that watches nothing.
    """
    if not _ACTIVE:  # no communicator yet, or one made before reset(): one that watches nothing
        _ACTIVE.append(StallWatchdog(timeout_from_env(), 0, 1))
    return _ACTIVE[0]


def progress(stage: str) -> None:
    """Shorthand for ``current().progress(stage)`` (a batch done; no-op work on one rank)."""
    if _ACTIVE:
        _ACTIVE[0].progress(stage)
