"""Which MPI is this: the launcher's (``mpirun --version``) and the library mpi4py loads.

Open MPI, MPICH and Intel MPI all install an ``mpirun``/``mpiexec``, and the one mpi4py wheel
loads whichever ``libmpi`` it finds first (the venv's ``lib/``, then the system's, or
``MPI4PY_LIBMPI``). A launcher of one MPI starting ranks whose mpi4py loaded another gives
worlds of one: every rank is rank 0. This module names both, so that ``harness doctor`` can
refuse the pair, ``harness launch`` can build the right line (``launch.launcher: auto``), and
the manifest and report can say which MPI ran.

The parsers are pure functions of the tools' own words (tested on their real output); the
probes run the tools in subprocesses (never ``import mpi4py.MPI`` here: that initialises MPI in
the calling process).
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from harness.config import LaunchConfig

log = logging.getLogger(__name__)

Family = Literal["openmpi", "mpich", "intelmpi", "unknown"]

#: Human names of the families, for one-line messages.
FAMILY_NAMES: dict[str, str] = {"openmpi": "Open MPI", "mpich": "MPICH",
                                "intelmpi": "Intel MPI", "unknown": "an unknown MPI"}

#: ``launch.launcher`` for each family (``auto`` resolves to these).
LAUNCHER_OF: dict[str, str] = {"openmpi": "openmpi", "mpich": "mpich", "intelmpi": "intelmpi"}

#: Seconds a probe (``--version``, the mpi4py subprocess) may take.
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class MPIImpl:
    """One MPI implementation as a tool or library names itself."""

    family: Family
    """``openmpi``, ``mpich``, ``intelmpi`` or ``unknown``."""
    version: str
    """Its version (``5.0.11``, ``5.0.2``, ``2021.19``), empty when not said."""

    def __str__(self) -> str:
        name = FAMILY_NAMES[self.family]
        return f"{name} {self.version}" if self.version else name


UNKNOWN = MPIImpl("unknown", "")


def _match(pattern: str, text: str) -> str:
    m = re.search(pattern, text, re.IGNORECASE | re.MULTILINE)
    return m.group(1) if m else ""


def parse_launcher_version(text: str) -> MPIImpl:
    """The MPI of a launcher from its ``--version`` output.

    * Open MPI: ``mpirun (Open MPI) 5.0.11``;
    * Intel MPI: ``Intel(R) MPI Library for Linux* OS, Version 2021.19 Build ...``;
    * MPICH (Hydra): ``HYDRA build details:`` then ``Version: 5.0.2``.
    """
    if re.search(r"\(Open MPI\)|Open MPI|OpenRTE|PRRTE", text):
        return MPIImpl("openmpi", _match(r"(?:Open MPI|OpenRTE|PRRTE)\)?\s+v?(\d[\w.]*)", text))
    if re.search(r"Intel\(R\) MPI|Intel MPI", text):
        return MPIImpl("intelmpi", _match(r"Version\s+(\d[\w.]*)", text))
    if re.search(r"HYDRA build details|MPICH", text):
        return MPIImpl("mpich", _match(r"^\s*Version:\s+(\d[\w.]*)", text))
    return UNKNOWN


def parse_library_version(text: str) -> MPIImpl:
    """The MPI of a library from ``MPI_Get_library_version`` (``MPI.Get_library_version()``).

    * Open MPI: ``Open MPI v5.0.11, package: ...``;
    * Intel MPI: ``Intel(R) MPI Library 2021.19 for Linux* OS``;
    * MPICH: ``MPICH Version:      5.0.2``.
    """
    if text.startswith("Open MPI") or "Open MPI v" in text:
        return MPIImpl("openmpi", _match(r"Open MPI v(\d[\w.]*)", text))
    if re.search(r"Intel\(R\) MPI|Intel MPI", text):
        return MPIImpl("intelmpi", _match(r"MPI Library\s+(\d[\w.]*)", text))
    if "MPICH" in text:
        return MPIImpl("mpich", _match(r"MPICH Version:\s+(\d[\w.]*)", text))
    return UNKNOWN


def launcher_env(path: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run the launcher at ``path`` in: its own folder first on ``PATH``.

    Intel MPI's ``mpirun`` is a script that runs ``mpiexec.hydra`` from ``PATH``, and Hydra
    finds its proxies there too: a venv's launcher run without the venv activated needs it.
    """
    env = dict(os.environ if env is None else env)
    folder = os.path.dirname(os.path.abspath(path)) if os.sep in path else ""
    dirs = env.get("PATH", "").split(os.pathsep)
    if folder and folder not in dirs:
        env["PATH"] = os.pathsep.join([folder, *[d for d in dirs if d]])
    return env


