"""scikit-learn baseline MINT classifier: L2-regularised logistic regression.

Saved as its coefficients (tensors), never as a pickle, and scored with the same formula sklearn uses.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from gmint.mint.base import MINT_MODELS


@MINT_MODELS.register("logreg")
class LogRegMint:
    """Logistic regression on standardised features, class-balanced."""

    def __init__(self, input_dim: int, *, c: float = 1.0, max_iter: int = 2000) -> None:
        self.hparams = {"c": c, "max_iter": max_iter}
        self.coef = np.zeros(input_dim, np.float64)
        self.intercept = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int, labels: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> dict[str, object]:
        """Fit on (n, d) standardised features and membership; `labels` and `groups` are not used."""
        clf = LogisticRegression(C=self.hparams["c"], max_iter=self.hparams["max_iter"],
                                 class_weight="balanced", random_state=seed)
        clf.fit(x, y)
        self.coef, self.intercept = clf.coef_[0].astype(np.float64), float(clf.intercept_[0])
        return {"iterations": int(clf.n_iter_[0]), "train_rows": len(y)}

    def predict_proba(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(member) = sigmoid(x · coef + intercept), sklearn's formula; `labels` are not used."""
        z = np.asarray(x, np.float64) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def state(self) -> dict[str, torch.Tensor]:
        """Coefficients and intercept."""
        return {"coef": torch.from_numpy(self.coef), "intercept": torch.tensor(self.intercept)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put back coefficients and intercept."""
        self.coef, self.intercept = state["coef"].numpy(), float(state["intercept"])

    def config(self) -> dict[str, object]:
        """The regularisation and iteration options."""
        return dict(self.hparams)
