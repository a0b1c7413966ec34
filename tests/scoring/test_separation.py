"""The scale-free sanity rule (issue #30): a recognizer is judged by how well it tells *these*
faces apart, never by how high its cosines are.

Real ONNX networks are exported from tiny torch modules into ``tmp_path`` and run through
onnxruntime (the ``onnx:PATH`` recognizer); dlib (extra ``quality``) scores real faces.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fileio.user_error import UserError
from harness.outputs.logs import reset_warn_once
from harness.scoring.identity import Separation, judge_scores
from harness.scoring.panel import split_panel
from harness.scoring.score_folders import evaluate_dirs
from tests.scoring.test_evaluate import TinyRecognizer

HAVE_DLIB = all(importlib.util.find_spec(m) is not None
                for m in ("dlib", "face_recognition_models"))


def _export(module: torch.nn.Module, path: Path) -> str:
    """``module`` as a real ONNX file with a dynamic batch (112x112 RGB input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), (torch.zeros(2, 3, 112, 112),), str(path),
                          dynamo=False, input_names=["x"], output_names=["e"],
                          dynamic_axes={"x": {0: "n"}, "e": {0: "n"}})
    return f"onnx:{path}"


class Thumbnail(torch.nn.Module):
    """A working stand-in: the mean-free 14x14 grey thumbnail (196-d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(x.mean(1, keepdim=True), (14, 14)).flatten(1)
        return small - small.mean(1, keepdim=True)


class NearConstant(Thumbnail):
    """One large fixed vector plus a trace of the face: every cosine > 0.99."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 5.0 + super().forward(x)


class Saturated(Thumbnail):
    """A fixed vector plus a small trace of the face: different people at cosine ~0.97."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = super().forward(x)
        return 0.4 * t.norm(dim=1, keepdim=True).mean() + t


class OneD(torch.nn.Module):
    """(N, 1) embeddings: every cosine is +1 or -1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1) + 1.0


def _evaluate(tree: Path, rec: object, out: Path | None = None, sr: str = "sr") -> dict:
    return evaluate_dirs(tree / "hr", tree / sr, out, lr_dir=tree / "lr", recognizer=rec,
                         metrics={"is"}, batch_size=8)


def test_separation_of_perfect_and_chance_embeddings() -> None:
    rng = np.random.default_rng(0)
    hr = rng.normal(size=(50, 16))
    sep = Separation()
    sep.add(hr[:20] + 0.1 * rng.normal(size=(20, 16)), hr[:20])
    sep.add(hr[20:] + 0.1 * rng.normal(size=(30, 16)), hr[20:])  # two batches, one set
    stats = sep.measure()
    assert stats is not None and stats.n == 50
    assert stats.rank1 == 1.0 and stats.auc == 1.0
    assert abs(stats.impostor) < 0.05  # random 16-d vectors
    assert stats.normalized_is == pytest.approx((stats.is_mean - stats.impostor)
                                                / (1 - stats.impostor))
    assert judge_scores(stats, "x") == "ok"
    chance = Separation()
    chance.add(rng.normal(size=(50, 16)), hr)  # SR of nobody
    c = chance.measure()
    assert c is not None and 0.4 < c.auc < 0.6 and c.rank1 < 0.1
    with pytest.raises(UserError, match=r"no closer to their own HR .*\(rank-1 0\.0\d\d, chance "
                                        r"0\.020"):
        judge_scores(c, "x")
    assert judge_scores(c, "x", "validation IS", chance="warn") == "chance"
    assert Separation().measure() is None  # nothing to compare: unjudged
    assert judge_scores(None, "x") == "unjudged"


