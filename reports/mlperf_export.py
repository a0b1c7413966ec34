"""A run's MLPerf-style logs (``harness report RUN --mlperf-out DIR``).

Reads the run's power folder (each node's total power on wall-clock time, from the samples'
``unix_s``) and ``summary.json`` (images and images/s), and writes them with
:func:`power.mlperf.write_mlperf_logs`: ``result_<i>.txt`` and ``power/result_<i>/node_<n>.txt``
for the ``i``-th run. The measured interval is where every node has samples. Needs
``mlperf-logging`` (``pip install .[mlperf]``); never imports torch or pynvml.
"""
from __future__ import annotations

from pathlib import Path

from fileio.user_error import UserError
from reports.rundata import load_run


def export_mlperf(run_dir: str | Path, out_dir: str | Path, *, index: int = 0,
                  org: str = "facesr", platform: str = "") -> list[Path]:
    """Write the MLPerf result and power logs of one run's training phase.

    Args:
        run_dir: The run directory.
        out_dir: Where the logs go (created).
        index: The run's number (``result_<index>``).
        org: ``submission_org``.
        platform: ``submission_platform``; empty = ``<nodes>x<GPU name>`` from the run.

    Returns:
        The files written.

    Raises:
        UserError: The run has no power samples with wall-clock time, or mlperf-logging is
            missing.
    """
    from power.errors import LibraryMissingError
    from power.mlperf import NodePowerSeries, RunFacts, write_mlperf_logs

    run = load_run(run_dir)
    pd = run.train_power
    if pd is None or not any(n.gpu_t_s for n in pd.nodes):
        raise UserError(f"{run_dir}: no power samples (power/node*/gpu_power.csv): run with "
                        "power.enabled: true")
    series = []
    for n in pd.nodes:
        ts, ws = n.total_series()
        if not ts:
            continue
        if n.unix_offset_s is None:
            raise UserError(f"{run_dir}: {n.name}: power samples without wall-clock time "
                            "(unix_s); recorded by an older harness")
        series.append(NodePowerSeries(host=n.host or n.name, unix_s=[t + n.unix_offset_s for t in ts],
                                      watts=ws))
    start = max(s.unix_s[0] for s in series)
    stop = min(s.unix_s[-1] for s in series)
    if stop < start:
        raise UserError(f"{run_dir}: the nodes' power samples do not overlap in time")
    power = pd.summary or {}
    if not platform:
        names = {str(s.get("name")) for n in pd.nodes for s in n.sensors if s.get("name")}
        gpus = sum(len(n.gpu_t_s) for n in pd.nodes)
        platform = f"{gpus}x{names.pop() if len(names) == 1 else 'GPU'}"
    switch = ((run.job or {}).get("power") or {}).get("switch_w", 0.0)
    facts = RunFacts(org=org, platform=platform, run_start_unix_s=start, run_stop_unix_s=stop,
                     images=int(power.get("images") or 0),
                     images_per_s=float(power.get("images_per_s") or 0.0))
    try:
        return write_mlperf_logs(out_dir, facts, series, result=f"result_{index}",
                                 switch_w=float(switch) if isinstance(switch, (int, float))
                                 else 0.0)
    except LibraryMissingError as exc:
        raise UserError(f"--mlperf-out: {exc}") from None
