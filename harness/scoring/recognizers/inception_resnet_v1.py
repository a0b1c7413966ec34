"""Inception-ResNet-v1 as used by FaceNet (davidsandberg/facenet ``models/inception_resnet_v1``).

The network is written to match the frozen graph of model 20180408-102900 (CASIA-WebFace,
512-d) in which every convolution's BatchNorm has been folded into the convolution (a weight
plus a ``Conv2D_bn_offset`` bias). Only the bottleneck keeps an explicit BatchNorm.

Every stride-2 convolution and pooling in this graph uses TF ``VALID`` padding and every
``SAME`` op has stride 1 and odd kernels, so all paddings are symmetric and plain PyTorch
``padding=`` reproduces TF exactly (checked by :func:`state_dict_from_graph`).

Layer names (valid for :meth:`InceptionResnetV1.features`, in forward order) and their TF
scopes:

=============  ==========================================  ===================
name           TF scope                                    output (N,C,H,W) @160
=============  ==========================================  ===================
conv2d_1a      Conv2d_1a_3x3 (s2, VALID)                   32 x 79 x 79
conv2d_2a      Conv2d_2a_3x3                               32 x 77 x 77
conv2d_2b      Conv2d_2b_3x3 (SAME)                        64 x 77 x 77
maxpool_3a     MaxPool_3a_3x3 (s2)                         64 x 38 x 38
conv2d_3b      Conv2d_3b_1x1                               80 x 38 x 38
conv2d_4a      Conv2d_4a_3x3                               192 x 36 x 36
conv2d_4b      Conv2d_4b_3x3 (s2)                          256 x 17 x 17
repeat_1       Repeat/block35_1..5 (scale 0.17)            256 x 17 x 17
mixed_6a       Mixed_6a (reduction A)                      896 x 8 x 8
repeat_2       Repeat_1/block17_1..10 (scale 0.10)         896 x 8 x 8
mixed_7a       Mixed_7a (reduction B)                      1792 x 3 x 3
repeat_3       Repeat_2/block8_1..5 (scale 0.20)           1792 x 3 x 3
block8         Block8 (scale 1.0, no ReLU)                 1792 x 3 x 3
avgpool_1a     Logits/AvgPool_1a_8x8 (global) + flatten    1792
bottleneck     Bottleneck (linear + BatchNorm, eps 1e-3)   512 (not normalised)
=============  ==========================================  ===================

(The PyTorch names follow facenet-pytorch's convention — ``repeat_1`` is TF's ``Repeat`` —
so feature-loss configs written for that package keep their meaning.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.scoring.recognizers.graphdef import Graph

FEATURE_LAYERS: tuple[str, ...] = (
    "conv2d_1a",
    "conv2d_2a",
    "conv2d_2b",
    "maxpool_3a",
    "conv2d_3b",
    "conv2d_4a",
    "conv2d_4b",
    "repeat_1",
    "mixed_6a",
    "repeat_2",
    "mixed_7a",
    "repeat_3",
    "block8",
    "avgpool_1a",
    "bottleneck",
)

_TF_ROOT = "InceptionResnetV1"


class ConvReLU(nn.Module):
    """Convolution with folded BatchNorm (weight + bias), then ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: ``(kh, kw)`` or one int.
        stride: Stride.
        padding: Symmetric zero padding ``(ph, pw)`` or one int.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply convolution, batch norm and ReLU to ``x``."""
        return F.relu(self.conv(x))


class Block35(nn.Module):
    """Inception-ResNet-A (35x35 in the paper; 17x17 here)."""

    def __init__(self, scale: float = 0.17) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = ConvReLU(256, 32, 1)
        self.branch1 = nn.Sequential(ConvReLU(256, 32, 1), ConvReLU(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(
            ConvReLU(256, 32, 1), ConvReLU(32, 32, 3, padding=1), ConvReLU(32, 32, 3, padding=1)
        )
        self.conv2d = nn.Conv2d(96, 256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the scaled residual of the three branches to ``x``."""
        mixed = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)
        return F.relu(x + self.scale * self.conv2d(mixed))


