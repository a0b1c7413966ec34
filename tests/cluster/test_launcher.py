"""Launch lines are pure functions: compared as strings, no cluster needed."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness.cluster.launcher import (
    LaunchSpec,
    format_command,
    launch_command,
    mpirun_command,
    sbatch_script,
)
from harness.config import load_job
from tests.conftest import ROOT, run_harness

FINAL = "jobs/asc19-final.yaml"

#: The line every attempt of a Slurm job writes first in its log.
ATTEMPT = ('echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) harness: Slurm job ${SLURM_JOB_ID:-?} attempt '
           '$((${SLURM_RESTART_COUNT:-0} + 1)) (SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}) '
           'on ${SLURM_JOB_NODELIST:-?}"')


def test_final_mpirun_line_has_16_ranks() -> None:
    job = load_job(ROOT / FINAL)
    cmd = mpirun_command(LaunchSpec.of(job), FINAL, python="python", mpirun="mpirun")
    assert format_command(cmd) == (
        "mpirun -np 16 --host node01:4,node02:4,node03:4,node04:4 --map-by ppr:4:node "
        "--bind-to socket -x PYTHONUNBUFFERED=1 -x OMP_NUM_THREADS=4 -x NCCL_DEBUG=WARN "
        "python -m harness.train --job jobs/asc19-final.yaml")


def test_demo_mpirun_line_oversubscribes_and_runs_as_root() -> None:
    job = load_job(ROOT / "jobs/demo.yaml")
    cmd = mpirun_command(LaunchSpec.of(job), "jobs/demo.yaml", python="py",
                         mpirun="/x/mpirun",
                         module="harness.infer", args=["--set", "train.steps=3"],
                         allow_root=True)
    assert format_command(cmd) == (
        "/x/mpirun -np 2 --allow-run-as-root --map-by ppr:2:node:OVERSUBSCRIBE --bind-to none "
        "-x PYTHONUNBUFFERED=1 -x OMP_NUM_THREADS=1 -x OMPI_MCA_btl=self,sm "
        "-x OMPI_MCA_pml=ob1 py -m harness.infer --job jobs/demo.yaml --set train.steps=3")


def test_final_sbatch_script() -> None:
    job = load_job(ROOT / FINAL, ["launch.partition=gpu", "launch.account=asc"])
    script = sbatch_script(LaunchSpec.of(job), FINAL, python="python", workdir="/shared/harness")
    assert script == """#!/bin/bash
#SBATCH --job-name=asc19-final
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=4
#SBATCH --gpus-per-node=4
#SBATCH --nodelist=node01,node02,node03,node04
#SBATCH --exclusive
#SBATCH --time=04:00:00
#SBATCH --partition=gpu
#SBATCH --account=asc
#SBATCH --chdir=/shared/harness
#SBATCH --output=/shared/harness/runs/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@120

set -euo pipefail
cd /shared/harness
mkdir -p runs
""" + ATTEMPT + """
export PYTHONUNBUFFERED=1
export PMIX_MCA_psec=native
export PMIX_MCA_gds=hash
export OMP_NUM_THREADS=4
export NCCL_DEBUG=WARN

