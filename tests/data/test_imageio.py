"""Tests for harness.data.imageio on the embedded ASC19 validation images."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import UserError
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
