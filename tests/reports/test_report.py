"""``harness report``: HTML from run directories (synthetic ones, and one real smoke run).

The browser tests (marker ``browser``) open the report in headless Chromium over the DevTools
protocol (:mod:`tests.reports.browser`): no network request, no console error, every section
present, and a screenshot saved (its path is printed). They skip when Chromium is missing, except
under CI (``CI`` set), where a missing Chromium fails.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fileio.user_error import UserError
from harness.commands import report as report_cli
from reports.images import bicubic_upscale, find_image, pick_samples
from reports.markup import el, esc, fmt_num, render
from reports.plots import thin
from reports.render import render_report, section_ids, write_report
from reports.rundata import load_run, load_sweep
from tests.conftest import ROOT, run_harness
from tests.reports.browser import find_chromium, inspect_page

# --- synthetic run directories ---------------------------------------------------------------


def _png(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _write_power(pdir: Path, nodes: list[str], gpus: int, budget_w: float, base_w: float) -> None:
    for n, node in enumerate(nodes):
        d = pdir / node
        d.mkdir(parents=True)
        lines = ["time_s,gpu,power_w,energy_j,limit_w,util,clock"]
        node_lines = ["time_s,cpu_w,dram_w,overhead_w,meter_w,other_w,energy_j,estimated,source"]
        for k in range(11):
            t = 0.1 * k
            for g in range(gpus):
                lines.append(f"{t:.4f},{g},{base_w + 10 * g + n:.3f},{t * base_w:.3f},"
                             f"400.000,100,1410")
            node_lines.append(f"{t:.4f},100.000,,100.000,,200.000,{t * 200:.3f},True,estimate")
        (d / "gpu_power.csv").write_text("\n".join(lines) + "\n")
        (d / "node_power.csv").write_text("\n".join(node_lines) + "\n")
        events = [
            {"event": "start", "wall_time": 1.0, "rank": 0, "budget_w": budget_w,
             "headroom_w": 150.0, "mode": "power_limit", "gpus": gpus},
            {"event": "caps", "wall_time": 1.1, "rank": 0, "t_s": 0.2, "reason": "overshoot",
             "messages": [f"cluster over target on {node}"], "cluster_w": budget_w + 50,
             "limits_w": [300.0] * gpus, "clocks_mhz": None},
            {"event": "crossing", "wall_time": 1.2, "rank": 0, "start_s": 0.2,
             "duration_s": 0.1, "peak_w": budget_w + 50},
            {"event": "restore", "wall_time": 2.0, "rank": 0, "reason": "exit",
             "limits_mw": [400000] * gpus, "errors": []},
        ]
        (d / "governor_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events)
                                                 + '{"event": "trunc')  # truncated last line
        (d / "governor_summary.json").write_text(json.dumps({"budget_w": budget_w,
                                                             "headroom_w": 150.0}))


def make_run(parent: Path, dirname: str = "demo-20260101-000000", *, job: str = "demo",
             is_mean: float = 0.8, n_images: int = 9, names: list[str] | None = None,
             nodes: tuple[str, ...] = ("node000", "node001"), host: str = "node-a") -> Path:
    """A complete run directory in the formats of harness.train / harness.infer / power."""
    run = parent / dirname
    run.mkdir(parents=True)
    budget = 3000.0
    power = {"enabled": True, "backend": "simulated", "simulated": True, "gpus_per_node": 2,
             "budget_w": budget, "headroom_w": 150.0, "avg_cluster_w": 2700.0,
             "peak_cluster_w": 3050.0, "energy_j": 27000.0, "crossings": 1,
             "crossing_time_s": 0.1, "fail_safe_steps": 0, "images": 1000,
             "images_per_s": 100.0, "images_per_s_per_w": 100.0 / 2700.0,
             "j_per_image": 27.0, "cpu_power_estimated": True, "dir": str(run / "power")}
    summary = {"run_dir": str(run), "job": job, "steps": 30, "world_size": 2, "backend": "ddp",
               "device": "cpu", "images": 240, "train_time_s": 12.5, "images_per_s": 19.2,
               "best_val_is": is_mean - 0.01, "best_step": 20, "final_val_is": is_mean - 0.02,
               "final_val_psnr": 26.5, "checkpoint": str(run / "checkpoints/ckpt-000030.pt"),
               "best_checkpoint": str(run / "checkpoints/best.pt"), "stopped_early": False,
               "power": power, "param_checksums": ["ab" * 32, "ab" * 32],
               "replicas_in_sync": True}
    (run / "summary.json").write_text(json.dumps(summary))
    manifest = {"created": "2026-01-01T00:00:00+0000", "git_commit": "0123abc-dirty",
                "python": "3.11.7", "platform": "Linux-test", "cpu": "x86_64", "cpu_count": 8,
                "memory_gb": 31.4, "packages": {"torch": "2.13.0+cpu", "numpy": "2.4.6"},
                "world_size": 2, "launcher": "openmpi", "nodes": [host],
                "ranks": [{"rank": r, "local_rank": r, "host": host, "pid": 100 + r,
                           "device": "cpu", "threads": 1} for r in range(2)],
                "command": ["harness/train.py", "--job", f"jobs/{job}.yaml"],
                "train_pairs": 240, "val_pairs": 60, "backend": "ddp"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "job.yaml").write_text(json.dumps({"name": job, "description": f"{job} demo",
                                              "report": {"samples": 2}}))  # JSON is YAML
    metrics = []
    for step in range(1, 31):
        pix = 0.1 / step
        metrics.append({"kind": "train", "step": step, "lr": 1e-3,
                        "loss": {"pixel": pix, "identity": 0.5 * pix, "total": 1.5 * pix},
                        "step_time_s": 0.1, "images_per_s": 80.0, "time_s": 0.1 * step})
        if step % 10 == 0:
            metrics.append({"kind": "val", "step": step, "val_n": 60,
                            "val_is": is_mean - 0.3 / step, "val_psnr": 25 + step / 30,
                            "best_is": is_mean - 0.3 / step})
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    _write_power(run / "power", list(nodes), gpus=2, budget_w=budget, base_w=300.0)

    infer = run / "infer"
    names = names or [f"{301 + i}" for i in range(n_images)]
    per_image = []
    for i, name in enumerate(names):
        _png(infer / "inputs" / "LR" / f"{name}.png", (24, 28), seed=3 * i)
        _png(infer / "inputs" / "HR" / f"{name}.png", (96, 112), seed=3 * i + 1)
        _png(infer / f"{name}.png", (96, 112), seed=3 * i + 2)
        score = is_mean - 0.4 + 0.8 * i / max(1, len(names) - 1) * 0.5
        per_image.append({"name": name, "is": score, "is_bicubic": score - 0.05,
                          "psnr": 25.0 + i, "psnr_bicubic": 24.0 + i, "sr_resized": False})
    iss = [r["is"] for r in per_image]
    stats = {"mean": float(np.mean(iss)), "median": float(np.median(iss)), "min": min(iss),
             "max": max(iss), "count": len(iss)}
    bic = [r["is_bicubic"] for r in per_image]
    bstats = {"mean": float(np.mean(bic)), "median": float(np.median(bic)), "min": min(bic),
              "max": max(bic), "count": len(bic)}
    ipower = dict(power, gpus_per_node=2, avg_cluster_w=1500.0, peak_cluster_w=1600.0,
                  crossings=0, images=len(names), images_per_s=50.0,
                  images_per_s_per_w=50.0 / 1500.0, j_per_image=30.0, dir=str(infer / "power"))
    scores = {"meta": {"hr_dir": str(infer / "inputs/HR"), "sr_dir": str(infer),
                       "lr_dir": str(infer / "inputs/LR"), "recognizer": "facenet",
                       "metrics": ["is", "psnr"], "shave": 0, "world_size": 1,
                       "created_utc": "2026-01-01T00:01:00+00:00",
                       "inference": {"images": len(names), "seconds": 1.0, "images_per_s": 50.0,
                                     "weights": "ckpt-000030.pt", "world_size": 1,
                                     "power": ipower}},
              "summary": {"count": len(names), "resized": 0,
                          "metrics": {"is": stats, "is_bicubic": bstats,
                                      "psnr": {"mean": 26.0, "median": 26.0, "min": 25.0,
                                               "max": 33.0, "count": len(names)}},
                          "is_normalized_gain": (stats["mean"] - bstats["mean"])
                          / (1 - bstats["mean"])},
              "per_image": per_image}
    (infer / "scores.json").write_text(json.dumps(scores))
    _write_power(infer / "power", ["node000"], gpus=2, budget_w=budget, base_w=250.0)
    return run


def make_sweep(parent: Path) -> Path:
    """A small sweep.json in the power-sweep schema."""
    d = parent / "sweep-a100"
    d.mkdir(parents=True)
    points = []
    for s in (150, 200, 250, 300, 350, 400):
        ips = 100 * (1 - math.exp(-s / 180))
        w = 0.92 * s
        points.append({"setting": float(s), "unit": "W", "images_per_s": ips, "avg_gpu_w": w,
                       "peak_gpu_w": w * 1.05, "avg_node_w": 8 * w + 400,
                       "j_per_image": w / ips, "images_per_s_per_w": ips / w, "is": None,
                       "pareto": True})
    points.append({"setting": 275.0, "unit": "W", "images_per_s": 70.0, "avg_gpu_w": 290.0,
                   "peak_gpu_w": 300.0, "avg_node_w": 2700.0, "j_per_image": 4.1,
                   "images_per_s_per_w": 0.24, "is": 0.81, "pareto": False})
    plan = {"budget_w": 3000.0, "headroom_w": 150.0, "nodes": 1, "gpus_per_node": 8,
            "caps_w": [[300.0] * 8], "predicted_cluster_w": 2780.0,
            "predicted_images_per_s": 650.0, "margin_w": 70.0,
            "explanation": "8 GPUs at 300 W each fit 2850 W with 70 W to spare."}
    (d / "sweep.json").write_text(json.dumps({"job": "demo", "workload": "infer",
                                              "mode": "power_limit", "gpu": "A100-SXM4",
                                              "simulated": True, "points": points,
                                              "plan": plan}))
    return d


# --- HTML inspection -------------------------------------------------------------------------


class _Tags(HTMLParser):
    """Collects every start tag with its attributes, and the ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}


