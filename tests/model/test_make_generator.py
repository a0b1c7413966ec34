"""make_generator: the one path from the model section to a generator (train, check, infer)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fileio.user_error import UserError
from harness.config import ModelConfig
from harness.model.generators import build_generator, make_generator, model_kwargs

TINY = ModelConfig(name="srresnet", args={"num_feat": 8, "num_blocks": 1})


def _saved(tmp_path: Path, cfg: ModelConfig, shift: float = 0.5) -> tuple[Path, dict]:
    torch.manual_seed(3)
    net = build_generator(cfg.name, model_kwargs(cfg))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(shift)  # away from any fresh initialisation
    path = tmp_path / "w.pt"
    torch.save({"model": net.state_dict(), "model_name": cfg.name,
                "model_kwargs": model_kwargs(cfg)}, path)
    return path, net.state_dict()


def _equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_train_builds_fresh_weights_from_the_seed(tmp_path: Path) -> None:
    torch.manual_seed(7)
    model, source = make_generator(TINY, "train")
    torch.manual_seed(7)
    again = build_generator(TINY.name, model_kwargs(TINY))
    assert source == "fresh" and model.training
    assert _equal(model.state_dict(), again.state_dict())


def test_train_starts_from_init_from(tmp_path: Path) -> None:
    path, weights = _saved(tmp_path, TINY)
    model, source = make_generator(TINY, "train", init_from=path)
    assert source == str(path)
    assert _equal(model.state_dict(), weights)


def test_check_reads_no_weights_into_memory_and_refuses_what_train_refuses(tmp_path) -> None:
    path, _ = _saved(tmp_path, TINY)
    skeleton, source = make_generator(TINY, "check", init_from=path)
    assert source == "meta"
    assert all(p.is_meta for p in skeleton.parameters())
    other = ModelConfig(name="srresnet", args={"num_feat": 16, "num_blocks": 1})
    with pytest.raises(UserError, match=r"model.init_from: .* holds srresnet"):
        make_generator(other, "check", init_from=path)
    with pytest.raises(UserError, match=r"model.init_from: .* holds srresnet"):
        make_generator(other, "train", init_from=path)
    bicubic = ModelConfig(name="bicubic")
    for use in ("check", "train"):
        with pytest.raises(UserError, match=r"^model.name: bicubic has no trainable "
                           r"parameters \(use `harness infer`"):
            make_generator(bicubic, use)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="no trainable parameters; sweep it"):
        make_generator(bicubic, "train", untrainable_hint="; sweep it with --workload infer")


def test_infer_loads_the_checkpoint_whose_own_spec_wins(tmp_path: Path) -> None:
    path, weights = _saved(tmp_path, TINY)
    other = ModelConfig(name="srresnet", args={"num_feat": 16, "num_blocks": 2})
    model, source = make_generator(other, "infer", checkpoint=str(path))
    assert source == str(path) and not model.training
    assert _equal(model.state_dict(), weights)


def test_infer_without_weights(tmp_path: Path) -> None:
    model, source = make_generator(ModelConfig(name="bicubic"), "infer")
    assert source == "untrained (no parameters)"
    lr = torch.rand(1, 3, 7, 6)
    assert model(lr).shape == (1, 3, 28, 24)
    with pytest.raises(UserError, match="no --checkpoint given and no shipped weights"):
        make_generator(ModelConfig(name="srresnet", args={"num_feat": 3, "num_blocks": 1}),
                       "infer")
