"""Precision choices: fp32 scores unchanged by the faster layout, bf16 within stated bounds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import load_job
from harness.data.imageio import from_tensor, list_images, read_rgb, to_tensor
from harness.model.generators import make_generator, super_resolve
from harness.model.precision import autocast, cpu_has_bf16, resolve_precision
from harness.scoring.score_folders import evaluate_dirs
from tests.conftest import ROOT

DATA = ROOT / "data" / "asc19-val"
INFER_BOUND = 3  # grey levels: bf16 SR output vs fp32 (measured max 2-3 on this CPU)


def test_auto_precision_follows_the_hardware(tmp_path: Path) -> None:
    assert resolve_precision("fp32", "cuda:0") == "fp32"
    assert resolve_precision("auto", "cuda:0") == "bf16"
    fake = tmp_path / "cpuinfo"
    fake.write_text("flags\t\t: fpu sse avx512f avx512_bf16\n")
    assert cpu_has_bf16.__wrapped__(str(fake)) is True
    fake.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_has_bf16.__wrapped__(str(fake)) is False
    assert isinstance(autocast("cpu", "bf16"), torch.autocast)


def test_bf16_inference_stays_within_the_stated_bound() -> None:
    job = load_job(str(ROOT / "jobs" / "asc19-cpu-ft.yaml"))
    model, _ = make_generator(job.model, "infer", device="cpu")
    lr = to_tensor([read_rgb(p) for p in list_images(DATA / "val_LR")[:16]])
    fp32 = np.stack(from_tensor(super_resolve(model, lr, True, "fp32")))
    model_cl = model.to(memory_format=torch.channels_last)
    bf16 = np.stack(from_tensor(super_resolve(model_cl, lr, True, "bf16")))
    diff = np.abs(fp32.astype(int) - bf16.astype(int))
    assert diff.max() <= INFER_BOUND, diff.max()
    assert diff.mean() < 0.5


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """24 HR faces, their organiser LR, and SR = a blurred HR (a non-trivial score)."""
    root = tmp_path_factory.mktemp("prec")
    from PIL import Image, ImageFilter

    for sub in ("hr", "lr", "sr"):
        (root / sub).mkdir()
    for path in list_images(DATA / "val_HR")[:24]:
        Image.open(path).save(root / "hr" / path.name)
        Image.open(DATA / "val_LR" / path.name).save(root / "lr" / path.name)
        Image.open(path).filter(ImageFilter.GaussianBlur(1.5)).save(root / "sr" / path.name)
    return root / "hr", root / "sr", root / "lr"


def test_fp32_scores_do_not_move_with_the_fast_path(pairs) -> None:
    """onnxruntime (FaceNet on CPUs) and channels-last give the PyTorch scores to 1e-6."""
    hr, sr, lr = pairs
    plain = evaluate_dirs(hr, sr, None, lr_dir=lr, metrics=["is"], fast=False)
    fast = evaluate_dirs(hr, sr, None, lr_dir=lr, metrics=["is"], fast=True)
    a = np.array([r["is"] for r in plain["records"]])
    b = np.array([r["is"] for r in fast["records"]])
    assert np.abs(a - b).max() <= 1e-6
    assert plain["meta"]["precision"] == "fp32"


def test_bf16_scores_are_close_and_labelled_approximate(pairs, tmp_path: Path) -> None:
    hr, sr, lr = pairs
    exact = evaluate_dirs(hr, sr, None, lr_dir=lr, metrics=["is"])
    approx = evaluate_dirs(hr, sr, tmp_path, lr_dir=lr, metrics=["is"], precision="bf16")
    d = approx["summary"]["metrics"]["is"]["mean"] - exact["summary"]["metrics"]["is"]["mean"]
    assert abs(d) < 2e-3
    import json

    meta = json.loads((tmp_path / "scores.json").read_text())["meta"]
    assert meta["precision"] == "bf16" and meta["approximate"] is True
