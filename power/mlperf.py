"""MLPerf-style logs of a run, written with MLCommons' own ``mlperf-logging`` package.

The HPC/ML benchmarking world reads power in MLPerf's form: ``:::MLLOG {json}`` lines, a result
log with the run's start, stop and throughput, and per node a power log of
``power_reading`` events between ``power_measurement_start`` and ``power_measurement_stop``
(plus ``sw_<i>.txt`` with ``interconnect_power_est`` for the switch), which MLPerf's
``result_summarizer`` integrates into energy. :func:`write_mlperf_logs` writes that layout::

    OUT/result_0.txt                   submission_*, init, run_start/stop, throughput
    OUT/power/result_0/node_<i>.txt    power_reading (W, metadata.host) per sample
    OUT/power/result_0/sw_0.txt        interconnect_power_est (when a switch is counted)

:func:`check_result_log` and :func:`check_power_log` run the package's compliance checker
(its rule engine, :class:`mlperf_logging.compliance_checker.mlp_compliance.ComplianceChecker`)
with rule files for this benchmark (``mlperf_facesr.yaml``, ``mlperf_power.yaml`` beside this
module). Why not MLPerf's own training rules: FaceSR is not an MLPerf benchmark; the official
``training_*/common.yaml`` accepts only MLPerf benchmark names in ``submission_benchmark`` and
requires time-to-train records (``eval_accuracy``, ``eval_samples``, epoch/block structure) that
a throughput-under-a-power-budget run does not have. The line format, the keys, the power
layout and the energy computation are MLPerf's.

``mlperf-logging`` is optional (``pip install .[mlperf]``); importing this module does not need
it, calling the functions does.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from power.errors import LibraryMissingError

RULES_DIR = Path(__file__).resolve().parent
RESULT_RULES = RULES_DIR / "mlperf_facesr.yaml"
POWER_RULES = RULES_DIR / "mlperf_power.yaml"
BENCHMARK = "facesr"


def _mllog() -> tuple[ModuleType, ModuleType]:
    try:
        return (importlib.import_module("mlperf_logging.mllog.mllog"),
                importlib.import_module("mlperf_logging.mllog.constants"))
    except ImportError as exc:
        raise LibraryMissingError("mlperf-logging is not installed: pip install mlperf-logging "
                                  "(or pip install .[mlperf])") from exc


@dataclass(frozen=True, kw_only=True, slots=True)
class NodePowerSeries:
    """One node's whole power (GPUs + the rest) on wall-clock time."""

    host: str
    """Node name (``metadata.host`` of every reading)."""
    unix_s: Sequence[float]
    """Sample times, Unix seconds UTC, ascending."""
    watts: Sequence[float]
    """Node power at each time. Units: W."""

    def __post_init__(self) -> None:
        if len(self.unix_s) != len(self.watts) or not self.unix_s:
            raise ValueError(f"NodePowerSeries {self.host}: need equally many (>= 1) times "
                             "and readings")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFacts:
    """What the result log says about the run."""

    org: str
    """``submission_org`` (the team)."""
    platform: str
    """``submission_platform`` (the system, e.g. ``4xH100-SXM5``)."""
    division: str = "open"
    status: str = "research"
    """``submission_status``: onprem, cloud, research, preview or available."""
    run_start_unix_s: float
    run_stop_unix_s: float
    images: int
    """Images processed (``train_samples`` and the block's ``samples_count``)."""
    images_per_s: float
    """Throughput (``tracked_stats.throughput``)."""
    success: bool = True

    def __post_init__(self) -> None:
        if not self.run_stop_unix_s >= self.run_start_unix_s:
            raise ValueError("RunFacts: run_stop_unix_s must not be before run_start_unix_s")
        if self.division not in ("open", "closed"):
            raise ValueError(f"RunFacts.division must be open or closed, got {self.division!r}")


