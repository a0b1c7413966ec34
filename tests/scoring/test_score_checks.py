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
from harness.scoring.identity import IMPOSTOR_REFUSE, ImpostorStats, judge_scores
from harness.scoring.score_folders import evaluate_dirs
from tests.scoring.test_evaluate import NAMES, ROOT, TinyRecognizer, sr_tree  # noqa: F401


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
    with pytest.raises(UserError, match=r"mean cosine of 0\.9919, as high as the IS 1\.0000"):
        _evaluate(sr_tree, BlindRecognizer())


def test_a_working_recognizer_scores_and_separates_faces(sr_tree: Path) -> None:
    stats = ImpostorStats()
    result = _evaluate(sr_tree, TinyRecognizer())
    from harness.data.imageio import pair_by_name
    from harness.scoring.score_folders import score_pairs

    score_pairs(pair_by_name(sr_tree / "hr", sr_tree / "sr"), recognizer=TinyRecognizer(),
                metrics={"is"}, batch_size=8, impostors=stats)
    mean_is = result["summary"]["metrics"]["is"]["mean"]
    # measured: bicubic IS 0.9996 vs 0.1865 between different people (8+8+4 faces per batch)
    assert mean_is == pytest.approx(0.9996, abs=1e-4)
    assert stats.count == 8 * 7 + 8 * 7 + 4 * 3
    assert stats.mean == pytest.approx(0.1865, abs=1e-4)
    assert stats.mean < IMPOSTOR_REFUSE


def test_sr_of_other_people_warns_once_and_still_scores(
    sr_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reset_warn_once()
    shuffled = sr_tree / "shuffled"
    shuffled.mkdir()
    for n, other in zip(NAMES, NAMES[7:] + NAMES[:7], strict=True):
        shutil.copy(sr_tree / "sr" / f"{other}.png", shuffled / f"{n}.png")
    with caplog.at_level(logging.WARNING, logger="harness.scoring.identity"):
        for _ in range(3):
            result = _evaluate(sr_tree, TinyRecognizer(), sr="shuffled")
    warned = [r.getMessage() for r in caplog.records if r.name == "harness.scoring.identity"]
    assert len(warned) == 1 and "not recognisable" in warned[0]
    assert result["summary"]["metrics"]["is"]["mean"] < 0.3


def test_judge_scores_thresholds() -> None:
    judge_scores(0.75, ImpostorStats(0.1 * 12, 12), "facenet")  # FaceNet-like: fine
    with pytest.raises(UserError, match="cannot tell faces apart"):
        judge_scores(0.995, ImpostorStats(0.99 * 12, 12), "x")
    judge_scores(0.5, ImpostorStats(), "x")  # one face per batch: nothing to compare


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
