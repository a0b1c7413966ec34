"""Inputs refused in one line, and the facts the report shows (issue #22, items 3 and 4)."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from fileio.user_error import UserError
from harness.config import load_job, parse_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_duplicate_keys_are_refused_with_key_and_line(tmp_path: Path) -> None:
    job = tmp_path / "dup.yaml"
    job.write_text("name: a\ntrain:\n  steps: 5\n  lr: 1.0e-3\n  steps: 7\n")
    with pytest.raises(UserError) as err:
        load_job(job)
    assert str(err.value) == (f"{job}: line 5, column 3: refused: duplicate key 'steps' "
                              "(first on line 3)")
    assert parse_yaml("a: 1\nb: {a: 2}\n", "x") == {"a": 1, "b": {"a": 2}}  # not across maps


@pytest.mark.parametrize(("override", "words"), [
    ("launch.nodes=1000000", "launch.nodes: must be between 1 and 200,000, got 1,000,000"),
    ("launch.ranks_per_node=100000", "launch.ranks_per_node: must be between 1 and 1024"),
    ("power.budget_w=1e12", "power.budget_w: 1e+12 W is beyond any cluster"),
    ("name=" + "a" * 3000, "name: 3,000 characters long; at most 100"),
])
def test_absurd_sizes_get_a_short_error(override: str, words: str) -> None:
    with pytest.raises(UserError) as err:
        load_job(ROOT / "jobs" / "demo.yaml", overrides=[override])
    assert words in str(err.value) and len(str(err.value)) < 150


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR declares width x height, with one tiny (wrong) IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    from harness.data.imageio import read_rgb

    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 10_000, 10_000)  # PIL alone would decode it
    assert bomb.stat().st_size < 100
    with pytest.raises(UserError, match=r"declares 10000x10000 pixels, more than the "
                                        r"67,108,864 .*refused before decoding"):
        read_rgb(bomb)


def test_a_dangling_link_in_an_input_folder_is_named(tmp_path: Path) -> None:
    import shutil

    from harness.data.imageio import list_images
    shutil.copy(ROOT / "data" / "asc19-val" / "val_HR" / "301.png", tmp_path / "301.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "302.png")
    with pytest.raises(UserError, match=r"1 image links point nowhere \(302\.png\)"):
        list_images(tmp_path)


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "demo-20260101-000000"
    run.mkdir()
    (tmp_path / "demo-latest").symlink_to(run.name)
    (run / "summary.json").write_text(json.dumps({
        "job": "demo", "steps": 297, "precision": "fp32", "stopped_early": True,
        "stopped_by": "train.max_minutes (8)", "world_size": 2}))
    (run / "manifest.json").write_text(json.dumps({
        "run_dir": str(run), "world_size": 2, "launch_line": {
            "argv": ["python", "-m", "harness.train", "--job", "jobs/demo.yaml"],
            "launcher": "mpirun", "ranks": 2, "launcher_line": None}}))
    return tmp_path / "demo-latest"


def test_report_shows_folder_launch_line_stop_and_precision(tmp_path: Path) -> None:
    from reports.render import _run_facts
    from reports.rundata import load_run

    run = load_run(_run(tmp_path))
    facts = dict(_run_facts(run, run.summary))
    assert facts["run directory"] == (f"{tmp_path / 'demo-20260101-000000'} "
                                      f"(given as {tmp_path / 'demo-latest'})")
    assert facts["launched as"] == ("mpirun (2 ranks): python -m harness.train --job "
                                    "jobs/demo.yaml")
    assert facts["stopped by"] == "train.max_minutes (8)"
    assert facts["precision (training / inference / scoring)"] == "fp32 / — / —"


@pytest.mark.parametrize(("name", "doc", "words"), [
    ("summary.json", [1, 2], "summary.json: expected a JSON object, got a list"),
    ("summary.json", {"steps": "297"}, 'summary.json: steps: expected a number, got a string'),
    ("manifest.json", "text", "manifest.json: expected a JSON object, got a string"),
])
def test_report_of_files_with_wrong_types_is_one_line(tmp_path: Path, name: str, doc: object,
                                                       words: str) -> None:
    from reports.rundata import load_run

    run = _run(tmp_path)
    (run / name).write_text(json.dumps(doc))
    with pytest.raises(UserError) as err:
        load_run(run)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_launch_line_names_the_launcher_from_its_environment() -> None:
    from harness.outputs.run_folders import launch_line

    line = launch_line({"OMPI_COMM_WORLD_SIZE": "2"})
    assert line["launcher"] == "mpirun" and line["ranks"] == 2
    assert line["argv"][1:3] == ["-m", "pytest"] or line["argv"]
    assert launch_line({"HARNESS_LAUNCH_LINE": "mpirun -np 2 x"})["launcher_line"] == \
        "mpirun -np 2 x"


@pytest.mark.mpi_impl
def test_report_names_the_mpi_library_the_ranks_loaded(tmp_path: Path) -> None:
    from reports.render import render_report
    from reports.rundata import load_run

    run = _run(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(launcher="mpich", mpi="MPICH Version: 5.0.2")
    (run / "manifest.json").write_text(json.dumps(manifest))
    html = render_report([load_run(run)])
    assert "<th>MPI library</th><td>MPICH Version: 5.0.2</td>" in html
    manifest.pop("mpi")  # a run folder from before: the row says it is not known
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert "<th>MPI library</th><td>—</td>" in render_report([load_run(run)])
