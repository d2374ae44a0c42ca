"""The dense MINT model (the paper's; the MINT papers' "vanilla" model): an MLP on standardised features —
Weight Modifiers, or flattened activation maps and embeddings. With `label_aware` the true class, one-hot,
joins the input."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from gmint.mint.base import MINT_MODELS
from gmint.mint.neural import NeuralMint


@dataclass(frozen=True)
class MlpNetwork:
    """The MLP's options: hidden widths, the dropout after each hidden layer, and whether the one-hot true
    class (of `classes`) is an input."""

    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    label_aware: bool = False
    classes: int = 0


@MINT_MODELS.register("mlp")
class MlpMint(NeuralMint[MlpNetwork]):
    """Linear-ReLU-Dropout blocks of widths `hidden`, one logit.

    Hidden layers start He-initialised for ReLU with a small positive bias, so every unit is active on some
    rows from the first step (a network of dead units outputs its last bias for every row).
    """

    KIND = "mlp"
    NETWORK = MlpNetwork

    def _build(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = self.input_dim + self.label_classes
        for h in self.network.hidden:
            linear = nn.Linear(width, h)
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.constant_(linear.bias, 0.01)
            layers += [linear, nn.ReLU(), nn.Dropout(self.network.dropout)]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 1))
