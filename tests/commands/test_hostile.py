"""The issue #13 campaign, kept: careless and hostile inputs across the commands.

Every case runs the real CLI in a fresh process and checks the outcome: the exit code, one
line on stderr naming the problem, no traceback, and every file that existed before the
command byte-identical afterwards (hashed before and after). The tree is built once (two
faces, one tiny smoke run) so the whole table runs in about a minute on two cores.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, run_harness

VAL = ROOT / "data" / "asc19-val"
SMOKE = str(ROOT / "jobs" / "smoke.yaml")
NAMES = ("301", "302")


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and ".progress" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LR/HR (2 faces), SR from bicubic, a smoke run with checkpoints, a weights-only file."""
    t = tmp_path_factory.mktemp("hostile")
    for role, src in (("LR", "val_LR"), ("HR", "val_HR")):
        (t / role).mkdir()
        for n in NAMES:
            shutil.copyfile(VAL / src / f"{n}.png", t / role / f"{n}.png")
    (t / "SR").mkdir()
    for n in NAMES:
        Image.open(t / "LR" / f"{n}.png").resize((96, 112), Image.Resampling.BICUBIC).save(
            t / "SR" / f"{n}.png")
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(t / "runs"),
                       "--stop-after", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = next(p for p in (t / "runs").iterdir() if not p.is_symlink())
    run.rename(t / "runs" / "run")
    (t / "runs" / "smoke-latest").unlink()
    (t / "runs" / "smoke-latest").symlink_to("run")
    ck = t / "runs" / "run" / "checkpoints" / "ckpt-000002.pt"
    state = torch.load(ck, weights_only=True)
    torch.save({k: state[k] for k in ("model", "model_name", "model_kwargs")},
               t / "runs" / "run" / "checkpoints" / "best.pt")
    (t / "x" / "models").mkdir(parents=True)
    shutil.copyfile(ck, t / "x" / "models" / "m.pt")
    (t / "x" / "job.yaml").write_text("a user's own job file\n")
    crafted = dict(state, model_kwargs={**state["model_kwargs"], "num_feat": 100000})
    torch.save(crafted, t / "x" / "crafted.pt")
    other = dict(state, model_kwargs={**state["model_kwargs"], "num_feat": 16})
    from kernels import build_model

    other["model"] = build_model("srresnet", **other["model_kwargs"]).state_dict()
    torch.save(other, t / "x" / "other-arch.pt")
    # a folder of infer results: its scores.json carries the power figures
    (t / "infer").mkdir()
    for n in NAMES:
        shutil.copyfile(t / "SR" / f"{n}.png", t / "infer" / f"{n}.png")
    (t / "infer" / "scores.json").write_text(json.dumps(
        {"meta": {"inference": {"power": {"energy_j": 12.5}}}, "summary": {}, "per_image": []}))
    (t / "evaluated").mkdir()
    (t / "evaluated" / "scores.json").write_text(json.dumps({"meta": {}, "summary": {}}))
    # two LR files that would both become a.png
    (t / "LRdup").mkdir()
    shutil.copyfile(t / "LR" / "301.png", t / "LRdup" / "a.png")
    Image.open(t / "LR" / "302.png").save(t / "LRdup" / "a.jpg", quality=95)
    (t / "afile").write_text("not a folder\n")
    return t


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path], list[str]]
    code: int
    says: str
    setup: Callable[[Path], object] | None = None


def _infer(*extra: str) -> Callable[[Path], list[str]]:
    return lambda t: ["infer", "--job", SMOKE, "--quiet", "--checkpoint",
                      str(t / "runs/run/checkpoints/ckpt-000002.pt"),
                      *[e.format(t=t) for e in extra]]


def _evaluate(*extra: str) -> Callable[[Path], list[str]]:
    return lambda t: ["evaluate", "--hr", str(t / "HR"), "--sr", str(t / "SR"), "--metrics",
                      "psnr", *[e.format(t=t) for e in extra]]


def _train(*extra: str) -> Callable[[Path], list[str]]:
    return lambda t: ["train", "--job", SMOKE, "--quiet", "--run-dir", str(t / "runs"),
                      *[e.format(t=t) for e in extra]]


