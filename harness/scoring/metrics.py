"""Full-reference and no-reference image-quality metrics (pure numpy functions).

Conventions shared by every function here:

* Images are ``uint8`` arrays of shape ``(H, W, 3)`` in **RGB** order (what
  :func:`harness.data.imageio.read_rgb` returns). Greyscale ``(H, W)`` arrays are accepted too.
* ``y_channel=True`` converts to the luma of ITU-R BT.601 the way MATLAB's ``rgb2ycbcr`` does
  (studio range 16..235), exactly as BasicSR's ``bgr2ycbcr(img, y_only=True)``; like BasicSR the
  Y values are kept as floats (not rounded) for PSNR/SSIM.
* ``shave`` crops that many pixels from every border before measuring (the usual "crop_border"
  of SR papers).

PSNR and SSIM agree with scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity``
(``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``), i.e. the
MATLAB reference SSIM of Wang et al. (2004), averaged over channels on RGB input.

NIQE follows BasicSR 1.4.2's ``basicsr/metrics/niqe.py`` (which reproduces the authors' MATLAB
code): Y channel rounded to integers, 96x96 blocks without overlap, two scales, the second made
with a MATLAB-compatible antialiased bicubic ``imresize`` by 0.5 (:func:`matlab_imresize`), and
the pristine model in ``data/niqe/niqe_pris_params.npz``.

Example:
    >>> from harness.data.imageio import read_rgb          # doctest: +SKIP
    >>> hr, sr = read_rgb("HR/301.png"), read_rgb("SR/301.png")          # doctest: +SKIP
    >>> psnr(sr, hr), ssim(sr, hr, y_channel=True), niqe(sr)          # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np

from fileio.user_error import UserError
from harness.data.degradation import matlab_imresize
from harness.data.locations import data_dir

__all__ = [

    "niqe",
    "perceptual_index",
    "psnr",
    "rgb_to_y",
    "rmse",
    "ssim",
]

#: Peak value of 8-bit images.
_PEAK = 255.0
#: Side of a NIQE block in pixels (the value the pristine model was fitted with).
NIQE_BLOCK_PX = 96


# --------------------------------------------------------------------------------------------
# Colour and preprocessing
# --------------------------------------------------------------------------------------------
def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Luma (BT.601, studio range 16..235) of an 8-bit RGB image, as float64.

    Matches MATLAB ``rgb2ycbcr`` (before its rounding to uint8) and BasicSR's
    ``bgr2ycbcr(y_only=True)`` applied to the same pixels in BGR order.

    Args:
        img: ``(H, W, 3)`` RGB array with values in 0..255 (any real dtype).

    Returns:
        ``(H, W)`` float64 array, values in 16..235.
    """
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    return 16.0 + (arr[..., 0] * 65.481 + arr[..., 1] * 128.553 + arr[..., 2] * 24.966) / 255.0


def _prepare(img: np.ndarray, *, y_channel: bool, shave: int) -> np.ndarray:
    """float64 view of ``img`` (Y channel if asked), ``shave`` px cropped from each border."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 3 and y_channel:
        out = rgb_to_y(arr)
    elif arr.ndim in (2, 3):
        out = arr.astype(np.float64)
    else:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {arr.shape}")
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if shave:
        if 2 * shave >= min(out.shape[0], out.shape[1]):
            raise ValueError(
                f"shave={shave} leaves nothing of a {out.shape[1]}x{out.shape[0]} image"
            )
        out = out[shave:-shave, shave:-shave]
    return out


def _pair(
    sr: np.ndarray, hr: np.ndarray, *, y_channel: bool, shave: int
) -> tuple[np.ndarray, np.ndarray]:
    if np.shape(sr) != np.shape(hr):
        raise ValueError(f"image shapes differ: sr {np.shape(sr)} vs hr {np.shape(hr)}")
    return _prepare(sr, y_channel=y_channel, shave=shave), _prepare(
        hr, y_channel=y_channel, shave=shave
    )


# --------------------------------------------------------------------------------------------
# Full-reference metrics
# --------------------------------------------------------------------------------------------
def rmse(sr: np.ndarray, hr: np.ndarray, *, y_channel: bool = False, shave: int = 0) -> float:
    """Root-mean-square error in 8-bit grey levels (all channels pooled on RGB).

    Args:
        sr: Restored image, ``(H, W, 3)`` uint8 RGB.
        hr: Reference image, same shape.
        y_channel: Measure on the BT.601 luma instead of RGB.
        shave: Pixels cropped from each border before measuring.

    Returns:
        The RMSE (0 for identical images).
    """
    a, b = _pair(sr, hr, y_channel=y_channel, shave=shave)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def psnr(sr: np.ndarray, hr: np.ndarray, *, y_channel: bool = False, shave: int = 0) -> float:
    """Peak signal-to-noise ratio in dB with peak 255 (MSE pooled over channels on RGB).

    Args:
        sr: Restored image, ``(H, W, 3)`` uint8 RGB.
        hr: Reference image, same shape.
        y_channel: Measure on the BT.601 luma (MATLAB ``rgb2ycbcr``) instead of RGB.
        shave: Pixels cropped from each border before measuring.

    Returns:
        PSNR in dB; ``inf`` for identical images.
    """
    a, b = _pair(sr, hr, y_channel=y_channel, shave=shave)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * math.log10(_PEAK**2 / mse))


@functools.lru_cache(maxsize=4)
def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB-style SSIM of two float64 greyscale images with values in 0..255."""
    from scipy.ndimage import convolve1d  # lazy: scipy costs 0.1 s at start-up

    win = _gaussian_1d(11, 1.5)
    pad = 5
    if min(a.shape) <= 2 * pad:
        raise ValueError(f"SSIM needs images larger than 11x11, got {a.shape[1]}x{a.shape[0]}")

    def blur(x: np.ndarray) -> np.ndarray:
        # Separable Gaussian; only the 'valid' part (cropped below) is used, so the border mode
        # does not affect the result.
        return convolve1d(convolve1d(x, win, axis=0, mode="reflect"), win, axis=1, mode="reflect")

    c1 = (0.01 * _PEAK) ** 2
    c2 = (0.03 * _PEAK) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map[pad:-pad, pad:-pad].mean())


