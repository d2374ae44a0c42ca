"""Class-specific MINT: one classifier per class of the audited model, as in the object-classification
MINT work. A sample's Weight Modifier depends strongly on its class, so a classifier that only ever
compares samples of one class can pick up membership more finely than one that must also absorb the
differences between classes. Rows are routed by their true label at fit and prediction time.
"""

from __future__ import annotations

import numpy as np
import torch

from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS, MintBuilder, MintClassifier


@MINT_MODELS.register("per_class")
class PerClassMint:
    """One `base` classifier per class; classes whose pool rows lack members or externals use a shared
    classifier fitted on every row (recorded as `shared_classes`)."""

    @staticmethod
    def needs_shapes(options: dict[str, object]) -> bool:
        """Whether the base reads the features' recorded shapes (the map CNN, the filter-wise CNN)."""
        return bool(getattr(MINT_MODELS.get(str(options.get("base", "mlp"))), "needs_shapes", False))

    def __init__(self, input_dim: int, *, base: str = "mlp", classes: list[int] | None = None,
                 shared_classes: list[int] | None = None, base_options: dict[str, object] | None = None,
                 shapes: list[list[int]] | None = None) -> None:
        if base == "per_class":
            raise InputError("per_class needs a base classifier such as mlp or logreg")
        if getattr(MINT_MODELS.get(base), "row_signals", ()):  # its inputs are more than the features it is given
            raise InputError(f"per_class cannot wrap {base}, which reads the store's row signals beside the features; "
                             "choose a base such as mlp or logreg")
        self.input_dim, self.base, self.base_options = input_dim, base, dict(base_options or {})
        if shapes is not None:  # handed on to a base that reads them (train_mint offers them only then)
            self.base_options.setdefault("shapes", shapes)
        self.classes, self.shared_classes = list(classes or []), list(shared_classes or [])
        builder = MINT_MODELS.get(base)
        self.models: dict[str, MintClassifier] = {str(c): builder(input_dim, **self.base_options)
                                                  for c in self.classes}
        self.models["shared"] = builder(input_dim, **self.base_options)

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int, labels: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> dict[str, object]:
        """Fit the shared classifier on every row, then one per class that has members and externals.

        Args:
            x: (n, d) standardised features.
            y: (n,) membership, 1 member, 0 external.
            seed: seeds every classifier's fit.
            labels: (n,) the audited model's true class of each row; required.
            groups: (n,) each row's group, handed to every fit (see `MintClassifier.fit`).

        Returns:
            The base name, the classes fitted on their own, those left to the shared classifier, and each
            fit's record.
        """
        if labels is None:
            raise InputError("class-specific MINT needs each row's class label")
        builder = MINT_MODELS.get(self.base)
        self.classes, self.shared_classes, self.models = [], [], {}
        records: dict[str, object] = {"shared": self._fit_one("shared", builder, x, y, seed, groups)}
        for c in np.unique(labels):
            rows = labels == c
            if len(np.unique(y[rows])) < 2:
                self.shared_classes.append(int(c))
                continue
            self.classes.append(int(c))
            records[str(int(c))] = self._fit_one(str(int(c)), builder, x[rows], y[rows], seed,
                                                 None if groups is None else groups[rows])
        return {"base": self.base, "classes": len(self.classes), "shared_classes": self.shared_classes,
                "per_class": records}

    def _fit_one(self, key: str, builder: MintBuilder, x: np.ndarray, y: np.ndarray, seed: int,
                 groups: np.ndarray | None) -> dict[str, object]:
        model = builder(self.input_dim, **self.base_options)
        self.models[key] = model
        return model.fit(x, y, seed=seed, groups=groups)

    def predict_proba(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(member), each row scored by its class's classifier (the shared one for other classes)."""
        if labels is None:
            raise InputError("class-specific MINT needs each row's class label")
        out = self.models["shared"].predict_proba(x).astype(np.float32)
        for c in self.classes:
            rows = labels == c
            if rows.any():
                out[rows] = self.models[str(c)].predict_proba(x[rows])
        return out

    def state(self) -> dict[str, torch.Tensor]:
        """Every classifier's tensors, keyed `<class or shared>/<name>`."""
        return {f"{key}/{name}": t for key, model in self.models.items() for name, t in model.state().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Hand each classifier its own tensors back out of `state`."""
        for key, model in self.models.items():
            model.load_state({k.split("/", 1)[1]: v for k, v in state.items() if k.split("/", 1)[0] == key})

    def config(self) -> dict[str, object]:
        """The base, the classes with their own classifier and the base's options."""
        return {"base": self.base, "classes": self.classes, "shared_classes": self.shared_classes,
                "base_options": self.base_options}
