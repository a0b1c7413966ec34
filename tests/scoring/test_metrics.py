"""Tests for harness.scoring.metrics on the embedded ASC19 validation images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from fileio.user_error import UserError
from harness.data.degradation import matlab_imresize
from harness.scoring import metrics as M

skm = pytest.importorskip("skimage.metrics")

ROOT = Path(__file__).resolve().parents[2]
HR_DIR = ROOT / "data" / "asc19-val" / "val_HR"
LR_DIR = ROOT / "data" / "asc19-val" / "val_LR"
NAMES = [str(n) for n in range(301, 311)]


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _bicubic_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    hr = _rgb(HR_DIR / f"{name}.png")
    lr = Image.open(LR_DIR / f"{name}.png").convert("RGB")
    return np.asarray(lr.resize((96, 112), Image.Resampling.BICUBIC)), hr


def _ssim_ref(a: np.ndarray, b: np.ndarray, **kw) -> float:
    return skm.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, **kw
    )


def _y_independent(img: np.ndarray) -> np.ndarray:
    # BT.601 luma written from the standard's weights (MATLAB's coefficients are 219 * these).
    r, g, b = (img[..., c].astype(np.float64) for c in range(3))
    return 16.0 + 219.0 * (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


@pytest.mark.parametrize("name", NAMES)
def test_psnr_ssim_match_scikit_image(name: str) -> None:
    sr, hr = _bicubic_pair(name)
    assert M.psnr(sr, hr) == pytest.approx(
        skm.peak_signal_noise_ratio(hr, sr, data_range=255), abs=1e-3
    )
    assert M.ssim(sr, hr) == pytest.approx(_ssim_ref(hr, sr, channel_axis=2), abs=1e-3)
    ys, yh = _y_independent(sr), _y_independent(hr)
    assert M.psnr(sr, hr, y_channel=True) == pytest.approx(
        skm.peak_signal_noise_ratio(yh, ys, data_range=255), abs=1e-3
    )
    assert M.ssim(sr, hr, y_channel=True) == pytest.approx(_ssim_ref(yh, ys), abs=1e-3)
    assert M.rmse(sr, hr) == pytest.approx(math.sqrt(skm.mean_squared_error(hr, sr)), abs=1e-6)
    # shave crops the border before measuring
    assert M.psnr(sr, hr, shave=4) == pytest.approx(
        skm.peak_signal_noise_ratio(hr[4:-4, 4:-4], sr[4:-4, 4:-4], data_range=255), abs=1e-3
    )


def test_bicubic_baseline_values_are_plausible() -> None:
    values = np.array([[M.psnr(*_bicubic_pair(n)), M.ssim(*_bicubic_pair(n))] for n in NAMES])
    psnr_mean, ssim_mean = values.mean(axis=0)
    # measured: 4x bicubic on 96x112 faces
    assert 22.0 < psnr_mean < 30.0
    assert 0.65 < ssim_mean < 0.92
    # Y-channel PSNR is higher than RGB PSNR for these images (chroma is smooth).
    assert M.psnr(*_bicubic_pair("301"), y_channel=True) > M.psnr(*_bicubic_pair("301"))


def test_known_values() -> None:
    hr = _rgb(HR_DIR / "301.png")
    assert M.psnr(hr, hr) == math.inf
    assert M.ssim(hr, hr) == pytest.approx(1.0)
    assert M.rmse(hr, hr) == 0.0
    plus3 = np.clip(hr.astype(np.int16) + 3, 0, 255).astype(np.uint8)
    mask = hr <= 252
    assert mask.mean() > 0.95
    off = np.where(mask, plus3, hr)  # exactly +3 wherever that fits
    expected_mse = 9.0 * mask.mean()
    assert M.rmse(off, hr) == pytest.approx(math.sqrt(expected_mse))
    assert M.psnr(off, hr) == pytest.approx(10 * math.log10(255**2 / expected_mse))
    # a grey level shift of 3 is 3 * 219/255 in studio-range luma
    const = np.full((40, 40, 3), 100, np.uint8)
    assert M.rmse(const + 3, const, y_channel=True) == pytest.approx(3 * 219 / 255)


def test_rgb_to_y_is_matlab_rgb2ycbcr() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    # MATLAB rgb2ycbcr(uint8) gives Y = 16, 235, 81, 145, 41 for these colours.
    np.testing.assert_allclose(np.round(M.rgb_to_y(img)), [[16, 235, 81, 145, 41]])


def test_shape_mismatch_and_bad_shave() -> None:
    hr = _rgb(HR_DIR / "301.png")
    with pytest.raises(ValueError, match="shapes differ"):
        M.psnr(hr[:-1], hr)
    with pytest.raises(ValueError, match="shave"):
        M.psnr(hr, hr, shave=60)


def test_matlab_imresize_reproduces_organiser_lr() -> None:
    # The ASC19 LR images are MATLAB imresize(HR, 1/4): an exact reproduction is a strong check.
    for name in NAMES:
        hr = _rgb(HR_DIR / f"{name}.png")
        lr = _rgb(LR_DIR / f"{name}.png")
        out = np.clip(np.round(matlab_imresize(hr, 0.25)), 0, 255).astype(np.uint8)
        assert out.shape == lr.shape
        np.testing.assert_array_equal(out, lr)


def test_matlab_imresize_interior_matches_pil_float() -> None:
    # PIL's BICUBIC is the same a=-0.5 kernel with the same antialiasing, but clips at borders
    # instead of mirroring: interior pixels must agree.
    rng = np.random.default_rng(0)
    img = rng.random((64, 80)).astype(np.float32)
    for scale, border in ((0.5, 3), (0.25, 3), (2.0, 3)):
        ours = matlab_imresize(img, scale)
        size = (round(80 * scale), round(64 * scale))
        pil = np.asarray(Image.fromarray(img, mode="F").resize(size, Image.Resampling.BICUBIC))
        assert ours.shape == pil.shape
        np.testing.assert_allclose(
            ours[border:-border, border:-border], pil[border:-border, border:-border], atol=1e-5
        )
    # constant in, constant out; output size is ceil(in * scale); channels are kept
    out = matlab_imresize(np.full((7, 9, 3), 0.7), 0.5)
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out, 0.7)
    assert matlab_imresize(np.zeros((10, 12)), output_hw=(3, 5)).shape == (3, 5)


def _astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


def test_niqe_matches_basicsr_reference_value() -> None:
    # BasicSR 1.4.2's niqe() run on this Y image in float64 (its imresize swapped for a
    # float64 one) gives 3.1004515; its float32 calculate_niqe() path gives 3.0649.
    assert M.niqe(_astronaut()) == pytest.approx(3.1004515, abs=1e-4)


def test_niqe_blur_scores_worse() -> None:
    img = _astronaut()
    blurred = np.clip(
        np.round(gaussian_filter(img.astype(np.float64), sigma=(2, 2, 0))), 0, 255
    ).astype(np.uint8)
    assert M.niqe(blurred) > M.niqe(img) + 2.0
    # a 4x4 tile of the embedded faces (384x448: 16 blocks)
    faces = [_rgb(HR_DIR / f"{n}.png") for n in range(301, 317)]
    tile = np.concatenate(
        [np.concatenate(faces[r * 4 : (r + 1) * 4], axis=1) for r in range(4)], axis=0
    )
    assert tile.shape == (448, 384, 3)
    tile_blur = np.clip(
        np.round(gaussian_filter(tile.astype(np.float64), sigma=(1.5, 1.5, 0))), 0, 255
    )
    assert M.niqe(tile_blur.astype(np.uint8)) > M.niqe(tile) + 1.0


def test_niqe_single_block_face_crop() -> None:
    hr = _rgb(HR_DIR / "301.png")
    value = M.niqe(hr)
    assert math.isfinite(value)
    assert value == M.niqe(hr)  # repeatable
    assert 2.0 < value < 30.0
    sr, _ = _bicubic_pair("301")
    assert M.niqe(sr) > value  # the blurry bicubic upscale looks less natural
    with pytest.raises(UserError, match="at least 96x96"):
        M.niqe(hr[:90])


def test_niqe_params_location(tmp_path: Path) -> None:
    assert M.niqe_params_path() == ROOT / "data" / "niqe" / "niqe_pris_params.npz"
    assert M.niqe_params_path(tmp_path) == tmp_path / "niqe" / "niqe_pris_params.npz"
    with pytest.raises(UserError, match="not found"):
        M.niqe(_rgb(HR_DIR / "301.png"), params_path=tmp_path / "nope.npz")


def test_perceptual_index_refuses_without_ma_model() -> None:
    with pytest.raises(UserError, match="Ma et al"):
        M.perceptual_index(_rgb(HR_DIR / "301.png"))
