"""The dense MINT model (the paper's): an MLP on standardised Weight-Modifier features."""

from __future__ import annotations

from torch import nn

from gmint.mint.base import MINT_MODELS
from gmint.mint.neural import NeuralMint


@MINT_MODELS.register("mlp")
class MlpMint(NeuralMint):
    """Linear-ReLU-Dropout blocks of widths `hidden`, one logit."""

    NETWORK = {"hidden": [128, 64], "dropout": 0.1}

    def _build(self) -> nn.Module:
        layers: list[nn.Module] = []
        width = self.input_dim
        for h in self.hparams["hidden"]:  # type: ignore[union-attr]
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.hparams["dropout"])]  # type: ignore[arg-type]
            width = h
        return nn.Sequential(*layers, nn.Linear(width, 1))