srun --kill-on-bad-exit=1 --cpus-per-task=4 --cpu-bind=sockets --mpi=pmix python \
-m harness.train --job jobs/asc19-final.yaml --resume auto
"""


def test_sbatch_script_is_valid_bash(tmp_path) -> None:
    job = load_job(ROOT / FINAL)
    path = tmp_path / "job.sbatch"
    path.write_text(sbatch_script(LaunchSpec.of(job), FINAL))
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0


def test_cli_dry_run_prints_the_line() -> None:
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert " -np 16 " in line
    assert line.endswith("--map-by ppr:4:node --bind-to socket -x PYTHONUNBUFFERED=1 "
                         "-x OMP_NUM_THREADS=4 -x NCCL_DEBUG=WARN python -m harness.train "
                         "--job jobs/asc19-final.yaml")


def test_cli_slurm_writes_script(tmp_path) -> None:
    out = tmp_path / "final.sbatch"
    proc = run_harness("launch", str(ROOT / FINAL), "--scheduler", "slurm", "-o", str(out),
                       "--python", "python")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert ("#SBATCH --nodes=4\n#SBATCH --ntasks-per-node=4\n#SBATCH --cpus-per-task=4\n"
            "#SBATCH --gpus-per-node=4") in text
    assert text.rstrip().endswith(f"--job {ROOT / FINAL} --resume auto")


@pytest.mark.parametrize("sub", ["doctor", "launch"])
def test_every_subcommand_has_help(sub: str) -> None:
    proc = run_harness(sub, "--help")
    assert proc.returncode == 0
    assert "usage: harness " + sub in proc.stdout


def test_top_level_help_lists_subcommands() -> None:
    from harness.cli import SUBCOMMANDS

    proc = run_harness("--help")
    assert proc.returncode == 0
    for name in SUBCOMMANDS:
        assert name in proc.stdout


# ------------------------------------------------------------- every launcher (issue #14)

FINAL_LINES = {
    "openmpi": "mpirun -np 16 --host node01:4,node02:4,node03:4,node04:4 --map-by ppr:4:node "
               "--bind-to socket -x PYTHONUNBUFFERED=1 -x OMP_NUM_THREADS=4 -x NCCL_DEBUG=WARN "
               "python -m harness.train --job jobs/asc19-final.yaml",
    "mpich": "mpiexec -n 16 -ppn 4 -hosts node01,node02,node03,node04 -bind-to socket "
             "-genv PYTHONUNBUFFERED 1 -genv OMP_NUM_THREADS 4 -genv NCCL_DEBUG WARN "
             "python -m harness.train --job jobs/asc19-final.yaml",
    "intelmpi": "mpiexec -n 16 -ppn 4 -hosts node01,node02,node03,node04 "
                "-genv PYTHONUNBUFFERED 1 -genv I_MPI_PIN_DOMAIN socket -genv OMP_NUM_THREADS 4 "
                "-genv NCCL_DEBUG WARN python -m harness.train --job jobs/asc19-final.yaml",
    "srun": "env PYTHONUNBUFFERED=1 PMIX_MCA_psec=native PMIX_MCA_gds=hash OMP_NUM_THREADS=4 "
            "NCCL_DEBUG=WARN srun --nodes=4 --ntasks=16 --ntasks-per-node=4 "
            "--nodelist=node01,node02,node03,node04 --cpus-per-task=4 --cpu-bind=sockets "
            "--kill-on-bad-exit=1 --mpi=pmix python -m harness.train --job jobs/asc19-final.yaml",
    "torchrun": "env PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 NCCL_DEBUG=WARN python -m "
                "torch.distributed.run --nnodes 4 --nproc-per-node 4 --rdzv-backend c10d "
                "--rdzv-endpoint node01:29500 --rdzv-id asc19-final "
                "-m harness.train --job jobs/asc19-final.yaml",
}


@pytest.mark.parametrize("launcher", sorted(FINAL_LINES))
def test_final_line_per_launcher(launcher: str) -> None:
    job = load_job(ROOT / FINAL, [f"launch.launcher={launcher}"])
    exe = {"mpich": "mpiexec", "intelmpi": "mpiexec"}.get(launcher)
    cmd = launch_command(LaunchSpec.of(job), FINAL, python="python", executable=exe)
    assert format_command(cmd) == FINAL_LINES[launcher]


DEMO_LINES = {  # one node, 2 ranks, oversubscribed: nothing may be bound
    # Open MPI's shared-memory settings travel as environment (Hydra refuses --mca)
    "openmpi": "mpirun -np 2 --map-by ppr:2:node:OVERSUBSCRIBE --bind-to none "
               "-x PYTHONUNBUFFERED=1 -x OMP_NUM_THREADS=1 -x OMPI_MCA_btl=self,sm "
               "-x OMPI_MCA_pml=ob1 py -m harness.infer --job j.yaml --set train.steps=3",
    "mpich": "mpirun -n 2 -ppn 2 -bind-to none -genv PYTHONUNBUFFERED 1 -genv OMP_NUM_THREADS 1 "
             "-genv OMPI_MCA_btl self,sm -genv OMPI_MCA_pml ob1 "
             "py -m harness.infer --job j.yaml --set train.steps=3",
    "intelmpi": "mpirun -n 2 -ppn 2 -genv PYTHONUNBUFFERED 1 -genv I_MPI_PIN 0 "
                "-genv OMP_NUM_THREADS 1 -genv OMPI_MCA_btl self,sm -genv OMPI_MCA_pml ob1 "
                "py -m harness.infer --job j.yaml --set train.steps=3",
    "srun": "env PYTHONUNBUFFERED=1 PMIX_MCA_psec=native PMIX_MCA_gds=hash OMP_NUM_THREADS=1 "
            "OMPI_MCA_btl=self,sm OMPI_MCA_pml=ob1 "
            "srun --nodes=1 --ntasks=2 --ntasks-per-node=2 --overcommit --cpus-per-task=1 "
            "--kill-on-bad-exit=1 --mpi=pmix py -m harness.infer --job j.yaml "
            "--set train.steps=3",
    "torchrun": "env PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OMPI_MCA_btl=self,sm "
                "OMPI_MCA_pml=ob1 py -m torch.distributed.run "
                "--nnodes 1 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint "
                "localhost:29500 --rdzv-id demo -m harness.infer --job j.yaml "
                "--set train.steps=3",
}


@pytest.mark.parametrize("launcher", sorted(DEMO_LINES))
def test_demo_line_per_launcher(launcher: str) -> None:
    job = load_job(ROOT / "jobs/demo.yaml", [f"launch.launcher={launcher}"])
    cmd = launch_command(LaunchSpec.of(job), "j.yaml", python="py", module="harness.infer",
                         args=["--set", "train.steps=3"])
    assert format_command(cmd) == DEMO_LINES[launcher]


@pytest.mark.parametrize("bind,ompi,hydra,intel,srun", [
    ("core", "core", "core", "I_MPI_PIN_DOMAIN core", "cores"),
    ("socket", "socket", "socket", "I_MPI_PIN_DOMAIN socket", "sockets"),
    ("numa", "numa", "numa", "I_MPI_PIN_DOMAIN numa", "ldoms"),
    ("none", "none", "none", "I_MPI_PIN 0", "none"),
])
def test_bindings_mean_the_same_for_every_launcher(bind: str, ompi: str, hydra: str,
                                                   intel: str, srun: str) -> None:
    def line(launcher: str) -> str:
        job = load_job(ROOT / FINAL, [f"launch.launcher={launcher}", f"launch.bind_to={bind}"])
        return format_command(launch_command(LaunchSpec.of(job), FINAL))

    assert f" --bind-to {ompi} " in line("openmpi")
    assert f" -bind-to {hydra} " in line("mpich")
    assert f" -genv {intel} " in line("intelmpi") and "-bind-to" not in line("intelmpi")
    job = load_job(ROOT / FINAL, [f"launch.bind_to={bind}"])
    if bind == "none":  # srun's default; saying it warns on clusters without task affinity
        assert "--cpu-bind" not in line("srun")
        assert "--cpu-bind" not in sbatch_script(LaunchSpec.of(job), FINAL)
        return
    assert f" --cpu-bind={srun} " in line("srun")
    assert f"srun --kill-on-bad-exit=1 --cpus-per-task=4 --cpu-bind={srun} " in sbatch_script(
        LaunchSpec.of(job), FINAL)


def test_torchrun_on_several_nodes_needs_hosts() -> None:
    from fileio.user_error import UserError

    job = load_job(ROOT / FINAL, ["launch.launcher=torchrun", "launch.hosts=[]"])
    with pytest.raises(UserError, match="launch.hosts: torchrun on 4 nodes needs the host"):
        launch_command(LaunchSpec.of(job), FINAL)


def test_torchrun_sbatch_script() -> None:
    job = load_job(ROOT / FINAL, ["launch.launcher=torchrun", "launch.signal_lead_s=300",
                                  "launch.rdzv_port=29400"])
    script = sbatch_script(LaunchSpec.of(job), FINAL, python="/venv/bin/python",
                           workdir="/shared/harness")
    assert script == """#!/bin/bash
