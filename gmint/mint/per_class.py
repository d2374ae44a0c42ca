"""Class-specific MINT: one classifier per class of the audited model, as in the object-classification
MINT work. A sample's Weight Modifier depends strongly on its class, so a classifier that only ever
compares samples of one class can pick up membership more finely than one that must also absorb the
differences between classes. Rows are routed by their true label at fit and prediction time.
"""

from __future__ import annotations

import numpy as np
import torch

from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS, MintClassifier


@MINT_MODELS.register("per_class")
class PerClassMint:
    """One `base` classifier per class; classes whose pool rows lack members or externals use a shared
    classifier fitted on every row (recorded as `shared_classes`)."""

    def __init__(self, input_dim: int, *, base: str = "mlp", classes: list[int] | None = None,
                 shared_classes: list[int] | None = None, base_options: dict[str, object] | None = None) -> None:
        if base == "per_class":
            raise InputError("per_class needs a base classifier such as mlp or logreg")
        self.input_dim, self.base, self.base_options = input_dim, base, dict(base_options or {})
        self.classes, self.shared_classes = list(classes or []), list(shared_classes or [])
        builder = MINT_MODELS.get(base)
        self.models: dict[str, MintClassifier] = {str(c): builder(input_dim, **self.base_options)
                                                  for c in self.classes}
        self.models["shared"] = builder(input_dim, **self.base_options)

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int, labels: np.ndarray | None = None) -> dict[str, object]:
        if labels is None:
            raise InputError("class-specific MINT needs each row's class label")
        builder = MINT_MODELS.get(self.base)
        self.classes, self.shared_classes, self.models = [], [], {}
        records: dict[str, object] = {"shared": self._fit_one("shared", builder, x, y, seed)}
        for c in np.unique(labels):
            rows = labels == c
            if len(np.unique(y[rows])) < 2:
                self.shared_classes.append(int(c))
                continue
            self.classes.append(int(c))
            records[str(int(c))] = self._fit_one(str(int(c)), builder, x[rows], y[rows], seed)
        return {"base": self.base, "classes": len(self.classes), "shared_classes": self.shared_classes,
                "per_class": records}

    def _fit_one(self, key: str, builder: object, x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, object]:
        model = builder(self.input_dim, **self.base_options)  # type: ignore[operator]
        self.models[key] = model
        return model.fit(x, y, seed=seed)

    def predict_proba(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        if labels is None:
            raise InputError("class-specific MINT needs each row's class label")
        out = self.models["shared"].predict_proba(x).astype(np.float32)
        for c in self.classes:
            rows = labels == c
            if rows.any():
                out[rows] = self.models[str(c)].predict_proba(x[rows])
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{key}/{name}": t for key, model in self.models.items() for name, t in model.state().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for key, model in self.models.items():
            model.load_state({k.split("/", 1)[1]: v for k, v in state.items()  # type: ignore[attr-defined]
                              if k.split("/", 1)[0] == key})

    def config(self) -> dict[str, object]:
        return {"base": self.base, "classes": self.classes, "shared_classes": self.shared_classes,
                "base_options": self.base_options}
