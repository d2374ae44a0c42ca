"""Every attack of a comparison set against the loss threshold on the same rows: the paired AUC difference on
constructed signals whose answer is known, in the JSON, the tables and the benchmark's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.reference import report
from gmint.assess.metrics import paired_auc_difference
from gmint.data.split import one_sided_groups
from gmint.reference import compare_attacks
from gmint.reference.report import comparison_markdown
from gmint.reference.signals import OutputSignals, ReferenceSignals

N = 200  # members then externals; pool and held-out rows alternate, so 50 + 50 rows are scored
MEMBERSHIP = np.repeat([1, 0], N // 2).astype(np.int8)
ROLE = np.tile([0, 1], N // 2).astype(np.int8)
AUDITED_LOSS = np.random.default_rng(0).uniform(0.5, 1.5, N)  # the same on both sides: the loss reads little


def signals(reference_loss: np.ndarray, group: np.ndarray | None = None) -> ReferenceSignals:
    """Offline signals of two reference models, neither trained on a candidate."""
    output = OutputSignals(np.arange(N), MEMBERSHIP, ROLE, np.zeros(N, np.int64), AUDITED_LOSS, reference_loss,
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
    assert line == f"| lira-offline | 1 | n/a ({result.unresolved}) |  |  |  |  |"  # every column, empty


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
    assert header.endswith("| AUC − loss threshold [95%] |")
    loss_row, lira_row = lines[-2:]
    assert loss_row.endswith("| — |")
    d = comparison.results[1].versus_loss
    assert d is not None
    assert lira_row.endswith(f"| {d.value:.3f} [{d.low:.3f}, {d.high:.3f}] |")


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
            row("lira-offline", 2, 0.64, auc_minus_loss_threshold=versus)]
    lines = report(rows, None, tmp_path / "figures").splitlines()
    table = {line.split(" | ")[0].removeprefix("| "): line for line in lines if line.startswith("| ")}
    assert table["attack"].endswith("| AUC − loss threshold [95%] |")
    assert table["loss"].endswith("| — |")
    assert table["rmia"].endswith("| not recorded |")
    assert table["lira-offline"].endswith("| 0.041 [0.012, 0.070] |")