def launcher_mpi(path: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[MPIImpl, str]:
    """(the MPI of the launcher at ``path``, the first line it printed or why it said nothing).

    Runs ``PATH --version``; an executable that does not answer is :data:`UNKNOWN`.
    """
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=timeout_s, check=False, env=launcher_env(path))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return UNKNOWN, f"{path} --version: {exc}"
    text = (out.stdout or "") + (out.stderr or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return parse_launcher_version(text), lines[0] if lines else "no output"


#: Run in a subprocess: the library mpi4py loads, without initialising MPI in the caller.
#: Open MPI's singleton init needs the root flags, as under ``make``.
_LIBRARY_PROBE = ("import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; "
                  "print(MPI.Get_library_version().strip())")


def library_mpi(python: str | None = None,
                timeout_s: float = PROBE_TIMEOUT_S) -> tuple[MPIImpl, str]:
    """(the MPI library mpi4py loads in ``python``, its first line or why none).

    ``MPI_Get_library_version`` may be called before ``MPI_Init``, so MPI is not started.
    :data:`UNKNOWN` with the reason when mpi4py is missing or loads no library.
    """
    try:
        out = subprocess.run([python or sys.executable, "-c", _LIBRARY_PROBE],
                             capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return UNKNOWN, f"mpi4py probe: {exc}"
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return UNKNOWN, lines[-1].strip() if lines else f"exit status {out.returncode}"
    text = out.stdout.replace("\x00", "").strip()
    first = text.splitlines()[0].strip() if text else ""
    return parse_library_version(text), first


def running_library_version() -> str:
    """``MPI.Get_library_version()``'s first line in this process, or empty.

    Read only when mpi4py's MPI is already imported (a rank of an MPI launch): this never
    initialises MPI.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return ""
    try:
        text = str(mpi.Get_library_version()).replace("\x00", "").strip()
    except Exception:  # noqa: BLE001 - a foreign library's failure means "not known"
        return ""
    return " ".join(text.splitlines()[0].split()) if text else ""


def same_family(launcher: MPIImpl, library: MPIImpl) -> bool:
    """True unless both are known and differ.

    Intel MPI's Hydra and MPICH's are not interchangeable either: each starts ranks for its own
    library.
    """
    return "unknown" in (launcher.family, library.family) or launcher.family == library.family


def mismatch_message(launcher_path: str, launcher: MPIImpl, library: MPIImpl) -> str:
    """One line for a launcher and a library from different MPIs."""
    return (f"{launcher_path} is {launcher} but mpi4py loads {library}: every rank would be "
            f"rank 0 of 1; put the launcher of {FAMILY_NAMES[library.family]} first on PATH "
            "(or set launch.mpirun), or install mpi4py's MPI to match (make setup MPI=...)")


#: The launchers that start MPI ranks with an MPI implementation's own mpirun/mpiexec.
MPI_LAUNCHERS = ("auto", "openmpi", "mpich", "intelmpi")


def choose_launcher(configured: str, launcher_path: str, launcher: MPIImpl,
                    library: MPIImpl) -> str:
    """``launch.launcher`` for a run through ``launcher_path`` (pure).

    ``auto`` becomes the family of the launcher, else of the library (``openmpi`` when neither
    is known, as before ``auto``); anything that is not an MPI launcher stays as it is.

    Raises:
        UserError: the launcher and the library are of different MPIs, or ``configured``
            names another MPI than the launcher is.
    """
    from fileio.user_error import UserError

    if configured not in MPI_LAUNCHERS:
        return configured
    if not same_family(launcher, library):
        raise UserError(mismatch_message(launcher_path, launcher, library))
    found = launcher.family if launcher.family != "unknown" else library.family
    if configured == "auto":
        return LAUNCHER_OF.get(found, "openmpi")
    if launcher.family != "unknown" and configured != launcher.family:
        raise UserError(f"launch.launcher: {configured} but {launcher_path} is {launcher}: set "
                        f"launch.launcher: auto (or {launcher.family}), or launch.mpirun to "
                        f"the launcher of {FAMILY_NAMES[configured]}")
    return configured


def resolve_launch(launch: LaunchConfig, executable: str | None,
                   python: str | None = None) -> LaunchConfig:
    """``launch`` with ``launcher: auto`` resolved from the MPI found here.

    The MPI of ``executable`` (the mpirun/mpiexec to run; None when srun starts the ranks)
    and of the library mpi4py loads in ``python`` (default: this one); see
    :func:`choose_launcher`, whose one-line refusals this raises.
    """
    import dataclasses

    if launch.launcher not in MPI_LAUNCHERS:
        return launch
    runnable = executable is not None and os.access(executable, os.X_OK)
    found = launcher_mpi(executable)[0] if runnable and executable else UNKNOWN
    python = python or sys.executable
    library = library_mpi(python)[0] if os.access(python, os.X_OK) else UNKNOWN
    chosen = choose_launcher(launch.launcher, executable or launch.mpirun, found, library)
    if chosen == launch.launcher:
        return launch
    # one of LaunchConfig.launcher's names (choose_launcher returns them or `configured`)
    return dataclasses.replace(launch, launcher=cast(Any, chosen))
