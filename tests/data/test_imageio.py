"""Tests for harness.data.imageio on the embedded ASC19 validation images."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fileio.user_error import UserError
from harness.data.degradation import downscale
from harness.data.imageio import (
    Pair,
    from_tensor,
    list_images,
    pair_by_name,
    pil_bicubic_upscale,
    read_rgb,
    to_tensor,
    write_png,
)

ROOT = Path(__file__).resolve().parents[2]
HR_DIR = ROOT / "data" / "asc19-val" / "val_HR"
LR_DIR = ROOT / "data" / "asc19-val" / "val_LR"


def _copy(names: list[str], src: Path, dst: Path, suffix: str = ".png") -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        if suffix == ".png":
            shutil.copy(src / f"{n}.png", dst / f"{n}.png")
        else:
            Image.open(src / f"{n}.png").convert("RGB").save(dst / f"{n}{suffix}", quality=95)


def test_read_rgb_real_and_converted(tmp_path: Path) -> None:
    hr = read_rgb(HR_DIR / "301.png")
    assert hr.shape == (112, 96, 3) and hr.dtype == np.uint8
    assert 40 < hr.mean() < 220
    Image.fromarray(hr).convert("L").save(tmp_path / "grey.png")
    grey = read_rgb(tmp_path / "grey.png")
    assert grey.shape == (112, 96, 3)
    assert np.array_equal(grey[..., 0], grey[..., 2])
    Image.fromarray(hr).convert("RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_rgb(tmp_path / "rgba.png"), hr)


def test_read_rgb_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.png"):
        read_rgb(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="text.png"):
        read_rgb(tmp_path / "text.png")
    data = (HR_DIR / "301.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.png"):
        read_rgb(tmp_path / "cut.png")


def test_list_images_natural_order(tmp_path: Path) -> None:
    for n in ("10", "2", "1"):
        shutil.copy(HR_DIR / "301.png", tmp_path / f"{n}.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    shutil.copy(HR_DIR / "301.png", tmp_path / "3.JPG")  # suffix check is case-insensitive
    assert [p.name for p in list_images(tmp_path)] == ["1.png", "2.png", "3.JPG", "10.png"]
    assert len(list_images(HR_DIR)) == 300
    with pytest.raises(UserError, match="no such folder"):
        list_images(tmp_path / "nope")
    with pytest.raises(UserError, match="no image files"):
        list_images(tmp_path / "sub")


def test_pair_by_name_matches_stems_across_formats(tmp_path: Path) -> None:
    names = ["301", "302", "303"]
    _copy(names, HR_DIR, tmp_path / "hr")
    _copy(names, HR_DIR, tmp_path / "sr", suffix=".jpg")
    _copy(names, LR_DIR, tmp_path / "lr")
    pairs = pair_by_name(tmp_path / "hr", tmp_path / "sr", tmp_path / "lr")
    assert [p.name for p in pairs] == names
    assert pairs[0] == Pair(
        "301", tmp_path / "hr" / "301.png", tmp_path / "sr" / "301.jpg", tmp_path / "lr" / "301.png"
    )
    assert pair_by_name(tmp_path / "hr", tmp_path / "sr")[1].lr is None


def test_pair_by_name_missing_and_extra(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = [str(n) for n in range(301, 315)]
    _copy(names, HR_DIR, tmp_path / "hr")
    _copy(names[:2] + ["400", "401"], HR_DIR, tmp_path / "sr")
    with pytest.raises(UserError) as info:
        pair_by_name(tmp_path / "hr", tmp_path / "sr")
    msg = str(info.value)
    assert "12 of 14" in msg and "303, 304" in msg and msg.endswith("...)")
    assert "\n" not in msg
    # extra SR files are ignored with one warning
    _copy(names, HR_DIR, tmp_path / "sr")
    with caplog.at_level(logging.WARNING, logger="harness.data.imageio"):
        pairs = pair_by_name(tmp_path / "hr", tmp_path / "sr")
    assert len(pairs) == 14
    assert "ignoring 2 SR images" in caplog.text and "400, 401" in caplog.text
    # LR missing a name is an error too
    _copy(names[:-1], LR_DIR, tmp_path / "lr")
    with pytest.raises(UserError, match="1 of 14 HR images have no LR"):
        pair_by_name(tmp_path / "hr", tmp_path / "sr", tmp_path / "lr")
    # two files with one stem are ambiguous
    _copy(["301"], HR_DIR, tmp_path / "sr", suffix=".jpg")
    with pytest.raises(UserError, match="more than one file"):
        pair_by_name(tmp_path / "hr", tmp_path / "sr")


def test_write_png_roundtrip_atomic(tmp_path: Path) -> None:
    hr = read_rgb(HR_DIR / "305.png")
    dest = write_png(tmp_path / "a" / "b" / "x.png", hr)
    assert np.array_equal(read_rgb(dest), hr)
    write_png(dest, hr[::-1].copy())  # overwrite in place
    assert np.array_equal(read_rgb(dest), hr[::-1])
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x.png"]  # no temp files left
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", hr.astype(np.float32))


def test_pil_bicubic_resampling_on_real_pairs() -> None:
    hr = read_rgb(HR_DIR / "301.png")
    lr = read_rgb(LR_DIR / "301.png")
    up = pil_bicubic_upscale(lr, (96, 112))
    assert up.shape == (112, 96, 3) and up.dtype == np.uint8
    mse = np.mean((up.astype(np.float64) - hr) ** 2)
    assert 10 * np.log10(255**2 / mse) == pytest.approx(27.775, abs=0.01)  # measured
    down = downscale(hr, "pil_bicubic", 4)
    assert down.shape == (28, 24, 3)
    mae = np.abs(down.astype(np.int16) - lr).mean()
    assert 0.1 < mae < 0.6  # close to, not exactly, the organiser's LR
    with pytest.raises(ValueError):
        downscale(hr[:-1], "pil_bicubic", 4)


def test_tensor_roundtrip() -> None:
    imgs = [read_rgb(HR_DIR / f"{n}.png") for n in (301, 302, 303)]
    t = to_tensor(imgs)
    assert t.shape == (3, 3, 112, 96) and t.dtype == torch.float32
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert float(t[0, 0, 10, 20]) == pytest.approx(imgs[0][10, 20, 0] / 255.0)
    back = from_tensor(t)
    assert all(np.array_equal(a, b) for a, b in zip(back, imgs, strict=True))
    assert from_tensor(torch.full((1, 3, 4, 4), 2.0))[0].max() == 255  # clamped
    with pytest.raises(ValueError, match="differ in shape"):
        to_tensor([imgs[0], imgs[0][:-4]])


def _png16(path: Path, arr: np.ndarray) -> Path:
    """Write a real 16-bit PNG (OpenCV keeps uint16; channels given in RGB(A) order)."""
    import cv2

    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    assert cv2.imwrite(str(path), arr)
    return path


def test_read_rgb_16_bit_grey_and_rgb_are_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.array([[0, 257, 32767, 32896, 65535]], np.uint16)
    grey = read_rgb(_png16(tmp_path / "g.png", ramp))
    assert grey.dtype == np.uint8 and grey.shape == (1, 5, 3)
    assert grey[0, :, 0].tolist() == [0, 1, 127, 128, 255]  # round(v * 255 / 65535)
    rgb = read_rgb(_png16(tmp_path / "c.png", np.stack([ramp, ramp // 2, 65535 - ramp], -1)))
    assert rgb[0, 4].tolist() == [255, 127, 0] and rgb[0, 0].tolist() == [0, 0, 255]


def test_read_rgb_16_bit_pair_does_not_score_as_identical(tmp_path: Path) -> None:
    """The bug: both files read as all-white, so any two 16-bit faces got PSNR inf."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    b = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    ra, rb = read_rgb(_png16(tmp_path / "a.png", a)), read_rgb(_png16(tmp_path / "b.png", b))
    assert not np.array_equal(ra, rb) and ra.std() > 30


def test_read_rgb_alpha_palette_and_transparency(tmp_path: Path) -> None:
    opaque = np.full((2, 2, 4), 255, np.uint8)
    opaque[..., 0] = 10
    Image.fromarray(opaque).save(tmp_path / "o.png")
    assert read_rgb(tmp_path / "o.png")[0, 0].tolist() == [10, 255, 255]
    Image.fromarray(np.full((2, 2), 7, np.uint8)).convert("P").save(tmp_path / "p.png")
    assert read_rgb(tmp_path / "p.png").shape == (2, 2, 3)
    seethrough = opaque.copy()
    seethrough[0, 0, 3] = 0
    Image.fromarray(seethrough).save(tmp_path / "t.png")
    with pytest.raises(UserError, match="transparent"):
        read_rgb(tmp_path / "t.png")
    s16 = np.full((2, 2, 4), 65535, np.uint16)
    s16[1, 1, 3] = 100
    with pytest.raises(UserError, match="transparent"):
        read_rgb(_png16(tmp_path / "t16.png", s16))
