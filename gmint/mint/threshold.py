"""Threshold classifier: the classic one-signal attack (loss, confidence, entropy, gradient norm).

Fitted on the auditor's pool like any MINT classifier: it learns which direction means "member"
(larger or smaller), unless its `direction` option fixes it, and the threshold of best balanced accuracy, so the
0.5 decision of `predict_proba` is that threshold. Needs exactly one feature column (`--setup loss`, ...).
A fixed direction is what the loss threshold assumes (members' losses are smaller): a pool of a few dozen rows
can otherwise learn it backwards.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from gmint.errors import InputError
from gmint.mint.base import MINT_MODELS, check_scores


def best_threshold(membership: np.ndarray, score: np.ndarray) -> float:
    """The threshold maximising balanced accuracy: this classifier's fit, and the loss-threshold baseline's
    (fitted on the auditor's pool only)."""
    check_scores(membership, np.asarray(score, np.float64))
    fpr, tpr, thresholds = roc_curve(membership, score)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], np.finfo(np.float64).max))


# The direction option: learnt on the pool, or fixed (the sign that means "member").
DIRECTIONS: dict[str, float | None] = {"fitted": None, "smaller": -1.0, "larger": 1.0}


@MINT_MODELS.register("threshold")
class ThresholdMint:
    """P(member) = sigmoid(direction · (x − threshold)) on one standardised signal, in float64 throughout so
    that its ranking is the signal's own."""

    input_dtype = np.float64

    def __init__(self, input_dim: int, *, direction: str = "fitted") -> None:
        if input_dim != 1:
            raise InputError(f"the threshold classifier takes one signal, got {input_dim} feature columns; "
                             "choose one as its setup (e.g. loss, confidence, entropy, grad_norm)")
        if direction not in DIRECTIONS:
            raise InputError(f"the threshold classifier's direction is one of {list(DIRECTIONS)}, got {direction!r}")
        self.fixed = direction
        self.direction, self.threshold = DIRECTIONS[direction] or 1.0, 0.0

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int, labels: np.ndarray | None = None,
            groups: np.ndarray | None = None) -> dict[str, object]:
        """Choose the direction by AUC (unless it is fixed) and the threshold of best balanced accuracy; nothing
        random."""
        signal = x[:, 0].astype(np.float64)
        fixed = DIRECTIONS[self.fixed]
        self.direction = fixed if fixed is not None else 1.0 if roc_auc_score(y, signal) >= 0.5 else -1.0
        self.threshold = best_threshold(y, self.direction * signal)
        return {"direction": "larger is member" if self.direction > 0 else "smaller is member",
                "threshold": self.threshold, "train_rows": len(y)}

    def predict_proba(self, x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(member) in float64, above 0.5 exactly on the member side of the threshold (float32 would tie
        values within 6e-8 of 0.5, i.e. signal values within about 2e-7 standard deviations of the threshold)."""
        z = self.direction * np.asarray(x, np.float64)[:, 0] - self.threshold
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))

    def state(self) -> dict[str, torch.Tensor]:
        """Direction and threshold, in float64: a threshold rounded to float32 would move the 0.5 decision and
        every probability of a reloaded classifier."""
        return {"direction": torch.tensor(self.direction, dtype=torch.float64),
                "threshold": torch.tensor(self.threshold, dtype=torch.float64)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put back direction and threshold."""
        self.direction, self.threshold = float(state["direction"]), float(state["threshold"])

    def config(self) -> dict[str, object]:
        """The fixed direction, where there is one (files without it learnt theirs)."""
        return {} if self.fixed == "fitted" else {"direction": self.fixed}