def ssim(sr: np.ndarray, hr: np.ndarray, *, y_channel: bool = False, shave: int = 0) -> float:
    """Structural similarity (Wang et al. 2004, MATLAB reference settings).

    11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, population
    covariances, mean over the 'valid' region; on RGB the mean over the three channels.

    Args:
        sr: Restored image, ``(H, W, 3)`` uint8 RGB.
        hr: Reference image, same shape.
        y_channel: Measure on the BT.601 luma instead of RGB.
        shave: Pixels cropped from each border before measuring.

    Returns:
        SSIM in [-1, 1]; 1 for identical images.
    """
    a, b = _pair(sr, hr, y_channel=y_channel, shave=shave)
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[2])]))


# --------------------------------------------------------------------------------------------
# MATLAB-compatible imresize
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# NIQE
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_niqe_params(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"{p}: NIQE parameter file not found (expected data/niqe/niqe_pris_params.npz)"
        )
    try:
        with np.load(p) as params:
            mu = np.asarray(params["mu_pris_param"], dtype=np.float64)
            cov = np.asarray(params["cov_pris_param"], dtype=np.float64)
            window = np.asarray(params["gaussian_window"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{p}: not a NIQE parameter file ({exc})") from exc
    return mu, cov, window


def niqe_params_path(data_root: str | Path | None = None) -> Path:
    """Return the path of ``niqe_pris_params.npz`` under ``data/`` (``data_root`` overrides it)."""
    root = Path(data_root) if data_root is not None else data_dir()
    return root / "niqe" / "niqe_pris_params.npz"


@functools.lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    """The grid of AGGD shape parameters and their generalized Gaussian ratio (as MATLAB)."""
    from scipy.special import gamma

    gam = np.arange(0.2, 10.001, 0.001)
    inv = np.reciprocal(gam)
    r_gam = np.square(gamma(inv * 2)) / (gamma(inv) * gamma(inv * 3))
    return gam, r_gam


def _aggd_params(block: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching fit of an asymmetric generalized Gaussian: ``(alpha, beta_l, beta_r)``."""
    from scipy.special import gamma

    x = block.ravel()
    gam, r_gam = _aggd_table()
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty side -> nan, as in MATLAB
        left_std = np.sqrt(np.mean(x[x < 0] ** 2))
        right_std = np.sqrt(np.mean(x[x > 0] ** 2))
        gammahat = left_std / right_std
        rhat = np.mean(np.abs(x)) ** 2 / np.mean(x**2)
        rhatnorm = (rhat * (gammahat**3 + 1) * (gammahat + 1)) / ((gammahat**2 + 1) ** 2)
        alpha = gam[np.argmin((r_gam - rhatnorm) ** 2)]
        ratio = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return float(alpha), float(left_std * ratio), float(right_std * ratio)


def _niqe_features(block: np.ndarray) -> list[float]:
    """The 18 NIQE features of one normalised block."""
    from scipy.special import gamma

    alpha, beta_l, beta_r = _aggd_params(block)
    feat = [alpha, (beta_l + beta_r) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        shifted = np.roll(block, shift, axis=(0, 1))
        alpha, beta_l, beta_r = _aggd_params(block * shifted)
        mean = (beta_r - beta_l) * (gamma(2 / alpha) / gamma(1 / alpha))
        feat.extend([alpha, mean, beta_l, beta_r])
    return feat


def niqe_gray(
    img: np.ndarray,
    *,
    params_path: str | Path | None = None,
    block_px: int = NIQE_BLOCK_PX,
) -> float:
    """NIQE of a greyscale image given as floats in 0..255 (BasicSR's ``niqe()``).

    Args:
        img: ``(H, W)`` array, at least ``block_px`` on each side.
        params_path: The ``niqe_pris_params.npz`` to use (default: :func:`niqe_params_path`).
        block_px: Block side; 96 is what the pristine model was fitted with.

    Returns:
        NIQE score (lower is more natural).
    """
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {arr.shape}")
    h, w = arr.shape
    blocks_h, blocks_w = h // block_px, w // block_px
    if blocks_h == 0 or blocks_w == 0:
        raise UserError(f"NIQE needs images of at least {block_px}x{block_px} pixels, got {w}x{h}")
    mu_pris, cov_pris, window = _load_niqe_params(str(params_path or niqe_params_path()))
    arr = arr[: blocks_h * block_px, : blocks_w * block_px]

    from scipy.ndimage import convolve

    features = []
    for scale in (1, 2):
        mu = convolve(arr, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(np.square(arr), window, mode="nearest") - np.square(mu)))
        normalised = (arr - mu) / (sigma + 1)
        size = block_px // scale
        feats = [
            _niqe_features(normalised[ih * size : (ih + 1) * size, iw * size : (iw + 1) * size])
            for iw in range(blocks_w)
            for ih in range(blocks_h)
        ]
        features.append(np.asarray(feats))
        if scale == 1:
            arr = matlab_imresize(arr / 255.0, 0.5, antialiasing=True) * 255.0
    dist = np.concatenate(features, axis=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu_dist = np.nanmean(dist, axis=0)
    complete = dist[~np.isnan(dist).any(axis=1)]
    if complete.shape[0] >= 2:
        cov_dist = np.cov(complete, rowvar=False)
    else:
        # One block (e.g. a 96x112 face crop): the sample covariance is undefined; MATLAB's
        # nancov of a single row is all zeros, so the pristine covariance is used alone.
        cov_dist = np.zeros_like(cov_pris)
    inv_cov = np.linalg.pinv((cov_pris + cov_dist) / 2)
    diff = (mu_pris - mu_dist).reshape(1, -1)
    return float(np.sqrt(np.squeeze(diff @ inv_cov @ diff.T)))


def niqe(
    img: np.ndarray,
    *,
    params_path: str | Path | None = None,
    shave: int = 0,
) -> float:
    """Natural Image Quality Evaluator (Mittal et al. 2013), as BasicSR 1.4.2 / MATLAB compute it.

    The image is converted to the BT.601 luma (MATLAB ``rgb2ycbcr``), rounded to integers, cut
    into 96x96 blocks (the remainder is dropped), and compared with the pristine model.
    A 96x112 face crop yields one block; its sample covariance is taken as zero (BasicSR's
    code fails there with an SVD error).

    Everything is computed in float64, as MATLAB does. BasicSR 1.4.2's ``calculate_niqe`` works
    in float32 and so differs slightly: on scikit-image's astronaut it gives 3.0649, while its
    ``niqe()`` fed float64 data (and a float64 ``imresize``) gives 3.1004515, which this
    function reproduces.

    Args:
        img: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey) image of at least 96x96 pixels.
        params_path: The ``niqe_pris_params.npz`` to use (default: ``data/niqe/`` of the repo).
        shave: Pixels cropped from each border first.

    Returns:
        NIQE score (lower is more natural; typical photographs score 3 to 6).

    Raises:
        UserError: The image is smaller than 96x96 or the parameter file is missing.
    """
    arr = np.asarray(img)
    grey = (
        _prepare(arr, y_channel=True, shave=shave)
        if arr.ndim == 3
        else _prepare(arr, y_channel=False, shave=shave)
    )
    if grey.ndim != 2:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {arr.shape}")
    return niqe_gray(np.round(grey), params_path=params_path)


def perceptual_index(img: np.ndarray, *, ma_model_path: str | Path | None = None) -> float:
    """PIRM 2018 perceptual index, ``PI = ((10 - Ma) + NIQE) / 2`` — not available here.

    It needs the no-reference model of Ma et al. (2017), which ships with no package that can
    be installed offline; this harness never substitutes a made-up value for it.

    Raises:
        UserError: Always, explaining what is missing.
    """
    where = f" ({ma_model_path})" if ma_model_path else ""
    raise UserError(
        "perceptual index needs the Ma et al. (2017) no-reference model, which ships with no "
        f"offline package and is not implemented in this harness{where}; use 'niqe' instead"
    )
