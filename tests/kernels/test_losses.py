"""Tests for kernels/losses.py with a small frozen fake recognizer."""
from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernels import VGGStyleDiscriminator
from kernels.losses import (
    CombinedLoss,
    FeatureKind,
    Recognizer,
    feature_loss,
    identity_loss,
    pixel_loss,
    relativistic_d_loss,
    relativistic_g_loss,
)


class FakeRecognizer(nn.Module):
    """Random two-conv net with ``embed`` and ``features`` like the harness recognizers."""

    def __init__(self, frozen: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 2, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 2, 1)
        self.head = nn.Linear(8, 16)
        self.embed_calls = 0
        self.features_calls = 0
        if frozen:
            self.requires_grad_(False)
        self.eval()

    def _run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        conv1 = torch.tanh(self.conv1(images))
        conv2 = torch.tanh(self.conv2(conv1))
        return {"conv1": conv1, "conv2": conv2}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.embed_calls += 1
        pooled = self._run(images)["conv2"].mean(dim=(2, 3))
        return F.normalize(self.head(pooled), dim=1)

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        self.features_calls += 1
        out = self._run(images)
        return [out[name] for name in layers]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def recognizer() -> FakeRecognizer:
    return FakeRecognizer()


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 32, 28)


# --- pixel -----------------------------------------------------------------------------------


def test_pixel_loss_values() -> None:
    hr = torch.rand(2, 3, 8, 8)
    assert pixel_loss(hr, hr).item() == 0.0
    # Charbonnier at zero error is exactly eps.
    assert pixel_loss(hr, hr, "charbonnier", eps=1e-3).item() == pytest.approx(1e-3, rel=1e-4)
    sr = hr.clone()
    sr[:, :, :4] += 0.1  # half the pixels off by 0.1
    assert pixel_loss(sr, hr).item() == pytest.approx(0.05, rel=1e-5)
    expected = 0.5 * math.sqrt(0.1**2 + 1e-6) + 0.5 * 1e-3
    assert pixel_loss(sr, hr, "charbonnier").item() == pytest.approx(expected, rel=1e-4)
    # Charbonnier approaches L1 for errors much larger than eps and is always above it.
    assert pixel_loss(sr, hr, "charbonnier", eps=1e-6).item() == pytest.approx(0.05, rel=1e-4)
    assert pixel_loss(sr, hr, "charbonnier").item() > pixel_loss(sr, hr).item()