def test_squeezed_cosines_are_scored_not_refused() -> None:
    """dlib's case: every cosine near 1, people well separated."""
    rng = np.random.default_rng(1)
    base = np.ones(32) * 2.5
    hr = base + rng.normal(size=(40, 32))
    sr = hr + 0.3 * rng.normal(size=(40, 32))
    sep = Separation()
    sep.add(sr, hr)
    stats = sep.measure()
    assert stats is not None and 0.8 < stats.impostor < 0.9 and stats.is_mean > 0.95
    assert stats.rank1 == 1.0
    assert judge_scores(stats, "dlib") == "compressed"


def test_merge_keeps_pairs_aligned_over_ranks() -> None:
    rng = np.random.default_rng(2)
    hr = rng.normal(size=(30, 8))
    parts = []
    for lo, hi in ((0, 10), (10, 30)):  # two ranks
        s = Separation()
        s.add(hr[lo:hi] * 2, hr[lo:hi])
        parts.append(s.part())
    stats = Separation.merge(parts).measure()
    assert stats is not None and stats.n == 30 and stats.is_mean == pytest.approx(1.0)
    assert stats.rank1 == 1.0


def test_a_working_onnx_network_scores_with_its_separation(sr_tree: Path,
                                                           tmp_path: Path) -> None:
    spec = _export(Thumbnail(), tmp_path / "thumb.onnx")
    result = _evaluate(sr_tree, spec, out=sr_tree / "out")
    ident = result["summary"]["identity"]
    row = ident["onnx_thumb"]
    assert row["primary"] and row["verdict"] == "ok"
    assert row["rank1"] >= 0.9 and row["auc"] > 0.95
    assert row["is"] == pytest.approx(result["summary"]["metrics"]["is"]["mean"])
    assert row["normalized_is"] == pytest.approx(
        (row["is"] - row["impostor"]) / (1 - row["impostor"]))
    doc = json.loads((sr_tree / "out" / "scores.json").read_text())
    assert doc["summary"]["identity"]["onnx_thumb"]["rank1"] == row["rank1"]
    assert doc["meta"]["recognizers"] == ["onnx_thumb"]


def test_near_constant_onnx_network_is_refused(sr_tree: Path, tmp_path: Path) -> None:
    spec = _export(NearConstant(), tmp_path / "const.onnx")
    with pytest.raises(UserError, match=r"recognizer onnx cannot tell faces apart: every face "
                                        r"embeds to nearly one vector .*mean cosine of "
                                        r"0\.99\d{4}, the IS is") as err:
        _evaluate(sr_tree, spec, out=sr_tree / "out")
    assert "\n" not in str(err.value)
    assert not (sr_tree / "out").exists()


def test_one_dimensional_onnx_network_is_refused(sr_tree: Path, tmp_path: Path) -> None:
    spec = _export(OneD(), tmp_path / "oned.onnx")
    with pytest.raises(UserError, match=r"recognizer onnx: gives 1-d embeddings; every cosine"):
        _evaluate(sr_tree, spec)


