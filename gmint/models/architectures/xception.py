"""Xception (Chollet 2017): entry, middle and exit flows of separable-conv residual blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from gmint.models.architectures._common import conv_bn, resolve_stem
from gmint.models.zoo import ARCHITECTURES, scaled


class SeparableConv2d(nn.Sequential):
    """Depthwise 3×3 then pointwise 1×1, bias-free, with nothing between (as in the Xception paper)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
        ))


class XceptionBlock(nn.Module):
    """[ReLU → separable conv → BN] per entry of `channels`, optional 3×3 stride-2 max-pool, plus a shortcut.

    The shortcut is a 1×1 conv (stride 2 when pooling) + BN where the shape changes, identity elsewhere.
    `relu_first=False` drops the leading ReLU where the input has just been through one (first block).
    """

    def __init__(self, in_channels: int, channels: Sequence[int], *, downsample: bool,
                 relu_first: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        current = in_channels
        for i, out in enumerate(channels):
            if relu_first or i > 0:
                layers.append(nn.ReLU())
            layers += [SeparableConv2d(current, out), nn.BatchNorm2d(out)]
            current = out
        if downsample:
            layers.append(nn.MaxPool2d(3, 2, 1))
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if downsample or in_channels != current:
            stride = 2 if downsample else 1
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, current, 1, stride, bias=False),
                                          nn.BatchNorm2d(current))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → (B, C_out, H', W'), H' = H / 2 when the block pools."""
        return self.body(x) + self.shortcut(x)


class Xception(nn.Module):
    """Entry flow to 728 channels, `middle_blocks` residual blocks at 728, exit flow to 2048, pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, *, width: float, middle_blocks: int,
                 stem_stride: int) -> None:
        super().__init__()
        c32, c64, c128, c256, c728, c1024, c1536, c2048 = (
            scaled(c, width) for c in (32, 64, 128, 256, 728, 1024, 1536, 2048))
        self.entry = nn.Sequential(
            conv_bn(in_channels, c32, 3, stem_stride),
            conv_bn(c32, c64, 3),
            XceptionBlock(c64, (c128, c128), downsample=True, relu_first=False),
            XceptionBlock(c128, (c256, c256), downsample=True),
            XceptionBlock(c256, (c728, c728), downsample=True),
        )
        self.middle = nn.Sequential(
            *(XceptionBlock(c728, (c728,) * 3, downsample=False) for _ in range(middle_blocks)))
        self.exit = nn.Sequential(
            XceptionBlock(c728, (c728, c1024), downsample=True),
            SeparableConv2d(c1024, c1536), nn.BatchNorm2d(c1536), nn.ReLU(),
            SeparableConv2d(c1536, c2048), nn.BatchNorm2d(c2048), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_classes) logits."""
        x = self.exit(self.middle(self.entry(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@ARCHITECTURES.register("xception")
def xception(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0,
             middle_blocks: int = 8, stem: str | None = None) -> nn.Module:
    """Xception with `middle_blocks` middle-flow blocks (8 in the paper).

    `stem`: `imagenet` = stride-2 first conv (÷32 overall, the paper's), `cifar` = stride 1 (÷16).
    Default `imagenet` from 64 px up, `cifar` below, so 32 px inputs end at 2×2 rather than 1×1.
    Convs are "same"-padded (Keras uses "valid" in the first two), which keeps small inputs' borders.
    """
    stride = 2 if resolve_stem(stem, image_size) == "imagenet" else 1
    return Xception(in_channels, num_classes, width=width, middle_blocks=middle_blocks, stem_stride=stride)
