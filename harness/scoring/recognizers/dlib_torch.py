"""dlib's 128-d face ResNet as a differentiable PyTorch network, read from dlib's own file.

The weights are those of ``dlib_face_recognition_resnet_model_v1.dat`` (PyPI sdist
``face_recognition_models``, CC0), read straight from dlib's serialization: each layer's
parameters are one float32 tensor (version 2, four dimensions, raw little-endian floats), in
the order of the network from the input up. :func:`read_dlib_resnet` finds them by their
expected sizes, so nothing of dlib's runtime is needed to read them.

The network (dlib's ``dnn_face_recognition_ex.cpp``): a 7x7/2 convolution, 3x3/2 max pooling,
14 residual blocks (32, 64, 128, 256, 256 channels; the first block of each stage halves the
size with a 3x3/2 convolution and 2x2/2 average pooling of the shortcut, dlib adding tensors of
different sizes as if the smaller were zero-padded at the bottom/right and in channels), global
average pooling and a 128x256 linear layer. Convolutions of stride 2 and the poolings have no
padding, as in dlib. Batch norm is dlib's ``affine`` (a scale and a shift).

:class:`DlibTorchRecognizer` reproduces ``compute_face_descriptor`` end to end: dlib's 5-point
shape predictor places the landmarks on each image (not differentiable: they only say where
the face is), the 150x150 chip with padding 0.25 is sampled bilinearly like dlib's
``extract_image_chip`` (a point whose 2x2 neighbourhood leaves the image is black; values are
truncated to integers, with a straight-through gradient), then the network embeds it.
Embeddings equal dlib's to ~1e-6 on the ASC19 faces (``tests/scoring/test_dlib_torch.py``).
So dlib, the documented cross-check recognizer, can also be a training loss.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fileio.user_error import UserError
from harness.scoring.recognizers.base import Recognizer, check_images
from harness.scoring.recognizers.dlib_resnet import import_dlib

#: dlib's ``input_rgb_image_sized`` means (R, G, B); inputs are (pixel - mean) / 256.
_MEAN_RGB = (122.782, 117.001, 104.298)
#: (input channels, output channels, halves the size) of the 14 residual blocks.
_BLOCKS: tuple[tuple[int, int, bool], ...] = (
    (32, 32, False), (32, 32, False), (32, 32, False),
    (32, 64, True), (64, 64, False), (64, 64, False), (64, 64, False),
    (64, 128, True), (128, 128, False), (128, 128, False),
    (128, 256, True), (256, 256, False), (256, 256, False),
    (256, 256, True),
)
#: The chip dlib embeds: size and padding of ``get_face_chip_details``.
CHIP_SIZE, CHIP_PADDING = 150, 0.25


def _dlib_int(value: int) -> bytes:
    """A non-negative integer as dlib writes it: a byte count, then little-endian bytes."""
    if value == 0:
        return b"\x00"
    raw = value.to_bytes((value.bit_length() + 7) // 8, "little")
    return bytes([len(raw)]) + raw


class _Reader:
    """Finds the parameter tensors of a dlib network file in order, by their sizes."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def tensor(self, *dims: int) -> np.ndarray:
        size = int(np.prod(dims))
        for shape in ((size, 1, 1, 1), dims if len(dims) == 4 else (*dims, 1, 1)):
            head = _dlib_int(2) + b"".join(_dlib_int(d) for d in shape)
            at = self.data.find(head, self.pos)
            if at >= 0:
                start = at + len(head)
                if start + 4 * size > len(self.data):
                    break
                self.pos = start + 4 * size
                return np.frombuffer(self.data, "<f4", size, start).copy()
        raise UserError(f"dlib model {self.path}: no parameter tensor of {size} floats where "
                        "one was expected; not dlib_face_recognition_resnet_model_v1")


