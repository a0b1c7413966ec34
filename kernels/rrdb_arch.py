"""ESRGAN's RRDBNet generator, with BasicSR's parameter names.

The module layout and attribute names follow ``basicsr/archs/rrdbnet_arch.py`` exactly
(``conv_first``, ``body.<i>.rdb<1-3>.conv<1-5>``, ``conv_body``, ``conv_up1``, ``conv_up2``,
``conv_hr``, ``conv_last``), so BasicSR / Real-ESRGAN checkpoints load with
``load_state_dict``; checkpoints from the original ESRGAN repository (``RRDB_trunk``,
``trunk_conv``, ``upconv1`` ...) load after :func:`convert_esrgan_state_dict`. As in BasicSR,
``scale=2`` pixel-unshuffles the input by 2 and then upsamples by 4, so ``conv_first`` takes
``4 * num_in_ch`` channels and the input height and width must be even.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kernels.bicubic_arch import _check_scale
from kernels.srresnet_arch import scaled_kaiming_init_

__all__ = ["RRDB", "RRDBNet", "ResidualDenseBlock", "convert_esrgan_state_dict"]

_RESIDUAL_SCALE = 0.2
"""ESRGAN's residual scaling inside dense blocks and RRDBs."""


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual (ESRGAN).

    Args:
        num_feat: Channels in and out.
        num_grow_ch: Channels each of the first four convolutions adds (growth rate).
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        scaled_kaiming_init_([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(N, num_feat, H, W)`` features."""
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * _RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a scaled outer residual.

    Args:
        num_feat: Channels in and out.
        num_grow_ch: Growth channels of each dense block.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(N, num_feat, H, W)`` features."""
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN generator: RRDB trunk at low resolution, nearest-neighbour + conv upsampling.

    The defaults are ESRGAN's (16.7 M parameters). The output is not clamped: clamp to
    ``[0, 1]`` at inference (the caller's job), not during training.

    Args:
        num_feat: Channel width of the trunk and the upsampling layers.
        num_block: Number of RRDB blocks (ESRGAN: 23).
        num_grow_ch: Growth channels inside each dense block (ESRGAN: 32).
        scale: Upscaling factor, 2 or 4. With 2 the input is pixel-unshuffled first (BasicSR).
        num_in_ch: Input channels (3 for RGB).
        num_out_ch: Output channels (3 for RGB).
    """

    def __init__(
        self,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
    ) -> None:
        super().__init__()
        _check_scale(scale, "RRDBNet")
        if num_feat <= 0 or num_grow_ch <= 0 or num_block < 0:
            raise ValueError(
                "RRDBNet: num_feat and num_grow_ch must be > 0 and num_block >= 0, got "
                f"{num_feat}, {num_grow_ch}, {num_block}"
            )
        self.scale = scale
        first_in_ch = num_in_ch * 4 if scale == 2 else num_in_ch
        self.conv_first = nn.Conv2d(first_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``(N, 3, h, w)`` RGB in ``[0, 1]`` to ``(N, 3, scale*h, scale*w)``, unclamped.

        Raises:
            ValueError: If ``scale`` is 2 and ``h`` or ``w`` is odd.
        """
        if self.scale == 2:
            if x.shape[-2] % 2 or x.shape[-1] % 2:
                raise ValueError(
                    f"RRDBNet(scale=2): input height and width must be even, got "
                    f"{tuple(x.shape[-2:])}"
                )
            feat = F.pixel_unshuffle(x, 2)
        else:
            feat = x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


_ESRGAN_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^RRDB_trunk\.", "body."),
    (r"\.RDB([123])\.", r".rdb\1."),
    (r"^trunk_conv\.", "conv_body."),
    (r"^upconv1\.", "conv_up1."),
    (r"^upconv2\.", "conv_up2."),
    (r"^HRconv\.", "conv_hr."),
)


def convert_esrgan_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename a checkpoint to :class:`RRDBNet`'s parameter names.

    Accepts, and returns unchanged apart from unwrapping, BasicSR checkpoints (a dict with a
    ``params_ema`` or ``params`` entry, preferred in that order); renames the keys of the
    original ESRGAN repository's ``RRDBNet_arch.py`` (``RRDB_trunk.0.RDB1.conv1.weight`` ->
    ``body.0.rdb1.conv1.weight``, ``trunk_conv`` -> ``conv_body``, ``upconv1/2`` ->
    ``conv_up1/2``, ``HRconv`` -> ``conv_hr``). A ``module.`` prefix (DataParallel/DDP) is
    stripped.

    Args:
        state_dict: The loaded checkpoint
            (``torch.load(path, map_location="cpu", weights_only=True)``).

    Returns:
        A new dict ready for ``RRDBNet.load_state_dict``.
    """
    for key in ("params_ema", "params"):
        inner = state_dict.get(key)
        if isinstance(inner, Mapping):
            state_dict = inner
            break
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        name = name.removeprefix("module.")
        for pattern, replacement in _ESRGAN_RENAMES:
            name = re.sub(pattern, replacement, name)
        converted[name] = tensor
    return converted
