"""A night on a cluster, as a team runs it: the bare mpirun line, logs in files and on ptys,
one error line per job, --resume auto, every command as a module, --version."""
from __future__ import annotations

import ast
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_harness, run_mpi

SMOKE = str(ROOT / "jobs" / "smoke.yaml")
FAST_DEFAULT = ["--set", "train.steps=2", "--set", "loss.identity=0", "--set",
                "eval.metrics=[psnr]", "--set", "train.val_every=0", "--set",
                "model.args={num_feat: 8, num_blocks: 1}", "--set", "power.sim_gpus_per_node=2"]
UTC_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ INFO harness\.progress: step \d+/\d+")


@pytest.mark.mpi
def test_bare_mpirun_line_runs_the_default_job(mpirun: str, tmp_path: Path) -> None:
    proc = run_mpi(mpirun, 2, ["-m", "harness.train", "--run-dir", str(tmp_path), *FAST_DEFAULT])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("jobs/default.yaml (the default") == 1  # said once, by rank 0
    run = next(p for p in tmp_path.iterdir() if p.name.startswith("default-2"))
    assert (run / "summary.json").is_file() and (run / "train.log").is_file()
    assert any(UTC_LINE.match(line) for line in (run / "train.log").read_text().splitlines())


@pytest.mark.mpi
def test_a_usage_error_is_printed_once_per_job(mpirun: str) -> None:
    proc = run_mpi(mpirun, 2, ["-m", "harness.train", "--no-such-flag"])
    assert proc.returncode != 0
    assert proc.stderr.count("unrecognized arguments: --no-such-flag") == 1


def test_plain_lines_when_stdout_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "log.txt"
    with out.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", "harness.train", "--job", SMOKE,
                               "--run-dir", str(tmp_path / "runs"), "--log-interval", "1e-9"],
                              stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = out.read_text()
    assert proc.returncode == 0, text[-2000:]
    steps = [line for line in text.splitlines() if UTC_LINE.match(line)]
    assert len(steps) == 4 and steps[-1].split("harness.progress: ")[1].startswith("step 4/4")
    assert "\x1b[" not in text  # no terminal redraws in a log file


def _on_pty(args: list[str], cwd: Path) -> str:
    """Run ``python -m harness.train ARGS`` with stdout and stderr on a pseudo-terminal."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "harness.train", *args], stdout=child,
                            stderr=child, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                        "COLUMNS": "120"})
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(main)
    assert proc.returncode == 0, b"".join(chunks)[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_terminal_gets_the_bar_and_plain_on_request(tmp_path: Path) -> None:
    rich = _on_pty(["--job", SMOKE, "--run-dir", str(tmp_path / "a")], ROOT)
    assert "harness.progress: step" not in rich and "train" in rich
    plain = _on_pty(["--job", SMOKE, "--run-dir", str(tmp_path / "b"), "--log-format", "plain",
                     "--log-interval", "1e-9"], ROOT)
    assert "harness.progress: step 4/4" in plain


def test_resume_auto_continues_the_latest_run_or_starts_one(tmp_path: Path) -> None:
    base = ["train", "--job", SMOKE, "--run-dir", str(tmp_path), "--quiet", "--set",
            "train.steps=4", "--set", "train.ckpt_every=2"]
    first = run_harness(*base, "--resume", "auto", "--stop-after", "2")
    assert first.returncode == 0, first.stderr
    assert "starting a new run" in first.stderr
    again = run_harness(*base, "--resume", "auto")
    assert again.returncode == 0, again.stderr
    runs = [p for p in tmp_path.iterdir() if not p.is_symlink()]
    assert len(runs) == 1 and "continuing" in again.stderr
    steps = [int(m) for m in re.findall(r'"step": (\d+)', (runs[0] / "metrics.jsonl").read_text())]
    assert steps[:2] == [1, 2] and max(steps) == 4


@pytest.mark.parametrize("command", ["doctor", "launch", "train", "infer", "evaluate",
                                     "prepare", "report", "power_sweep", "watch"])
def test_every_command_is_a_module(command: str) -> None:
    proc = subprocess.run([sys.executable, "-m", f"harness.commands.{command}", "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and proc.stdout.startswith("usage:"), proc.stderr


def test_version() -> None:
    proc = run_harness("--version")
    assert proc.returncode == 0 and re.match(r"harness \S+ \(commit \w+", proc.stdout)


def test_sources_stay_python_310() -> None:
    """setup.cfg promises Python 3.10: no 3.11+ syntax or standard-library names."""
    newer = re.compile(r"\b(typing\.Self|from typing import[^\n]*\bSelf\b|tomllib|"
                       r"ExceptionGroup|datetime\.UTC|StrEnum|typing\.Never|asyncio\.TaskGroup)")
    offenders = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in path.parts or path == Path(__file__):
            continue
        text = path.read_text()
        ast.parse(text, feature_version=(3, 10))
        offenders += [f"{path}: {m.group(0)}" for m in newer.finditer(text)]
    assert not offenders, offenders
    assert "python_requires = >=3.10" in (ROOT / "setup.cfg").read_text()