def parse(html_text: str) -> _Tags:
    p = _Tags()
    p.feed(html_text)
    p.close()
    return p


def assert_inert(html_text: str) -> None:
    """No script, no event handler, no URL other than data: images and in-page anchors."""
    tags = parse(html_text)
    assert re.search(r"<\s*script", html_text, re.IGNORECASE) is None
    for tag, attrs in tags.tags:
        assert tag not in ("script", "iframe", "object", "embed", "link", "base", "form"), tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            if name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
                assert value is not None, (tag, name)
                assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value)
            if name == "style":
                assert "url(" not in (value or ""), (tag, value)


def _section_text(html_text: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html_text, re.DOTALL)
    assert m, section_id
    return m.group(1)


# --- unit tests ------------------------------------------------------------------------------


def test_reports_package_imports_neither_torch_nor_pynvml() -> None:
    code = ("import sys, reports, harness.commands.report, reports.render, reports.plots, "
            "reports.rundata, reports.images, reports.markup\n"
            "bad = [m for m in ('torch', 'pynvml', 'harness.training.loop', 'power.nvml') "
            "if m in sys.modules]\nprint(bad)\nsys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "[]"


def test_markup_escapes_text_and_attributes_but_not_markup() -> None:
    assert esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert el("td", "<b>", cls='x"y') == '<td class="x&quot;y">&lt;b&gt;</td>'
    assert el("td", el("b", "ok")) == "<td><b>ok</b></td>"
    assert render("<p title='{t}'>{v}</p>", t="'", v="<i>") == "<p title='&#x27;'>&lt;i&gt;</p>"
    assert fmt_num(None) == "—" and fmt_num(float("nan")) == "—"
    assert fmt_num(0.12345, 3) == "0.123" and fmt_num(-0.5, 2, signed=True) == "-0.50"
    assert fmt_num(True) == "yes" and fmt_num(7) == "7"


def test_pick_samples_takes_best_median_and_worst_without_repeats() -> None:
    records = [{"name": f"{i:03d}", "is": i / 10} for i in range(10)] + [{"name": "nan",
                                                                           "is": math.nan}]
    picks = pick_samples(records, "is", 2)
    assert [(p.group, p.record["name"]) for p in picks] == [
        ("best", "009"), ("best", "008"), ("median", "005"), ("median", "004"),
        ("worst", "001"), ("worst", "000")]
    small = pick_samples(records[:2], "is", 6)  # fewer faces than groups: each shown once
    assert sorted(p.record["name"] for p in small) == ["000", "001"]
    assert pick_samples([], "is", 3) == []


def test_thin_keeps_peaks_and_bounds_the_points() -> None:
    xs = [0.1 * i for i in range(10_000)]
    ys = [100.0 + (i % 7) for i in range(10_000)]
    ys[4321], ys[8000] = 3500.0, -5.0
    tx, ty = thin(xs, ys, max_points=400)
    assert len(tx) <= 400 and tx == sorted(tx)
    assert 3500.0 in ty and -5.0 in ty and xs[4321] in tx
    assert thin([1.0, 2.0], [3.0, 4.0]) == ([1.0, 2.0], [3.0, 4.0])


def test_bicubic_baseline_is_pil_bicubic_of_lr(tmp_path: Path) -> None:
    _png(tmp_path / "lr.png", (24, 28), seed=1)
    up = bicubic_upscale(tmp_path / "lr.png", (96, 112))
    ref = Image.open(tmp_path / "lr.png").convert("RGB").resize((96, 112), Image.BICUBIC)
    assert up.size == (96, 112)
    assert np.array_equal(np.asarray(up), np.asarray(ref))
    assert find_image(tmp_path, "lr") == tmp_path / "lr.png"
    assert find_image(tmp_path, "lr.png") == tmp_path / "lr.png"
    assert find_image(tmp_path, "missing") is None


def test_report_of_one_run_has_every_section_and_the_files_values(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    data = load_run(run)
    html_text = render_report([data])
    tags = parse(html_text)
    assert set(section_ids(1, False)) <= tags.ids
    assert "comparison" not in tags.ids and "sweep" not in tags.ids
    assert_inert(html_text)
    summary = _section_text(html_text, "r1-summary")
    is_stats = data.metric("is")
    assert fmt_num(is_stats["mean"], 4) in summary
    assert fmt_num(is_stats["median"], 4) in summary and fmt_num(is_stats["min"], 4) in summary
    assert fmt_num(data.infer_summary["is_normalized_gain"], 4, signed=True) in summary
    for text in ("3050", "3000 (150)", "0.0370", "27.00", "SIMULATED", "1 (0.100)"):
        assert text in summary, text
    # 2 samples per group x 3 groups, 4 faces each (LR, bicubic, SR, HR), all inline PNGs.
    samples = _section_text(html_text, "r1-samples")
    assert samples.count("data:image/png;base64,") == 6 * 4
    assert "missing" not in samples
    # Ranked by IS (name 301 lowest ... 309 highest): best, median, worst, in page order.
    assert re.findall(r"<b>(\w+)</b> · (\d+) ·", samples) == [
        ("best", "309"), ("best", "308"), ("median", "306"), ("median", "305"),
        ("worst", "302"), ("worst", "301")]
    power = _section_text(html_text, "r1-power")
    assert "node001" in power and "overshoot" in power and "budget 3000 W" in power
    system = _section_text(html_text, "r1-system")
    for text in ("0123abc-dirty", "2.13.0+cpu", "node-a", "jobs/demo.yaml", "&quot;samples&quot;"):
        assert text in system, text
    assert html_text.count("<svg") == 7  # bars, histogram, training, 2x (cluster + GPUs)


def test_cluster_power_is_the_sum_of_node_totals(tmp_path: Path) -> None:
    data = load_run(make_run(tmp_path))
    pd = data.train_power
    assert pd is not None and [n.name for n in pd.nodes] == ["node000", "node001"]
    t, w = pd.cluster_series()
    assert len(t) == 11
    # node n: GPUs 300+n and 310+n, plus 200 W other.
    assert w[0] == pytest.approx((300 + 310 + 200) + (301 + 311 + 200))
    assert pd.budget_w == 3000.0 and pd.headroom_w == 150.0
    assert len(pd.nodes[0].events) == 4  # the truncated line is skipped


def test_report_is_deterministic(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    a = render_report([load_run(run)], load_sweep(make_sweep(tmp_path)))
    b = render_report([load_run(run)], load_sweep(tmp_path / "sweep-a100"))
    assert a == b


def test_missing_files_render_with_explanations(tmp_path: Path) -> None:
    run = tmp_path / "bare-20260101-000000"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"job": "bare", "steps": 3,
                                                  "power": {"enabled": False}}))
    html_text = render_report([load_run(run)])
    assert set(section_ids(1, False)) <= parse(html_text).ids
    assert "No inference output" in html_text
    assert "No training records" in html_text
    assert "Power was not measured" in html_text
    assert "manifest.json is missing" in html_text
    assert "job.yaml is missing" in html_text
    # A crashed run: manifest only, plus unreadable scores.
    crashed = tmp_path / "crash-20260101-000000"
    (crashed / "infer").mkdir(parents=True)
    (crashed / "manifest.json").write_text(json.dumps({"git_commit": "abc", "ranks": "bad"}))
    (crashed / "infer" / "scores.json").write_text("{not json")
    html_text = render_report([load_run(crashed)])
    assert "summary.json is missing" in html_text
    assert "scores.json: unreadable" in html_text
    assert "No per-image scores" in html_text


