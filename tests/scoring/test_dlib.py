"""The optional second recognizer (dlib ResNet 128-d), when its packages are installed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from harness.data.imageio import to_tensor
from harness.scoring.identity import identity_similarity
from harness.scoring.recognizers import load_recognizer
from tests.conftest import ROOT

HAVE_DLIB = all(importlib.util.find_spec(m) is not None
                for m in ("dlib", "face_recognition_models"))
HR = ROOT / "data/asc19-val/val_HR"
LR = ROOT / "data/asc19-val/val_LR"


@pytest.mark.skipif(not HAVE_DLIB, reason="optional extra 'quality' (dlib-bin, "
                    "face_recognition_models) not installed")
def test_dlib_scores_same_person_above_others() -> None:
    rec = load_recognizer("dlib")
    names = sorted(p.name for p in HR.iterdir())[:8]
    hr = to_tensor([np.asarray(Image.open(HR / n).convert("RGB")) for n in names])
    bic = to_tensor([np.asarray(Image.open(LR / n).convert("RGB").resize(
        (96, 112), Image.Resampling.BICUBIC)) for n in names])
    emb = rec.embed(hr)
    assert emb.shape == (8, 128)
    assert np.allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)
    same = identity_similarity(rec, bic, hr)
    other = identity_similarity(rec, bic, hr.roll(1, dims=0))
    assert same.mean() > 0.9 and same.mean() > other.mean() + 0.05


@pytest.mark.skipif(HAVE_DLIB, reason="dlib is installed")
def test_dlib_missing_is_a_user_error() -> None:
    from fileio.user_error import UserError

    with pytest.raises(UserError, match="quality"):
        load_recognizer("dlib")
