"""MINT classifiers: registry, the fitted-classifier container, training on a store."""

from gmint.mint import cnn, maps, mlp, per_class, selection, sklearn, threshold  # noqa: F401  (register them)
from gmint.mint.base import MINT_MODELS, FeatureSpec, TrainedMint
from gmint.mint.train import DEFAULT_KIND, train_mint

__all__ = ["DEFAULT_KIND", "MINT_MODELS", "FeatureSpec", "TrainedMint", "train_mint"]