class _FileLog:
    """An ``MLLogger`` writing to one file through its own ``logging.Logger`` (no globals)."""

    def __init__(self, path: Path, mllog: ModuleType) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"power.mlperf.{id(self)}.{path.name}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)
        self.log = mllog.MLLogger(logger=self._logger, root_dir=str(RULES_DIR.parent))

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


def _ms(unix_s: float) -> int:
    return int(round(unix_s * 1000))


def write_mlperf_logs(out_dir: str | os.PathLike[str], facts: RunFacts,
                      nodes: Sequence[NodePowerSeries], *, switch_w: float = 0.0,
                      conversion_eff: float = 1.0, result: str = "result_0") -> list[Path]:
    """Write the result log and the per-node power logs (layout in the module docstring).

    Args:
        out_dir: Folder to write into (created).
        facts: Run identity, times and throughput.
        nodes: Every node's power on wall-clock time.
        switch_w: Power of the shared switch (``sw_0.txt``; 0 writes none). Units: W.
        conversion_eff: AC/DC conversion efficiency MLPerf multiplies readings by (1 for
            readings at the wall).
        result: Name of the result (``result_0``).

    Returns:
        The files written.

    Raises:
        LibraryMissingError: ``mlperf-logging`` is not installed.
    """
    mllog, c = _mllog()
    out = Path(out_dir)
    written: list[Path] = []
    res = _FileLog(out / f"{result}.txt", mllog)
    log = res.log
    t0, t1 = _ms(facts.run_start_unix_s), _ms(facts.run_stop_unix_s)
    try:
        for key, value in ((c.SUBMISSION_ORG, facts.org), (c.SUBMISSION_PLATFORM, facts.platform),
                           (c.SUBMISSION_DIVISION, facts.division),
                           (c.SUBMISSION_STATUS, facts.status),
                           (c.SUBMISSION_BENCHMARK, BENCHMARK)):
            log.event(key=key, value=value, time_ms=t0)
        log.event(key=c.CACHE_CLEAR, value=True, time_ms=t0)
        log.start(key=c.INIT_START, time_ms=t0)
        log.end(key=c.INIT_STOP, time_ms=t0)
        log.event(key=c.TRAIN_SAMPLES, value=int(facts.images), time_ms=t0)
        log.start(key=c.RUN_START, time_ms=t0)
        log.start(key=c.BLOCK_START, time_ms=t0, metadata={c.SAMPLES_COUNT: 0})
        log.event(key="tracked_stats", value={"throughput": float(facts.images_per_s)},
                  time_ms=t1, metadata={"step": int(facts.images)})
        log.end(key=c.BLOCK_STOP, time_ms=t1, metadata={c.SAMPLES_COUNT: int(facts.images)})
        log.end(key=c.RUN_STOP, time_ms=t1,
                metadata={c.STATUS: c.SUCCESS if facts.success else c.ABORTED})
    finally:
        res.close()
    written.append(out / f"{result}.txt")
    power_dir = out / "power" / result
    for i, node in enumerate(nodes):
        f = _FileLog(power_dir / f"node_{i}.txt", mllog)
        try:
            f.log.start(key=c.POWER_MEASUREMENT_START, time_ms=t0)
            f.log.event(key=c.CONVERTION_EFF, value=float(conversion_eff), time_ms=t0,
                        metadata={"measurement_type": "AC"})
            for t, w in zip(node.unix_s, node.watts, strict=True):
                if facts.run_start_unix_s <= t <= facts.run_stop_unix_s:
                    f.log.event(key=c.POWER_READING, value=float(w), time_ms=_ms(t),
                                metadata={"host": node.host})
            f.log.end(key=c.POWER_MEASUREMENT_STOP, time_ms=t1)
        finally:
            f.close()
        written.append(power_dir / f"node_{i}.txt")
    if switch_w > 0:
        f = _FileLog(power_dir / "sw_0.txt", mllog)
        try:
            f.log.start(key=c.POWER_MEASUREMENT_START, time_ms=t0)
            f.log.event(key=c.CONVERTION_EFF, value=float(conversion_eff), time_ms=t0)
            f.log.event(key=c.INTERCONNECT_POWER_EST, value=float(switch_w), time_ms=t0,
                        metadata={"host": "sw_0"})
            f.log.end(key=c.POWER_MEASUREMENT_STOP, time_ms=t1)
        finally:
            f.close()
        written.append(power_dir / "sw_0.txt")
    return written