CASES = [
    Case("infer --out is the HR references", _infer("--lr", "{t}/LR", "--out", "{t}/HR",
                                                    "--hr", "{t}/HR"), 2, "is also an input"),
    Case("infer --out is the LR inputs", _infer("--lr", "{t}/LR", "--out", "{t}/LR"), 2,
         "is also an input"),
    Case("infer --out inside the inputs", _infer("--lr", "{t}/LR", "--out", "{t}/LR/sr"), 2,
         "lies inside the input"),
    Case("infer --out contains the inputs", _infer("--lr", "{t}/LR", "--out", "{t}"), 2,
         "contains the input"),
    Case("infer --out holds same-named files", _infer("--lr", "{t}/LR", "--out", "{t}/SR"), 2,
         "would replace 2 existing file(s) (301.png, 302.png)"),
    Case("infer --out is a file", _infer("--lr", "{t}/LR", "--out", "{t}/afile"), 2,
         "is a file"),
    Case("infer --out below a file", _infer("--lr", "{t}/LR", "--out", "{t}/afile/sr"), 2,
         "is a file"),
    Case("infer: two LR files give one SR name", _infer("--lr", "{t}/LRdup", "--out",
                                                        "{t}/new"), 2, "would both be written"),
    Case("infer --checkpoint with crafted metadata (100000-wide model)",
         _infer("--lr", "{t}/LR", "--out", "{t}/new", "--checkpoint", "{t}/x/crafted.pt"), 2,
         "do not match"),
    Case("evaluate --out over infer's scores, even with --overwrite",
         _evaluate("--out", "{t}/infer", "--overwrite"), 2, "never replaced"),
    Case("evaluate --out over an earlier evaluate", _evaluate("--out", "{t}/evaluated"), 2,
         "--overwrite"),
    Case("evaluate --out is the SR folder", _evaluate("--out", "{t}/SR"), 2, "is also an input"),
    Case("evaluate --batch-size 0", _evaluate("--batch-size", "0"), 2, "--batch-size 0"),
    Case("evaluate --shave out of range", _evaluate("--shave", "500"), 2, "leaves nothing"),
    Case("evaluate --shave negative", _evaluate("--shave", "-1"), 2, "must be 0 or more"),
    Case("evaluate --out is a file", _evaluate("--out", "{t}/afile"), 2, "is a file"),
    Case("train --resume a weights-only best.pt", _train("--resume",
                                                         "{t}/runs/run/checkpoints/best.pt"),
         2, "holds weights only"),
    Case("train --resume a file outside a run folder", _train("--resume", "{t}/x/models/m.pt"),
         2, "not a checkpoint of a run folder"),
    Case("train --resume a folder that is not a run", _train("--resume", "{t}/x"), 2,
         "not a run folder"),
    Case("train --resume with another architecture",
         _train("--resume", "{t}/runs/run", "--set", "model.args.num_feat=16"), 2,
         "the job builds"),
    Case("train --resume while another process holds the run",
         _train("--resume", "{t}/runs/run"), 2, "in use by another process",
         setup=lambda t: _hold_lock(t / "runs" / "run")),
    Case("train: model.init_from is missing", _train("--set", "model.init_from={t}/nothing.pt"),
         2, "no such checkpoint file"),
    Case("train: model.init_from of another architecture",
         _train("--set", "model.init_from={t}/x/other-arch.pt"), 2, "the job builds"),
    Case("train: model.init_from with crafted metadata",
         _train("--set", "model.init_from={t}/x/crafted.pt"), 2, "do not match"),
    Case("report -o over a file that is not a report", lambda t: [
        "report", str(t / "runs/run"), "-o", str(t / "afile")], 2, "not a harness report"),
    Case("report -o over the run's job.yaml", lambda t: [
        "report", str(t / "runs/run"), "-o", str(t / "runs/run/job.yaml")], 2,
        "is a file of the run"),
    Case("report -o over the run's job.yaml, --overwrite", lambda t: [
        "report", str(t / "runs/run"), "-o", str(t / "runs/run/job.yaml"), "--overwrite"], 2,
        "is a file of the run"),
    Case("report -o is the run folder", lambda t: [
        "report", str(t / "runs/run"), "-o", str(t / "runs/run")], 2, "is also an input"),
    Case("prepare --out into its source", lambda t: [
        "prepare", str(t / "HR"), "--out", str(t / "HR/packed")], 2, "lies inside the input"),
]


_HELD: list[int] = []


