"""ResNet-18/50/101 in torchvision's layout (and parameter names), with a stem chosen by input size.

Option `stem`: `imagenet` = 7×7 stride-2 conv + 3×3 stride-2 max-pool (the paper's; ÷32 overall), `cifar` =
3×3 stride-1 conv without max-pool (÷8). Default: `imagenet` from 64 px up, `cifar` below, where the
ImageNet stem would leave the last stages at 1×1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gmint.models.architectures._common import resolve_stem
from gmint.models.zoo import ARCHITECTURES, scaled


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """1×1 conv + BN shortcut where the block changes shape, identity elsewhere."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers and a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → (B, planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride, as torchvision's "v1.5"), 1×1 expand ×4, and a shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) → (B, 4·planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


class ResNet(nn.Module):
    """Stem, four stages (64, 128, 256, 512 planes × `width`; stride 2 from the second), pool, linear."""

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: Sequence[int], in_channels: int,
                 num_classes: int, *, width: float, stem: str) -> None:
        super().__init__()
        channels = scaled(64, width)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, channels, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(channels)
        stages = []
        for i, depth in enumerate(depths):
            planes = scaled(64 * 2**i, width)
            blocks = []
            for j in range(depth):
                blocks.append(block(channels, planes, 2 if i > 0 and j == 0 else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_classes) logits."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@ARCHITECTURES.register("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0,
             stem: str | None = None) -> nn.Module:
    """ResNet-18: basic blocks [2, 2, 2, 2] (the benchmark's model)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, width=width,
                  stem=resolve_stem(stem, image_size))


@ARCHITECTURES.register("resnet50")
def resnet50(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0,
             stem: str | None = None) -> nn.Module:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3], expansion 4."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, width=width,
                  stem=resolve_stem(stem, image_size))


@ARCHITECTURES.register("resnet101", "resnet100")
def resnet101(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0,
              stem: str | None = None) -> nn.Module:
    """ResNet-101, the paper's "ResNet100": bottleneck blocks [3, 4, 23, 3], expansion 4."""
    return ResNet(Bottleneck, (3, 4, 23, 3), in_channels, num_classes, width=width,
                  stem=resolve_stem(stem, image_size))
