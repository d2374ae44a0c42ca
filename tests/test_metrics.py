"""Metrics against hand-computed values, and the bootstrap interval's coverage."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gmint.errors import InputError
from gmint.metrics import accuracy, auc, balance, balanced_accuracy, best_threshold, membership_metrics, tpr_at_fpr

# 4 members, 6 externals.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
S = np.array([0.9, 0.8, 0.4, 0.7, 0.6, 0.3, 0.2, 0.1, 0.05, 0.55])


def test_hand_computed_values() -> None:
    # At 0.5: members 3/4 right, externals 4/6 right (0.6 and 0.55 called member).
    assert accuracy(Y, S) == pytest.approx(7 / 10)
    assert balanced_accuracy(Y, S) == pytest.approx((3 / 4 + 4 / 6) / 2)
    # Pairs (member, external) ranked correctly: 0.9, 0.8, 0.7 beat all 6; 0.4 beats 4 → 22/24.
    assert auc(Y, S) == pytest.approx(22 / 24)
    # No external above 0.7 → 3/4 members found at FPR 0; reaching the last member (0.4) means
    # calling both 0.6 and 0.55 members: FPR 2/6.
    assert tpr_at_fpr(Y, S, 0.01) == pytest.approx(3 / 4)
    assert tpr_at_fpr(Y, S, 1 / 6) == pytest.approx(3 / 4)
    assert tpr_at_fpr(Y, S, 0.3) == pytest.approx(3 / 4)
    assert tpr_at_fpr(Y, S, 2 / 6) == pytest.approx(1.0)


def test_point_estimates_agree_with_the_functions() -> None:
    got = membership_metrics(Y, S, n_boot=50, seed=0)
    assert got["auc"].value == pytest.approx(roc_auc_score(Y, S))
    assert got["accuracy"].value == pytest.approx(0.7)
    assert got["tpr_at_1pct_fpr"].value == pytest.approx(0.75)
    for est in got.values():
        assert est.low <= est.value <= est.high


def test_bootstrap_interval_covers_the_true_auc() -> None:
    """Scores N(0,1) for externals, N(1,1) for members: true AUC = Φ(1/√2) ≈ 0.7602."""
    true_auc = 0.760249938
    rng = np.random.default_rng(0)
    covered, trials = 0, 60
    for t in range(trials):
        y = np.r_[np.ones(150, int), np.zeros(150, int)]
        s = np.r_[rng.normal(1, 1, 150), rng.normal(0, 1, 150)]
        est = membership_metrics(y, s, n_boot=200, seed=t)["auc"]
        covered += est.low <= true_auc <= est.high
    assert covered / trials >= 0.85  # nominal 95%; 60 trials leave room for sampling noise


def test_best_threshold_separates_a_clean_split() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    t = best_threshold(y, s)
    assert 0.3 < t <= 0.7
    assert accuracy(y, s, t) == 1.0


def test_balance_subsamples_the_larger_side() -> None:
    idx = balance(Y, seed=0)
    assert (Y[idx] == 1).sum() == (Y[idx] == 0).sum() == 4


@pytest.mark.parametrize("y, s", [(np.ones(4, int), np.ones(4)), (np.array([0, 1, 2]), np.zeros(3)),
                                  (np.array([0, 1]), np.array([np.nan, 1.0])), (np.array([0, 1]), np.zeros(3))])
def test_invalid_inputs_are_refused(y: np.ndarray, s: np.ndarray) -> None:
    with pytest.raises(InputError):
        membership_metrics(y, s, n_boot=0)