class Block17(nn.Module):
    """Inception-ResNet-B (17x17 in the paper; 8x8 here)."""

    def __init__(self, scale: float = 0.10) -> None:
        super().__init__()
        self.scale = scale
        self.branch0 = ConvReLU(896, 128, 1)
        self.branch1 = nn.Sequential(
            ConvReLU(896, 128, 1),
            ConvReLU(128, 128, (1, 7), padding=(0, 3)),
            ConvReLU(128, 128, (7, 1), padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the scaled residual of the two branches to ``x``."""
        mixed = torch.cat([self.branch0(x), self.branch1(x)], 1)
        return F.relu(x + self.scale * self.conv2d(mixed))


class Block8(nn.Module):
    """Inception-ResNet-C (8x8 in the paper; 3x3 here).

    Args:
        scale: Residual scale.
        activate: Apply the final ReLU (False for the last block, TF ``activation_fn=None``).
    """

    def __init__(self, scale: float = 0.20, activate: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.activate = activate
        self.branch0 = ConvReLU(1792, 192, 1)
        self.branch1 = nn.Sequential(
            ConvReLU(1792, 192, 1),
            ConvReLU(192, 192, (1, 3), padding=(0, 1)),
            ConvReLU(192, 192, (3, 1), padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the scaled residual of the two branches to ``x`` (ReLU unless ``noReLU``)."""
        mixed = torch.cat([self.branch0(x), self.branch1(x)], 1)
        out = x + self.scale * self.conv2d(mixed)
        return F.relu(out) if self.activate else out


class Mixed6a(nn.Module):
    """Reduction A: 256 -> 896 channels, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvReLU(256, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            ConvReLU(256, 192, 1), ConvReLU(192, 192, 3, padding=1), ConvReLU(192, 256, 3, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reduce ``x``'s grid: the branches concatenated along channels."""
        return torch.cat([self.branch0(x), self.branch1(x), F.max_pool2d(x, 3, 2)], 1)


class Mixed7a(nn.Module):
    """Reduction B: 896 -> 1792 channels, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(ConvReLU(896, 256, 1), ConvReLU(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(ConvReLU(896, 256, 1), ConvReLU(256, 256, 3, stride=2))
        self.branch2 = nn.Sequential(
            ConvReLU(896, 256, 1), ConvReLU(256, 256, 3, padding=1), ConvReLU(256, 256, 3, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reduce ``x``'s grid: the branches concatenated along channels."""
        return torch.cat(
            [self.branch0(x), self.branch1(x), self.branch2(x), F.max_pool2d(x, 3, 2)], 1
        )


class InceptionResnetV1(nn.Module):
    """FaceNet Inception-ResNet-v1 trunk + 512-d bottleneck (input: standardised 160x160 RGB).

    Args:
        embedding_dim: Bottleneck width (512 for 20180408-102900).
        bn_eps: Bottleneck BatchNorm epsilon (TF slim default 0.001).
    """

    def __init__(self, embedding_dim: int = 512, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.conv2d_1a = ConvReLU(3, 32, 3, stride=2)
        self.conv2d_2a = ConvReLU(32, 32, 3)
        self.conv2d_2b = ConvReLU(32, 64, 3, padding=1)
        self.conv2d_3b = ConvReLU(64, 80, 1)
        self.conv2d_4a = ConvReLU(80, 192, 3)
        self.conv2d_4b = ConvReLU(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[Block35(0.17) for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*[Block17(0.10) for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*[Block8(0.20) for _ in range(5)])
        self.block8 = Block8(1.0, activate=False)
        self.last_linear = nn.Linear(1792, embedding_dim, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_dim, eps=bn_eps)

    def _stages(self) -> list[tuple[str, nn.Module | None]]:
        return [
            ("conv2d_1a", self.conv2d_1a),
            ("conv2d_2a", self.conv2d_2a),
            ("conv2d_2b", self.conv2d_2b),
            ("maxpool_3a", None),
            ("conv2d_3b", self.conv2d_3b),
            ("conv2d_4a", self.conv2d_4a),
            ("conv2d_4b", self.conv2d_4b),
            ("repeat_1", self.repeat_1),
            ("mixed_6a", self.mixed_6a),
            ("repeat_2", self.repeat_2),
            ("mixed_7a", self.mixed_7a),
            ("repeat_3", self.repeat_3),
            ("block8", self.block8),
            ("avgpool_1a", None),
            ("bottleneck", None),
        ]

    def _run(
        self, x: torch.Tensor, wanted: Sequence[str], to_end: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        unknown = [name for name in wanted if name not in FEATURE_LAYERS]
        if unknown:
            raise ValueError(
                f"unknown FaceNet layer(s) {unknown}; valid: {', '.join(FEATURE_LAYERS)}"
            )
        want = set(wanted)
        last = max((FEATURE_LAYERS.index(name) for name in want), default=len(FEATURE_LAYERS) - 1)
        if to_end:
            last = len(FEATURE_LAYERS) - 1
        taken: dict[str, torch.Tensor] = {}
        for index, (name, module) in enumerate(self._stages()):
            if index > last:
                break
            if name == "maxpool_3a":
                x = F.max_pool2d(x, 3, 2)
            elif name == "avgpool_1a":
                # TF pools with the whole remaining map as the window ('VALID'): global mean.
                x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            elif name == "bottleneck":
                x = self.last_bn(self.last_linear(x))
            else:
                assert module is not None  # only the pools above are stages without a module
                x = module(x)
            if name in want:
                taken[name] = x
        return x, taken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the L2-normalised embedding (TF ``embeddings``), shape (N, embedding_dim)."""
        return self.embed_with_features(x, ())[0]

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
        """Returns the activations named in ``layers`` (see :data:`FEATURE_LAYERS`), in order.

        Raises:
            ValueError: A name is not in :data:`FEATURE_LAYERS`.
        """
        _, taken = self._run(x, layers)
        return [taken[name] for name in layers]

    def embed_with_features(
        self, x: torch.Tensor, layers: Sequence[str]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The embedding and the named activations from one forward pass.

        Raises:
            ValueError: A name is not in :data:`FEATURE_LAYERS`.
        """
        x, taken = self._run(x, layers, to_end=True)
        # TF: x * rsqrt(max(sum(x^2), 1e-10)) == x / max(|x|, 1e-5)
        return F.normalize(x, dim=1, eps=1e-5), [taken[name] for name in layers]


# --- weights from the frozen graph ------------------------------------------------------------


def _tf_conv_scopes(model: InceptionResnetV1) -> dict[str, str]:
    """Maps each torch ``ConvReLU`` / residual ``Conv2d`` prefix to its TF scope."""
    mapping: dict[str, str] = {}
    for name in ("1a_3x3", "2a_3x3", "2b_3x3", "3b_1x1", "4a_3x3", "4b_3x3"):
        mapping[f"conv2d_{name[:2]}.conv"] = f"{_TF_ROOT}/Conv2d_{name}"

    def block(prefix: str, scope: str, branches: dict[str, list[str]]) -> None:
        for branch, convs in branches.items():
            index = branch[-1]
            for position, conv in enumerate(convs):
                torch_name = (
                    f"{prefix}.branch{index}.conv"
                    if len(convs) == 1
                    else f"{prefix}.branch{index}.{position}.conv"
                )
                mapping[torch_name] = f"{scope}/Branch_{index}/{conv}"
        mapping[f"{prefix}.conv2d"] = f"{scope}/Conv2d_1x1"

    for i in range(5):
        block(
            f"repeat_1.{i}",
            f"{_TF_ROOT}/Repeat/block35_{i + 1}",
            {
                "B0": ["Conv2d_1x1"],
                "B1": ["Conv2d_0a_1x1", "Conv2d_0b_3x3"],
                "B2": ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"],
            },
        )
    for i in range(10):
        block(
            f"repeat_2.{i}",
            f"{_TF_ROOT}/Repeat_1/block17_{i + 1}",
            {"B0": ["Conv2d_1x1"], "B1": ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"]},
        )
    b8 = {"B0": ["Conv2d_1x1"], "B1": ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"]}
    for i in range(5):
        block(f"repeat_3.{i}", f"{_TF_ROOT}/Repeat_2/block8_{i + 1}", b8)
    block("block8", f"{_TF_ROOT}/Block8", b8)
    m6 = f"{_TF_ROOT}/Mixed_6a"
    mapping["mixed_6a.branch0.conv"] = f"{m6}/Branch_0/Conv2d_1a_3x3"
    for position, conv in enumerate(["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"]):
        mapping[f"mixed_6a.branch1.{position}.conv"] = f"{m6}/Branch_1/{conv}"
    m7 = f"{_TF_ROOT}/Mixed_7a"
    for index, convs in enumerate(
        [
            ["Conv2d_0a_1x1", "Conv2d_1a_3x3"],
            ["Conv2d_0a_1x1", "Conv2d_1a_3x3"],
            ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"],
        ]
    ):
        for position, conv in enumerate(convs):
            mapping[f"mixed_7a.branch{index}.{position}.conv"] = f"{m7}/Branch_{index}/{conv}"
    return mapping


def _conv_bias_name(graph: Graph, scope: str) -> str:
    for suffix in ("Conv2D_bn_offset", "biases"):
        if f"{scope}/{suffix}" in graph.nodes:
            return f"{scope}/{suffix}"
    raise KeyError(f"no bias for {scope}")


def _check_conv(graph: Graph, scope: str, conv: nn.Conv2d) -> None:
    """Checks the TF op's stride/padding against the torch layer (symmetric padding only)."""
    node = graph.nodes[f"{scope}/Conv2D"]
    strides = list(node.attrs["strides"])
    if node.attrs.get("data_format", "NHWC") != "NHWC" or strides[1:3] != list(conv.stride):
        raise ValueError(f"{scope}: unexpected strides/layout {strides}")
    kh, kw = conv.kernel_size
    expected = (kh // 2, kw // 2) if node.attrs["padding"] == "SAME" else (0, 0)
    if node.attrs["padding"] == "SAME" and conv.stride != (1, 1):
        raise ValueError(f"{scope}: SAME padding with stride {conv.stride} is asymmetric in TF")
    if tuple(conv.padding) != expected:
        raise ValueError(f"{scope}: padding {node.attrs['padding']} vs torch {conv.padding}")


def state_dict_from_graph(
    graph: Graph, model: InceptionResnetV1 | None = None
) -> dict[str, torch.Tensor]:
    """Builds an :class:`InceptionResnetV1` state dict from the frozen FaceNet GraphDef.

    Conv weights go from TF HWIO to torch OIHW; the bottleneck MatMul (in, out) is transposed;
    block scales and the bottleneck BatchNorm epsilon are checked against the graph.

    Args:
        graph: The decoded ``graph_final.pb``.
        model: A model instance to read the layer geometry from (a fresh one if omitted).

    Returns:
        A state dict that loads into ``InceptionResnetV1()`` with ``strict=True``.

    Raises:
        KeyError: A tensor the architecture needs is missing from the graph.
        ValueError: A shape, stride, padding or constant differs from the architecture.
    """
    model = model if model is not None else InceptionResnetV1()
    modules = dict(model.named_modules())
    state: dict[str, torch.Tensor] = {}
    for torch_prefix, scope in _tf_conv_scopes(model).items():
        conv = modules[torch_prefix]
        assert isinstance(conv, nn.Conv2d)
        weight = graph.const(f"{scope}/weights")
        bias = graph.const(_conv_bias_name(graph, scope))
        torch_weight = torch.from_numpy(np.ascontiguousarray(weight.transpose(3, 2, 0, 1)))
        if torch_weight.shape != conv.weight.shape or bias.shape != (conv.out_channels,):
            raise ValueError(f"{scope}: shape {weight.shape} does not fit {torch_prefix}")
        _check_conv(graph, scope, conv)
        state[f"{torch_prefix}.weight"] = torch_weight
        state[f"{torch_prefix}.bias"] = torch.from_numpy(bias.copy())
    for prefix, scope, count in (
        ("repeat_1", "Repeat/block35", 5),
        ("repeat_2", "Repeat_1/block17", 10),
        ("repeat_3", "Repeat_2/block8", 5),
    ):
        for i in range(count):
            scale = float(graph.const(f"{_TF_ROOT}/{scope}_{i + 1}/mul/x"))
            if abs(scale - modules[f"{prefix}.{i}"].scale) > 1e-6:
                raise ValueError(
                    f"{scope}_{i + 1}: scale {scale} != {modules[f'{prefix}.{i}'].scale}"
                )
    if abs(float(graph.const(f"{_TF_ROOT}/Block8/mul/x")) - model.block8.scale) > 1e-6:
        raise ValueError("Block8: unexpected scale")
    linear = graph.const(f"{_TF_ROOT}/Bottleneck/weights")
    if linear.shape != tuple(model.last_linear.weight.shape[::-1]):
        raise ValueError(f"Bottleneck: shape {linear.shape}")
    state["last_linear.weight"] = torch.from_numpy(np.ascontiguousarray(linear.T))
    bn = f"{_TF_ROOT}/Bottleneck/BatchNorm"
    eps = float(graph.nodes[f"{bn}/cond/FusedBatchNorm_1"].attrs["epsilon"])
    if abs(eps - model.last_bn.eps) > 1e-9:
        raise ValueError(f"Bottleneck BatchNorm: epsilon {eps} != {model.last_bn.eps}")
    dim = model.last_bn.num_features
    gamma = np.broadcast_to(graph.const(f"{bn}/Const"), (dim,))
    state["last_bn.weight"] = torch.from_numpy(gamma.astype(np.float32).copy())
    state["last_bn.bias"] = torch.from_numpy(graph.const(f"{bn}/beta").copy())
    state["last_bn.running_mean"] = torch.from_numpy(graph.const(f"{bn}/moving_mean").copy())
    state["last_bn.running_var"] = torch.from_numpy(graph.const(f"{bn}/moving_variance").copy())
    state["last_bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise KeyError(f"graph gave no value for {sorted(missing)}")
    return state
