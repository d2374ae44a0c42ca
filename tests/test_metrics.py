"""Metrics against hand-computed values, the bootstrap interval's coverage, what the rows can resolve."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve

from gmint.assess.metrics import (
    Estimate,
    accuracy,
    auc,
    balance,
    balanced_accuracy,
    clopper_pearson_upper,
    control_off_chance,
    epsilon_lower_bound,
    epsilon_threshold,
    externals_needed,
    membership_metrics,
    paired_auc_difference,
    roc_points,
    score_collapse,
    seed_spread,
    tpr_at_fpr,
)
from gmint.data.split import one_sided_groups
from gmint.errors import InputError
from gmint.mint.threshold import best_threshold

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
    y, s = np.r_[Y, np.zeros(100, int)], np.r_[S, np.linspace(0, 0.3, 100)]  # 106 externals resolve 1%
    got = membership_metrics(y, s, n_boot=50, seed=0)
    assert got["auc"].value == pytest.approx(roc_auc_score(y, s))
    assert got["accuracy"].value == pytest.approx(accuracy(y, s))
    assert got["tpr_at_1pct_fpr"].value == pytest.approx(tpr_at_fpr(y, s, 0.01)) == pytest.approx(0.75)
    for name, est in got.items():
        if name != "tpr_at_0.1pct_fpr":
            assert est.low <= est.value <= est.high


@pytest.mark.parametrize("externals, resolved", [(99, set()), (100, {"tpr_at_1pct_fpr"}), (360, {"tpr_at_1pct_fpr"}),
                                                 (1000, {"tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"})])
def test_tpr_is_reported_only_at_an_fpr_the_externals_resolve(externals: int, resolved: set[str]) -> None:
    """With n externals the FPR moves in steps of 1/n: 360 externals cannot show a 0.1% FPR."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50, int), np.zeros(externals, int)]
    got = membership_metrics(y, rng.normal(size=len(y)) + y, n_boot=20, seed=0)
    for name, fpr in (("tpr_at_1pct_fpr", 0.01), ("tpr_at_0.1pct_fpr", 0.001)):
        if name in resolved:
            assert got[name].value is not None and got[name].low is not None and not got[name].unresolved
        else:
            needed = f"{round(1 / fpr):,}"
            assert got[name] == Estimate(None, None, None, f"needs ≥ {needed} externals, has {externals:,}")
            assert got[name].to_dict() == {"value": None, "ci95_low": None, "ci95_high": None,
                                           "unresolved": f"needs ≥ {needed} externals, has {externals:,}"}
        assert Estimate.from_dict(got[name].to_dict()) == got[name]  # the grid's JSONL reads back
    assert externals_needed(0.01) == 100 and externals_needed(0.001) == 1000


def test_fast_roc_is_sklearns_curve_exactly() -> None:
    rng = np.random.default_rng(1)
    for trial in range(300):
        n = int(rng.integers(2, 300))
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)
        s = [rng.normal(size=n), np.round(rng.normal(size=n), 1), rng.integers(0, 3, n).astype(float)][trial % 3]
        fpr, tpr, _ = roc_curve(y, s)
        got = roc_points(y, s)
        assert np.array_equal(got[0], fpr) and np.array_equal(got[1], tpr)


@pytest.mark.parametrize("score, flagged", [
    (np.full(200, 0.5), "all 200 scores are 0.5"),
    (np.r_[np.full(190, 1.0), np.linspace(0, 0.5, 10)], "95.0% of the 200 scores are 1"),
    (np.r_[np.full(180, 0.3) + np.random.default_rng(0).normal(0, 1e-9, 180), np.linspace(0, 1, 20)],
     "90.0% of the 200 scores are 0.3"),  # identical up to rounding noise
    (np.r_[np.zeros(100), np.ones(100)], None),  # saturated but ranking: a perfect separation
    (np.linspace(0, 1, 200), None),
])
def test_collapsed_scores_are_flagged(score: np.ndarray, flagged: str | None) -> None:
    message = score_collapse(score)
    assert (message is None) if flagged is None else (message is not None and message.startswith(flagged))


