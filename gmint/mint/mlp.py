"""The dense MINT model (the paper's): an MLP on standardised Weight-Modifier features."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from gmint.mint.base import MINT_MODELS
from gmint.mint.neural import NeuralMint


@dataclass(frozen=True)
class MlpNetwork:
    """The MLP's options: hidden widths and the dropout after each hidden layer."""

    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1


@MINT_MODELS.register("mlp")
class MlpMint(NeuralMint[MlpNetwork]):
    """Linear-ReLU-Dropout blocks of widths `hidden`, one logit."""

    NETWORK = MlpNetwork

    def _build(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = self.input_dim
        for h in self.network.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.network.dropout)]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 1))
