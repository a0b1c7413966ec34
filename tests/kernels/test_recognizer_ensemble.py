"""Identity and feature losses over several recognizers at once (issue #30)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fileio.user_error import UserError
from harness.scoring.panel import load_loss_recognizer, parse_loss_panel
from kernels.losses import CombinedLoss, RecognizerEnsemble, feature_loss, identity_loss


class Pool(torch.nn.Module):
    """A differentiable stand-in: a learned projection of the pooled face."""

    def __init__(self, seed: int, size: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.size = size
        self.proj = torch.nn.Linear(3 * size * size, 16)

    def features(self, images: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
        pooled = F.adaptive_avg_pool2d(images, (self.size, self.size))
        return [pooled for _ in layers]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images, (self.size, self.size)).flatten(1)
        return F.normalize(self.proj(pooled), dim=1)


def test_identity_loss_is_the_weighted_mean_of_the_members() -> None:
    a, b = Pool(0, 4), Pool(1, 6)
    ens = RecognizerEnsemble([("a", a, 3.0), ("b", b, 1.0)])
    assert ens.weights == {"a": 0.75, "b": 0.25}
    torch.manual_seed(2)
    sr = torch.rand(5, 3, 112, 96, requires_grad=True)
    hr = torch.rand(5, 3, 112, 96)
    e = ens.embed(sr)
    assert e.shape == (5, 32)
    assert torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-6)
    want = 0.75 * identity_loss(a, sr, hr) + 0.25 * identity_loss(b, sr, hr)
    got = identity_loss(ens, sr, hr)
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    got.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_feature_layers_are_routed_and_weighted() -> None:
    a, b = Pool(0, 4), Pool(1, 6)
    ens = RecognizerEnsemble([("a", a, 1.0), ("b", b, 3.0)])
    sr, hr = torch.rand(2, 3, 112, 96), torch.rand(2, 3, 112, 96)
    feats = ens.features(sr, ["x", "b/y"])
    assert feats[0].shape[-1] == 4 and feats[1].shape[-1] == 6  # bare name: the first member
    want = (0.25 * feature_loss(a, sr, hr, ["x"]) + 0.75 * feature_loss(b, sr, hr, ["y"])) / 2
    assert feature_loss(ens, sr, hr, ["x", "b/y"]).item() == pytest.approx(want.item(),
                                                                         rel=1e-5)
    with pytest.raises(ValueError, match="no member 'c'"):
        ens.features(sr, ["c/z"])
    loss = CombinedLoss(pixel_weight=1.0, identity_weight=1.0, feature_weight=1.0,
                        recognizer=ens, feature_layers=["x", "b/y"])
    total, terms = loss(sr, hr)
    assert torch.isfinite(total) and terms["identity"] > 0 and terms["feature"] > 0


def test_bad_ensembles_are_refused() -> None:
    with pytest.raises(ValueError, match="all weights are 0"):
        RecognizerEnsemble([("a", Pool(0, 4), 0.0)])
    with pytest.raises(ValueError, match="used twice"):
        RecognizerEnsemble([("a", Pool(0, 4), 1.0), ("a", Pool(1, 4), 1.0)])
    assert parse_loss_panel("facenet") == [("facenet", 1.0)]
    assert parse_loss_panel("facenet@0.7, dlib@0.3") == [("facenet", 0.7), ("dlib", 0.3)]
    with pytest.raises(UserError, match="weight 'x' of facenet is not a number"):
        parse_loss_panel("facenet@x")
    with pytest.raises(UserError, match="every weight is 0"):
        parse_loss_panel("facenet@0")


def test_loss_recognizer_of_a_job_spec(tmp_path: Path) -> None:
    from harness.scoring.recognizers.sphereface import Sphere20a

    torch.manual_seed(0)
    path = tmp_path / "s.pth"
    torch.save(Sphere20a(classnum=10, feature=True).state_dict(), path)
    ens = load_loss_recognizer(f"facenet@0.7,sphere20a:{path}@0.3")
    assert isinstance(ens, RecognizerEnsemble)
    assert ens.weights == pytest.approx({"facenet": 0.7, "sphere20a_s": 0.3})
    sr = torch.rand(2, 3, 112, 96)
    assert ens.embed(sr).shape == (2, 512 + 512)
