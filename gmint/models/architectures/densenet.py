"""DenseNet-121 (DenseNet-BC) with the 3×3 stem of the CIFAR adaptations, in torchvision's naming."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gmint.models.architectures._common import check_min_size
from gmint.models.zoo import ARCHITECTURES, scaled


class DenseLayer(nn.Module):
    """BN-ReLU-conv 1×1 to `bn_size`·growth, BN-ReLU-conv 3×3 to growth; output concatenated to the input."""

    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C + growth, H, W): the new features joined to the input."""
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv 1×1 (compression) and 2×2 average pool between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels),
            relu=nn.ReLU(),
            conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            pool=nn.AvgPool2d(2),
        ))


class DenseNet(nn.Module):
    """3×3 stem to 2·growth channels, dense blocks joined by transitions, BN-ReLU, pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, *, growth: int, blocks: Sequence[int],
                 compression: float = 0.5, bn_size: int = 4) -> None:
        super().__init__()
        channels = 2 * growth
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(in_channels, channels, 3, padding=1, bias=False))
        for i, n in enumerate(blocks):
            layers[f"denseblock{i + 1}"] = nn.Sequential(OrderedDict(
                (f"denselayer{j + 1}", DenseLayer(channels + j * growth, growth, bn_size)) for j in range(n)))
            channels += n * growth
            if i < len(blocks) - 1:
                layers[f"transition{i + 1}"] = Transition(channels, int(channels * compression))
                channels = int(channels * compression)
        layers["norm5"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_classes) logits."""
        out = F.adaptive_avg_pool2d(F.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(out, 1))


@ARCHITECTURES.register("densenet121")
def densenet121(in_channels: int, num_classes: int, image_size: int, *, width: float = 1.0) -> nn.Module:
    """DenseNet-121: blocks [6, 12, 24, 16], growth 32 × `width`, compression 0.5, bottleneck 4·growth.

    The stride-1 3×3 stem keeps full resolution into the first block (÷8 overall, by the three
    transitions), so inputs must be at least 8 px.
    """
    check_min_size("densenet121", image_size, 8)
    return DenseNet(in_channels, num_classes, growth=scaled(32, width), blocks=(6, 12, 24, 16))
