"""Data sources, the embedded split, deterministic sampling and pair-aligned augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from fileio.user_error import UserError
from harness.config import AugmentConfig
from harness.data.pairs import (
    augment_pair,
    batch_indices,
    batches_per_epoch,
    check_split,
    load_pairs,
    make_batch,
    materialize_split,
    only_flips,
)


def test_embedded_split_is_fixed_and_disjoint() -> None:
    train, held = load_pairs("embedded:train"), load_pairs("embedded:heldout")
    assert len(train) == 240 and len(held) == 60
    assert held.names[:3] == ("305", "310", "315") and held.names[-1] == "600"
    assert not set(train.names) & set(held.names)
    assert len(load_pairs("embedded:all")) == 300
    assert train.hr[0].shape == (112, 96, 3) and train.lr[0].shape == (28, 24, 3)


def test_unknown_embedded_source() -> None:
    with pytest.raises(UserError, match="embedded:test"):
        load_pairs("embedded:test")


def test_batches_cover_each_epoch_once_and_are_deterministic() -> None:
    n, batch, world = 20, 4, 2
    seen = []
    for step in range(batches_per_epoch(n, batch)):
        parts = [batch_indices(n, batch, step, r, world, seed=3) for r in range(world)]
        assert all(len(p) == batch // world for p in parts)
        seen += sum(parts, [])
    assert sorted(seen) == list(range(n))
    assert batch_indices(n, batch, 7, 1, world, 3) == batch_indices(n, batch, 7, 1, world, 3)
    assert batch_indices(n, batch, 5, 0, world, 3) != batch_indices(n, batch, 5, 0, world, 4)


def test_check_split_messages() -> None:
    with pytest.raises(UserError, match="cannot be split across 2 ranks"):
        check_split(10, 3, 2, "x")
    with pytest.raises(UserError, match="4 ranks but only 3 training pairs"):
        check_split(3, 4, 4, "x")
    check_split(10, 4, 2, "x")


def test_augmentation_keeps_pairs_aligned() -> None:
    from harness.data.degradation import downscale

    pairs = load_pairs("embedded:heldout")
    cfg = AugmentConfig(hflip=True, shift_px=2, color_jitter=0.0)
    rng = np.random.default_rng(0)
    for i in range(6):
        lr, hr, _ = augment_pair(pairs.lr[i], pairs.hr[i], cfg, rng)
        lr_u8 = np.round(lr * 255).astype(np.uint8)
        hr_u8 = np.round(hr * 255).astype(np.uint8)
        again = downscale(hr_u8, "matlab_bicubic").astype(float)
        inner = (slice(3, -3), slice(3, -3))  # edges differ where replication padded
        assert np.abs(again[inner] - lr_u8[inner].astype(float)).mean() < 1.0


def test_warp_makes_new_consistent_pairs() -> None:
    from harness.data.degradation import downscale
    from harness.data.pairs import warp_hr

    pairs = load_pairs("embedded:heldout")
    hr0 = pairs.hr[0]
    assert np.array_equal(warp_hr(hr0, 0.0, 1.0), hr0)
    # A 90-degree turn of a square patch about its centre is exact: compare with np.rot90.
    square = np.ascontiguousarray(hr0[8:104])
    np.testing.assert_array_equal(warp_hr(square, 90.0, 1.0), np.rot90(square))
    cfg = AugmentConfig(hflip=False, rotate_deg=10.0, zoom=0.1)
    assert not only_flips(cfg)
    rng = np.random.default_rng(3)
    for i in range(4):
        lr, hr, _ = augment_pair(pairs.lr[i], pairs.hr[i], cfg, rng)
        hr_u8 = np.round(hr * 255).astype(np.uint8)
        assert np.abs(hr_u8.astype(float) - pairs.hr[i]).mean() > 3.0  # really moved
        lr_u8 = np.round(lr * 255).astype(np.uint8)
        np.testing.assert_array_equal(lr_u8, downscale(hr_u8, "matlab_bicubic"))


def test_flip_flags_and_only_flips() -> None:
    pairs = load_pairs("embedded:heldout")
    cfg = AugmentConfig(hflip=True)
    assert only_flips(cfg) and not only_flips(AugmentConfig(shift_px=1))
    lr, hr, flips = make_batch(pairs, list(range(8)), cfg, np.random.default_rng(1),
                               return_flips=True)
    assert lr.shape == (8, 3, 28, 24) and hr.shape == (8, 3, 112, 96)
    for j, f in enumerate(flips):
        want = pairs.hr[j][:, ::-1] if f else pairs.hr[j]
        assert np.allclose(hr[j].permute(1, 2, 0).numpy(), want / 255.0)
    assert any(flips) and not all(flips)


def test_materialize_split(tmp_path) -> None:
    lr_dir, hr_dir = materialize_split("embedded:heldout", tmp_path)
    assert len(list(lr_dir.iterdir())) == 60 and len(list(hr_dir.iterdir())) == 60