@pytest.mark.slow
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


def test_estimate_json_round_trip() -> None:
    est = Estimate(0.75, 0.5, 0.875)
    assert est.to_dict() == {"value": 0.75, "ci95_low": 0.5, "ci95_high": 0.875}  # no `unresolved` key when resolved
    assert Estimate.from_dict(est.to_dict()) == est
    assert Estimate.from_dict({"value": 1, "ci95_low": 0, "ci95_high": 1}) == Estimate(1.0, 0.0, 1.0)
    with pytest.raises(InputError, match="a number or null, got 'high'"):
        Estimate.from_dict({"value": 0.5, "ci95_low": 0.4, "ci95_high": "high"})


def test_a_negative_control_off_chance_is_said() -> None:
    assert control_off_chance(Estimate(0.52, 0.49, 0.55)) is None            # chance inside the interval
    below = control_off_chance(Estimate(0.36, 0.33, 0.40))
    assert below is not None and "0.360 [0.330, 0.400] is below chance" in below
    above = control_off_chance(Estimate(0.61, 0.57, 0.65))
    assert above is not None and "is above chance" in above
    assert control_off_chance(Estimate(None, None, None, "too few rows")) is None


def test_singleton_groups_are_the_row_bootstrap_replicate_for_replicate() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(150), np.zeros(150)].astype(int)
    s = rng.random(300) + 0.3 * y
    by_row = membership_metrics(y, s, n_boot=200, seed=4)
    by_group = membership_metrics(y, s, n_boot=200, seed=4, groups=np.arange(300))
    assert {k: v.to_dict() for k, v in by_row.items()} == {k: v.to_dict() for k, v in by_group.items()}


def test_copies_of_a_row_are_resampled_as_one_row() -> None:
    """30 copies of each of 40 + 40 rows (frames of one sign, say): resampling whole groups gives the
    interval of the 80 rows themselves, where resampling the 2,400 copies one by one draws one far too narrow."""
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(40), np.zeros(40)].astype(int)
    s = rng.random(80) + 0.4 * y
    copies_y, copies_s, copies_g = np.repeat(y, 30), np.repeat(s, 30), np.repeat(np.arange(80), 30)
    groups = one_sided_groups(copies_y, copies_g)
    assert groups is not None
    originals = membership_metrics(y, s, n_boot=300, seed=6)["auc"]
    by_group = membership_metrics(copies_y, copies_s, n_boot=300, seed=6, groups=groups)["auc"]
    by_row = membership_metrics(copies_y, copies_s, n_boot=300, seed=6)["auc"]
    assert by_group.to_dict() == pytest.approx(originals.to_dict())
    assert by_row.value == pytest.approx(originals.value)
    assert (by_row.high - by_row.low) < 0.3 * (by_group.high - by_group.low)  # type: ignore[operator]


@pytest.mark.parametrize("groups, why", [
    (np.repeat(np.arange(10), 6), None),
    (np.tile(np.arange(30), 2), "a group on both sides"),
    (np.arange(60), "every row its own group"),
    (np.r_[np.repeat(np.arange(9), 6), np.full(6, -1)], "rows of no group"),
])
def test_groups_are_resampled_only_where_each_sits_on_one_side(groups: np.ndarray, why: str | None) -> None:
    y = np.r_[np.ones(30), np.zeros(30)].astype(int)
    assert (one_sided_groups(y, groups) is None) == (why is not None)


def test_clopper_pearson_upper_bound_by_hand() -> None:
    # no errors in n: the bound solves (1 - p)^n = 1 - confidence
    assert clopper_pearson_upper(0, 50, 0.975) == pytest.approx(1 - 0.025 ** (1 / 50))
    assert clopper_pearson_upper(3, 50, 0.975) == pytest.approx(beta.ppf(0.975, 4, 47))
    assert clopper_pearson_upper(50, 50, 0.975) == 1.0


