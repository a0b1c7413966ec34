"""Job specs: shipped jobs load, overrides validate, malformed jobs give one line and exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from fileio.user_error import UserError
from harness.config import JobConfig, dump_job, job_from_dict, load_job
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
    ("unknown section", "trian:\n  steps: 4\n",
     "bad.yaml: trian: unknown key (did you mean train?)"),
    ("wrong type", "train:\n  steps: lots\n",
     "bad.yaml: train.steps: expected an integer, got 'lots'"),
    ("bool for int", "train:\n  steps: true\n",
     "bad.yaml: train.steps: expected an integer, got True"),
    ("negative batch", "train:\n  batch_size: -8\n", "bad.yaml: train.batch_size: must be >= 1"),
    ("bad literal", "train:\n  backend: mpi\n",
     "bad.yaml: train.backend: expected one of 'ddp', 'horovod', got 'mpi'"),
    ("section not mapping", "train: 5\n", "bad.yaml: train: expected a mapping, got 5"),
    ("list item type", "eval:\n  metrics: [is, 3]\n",
     "bad.yaml: eval.metrics[1]: expected a string, got 3"),
    ("unknown metric", "eval:\n  metrics: [is, lpips]\n",
     "bad.yaml: eval.metrics: unknown metric 'lpips'"),
    ("hosts mismatch", "launch:\n  nodes: 2\n  hosts: [a]\n",
     "bad.yaml: launch.hosts: lists 1 hosts but launch.nodes is 2"),
    ("yaml syntax", "train:\n  steps: [1, 2\n", "bad.yaml: line 3, column 1: invalid YAML"),
    ("top-level list", "- a\n- b\n",
     "bad.yaml: top level: expected a mapping of sections, got list"),
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


# ----------------------------------------------------------------- hostile input (issue #13)

def _laughs(levels: int = 9) -> str:
    """A "billion laughs" value: 9 levels of 9 aliases each expand to 9**9 strings."""
    items = ["&a [" + ",".join(["lol"] * 9) + "]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"[: levels - 1], strict=False):
        items.append(f"&{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "[" + ", ".join(items) + "]"


HOSTILE_JOBS = [
    # label, file text, expected part of the one-line error
    ("billion laughs in a string field", f"name: x\ndescription: {_laughs()}\n",
     "refused: more than 20000 YAML values"),
    ("billion laughs in a list field", f"eval:\n  metrics: {_laughs()}\n",
     "refused: more than 20000 YAML values"),
    ("laughs as top-level anchors", "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}" if p else "lol"] * 9) + "]\n"
        for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True)),
     "refused: more than 20000 YAML values"),
    ("mapping bomb", "a: &a {x: 1, y: 2}\n" + "".join(
        f"{c}: &{c} {{" + ", ".join(f"k{i}: *{p}" for i in range(9)) + "}\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)),
     "refused: more than 20000 YAML values"),
    ("deep nesting", "train: " + "[" * 5000 + "]" * 5000 + "\n", "refused: nested deeper than 32"),
    ("long list", "eval:\n  metrics: [" + ",".join(["is"] * 30000) + "]\n",
     "refused: more than 20000 YAML values"),
    ("huge integer", "train:\n  steps: " + "9" * 5000 + "\n",
     "refused: integer longer than 64 characters"),
    ("huge sexagesimal integer", "train:\n  steps: " + ":".join(["59"] * 3000) + "\n",
     "refused: integer longer than 64 characters"),
    ("impossible date", "train:\n  steps: 2024-02-30\n", "invalid YAML value"),
    ("long string quoted short", "eval:\n  metrics: ['" + "x" * 100000 + "']\n",
     "unknown metric 'xxxxxxxxxx"),
    ("long unknown key", "train:\n  ? " + "k" * 100000 + "\n  : 1\n", "train.kkkkkkkk"),
    ("large list as a string value", "description: [" + ",".join(["lol"] * 5000) + "]\n",
     "description: expected a string, got ['lol', 'lol'"),
]


@pytest.mark.parametrize("label,text,expected", HOSTILE_JOBS, ids=[h[0] for h in HOSTILE_JOBS])
def test_hostile_yaml_is_refused_fast_in_one_short_line(tmp_path: Path, label: str, text: str,
                                                        expected: str) -> None:
    import time

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_job(path)
    elapsed = time.perf_counter() - t0
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message and len(message) < 600, message
    assert info.value.exit_code == 2
    assert elapsed < 5, f"{label}: {elapsed:.1f} s"  # the laughs took 48 s and 3 GB before


def test_billion_laughs_is_small_and_refused_by_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(f"name: laughs\ndescription: {_laughs()}\n")
    assert path.stat().st_size < 500
    proc = run_harness("launch", str(path), "--dry-run", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith(f"harness: error: {path}: line 2, column ")
    assert "refused: more than 20000 YAML values" in lines[0]


def test_anchors_and_merge_keys_within_the_limits_still_work(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text("data:\n  augment: &aug {hflip: true, shift_px: 1}\n"
                    "eval:\n  metrics: &m [is, psnr]\n"
                    "report:\n  samples: 4\n"
                    "launch:\n  env: {<<: {OMP_NUM_THREADS: '2'}, NCCL_DEBUG: WARN}\n")
    job = load_job(path, ["eval.metrics=[is]"])
    assert job.data.augment.shift_px == 1 and job.eval.metrics == ("is",)
    assert job.launch.env == {"OMP_NUM_THREADS": "2", "NCCL_DEBUG": "WARN"}


def test_oversized_and_unreadable_job_files(tmp_path: Path) -> None:
    from harness.config import MAX_JOB_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("description: '" + "x" * MAX_JOB_BYTES + "'\n")
    with pytest.raises(UserError, match=r"big.yaml: job file larger than 1048576 bytes"):
        load_job(big)
    with pytest.raises(UserError, match=r"/dev/zero: job file larger than"):
        load_job("/dev/zero")  # endless: must be read with a bound, not to the end
    with pytest.raises(UserError, match=r"cannot read job file \(IsADirectoryError\)"):
        load_job(tmp_path)


BAD_OVERRIDES = [
    ("bomb value", f"data.train={_laughs()}", "refused: more than 20000 YAML values"),
    ("deep value", "train.steps=" + "[" * 100 + "]" * 100, "refused: nested deeper than 32"),
    ("huge integer", "train.steps=" + "1" * 1000, "refused: integer longer than 64"),
    ("too long", "description=" + "x" * 70000, "longer than 65536 characters"),
    ("deep key", "a." * 40 + "b=1", "key nested deeper than 32 levels"),
    ("long string value", "train.steps=" + "y" * 5000, "expected an integer, got 'yyyy"),
    ("not yaml stays a string", "train.backend=[x", "expected one of 'ddp', 'horovod', got '[x'"),
]


@pytest.mark.parametrize("label,override,expected", BAD_OVERRIDES,
                         ids=[b[0] for b in BAD_OVERRIDES])
def test_hostile_overrides_are_refused_in_one_short_line(label: str, override: str,
                                                         expected: str) -> None:
    with pytest.raises(UserError) as info:
        load_job(ROOT / "jobs/smoke.yaml", [override])
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message and len(message) < 600, message


def test_excerpt_is_bounded() -> None:
    from harness.config import excerpt

    shared: list = ["lol"] * 9
    for _ in range(8):
        shared = [shared] * 9  # 9**9 strings if printed in full
    assert len(excerpt(shared)) <= 60
    assert excerpt("x" * 1000).endswith("…") and len(excerpt("x" * 1000)) == 60
    assert excerpt("a\nb") == "'a\\nb'"
    assert excerpt(3) == "3" and excerpt(True) == "True"


# Launch values reach shell and #SBATCH lines: anything that could be read as more than one
# word or line is refused, naming the key (the launcher also quotes what is accepted).
HOSTILE_LAUNCH = [
    # label, override, expected one-line error (naming the key)
    ("env name with a command", "launch.env={'A; touch /tmp/x': '1'}",
     "launch.env: 'A; touch /tmp/x' is not a valid environment variable name"),
    ("env name starting with a digit", "launch.env={1A: x}", "launch.env: '1A' is not a valid"),
    ("env value with a newline", "launch.env={A: \"1\\ntouch /tmp/x\"}",
     "launch.env.A: '1\\ntouch /tmp/x' contains a control character"),
    ("env value with NUL", "launch.env={A: \"a\\0b\"}",
     "launch.env.A: 'a\\x00b' contains a control"),
    ("partition with a newline", "launch.partition=\"gpu\\nhostname\"",
     "launch.partition: 'gpu\\nhostname' is not a Slurm partition name"),
    ("partition with a command", "launch.partition='gpu; touch /tmp/x'",
     "launch.partition: 'gpu; touch /tmp/x' is not a Slurm partition name"),
    ("account with a quote", "launch.account=\"a'b\"", "launch.account: \"a'b\" is not a Slurm"),
    ("time with a command", "launch.time='01:00:00; id'", "launch.time: expected HH:MM:SS"),
    ("host with a command", "launch.hosts=['a;id', b, c, d]",
     "launch.hosts[0]: 'a;id' is not a host name"),
    ("host with a newline", "launch.hosts=[\"a\\nb\", b, c, d]",
     "launch.hosts[0]: 'a\\nb' is not"),
    ("mpirun with a newline", "launch.mpirun=\"mpirun\\nid\"",
     "launch.mpirun: 'mpirun\\nid' contains"),
    ("mpi arg with a newline", "launch.mpi_args=[\"a\\nb\"]",
     "launch.mpi_args[0]: 'a\\nb' contains"),
    ("run_dir with a newline", "launch.run_dir=\"r\\nid\"", "launch.run_dir: 'r\\nid' contains"),
    ("srun_mpi with a command", "launch.srun_mpi='pmix;id'", "launch.srun_mpi: expected an srun"),
]


@pytest.mark.parametrize("label,override,expected", HOSTILE_LAUNCH,
                         ids=[h[0] for h in HOSTILE_LAUNCH])
def test_hostile_launch_values_are_refused_in_one_line(label: str, override: str,
                                                       expected: str) -> None:
    with pytest.raises(UserError) as info:
        load_job(ROOT / "jobs/asc19-final.yaml", [override])
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message and info.value.exit_code == 2
