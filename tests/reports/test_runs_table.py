"""``harness runs`` and the report's comparison table: one row per run, from real run folders.

The unit tests read summaries in the shapes the harness writes; the module's real runs are a
short training run and a ``harness launch --plan`` (one rank under mpirun) with a plan made by a
real ``harness power-sweep`` (simulated GPUs).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reports.runs_table import (
    find_run_dirs,
    format_table,
    read_run,
    run_row,
    sort_rows,
)
from tests.conftest import ROOT, run_harness

SMOKE = "jobs/smoke.yaml"


def _run(parent: Path, name: str, summary: dict | None, metrics: list[dict] | None = None
         ) -> Path:
    d = parent / name
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}", encoding="utf-8")
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if metrics is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return d


def _summary(steps: int, best: float, ips: float, *, power: bool = True, **extra) -> dict:
    p = {"enabled": power, "avg_cluster_w": 2400.0, "peak_cluster_w": 2950.5,
         "j_per_image": 12.5, "crossings": 2,
         "wall": {"source": "simulated PDU", "peak_w": 3010.0, "crossings": 1}}
    return {"steps": steps, "target_steps": 100, "best_val_is": best, "images_per_s": ips,
            "stopped_by": None, "power": p, **extra}


def _metrics(last: int, val_is: float) -> list[dict]:
    return [{"kind": "train", "step": s, "loss": {"total": 0.1}} for s in range(10, last + 1, 10)
            ] + [{"kind": "val", "step": last, "val_is": val_is, "best_is": val_is}]


def test_row_reads_summary_figures_and_status() -> None:
    target = {"is": 0.7, "step": 40, "time_s": 12.0, "energy_j": 3000.0, "reached": True}
    plan = {"source": "plan.json", "predicted_images_per_s": 1240.0, "predicted_cluster_w": 1205.0,
            "achieved_images_per_s": 9.5, "images_per_s_ratio": 9.5 / 1240.0,
            "achieved_cluster_w": 2400.0, "cluster_w_ratio": 2400.0 / 1205.0}
    row = run_row("a", _summary(100, 0.71, 9.5, target=target, plan=plan))
    assert (row.status, row.steps, row.best_is, row.images_per_s) == ("done", 100, 0.71, 9.5)
    assert (row.avg_w, row.peak_w, row.j_per_image, row.crossings, row.wall_crossings) == (
        2400.0, 2950.5, 12.5, 2, 1)
    assert (row.target_is, row.target_step, row.target_time_s, row.target_energy_j) == (
        0.7, 40, 12.0, 3000.0)
    assert (row.plan_images_per_s, row.plan_w) == (1240.0, 1205.0)
    assert row.images_per_s_vs_plan == pytest.approx(0.00766, abs=1e-5)
    assert row.w_vs_plan == pytest.approx(1.9917, abs=1e-4)
    off = run_row("b", _summary(60, 0.6, 3.0, power=False, stopped_by="SIGTERM"))
    assert (off.status, off.avg_w, off.crossings, off.wall_crossings) == ("stopped", None, None,
                                                                          None)
    assert run_row("c", _summary(60, 0.6, 3.0)).status == "short"
    assert run_row("c", _summary(60, 0.6, 3.0, stopped_by="train.max_minutes (8)")
                   ).status == "out of time"
    assert run_row("c", _summary(40, 0.7, 3.0, target=target)).status == "at target"
    missed = run_row("d", _summary(100, 0.6, 3.0, target={"is": 0.9, "step": None,
                                                          "time_s": None, "energy_j": None,
                                                          "reached": False}))
    assert (missed.status, missed.target_is, missed.target_time_s) == ("done", 0.9, None)


def test_running_and_crashed_runs_show_their_status_and_logged_steps() -> None:
    logged = _metrics(30, 0.66)
    running = run_row("r", None, metrics=logged, alive=True,
                      manifest={"plan": {"predicted_images_per_s": 620.0}})
    assert (running.status, running.steps, running.best_is, running.images_per_s) == (
        "running", 30, 0.66, None)
    assert running.plan_images_per_s == 620.0  # from the manifest, before any summary
    crashed = run_row("c", None, metrics=logged)
    assert (crashed.status, crashed.steps, crashed.best_is) == ("crashed", 30, 0.66)
    # A resumed attempt that died after the summary of an earlier one: crashed, its own steps.
    resumed = run_row("x", _summary(20, 0.6, 3.0), metrics=logged)
    assert (resumed.status, resumed.steps, resumed.j_per_image) == ("crashed", 30, None)
    # A resumed run still training: running, though an earlier summary exists.
    assert run_row("y", _summary(20, 0.6, 3.0), metrics=logged, alive=True).status == "running"
    assert run_row("e", None).status == "crashed"


def test_find_and_sort_put_missing_figures_last(tmp_path) -> None:
    _run(tmp_path, "r1", _summary(100, 0.65, 9.0))
    _run(tmp_path, "r2", _summary(100, 0.72, 4.0))
    _run(tmp_path, "r3", None)
    (tmp_path / "r2-latest").symlink_to(tmp_path / "r2")
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "file.txt").write_text("x")
    dirs = find_run_dirs([tmp_path, tmp_path / "r1"])
    assert [d.name for d in dirs] == ["r1", "r2", "r3"]
    rows = [read_run(d) for d in dirs]
    assert [r.name for r in sort_rows(rows, "best_is", descending=True)] == ["r2", "r1", "r3"]
    assert [r.name for r in sort_rows(rows, "images_per_s")] == ["r2", "r1", "r3"]
    # The plain table leaves out the columns no run has (no target, no plan here).
    header = format_table(rows).splitlines()[0].split()
    assert header[:3] == ["name", "status", "steps"] and "wall_crossings" in header
    assert "target_time_s" not in header and "plan_w" not in header


def test_a_run_whose_writer_holds_its_lock_is_running(tmp_path) -> None:
    """A real process holding the run's lock (fileio.locks) makes it ``running``; once it has
    ended, the same folder is ``crashed``."""
    run = _run(tmp_path, "live", None, _metrics(20, 0.61))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fileio.locks import lock_folder; "
         f"lock_folder({str(run)!r}); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert (read_run(run).status, read_run(run).steps) == ("running", 20)
        proc = run_harness("runs", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[1].split()[:4] == ["live", "running", "20", "0.6100"]
    finally:
        holder.kill()
        holder.wait()
    assert (run / ".lock").read_text().startswith(f"pid {holder.pid} on {socket.gethostname()}")
    assert read_run(run).status == "crashed"


def test_cli_table_csv_json_and_user_errors(tmp_path) -> None:
    _run(tmp_path, "fast", _summary(100, 0.65, 9.0))
    _run(tmp_path, "good", _summary(100, 0.72, 4.0))
    _run(tmp_path, "torn", None)
    (tmp_path / "torn" / "summary.json").write_text('{"steps": 1', encoding="utf-8")
    proc = run_harness("runs", str(tmp_path), "--sort", "best_is", "--desc")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "status", "steps", "best_is"]
    assert [ln.split()[0] for ln in lines[1:]] == ["good", "fast", "torn"]
    assert lines[1].split()[1:5] == ["done", "100", "0.7200", "4.0"]
    assert lines[3].split()[:3] == ["torn", "crashed", "--"]
    proc = run_harness("runs", str(tmp_path), "--csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["name"] for r in rows] == ["fast", "good", "torn"]
    assert rows[0]["peak_w"] == "2950.5" and rows[0]["wall_crossings"] == "1"
    assert rows[2]["best_is"] == "" and "target_energy_j" in rows[0]
    proc = run_harness("runs", str(tmp_path / "good"), "--json")
    data = json.loads(proc.stdout)
    assert data[0]["name"] == "good" and data[0]["j_per_image"] == 12.5
    for bad, why in ((tmp_path / "nope", "no such folder"),
                     (tmp_path / "good" / "summary.json", "not a folder")):
        proc = run_harness("runs", str(bad))
        assert proc.returncode == 2 and proc.stderr.strip().endswith(
            f"{bad}: {why} (give run folders, or folders holding them)")
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    proc = run_harness("runs", str(tmp_path / "empty"))
    assert proc.returncode == 2 and "no run folders found" in proc.stderr
    proc = run_harness("runs", str(tmp_path), "--sort", "nonsense")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_on_a_terminal_a_rich_table_keeps_every_digit_of_a_wide_table(tmp_path) -> None:
    import pty

    target = {"is": 0.7, "step": 40, "time_s": 12.0, "energy_j": 3000.0}
    _run(tmp_path, "wide-run-with-a-long-name", _summary(100, 0.71, 9.5, target=target))
    master, slave = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "harness", "runs", str(tmp_path)],
                          stdout=slave, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="60"), timeout=60)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    text = out.decode()
    assert "\x1b[" in text  # rich's styling: a terminal, not a pipe
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\r", "")
    words = plain.split()
    for value in ("wide-run-with-a-long-name", "done", "0.7100", "2950", "12.50", "3000"):
        assert value in words, (value, plain)
    assert "…" not in plain


# --- real runs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A short training run, and a launch of the same job with a 1-GPU plan from a real sweep."""
    base = tmp_path_factory.mktemp("runs-table")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    power = ["--set", "power.enabled=true", "--set", "power.backend=simulated",
             "--set", "power.sim_pdu=true", "--set", "train.val_every=4",
             "--set", "eval.metrics=[is]"]
    sweep = run_harness("power-sweep", "--job", SMOKE, "--compute", "model", "--quiet",
                        "--plan-nodes", "1", "--plan-gpus-per-node", "1",
                        "--out", str(base / "sweep"), *power, env=env)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    runs = base / "runs"
    train = run_harness("train", "--job", SMOKE, "--run-dir", str(runs), "--quiet", *power,
                        env=env)
    assert train.returncode == 0, train.stdout + train.stderr
    launch = run_harness("launch", SMOKE, "--plan", str(base / "sweep" / "plan.json"),
                         "--set", f"launch.run_dir={runs}", "--args=--quiet", *power,
                         env=env)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    dirs = sorted(p for p in runs.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(dirs) == 2
    summaries = [json.loads((d / "summary.json").read_text()) for d in dirs]
    planned = next(i for i, s in enumerate(summaries) if "plan" in s)
    return {"runs": runs, "plain": dirs[1 - planned], "planned": dirs[planned],
            "plan": json.loads((base / "sweep" / "plan.json").read_text()),
            "launch_stderr": launch.stderr}


@pytest.mark.mpi
@pytest.mark.slow
def test_a_launch_with_a_plan_records_predicted_beside_achieved(real_runs) -> None:
    plan, run = real_runs["plan"], real_runs["planned"]
    assert isinstance(plan, dict) and isinstance(run, Path)
    # smoke.yaml has 2 ranks of 1 thread; the plan uses 1 GPU: said in one line, not a dry run.
    said = [ln for ln in str(real_runs["launch_stderr"]).splitlines() if "--plan" in ln]
    assert said == ["harness: --plan changes the job: ranks 2 -> 1 (nodes 1 -> 1, ranks per "
                    "node 2 -> 1)"]
    summary = json.loads((run / "summary.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert summary["world_size"] == 1
    source = str((Path(str(real_runs["runs"])).parent / "sweep" / "plan.json").resolve())
    assert manifest["plan"] == {"source": source,
                                "predicted_images_per_s": plan["predicted_images_per_s"],
                                "predicted_cluster_w": plan["predicted_cluster_w"]}
    p = summary["plan"]
    assert p["achieved_images_per_s"] == summary["images_per_s"]
    assert p["achieved_cluster_w"] == summary["power"]["avg_cluster_w"] > 0
    assert p["images_per_s_ratio"] == pytest.approx(
        summary["images_per_s"] / plan["predicted_images_per_s"], rel=1e-12)
    assert p["cluster_w_ratio"] == pytest.approx(
        summary["power"]["avg_cluster_w"] / plan["predicted_cluster_w"], rel=1e-12)
    log = (run / "train.log").read_text()
    assert f"plan {source}: images/s: predicted {plan['predicted_images_per_s']:.1f}, " \
           f"achieved {summary['images_per_s']:.1f} (x{p['images_per_s_ratio']:.3g})" in log


@pytest.mark.mpi
@pytest.mark.slow
def test_runs_and_the_report_show_the_real_runs_figures(real_runs, tmp_path) -> None:
    runs = Path(str(real_runs["runs"]))
    proc = run_harness("runs", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for run in (real_runs["plain"], real_runs["planned"]):
        assert isinstance(run, Path)
        s = json.loads((run / "summary.json").read_text())
        row = rows[run.name]
        assert (row["status"], row["steps"], row["best_is"], row["images_per_s"]) == (
            "done", s["steps"], s["best_val_is"], s["images_per_s"])
        assert (row["avg_w"], row["peak_w"], row["j_per_image"], row["crossings"]) == (
            s["power"]["avg_cluster_w"], s["power"]["peak_cluster_w"],
            s["power"]["j_per_image"], s["power"]["crossings"])
        assert row["wall_crossings"] == s["power"]["wall"]["crossings"]
        assert s["best_val_is"] is not None and s["power"]["j_per_image"] > 0
    planned = rows[Path(str(real_runs["planned"])).name]
    plain = rows[Path(str(real_runs["plain"])).name]
    assert planned["images_per_s_vs_plan"] is not None and plain["plan_w"] is None
    # The report's comparison table: the same rows, the same cells.
    from reports.render import write_report

    html_text = write_report([real_runs["plain"], real_runs["planned"]],
                             tmp_path / "r.html").read_text()
    table = html_text.split('id="comparison"')[1].split("</section>")[0]
    headers = re.findall(r"<th[^>]*>(.*?)</th>", table.split("<tbody>")[0])
    body = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.DOTALL)
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>.*?</td>", body[1])]
    by_header = dict(zip(headers, cells, strict=True))
    assert by_header["status"] == "done" and by_header["steps"] == str(planned["steps"])
    assert by_header["best val IS"] == f"{planned['best_is']:.4f}"
    assert by_header["train J/img"] == f"{planned['j_per_image']:.2f}"
    assert by_header["img/s ÷ plan"] == f"{planned['images_per_s_vs_plan']:.3g}"
    assert by_header["plan W"] == f"{planned['plan_w']:.0f}"
    # Each run's own summary: the plan's figures beside the achieved ones (none without one).
    one = html_text.split('id="r2-summary"')[1].split("</section>")[0]
    assert (f"{planned['plan_images_per_s']:.1f} → {planned['images_per_s']:.1f} "
            f"(×{planned['images_per_s_vs_plan']:.3g})") in one
    assert (f"{planned['plan_w']:.0f} → {planned['avg_w']:.0f} "
            f"(×{planned['w_vs_plan']:.3g})") in one
    assert "planned → achieved" not in html_text.split('id="r1-summary"')[1].split(
        "</section>")[0]
