"""SRResNet / EDSR-style generator: fast residual blocks, pixel shuffle, bicubic global skip.

The network predicts the residual between the high-resolution image and the PIL-bicubic
upscaling of its input. The last convolution starts at zero, so an untrained network outputs
exactly the bicubic baseline and training can only start from there.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from kernels.bicubic_arch import _check_scale, bicubic_upsample

__all__ = ["ResidualBlockNoBN", "SRResNet", "scaled_kaiming_init_"]


@torch.no_grad()
def scaled_kaiming_init_(modules: Iterable[nn.Module], scale: float = 1.0) -> None:
    """Kaiming-normal initialise every conv/linear in ``modules`` and multiply by ``scale``.

    Scaling the initial weights of residual branches down (ESRGAN and BasicSR use 0.1) keeps a
    deep network without batch normalisation close to the identity at the start of training.

    Args:
        modules: Modules whose ``nn.Conv2d`` and ``nn.Linear`` descendants are initialised.
        scale: Factor applied to the Kaiming-normal weights. Biases are set to zero.
    """
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(layer.weight)
                layer.weight.mul_(scale)
                if layer.bias is not None:
                    layer.bias.zero_()


class ResidualBlockNoBN(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))`` with no batch normalisation (EDSR).

    Args:
        num_feat: Number of channels in and out.
        res_scale: Factor applied to the residual branch before the addition.
    """

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(N, num_feat, H, W)`` features."""
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


class SRResNet(nn.Module):
    """Residual super-resolution network with a PIL-bicubic global skip.

    ``conv_first -> body (num_blocks residual blocks) -> conv_body (+ long skip) ->
    log2(scale) x (conv -> pixel shuffle x2 -> LeakyReLU) -> conv_hr -> LeakyReLU -> conv_last``,
    plus ``bicubic_upsample(input)``.

    The output is not clamped: clamp to ``[0, 1]`` at inference (the caller's job), but not
    during training, where the clamp would zero the gradient of out-of-range pixels.

    Args:
        num_feat: Channel width of every hidden layer.
        num_blocks: Number of residual blocks at low resolution (most of the compute).
        res_scale: Residual scaling inside each block (EDSR uses 0.1 for wide, deep nets).
        scale: Upscaling factor, 2 or 4.
        zero_init_last: Initialise ``conv_last`` to zero, so the untrained network outputs
            exactly the bicubic upscaling. If ``False`` it gets a 0.1-scaled Kaiming init.
        num_in_ch: Input channels (3 for RGB).
        num_out_ch: Output channels (3 for RGB); must equal ``num_in_ch`` for the skip.
    """

    def __init__(
        self,
        num_feat: int = 64,
        num_blocks: int = 16,
        res_scale: float = 1.0,
        scale: int = 4,
        zero_init_last: bool = True,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
    ) -> None:
        super().__init__()
        _check_scale(scale, "SRResNet")
        if num_feat <= 0 or num_blocks < 0:
            raise ValueError(
                f"SRResNet: num_feat must be > 0 and num_blocks >= 0, got {num_feat}, {num_blocks}"
            )
        if num_in_ch != num_out_ch:
            raise ValueError(
                f"SRResNet: num_in_ch ({num_in_ch}) must equal num_out_ch ({num_out_ch}) "
                "for the bicubic skip"
            )
        self.scale = scale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(
            *(ResidualBlockNoBN(num_feat, res_scale) for _ in range(num_blocks))
        )
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        upsample: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            upsample += [
                nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1),
                nn.PixelShuffle(2),
                nn.LeakyReLU(0.1, inplace=True),
            ]
        self.upsample = nn.Sequential(*upsample)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

        scaled_kaiming_init_([self.conv_first, self.upsample, self.conv_hr], 1.0)
        scaled_kaiming_init_([self.body, self.conv_body], 0.1)
        if zero_init_last:
            nn.init.zeros_(self.conv_last.weight)
            assert self.conv_last.bias is not None  # built with bias=True
            nn.init.zeros_(self.conv_last.bias)
        else:
            scaled_kaiming_init_([self.conv_last], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``(N, 3, h, w)`` RGB in ``[0, 1]`` to ``(N, 3, scale*h, scale*w)``, unclamped."""
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        residual = self.conv_last(self.lrelu(self.conv_hr(self.upsample(feat))))
        return bicubic_upsample(x, self.scale) + residual
