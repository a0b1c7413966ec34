"""Helpers of the harness's Slurm tests: write a job's sbatch script with ``harness launch``,
submit it to the test bed, follow its run folder, and read what the ranks left there.

Everything is read from what a job really wrote (run folder, Slurm's log, ``scontrol``); the
generated scripts are never compared with expected text.
"""
from __future__ import annotations

import bisect
import csv
import json
import os
import re
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.conftest import FINAL_STATES, ROOT, JobResult, SlurmCluster

#: The smoke job on two nodes, one rank each, started by srun with PMIx (the PyPI Open MPI
#: speaks PMIx only). Tests add their own ``--set`` overrides.
TWO_NODES = ("launch.nodes=2", "launch.ranks_per_node=1", "launch.launcher=srun",
             "launch.srun_mpi=pmix", "train.precision=fp32")

#: A line the harness ends with when it stops on an error (``harness: error: ...``, or
#: ``harness.train: error: ...`` from ``python -m harness.train``).
ERROR_LINE = re.compile(r"^harness(?:\.\w+)*: error: .*$", re.MULTILINE)
#: Progress lines of the plain log (``step 12/150 (8%) | ...``).
PROGRESS = re.compile(r"\bstep (\d+)/(\d+) \(")


def launch(cluster: SlurmCluster, out_dir: Path, *sets: str, job: str = "jobs/smoke.yaml",
           args: str = "", base: Sequence[str] = TWO_NODES, workload: str = "") -> Path:
    """``harness launch JOB --scheduler slurm [--workload W] --set ... -o OUT_DIR/job.sbatch``,
    run from the checkout (the script's working directory) in this process, with runs under
    ``OUT_DIR/runs``. Returns the script's path."""
    from harness.cli import main

    script = out_dir / "job.sbatch"
    argv = ["launch", job, "--scheduler", "slurm", "-o", str(script),
            "--set", f"launch.run_dir={out_dir / 'runs'}"]
    if workload:
        argv += ["--workload", workload]
    for s in (*base, *sets):
        argv += ["--set", s]
    if args:
        argv += ["--args", args]
    cwd = os.getcwd()
    os.chdir(ROOT)  # the script's --chdir: the checkout every node sees
    try:
        rc = main(argv)
    finally:
        os.chdir(cwd)
    assert rc == 0, f"harness launch failed ({rc}): {argv}"
    assert script.is_file()
    return script


