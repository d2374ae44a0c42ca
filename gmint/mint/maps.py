"""The original MINT's CNN model: 2-D convolutions over activation maps, then dense layers.

MINT (face recognition) reads a layer's activation maps (C × H × W) with a small convolutional network;
its CNN beat the dense ("vanilla") model on every convolutional layer. Each selected feature block is
folded back into its recorded shape (`layer_shapes` of an `activation-maps` store) and passes through
its own stack — 3×3 convolution, ReLU, 2×2 max-pooling where the map is large enough, 3×3 convolution,
ReLU, adaptive average pooling to 2 × 2 — and the blocks' codes meet in a dense head. An embedding
(D,) is read as D channels of a 1 × 1 map, a token sequence (T, D) as D channels along a T × 1 map, so
every block of every zoo family fits. With `label_aware` the one-hot true class joins the dense head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS
from gmint.mint.neural import NeuralMint


def map_shape(shape: list[int]) -> tuple[int, int, int]:
    """A recorded feature shape as the (C, H, W) map the network convolves: (C, H, W) as it is, (T, D) as
    (D, T, 1), (D,) as (D, 1, 1)."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return shape[1], shape[0], 1
    if len(shape) == 1:
        return shape[0], 1, 1
    raise InputError(f"the map CNN reads features of shape (C, H, W), (T, D) or (D,), not {tuple(shape)}")


class MapEncoder(nn.Module):
    """(B, Σ prod(shape) [+ classes]) → (B, Σ 4·channels [+ classes]): one conv stack per feature block."""

    def __init__(self, shapes: list[list[int]], channels: int, classes: int) -> None:
        super().__init__()
        self.shapes = [list(s) for s in shapes]
        self.classes = classes
        stacks = []
        for shape in shapes:
            c, h, w = map_shape(shape)
            pool: list[nn.Module] = [nn.MaxPool2d(2)] if min(h, w) >= 4 else []
            stacks.append(nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), *pool,
                                        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(2), nn.Flatten()))
        self.stacks = nn.ModuleList(stacks)

    def forward(self, x: Tensor) -> Tensor:
        """Fold each block's columns into its map, encode it; pass the one-hot class through."""
        codes, start = [], 0
        for shape, stack in zip(self.shapes, self.stacks, strict=True):
            size = math.prod(shape)
            block = x[:, start:start + size]
            start += size
            if len(shape) == 2:  # (T, D) tokens: D channels along T
                block = block.reshape(-1, shape[0], shape[1]).transpose(1, 2).unsqueeze(3)
            else:
                block = block.reshape(-1, *map_shape(shape))
            codes.append(stack(block))
        return torch.cat([*codes, x[:, start:start + self.classes]], dim=1)


@dataclass(frozen=True)
class MapCnnNetwork:
    """The map CNN's options: each block's recorded shape (filled in from the store), the conv channels, the
    head's hidden width and dropout, and whether the one-hot true class (of `classes`) joins the head."""

    shapes: list[list[int]] = field(default_factory=list)
    channels: int = 32
    hidden: int = 64
    dropout: float = 0.1
    label_aware: bool = False
    classes: int = 0


@MINT_MODELS.register("map_cnn")
class MapCnnMint(NeuralMint[MapCnnNetwork]):
    """2-D convolutions per activation map, dense head, one logit (the original MINT's CNN). Needs an
    `activation-maps` store (`flat` or `pool:<h>x<w>`), whose shapes it reads."""

    KIND = "map_cnn"
    NETWORK = MapCnnNetwork
    needs_shapes = True

    def _build(self) -> nn.Module:
        shapes = [list(s) for s in self.network.shapes]
        expected = sum(math.prod(s) for s in shapes)
        if not shapes or expected != self.input_dim:
            raise InputError(f"the map CNN MINT classifier needs activation maps (extracted with source "
                             f"activation-maps and reduction flat or pool:<h>x<w>): the recorded shapes hold "
                             f"{expected} values, the features have {self.input_dim}")
        channels, hidden, classes = int(self.network.channels), int(self.network.hidden), self.label_classes
        return nn.Sequential(MapEncoder(shapes, channels, classes),
                             nn.Linear(4 * channels * len(shapes) + classes, hidden), nn.ReLU(),
                             nn.Dropout(float(self.network.dropout)), nn.Linear(hidden, 1))
