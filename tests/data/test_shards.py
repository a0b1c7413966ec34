"""Tests for harness.data.shards on embedded ASC19 faces and synthetic FFHQ-like squares."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fileio.user_error import UserError
from harness.data.degradation import DEGRADATIONS, downscale, fingerprint
from harness.data.imageio import read_rgb
from harness.data.shards import (
    PackedPairs,
    crop_box,
    make_hr,
    merge_index,
    prepare,
)

ROOT = Path(__file__).resolve().parents[2]
HR_DIR = ROOT / "data" / "asc19-val" / "val_HR"
LR_DIR = ROOT / "data" / "asc19-val" / "val_LR"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _ffhq_like(hr: np.ndarray, side: int) -> np.ndarray:
    """A square 'aligned' image: the HR face upscaled into the ASC19 box of a grey canvas."""
    left, top, right, bottom = crop_box((side, side))
    box = (round(left), round(top), round(right), round(bottom))
    face = Image.fromarray(hr).resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (side, side), (90, 90, 90))
    canvas.paste(face, box[:2])
    return np.asarray(canvas)


@pytest.fixture()
def src_tree(tmp_path: Path) -> Path:
    """A nested tree: 6 ASC19 crops, 2 synthetic 1024 and 2 synthetic 128 squares, junk."""
    src = tmp_path / "src"
    (src / "asc").mkdir(parents=True)
    (src / "ffhq" / "00000").mkdir(parents=True)
    (src / "thumbs").mkdir()
    for n in range(301, 307):
        shutil.copy(HR_DIR / f"{n}.png", src / "asc" / f"{n}.png")
    for n in (307, 308):
        Image.fromarray(_ffhq_like(read_rgb(HR_DIR / f"{n}.png"), 1024)).save(
            src / "ffhq" / "00000" / f"{n}.png"
        )
        Image.fromarray(_ffhq_like(read_rgb(HR_DIR / f"{n}.png"), 128)).save(
            src / "thumbs" / f"{n}.jpg", quality=98
        )
    (src / "asc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (src / "asc" / "readme.txt").write_text("not an image")
    return src


def test_crop_box_framing() -> None:
    assert crop_box((96, 112)) is None
    left, top, right, bottom = crop_box((1024, 1024))
    assert (right - left) / (bottom - top) == pytest.approx(96 / 112)
    assert (left + right) / 2 == pytest.approx(512, abs=1)  # horizontally centred
    assert (left, top, right, bottom) == pytest.approx((177.0, 122.8, 848.2, 905.8), abs=0.5)
    assert crop_box((128, 128))[2] == pytest.approx(848.2 / 8, abs=0.1)  # same relative box
    # other shapes: the largest centred 96:112 box
    assert crop_box((200, 112), "asc19") == pytest.approx((52.0, 0.0, 148.0, 112.0))
    assert crop_box((1024, 1024), "center") == pytest.approx((73.14, 0.0, 950.86, 1024.0), abs=0.01)
    with pytest.raises(UserError, match="unknown crop"):
        crop_box((10, 10), "tight")


@pytest.mark.parametrize("side, min_psnr", [(1024, 38.0), (128, 28.0)])
def test_make_hr_recovers_the_asc19_framing(side: int, min_psnr: float) -> None:
    hr = read_rgb(HR_DIR / "309.png")
    square = _ffhq_like(hr, side)
    got = make_hr(square)
    assert got.shape == (112, 96, 3)
    assert _psnr(got, hr) > min_psnr
    # a different framing of the same picture is far worse: the test can fail
    assert _psnr(make_hr(square, "center"), hr) < min_psnr - 8
    assert make_hr(hr) is not None and np.array_equal(make_hr(hr), hr)  # 96x112 passes through


def test_kernels_shapes_and_values() -> None:
    hr = read_rgb(HR_DIR / "301.png")
    lr = read_rgb(LR_DIR / "301.png")
    for name in DEGRADATIONS:
        out = downscale(hr, name)
        assert out.shape == (28, 24, 3) and out.dtype == np.uint8, name
    assert np.array_equal(downscale(hr), lr)  # the default reproduces the organiser's LR
    with pytest.raises(UserError, match="unknown degradation"):
        downscale(hr, "box")


def test_fingerprint_names_the_organiser_kernel() -> None:
    ranking = fingerprint(HR_DIR, LR_DIR, limit=60)
    names = [k for k, _ in ranking]
    maes = dict(ranking)
    assert names[:2] == ["matlab_bicubic", "pil_bicubic"]
    assert maes["matlab_bicubic"] == 0.0
    assert maes["pil_bicubic"] == pytest.approx(0.29, abs=0.05)  # 0.2917 over all 300 pairs
    assert maes["cv2_cubic"] > 3.0 and maes["nearest"] > 3.0
    assert (
        fingerprint(HR_DIR, LR_DIR, kernels=["nearest", "pil_bicubic"], limit=5)[0][0]
        == "pil_bicubic"
    )


def test_prepare_single_process(
    src_tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="harness.data.shards"):
        result = prepare(src_tree, out, kernel="pil_bicubic", shard_size=4, progress=False)
    assert result["written"] == 10 and result["skipped"] == ["asc/broken.png"]
    assert "1 of 11 files could not be decoded" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == [
        "hr-00000.npy",
        "hr-00001.npy",
        "hr-00002.npy",
        "index.json",
        "lr-00000.npy",
        "lr-00001.npy",
        "lr-00002.npy",
    ]
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 10 and index["kernel"] == "pil_bicubic" and index["crop"] == "asc19"
    assert index["items"][0] == {"name": "asc/301.png", "shard": 0, "offset": 0}
    assert [s["count"] for s in index["shards"]] == [4, 4, 2]
    assert np.load(out / "hr-00000.npy", mmap_mode="r").shape == (4, 112, 96, 3)

    pairs = PackedPairs(out)
    assert len(pairs) == 10 and pairs.kernel == "pil_bicubic"
    assert pairs.names[6:] == [
        "ffhq/00000/307.png",
        "ffhq/00000/308.png",
        "thumbs/307.jpg",
        "thumbs/308.jpg",
    ]
    lr, hr = pairs[0]
    assert np.array_equal(hr, read_rgb(HR_DIR / "301.png"))  # 96x112 passes through unchanged
    assert np.array_equal(lr, downscale(hr, "pil_bicubic"))
    _, hr_ffhq = pairs[6]
    assert _psnr(hr_ffhq, read_rgb(HR_DIR / "307.png")) > 38.0
    _, hr_thumb = pairs[-1]
    assert _psnr(hr_thumb, read_rgb(HR_DIR / "308.png")) > 28.0
    with pytest.raises(IndexError):
        pairs[10]

    with pytest.raises(UserError, match="already holds"):
        prepare(src_tree, out, progress=False)
    again = prepare(src_tree, out, shard_size=100, progress=False, overwrite=True)
    assert again["written"] == 10 and len(again["shards"]) == 1
    assert PackedPairs(out).kernel == "matlab_bicubic"
    assert not (out / "hr-00002.npy").exists()


def test_prepare_two_ranks_merge_equals_one(src_tree: Path, tmp_path: Path) -> None:
    prepare(src_tree, tmp_path / "one", shard_size=3, progress=False)
    dist = tmp_path / "two"
    r1 = prepare(src_tree, dist, rank=1, world_size=2, shard_size=3, progress=False)
    with pytest.raises(UserError, match="index-r0.json"):
        merge_index(dist)
    r0 = prepare(src_tree, dist, rank=0, world_size=2, shard_size=3, progress=False)
    assert r0["files"] == 6 and r1["files"] == 5
    assert (dist / "hr-r1-00000.npy").exists() and (dist / "index-r1.json").exists()
    index = merge_index(dist)
    assert index["count"] == 10 and index["skipped"] == ["asc/broken.png"]
    one, two = PackedPairs(tmp_path / "one"), PackedPairs(dist)
    assert one.names == two.names
    for i in range(len(one)):
        for a, b in zip(one[i], two[i], strict=True):
            assert np.array_equal(a, b)


def test_prepare_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        prepare(tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        prepare(tmp_path / "empty", tmp_path / "out", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"junk")
    with pytest.raises(UserError, match="none of 1 image files"):
        prepare(tmp_path / "bad", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="unknown degradation"):
        prepare(tmp_path / "bad", tmp_path / "out", kernel="box", progress=False)
    with pytest.raises(UserError, match="run 'harness prepare'"):
        PackedPairs(tmp_path / "empty")