def test_is_absent_ranks_faces_by_psnr(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    scores = json.loads((run / "infer" / "scores.json").read_text())
    for r in scores["per_image"]:
        del r["is"], r["is_bicubic"]
    del scores["summary"]["metrics"]["is"], scores["summary"]["metrics"]["is_bicubic"]
    del scores["summary"]["is_normalized_gain"]
    (run / "infer" / "scores.json").write_text(json.dumps(scores))
    html_text = render_report([load_run(run)])
    assert "faces are ranked by PSNR" in html_text
    assert "IS was not scored" in html_text
    assert _section_text(html_text, "r1-samples").count("data:image/png") == 24


def test_bad_inputs_raise_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        load_run(tmp_path / "empty")
    with pytest.raises(UserError, match="no sweep.json"):
        load_sweep(tmp_path / "empty")
    (tmp_path / "empty" / "sweep.json").write_text("[1, 2")
    with pytest.raises(UserError, match="unreadable sweep file"):
        load_sweep(tmp_path / "empty")
    for exc in (UserError, ):
        try:
            load_run(tmp_path / "empty")
        except exc as e:
            assert "\n" not in str(e)


def test_injected_markup_in_names_and_files_is_escaped(tmp_path: Path) -> None:
    evil = "</title><script>alert(1)</script>"
    names = ["<img src=x onerror=alert(2)>", "<script>alert(3)", "a&b\"c'd", "$x$ \\", "ok",
             "plain"]
    run = make_run(tmp_path, dirname="<script>alert(4)", job=evil, names=names,
                   nodes=("node000", "node<b onmouseover=alert(5)>$1$"), host="<svg onload=x>")
    summary = json.loads((run / "summary.json").read_text())
    summary["checkpoint"] = "javascript:alert(6)"
    (run / "summary.json").write_text(json.dumps(summary))
    html_text = render_report([load_run(run)], load_sweep(make_sweep(tmp_path)))
    assert_inert(html_text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "&lt;img src=x onerror=alert(2)&gt;" in html_text
    assert "&lt;svg onload=x&gt;" in html_text
    # All six faces shown (2 per group), found despite their names: none missing.
    samples = _section_text(html_text, "r1-samples")
    assert samples.count("data:image/png;base64,") == 6 * 4 and "missing" not in samples
    assert "&lt;script&gt;alert(3)" in samples and "a&amp;b&quot;c&#x27;d" in samples


def test_two_runs_give_a_comparison_table_with_best_values_highlighted(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a-20260101-000000", job="alpha", is_mean=0.70)
    b = make_run(tmp_path, "b-20260101-000000", job="beta", is_mean=0.85)
    html_text = render_report([load_run(a), load_run(b)])
    ids = parse(html_text).ids
    assert set(section_ids(2, False)) <= ids
    table = _section_text(html_text, "comparison")
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.DOTALL)
    assert len(rows) == 2
    assert 'href="#run-1"' in rows[0] and "alpha" in rows[0]
    assert 'href="#run-2"' in rows[1] and "beta" in rows[1]
    headers = re.findall(r"<th[^>]*>(.*?)</th>", table.split("<tbody>")[0])
    col = headers.index("IS mean")
    cells_b = re.findall(r"<td[^>]*>.*?</td>", rows[1])
    cells_a = re.findall(r"<td[^>]*>.*?</td>", rows[0])
    assert 'class="num best"' in cells_b[col] and "best" not in cells_a[col]
    assert fmt_num(load_run(b).metric("is")["mean"], 4) in cells_b[col]
    # Equal values (same power files) are not highlighted.
    assert "best" not in cells_a[headers.index("train J/img")]
    assert "best" not in cells_b[headers.index("train J/img")]


def test_sweep_section_shows_points_pareto_front_and_plan(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    html_text = render_report([load_run(run)], load_sweep(make_sweep(tmp_path)))
    assert set(section_ids(1, True)) <= parse(html_text).ids
    sweep = _section_text(html_text, "sweep")
    assert "8 GPUs at 300 W each fit 2850 W with 70 W to spare." in sweep
    assert "A100-SXM4" in sweep and "simulated" in sweep
    table = sweep.split("<table")[1]
    assert table.count("<tr>") == 1 + 7  # header + 7 points
    assert "<svg" in sweep and "Pareto front" in sweep and "chosen plan" in sweep


def test_cli_writes_the_file_and_reports_bad_dirs(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    out = tmp_path / "out" / "report.html"
    args = parser.parse_args([str(run), "--sweep", str(make_sweep(tmp_path)), "-o", str(out)])
    assert report_cli.run(args) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert "id=\"sweep\"" in out.read_text()
    with pytest.raises(UserError, match="no such run directory"):
        report_cli.run(parser.parse_args([str(tmp_path / "missing"), "-o", str(out)]))


# --- a real run ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke training run with simulated power, then inference + IS scoring into RUN/infer."""
    parent = tmp_path_factory.mktemp("runs")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    train = run_harness("train", "--job", "jobs/smoke.yaml", "--run-dir", str(parent), "--quiet",
                        "--set", "train.steps=6", "--set", "power.enabled=true",
                        "--set", "power.sim_gpus_per_node=4", "--set", "train.val_every=3",
                        "--set", "eval.metrics=[psnr]", env=env)
    assert train.returncode == 0, train.stdout + train.stderr
    run = next(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink())
    ckpt = max((run / "checkpoints").glob("ckpt-*.pt"))
    # 12 of the embedded held-out pairs keep IS scoring to seconds.
    pairs = parent / "pairs"
    for kind in ("LR", "HR"):
        (pairs / kind).mkdir(parents=True)
        for i in range(301, 313):
            shutil.copy(ROOT / "data" / "asc19-val" / f"val_{kind}" / f"{i}.png", pairs / kind)
    infer = run_harness("infer", "--job", "jobs/smoke.yaml", "--lr", str(pairs / "LR"),
                        "--hr", str(pairs / "HR"), "--out", str(run / "infer"),
                        "--checkpoint", str(ckpt), "--quiet",
                        "--set", "power.enabled=true", "--set", "eval.metrics=[is,psnr,ssim]",
                        env=env)
    assert infer.returncode == 0, infer.stdout + infer.stderr
    return run


def test_report_of_a_real_run_shows_its_numbers(real_run: Path, tmp_path: Path) -> None:
    out = write_report([real_run], tmp_path / "report.html")
    html_text = out.read_text()
    assert set(section_ids(1, False)) <= parse(html_text).ids
    assert_inert(html_text)
    scores = json.loads((real_run / "infer" / "scores.json").read_text())
    summary = json.loads((real_run / "summary.json").read_text())
    card = _section_text(html_text, "r1-summary")
    is_stats = scores["summary"]["metrics"]["is"]
    for v in (is_stats["mean"], is_stats["median"], is_stats["min"],
              scores["summary"]["metrics"]["is_bicubic"]["mean"]):
        assert fmt_num(v, 4) in card
    assert fmt_num(summary["power"]["peak_cluster_w"], 0) in card
    assert fmt_num(summary["images_per_s"], 2) in card
    n = min(6, len(scores["per_image"]) // 3)
    assert _section_text(html_text, "r1-samples").count("data:image/png;base64,") == 3 * n * 4
    assert "node000" in _section_text(html_text, "r1-power")


def test_infer_keeps_its_power_records_beside_the_sr_folder(real_run: Path,
                                                             tmp_path: Path) -> None:
    """The SR folder a team hands in holds SR images and scores only; the report finds the
    power records beside it (``infer.power/``) and still reads an older ``infer/power/``."""
    sr = real_run / "infer"
    assert sorted(p.name for p in sr.iterdir() if p.suffix != ".png") == [
        "per_image.csv", "scores.json"]
    records = real_run / "infer.power"
    assert (records / "node000").is_dir()
    scores = json.loads((sr / "scores.json").read_text())
    assert scores["meta"]["inference"]["power"]["dir"] == str(records)
    new = load_run(real_run).infer_power
    assert new is not None and new.path == records and [n.name for n in new.nodes] == ["node000"]
    # A run folder written before the move: infer/power inside the SR folder.
    old_run = tmp_path / real_run.name
    shutil.copytree(real_run, old_run, symlinks=True)
    (old_run / "infer.power").rename(old_run / "infer" / "power")
    old = load_run(old_run).infer_power
    assert old is not None and old.path == old_run / "infer" / "power"
    assert [n.name for n in old.nodes] == [n.name for n in new.nodes]
    assert old.summary == new.summary
    page = _section_text(write_report([old_run], tmp_path / "old.html").read_text(), "r1-power")
    assert page == _section_text(write_report([real_run], tmp_path / "new.html").read_text(),
                                 "r1-power").replace(str(real_run), str(old_run))


# --- headless Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed on this CI runner (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium) — browser tests skipped")
    return path


def _artifact_dir(tmp_path: Path) -> Path:
    base = os.environ.get("HARNESS_ARTIFACTS")
    d = Path(base) / "report" if base else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    return d


def _ids_missing_js(ids: list[str]) -> str:
    return f"{json.dumps(ids)}.filter(id => !document.getElementById(id))"


@pytest.mark.browser
def test_browser_loads_real_report_offline_with_every_section(
        chromium: str, real_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = _artifact_dir(tmp_path)
    html_path = write_report([real_run], out_dir / "report.html",
                             sweep_dir=make_sweep(tmp_path))
    ids = section_ids(1, True)
    shot = out_dir / "report.png"
    result = inspect_page(html_path, chromium=chromium, screenshot=shot, expressions={
        "missing": _ids_missing_js(ids),
        "scripts": "document.scripts.length",
        "broken_images": "[...document.images].filter(i => !i.complete || !i.naturalWidth)"
                         ".length",
        "images": "document.images.length",
        "charts": "document.querySelectorAll('svg.chart').length",
        "height": "document.documentElement.scrollHeight"})
    with capsys.disabled():
        print(f"\nreport: {html_path}\nscreenshot: {shot}")
    assert result.network_requests == []
    assert result.all_requests[0] == html_path.resolve().as_uri()
    assert result.console_errors == []
    assert result.values["missing"] == []
    assert result.values["scripts"] == 0
    faces = 3 * min(6, len(load_run(real_run).per_image) // 3)
    assert result.values["broken_images"] == 0 and result.values["images"] == faces * 4
    assert result.values["charts"] == 8
    with Image.open(shot) as im:
        assert im.size[0] == 1280 and im.size[1] >= min(result.values["height"], 16000) - 1
        # Not a blank page: plenty of distinct colours (faces, charts).
        assert len(im.convert("RGB").resize((320, 320)).getcolors(1 << 16) or []) > 500


@pytest.mark.browser
def test_browser_sees_network_requests_when_a_page_makes_them(chromium: str,
                                                              tmp_path: Path) -> None:
    """Control for the test above: the detector does catch an outside fetch."""
    import socket

    with socket.socket() as s:  # a free, unrestricted port (Chromium refuses "unsafe" ones
        s.bind(("127.0.0.1", 0))  # such as 9 before any request event, at random)
        port = s.getsockname()[1]
    leak = f"http://127.0.0.1:{port}/x.png"
    page = tmp_path / "leaky.html"
    page.write_text(f'<!DOCTYPE html><html><body><img src="{leak}">'
                    '<p id="p">x</p></body></html>')
    result = inspect_page(page, chromium=chromium,
                          expressions={"p": "!!document.getElementById('p')"})
    assert result.network_requests == [leak]
    assert result.values["p"] is True
    assert result.console_errors  # the failed load is logged


@pytest.mark.browser
def test_browser_runs_nothing_injected_through_names(chromium: str, tmp_path: Path) -> None:
    run = make_run(tmp_path, dirname="<script>alert(4)", job="<script>alert(1)</script>",
                   names=["<img src=x onerror=alert(2)>", "<script>alert(3)", "ok"])
    html_path = write_report([run], tmp_path / "evil.html")
    result = inspect_page(html_path, chromium=chromium, expressions={
        "scripts": "document.scripts.length",
        "handlers": "[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
                    ".some(a => a.name.startsWith('on'))).length",
        "title": "document.title",
        "missing": _ids_missing_js(section_ids(1, False))})
    assert result.dialogs == []
    assert result.values["scripts"] == 0 and result.values["handlers"] == 0
    assert result.values["title"] == "FaceSR report: <script>alert(1)</script>"
    assert result.values["missing"] == []
    assert result.network_requests == [] and result.console_errors == []
