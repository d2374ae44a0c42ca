"""MobileNet V1 (the paper's "MobileNet") and MobileNetV2, for 8-64 px inputs."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from gmint.models.architectures._common import conv_bn, resolve_stem
from gmint.models.zoo import ARCHITECTURES, scaled

# MobileNet V1 after its 32-channel stem: (output channels, stride) of the 13 separable blocks.
_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *((512, 1),) * 5,
              (1024, 2), (1024, 1))

# MobileNetV2: (expansion t, output channels c, repeats n, first stride s), as in Sandler et al. 2018.
_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))


class DepthwiseSeparable(nn.Sequential):
    """Depthwise 3×3 + BN + ReLU, then pointwise 1×1 + BN + ReLU: V1's building block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(OrderedDict(
            depthwise=conv_bn(in_channels, in_channels, 3, stride, groups=in_channels),
            pointwise=conv_bn(in_channels, out_channels, 1),
        ))


class MobileNetV1(nn.Module):
    """Stem conv, 13 depthwise-separable blocks (32 → 64 → 128 → 256 → 512 ×6 → 1024), pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, *, width: float, stem_stride: int) -> None:
        super().__init__()
        channels = scaled(32, width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, 3, stem_stride)]
        for out, stride in _V1_BLOCKS:
            layers.append(DepthwiseSeparable(channels, scaled(out, width), stride))
            channels = scaled(out, width)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_classes) logits."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class InvertedResidual(nn.Module):
    """1×1 expansion + ReLU6, depthwise 3×3 + ReLU6, linear 1×1 projection; skip when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers = [] if expansion == 1 else [conv_bn(in_channels, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, out_channels, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → (B, C_out, H / stride, W / stride); the input added back where shapes match."""
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Stem conv, 17 inverted-residual blocks, 1×1 conv to 1280, pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, *, width: float, stem_stride: int) -> None:
        super().__init__()
        channels = scaled(32, width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, 3, stem_stride, act=nn.ReLU6)]
        for t, c, n, s in _V2_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(channels, scaled(c, width), s if i == 0 else 1, t))
                channels = scaled(c, width)
        last = scaled(1280, width)
        layers.append(conv_bn(channels, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_classes) logits."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@ARCHITECTURES.register("mobilenet")
def mobilenet(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0,
              stem: str | None = None) -> nn.Module:
    """MobileNet V1 with width multiplier α = `width`.

    `stem`: `imagenet` = stride-2 stem conv (÷32 overall), `cifar` = stride-1 stem (÷16, the
    pytorch-cifar100 layout); default `imagenet` from 64 px up, `cifar` below.
    """
    stride = 2 if resolve_stem(stem, image_size) == "imagenet" else 1
    return MobileNetV1(in_channels, num_classes, width=width, stem_stride=stride)


@ARCHITECTURES.register("mobilenet_v2")
def mobilenet_v2(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0,
                 stem: str | None = None) -> nn.Module:
    """MobileNetV2 (expansion 6, ReLU6, linear bottlenecks); `width` also scales the 1280-channel head.

    `stem` as for `mobilenet`: stride-2 stem conv from 64 px up, stride 1 below.
    """
    stride = 2 if resolve_stem(stem, image_size) == "imagenet" else 1
    return MobileNetV2(in_channels, num_classes, width=width, stem_stride=stride)
