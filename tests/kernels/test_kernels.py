"""Tests for kernels/: PIL-exact bicubic, generators, discriminator, the model table."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kernels
from kernels import (
    MODELS,
    BicubicUpsampler,
    RRDBNet,
    SRResNet,
    VGGStyleDiscriminator,
    bicubic_upsample,
    build_model,
    convert_esrgan_state_dict,
    count_parameters,
)
from kernels.bicubic_arch import pil_bicubic_matrix

DATA = Path(__file__).resolve().parents[2] / "data" / "asc19-val"

# Tiny widths so every shape test runs in milliseconds on a CPU.
TINY_KWARGS: dict[str, dict[str, object]] = {
    "bicubic": {},
    "srresnet": {"num_feat": 8, "num_blocks": 2},
    "rrdb": {"num_feat": 8, "num_block": 1, "num_grow_ch": 4},
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def lr_images() -> np.ndarray:
    """All 300 ASC19 validation LR images, (300, 28, 24, 3) uint8."""
    paths = sorted((DATA / "val_LR").glob("*.png"))
    assert len(paths) == 300
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def _to_tensor(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(dtype) / 255.0


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy().astype(np.int16)


def _pil_resize(images: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((width, height), Image.BICUBIC)) for im in images]
    ).astype(np.int16)


# --- bicubic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bicubic_matches_pil_x4_on_asc19(lr_images: np.ndarray, dtype: torch.dtype) -> None:
    reference = _pil_resize(lr_images, 96, 112)
    ours = _to_uint8(bicubic_upsample(_to_tensor(lr_images, dtype), 4))
    diff = np.abs(ours - reference)
    assert ours.shape == (300, 112, 96, 3)
    assert diff.max() <= 1
    # PIL's fixed-point rounding is the only difference: most values agree exactly.
    assert (diff == 0).mean() > 0.75


def test_bicubic_matches_pil_x2(lr_images: np.ndarray) -> None:
    subset = lr_images[:50]
    reference = _pil_resize(subset, 48, 56)
    ours = _to_uint8(bicubic_upsample(_to_tensor(subset), 2))
    assert np.abs(ours - reference).max() <= 1


def test_bicubic_without_intermediate_clamp_misses_pil(lr_images: np.ndarray) -> None:
    # Documents why clamp_intermediate exists: PIL clips its 8-bit horizontal pass.
    reference = _pil_resize(lr_images[:100], 96, 112)
    ours = _to_uint8(bicubic_upsample(_to_tensor(lr_images[:100]), 4, clamp_intermediate=False))
    assert np.abs(ours - reference).max() > 1


def test_bicubic_beats_torch_interpolate_at_matching_pil(lr_images: np.ndarray) -> None:
    x = _to_tensor(lr_images[:50])
    reference = _pil_resize(lr_images[:50], 96, 112)
    torch_bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic")
    assert np.abs(_to_uint8(torch_bicubic) - reference).max() > 1


def test_pil_bicubic_matrix_structure() -> None:
    up = pil_bicubic_matrix(24, 96)
    assert up.shape == (96, 24)
    torch.testing.assert_close(up.sum(1), torch.ones(96, dtype=torch.float64))
    # Upscaling uses at most 4 taps (support 2); the first output pixel sits at input -0.375,
    # so only taps 0..1 are in range and renormalised.
    assert int((up != 0).sum(1).max()) == 4
    assert int((up[0] != 0).sum()) == 2
    down = pil_bicubic_matrix(96, 24)
    # Downscaling by 4 widens the kernel to 16 taps (PIL's antialiasing).
    assert int((down != 0).sum(1).max()) == 16
    with pytest.raises(ValueError, match="positive"):
        pil_bicubic_matrix(0, 4)


def test_bicubic_is_differentiable_and_batched() -> None:
    x = (0.3 + 0.4 * torch.rand(2, 1, 4, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: bicubic_upsample(t, 4), (x,), fast_mode=True)
    # Batched output equals per-image output.
    batch = bicubic_upsample(x, 2)
    torch.testing.assert_close(batch[1:], bicubic_upsample(x[1:], 2))


def test_bicubic_module_has_no_state_and_validates() -> None:
    module = BicubicUpsampler(scale=2)
    assert count_parameters(module) == 0
    assert module.state_dict() == {}
    with pytest.raises(ValueError, match="scale"):
        BicubicUpsampler(scale=3)
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        module(torch.rand(3, 8, 8))


# --- model table -----------------------------------------------------------------------------


def test_models_table_is_explicit() -> None:
    assert MODELS == {"bicubic": BicubicUpsampler, "srresnet": SRResNet, "rrdb": RRDBNet}


def test_build_model_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        build_model("edsr")
    message = str(info.value)
    assert "'edsr'" in message
    for name in MODELS:
        assert name in message


def test_build_model_unknown_kwarg_is_named() -> None:
    with pytest.raises(TypeError, match=r"'srresnet'.*'num_block'.*accepted: .*num_blocks"):
        build_model("srresnet", num_block=4)
    with pytest.raises(TypeError, match="'width'"):
        build_model("bicubic", width=3)


def test_build_model_passes_kwargs() -> None:
    net = build_model("srresnet", num_feat=4, num_blocks=1, scale=2)
    assert isinstance(net, SRResNet)
    # Hand count: conv_first 3*4*9+4, block 2*(4*4*9+4), conv_body 148,
    # up conv 4*16*9+16, conv_hr 148, conv_last 4*3*9+3.
    assert count_parameters(net) == 112 + 296 + 148 + 592 + 148 + 111
    with pytest.raises(ValueError, match="scale"):
        build_model("rrdb", scale=8)


def test_count_parameters_trainable_only() -> None:
    net = SRResNet(num_feat=4, num_blocks=1, scale=2)
    net.conv_first.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 1407 - 112


# --- generators ------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_generator_shapes(name: str, scale: int) -> None:
    net = build_model(name, scale=scale, **TINY_KWARGS[name])
    x = torch.rand(2, 3, 28, 24)
    y = net(x)
    assert y.shape == (2, 3, 28 * scale, 24 * scale)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("scale", [2, 4])
def test_zero_initialised_srresnet_equals_bicubic(scale: int) -> None:
    net = SRResNet(num_feat=8, num_blocks=2, scale=scale)
    x = torch.rand(3, 3, 28, 24)
    assert torch.equal(net(x), bicubic_upsample(x, scale))
    # Not trivially so: the trunk does compute non-zero features.
    assert net.conv_hr(net.upsample(net.conv_first(x))).abs().sum() > 0


def test_srresnet_without_zero_init_differs_from_bicubic() -> None:
    net = SRResNet(num_feat=8, num_blocks=2, zero_init_last=False)
    x = torch.rand(1, 3, 28, 24)
    assert not torch.allclose(net(x), bicubic_upsample(x, 4))


def _grads_after_one_step(net: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    x, target = torch.rand(2, 3, 28, 24), torch.rand(2, 3, 112, 96)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        (net(x) - target).abs().mean().backward()
        optimizer.step()
    return {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize("name", ["srresnet", "rrdb"])
def test_gradient_reaches_every_parameter(name: str) -> None:
    # srresnet's zero last conv blocks gradients to the trunk on the very first step only.
    grads = _grads_after_one_step(build_model(name, **TINY_KWARGS[name]))
    dead = [n for n, g in grads.items() if g is None or not torch.any(g != 0)]
    assert grads and not dead


def test_generator_gradient_reaches_input() -> None:
    net = SRResNet(num_feat=8, num_blocks=1, zero_init_last=False)
    x = torch.rand(1, 3, 28, 24, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_rrdb_scale2_rejects_odd_input() -> None:
    net = RRDBNet(num_feat=4, num_block=1, num_grow_ch=2, scale=2)
    with pytest.raises(ValueError, match="even"):
        net(torch.rand(1, 3, 27, 24))


# --- RRDB / ESRGAN compatibility -------------------------------------------------------------


def _basicsr_rrdb_names(num_block: int) -> set[str]:
    """Parameter names of BasicSR's ``RRDBNet`` (basicsr/archs/rrdbnet_arch.py)."""
    convs = ["conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    convs += [
        f"body.{b}.rdb{r}.conv{c}"
        for b in range(num_block)
        for r in (1, 2, 3)
        for c in range(1, 6)
    ]
    return {f"{conv}.{kind}" for conv in convs for kind in ("weight", "bias")}