def _check(path: str | os.PathLike[str], rules: Path | str, ruleset: str) -> tuple[bool, str]:
    try:
        mc = importlib.import_module("mlperf_logging.compliance_checker.mlp_compliance")
    except ImportError as exc:
        raise LibraryMissingError("mlperf-logging is not installed: pip install "
                                  "mlperf-logging") from exc
    checker = mc.make_checker("training", ruleset, quiet=False, werror=False)
    mc.enqueued_configs.clear()  # the package keeps a module-level queue
    # An absolute rules path is used as is (os.path.join keeps it); relative ones are the
    # package's own (e.g. "training_6.1.0/common.yaml").
    try:
        valid = checker.check_file(str(path), str(rules))
    except FileNotFoundError as exc:
        # The official rules enqueue "<division>_<benchmark>.yaml" for the benchmark named in
        # the log; for a benchmark MLPerf does not define, that file does not exist.
        valid = False
        checker.put_message(f"Could not load rules {exc.filename} (no such file)")
    messages = list(checker.warnings.values()) + list(checker.overwritable.values()) + list(
        checker.not_overwritable)
    mc.enqueued_configs.clear()
    return bool(valid), "\n".join(messages)


def check_result_log(path: str | os.PathLike[str], *, rules: Path | str = RESULT_RULES,
                     ruleset: str = "6.1.0") -> tuple[bool, str]:
    """Run mlperf-logging's compliance checker on a result log; returns (valid, messages)."""
    return _check(path, rules, ruleset)


def check_power_log(path: str | os.PathLike[str], *, ruleset: str = "6.1.0"
                    ) -> tuple[bool, str]:
    """Run the compliance checker with the power rules on a ``node_<i>``/``sw_<i>`` log."""
    return _check(path, POWER_RULES, ruleset)


def mlperf_energy_j(out_dir: str | os.PathLike[str], *, result: str = "result_0",
                    ruleset: str = "6.1.0") -> float:
    """Energy of the run as MLPerf's ``result_summarizer`` computes it from the power logs.

    Uses the summarizer's own functions (private in the package, so this may need adjusting
    when it changes). Units: J.
    """
    try:
        rs = importlib.import_module("mlperf_logging.result_summarizer.result_summarizer")
        parser = importlib.import_module("mlperf_logging.compliance_checker.mlp_parser")
    except ImportError as exc:
        raise LibraryMissingError("mlperf-logging is not installed") from exc
    out = Path(out_dir)
    lines, _errors = parser.parse_file(str(out / f"{result}.txt"), ruleset=ruleset)
    stamps = {ln.key: ln.timestamp for ln in lines if ln.key in ("run_start", "run_stop")}
    time_to_train_ms = stamps["run_stop"] - stamps["run_start"]
    total = 0.0
    power_dir = out / "power" / result
    for f in sorted(power_dir.glob("node_*.txt")):
        node_lines, _ = parser.parse_file(str(f), ruleset=ruleset)
        total += rs._compute_power_node(node_lines, time_to_train_ms)
    for f in sorted(power_dir.glob("sw_*.txt")):
        sw_lines, _ = parser.parse_file(str(f), ruleset=ruleset)
        total += rs._compute_power_sw(sw_lines, time_to_train_ms)
    return float(total)


def summarize(figures: dict[str, Any]) -> str:
    """One line for the console: ``MLPerf logs: N node logs, E kJ``."""
    return (f"MLPerf logs: {figures.get('nodes', 0)} node log(s), "
            f"{figures.get('energy_j', 0.0) / 1000:.1f} kJ by MLPerf's summarizer")
