"""Checkpoints: atomic saves that leave nothing half-written, safe loads, pruning, resume."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from fileio.user_error import UserError
from harness.outputs import checkpoints as ckpt


def test_save_load_roundtrip_with_plain_permissions(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7}
    path = ckpt.save_atomic(state, tmp_path / "run" / "checkpoints" / ckpt.checkpoint_name(7))
    assert path.name == "ckpt-000007.pt"
    back = ckpt.load(path)
    assert back["step"] == 7 and torch.equal(back["model"]["w"], state["model"]["w"])
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = ckpt.save_atomic({"model": {"w": torch.ones(2)}, "step": 1}, tmp_path / "c.pt")
    before = path.read_bytes()
    # Whatever the pickler raises for a lambda (it differs between Python versions): the test is
    # about what is left on disk.
    with pytest.raises(Exception):  # noqa: B017
        ckpt.save_atomic({"model": {"w": torch.ones(2)}, "bad": lambda: 0}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_load_refuses_garbage_and_pickles(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load checkpoint"):
        ckpt.load(tmp_path / "junk.pt")
    torch.save({"step": 1}, tmp_path / "nomodel.pt")
    with pytest.raises(UserError, match="not a harness checkpoint"):
        ckpt.load(tmp_path / "nomodel.pt")

    class Evil:
        def __reduce__(self):  # noqa: ANN204 - pickle protocol
            return (os.system, ("true",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="cannot load checkpoint"):
        ckpt.load(tmp_path / "evil.pt")


def test_latest_prune_and_resolve_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    folder = run / "checkpoints"
    full = {"model": {}, "optimizer": {}, "scheduler": {}}
    for step in (10, 2, 30):
        ckpt.save_atomic({**full, "step": step}, folder / ckpt.checkpoint_name(step))
    ckpt.save_atomic({"model": {}}, folder / ckpt.BEST_NAME)
    assert [s for s, _ in ckpt.list_checkpoints(folder)] == [2, 10, 30]
    assert ckpt.latest(folder) == folder / "ckpt-000030.pt"
    assert ckpt.prune(folder, 2) == [folder / "ckpt-000002.pt"]
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "ckpt-000010.pt",
                                                         "ckpt-000030.pt"]
    with pytest.raises(UserError, match="not a run folder"):
        ckpt.resolve_resume(run)  # no job.yaml / manifest.json yet
    (run / "job.yaml").write_text("name: x\n")
    (run / "manifest.json").write_text("{}")
    run = run.resolve()
    folder = run / "checkpoints"
    assert ckpt.resolve_resume(run) == (run, folder / "ckpt-000030.pt")
    assert ckpt.resolve_resume(folder / "ckpt-000010.pt") == (run, folder / "ckpt-000010.pt")
    with pytest.raises(UserError, match="weights only"):
        ckpt.resolve_resume(folder / ckpt.BEST_NAME)
    ckpt.save_atomic({**full, "step": 1}, tmp_path / "models" / "m.pt")
    with pytest.raises(UserError, match="not a checkpoint of a run folder"):
        ckpt.resolve_resume(tmp_path / "models" / "m.pt")
    with pytest.raises(UserError, match="no such run directory"):
        ckpt.resolve_resume(tmp_path / "missing")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    (tmp_path / "empty" / "job.yaml").write_text("name: x\n")
    (tmp_path / "empty" / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match="no checkpoints"):
        ckpt.resolve_resume(tmp_path / "empty")


def test_checkpoint_metadata_is_checked_before_building(tmp_path: Path) -> None:
    """Crafted metadata (a 100000-wide model) is refused without allocating anything."""
    from harness.model.generators import check_checkpoint_model
    from kernels import build_model

    weights = build_model("srresnet", num_feat=8, num_blocks=1).state_dict()
    ok = {"model": weights, "model_name": "srresnet",
          "model_kwargs": {"num_feat": 8, "num_blocks": 1}}
    assert check_checkpoint_model(ok, "x") == ("srresnet", {"num_feat": 8, "num_blocks": 1})
    for bad, match in (({"model_name": "evil"}, "unknown model"),
                       ({"model_kwargs": {"num_feat": [1]}}, "flat mapping"),
                       ({"model_kwargs": {"num_feat": 100000, "num_blocks": 1}}, "do not match"),
                       ({"model": {"w": 1}}, "not a state dict")):
        with pytest.raises(UserError, match=match):
            check_checkpoint_model({**ok, **bad}, "x")
    with pytest.raises(UserError, match="the job builds"):
        check_checkpoint_model(ok, "x", expect=("srresnet", {"num_feat": 16, "num_blocks": 1}))