#SBATCH --job-name=asc19-final
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --nodelist=node01,node02,node03,node04
#SBATCH --exclusive
#SBATCH --time=04:00:00
#SBATCH --chdir=/shared/harness
#SBATCH --output=/shared/harness/runs/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@300

set -euo pipefail
cd /shared/harness
mkdir -p runs
""" + ATTEMPT + """
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=4
export NCCL_DEBUG=WARN

head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun --kill-on-bad-exit=1 --nodes=4 --ntasks=4 --ntasks-per-node=1 --cpus-per-task=16 \
/venv/bin/python -m torch.distributed.run --nnodes 4 --nproc-per-node 4 \
--rdzv-backend c10d --rdzv-endpoint "$head:29400" --rdzv-id "$SLURM_JOB_ID" \
-m harness.train --job jobs/asc19-final.yaml --resume auto
"""


def test_mpich_sbatch_uses_pmi2_and_no_signal_when_disabled() -> None:
    job = load_job(ROOT / "jobs/smoke.yaml", ["launch.launcher=mpich", "launch.signal_lead_s=0",
                                              "launch.run_dir=/scratch/runs"])
    script = sbatch_script(LaunchSpec.of(job), "j.yaml")
    assert "--signal" not in script
    assert "#SBATCH --output=/scratch/runs/slurm-%j.out\n" in script
    assert "--chdir" not in script
    assert script.endswith("\nsrun --kill-on-bad-exit=1 --cpus-per-task=1 --mpi=pmi2 python -m "
                           "harness.train --job j.yaml --resume auto\n")
    assert "PMIX_MCA" not in script  # pmi2: no PMIx settings
    job = load_job(ROOT / "jobs/smoke.yaml", ["launch.launcher=intelmpi", "launch.srun_mpi=pmix"])
    assert " --mpi=pmix " in sbatch_script(LaunchSpec.of(job), "j.yaml")


@pytest.mark.parametrize("run_dir,workdir,expected", [
    ("runs%j", "/w", "launch.run_dir: '/w/runs%j' cannot go in an #SBATCH line"),
    ("runs", "/w\\x", "working directory: '/w\\\\x' cannot go in an #SBATCH line"),
])
def test_sbatch_refuses_paths_slurm_would_misread(run_dir: str, workdir: str,
                                                  expected: str) -> None:
    from fileio.user_error import UserError

    job = load_job(ROOT / "jobs/smoke.yaml", [f"launch.run_dir={run_dir}"])
    with pytest.raises(UserError) as info:
        sbatch_script(LaunchSpec.of(job), "j.yaml", workdir=workdir)
    assert expected in str(info.value)


def test_sbatch_quotes_paths_with_spaces() -> None:
    job = load_job(ROOT / "jobs/smoke.yaml", ["launch.run_dir=my runs"])
    script = sbatch_script(LaunchSpec.of(job), "j.yaml", workdir="/a b")
    assert "#SBATCH --chdir='/a b'\n#SBATCH --output='/a b/my runs'/slurm-%j.out\n" in script
    assert "\ncd '/a b'\nmkdir -p 'my runs'\necho " in script


# ------------------------------------------------------------- hostile values (issue #13)

STUB = """#!/bin/bash
# Records its argv and the exported values, NUL-separated, one file per call.
f=$(mktemp "$STUB_OUT/call.XXXXXX")
{ printf '%s\\0' "$(basename "$0")" "$@"; printf '\\1'
  for v in X Y Z W; do printf '%s\\0' "${!v-UNSET}"; done; } > "$f"
