"""Job specs: shipped jobs load, overrides validate, malformed jobs give one line and exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import JobConfig, dump_job, job_from_dict, load_job
from harness.errors import UserError
from tests.conftest import ROOT, run_harness

SHIPPED = sorted((ROOT / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_jobs_load_and_round_trip(path: Path, tmp_path: Path) -> None:
    job = load_job(path)
    assert isinstance(job, JobConfig)
    again = tmp_path / "again.yaml"
    again.write_text(dump_job(job))
    assert load_job(again) == job


def test_required_jobs_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"demo.yaml", "asc19-final.yaml", "smoke.yaml"} <= names
    final = load_job(ROOT / "jobs/asc19-final.yaml")
    assert final.launch.world_size == 16 and final.launch.nodes == 4
    assert final.power.backend == "nvml" and final.power.budget_w == 3000
    demo = load_job(ROOT / "jobs/demo.yaml")
    assert demo.launch.world_size == 2 and demo.power.backend == "simulated"


def test_overrides_go_through_validation() -> None:
    job = load_job(ROOT / "jobs/smoke.yaml", ["train.lr=2e-4", "train.steps=7",
                                              "eval.metrics=[is, psnr]", "launch.hosts=[a, b]",
                                              "launch.nodes=2"])
    assert job.train.lr == pytest.approx(2e-4)
    assert job.train.steps == 7
    assert job.eval.metrics == ("is", "psnr")
    assert job.launch.hosts == ("a", "b")
    with pytest.raises(UserError, match=r"smoke.yaml: train.steps: expected an integer"):
        load_job(ROOT / "jobs/smoke.yaml", ["train.steps=many"])
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        load_job(ROOT / "jobs/smoke.yaml", ["train.steps"])


def test_defaults_are_valid() -> None:
    job = job_from_dict({})
    assert job.power.budget_w == 3000.0
    assert job.train.backend == "ddp"


BAD_JOBS = [
    ("unknown key", "train:\n  bacth_size: 4\n",
     "bad.yaml: train.bacth_size: unknown key (did you mean batch_size?)"),
    ("unknown section", "trian:\n  steps: 4\n", "bad.yaml: trian: unknown key (did you mean train?)"),
    ("wrong type", "train:\n  steps: lots\n", "bad.yaml: train.steps: expected an integer, got 'lots'"),
    ("bool for int", "train:\n  steps: true\n", "bad.yaml: train.steps: expected an integer, got True"),
    ("negative batch", "train:\n  batch_size: -8\n", "bad.yaml: train.batch_size: must be >= 1"),
    ("bad literal", "train:\n  backend: mpi\n",
     "bad.yaml: train.backend: expected one of 'ddp', 'horovod', got 'mpi'"),
    ("section not mapping", "train: 5\n", "bad.yaml: train: expected a mapping, got 5"),
    ("list item type", "eval:\n  metrics: [is, 3]\n", "bad.yaml: eval.metrics[1]: expected a string, got 3"),
    ("unknown metric", "eval:\n  metrics: [is, lpips]\n", "bad.yaml: eval.metrics: unknown metric 'lpips'"),
    ("hosts mismatch", "launch:\n  nodes: 2\n  hosts: [a]\n",
     "bad.yaml: launch.hosts: lists 1 hosts but launch.nodes is 2"),
    ("yaml syntax", "train:\n  steps: [1, 2\n", "bad.yaml: line 3, column 1: invalid YAML"),
    ("top-level list", "- a\n- b\n", "bad.yaml: top level: expected a mapping of sections, got list"),
]


@pytest.mark.parametrize("label,text,expected", BAD_JOBS, ids=[b[0] for b in BAD_JOBS])
def test_malformed_jobs_library(tmp_path: Path, label: str, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_job(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("label,text,expected", BAD_JOBS[:6] + BAD_JOBS[10:11],
                         ids=[b[0] for b in BAD_JOBS[:6] + BAD_JOBS[10:11]])
def test_malformed_jobs_cli_one_line_exit_2(tmp_path: Path, label: str, text: str,
                                            expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = run_harness("launch", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in lines[0]
    assert proc.stdout == ""


def test_missing_job_file_cli(tmp_path: Path) -> None:
    proc = run_harness("doctor", "nope.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "harness: error: nope.yaml: job file not found"


def test_bad_override_cli(tmp_path: Path) -> None:
    proc = run_harness("launch", str(ROOT / "jobs/smoke.yaml"), "--dry-run", "--set",
                       "train.bacth_size=3")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("train.bacth_size: unknown key (did you mean batch_size?)")