@dataclass
class Job:
    """A submitted job of the test bed and the folder its runs go to."""

    cluster: SlurmCluster
    jobid: str
    runs: Path
    submitted: float = field(default_factory=time.monotonic)

    # --- Slurm's view ----------------------------------------------------------------------
    def fields(self) -> dict[str, str]:
        return self.cluster.job(self.jobid) or {}

    def state(self) -> str:
        return self.fields().get("JobState", "unknown")

    def wait(self, timeout: float = 180) -> JobResult:
        return self.cluster.wait(self.jobid, timeout=timeout)

    def log(self) -> str:
        """Slurm's ``--output`` file (``slurm-<jobid>.out`` in the run parent)."""
        path = self.runs / f"slurm-{self.jobid}.out"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""

    def cancel(self) -> None:
        self.cluster.run(["scancel", self.jobid], timeout=30)

    # --- the run folder --------------------------------------------------------------------
    def run_dirs(self) -> list[Path]:
        """Run folders of this job's parent (the symlink ``<name>-latest`` left out)."""
        if not self.runs.is_dir():
            return []
        return sorted(p for p in self.runs.iterdir()
                      if p.is_dir() and not p.is_symlink() and (p / "manifest.json").exists())

    def run_dir(self) -> Path:
        """The one run folder this job wrote."""
        dirs = self.run_dirs()
        assert len(dirs) == 1, f"expected one run folder in {self.runs}, found {dirs}"
        return dirs[0]

    def train_records(self) -> list[dict[str, Any]]:
        """The ``kind: train`` records of every run folder, in file order."""
        out: list[dict[str, Any]] = []
        for d in self.run_dirs():
            out += [r for r in read_jsonl(d / "metrics.jsonl") if r.get("kind") == "train"]
        return out

    def last_step(self) -> int:
        recs = self.train_records()
        return int(recs[-1]["step"]) if recs else 0

    def wait_for(self, what: str, cond: Callable[[], bool], timeout: float = 120,
                 poll: float = 0.2) -> float:
        """Poll ``cond`` until true; fails when the job ends first or ``timeout`` passes.
        Returns the time of success (``time.monotonic()``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return time.monotonic()
            if self.state() in FINAL_STATES and not cond():
                raise AssertionError(f"job {self.jobid} ended ({self.state()}) before {what}:"
                                     f"\n{self.log()[-3000:]}")
            time.sleep(poll)
        self.cancel()
        raise AssertionError(f"job {self.jobid}: no {what} after {timeout} s (cancelled):\n"
                             f"{self.log()[-3000:]}")

    def wait_for_step(self, step: int, timeout: float = 120) -> float:
        return self.wait_for(f"step {step}", lambda: self.last_step() >= step, timeout)


#: Ids of the jobs the tests submitted (none may be left in the queue at the end).
SUBMITTED: list[str] = []


def submit(cluster: SlurmCluster, script: Path, runs: Path, *sbatch_args: str) -> Job:
    """``sbatch [ARGS] SCRIPT`` with the test bed's environment (this checkout first on
    ``PYTHONPATH``: Slurm passes the submitter's environment to the job)."""
    t0 = time.monotonic()
    jobid = cluster.sbatch(script, *sbatch_args)
    SUBMITTED.append(jobid)
    return Job(cluster, jobid, runs, submitted=t0)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the numbered checkpoints in ``run_dir/checkpoints``."""
    return sorted(int(m.group(1)) for p in (run_dir / "checkpoints").glob("ckpt-*.pt")
                  if (m := re.fullmatch(r"ckpt-(\d+)\.pt", p.name)))


def load_checkpoint(path: Path) -> dict[str, Any]:
    from harness.outputs.checkpoints import load

    return load(path)


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()


def rank_hosts(run_dir: Path) -> dict[int, str]:
    """Rank -> node name, from the run's manifest (what each rank said about itself)."""
    manifest = read_json(run_dir / "manifest.json")
    return {int(r["rank"]): str(r["host"]) for r in manifest["ranks"]}


def segments(records: list[dict[str, Any]]) -> list[list[int]]:
    """The steps of ``metrics.jsonl`` split at each start of the run: where the step does not
    grow, or where ``time_s`` (seconds since this start's first step) goes back (a resume
    from the last step's own checkpoint continues the step numbers)."""
    out: list[list[int]] = []
    last_t = None
    for r in records:
        step, t = int(r["step"]), float(r.get("time_s", 0.0))
        if not out or step <= out[-1][-1] or (last_t is not None and t < last_t):
            out.append([])
        out[-1].append(step)
        last_t = t
    return out


# --- power samples ---------------------------------------------------------------------------
@dataclass
class NodeSeries:
    """One node's total power (its GPUs + CPU/overhead) at each of its sampler's instants."""

    folder: str
    unix_s: list[float]
    watts: list[float]
    limits_w: list[float]
    """Every GPU's power limit at every sample (for 'the budget binds')."""

    def at(self, t: float) -> float:
        """Linear interpolation between this node's samples (held at its ends)."""
        i = bisect.bisect_right(self.unix_s, t)
        if i == 0:
            return self.watts[0]
        if i == len(self.unix_s):
            return self.watts[-1]
        t0, t1 = self.unix_s[i - 1], self.unix_s[i]
        w0, w1 = self.watts[i - 1], self.watts[i]
        return w0 if t1 <= t0 else w0 + (w1 - w0) * (t - t0) / (t1 - t0)