"""

# Values that are valid but would run commands if pasted into a shell line unquoted.
EVIL = {"X": "$(touch {m}/m1)", "Y": "'; touch {m}/m2; '", "Z": "`touch {m}/m3`",
        "W": "a,b c\"d\\e;touch {m}/m4 #"}


def _stubs(tmp_path):
    """A PATH folder with recording mpirun/mpiexec/srun/sbatch, a scontrol that names one
    node, and a Python stub whose very name is hostile."""
    bin_dir, out, marks = tmp_path / "bin", tmp_path / "calls", tmp_path / "marks"
    for d in (bin_dir, out, marks):
        d.mkdir()
    for name in ("mpirun", "mpiexec", "srun", "sbatch", "py $(touch MARK);x"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho node01\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in EVIL}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", STUB_OUT=str(out))
    return bin_dir, out, marks, env


def _calls(out) -> list[tuple[list[str], list[str]]]:
    calls = []
    for f in sorted(out.iterdir()):
        argv, env = f.read_bytes().split(b"\1")
        calls.append(([a.decode() for a in argv.split(b"\0")[:-1]],
                      [e.decode() for e in env.split(b"\0")[:-1]]))
    return calls


def _evil_job(marks, launcher: str, run_dir: str = "runs"):
    env = {k: v.format(m=marks) for k, v in EVIL.items()}
    return load_job(ROOT / "jobs/smoke.yaml", [
        f"launch.launcher={launcher}", f"launch.env={json.dumps(env)}",
        f"launch.run_dir={json.dumps(run_dir)}", f"launch.mpi_args=['--x', '$(touch {marks}/m5)']"])


@pytest.mark.parametrize("launcher", sorted(FINAL_LINES))
def test_hostile_values_do_not_run_through_the_printed_line(tmp_path, launcher: str) -> None:
    bin_dir, out, marks, env = _stubs(tmp_path)
    job = _evil_job(marks, launcher)
    python = str(bin_dir / "py $(touch MARK);x")
    args = ["--set", f"description=$(touch {marks}/m6)", f"`touch {marks}/m7`"]
    job_path = f"j.yaml; touch {marks}/m8"
    cmd = launch_command(LaunchSpec.of(job), job_path, python=python, args=args)
    proc = subprocess.run(["bash", "-c", format_command(cmd)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in marks.iterdir()) == [] and not (tmp_path / "MARK").exists()
    ((argv, seen_env),) = _calls(out)
    if launcher == "torchrun":  # `env ... python -m torch.distributed.run`: Python is the stub
        assert argv[0] == "py $(touch MARK);x" and argv[-len(args) - 3:] == [
            "harness.train", "--job", job_path, *args]
        assert seen_env == [EVIL[k].format(m=marks) for k in "XYZW"]
    else:
        assert argv[-len(args) - 5:] == [python, "-m", "harness.train", "--job", job_path, *args]
        assert f"$(touch {marks}/m5)" in argv or launcher == "srun"
    if launcher in ("srun", "torchrun"):
        assert seen_env == [EVIL[k].format(m=marks) for k in "XYZW"]
    if launcher == "openmpi":
        assert f"X=$(touch {marks}/m1)" in argv
    if launcher in ("mpich", "intelmpi"):
        i = argv.index("W")
        assert argv[i - 1: i + 2] == ["-genv", "W", EVIL["W"].format(m=marks)]


@pytest.mark.parametrize("launcher", ["openmpi", "srun", "torchrun"])
def test_hostile_values_do_not_run_through_the_sbatch_script(tmp_path, launcher: str) -> None:
    bin_dir, out, marks, env = _stubs(tmp_path)
    workdir = tmp_path / "work dir $(touch MARK)"
    workdir.mkdir()
    job = _evil_job(marks, launcher, run_dir=f"runs $(touch {marks}/m9)")
    python = str(bin_dir / "py $(touch MARK);x")
    args = ["--set", f"description=$(touch {marks}/m6)"]
    job_path = f"j.yaml; touch {marks}/m8"
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(LaunchSpec.of(job), job_path, python=python, args=args,
                                    workdir=str(workdir)))
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    env.update(SLURM_JOB_NODELIST="node[01-04]", SLURM_JOB_ID="42")  # as Slurm sets them
    proc = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in marks.iterdir()) == []
    assert not (tmp_path / "MARK").exists() and not (workdir / "MARK").exists()
    assert (workdir / f"runs $(touch {marks}/m9)").is_dir()
    ((argv, seen_env),) = _calls(out)
    assert argv[0] == "srun" and "--kill-on-bad-exit=1" in argv
    assert argv[-len(args) - 4:] == ["--job", job_path, "--resume", "auto", *args]
    assert python in argv
    assert seen_env == [EVIL[k].format(m=marks) for k in "XYZW"]
    if launcher == "torchrun":
        assert "node01:29500" in argv and argv[argv.index("--rdzv-id") + 1] == "42"


# ----------------------------------------------------------------- harness launch --submit

def test_cli_slurm_creates_the_log_folder_and_submits(tmp_path) -> None:
    _, out, _, env = _stubs(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text("name: sub\nlaunch:\n  run_dir: logs/deep\n")
    proc = run_harness("launch", str(job), "--submit", "--python", "python", cwd=tmp_path,
                       env=env)
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "logs/deep/sub.sbatch"
    assert (tmp_path / "logs/deep").is_dir() and script.is_file()
    assert f"#SBATCH --output={tmp_path}/logs/deep/slurm-%j.out\n" in script.read_text()
    ((argv, _),) = [c for c in _calls(out) if c[0][0] == "sbatch"]  # (srun --mpi=list asked)
    assert argv == ["sbatch", str(script.relative_to(tmp_path))]


def test_cli_submit_without_sbatch_is_one_line(tmp_path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: sub\n")
    proc = run_harness("launch", str(job), "--submit", cwd=tmp_path,
                       env={**os.environ, "PATH": "/nonexistent"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        ("harness: error: --submit: sbatch not found on PATH (wrote runs/sub.sbatch; submit it "
         "from a Slurm login node)")]
    proc = run_harness("launch", str(job), "--submit", "--scheduler", "mpirun", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "harness: error: --submit: only with --scheduler slurm"


def _plan(tmp_path, nodes: int = 2) -> str:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"budget_w": 2800, "headroom_w": 100, "nodes": nodes,
                                "gpus_per_node": 3,
                                "caps_w": [[190, 190, 190], [200, 200]][:nodes]}))
    return str(path)


def test_cli_dry_run_with_a_plan_launches_the_planned_nodes_and_caps(tmp_path) -> None:
    plan = _plan(tmp_path)
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python", "--plan", plan)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert " -np 6 " in line and "--host node01:3,node02:3 --map-by ppr:3:node" in line
    assert f"-x FACESR_POWER_PLAN={plan} " in line
    for ov in ("launch.nodes=2", "launch.ranks_per_node=3", "launch.gpus_per_node=3",
               "power.budget_w=2800", "power.headroom_w=100", f"power.plan={plan}",
               f"launch.env.FACESR_POWER_PLAN={plan}"):
        assert f" --set {ov}" in line, ov
    # Every rank loads the same job: the overrides it gets rebuild the planned launch.
    import shlex

    words = shlex.split(line)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    job = load_job(ROOT / FINAL, sets)
    assert (job.launch.nodes, job.launch.ranks_per_node, job.power.plan) == (2, 3, plan)
    assert job.launch.env["FACESR_POWER_PLAN"] == plan
    assert job.launch.env["NCCL_DEBUG"] == "WARN"  # the job's own env is kept


def test_the_jobs_power_plan_key_launches_the_plan_too(tmp_path) -> None:
    plan = _plan(tmp_path)
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python",
                       "--set", f"power.plan={plan}")
    assert proc.returncode == 0, proc.stderr
    assert " -np 6 " in proc.stdout and f"FACESR_POWER_PLAN={plan}" in proc.stdout


def test_a_plan_beyond_the_hosts_or_missing_is_one_line(tmp_path) -> None:
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python", "--plan",
                       _plan(tmp_path), "--set", "launch.nodes=1", "--set", "launch.hosts=[a]")
    assert proc.returncode == 2
    assert "the plan uses 2 nodes but launch.hosts lists 1" in proc.stderr
    proc = run_harness("launch", FINAL, "--dry-run", "--plan", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and "no such plan file" in proc.stderr


# ------------------------------------------------------- MPICH / Intel MPI (issue 29)

@pytest.mark.mpi_impl
def test_hydra_inside_slurm_starts_its_proxies_without_an_srun_mpi_plugin() -> None:
    """On the test bed (MpiDefault=pmix) Hydra's srun-started proxies otherwise hand MPICH
    both PMI_SIZE and PMIX_NAMESPACE, and MPI_Init aborts."""
    job = load_job(ROOT / "jobs/smoke.yaml", ["launch.launcher=mpich", "launch.nodes=2",
                                              "launch.ranks_per_node=1"])
    line = format_command(launch_command(LaunchSpec.of(job), "j.yaml", python="py", in_slurm=True))
    assert line == ("env SLURM_MPI_TYPE=none mpirun -n 2 -ppn 1 -bind-to none "
                    "-genv PYTHONUNBUFFERED 1 -genv OMP_NUM_THREADS 1 "
                    "py -m harness.train --job j.yaml")
    openmpi = load_job(ROOT / "jobs/smoke.yaml", ["launch.launcher=openmpi"])
    assert "SLURM_MPI_TYPE" not in format_command(launch_command(openmpi, "j", in_slurm=True))


@pytest.mark.mpi_impl
@pytest.mark.parametrize("launcher", ["mpich", "intelmpi"])
def test_hydra_refuses_open_mpi_arguments_in_one_line(launcher: str) -> None:
    from fileio.user_error import UserError

    job = load_job(ROOT / "jobs/smoke.yaml", [f"launch.launcher={launcher}",
                                              "launch.mpi_args=[--mca, btl, 'self,sm']"])
    with pytest.raises(UserError) as info:
        launch_command(LaunchSpec.of(job), "j.yaml")
    assert str(info.value) == (
        "launch.mpi_args: --mca btl self,sm holds Open MPI options, which Hydra's mpiexec "
        "refuses: give Open MPI's MCA settings as launch.env (OMPI_MCA_btl: self,sm) or drop "
        "them")


@pytest.mark.mpi_impl
def test_auto_unresolved_is_open_mpi_and_sbatch_picks_the_plugin_per_mpi() -> None:
    auto = load_job(ROOT / "jobs/smoke.yaml")
    assert auto.launch.launcher == "auto"
    assert launch_command(auto, "j.yaml")[:2] == ["mpirun", "-np"]
    for launcher, plugin in (("auto", "pmix"), ("openmpi", "pmix"), ("mpich", "pmi2"),
                             ("intelmpi", "pmi2")):
        job = load_job(ROOT / "jobs/smoke.yaml", [f"launch.launcher={launcher}"])
        assert f" --mpi={plugin} " in sbatch_script(LaunchSpec.of(job), "j.yaml")


def test_missing_srun_plugin_is_one_line_before_the_queue(tmp_path) -> None:
    """An srun whose `--mpi=list` lacks the job's plugin: a warning when the script is only
    written, a one-line error (nothing submitted) with --submit."""
    _, out, _, env = _stubs(tmp_path)
    (tmp_path / "bin" / "srun").write_text("#!/bin/bash\nprintf 'MPI plugin types are...\\n"
                                           "\\tpmix\\n\\tnone\\n'\n")
    job = tmp_path / "job.yaml"
    job.write_text("name: sub\nlaunch:\n  launcher: mpich\n")
    proc = run_harness("launch", str(job), "--scheduler", "slurm", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    text = ("launch.srun_mpi: this Slurm's srun has no --mpi=pmi2 plugin (MPICH ranks need it; "
            "srun --mpi=list: none, pmix): ask the admins for it, or set launch.srun_mpi")
    assert proc.stderr.strip().splitlines() == [f"harness: warning: {text}"]
    proc = run_harness("launch", str(job), "--submit", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"harness: error: {text}"]
    assert not [c for c in _calls(out) if c[0][0] == "sbatch"]


def test_cli_resume_passes_through_to_train() -> None:
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python", "--resume", "auto")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("python -m harness.train --job jobs/asc19-final.yaml "
                                        "--resume auto")
    proc = run_harness("launch", FINAL, "--dry-run", "--workload", "infer", "--resume", "auto")
    assert proc.returncode != 0 and "--resume: only with --workload train" in proc.stderr


def test_a_plan_that_changes_the_ranks_says_so_in_one_line_outside_dry_run_too(tmp_path) -> None:
    from harness.commands.launch import plan_change_line

    job = load_job(ROOT / FINAL)
    planned = load_job(ROOT / FINAL, ["launch.nodes=2", "launch.ranks_per_node=3",
                                      "launch.hosts=[a, b]"])
    assert plan_change_line(job.launch, planned.launch) == (
        "--plan changes the job: ranks 16 -> 6 (nodes 4 -> 2, ranks per node 4 -> 3); "
        "threads per rank follow (cores / local ranks)")
    assert plan_change_line(job.launch, planned.launch, threads_per_rank=4) == (
        "--plan changes the job: ranks 16 -> 6 (nodes 4 -> 2, ranks per node 4 -> 3)")
    assert plan_change_line(job.launch, job.launch) is None
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python", "--plan",
                       _plan(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "--plan" in ln]
    assert lines == ["harness: --plan changes the job: ranks 16 -> 6 (nodes 4 -> 2, ranks per "
                     "node 4 -> 3); threads per rank follow (cores / local ranks)"]
    # A plan that keeps the job's ranks says nothing.
    proc = run_harness("launch", FINAL, "--dry-run", "--python", "python", "--plan",
                       _plan(tmp_path), "--set", "launch.nodes=2", "--set",
                       "launch.ranks_per_node=3", "--set", "launch.hosts=[a, b]")
    assert proc.returncode == 0, proc.stderr
    assert "--plan changes" not in proc.stderr
