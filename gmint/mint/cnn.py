"""CNN MINT: a convolutional classifier over unreduced (`flat`) Weight Modifiers that keeps their filter
structure, in the spirit of the original MINT's CNN model.

Each selected layer's Weight Modifier (F_out, F_in, kh, kw) is read as F_out filters of F_in·kh·kw
numbers. A 1×1 convolution along the filter axis (the same small network applied to every output
filter) encodes each filter, mean- and max-pooling over filters summarise the layer, and a dense head
joins the layers. Weight sharing across filters keeps the classifier small even for wide layers, and
the result does not depend on the order of the filters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS
from gmint.mint.neural import NeuralMint


class FilterEncoder(nn.Module):
    """(B, Σ F·D) features → (B, 2·channels·layers): per-filter 1×1 convs, then pooling over filters."""

    def __init__(self, shapes: list[list[int]], channels: int) -> None:
        super().__init__()
        self.splits = [(s[0], math.prod(s[1:]) if len(s) > 1 else 1) for s in shapes]
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Conv1d(d, channels, 1), nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU())
            for _, d in self.splits)

    def forward(self, x: Tensor) -> Tensor:
        """(B, Σ F·D) standardised flat Weight Modifiers, layer after layer → (B, 2·channels·layers)."""
        pooled, start = [], 0
        for (filters, d), encoder in zip(self.splits, self.encoders, strict=True):
            wm = x[:, start:start + filters * d].reshape(-1, filters, d).transpose(1, 2)  # (B, D, F)
            start += filters * d
            h = encoder(wm)                                                            # (B, C, F)
            pooled += [h.mean(dim=2), h.amax(dim=2)]
        return torch.cat(pooled, dim=1)


@dataclass(frozen=True)
class CnnNetwork:
    """The CNN's options: each layer's parameter shape (filled in from the store), the filter encoder's
    channels, the head's hidden width and its dropout."""

    shapes: list[list[int]] = field(default_factory=list)
    channels: int = 32
    hidden: int = 64
    dropout: float = 0.1


@MINT_MODELS.register("cnn")
class CnnMint(NeuralMint[CnnNetwork]):
    """Filter-wise convolutional encoder per layer, dense head, one logit. Needs `flat` features."""

    KIND = "cnn"
    NETWORK = CnnNetwork
    needs_shapes = True

    def _build(self) -> nn.Module:
        shapes = [list(s) for s in self.network.shapes]
        expected = sum(math.prod(s) for s in shapes)
        if not shapes or expected != self.input_dim:
            raise InputError(f"the CNN MINT classifier needs unreduced Weight Modifiers (extracted with "
                             f"reduction flat): the layers hold {expected} values, the features have {self.input_dim}")
        channels, hidden = int(self.network.channels), int(self.network.hidden)
        return nn.Sequential(FilterEncoder(shapes, channels), nn.Linear(2 * channels * len(shapes), hidden),
                             nn.ReLU(), nn.Dropout(float(self.network.dropout)), nn.Linear(hidden, 1))
