"""Cached conversions are checked before use (issue #22, item 2).

Bytes flipped in the middle of the cached ONNX graph (which ``onnx.checker`` accepts and
onnxruntime runs, giving other embeddings) or of the cached FaceNet state dict are found by
their recorded SHA-256, logged, and the entry is rebuilt: the IS equals the clean IS exactly.
Real FaceNet, real caches (copied into a private ``HARNESS_CACHE``).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.data.imageio import pil_bicubic_upscale, read_rgb
from harness.scoring.recognizers import cache as cache_mod
from harness.scoring.recognizers.facenet_runtime import ONNX_NAME

ROOT = Path(__file__).resolve().parents[2]
HR_DIR = ROOT / "data" / "asc19-val" / "val_HR"
LR_DIR = ROOT / "data" / "asc19-val" / "val_LR"
NAMES = [str(n) for n in range(301, 309)]
PT_NAME = "facenet-20180408-102900.pt"


def _faces() -> tuple[list[np.ndarray], list[np.ndarray]]:
    hrs = [read_rgb(HR_DIR / f"{n}.png") for n in NAMES]
    srs = [pil_bicubic_upscale(read_rgb(LR_DIR / f"{n}.png"), (96, 112)) for n in NAMES]
    return srs, hrs


def _score_onnx() -> np.ndarray:
    """IS of 8 bicubic faces through a fresh onnxruntime FaceNet (reads the cached graph)."""
    from harness.scoring.identity import identity_similarity_arrays
    from harness.scoring.recognizers import load_recognizer

    rec = load_recognizer("facenet", scoring_only=True, threads=1)
    assert rec._ort is not None  # the cached ONNX graph is what runs
    srs, hrs = _faces()
    return identity_similarity_arrays(rec, srs, hrs, batch_size=8)


def _flip_middle(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0x5A for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


@pytest.fixture()
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache holding a copy of the user's (or a fresh) FaceNet conversion."""
    cache = tmp_path / "cache"
    cache.mkdir()
    user = Path.home() / ".cache" / "facesr-harness"
    for name in (PT_NAME, ONNX_NAME):
        if (user / name).is_file():
            shutil.copy(user / name, cache / name)
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    return cache


@pytest.mark.slow
def test_flipped_bytes_in_the_onnx_graph_are_found_and_rebuilt(
    own_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clean = _score_onnx()  # records the graph's checksum (a copy without one is rebuilt)
    record = json.loads((own_cache / (ONNX_NAME + ".json")).read_text())
    assert record["sha256"] == cache_mod.sha256_file(own_cache / ONNX_NAME)
    assert len(record["source"]["sha256"]) == 64 and record["source"]["recipe"]
    import onnx

    _flip_middle(own_cache / ONNX_NAME)
    onnx.checker.check_model(str(own_cache / ONNX_NAME))  # the damage passes the checker
    with caplog.at_level(logging.WARNING, logger="harness.scoring.recognizers.cache"):
        again = _score_onnx()
    assert np.array_equal(again, clean)
    assert 0.5 < clean.mean() < 0.9
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and ONNX_NAME in damaged[0]


@pytest.mark.slow
def test_flipped_bytes_in_the_state_dict_are_found_and_rebuilt(
    own_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from harness.scoring.recognizers.facenet import load_facenet_state_dict

    clean = load_facenet_state_dict()
    _flip_middle(own_cache / PT_NAME)
    with caplog.at_level(logging.WARNING, logger="harness.scoring.recognizers.cache"):
        again = load_facenet_state_dict()
    assert clean.keys() == again.keys()
    assert all(torch.equal(clean[k], again[k]) for k in clean)
    assert any("is damaged" in r.getMessage() and PT_NAME in r.getMessage()
               for r in caplog.records)
    assert cache_mod.check_entry(own_cache / PT_NAME, None,
                                 json.loads((own_cache / (PT_NAME + ".json")).read_text())
                                 ["source"]["recipe"], "test")


def test_a_folder_cache_keeps_intact_files_and_drops_damaged_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "graph.onnx"
    src.write_bytes(b"graph")
    blobs = tmp_path / "openvino"
    blobs.mkdir()
    (blobs / "a.blob").write_bytes(b"a" * 1000)
    (blobs / "b.blob").write_bytes(b"b" * 1000)
    cache_mod.record_folder(blobs, src, "r1", "test cache")
    _flip_middle(blobs / "b.blob", 8)
    (blobs / "c.blob").write_bytes(b"unrecorded")
    with caplog.at_level(logging.WARNING, logger="harness.scoring.recognizers.cache"):
        cache_mod.check_folder(blobs, src, "r1", "test cache")
    assert sorted(p.name for p in blobs.iterdir()) == ["a.blob"]
    assert [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()][0].startswith(
        f"test cache {blobs / 'b.blob'} is damaged")
    cache_mod.check_folder(blobs, src, "r2", "test cache")  # another recipe: emptied
    assert not blobs.exists()


def test_a_file_cache_without_a_record_or_with_another_source_is_rebuilt(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"one")
    entry = tmp_path / "entry.bin"
    built: list[Path] = []

    def build(p: Path) -> None:
        built.append(p)
        p.write_bytes(b"built from " + src.read_bytes())

    entry.write_bytes(b"legacy, no record")
    cache_mod.cached_file(entry, src, "r", build, "t")
    cache_mod.cached_file(entry, src, "r", build, "t")  # intact: used as it is
    assert len(built) == 1 and entry.read_bytes() == b"built from one"
    src.write_bytes(b"two")  # the source changed
    cache_mod.cached_file(entry, src, "r", build, "t")
    assert len(built) == 2 and entry.read_bytes() == b"built from two"
