"""Scores that cannot mean anything are refused (issue #22, item 1).

Broken recognizers (NaN, constant, wrong shape, one that cannot tell faces apart) and SR that
is HR (the same folder, byte-identical copies) never give an IS: ``evaluate_dirs`` (behind
``harness evaluate`` and ``harness infer --hr``) and training validation refuse them with one
line. Real images, real cosines; the recognizers are small stand-ins.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fileio.user_error import UserError
from harness.outputs.logs import reset_warn_once
from harness.scoring.identity import IMPOSTOR_REFUSE, Separation, judge_scores
from harness.scoring.score_folders import evaluate_dirs
from tests.scoring.test_evaluate import NAMES, ROOT, TinyRecognizer


class NaNRecognizer(TinyRecognizer):
    """Tiny, but the third face of every batch embeds to NaN."""

    name = "nan"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        e = super().embed(images).clone()
        e[2] = float("nan")
        return e


class ConstantRecognizer(TinyRecognizer):
    """One vector for every face."""

    name = "constant"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.ones(len(images), self.embedding_dim), dim=1)


class WrongShapeRecognizer(TinyRecognizer):
    """Says 168-d, gives 10-d."""

    name = "wrongshape"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return super().embed(images)[:, :10]


class BlindRecognizer(TinyRecognizer):
    """A fixed vector plus a trace of the face: every face looks alike (cosines > 0.99)."""

    name = "blind"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        base = F.normalize(torch.ones(len(images), self.embedding_dim), dim=1)
        return F.normalize(base + 0.1 * super().embed(images), dim=1)


def _evaluate(tree: Path, rec: TinyRecognizer, sr: str = "sr", out: Path | None = None) -> dict:
    return evaluate_dirs(tree / "hr", tree / sr, out, lr_dir=tree / "lr", recognizer=rec,
                         metrics={"is", "psnr"}, batch_size=8)


@pytest.mark.parametrize(("rec", "words"), [
    (NaNRecognizer(), "recognizer nan: 1 of 16 embeddings are not finite"),
    (ConstantRecognizer(), "recognizer constant: gives one embedding for 16 different faces"),
    (WrongShapeRecognizer(), "recognizer wrongshape: embeddings of shape (16, 10) for 16 "
                             "faces, expected (16, 168)"),
    (BlindRecognizer(), "recognizer blind cannot tell faces apart"),
])
def test_broken_recognizers_give_no_score_and_write_nothing(sr_tree: Path, rec: TinyRecognizer,
                                                            words: str) -> None:
    with pytest.raises(UserError) as err:
        _evaluate(sr_tree, rec, out=sr_tree / "out")
    msg = str(err.value)
    assert words in msg and "\n" not in msg
    assert not (sr_tree / "out").exists()


def test_blind_recognizer_figures_are_in_its_message(sr_tree: Path) -> None:
    with pytest.raises(UserError, match=r"nearly one vector \(different people's faces have a "
                                        r"mean cosine of 0\.99\d{4}, the IS is 0\.99\d{4}\)"):
        _evaluate(sr_tree, BlindRecognizer())


def test_a_working_recognizer_scores_and_separates_faces(sr_tree: Path) -> None:
    seps: dict = {}
    result = _evaluate(sr_tree, TinyRecognizer())
    from harness.data.imageio import pair_by_name
    from harness.scoring.score_folders import score_pairs

    score_pairs(pair_by_name(sr_tree / "hr", sr_tree / "sr"), recognizer=TinyRecognizer(),
                metrics={"is"}, batch_size=8, separations=seps)
    mean_is = result["summary"]["metrics"]["is"]["mean"]
    # measured: bicubic IS 0.9996; each SR face against the 19 other HR faces: 0.18
    assert mean_is == pytest.approx(0.9996, abs=1e-4)
    stats = seps["tiny"]["sr"].measure()
    assert seps["tiny"]["sr"].count == 20 and stats.n == 20
    assert stats.is_mean == pytest.approx(mean_is)
    assert 0.1 < stats.impostor < 0.3 and stats.impostor < IMPOSTOR_REFUSE
    assert stats.rank1 == 1.0 and stats.auc == 1.0
    assert result["summary"]["identity"]["tiny"]["verdict"] == "ok"


def test_sr_of_other_people_is_refused_at_chance(sr_tree: Path) -> None:
    shuffled = sr_tree / "shuffled"
    shuffled.mkdir()
    for n, other in zip(NAMES, NAMES[7:] + NAMES[:7], strict=True):
        shutil.copy(sr_tree / "sr" / f"{other}.png", shuffled / f"{n}.png")
    with pytest.raises(UserError, match=r"SR faces are no closer to their own HR than to other "
                                        r"people's under recognizer tiny \(rank-1 0\.000"):
        _evaluate(sr_tree, TinyRecognizer(), sr="shuffled", out=sr_tree / "out")
    assert not (sr_tree / "out").exists()


def test_judge_scores_thresholds(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    hr = rng.normal(size=(12, 8))

    def stats(sr: np.ndarray, h: np.ndarray = hr) -> object:
        s = Separation()
        s.add(sr, h)
        return s.measure()

    assert judge_scores(stats(hr + 0.2 * rng.normal(size=hr.shape)), "facenet") == "ok"
    near = np.ones(8) * 30
    with pytest.raises(UserError, match="cannot tell faces apart"):
        judge_scores(stats(near + hr, near + hr), "x")
    reset_warn_once()
    with caplog.at_level(logging.WARNING, logger="harness.scoring.identity"):
        assert judge_scores(stats(np.ones(8) * 4 + hr, np.ones(8) * 4 + hr), "y") == "saturated"
    assert any("recognizer y is SATURATED" in r.getMessage() for r in caplog.records)
    assert judge_scores(stats(hr[:2], hr[:2]), "x") == "unjudged"  # two faces: nothing to say


def test_same_folder_or_identical_copies_are_refused(sr_tree: Path) -> None:
    with pytest.raises(UserError, match=r"is the HR folder .*scored against themselves"):
        evaluate_dirs(sr_tree / "hr", sr_tree / "hr" / ".." / "hr", None,
                      recognizer=TinyRecognizer(), metrics={"is"})
    shutil.copytree(sr_tree / "hr", sr_tree / "copy")
    with pytest.raises(UserError, match="all 20 SR files are byte-identical to their HR"):
        evaluate_dirs(sr_tree / "hr", sr_tree / "copy", None, recognizer=TinyRecognizer(),
                      metrics={"is"})


def test_cli_refuses_the_same_folder_in_one_line(sr_tree: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness", "evaluate", "--hr",
                           str(sr_tree / "hr"), "--sr", str(sr_tree / "hr")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is the HR folder" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_validation_refuses_a_blind_recognizer() -> None:
    from harness.cluster.distributed import get_comm, get_dist_info
    from harness.data.pairs import load_pairs
    from harness.training.validate import validate
    from kernels.bicubic_arch import BicubicUpsampler

    pairs = load_pairs("embedded:heldout")
    with pytest.raises(UserError, match="cannot tell faces apart: .* validation IS"):
        validate(BicubicUpsampler(), pairs, BlindRecognizer(), get_dist_info(), get_comm(),
                 device="cpu", batch_size=16, metrics=("is",))
    out = validate(BicubicUpsampler(), pairs, TinyRecognizer(), get_dist_info(), get_comm(),
                   device="cpu", batch_size=16, metrics=("is",))
    assert out["val_n"] == 60 and 0.9 < out["val_is"] < 1.0
    assert np.isfinite(out["val_is"])
