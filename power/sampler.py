"""Background power sampler: one per node, writes a time series to the run directory.

Run it on local rank 0 only (one sampler per node sees every GPU of the node, so GPUs are never
counted twice)::

    if local_rank == 0:
        with PowerSampler(gpus, run_dir, node=NodePower(overhead_w=60)) as sampler:
            train()
        print(sampler.energy_j())

Files (``fmt="csv"``): ``gpu_power.csv`` with ``time_s,gpu,power_w,energy_j,limit_w,util,clock,
energy_avg_w,mono_s,unix_s,utc`` (the replay format of :mod:`power.replay`) and
``node_power.csv`` with ``time_s,cpu_w,dram_w,overhead_w,meter_w,other_w,energy_j,estimated,
source,meter_age_s,mono_s,unix_s,utc`` (``meter_age_s``: how old the external meter's latest value
was, blank without one; a meter runs in its own thread and never delays a sample); with
``fmt="jsonl"``, one ``power_samples.jsonl`` record per tick.
``time_s`` is monotonic time since the sampler started; ``mono_s`` the clock's monotonic time
and ``unix_s``/``utc`` the wall-clock UTC of the same instant (to line samples up with a meter's
log). ``power_w`` is what the GPU's power sensor reports (instant or a 1-s average, see
``power_sensors.json``); ``energy_avg_w`` is the exact average power since the previous sample
from the energy counter (blank without one). GPU energy comes from the energy counter where
the GPU has one, else from the trapezoid rule; files are flushed every ``flush_interval_s`` so
a crash loses little.

``power_sensors.json`` (written when the sampler opens) records, per GPU, which power reading
it uses (:class:`power.gpu.PowerSensor`) and whether it has an energy counter.
"""
from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from fileio.atomic import dumps_json, write_json_atomic
from power.clock import Clock, MonotonicClock, time_fields
from power.errors import PowerError
from power.gpu import GPU
from power.node import NodePower

logger = logging.getLogger(__name__)

TIME_COLUMNS = ("mono_s", "unix_s", "utc")
GPU_COLUMNS = ("time_s", "gpu", "power_w", "energy_j", "limit_w", "util", "clock",
               "energy_avg_w") + TIME_COLUMNS
NODE_COLUMNS = ("time_s", "cpu_w", "dram_w", "overhead_w", "meter_w", "other_w", "energy_j",
                "estimated", "source", "meter_age_s") + TIME_COLUMNS