@pytest.mark.parametrize("scale", [2, 4])
def test_rrdb_parameter_names_match_basicsr(scale: int) -> None:
    net = RRDBNet(num_feat=8, num_block=2, num_grow_ch=4, scale=scale)
    state = net.state_dict()
    assert set(state) == _basicsr_rrdb_names(2)
    assert state["conv_first.weight"].shape == (8, 3 * (4 if scale == 2 else 1), 3, 3)
    assert state["body.1.rdb3.conv5.weight"].shape == (8, 8 + 4 * 4, 3, 3)
    assert state["body.0.rdb2.conv3.weight"].shape == (4, 8 + 2 * 4, 3, 3)
    assert state["conv_last.weight"].shape == (3, 8, 3, 3)


def test_rrdb_default_is_esrgan_size() -> None:
    # ESRGAN / RealESRGAN_x4plus: 16,697,987 parameters.
    assert count_parameters(RRDBNet()) == 16_697_987


def test_convert_esrgan_state_dict_round_trip() -> None:
    source = RRDBNet(num_feat=8, num_block=2, num_grow_ch=4)
    old_names = {
        "conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
        "conv_hr": "HRconv",
    }
    esrgan_state = {}
    for name, tensor in source.state_dict().items():
        name = re.sub(r"^body\.", "RRDB_trunk.", name)
        name = re.sub(r"\.rdb(\d)\.", r".RDB\1.", name)
        head, _, tail = name.partition(".")
        esrgan_state[f"module.{old_names.get(head, head)}.{tail}"] = tensor
    assert "RRDB_trunk.0.RDB1.conv1.weight" in {k.removeprefix("module.") for k in esrgan_state}

    target = RRDBNet(num_feat=8, num_block=2, num_grow_ch=4)
    target.load_state_dict(convert_esrgan_state_dict(esrgan_state))  # strict
    x = torch.rand(1, 3, 14, 12)
    assert torch.equal(target(x), source(x))
    # BasicSR checkpoints: params_ema is preferred over params.
    wrapped = {"params": {}, "params_ema": source.state_dict()}
    assert set(convert_esrgan_state_dict(wrapped)) == set(source.state_dict())


# --- discriminator ---------------------------------------------------------------------------


def test_discriminator_shapes_and_gradients() -> None:
    disc = VGGStyleDiscriminator(num_feat=4)
    images = torch.rand(3, 3, 112, 96, requires_grad=True)
    logits = disc(images)
    assert logits.shape == (3, 1)
    logits.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())
    # Head: 8*num_feat channels x 3 x 3 after five stride-2 stages of 112x96.
    assert disc.classifier[1].in_features == 32 * 3 * 3


def test_discriminator_rejects_wrong_size_and_handles_no_batchnorm() -> None:
    disc = VGGStyleDiscriminator(num_feat=4, use_batchnorm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in disc.modules())
    assert disc(torch.rand(1, 3, 112, 96)).shape == (1, 1)
    with pytest.raises(ValueError, match="112, 96"):
        disc(torch.rand(1, 3, 96, 112))
    with pytest.raises(ValueError, match="too small"):
        VGGStyleDiscriminator(input_height=16, input_width=16)


def test_package_exports() -> None:
    for name in kernels.__all__:
        assert hasattr(kernels, name)