def test_pixel_loss_rejects_bad_input() -> None:
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="kind"):
        pixel_loss(x, x, "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        pixel_loss(x, torch.rand(1, 3, 4, 5))


# --- identity --------------------------------------------------------------------------------


def test_fake_recognizer_satisfies_protocol(recognizer: FakeRecognizer) -> None:
    assert isinstance(recognizer, Recognizer)


def test_identity_loss_zero_for_identical_images(recognizer: FakeRecognizer) -> None:
    hr = _images()
    assert identity_loss(recognizer, hr.clone(), hr).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("cosine", [1.0, 0.8, 0.0, -0.5])
def test_identity_loss_known_cosine(recognizer: FakeRecognizer, cosine: float) -> None:
    sr = _images()
    sr_emb = recognizer.embed(sr)
    # Unit vectors orthogonal to each SR embedding, then targets at the given cosine.
    other = torch.randn_like(sr_emb)
    other = F.normalize(other - (other * sr_emb).sum(1, keepdim=True) * sr_emb, dim=1)
    target = cosine * sr_emb + math.sqrt(1 - cosine**2) * other
    loss = identity_loss(recognizer, sr, hr_embeddings=target)
    assert loss.item() == pytest.approx(1.0 - cosine, abs=1e-5)


def test_identity_loss_matches_manual_mean_cosine(recognizer: FakeRecognizer) -> None:
    sr, hr = _images(), _images()
    manual = 1.0 - (recognizer.embed(sr) * recognizer.embed(hr)).sum(1).mean()
    assert identity_loss(recognizer, sr, hr).item() == pytest.approx(manual.item(), abs=1e-6)
    assert identity_loss(recognizer, sr, hr).item() > 1e-3


def test_identity_loss_gradients_reach_sr_only(recognizer: FakeRecognizer) -> None:
    sr = _images().requires_grad_()
    hr = _images().requires_grad_()
    identity_loss(recognizer, sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None
    assert all(p.grad is None for p in recognizer.parameters())


def test_identity_loss_needs_a_target(recognizer: FakeRecognizer) -> None:
    with pytest.raises(ValueError, match="hr or hr_embeddings"):
        identity_loss(recognizer, _images())


# --- feature ---------------------------------------------------------------------------------


def test_feature_loss_zero_for_identical_images(recognizer: FakeRecognizer) -> None:
    hr = _images()
    assert feature_loss(recognizer, hr.clone(), hr, ["conv1", "conv2"]).item() == 0.0


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_feature_loss_weighted_mean_over_layers(
    recognizer: FakeRecognizer, kind: FeatureKind
) -> None:
    sr, hr = _images(), _images()
    distance = F.l1_loss if kind == "l1" else F.mse_loss
    sr_f = recognizer.features(sr, ["conv1", "conv2"])
    hr_f = recognizer.features(hr, ["conv1", "conv2"])
    d1, d2 = (distance(a, b).item() for a, b in zip(sr_f, hr_f, strict=True))
    assert d1 > 0 and d2 > 0 and d1 != pytest.approx(d2)
    layers = ["conv1", "conv2"]
    equal = feature_loss(recognizer, sr, hr, layers, kind=kind)
    assert equal.item() == pytest.approx((d1 + d2) / 2, rel=1e-5)
    weighted = feature_loss(recognizer, sr, hr, layers, [1.0, 3.0], kind=kind)
    assert weighted.item() == pytest.approx((d1 + 3 * d2) / 4, rel=1e-5)
    precomputed = feature_loss(recognizer, sr, None, ["conv2"], hr_features=[hr_f[1]], kind=kind)
    assert precomputed.item() == pytest.approx(d2, rel=1e-5)


def test_feature_loss_gradients_reach_sr_only(recognizer: FakeRecognizer) -> None:
    sr = _images().requires_grad_()
    hr = _images().requires_grad_()
    feature_loss(recognizer, sr, hr, ["conv1", "conv2"]).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None
    assert all(p.grad is None for p in recognizer.parameters())


def test_feature_loss_validates(recognizer: FakeRecognizer) -> None:
    x = _images(1)
    with pytest.raises(ValueError, match="at least one"):
        feature_loss(recognizer, x, x, [])
    with pytest.raises(ValueError, match="1 weights for 2 layers"):
        feature_loss(recognizer, x, x, ["conv1", "conv2"], [1.0])
    with pytest.raises(ValueError, match="not all 0"):
        feature_loss(recognizer, x, x, ["conv1"], [0.0])
    with pytest.raises(ValueError, match="kind"):
        feature_loss(recognizer, x, x, ["conv1"], kind="l2")  # type: ignore[arg-type]


# --- relativistic GAN ------------------------------------------------------------------------


def test_relativistic_losses_at_equal_logits_are_log2() -> None:
    logits = torch.full((4, 1), 0.7)
    assert relativistic_d_loss(logits, logits).item() == pytest.approx(math.log(2))
    assert relativistic_g_loss(logits, logits).item() == pytest.approx(math.log(2))


def test_relativistic_losses_match_formula() -> None:
    real, fake = torch.randn(5, 1), torch.randn(5, 1)
    r, f = real - fake.mean(), fake - real.mean()
    # BCE-with-logits: -log(sigmoid(x)) = softplus(-x) for label 1, softplus(x) for label 0.
    d = 0.5 * (F.softplus(-r).mean() + F.softplus(f).mean())
    g = 0.5 * (F.softplus(r).mean() + F.softplus(-f).mean())
    assert relativistic_d_loss(real, fake).item() == pytest.approx(d.item(), rel=1e-6)
    assert relativistic_g_loss(real, fake).item() == pytest.approx(g.item(), rel=1e-6)


def test_relativistic_losses_direction() -> None:
    # A discriminator that separates real from fake well: D loss small, G loss large.
    real, fake = torch.full((4, 1), 5.0), torch.full((4, 1), -5.0)
    assert relativistic_d_loss(real, fake).item() < 1e-4
    assert relativistic_g_loss(real, fake).item() == pytest.approx(10.0, abs=1e-3)


def test_relativistic_g_loss_detaches_real_logits() -> None:
    real = torch.randn(3, 1, requires_grad=True)
    fake = torch.randn(3, 1, requires_grad=True)
    relativistic_g_loss(real, fake).backward()
    assert real.grad is None
    assert fake.grad is not None and fake.grad.abs().sum() > 0


# --- CombinedLoss ----------------------------------------------------------------------------


def test_combined_loss_pixel_only_skips_recognizer(recognizer: FakeRecognizer) -> None:
    loss = CombinedLoss(pixel_weight=2.0, recognizer=recognizer)
    sr, hr = _images(), _images()
    total, terms = loss(sr, hr)
    assert set(terms) == {"pixel", "total"}
    assert recognizer.embed_calls == 0 and recognizer.features_calls == 0
    assert total.item() == pytest.approx(2.0 * pixel_loss(sr, hr).item(), rel=1e-6)
    assert terms["total"] == pytest.approx(total.item())
    assert isinstance(terms["pixel"], float)


def test_combined_loss_weighted_sum(recognizer: FakeRecognizer) -> None:
    loss = CombinedLoss(
        pixel_weight=1.0,
        identity_weight=0.5,
        feature_weight=0.25,
        recognizer=recognizer,
        pixel_kind="charbonnier",
        feature_layers=["conv1", "conv2"],
        feature_kind="mse",
    )
    sr, hr = _images(), _images()
    total, terms = loss(sr, hr)
    assert set(terms) == {"pixel", "identity", "feature", "total"}
    assert terms["pixel"] == pytest.approx(pixel_loss(sr, hr, "charbonnier").item(), rel=1e-6)
    assert terms["identity"] == pytest.approx(identity_loss(recognizer, sr, hr).item(), rel=1e-6)
    assert terms["feature"] == pytest.approx(
        feature_loss(recognizer, sr, hr, ["conv1", "conv2"], kind="mse").item(), rel=1e-6
    )
    expected = terms["pixel"] + 0.5 * terms["identity"] + 0.25 * terms["feature"]
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_combined_loss_freezes_recognizer_and_does_not_own_it() -> None:
    recognizer = FakeRecognizer(frozen=False)
    loss = CombinedLoss(identity_weight=1.0, recognizer=recognizer)
    assert not any(p.requires_grad for p in recognizer.parameters())
    assert list(loss.parameters()) == [] and loss.state_dict() == {}
    sr = _images().requires_grad_()
    total, _ = loss(sr, _images())
    total.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in recognizer.parameters())


def test_combined_loss_uses_precomputed_hr_embeddings(recognizer: FakeRecognizer) -> None:
    loss = CombinedLoss(pixel_weight=0.0, identity_weight=1.0, recognizer=recognizer)
    sr, hr = _images(), _images()
    hr_emb = recognizer.embed(hr)
    recognizer.embed_calls = 0
    _, terms = loss(sr, hr, hr_embeddings=hr_emb)
    assert recognizer.embed_calls == 1  # SR only
    assert terms["identity"] == pytest.approx(identity_loss(recognizer, sr, hr).item(), rel=1e-6)


def test_combined_loss_adversarial_and_discriminator_step() -> None:
    disc = VGGStyleDiscriminator(num_feat=4, input_height=32, input_width=32)
    loss = CombinedLoss(pixel_weight=1.0, adversarial_weight=0.1, discriminator=disc)
    sr, hr = torch.rand(4, 3, 32, 32, requires_grad=True), torch.rand(4, 3, 32, 32)
    total, terms = loss(sr, hr)
    assert set(terms) == {"pixel", "adversarial", "total"}
    assert 0.0 < terms["adversarial"] < 5.0
    total.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    # The generator step leaves the discriminator's gradients empty and its flags restored.
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters())

    sr.grad = None
    d_loss = loss.discriminator_loss(sr, hr)
    d_loss.backward()
    assert sr.grad is None
    assert all(p.grad is not None for p in disc.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixel_weight": -1.0}, "pixel_weight"),
        ({"identity_weight": float("nan")}, "identity_weight"),
        ({"pixel_weight": 0.0}, "all loss weights are 0"),
        ({"identity_weight": 1.0}, "need a recognizer"),
        ({"feature_weight": 1.0, "recognizer": FakeRecognizer()}, "feature_layers"),
        ({"adversarial_weight": 1.0}, "discriminator"),
        ({"pixel_kind": "l2"}, "pixel_kind"),
        ({"feature_kind": "l2"}, "feature_kind"),
    ],
)
def test_combined_loss_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CombinedLoss(**kwargs)  # type: ignore[arg-type]


def test_combined_loss_discriminator_loss_needs_discriminator() -> None:
    with pytest.raises(ValueError, match="no discriminator"):
        CombinedLoss().discriminator_loss(_images(), _images())