def test_epsilon_of_perfectly_separated_scores_is_the_clopper_pearson_bound() -> None:
    n = 100
    y = np.r_[np.ones(n), np.zeros(n)].astype(int)
    s = np.r_[np.linspace(0.6, 1.0, n), np.linspace(0.0, 0.4, n)]
    bound = epsilon_lower_bound(y, s, threshold=0.5, confidence=0.95)
    u = 1 - 0.025 ** (1 / n)  # each error rate 0 of n, one-sided at 97.5% (both hold together at 95%)
    assert bound.fpr == bound.fnr == 0
    assert bound.fpr_high == pytest.approx(u) and bound.fnr_high == pytest.approx(u)
    assert bound.value == pytest.approx(np.log((1 - u) / u))  # ≈ 3.28 for 100 rows a side
    with_delta = epsilon_lower_bound(y, s, threshold=0.5, confidence=0.95, delta=0.1)
    assert with_delta.value == pytest.approx(np.log((0.9 - u) / u))


def test_epsilon_of_rows_in_groups_counts_each_group_once() -> None:
    """100 rows a side in 10 groups of 10 (frames of one sign err together): the bound is that of 10 independent
    rows a side, far below the 3.28 the 100 rows counted one by one would claim."""
    n, size = 10, 10
    y = np.r_[np.ones(n * size), np.zeros(n * size)].astype(int)
    s = np.r_[np.linspace(0.6, 1.0, n * size), np.linspace(0.0, 0.4, n * size)]
    groups = np.repeat(np.arange(2 * n), size)
    bound = epsilon_lower_bound(y, s, threshold=0.5, groups=groups)
    u = 1 - 0.025 ** (1 / n)
    assert (bound.members, bound.external) == (n, n)
    assert bound.value == pytest.approx(np.log((1 - u) / u))  # ≈ 1.0
    assert bound.value < epsilon_lower_bound(y, s, threshold=0.5).value - 2


def test_epsilon_is_zero_where_scores_carry_nothing() -> None:
    y = np.r_[np.ones(200), np.zeros(200)].astype(int)
    s = np.tile(np.linspace(0, 1, 200), 2)  # members and externals score alike
    assert epsilon_lower_bound(y, s, threshold=0.5).value == 0.0
    assert "no ε lower bound" in epsilon_lower_bound(y, s, threshold=0.5).conclusion
    with pytest.raises(InputError, match="confidence"):
        epsilon_lower_bound(y, s, threshold=0.5, confidence=1.0)


def test_epsilon_threshold_is_the_best_on_the_rows_it_is_given() -> None:
    y = np.r_[np.ones(100), np.zeros(100)].astype(int)
    s = np.r_[np.linspace(0.6, 1.0, 100), np.linspace(0.0, 0.4, 100)]
    t = epsilon_threshold(y, s)
    assert 0.4 < t <= 0.6  # any threshold between the sides separates them
    assert epsilon_lower_bound(y, s, t).value == pytest.approx(epsilon_lower_bound(y, s, 0.5).value)


def test_paired_auc_difference_resamples_both_scores_on_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(200), np.zeros(200)].astype(int)
    base = rng.normal(size=400) + 0.3 * y
    same = paired_auc_difference(y, base, base, n_boot=200)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)  # a pairing error would spread this
    better = paired_auc_difference(y, base + 1.0 * y, base, n_boot=200)
    assert better.value == pytest.approx(auc(y, base + 1.0 * y) - auc(y, base))
    assert better.low is not None and better.low > 0
    groups = np.repeat(np.arange(100), 4)
    grouped = paired_auc_difference(y, base + 1.0 * y, base, n_boot=200, groups=groups)
    assert grouped.value == better.value and grouped.low != better.low


def test_seed_spread_reports_the_median_with_the_range() -> None:
    spread = seed_spread([0.51, 0.66, 0.60, None, 0.62, 0.50])
    assert (spread.median, spread.low, spread.high, spread.seeds) == (0.60, 0.50, 0.66, 5)
    assert str(spread) == "0.600 (median of 5 seeds, range 0.500–0.660)"
    assert seed_spread([None]).median is None
