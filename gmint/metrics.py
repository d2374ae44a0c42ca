"""Membership metrics on scores where members are the positive class (1) and external samples 0.

Every metric comes with a stratified bootstrap 95% interval: resampling members and externals
separately keeps the evaluation balanced in every replicate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from gmint.errors import InputError


def _check(membership: np.ndarray, score: np.ndarray) -> None:
    if membership.shape != score.shape or membership.ndim != 1:
        raise InputError(f"membership {membership.shape} and scores {score.shape} must be equal 1-D arrays")
    if not np.isin(membership, (0, 1)).all() or len(np.unique(membership)) < 2:
        raise InputError("evaluation needs both members (1) and external samples (0), and only those")
    if not np.isfinite(score).all():
        raise InputError("scores contain NaN or Inf")


def accuracy(membership: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of rows whose `score >= threshold` decision equals their membership."""
    return float(np.mean((score >= threshold) == (membership == 1)))


def balanced_accuracy(membership: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of TPR and TNR at the threshold: accuracy as if both sides were equally many."""
    pred = score >= threshold
    return float(0.5 * (pred[membership == 1].mean() + (~pred[membership == 0]).mean()))


def auc(membership: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    return float(roc_auc_score(membership, score))


def tpr_at_fpr(membership: np.ndarray, score: np.ndarray, max_fpr: float) -> float:
    """Highest true-positive rate over thresholds whose false-positive rate is ≤ max_fpr."""
    fpr, tpr, _ = roc_curve(membership, score)
    return _tpr_at(fpr, tpr, max_fpr)


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    return float(tpr[np.searchsorted(fpr, max_fpr, side="right") - 1])


METRIC_NAMES = ("accuracy", "balanced_accuracy", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")


def _all_metrics(membership: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, ...]:
    """Every metric from one ROC curve (bootstrap replicates call this thousands of times)."""
    fpr, tpr, _ = roc_curve(membership, score)
    return (accuracy(membership, score, threshold), balanced_accuracy(membership, score, threshold),
            float(np.trapezoid(tpr, fpr)), _tpr_at(fpr, tpr, 0.01), _tpr_at(fpr, tpr, 0.001))


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the evaluation rows and its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci95_low": self.low, "ci95_high": self.high}


def membership_metrics(membership: np.ndarray, score: np.ndarray, *, threshold: float = 0.5,
                       n_boot: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """All METRIC_NAMES with stratified-bootstrap 95% intervals (n_boot = 0 gives point estimates only)."""
    membership, score = np.asarray(membership), np.asarray(score, np.float64)
    _check(membership, score)
    point = _all_metrics(membership, score, threshold)
    if n_boot <= 0:
        return {name: Estimate(v, v, v) for name, v in zip(METRIC_NAMES, point, strict=True)}
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(membership == 1), np.flatnonzero(membership == 0)
    samples = np.empty((n_boot, len(METRIC_NAMES)))
    for b in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        samples[b] = _all_metrics(membership[idx], score[idx], threshold)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return {name: Estimate(point[i], float(low[i]), float(high[i])) for i, name in enumerate(METRIC_NAMES)}


def best_threshold(membership: np.ndarray, score: np.ndarray) -> float:
    """The threshold maximising balanced accuracy (for baselines, fitted on the auditor's pool only)."""
    _check(membership, np.asarray(score, np.float64))
    fpr, tpr, thresholds = roc_curve(membership, score)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], np.finfo(np.float64).max))


def balance(membership: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of a balanced subset: the larger side subsampled (seeded) to the smaller side's size."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(membership == 1), np.flatnonzero(membership == 0)
    n = min(len(pos), len(neg))
    return np.sort(np.concatenate([rng.permutation(pos)[:n], rng.permutation(neg)[:n]]))
