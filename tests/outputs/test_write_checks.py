"""The one output-path check (harness/outputs/write_checks.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fileio.user_error import UserError
from harness.cluster.distributed import SingleComm
from harness.outputs.write_checks import agree, check_output, check_output_file


def test_output_may_not_be_contain_or_lie_inside_an_input(tmp_path: Path) -> None:
    lr = tmp_path / "data" / "LR"
    lr.mkdir(parents=True)
    with pytest.raises(UserError, match="is also an input"):
        check_output(tmp_path / "data" / ".." / "data" / "LR", [lr])
    with pytest.raises(UserError, match="contains the input"):
        check_output(tmp_path / "data", [lr])
    with pytest.raises(UserError, match="lies inside the input"):
        check_output(lr / "sr", [lr])
    (tmp_path / "link").symlink_to(lr)
    with pytest.raises(UserError, match="is also an input"):
        check_output(tmp_path / "link", [lr])
    assert check_output(tmp_path / "sr", [lr, None, "embedded:heldout"]) == tmp_path / "sr"


def test_existing_files_need_overwrite_and_protected_never_go(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "1.png").write_bytes(b"x")
    (out / "keep.txt").write_bytes(b"x")
    check_output(out, will_write=["2.png"])
    with pytest.raises(UserError, match="would replace 1 existing file.*1.png.*--overwrite"):
        check_output(out, will_write=["1.png", "2.png"])
    check_output(out, will_write=["1.png"], overwrite=True)
    with pytest.raises(UserError, match="never replaced"):
        check_output(out, will_write=["1.png"], overwrite=True,
                      protected=lambda p: "is precious")
    with pytest.raises(UserError, match="would replace 2"):
        check_output(out)  # no list of names: any entry is a clash


def test_file_where_a_folder_belongs_and_unwritable(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output(tmp_path / "f")
    with pytest.raises(UserError, match="is a file"):
        check_output(tmp_path / "f" / "sub")
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(UserError, match="already exists"):
        check_output_file(tmp_path / "f")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(UserError, match="permission denied"):
            check_output(ro / "x")


def test_agree_raises_the_same_line_everywhere() -> None:
    def bad() -> None:
        raise UserError("nope", exit_code=3)

    with pytest.raises(UserError, match="nope") as info:
        agree(SingleComm(), bad)
    assert info.value.exit_code == 3
    assert agree(SingleComm(), lambda: 5) == 5


def test_a_read_only_file_system_is_named(tmpfs) -> None:
    mnt = tmpfs("ro", "size=64k,ro")
    with pytest.raises(UserError, match=r"--out .*/ro/sr: read-only file system \(cannot "
                                        r"write in .*/ro\)"):
        check_output(mnt / "sr", what="--out")
    with pytest.raises(UserError, match="read-only file system"):
        check_output_file(mnt / "deep" / "report.html")
