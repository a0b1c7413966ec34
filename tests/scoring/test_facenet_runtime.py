"""FaceNet on compiled runtimes: OpenCV preprocessing, bf16 through OpenVINO, and scoring in
bf16 without torch (real network, real validation faces)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.imageio import list_images, read_rgb, to_tensor
from harness.model.precision import cpu_has_bf16
from harness.scoring.identity import cosines, identity_similarity_arrays
from harness.scoring.recognizers import facenet_network, load_recognizer
from harness.scoring.recognizers.facenet import FaceNetRecognizer, preprocess
from harness.scoring.recognizers.facenet_runtime import (
    FaceNetBf16,
    onnx_graph,
    open_facenet_bf16,
    preprocess_arrays,
)
from tests.conftest import ROOT

DATA = ROOT / "data" / "asc19-val"
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 units")


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray]:
    """24 HR faces and the bicubic upscales of their organiser LR images (uint8 NHWC)."""
    from PIL import Image

    names = list_images(DATA / "val_HR")[:24]
    hr = np.stack([read_rgb(p) for p in names])
    up = np.stack([np.asarray(Image.open(DATA / "val_LR" / p.name).convert("RGB")
                              .resize((96, 112), Image.BICUBIC)) for p in names])
    return hr, up


@pytest.fixture(scope="module")
def bf16() -> FaceNetBf16:
    if not cpu_has_bf16():
        pytest.skip("this CPU has no bf16 units")
    rec = open_facenet_bf16(threads=2, network=facenet_network)
    assert isinstance(rec, FaceNetBf16), "OpenVINO is a requirement: bf16 must compile"
    return rec


def test_opencv_preprocessing_follows_the_torch_definition(faces) -> None:
    hr, _ = faces
    ours = preprocess_arrays(hr)
    ref = preprocess(to_tensor(list(hr))).numpy()
    assert ours.shape == ref.shape == (24, 3, 160, 160) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-4
    floats = preprocess_arrays(hr.astype(np.float32) / 255.0)  # float input in [0, 1]
    assert np.abs(floats - ref).max() < 1e-4
    wide = preprocess_arrays(hr.transpose(0, 2, 1, 3)[:2])  # wider than high: pad top/bottom
    ref_wide = preprocess(to_tensor(list(hr.transpose(0, 2, 1, 3)[:2]))).numpy()
    assert np.abs(wide - ref_wide).max() < 1e-4


@needs_bf16
def test_bf16_embeddings_and_scores_stay_near_fp32(bf16: FaceNetBf16, faces) -> None:
    hr, up = faces
    fp32 = FaceNetRecognizer()
    with torch.no_grad():
        ref = fp32.embed(to_tensor(list(hr))).numpy()
    ours = bf16.embed_arrays(hr)
    assert ours.shape == (24, 512) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)
    assert cosines(ours, ref).min() >= 0.999
    assert not np.array_equal(ours, ref)  # really another precision
    # The torch interface gives the same embeddings as the array one.
    via_tensor = bf16.embed(to_tensor(list(hr))).numpy()
    assert cosines(via_tensor, ours).min() >= 0.9999
    exact = identity_similarity_arrays(fp32, list(up), list(hr), batch_size=8)
    approx = identity_similarity_arrays(bf16, list(up), list(hr), batch_size=8,
                                        precision="bf16")
    assert np.abs(approx - exact).max() < 0.01
    assert abs(approx.mean() - exact.mean()) < 2e-3
    assert 0.4 < exact.mean() < 0.9  # bicubic faces: a real, non-trivial score
    with pytest.raises(ValueError, match="bf16"):
        identity_similarity_arrays(bf16, list(up), list(hr), precision="fp32")


@needs_bf16
def test_loader_picks_the_runtime_for_the_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(load_recognizer("facenet", scoring_only=True, precision="bf16"),
                      FaceNetBf16)
    fp32 = load_recognizer("facenet", scoring_only=True, precision="fp32")
    assert isinstance(fp32, FaceNetRecognizer) and fp32._ort is not None
    # Without OpenVINO, bf16 scoring falls back to PyTorch's autocast.
    monkeypatch.setitem(sys.modules, "openvino", None)
    rec = load_recognizer("facenet", scoring_only=True, precision="bf16")
    assert isinstance(rec, FaceNetRecognizer) and not rec.array_native


@needs_bf16
def test_an_unwritable_compile_cache_is_skipped(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    graph = onnx_graph(facenet_network)  # the user's cache (exported once)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / graph.name).symlink_to(graph)
    (cache / "openvino").write_text("a file where the compile cache would go")
    rec = open_facenet_bf16(threads=1, network=facenet_network, cache=cache)
    assert isinstance(rec, FaceNetBf16)
    assert rec.embed_arrays(read_rgb(list_images(DATA / "val_HR")[0])[None]).shape == (1, 512)


@needs_bf16
def test_bf16_evaluate_runs_without_torch(tmp_path: Path) -> None:
    """The whole command, in its own process: scores printed, torch never imported."""
    onnx_graph(facenet_network)  # exported once per cache (that first run does need torch)
    for sub in ("hr", "sr"):
        (tmp_path / sub).mkdir()
    for path in list_images(DATA / "val_HR")[:6]:
        (tmp_path / "hr" / path.name).write_bytes(path.read_bytes())
        near = read_rgb(path).copy()  # one pixel off by one: byte-identical SR is refused
        near[0, 0, 0] = near[0, 0, 0] + 1 if near[0, 0, 0] < 255 else 254
        Image.fromarray(near).save(tmp_path / "sr" / path.name)
    code = ("import sys; from harness.cli import main; "
            f"rc = main(['evaluate', '--hr', {str(tmp_path / 'hr')!r}, '--sr', "
            f"{str(tmp_path / 'sr')!r}, '--metrics', 'is', '--precision', 'bf16', "
            "'--log-format', 'off']); print('torch loaded:', 'torch' in sys.modules); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "torch loaded: False" in proc.stdout
    assert "IS" in proc.stdout and "approximate" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "│ IS" in line)
    assert float(row.split("│")[2]) > 0.999  # SR ~ HR: the same face


def test_device_auto_without_gpu_nodes_needs_no_torch() -> None:
    from harness.model.generators import _GPU_NODES

    if any(Path(n).exists() for n in _GPU_NODES):
        pytest.skip("this machine has a GPU device node")
    code = ("import sys; from harness.cluster.distributed import get_dist_info; "
            "from harness.model.generators import resolve_device; "
            "print(resolve_device('auto', get_dist_info()), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.stdout.split() == ["cpu", "False"], out.stderr


@needs_bf16
def test_a_damaged_cached_graph_is_exported_again(tmp_path: Path, caplog) -> None:
    from harness.scoring.recognizers.cache import sidecar

    graph = onnx_graph(facenet_network)
    damaged = tmp_path / graph.name
    damaged.write_bytes(graph.read_bytes()[:1_000_000])  # a truncated copy...
    sidecar(damaged).write_bytes(sidecar(graph).read_bytes())  # ...with the good one's record
    with caplog.at_level("WARNING"):
        rec = open_facenet_bf16(threads=1, network=facenet_network, cache=tmp_path)
    assert isinstance(rec, FaceNetBf16)
    assert damaged.read_bytes() == graph.read_bytes()  # exported again, whole
    assert any("is damaged (SHA-256" in r.getMessage() and "rebuilding it" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
