"""Every attack of a comparison set against the loss threshold on the same rows (the paired AUC difference), and
its empirical ε lower bound at the threshold it chose on the pool: on constructed signals whose answer is known,
in the JSON, the tables and the benchmark's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta

from benchmarks.reference import report
from gmint.assess.metrics import epsilon_lower_bound, epsilon_threshold, paired_auc_difference
from gmint.data.split import one_sided_groups
from gmint.reference import ATTACKS, compare_attacks
from gmint.reference.base import Task
from gmint.reference.report import comparison_markdown
from gmint.reference.signals import GradientSignals, OutputSignals, ReferenceSignals

N = 200  # members then externals; pool and held-out rows alternate, so 50 + 50 rows are scored
MEMBERSHIP = np.repeat([1, 0], N // 2).astype(np.int8)
ROLE = np.tile([0, 1], N // 2).astype(np.int8)
AUDITED_LOSS = np.random.default_rng(0).uniform(0.5, 1.5, N)  # the same on both sides: the loss reads little


def signals(reference_loss: np.ndarray, group: np.ndarray | None = None,
            audited_loss: np.ndarray = AUDITED_LOSS) -> ReferenceSignals:
    """Offline signals of two reference models, neither trained on a candidate."""
    output = OutputSignals(np.arange(N), MEMBERSHIP, ROLE, np.zeros(N, np.int64), audited_loss, reference_loss,
                           np.zeros(reference_loss.shape, bool), np.ones(N, bool), group)
    return ReferenceSignals("offline", output)


def separating() -> np.ndarray:
    """Reference losses above the audited loss on members and below it on externals: offline LiRA's z is
    positive on every member and negative on every external (AUC 1), whatever the audited loss reads."""
    member = MEMBERSHIP[None, :] == 1
    return np.where(member, AUDITED_LOSS + [[1.0], [1.5]], AUDITED_LOSS - [[0.3], [0.4]])


def test_an_attack_ranking_as_the_loss_differs_from_it_by_exactly_zero() -> None:
    # every row sees the same two reference losses, so LiRA's z is a rising function of −loss: the same ranking
    comparison = compare_attacks(signals(np.array([[0.3] * N, [0.9] * N])), ["loss", "lira-offline"], [2],
                                 n_boot=50)
    loss, lira = comparison.results
    assert loss.versus_loss is None and "auc_minus_loss_threshold" not in loss.to_dict()
    assert lira.versus_loss is not None
    assert (lira.versus_loss.value, lira.versus_loss.low, lira.versus_loss.high) == (0.0, 0.0, 0.0)
    assert lira.to_dict()["auc_minus_loss_threshold"] == {"value": 0.0, "ci95_low": 0.0, "ci95_high": 0.0}


def test_an_attack_that_separates_where_the_loss_does_not_is_above_it_beyond_noise() -> None:
    with_loss = compare_attacks(signals(separating()), ["loss", "lira-offline"], [2], n_boot=200)
    alone = compare_attacks(signals(separating()), ["lira-offline"], [2], n_boot=200)
    loss, lira = with_loss.results
    assert lira.metrics is not None and lira.metrics["auc"].value == 1.0
    assert loss.metrics is not None and 0.4 < (loss_auc := loss.metrics["auc"].value or 0.0) < 0.7
    assert lira.versus_loss is not None and lira.versus_loss.value == pytest.approx(1.0 - loss_auc, abs=1e-12)
    assert lira.versus_loss.low is not None and lira.versus_loss.low > 0
    # the loss threshold is scored as the baseline whether or not it is among the chosen attacks
    assert alone.results[0].to_dict() == {**lira.to_dict(), "seconds": alone.results[0].seconds}


def test_an_attack_that_cannot_run_has_no_difference() -> None:
    comparison = compare_attacks(signals(separating()), ["lira-offline"], [1], n_boot=20)
    (result,) = comparison.results
    assert result.metrics is None and result.versus_loss is None
    assert "auc_minus_loss_threshold" not in result.to_dict()
    line = comparison_markdown(comparison).splitlines()[-1]
    assert result.epsilon is None and "epsilon" not in result.to_dict()
    assert line == f"| lira-offline | 1 | n/a ({result.unresolved}) |  |  |  |  |  |"  # every column, empty


def test_grouped_rows_resample_whole_groups_in_the_difference() -> None:
    noisy = separating() + np.random.default_rng(1).normal(0, 0.6, (2, N))  # LiRA no longer perfect
    by_rows = compare_attacks(signals(noisy), ["lira-offline"], [2], n_boot=200).results[0].versus_loss
    grouped = compare_attacks(signals(noisy, np.arange(N) // 10), ["lira-offline"], [2], n_boot=200)
    versus = grouped.results[0].versus_loss
    assert by_rows is not None and versus is not None
    assert versus.value == by_rows.value and (versus.low, versus.high) != (by_rows.low, by_rows.high)
    # the figure is paired_auc_difference's on the scored rows, with the comparison's groups
    at = grouped.sample_id
    groups = one_sided_groups(grouped.membership, (np.arange(N) // 10)[at])
    score = grouped.results[0].score
    assert score is not None
    expected = paired_auc_difference(grouped.membership, score, -AUDITED_LOSS[at], n_boot=200, seed=0, groups=groups)
    assert versus == expected
    assert grouped.intervals.startswith("whole groups")


def test_the_comparison_table_shows_the_difference_and_a_dash_for_the_loss_threshold() -> None:
    comparison = compare_attacks(signals(separating()), ["loss", "lira-offline"], [2], n_boot=50)
    lines = comparison_markdown(comparison).splitlines()
    header = next(line for line in lines if line.startswith("| attack"))
    assert header.endswith("| AUC − loss threshold [95%] | ε ≥ (95%) |")
    loss_row, lira_row = lines[-2:]
    loss, lira = comparison.results
    assert loss.epsilon is not None and lira.epsilon is not None
    assert loss_row.endswith(f"| — | {loss.epsilon.value:.2f} |")
    d = lira.versus_loss
    assert d is not None
    assert lira_row.endswith(f"| {d.value:.3f} [{d.low:.3f}, {d.high:.3f}] | {lira.epsilon.value:.2f} |")


def test_the_benchmark_report_says_not_recorded_for_rows_measured_before_the_difference(tmp_path: Path) -> None:
    def row(attack: str, k: int, auc: float, **extra: object) -> dict[str, object]:
        estimate = {"value": auc, "ci95_low": auc - 0.02, "ci95_high": auc + 0.02}
        unresolved = {"value": None, "ci95_low": None, "ci95_high": None, "unresolved": "needs ≥ 1,000 externals"}
        return {"cell": "c", "mode": "offline", "attack": attack, "k": k,
                "metrics": {"auc": estimate, "tpr_at_1pct_fpr": estimate, "tpr_at_0.1pct_fpr": unresolved},
                "rows": {"members": 50, "external": 50, "fit_rows": 100},
                "split": {"members": 100, "external": 100, "control": 0}, "reference_train_seconds": [1.0] * k,
                "audited_record": {"members_accuracy": 1.0, "external_accuracy": 0.9, "external_loss": 0.3},
                "audited_train_seconds": 2.0, **extra}

    versus = {"value": 0.041, "ci95_low": 0.012, "ci95_high": 0.07}
    rows = [row("loss", 0, 0.6), row("rmia", 2, 0.65),  # written before comparisons measured the difference
            row("lira-offline", 2, 0.64, auc_minus_loss_threshold=versus),  # ... or the ε bound
            row("lira-offline-global", 2, 0.63, auc_minus_loss_threshold=versus,
                epsilon={"epsilon_lower_bound": 1.236, "confidence": 0.95})]
    lines = report(rows, None, tmp_path / "figures").splitlines()
    table = {line.split(" | ")[0].removeprefix("| "): line for line in lines if line.startswith("| ")}
    assert table["attack"].endswith("| AUC − loss threshold [95%] | ε ≥ (95%) |")
    assert table["loss"].endswith("| — | not recorded |")
    assert table["rmia"].endswith("| not recorded | not recorded |")
    assert table["lira-offline"].endswith("| 0.041 [0.012, 0.070] | not recorded |")
    assert table["lira-offline-global"].endswith("| 0.041 [0.012, 0.070] | 1.24 |")


# ε bounds: the loss attack's score is −audited loss, so constant losses per side give known error counts
HELD = ROLE == 1
SIDE = 1 - (1 - 0.95) / 2  # each error rate's one-sided Clopper–Pearson confidence, so that both hold at 95%


def upper(errors: int, n: int) -> float:
    """The one-sided Clopper–Pearson upper bound on a rate with `errors` of `n` (Beta(errors + 1, n − errors))."""
    return float(beta.ppf(SIDE, errors + 1, n - errors))


def test_an_attack_separating_every_row_gets_the_clopper_pearson_bound_of_no_error() -> None:
    audited_loss = np.where(MEMBERSHIP == 1, 0.1, 1.0)  # members and externals apart on the pool and held out
    comparison = compare_attacks(signals(np.array([[0.5] * N, [0.7] * N]), audited_loss=audited_loss),
                                 ["loss", "lira-offline"], [2], n_boot=20)
    assert int(comparison.membership.sum()) == 50 and len(comparison.membership) == 100
    fpr_high = fnr_high = upper(0, 50)  # no error among 50 externals, nor among 50 members
    expected = np.log((1 - fpr_high) / fnr_high)
    for result in comparison.results:
        assert result.metrics is not None and result.metrics["auc"].value == 1.0
        bound = result.epsilon
        assert bound is not None and (bound.fpr, bound.fnr, bound.members, bound.external) == (0.0, 0.0, 50, 50)
        assert (bound.fpr_high, bound.fnr_high) == (pytest.approx(fpr_high), pytest.approx(fnr_high))
        assert bound.value == pytest.approx(expected) and bound.value > 0
        assert result.to_dict()["epsilon"] == bound.to_dict()
    loss_bound = comparison.results[0].epsilon
    assert loss_bound is not None and loss_bound.threshold == -0.1  # the pool members' score


def test_an_attack_at_chance_gets_no_bound() -> None:
    # one audited loss and one reference loss per model for every row: every score is the same
    comparison = compare_attacks(signals(np.array([[0.5] * N, [0.7] * N]), audited_loss=np.ones(N)),
                                 ["loss", "lira-offline"], [2], n_boot=20)
    for result in comparison.results:
        assert result.metrics is not None and result.metrics["auc"].value == 0.5
        assert result.epsilon is not None and result.epsilon.value == 0.0
        assert "no ε lower bound" in result.epsilon.conclusion


def test_the_bound_is_read_at_the_pools_threshold_not_at_the_best_one_for_the_scored_rows() -> None:
    # the pool's members lose 0.1, its externals 1.0: its threshold is −0.1. Held out, half the members lose 0.05
    # (called members at −0.1) and half 0.3 (missed), externals 2.0: a threshold at −0.3 would separate them all.
    held_member = HELD & (MEMBERSHIP == 1)
    audited_loss = np.where(MEMBERSHIP == 1, 0.1, 1.0)
    audited_loss[held_member] = np.where((np.arange(N) // 2) % 2 == 0, 0.05, 0.3)[held_member]
    audited_loss[HELD & (MEMBERSHIP == 0)] = 2.0
    (result,) = compare_attacks(signals(np.array([[0.5] * N, [0.7] * N]), audited_loss=audited_loss), ["loss"], [2],
                                n_boot=20).results
    bound = result.epsilon
    assert bound is not None and bound.threshold == -0.1
    assert (bound.fnr, bound.fpr) == (0.5, 0.0)  # 25 of the 50 held-out members missed, no external called
    assert bound.value == pytest.approx(np.log((1 - upper(25, 50)) / upper(0, 50)))
    assert result.score is not None
    rows_best = epsilon_lower_bound(MEMBERSHIP[HELD], result.score, epsilon_threshold(MEMBERSHIP[HELD], result.score))
    assert rows_best.threshold == -0.3 and rows_best.value > bound.value + 0.5


def test_a_mint_attack_reads_its_bound_at_the_threshold_chosen_on_its_own_pool_scores() -> None:
    rng = np.random.default_rng(3)
    audited = (rng.normal(size=(N, 4)) + 1.5 * MEMBERSHIP[:, None]).astype(np.float32)
    gradient = GradientSignals(np.arange(N), MEMBERSHIP, ROLE, np.zeros(N, np.int64), audited, audited[None],
                               np.zeros((1, N), bool), ["a.weight"], [4], np.ones(N, bool))
    sig = ReferenceSignals("offline", signals(np.ones((1, N))).output, gradient)
    options = {"kind": "logreg"}
    pool, held = np.flatnonzero(~HELD), np.flatnonzero(HELD)
    scored = ATTACKS.get("gmint")(sig, Task(pool, held, options=options))
    on_pool = ATTACKS.get("gmint")(sig, Task(pool, pool, options=options))  # the same fit, scoring its pool
    assert scored.threshold == 0.5
    assert scored.epsilon_threshold == epsilon_threshold(MEMBERSHIP[pool], on_pool.score)
    (result,) = compare_attacks(sig, ["gmint"], [1], n_boot=20, options={"gmint": options}).results
    assert result.epsilon is not None and result.epsilon.threshold == scored.epsilon_threshold
    assert result.epsilon.value > 0
