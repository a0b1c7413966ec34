"""Tests for harness.scoring.recognizers.

FaceNet port vs cv2.dnn, sphere20a vs the official loop, ONNX.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fileio.user_error import UserError
from harness.scoring.identity import identity_similarity
from harness.scoring.recognizers import load_recognizer

DATA = Path(__file__).resolve().parents[2] / "data" / "asc19-val"
NAMES = [f"{i}.png" for i in range(301, 601)]


def _read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _bicubic_up(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((96, 112), Image.BICUBIC))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="module")
def facenet_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.scoring.recognizers.facenet import load_facenet_state_dict

    cache = tmp_path_factory.mktemp("facenet-cache")
    load_facenet_state_dict(cache=cache)  # converts the packaged graph once for this module
    return cache


@pytest.fixture(scope="module")
def facenet(facenet_cache: Path):
    from harness.scoring.recognizers.facenet import (
        FaceNetRecognizer,
        load_facenet_state_dict,
    )

    return FaceNetRecognizer(state_dict=load_facenet_state_dict(cache=facenet_cache))


@pytest.fixture(scope="module")
def cv2_facenet():
    cv2 = pytest.importorskip("cv2")
    from harness.scoring.recognizers.facenet import graph_path

    return cv2.dnn.readNetFromTensorflow(str(graph_path()))


def _cv2_embed(net, images: np.ndarray) -> np.ndarray:
    from harness.scoring.recognizers.facenet import preprocess_numpy

    out = []
    for img in images:
        net.setInput(preprocess_numpy(img))
        out.append(net.forward().reshape(-1))
    return np.stack(out)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- graph reader --------------------------------------------------------------------------------


def test_graphdef_reads_packaged_facenet_graph():
    from harness.scoring.recognizers.facenet import graph_path
    from harness.scoring.recognizers.graphdef import read_graphdef

    graph = read_graphdef(graph_path())
    ops = [node.op for node in graph.nodes.values()]
    assert ops.count("Conv2D") == 132
    assert graph.const("InceptionResnetV1/Conv2d_1a_3x3/weights").shape == (3, 3, 3, 32)
    assert graph.const("InceptionResnetV1/Bottleneck/weights").shape == (1792, 512)
    assert graph.nodes["InceptionResnetV1/Conv2d_4b_3x3/Conv2D"].attrs["strides"] == [1, 2, 2, 1]
    assert float(graph.const("InceptionResnetV1/Repeat/block35_1/mul/x")) == pytest.approx(0.17)


def test_graphdef_rejects_garbage():
    from harness.scoring.recognizers.graphdef import GraphDefError, parse_graphdef

    with pytest.raises(GraphDefError):
        parse_graphdef(b"\x0a\xff\xff\xff\x0f garbage")


# --- facenet --------------------------------------------------------------------------------------


def test_facenet_matches_cv2_dnn_on_16_images(facenet, cv2_facenet):
    hr = np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[::19][:16]])
    with torch.no_grad():
        ours = facenet.embed(_to_tensor(hr)).numpy()
    ref = _cv2_embed(cv2_facenet, hr)
    assert ours.shape == (16, 512)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert _cosines(ours, ref).min() >= 0.9999


@pytest.mark.slow
def test_facenet_matches_cv2_dnn_on_all_300_hr(facenet, cv2_facenet):
    hr = np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES])
    with torch.no_grad():
        ours = torch.cat([facenet.embed(chunk) for chunk in _to_tensor(hr).split(50)]).numpy()
    cos = _cosines(ours, _cv2_embed(cv2_facenet, hr))
    assert cos.min() >= 0.9999, f"worst image {NAMES[int(cos.argmin())]}: {cos.min()}"


@pytest.mark.slow
def test_facenet_is_of_bicubic_upscaled_lr_is_0650(facenet):
    hr = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES]))
    sr = _to_tensor(np.stack([_bicubic_up(DATA / "val_LR" / name) for name in NAMES]))
    scores = identity_similarity(facenet, sr, hr)
    assert scores.dtype == np.float64 and scores.shape == (300,)
    assert scores.mean() == pytest.approx(0.650, abs=0.01)
    assert np.median(scores) == pytest.approx(0.664, abs=0.01)


def test_facenet_batched_equals_one_by_one(facenet):
    hr = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[:4]]))
    with torch.no_grad():
        batched = facenet.embed(hr)
        single = torch.cat([facenet.embed(hr[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_facenet_gradients_reach_input_and_weights_are_frozen(facenet):
    hr = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[:2]]))
    sr = _to_tensor(np.stack([_bicubic_up(DATA / "val_LR" / name) for name in NAMES[:2]]))
    sr.requires_grad_(True)
    loss = 1 - (facenet.embed(sr) * facenet.embed(hr)).sum(1).mean()
    loss.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all()
    assert sr.grad.abs().sum() > 0
    assert not facenet.model.training
    assert not any(p.requires_grad for p in facenet.model.parameters())
    assert all(p.grad is None for p in facenet.model.parameters())


def test_facenet_features_names_and_shapes(facenet):
    hr = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[:2]]))
    assert "conv2d_4b" in facenet.feature_layers and "repeat_2" in facenet.feature_layers
    with torch.no_grad():
        c4b, r1, m6a, bottleneck = facenet.features(
            hr, ["conv2d_4b", "repeat_1", "mixed_6a", "bottleneck"]
        )
        emb = facenet.embed(hr)
    assert c4b.shape == (2, 256, 17, 17) and r1.shape == (2, 256, 17, 17)
    assert m6a.shape == (2, 896, 8, 8)
    torch.testing.assert_close(F.normalize(bottleneck, dim=1), emb, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="unknown FaceNet layer"):
        facenet.features(hr, ["conv9"])


def test_facenet_shared_pass_equals_separate_losses(facenet):
    """Identity + feature loss from one recognizer pass: same values and SR gradients."""
    from kernels.losses import CombinedLoss

    hr = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[:2]]))
    lr_up = _to_tensor(np.stack([_bicubic_up(DATA / "val_LR" / name) for name in NAMES[:2]]))
    layers = ("repeat_1", "mixed_6a")
    emb, (r1, m6a) = facenet.embed_with_features(hr, layers)
    torch.testing.assert_close(emb, facenet.embed(hr), atol=1e-6, rtol=0)
    torch.testing.assert_close(r1, facenet.features(hr, ["repeat_1"])[0], atol=0, rtol=0)
    results = []
    for rec in (facenet, _Separate(facenet)):
        sr = lr_up.clone().requires_grad_(True)
        loss = CombinedLoss(pixel_weight=1.0, identity_weight=1.0, feature_weight=5.0,
                            recognizer=rec, feature_layers=layers)
        total, terms = loss(sr, hr)
        total.backward()
        results.append((terms, sr.grad))
    (shared_terms, shared_grad), (sep_terms, sep_grad) = results
    assert shared_terms["identity"] > 0.2 and shared_terms["feature"] > 0.01
    for name in ("pixel", "identity", "feature", "total"):
        assert shared_terms[name] == pytest.approx(sep_terms[name], abs=1e-6)
    torch.testing.assert_close(shared_grad, sep_grad, atol=1e-7, rtol=1e-4)


class _Separate:
    """The same recognizer without ``embed_with_features`` (the two-pass path)."""

    def __init__(self, inner) -> None:
        self.embed, self.features = inner.embed, inner.features


def test_facenet_other_sizes_are_padded_to_square(facenet):
    from harness.scoring.recognizers.facenet import preprocess

    img = torch.rand(1, 3, 112, 96)
    x = preprocess(img)
    assert x.shape == (1, 3, 160, 160)
    assert x.mean().abs() < 1e-4 and (x.std(unbiased=False) - 1).abs() < 1e-4
    wide = preprocess(torch.rand(1, 3, 50, 80))
    assert wide.shape == (1, 3, 160, 160)


def test_facenet_cache_is_written_once_and_rebuilt_when_corrupt(
    facenet_cache, monkeypatch, tmp_path
):
    cached = facenet_cache / "facenet-20180408-102900.pt"
    assert cached.is_file()
    state = torch.load(cached, weights_only=True)
    assert state["conv2d_1a.conv.weight"].shape == (32, 3, 3, 3)
    assert not list(facenet_cache.glob("*.tmp"))

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    (tmp_path / cached.name).write_bytes(b"not a torch file")
    rec = load_recognizer("facenet")
    rebuilt = torch.load(tmp_path / cached.name, weights_only=True)
    torch.testing.assert_close(rebuilt["last_linear.weight"], state["last_linear.weight"])
    assert rec.name == "facenet" and rec.embedding_dim == 512


def test_identity_similarity_batched_equals_pairwise(facenet):
    hr = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[:5]]))
    sr = _to_tensor(np.stack([_bicubic_up(DATA / "val_LR" / name) for name in NAMES[:5]]))
    batched = identity_similarity(facenet, sr, hr, batch_size=2)
    with torch.no_grad():
        pairwise = [
            float((facenet.embed(sr[i : i + 1]) * facenet.embed(hr[i : i + 1])).sum())
            for i in range(5)
        ]
    np.testing.assert_allclose(batched, pairwise, atol=1e-5)
    assert 0.3 < batched.mean() < 0.95
    with pytest.raises(ValueError):
        identity_similarity(facenet, sr[:4], hr)


# --- sphere20a ------------------------------------------------------------------------------------


def _reference_sphere20a_fc5(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """clcarwin net_sphere.sphere20a.forward (feature=True), written out layer by layer."""

    def layer(name: str, t: torch.Tensor, stride: int = 1) -> torch.Tensor:
        t = F.conv2d(t, sd[f"conv{name}.weight"], sd[f"conv{name}.bias"], stride, 1)
        return F.prelu(t, sd[f"relu{name}.weight"])

    x = layer("1_1", x, 2)
    x = x + layer("1_3", layer("1_2", x))
    x = layer("2_1", x, 2)
    x = x + layer("2_3", layer("2_2", x))
    x = x + layer("2_5", layer("2_4", x))
    x = layer("3_1", x, 2)
    x = x + layer("3_3", layer("3_2", x))
    x = x + layer("3_5", layer("3_4", x))
    x = x + layer("3_7", layer("3_6", x))
    x = x + layer("3_9", layer("3_8", x))
    x = layer("4_1", x, 2)
    x = x + layer("4_3", layer("4_2", x))
    return F.linear(x.reshape(x.size(0), -1), sd["fc5.weight"], sd["fc5.bias"])


def _official_loop(
    sd: dict[str, torch.Tensor], hr_dir: Path, sr_dir: Path, names: list[str]
) -> np.ndarray:
    """ASC19 evaluation_script/evaluate.py: one pair per forward, OpenCV reading."""
    cv2 = pytest.importorskip("cv2")
    scores = []
    for name in names:
        img1 = cv2.resize(cv2.imread(str(hr_dir / name)), (96, 112), interpolation=cv2.INTER_CUBIC)
        img2 = cv2.resize(cv2.imread(str(sr_dir / name)), (96, 112), interpolation=cv2.INTER_CUBIC)
        imglist = [img1, img2]
        for i in range(len(imglist)):
            imglist[i] = imglist[i].transpose(2, 0, 1).reshape((1, 3, 112, 96))
            imglist[i] = (imglist[i] - 127.5) / 128.0
        with torch.no_grad():
            f = _reference_sphere20a_fc5(sd, torch.from_numpy(np.vstack(imglist)).float())
        f1, f2 = f[0], f[1]
        scores.append(float(f1.dot(f2) / f1.norm() / f2.norm()))
    return np.array(scores)


@pytest.fixture(scope="module")
def sphere_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.scoring.recognizers.sphereface import Sphere20a

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sphere") / "sphere20a_random.pth"
    torch.save(Sphere20a().state_dict(), path)
    return path


def test_sphere20a_state_dict_keys_match_clcarwin():
    from harness.scoring.recognizers.sphereface import Sphere20a

    keys = list(Sphere20a().state_dict())
    assert keys[:4] == ["conv1_1.weight", "conv1_1.bias", "relu1_1.weight", "conv1_2.weight"]
    assert keys[-3:] == ["fc5.weight", "fc5.bias", "fc6.weight"]
    assert len(keys) == 20 * 3 + 3  # 20 conv (weight, bias) + PReLU weight, fc5 (2), fc6 (1)


@pytest.mark.parametrize("sr_kind", ["bicubic_112x96", "lr_28x24"])
def test_sphere20a_is_equals_official_loop(sphere_weights, tmp_path, sr_kind):
    names = NAMES[:20] if sr_kind == "bicubic_112x96" else NAMES[:8]
    sr_dir = tmp_path / "sr"
    sr_dir.mkdir()
    for name in names:
        if sr_kind == "bicubic_112x96":
            Image.fromarray(_bicubic_up(DATA / "val_LR" / name)).save(sr_dir / name)
        else:  # off-size SR: both paths resize with cv2 INTER_CUBIC
            Image.fromarray(_read_rgb(DATA / "val_LR" / name)).save(sr_dir / name)
    sd = torch.load(sphere_weights, weights_only=True)
    official = _official_loop(sd, DATA / "val_HR", sr_dir, names)

    rec = load_recognizer(f"sphere20a:{sphere_weights}")
    sr = _to_tensor(np.stack([_read_rgb(sr_dir / name) for name in names]))
    hr = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in names]))
    ours = identity_similarity(rec, sr, hr, batch_size=8)
    np.testing.assert_allclose(ours, official, atol=1e-4)
    assert np.ptp(official) > 1e-3  # the random net still tells pairs apart


def test_sphere20a_gradients_flow_at_nominal_size(sphere_weights):
    rec = load_recognizer(f"sphere20a:{sphere_weights}")
    x = _to_tensor(np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[:2]]))
    x.requires_grad_(True)
    rec.embed(x)[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in rec.model.parameters())


def test_sphere20a_corrupt_or_missing_file_is_user_error(tmp_path):
    bad = tmp_path / "sphere20a_20171020.pth"
    bad.write_bytes(b"\x80\x02 this is not a checkpoint")
    with pytest.raises(UserError, match="sphere20a_20171020.pth"):
        load_recognizer(f"sphere20a:{bad}")
    with pytest.raises(UserError, match="not found"):
        load_recognizer(f"sphere20a:{tmp_path / 'missing.pth'}")


def test_sphere20a_wrong_keys_is_user_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(UserError, match="not a net_sphere.sphere20a state dict"):
        load_recognizer(f"sphere20a:{path}")


# --- onnx -----------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _tensor(name: str, array: np.ndarray) -> bytes:  # onnx TensorProto, FLOAT, raw_data
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, 1) + _fld(8, name.encode()) + _fld(9, array.astype("<f4").tobytes())


def _value_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(
        _fld(1, _int(1, d) if isinstance(d, int) else _fld(2, d.encode())) for d in dims
    )
    return _fld(1, name.encode()) + _fld(2, _fld(1, _int(1, 1) + _fld(2, shape)))


def _node(
    op: str, inputs: list[str], outputs: list[str], ints: dict[str, list[int]] | None = None
) -> bytes:
    body = b"".join(_fld(1, i.encode()) for i in inputs) + b"".join(
        _fld(2, o.encode()) for o in outputs
    )
    body += _fld(4, op.encode())
    for key, values in (ints or {}).items():
        body += _fld(5, _fld(1, key.encode()) + _int(20, 7) + b"".join(_int(8, v) for v in values))
    return body


def _tiny_onnx(
    path: Path, weight: np.ndarray, bias: np.ndarray, proj: np.ndarray, batch: int | str
) -> None:
    """Conv(4x4, stride 4) -> Relu -> GlobalAveragePool -> Flatten -> MatMul, input 3x56x56."""
    nodes = [
        _node("Conv", ["data", "W", "B"], ["c"], {"kernel_shape": [4, 4], "strides": [4, 4]}),
        _node("Relu", ["c"], ["r"]),
        _node("GlobalAveragePool", ["r"], ["g"]),
        _node("Flatten", ["g"], ["f"]),
        _node("MatMul", ["f", "P"], ["emb"]),
    ]
    graph = b"".join(_fld(1, n) for n in nodes) + _fld(2, b"tiny")
    graph += (
        _fld(5, _tensor("W", weight)) + _fld(5, _tensor("B", bias)) + _fld(5, _tensor("P", proj))
    )
    graph += _fld(11, _value_info("data", [batch, 3, 56, 56]))
    graph += _fld(12, _value_info("emb", [batch, proj.shape[1]]))
    model = _int(1, 7) + _fld(2, b"test") + _fld(7, graph) + _fld(8, _int(2, 13))
    path.write_bytes(model)


@pytest.mark.parametrize("batch", [1, "N"])
def test_onnx_recognizer_matches_torch_equivalent(tmp_path, batch):
    pytest.importorskip("onnxruntime")
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 3, 4, 4)).astype(np.float32) * 0.2
    bias = rng.standard_normal(16).astype(np.float32) * 0.1
    proj = rng.standard_normal((16, 10)).astype(np.float32)
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path, weight, bias, proj, batch)

    rec = load_recognizer(f"onnx:{path}")
    assert rec.input_hw == (56, 56) and rec.embedding_dim == 10 and not rec.differentiable
    hr = np.stack([_read_rgb(DATA / "val_HR" / name) for name in NAMES[:3]])
    emb = rec.embed(_to_tensor(hr))

    expected = []
    for img in hr.astype(np.float32):
        sq = cv2.copyMakeBorder(img, 0, 0, 8, 8, cv2.BORDER_REPLICATE)  # 96 -> 112 wide
        x = (cv2.resize(sq, (56, 56), interpolation=cv2.INTER_LINEAR) - 127.5) / 127.5
        t = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
        feat = F.relu(F.conv2d(t, torch.from_numpy(weight), torch.from_numpy(bias), 4)).mean((2, 3))
        expected.append(F.normalize(feat @ torch.from_numpy(proj), dim=1)[0])
    torch.testing.assert_close(emb, torch.stack(expected), atol=1e-5, rtol=0)
    scores = identity_similarity(rec, _to_tensor(hr), _to_tensor(hr[::-1].copy()))
    assert scores[1] == pytest.approx(1.0, abs=1e-6) and scores[0] < 1.0


def test_onnx_corrupt_or_missing_file_is_user_error(tmp_path):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "arcface.onnx"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(UserError, match="arcface.onnx"):
        load_recognizer(f"onnx:{bad}")
    with pytest.raises(UserError, match="not found"):
        load_recognizer(f"onnx:{tmp_path / 'none.onnx'}")


# --- specs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["arcface", "sphere20a", "onnx:", "facenet:/tmp/x.pb"])
def test_bad_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        load_recognizer(spec)


def test_importing_recognizers_loads_no_cv2_or_onnxruntime():
    import subprocess
    import sys

    code = (
        "import sys, harness.scoring.recognizers, harness.scoring.recognizers.facenet, "
        "harness.scoring.recognizers.sphereface, harness.scoring.recognizers.onnx; "
        "print('cv2' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_prewhiten_floor_for_flat_images():
    from harness.scoring.recognizers.facenet import preprocess

    x = preprocess(torch.full((1, 3, 112, 96), 0.5))
    assert x.abs().max() < 0.05  # (x - mean) / max(0, 1/sqrt(N)) ~ 0: bicubic rounding only
    assert math.isfinite(float(x.sum()))