class PowerSampler:
    """Samples GPU and node power at ``rate_hz`` in a background thread.

    Args:
        gpus: The node's GPUs.
        run_dir: Directory for the output files (created if needed).
        node: Source of non-GPU node power, if any.
        rate_hz: Sampling rate (at least 10 Hz is recommended for energy accuracy).
        clock: Time source for timestamps (the background thread always waits in real time;
            tests drive :meth:`sample_once` with a simulated clock instead).
        flush_interval_s: How often files are flushed to the OS.
        fmt: ``"csv"`` or ``"jsonl"``.
    """

    def __init__(self, gpus: Sequence[GPU], run_dir: str | os.PathLike[str], *,
                 node: NodePower | None = None, rate_hz: float = 10.0, clock: Clock | None = None,
                 flush_interval_s: float = 1.0, fmt: str = "csv") -> None:
        if not rate_hz > 0:
            raise ValueError(f"PowerSampler: rate_hz must be > 0, got {rate_hz}")
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"PowerSampler: fmt must be 'csv' or 'jsonl', got {fmt!r}")
        if flush_interval_s < 0:
            raise ValueError(f"PowerSampler: flush_interval_s must be >= 0, got {flush_interval_s}")
        self.gpus = list(gpus)
        self.run_dir = Path(run_dir)
        self.node = node
        self.period_s = 1.0 / rate_hz
        self.fmt = fmt
        self.flush_interval_s = flush_interval_s
        self._clock = clock or MonotonicClock()
        self._t0: float | None = None
        self.started_unix_s: float | None = None
        """Wall-clock UTC (Unix s) of the first sample's opening, None before :meth:`open`."""
        self._last_flush = 0.0
        self._counter_start: list[int | None] = [None] * len(self.gpus)
        self._gpu_energy_j = [0.0] * len(self.gpus)
        self._last_gpu_w: list[float | None] = [None] * len(self.gpus)
        self._last_counter_j: list[float | None] = [None] * len(self.gpus)
        self._node_energy_j = 0.0
        self._last_node_w: float | None = None
        self._last_t: float | None = None
        self._files: list[Any] = []
        self._gpu_writer: Any = None
        self._node_writer: Any = None
        self._jsonl: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self.samples = 0
        self.errors = 0
        self.node_estimated = False
        self._owns_meter = False

    # --- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Open the output files and record the energy counters' start (idempotent)."""
        if self._t0 is not None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.fmt == "csv":
            # Append, never truncate: a resumed run keeps the samples of its earlier segments.
            gpu_fh, gpu_new = _open_append(self.run_dir / "gpu_power.csv")
            node_fh, node_new = _open_append(self.run_dir / "node_power.csv")
            self._files = [gpu_fh, node_fh]
            self._gpu_writer = csv.writer(gpu_fh)
            if gpu_new:
                self._gpu_writer.writerow(GPU_COLUMNS)
            self._node_writer = csv.writer(node_fh)
            if node_new:
                self._node_writer.writerow(NODE_COLUMNS)
        else:
            self._jsonl, _ = _open_append(self.run_dir / "power_samples.jsonl")
            self._files = [self._jsonl]
        for i, g in enumerate(self.gpus):
            try:
                if g.supports_energy_counter():
                    self._counter_start[i] = g.get_total_energy_consumption_mj()
            except PowerError as exc:
                logger.warning("GPU %d: no energy counter (%s); integrating power", i, exc)
        start = time_fields(self._clock)
        self._t0 = start["mono_s"]
        self.started_unix_s = start["unix_s"]
        self._write_sensors(start)
        self._last_flush = self._t0
        if self.node is not None:
            self._owns_meter = self.node.start(self.period_s)

    def sensors(self) -> list[dict[str, Any]]:
        """Describe each GPU's power sensor.

        Per GPU: its power sensor (:class:`~power.gpu.PowerSensor` fields), name, UUID and
        whether it has an energy counter.
        """
        out = []
        for i, g in enumerate(self.gpus):
            entry: dict[str, Any] = {"gpu": i}
            try:
                entry.update(name=g.get_name(), uuid=g.get_uuid())
                entry.update(g.get_power_sensor().to_json())
            except PowerError as exc:
                entry.update(kind="unknown", window_s=None, source="", note=str(exc))
            entry["energy_counter"] = self._counter_start[i] is not None
            out.append(entry)
        return out

    def _write_sensors(self, start: dict[str, Any]) -> None:
        doc = {"started": start, "rate_hz": 1.0 / self.period_s, "sensors": self.sensors()}
        write_json_atomic(self.run_dir / "power_sensors.json", doc, indent=1)

    def start(self) -> None:
        """Open the files and start the background thread."""
        if self._thread is not None:
            raise RuntimeError("PowerSampler already started")
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, take a last sample and close the files (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10 * self.period_s + 5)
        if self._files:
            if self._t0 is not None:
                self._safe_sample()
            for fh in self._files:
                fh.close()
            self._files = []
        if self._owns_meter and self.node is not None:
            self._owns_meter = False
            self.node.close()

    def __enter__(self) -> PowerSampler:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- sampling --------------------------------------------------------------------------
    def sample_once(self) -> dict[str, Any]:
        """Read every GPU and the node once, append to the files and return the record."""
        self.open()
        with self._mutex:
            stamp = time_fields(self._clock)
            now = stamp["mono_s"]
            t = now - self._t0
            dt = 0.0 if self._last_t is None else now - self._last_t
            gpu_rows = []
            gpu_sum = 0.0
            for i, g in enumerate(self.gpus):
                power = g.get_power_usage_mw() / 1000.0
                gpu_sum += power
                energy_avg_w = None
                start_mj = self._counter_start[i]
                last_w = self._last_gpu_w[i]
                if start_mj is not None:
                    self._gpu_energy_j[i] = (g.get_total_energy_consumption_mj()
                                             - start_mj) / 1000.0
                    prev_j = self._last_counter_j[i]
                    if prev_j is not None and dt > 0:
                        energy_avg_w = (self._gpu_energy_j[i] - prev_j) / dt
                    self._last_counter_j[i] = self._gpu_energy_j[i]
                elif last_w is not None:
                    self._gpu_energy_j[i] += 0.5 * (last_w + power) * dt
                self._last_gpu_w[i] = power
                gpu_rows.append({"gpu": i, "power_w": power, "energy_j": self._gpu_energy_j[i],
                                 "limit_w": g.get_power_limit_mw() / 1000.0,
                                 "util": g.get_utilization_percent(),
                                 "clock": g.get_gpu_clock_mhz(), "energy_avg_w": energy_avg_w})
            node_row = None
            if self.node is not None:
                r = self.node.read(gpu_sum)
                if self._last_node_w is not None:
                    self._node_energy_j += 0.5 * (self._last_node_w + r.other_w) * dt
                self._last_node_w = r.other_w
                self.node_estimated = self.node_estimated or r.estimated
                node_row = {"cpu_w": r.cpu_w, "dram_w": r.dram_w, "overhead_w": r.overhead_w,
                            "meter_w": r.meter_w, "other_w": r.other_w,
                            "energy_j": self._node_energy_j, "estimated": r.estimated,
                            "source": r.source, "meter_age_s": r.meter_age_s}
            self._last_t = now
            self._write(t, stamp, gpu_rows, node_row)
            self.samples += 1
            if now - self._last_flush >= self.flush_interval_s:
                for fh in self._files:
                    fh.flush()
                self._last_flush = now
            return {"time_s": t, **stamp, "gpus": gpu_rows, "node": node_row}

    def _write(self, t: float, stamp: dict[str, Any], gpu_rows: list[dict[str, Any]],
               node_row: dict[str, Any] | None) -> None:
        if self.fmt == "jsonl":
            self._jsonl.write(dumps_json({"time_s": t, **stamp, "gpus": gpu_rows,
                                          "node": node_row}, indent=None) + "\n")
            return
        times = [f"{stamp['mono_s']:.4f}", f"{stamp['unix_s']:.4f}", stamp["utc"]]
        for row in gpu_rows:
            avg = row["energy_avg_w"]
            self._gpu_writer.writerow([f"{t:.4f}", row["gpu"], f"{row['power_w']:.3f}",
                                       f"{row['energy_j']:.3f}", f"{row['limit_w']:.3f}",
                                       row["util"], row["clock"],
                                       "" if avg is None else f"{avg:.3f}", *times])
        if node_row is not None:
            self._node_writer.writerow(
                [f"{t:.4f}"] + ["" if node_row[k] is None else
                                (f"{node_row[k]:.3f}" if isinstance(node_row[k], float)
                                 else node_row[k]) for k in NODE_COLUMNS[1:-3]] + times)

    def _safe_sample(self) -> None:
        try:
            self.sample_once()
        except (PowerError, OSError) as exc:
            self.errors += 1
            if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                logger.warning("power sample failed (%d times): %s", self.errors, exc)

    def _loop(self) -> None:
        next_t = self._clock.now()
        while not self._stop.is_set():
            self._safe_sample()
            next_t += self.period_s
            delay = next_t - self._clock.now()
            if delay < -self.period_s:  # fell behind (e.g. suspended): do not burst
                next_t = self._clock.now()
            self._stop.wait(max(0.0, delay))

    def energy_j(self) -> dict[str, Any]:
        """Return energy since start: ``{"gpus": [...], "node": J, "total": J, "estimated"}``."""
        total = sum(self._gpu_energy_j) + self._node_energy_j
        return {"gpus": list(self._gpu_energy_j), "node": self._node_energy_j, "total": total,
                "estimated": self.node_estimated}


def _open_append(path: Path):  # noqa: ANN202 - (text file, is_new)
    """Open ``path`` for appending; True when it was empty (so a header belongs first)."""
    fh = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed by the sampler
    return fh, fh.tell() == 0
