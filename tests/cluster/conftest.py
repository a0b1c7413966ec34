"""The ``slurm_cluster`` fixture: a real multi-node Slurm on this machine (``scripts/testcluster``).

Each node is a network namespace with its own address and hostname, running its own slurmd;
slurmctld runs outside on the bridge. The fixture reuses a test bed that is already up (``make
testcluster-up``) and otherwise brings one up and takes it down at the end of the session. It
skips, saying why, where it cannot (not root, Slurm not installable or not starting); with
``HARNESS_REQUIRE_SLURM=1`` (CI) it fails instead.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "testcluster"
# Installing the packages on a fresh machine takes about a minute; allow for a slow mirror.
UP_TIMEOUT_S = 900
# States after which a job never runs again (``scontrol show job`` JobState).
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT",
})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs the real multi-node Slurm test bed (scripts/testcluster, root)")


def _required() -> bool:
    return os.environ.get("HARNESS_REQUIRE_SLURM") == "1"


def _unavailable(reason: str) -> None:
    """Skip, or fail where CI requires the test bed."""
    if _required():
        pytest.fail(f"HARNESS_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


class JobResult(NamedTuple):
    """How a job ended: ``state`` (COMPLETED, FAILED, ...), exit code and signal of its script."""

    state: str
    exit_code: int
    signal: int
    reason: str


def parse_env(text: str) -> dict[str, str]:
    """The variables of ``export NAME=VALUE`` lines (shell-quoted values)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


def _fields(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol -o show`` record (values without spaces)."""
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", text))


@dataclass
class SlurmCluster:
    """A running test bed: its client environment, node names and helpers."""

    env: dict[str, str]
    nodes: list[str]
    state_dir: Path
    started_here: bool
    up_output: str = ""
    _addresses: dict[str, str] = field(default_factory=dict)

    def full_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(extra or {})
        return env

    def run(self, cmd: Sequence[str], timeout: float = 60,
            env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
        """Run a Slurm client (or any command) with the test bed's environment, text output."""
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=self.full_env(env), cwd=kwargs.pop("cwd", ROOT), check=False,
                              **kwargs)

    def script(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``scripts/testcluster ARGS``."""
        return self.run([str(SCRIPT), *args], timeout=timeout)

    def srun(self, *args: str, timeout: float = 120,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``srun ARGS`` as a job of its own; on timeout the job is cancelled, the error raised."""
        name = f"fsr-test-{uuid.uuid4().hex[:8]}"
        try:
            return self.run(["srun", f"--job-name={name}", *args], timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            self.run(["scancel", f"--name={name}"], timeout=30)
            raise

    def salloc(self, *args: str, timeout: float = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``salloc ARGS`` (options, then the command to run in the allocation)."""
        name = f"fsr-test-{uuid.uuid4().hex[:8]}"
        try:
            return self.run(["salloc", f"--job-name={name}", *args], timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            self.run(["scancel", f"--name={name}"], timeout=30)
            raise

    def sbatch(self, script_path: str | Path, *args: str) -> str:
        """Submit a batch script (``sbatch ARGS SCRIPT``); returns the job id."""
        proc = self.run(["sbatch", "--parsable", *args, str(script_path)], timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job(self, jobid: str) -> dict[str, str] | None:
        """The job's ``scontrol show job`` fields, or None once Slurm has forgotten it."""
        proc = self.run(["scontrol", "-o", "show", "job", jobid], timeout=15)
        if proc.returncode != 0:
            return None
        return _fields(proc.stdout)

    def wait(self, jobid: str, timeout: float = 120, poll: float = 0.3) -> JobResult:
        """Wait until the job ends (no accounting here: polls ``scontrol``, which keeps a finished
        job for MinJobAge s). On timeout the job is cancelled and TimeoutError raised."""
        deadline = time.monotonic() + timeout
        last = "unknown"
        while time.monotonic() < deadline:
            fields = self.job(jobid)
            if fields is None:
                raise RuntimeError(f"job {jobid} unknown to scontrol (last state {last})")
            last = fields.get("JobState", "unknown")
            if last in FINAL_STATES:
                code, _, sig = fields.get("ExitCode", "0:0").partition(":")
                return JobResult(last, int(code), int(sig or 0), fields.get("Reason", ""))
            time.sleep(poll)
        self.run(["scancel", jobid], timeout=30)
        raise TimeoutError(f"job {jobid} still {last} after {timeout} s (cancelled)")

    def node_states(self) -> dict[str, str]:
        """``sinfo`` state of each node (``idle``, ``down*``, ``idle*`` = not responding, ...)."""
        proc = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], timeout=15)
        return dict(line.split() for line in proc.stdout.splitlines() if line.strip())

    def address(self, node: str) -> str:
        """The node's address (NodeAddr)."""
        if node not in self._addresses:
            proc = self.run(["scontrol", "-o", "show", "node", node], timeout=15)
            self._addresses[node] = _fields(proc.stdout)["NodeAddr"]
        return self._addresses[node]

    def netns(self, node: str) -> str:
        """Path of the node's network namespace (for ``nsenter --net=``)."""
        return f"/run/netns/fsr-{node}"

    def wait_nodes_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.node_states()
            if set(states) >= set(self.nodes) and all(states[n] == "idle" for n in self.nodes):
                return
            time.sleep(0.3)
        raise TimeoutError(f"nodes not idle after {timeout} s: {self.node_states()}")


def _bring_up() -> SlurmCluster:
    if os.geteuid() != 0:
        _unavailable("the Slurm test bed needs root (network namespaces, munged, /etc/hosts)")
    if not SCRIPT.is_file():
        _unavailable(f"{SCRIPT} missing")
    status = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True, timeout=60,
                            check=False)
    started = status.returncode != 0
    output = status.stdout
    if started:
        try:
            up = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True,
                                timeout=UP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=120, check=False)
            _unavailable(f"scripts/testcluster up took more than {UP_TIMEOUT_S} s")
        output = up.stdout + up.stderr
        if up.returncode != 0:
            subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=120, check=False)
            _unavailable(f"scripts/testcluster up failed (exit {up.returncode}): "
                         f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}")
    envp = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, timeout=30,
                          check=False)
    env = parse_env(envp.stdout)
    return SlurmCluster(env=env, nodes=env.get("FSR_TESTCLUSTER_NODES", "").split(),
                        state_dir=Path(env["FSR_TESTCLUSTER_DIR"]), started_here=started,
                        up_output=output)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running multi-node Slurm (see the module docstring); down at the end if started here."""
    cluster = _bring_up()
    print(f"\n[slurm_cluster] {'brought up' if cluster.started_here else 'reusing'}: "
          f"{' '.join(cluster.nodes)}\n{cluster.up_output.strip()}")
    try:
        yield cluster
    finally:
        if cluster.started_here:
            subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=120, check=False)


@pytest.fixture
def cluster_python() -> str:
    """The interpreter the nodes run (they share this machine's file system)."""
    return sys.executable
