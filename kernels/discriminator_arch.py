"""VGG-style discriminator for 96x112 faces (ESRGAN's, resized for ASC19 crops).

Five stages, each ``3x3 conv (stride 1) -> 4x4 conv (stride 2)`` with batch normalisation and
LeakyReLU(0.2), double the width up to ``8 * num_feat`` while halving the resolution:
112x96 -> 56x48 -> 28x24 -> 14x12 -> 7x6 -> 3x3. Two linear layers map the flattened
``8 * num_feat x 3 x 3`` features to one real/fake logit per image.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGGStyleDiscriminator"]

_NUM_STAGES = 5


def _downsampled_size(size: int) -> int:
    # Output size of Conv2d(kernel 4, stride 2, padding 1) applied _NUM_STAGES times.
    for _ in range(_NUM_STAGES):
        size = (size + 2 - 4) // 2 + 1
    return size


class VGGStyleDiscriminator(nn.Module):
    """Real/fake classifier for high-resolution faces, returning raw logits.

    Args:
        num_feat: Channels of the first stage; stages use 1, 2, 4, 8, 8 times this.
        input_height: Image height the linear head is sized for (ASC19 HR: 112).
        input_width: Image width the linear head is sized for (ASC19 HR: 96).
        num_in_ch: Input channels (3 for RGB).
        use_batchnorm: Batch-normalise after every conv but the first (ESRGAN does). Turn off
            for very small per-GPU batches; use ``nn.SyncBatchNorm.convert_sync_batchnorm`` for
            DDP if the per-rank batch is small.
    """

    def __init__(
        self,
        num_feat: int = 64,
        input_height: int = 112,
        input_width: int = 96,
        num_in_ch: int = 3,
        use_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        final_h, final_w = _downsampled_size(input_height), _downsampled_size(input_width)
        if final_h < 1 or final_w < 1:
            raise ValueError(
                f"VGGStyleDiscriminator: input {input_height}x{input_width} is too small for "
                f"{_NUM_STAGES} stride-2 stages (need at least 32x32)"
            )
        self.input_hw = (input_height, input_width)
        widths = [num_feat * m for m in (1, 2, 4, 8, 8)]
        layers: list[nn.Module] = []
        in_ch = num_in_ch
        for stage, width in enumerate(widths):
            # The very first conv has no norm, as in ESRGAN / DCGAN.
            layers += self._conv(in_ch, width, 3, 1, norm=use_batchnorm and stage > 0)
            layers += self._conv(width, width, 4, 2, norm=use_batchnorm)
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * final_h * final_w, 100),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(100, 1),
        )

    @staticmethod
    def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, *, norm: bool) -> list[nn.Module]:
        # A conv followed by batch norm does not need a bias.
        layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, 1, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        return layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Score ``(N, 3, input_height, input_width)`` images; returns ``(N, 1)`` logits.

        Raises:
            ValueError: If the spatial size differs from the one the head was built for.
        """
        if tuple(images.shape[-2:]) != self.input_hw:
            raise ValueError(
                f"VGGStyleDiscriminator: expected (N, C, {self.input_hw[0]}, {self.input_hw[1]}) "
                f"images, got {tuple(images.shape)}"
            )
        return self.classifier(self.features(images))