def test_saturated_onnx_network_is_warned_loudly(sr_tree: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    reset_warn_once()
    spec = _export(Saturated(), tmp_path / "sat.onnx")
    with caplog.at_level(logging.WARNING, logger="harness.scoring.identity"):
        result = _evaluate(sr_tree, spec)
    row = result["summary"]["identity"]["onnx_sat"]
    assert 0.95 <= row["impostor"] < 0.99 and row["verdict"] == "saturated"
    warned = [r.getMessage() for r in caplog.records if "SATURATED" in r.getMessage()]
    assert len(warned) == 1 and "recognizer onnx is SATURATED" in warned[0]


def test_random_weight_sphere20a_is_warned(sr_tree: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Random weights tell bicubic faces apart by their pixels (rank-1 1.0) but find
    different people alike and a 4x-downscaled face nearly its original."""
    from harness.scoring.recognizers.sphereface import Sphere20a

    reset_warn_once()
    torch.manual_seed(0)
    path = tmp_path / "random.pth"
    torch.save(Sphere20a(classnum=10, feature=True).state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="harness.scoring.identity"):
        result = _evaluate(sr_tree, f"sphere20a:{path}")
    row = result["summary"]["identity"]["sphere20a_random"]
    assert row["verdict"] == "saturated" and row["impostor"] > 0.5
    assert row["normalized_is_bicubic"] > 0.9
    assert any("sphere20a is SATURATED" in r.getMessage() and "4x-downscaled" in r.getMessage()
               for r in caplog.records)


def test_panel_scores_every_recognizer_in_one_pass(sr_tree: Path) -> None:
    class Other(TinyRecognizer):
        name = "other"

        def embed(self, images: torch.Tensor) -> torch.Tensor:
            return super().embed(images.flip(3))

    tiny, other = TinyRecognizer(), Other()
    result = _evaluate(sr_tree, [tiny, other], out=sr_tree / "out")
    assert tiny.calls == other.calls == 6  # 3 chunks, SR+HR and bicubic+HR in each
    rec = result["records"][0]
    assert {"is", "is_other", "is_bicubic", "is_other_bicubic"} <= set(rec)
    ident = result["summary"]["identity"]
    assert list(ident) == ["tiny", "other"]
    assert ident["other"]["key"] == "is_other" and not ident["other"]["primary"]
    assert ident["other"]["gain"] == pytest.approx(result["summary"]["metrics"]["is_other"][
        "mean"] - ident["other"]["is_bicubic"], abs=1.0)  # present and finite
    header = (sr_tree / "out" / "per_image.csv").read_text().splitlines()[0]
    assert header.startswith("name,is,is_other,")


def test_panel_specs_are_checked() -> None:
    assert split_panel("facenet, dlib") == ["facenet", "dlib"]
    with pytest.raises(UserError, match="facenet is named twice"):
        split_panel("facenet,facenet")
    with pytest.raises(UserError, match="unknown recognizer"):
        split_panel("facenet,arcface")


@pytest.mark.skipif(not HAVE_DLIB, reason="optional extra 'quality' not installed")
def test_dlib_is_scored_with_its_normalised_gain(sr_tree: Path) -> None:
    """Issue #30: dlib was refused ("cannot tell faces apart") on bicubic faces."""
    result = _evaluate(sr_tree, "dlib")
    row = result["summary"]["identity"]["dlib"]
    assert row["impostor"] > 0.75  # squeezed near 1 ...
    assert row["rank1"] >= 0.9 and row["auc"] > 0.95  # ... and tells people apart
    assert row["verdict"] == "compressed"
    assert 0.3 < row["normalized_is"] < 0.9


def test_lr_kernel_check_names_a_mismatch(sr_tree: Path, tmp_path: Path) -> None:
    from harness.data.degradation import downscale
    from harness.data.imageio import read_rgb, write_png
    from harness.scoring.lr_check import lr_kernel_check

    ok = lr_kernel_check(sr_tree / "hr", sr_tree / "lr", "matlab_bicubic")
    assert ok["match"] is True and ok["best"] == "matlab_bicubic" and ok["best_mae"] < 0.05
    assert ok["line"].startswith("LR kernel matches training: matlab_bicubic")
    area = tmp_path / "area"
    area.mkdir()
    for hr in sorted((sr_tree / "hr").iterdir()):
        write_png(area / hr.name, downscale(read_rgb(hr), "cv2_area", 4))
    bad = lr_kernel_check(sr_tree / "hr", area, "matlab_bicubic")
    assert bad["match"] is False and bad["best"] == "cv2_area"
    assert bad["line"].startswith("LR KERNEL MISMATCH: the model was trained on matlab_bicubic")
    assert lr_kernel_check(sr_tree / "hr", area, None)["line"].startswith("LR kernel: cv2_area")
    result = evaluate_dirs(sr_tree / "hr", sr_tree / "sr", None, lr_dir=area,
                           recognizer=TinyRecognizer(), metrics={"psnr"},
                           lr_kernel="matlab_bicubic")
    assert result["summary"]["lr_kernel"]["match"] is False