class _Block(nn.Module):
    """One residual block's parameters (see :meth:`DlibResNet.forward`)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = nn.Parameter(torch.zeros(2, cout))
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.affine2 = nn.Parameter(torch.zeros(2, cout))


class DlibResNet(nn.Module):
    """The face ResNet of dlib (input: (N, 3, 150, 150) RGB as ``(pixel - mean) / 256``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 32, 7, stride=2)
        self.affine0 = nn.Parameter(torch.zeros(2, 32))
        self.blocks: list[_Block] = []
        for i, (cin, cout, down) in enumerate(_BLOCKS):
            block = _Block(cin, cout, down)
            self.add_module(f"block{i}", block)
            self.blocks.append(block)
        self.fc = nn.Parameter(torch.zeros(256, 128))

    @staticmethod
    def _affine(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x * p[0].view(1, -1, 1, 1) + p[1].view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 150, 150) normalised chips -> (N, 128) descriptors (not normalised)."""
        x = F.max_pool2d(F.relu(self._affine(self.conv0(x), self.affine0)), 3, 2)
        for b in self.blocks:
            y = F.relu(self._affine(b.conv1(x), b.affine1))
            y = self._affine(b.conv2(y), b.affine2)
            if b.down:
                x = F.avg_pool2d(x, 2, 2)
                h, w = max(x.shape[2], y.shape[2]), max(x.shape[3], y.shape[3])
                c = max(x.shape[1], y.shape[1])
                y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2], 0, c - y.shape[1]))
                x = F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))
            x = F.relu(x + y)
        return x.mean(dim=(2, 3)) @ self.fc


def read_dlib_resnet(path: str | Path) -> DlibResNet:
    """:class:`DlibResNet` with the weights of dlib's model file.

    Raises:
        UserError: The file is missing or is not dlib's face ResNet.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"dlib model {path}: cannot read ({exc.strerror})") from None
    if b"loss_metric" not in data[:64] or b"input_rgb_image_sized" not in data[:4096]:
        raise UserError(f"dlib model {path}: not a dlib metric-learning network file")
    r = _Reader(data, path)
    net = DlibResNet()

    def conv(layer: nn.Conv2d) -> None:
        cout, cin, kh, kw = layer.weight.shape
        flat = r.tensor(cout * cin * kh * kw + cout)
        layer.weight.data = torch.from_numpy(flat[:-cout].reshape(cout, cin, kh, kw))
        assert layer.bias is not None
        layer.bias.data = torch.from_numpy(flat[-cout:])

    def affine(p: nn.Parameter) -> None:
        p.data = torch.from_numpy(r.tensor(p.numel()).reshape(2, -1))

    conv(net.conv0)
    affine(net.affine0)
    for b in net.blocks:
        conv(b.conv1)
        affine(b.affine1)
        conv(b.conv2)
        affine(b.affine2)
    net.fc.data = torch.from_numpy(r.tensor(256, 128).reshape(256, 128))
    return net.eval().requires_grad_(False)


def _chip_grid(details: object, height: int, width: int) -> np.ndarray:
    """Image coordinates (x, y) of every chip pixel, (rows, cols, 2), as dlib samples them."""
    rect, angle = details.rect, details.angle  # type: ignore[attr-defined]
    rows, cols = details.rows, details.cols  # type: ignore[attr-defined]
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    ca, sa = math.cos(angle), math.sin(angle)

    def rot(px: float, py: float) -> tuple[float, float]:
        dx, dy = px - cx, py - cy
        return ca * dx - sa * dy + cx, sa * dx + ca * dy + cy

    tl, tr = rot(rect.left(), rect.top()), rot(rect.right(), rect.top())
    br = rot(rect.right(), rect.bottom())
    c, r = np.arange(cols)[None, :], np.arange(rows)[:, None]
    x = tl[0] + c * (tr[0] - tl[0]) / (cols - 1) + r * (br[0] - tr[0]) / (rows - 1)
    y = tl[1] + c * (tr[1] - tl[1]) / (cols - 1) + r * (br[1] - tr[1]) / (rows - 1)
    return np.stack([x, y], -1)


class DlibTorchRecognizer(Recognizer):
    """dlib's descriptor in PyTorch: the same embeddings as ``dlib``, and differentiable."""

    name = "dlib_torch"
    embedding_dim = 128
    differentiable = True

    def __init__(self, device: str | torch.device = "cpu") -> None:
        dlib, frm = import_dlib("dlib_torch")
        self._dlib = dlib
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.model = read_dlib_resnet(frm.face_recognition_model_location()).to(device)

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return self.model.fc.device

    def to(self, device: str | torch.device) -> DlibTorchRecognizer:
        """Moves the network (landmarks are found on the CPU)."""
        self.model.to(device)
        return self

    def chips(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 150, 150) chips in 0..255, differentiable w.r.t. ``images`` (RGB in [0, 1])."""
        check_images(images)
        n, _, h, w = images.shape
        # float64: a chip value a hair below an integer must truncate as dlib's does
        pixels = images.double() * 255.0
        u8 = pixels.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        grids = []
        for img in u8.numpy():
            img = np.ascontiguousarray(img)
            shape = self._shape(img, self._dlib.rectangle(0, 0, w - 1, h - 1))
            grids.append(_chip_grid(self._dlib.get_face_chip_details(shape, CHIP_SIZE,
                                                                     CHIP_PADDING), h, w))
        xy = torch.from_numpy(np.stack(grids)).to(images.device, torch.float64)
        inside = ((xy[..., 0] >= 0) & (xy[..., 1] >= 0) & (xy[..., 0].floor() + 1 <= w - 1)
                  & (xy[..., 1].floor() + 1 <= h - 1))
        norm = torch.stack([2 * xy[..., 0] / (w - 1) - 1, 2 * xy[..., 1] / (h - 1) - 1], -1)
        chip = F.grid_sample(pixels, norm, mode="bilinear", padding_mode="zeros",
                             align_corners=True) * inside[:, None].double()
        chip = chip + (chip.floor() - chip).detach()  # dlib truncates; gradients pass straight
        return chip.float()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, 128) unit vectors (differentiable)."""
        chip = self.chips(images)
        mean = torch.tensor(_MEAN_RGB, device=chip.device).view(1, 3, 1, 1)
        out = self.model((chip - mean) / 256.0)
        return F.normalize(out, dim=1)