def _hold_lock(run: Path) -> None:
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD.append(fd)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, tree: Path) -> None:
    if case.setup is not None:
        case.setup(tree)
    before = _hashes(tree)
    runs_before = sorted(p.name for p in (tree / "runs").iterdir())
    latest = os.readlink(tree / "runs" / "smoke-latest")
    try:
        proc = run_harness(*case.argv(tree))
    finally:
        while _HELD:
            os.close(_HELD.pop())
    assert proc.returncode == case.code, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("harness: error: ") and case.says in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    after = _hashes(tree)
    assert {k: v for k, v in after.items() if k in before} == before, "a file was changed"
    assert set(after) - set(before) <= {"runs/run/.lock"}, set(after) - set(before)
    assert sorted(p.name for p in (tree / "runs").iterdir()) == runs_before  # no run folder
    assert os.readlink(tree / "runs" / "smoke-latest") == latest  # -latest not moved
    assert not (tree / "new").exists()


def _png16(path: Path, rgb16: np.ndarray) -> None:
    import cv2

    assert cv2.imwrite(str(path), rgb16[..., ::-1])


def test_16_bit_faces_score_as_themselves(tmp_path: Path) -> None:
    """16-bit HR and SR of different faces must not score as identical (the bug: PSNR inf)."""
    for role, names in (("HR", ("301", "302")), ("SR", ("305", "306"))):
        (tmp_path / role).mkdir()
        for i, n in enumerate(names):
            face = np.asarray(Image.open(VAL / "val_HR" / f"{n}.png").convert("RGB"))
            _png16(tmp_path / role / f"{NAMES[i]}.png", face.astype(np.uint16) * 257)
    proc = run_harness("evaluate", "--hr", str(tmp_path / "HR"), "--sr", str(tmp_path / "SR"),
                       "--metrics", "psnr", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    psnr = json.loads((tmp_path / "out" / "scores.json").read_text())["summary"]
    value = psnr["metrics"]["psnr"]["mean"]
    assert isinstance(value, float) and 5 < value < 30  # two different faces, not inf
    # and the 16-bit copy of a face reads exactly as the 8-bit face
    from harness.data.imageio import read_rgb

    face = np.asarray(Image.open(VAL / "val_HR" / "301.png").convert("RGB"))
    assert np.array_equal(read_rgb(tmp_path / "HR" / "301.png"), face)


def test_resume_appends_power_logs_and_keeps_the_manifest(tmp_path: Path) -> None:
    power = ["--set", "power.enabled=true", "--set", "power.backend=simulated"]
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--run-dir", str(tmp_path),
                       "--stop-after", "2", *power)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = (tmp_path / "smoke-latest").resolve()
    logs = sorted(run.glob("power/node*/*_power.csv")) + [run / "metrics.jsonl"]
    old = {p: p.read_bytes() for p in logs + [run / "job.yaml"]}
    manifest = json.loads((run / "manifest.json").read_text())
    proc = run_harness("train", "--job", SMOKE, "--quiet", "--resume", str(run), *power)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for p in logs:
        new = p.read_bytes()
        assert new.startswith(old[p]) and len(new) > len(old[p]), p
        if p.suffix == ".csv":
            assert new.count(new.splitlines()[0]) == 1  # one header
    assert (run / "job.yaml").read_bytes() == old[run / "job.yaml"]
    again = json.loads((run / "manifest.json").read_text())
    assert again["created"] == manifest["created"] and len(again["resumes"]) == 1


def test_environment_errors_are_one_line(tmp_path: Path) -> None:
    """An OSError from the machine (here: not a folder) is one line; -v shows the traceback."""
    from harness.commands.common import run_guarded

    def boom() -> int:
        open(tmp_path / "afile" / "x", "w")  # noqa: SIM115 - ENOTDIR
        return 0

    (tmp_path / "afile").write_text("x")
    assert run_guarded(boom) == 1


def test_a_full_disk_keeps_the_last_checkpoint_and_the_run_resumes(tmpfs) -> None:
    small_disk = tmpfs("small", "size=300k")
    base = ["train", "--job", str(ROOT / "jobs/smoke.yaml"), "--quiet", "--set", "train.steps=6",
            "--set", "train.ckpt_every=2", "--set", "train.keep_last=5"]
    proc = run_harness(*base, "--run-dir", str(small_disk))
    assert proc.returncode == 1, proc.stderr[-2000:]
    run = next(p for p in small_disk.iterdir() if p.is_dir() and not p.is_symlink())
    saved = sorted(p.name for p in (run / "checkpoints").iterdir())
    last = run / "checkpoints" / saved[-1]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("harness: error: disk full: ") and "Traceback" not in proc.stderr
    assert f"last good checkpoint {last}" in line and f"--resume {run}" in line
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    from harness.outputs import checkpoints as checkpoint

    assert checkpoint.load(last)["step"] == int(last.stem.split("-")[1])
    # Make room, as the message says, and go on.
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    resumed = run_harness(*base, "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 6
