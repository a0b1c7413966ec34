"""A run's MLPerf-style logs (``harness report RUN --mlperf-out DIR``).

Reads the run's cluster power series (:mod:`power.cluster_series`, the one series the run
summary and the report use: each node's total power on UTC, over the governor's windows from
``start`` to ``restore``) and ``summary.json`` (images), and writes them with
:func:`power.mlperf.write_mlperf_logs`: ``result_<i>.txt`` and ``power/result_<i>/node_<n>.txt``
for the ``i``-th run. The measured interval is exactly the series' window (first window's
start to last window's end), and every ``power_reading`` is a point of that series (the
window's edges included), so MLPerf's energy covers what the summary and the report show. Needs
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
    cs = pd.series if pd is not None else None
    if pd is None or cs is None or not cs.segments:
        raise UserError(f"{run_dir}: no power samples (power/node*/gpu_power.csv): run with "
                        "power.enabled: true")
    if not cs.utc:
        raise UserError(f"{run_dir}: power samples without wall-clock time (unix_s); recorded "
                        "by an older harness")
    hosts = {n.name: n.host or n.name for n in pd.nodes}
    series = []
    for name in cs.nodes:
        ts = [t for seg in cs.segments if name in seg.node_w for t in seg.unix_s]
        ws = [w for seg in cs.segments if name in seg.node_w for w in seg.node_w[name]]
        if ts:
            series.append(NodePowerSeries(host=hosts.get(name, name), unix_s=ts, watts=ws))
    start, stop = cs.segments[0].start_unix_s, cs.segments[-1].end_unix_s
    figures = pd.figures
    if not platform:
        names = {str(s.get("name")) for n in pd.nodes for s in n.sensors if s.get("name")}
        gpus = sum(len(n.gpu_t_s) for n in pd.nodes)
        platform = f"{gpus}x{names.pop() if len(names) == 1 else 'GPU'}"
    switch = ((run.job or {}).get("power") or {}).get("switch_w", 0.0)
    facts = RunFacts(org=org, platform=platform, run_start_unix_s=start, run_stop_unix_s=stop,
                     images=int(figures.get("images") or 0),
                     images_per_s=float(figures.get("images_per_s") or 0.0))
    try:
        return write_mlperf_logs(out_dir, facts, series, result=f"result_{index}",
                                 switch_w=float(switch) if isinstance(switch, (int, float))
                                 else 0.0)
    except LibraryMissingError as exc:
        raise UserError(f"--mlperf-out: {exc}") from None