def node_series(node_dir: Path) -> NodeSeries:
    """``gpu_power.csv`` (every GPU's row of a tick) + ``node_power.csv`` (the same tick)."""
    gpu_w: dict[float, float] = defaultdict(float)
    limits: list[float] = []
    with (node_dir / "gpu_power.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            gpu_w[float(row["unix_s"])] += float(row["power_w"])
            limits.append(float(row["limit_w"]))
    other: dict[float, float] = {}
    with (node_dir / "node_power.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            other[float(row["unix_s"])] = float(row["other_w"])
    times = sorted(gpu_w)
    missing = [t for t in times if t not in other]
    assert not missing, f"{node_dir}: GPU samples without a node sample at {missing[:3]}"
    return NodeSeries(node_dir.name, times, [gpu_w[t] + other[t] for t in times], limits)


@dataclass
class ClusterSeries:
    unix_s: list[float]
    watts: list[float]
    nodes: list[NodeSeries]

    def crossings(self, budget_w: float) -> list[tuple[float, float, float]]:
        """(start, duration, peak) of each stretch of consecutive samples above the budget;
        it ends at the first sample back at or below it (or at the last sample)."""
        out: list[tuple[float, float, float]] = []
        start = peak = None
        for t, w in zip(self.unix_s, self.watts, strict=True):
            if w > budget_w:
                if start is None:
                    start, peak = t, w
                peak = max(peak, w)
            elif start is not None:
                out.append((start, t - start, peak))
                start = None
        if start is not None:
            out.append((start, self.unix_s[-1] - start, peak))
        return out


def governed_window(power_dir: Path) -> tuple[float, float]:
    """(start, end) in Unix s while every node's governor held its caps: from the last
    node's ``start`` event to the first node's ``restore`` (one segment: a run never
    resumed). Outside it the GPUs ran at their own limits (before the first cap, after the
    limits were given back at the end), which no governor answers for."""
    starts, restores = [], []
    for d in sorted(power_dir.glob("node*")):
        events = [e for f in sorted(d.glob("governor_events*.jsonl")) for e in read_jsonl(f)]
        starts.append(min(e["wall_time"] for e in events if e.get("event") == "start"))
        restores.append(min(e["wall_time"] for e in events if e.get("event") == "restore"))
    return max(starts), min(restores)


def cluster_series(power_dir: Path, window: tuple[float, float] | None = None,
                   shared_w: float = 0.0) -> ClusterSeries:
    """The cluster's power: the sum over nodes of each node's total (interpolated between
    its own samples) plus ``shared_w`` (the switch), at every sample instant (UTC) of any
    node within ``window`` (default: the span every node sampled), the window's edges
    included."""
    nodes = [node_series(d) for d in sorted(power_dir.iterdir())
             if d.is_dir() and d.name.startswith("node")]
    assert nodes, f"{power_dir}: no node folders"
    start, end = window or (max(n.unix_s[0] for n in nodes), min(n.unix_s[-1] for n in nodes))
    assert start < end, (start, end)
    times = sorted({start, end} | {t for n in nodes for t in n.unix_s if start < t < end})
    return ClusterSeries(times, [sum(n.at(t) for n in nodes) + shared_w for t in times], nodes)


# --- processes of a node ---------------------------------------------------------------------
def job_processes(netns: str, jobid: str, ranks_only: bool = False) -> list[int]:
    """PIDs in the node's network namespace that belong to the job: its slurmstepd processes
    (``slurmstepd: [JOBID.STEP]``) and every process with ``SLURM_JOB_ID=JOBID`` in its
    environment (the batch shell, srun, the ranks); with ``ranks_only``, the harness's ranks
    (``python -m harness.train``) alone."""
    proc = subprocess.run(["ip", "netns", "pids", Path(netns).name], capture_output=True,
                          text=True, timeout=15, check=False)
    pids = []
    for word in proc.stdout.split():
        pid = int(word)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        mine = f"SLURM_JOB_ID={jobid}".encode() in environ
        if ranks_only:  # not srun, whose command line names the module too
            mine = mine and comm.startswith("python") and " -m harness.train " in f" {cmdline} "
        elif re.match(rf"slurmstepd: \[{jobid}[.\]]", cmdline):
            mine = True
        if mine:
            pids.append(pid)
    return pids
