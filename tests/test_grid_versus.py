"""The grid report's comparison with the loss threshold: verdicts from the paired interval against 0, counted per
classifier, setup and fraction; rows without the paired interval are never given a verdict."""

from __future__ import annotations

from typing import Any

from benchmarks.report import KIND_NAMES, index_rows
from benchmarks.versus_loss import below_cells, cell_table, counts_table, difference_text, verdict, versus_section

CELLS = ["paper/mnist-mobilenet", "paper/cifar10-vit"]


def _row(cell: str, kind: str, diff: tuple[float, float, float] | None, *, setup: str = "combined",
         fraction: str = "D100", **extra: Any) -> dict[str, Any]:
    loss = {"auc": {"value": 0.8, "ci95_low": 0.75, "ci95_high": 0.85},
            "tpr_at_1pct_fpr": {"value": 0.04, "ci95_low": 0.01, "ci95_high": 0.08}}
    auc = 0.8 + (diff[0] if diff else 0.0)
    row: dict[str, Any] = {
        "cell": cell, "signal": "gMINT", "setup": setup, "fraction": fraction, "classifier": kind,
        "mint": {"auc": {"value": auc, "ci95_low": auc - 0.05, "ci95_high": auc + 0.05},
                 "tpr_at_1pct_fpr": {"value": None, "ci95_low": None, "ci95_high": None,
                                     "unresolved": "needs ≥ 100 externals, has 50"}},
        "mint_seeds": {"seeds": [0, 1, 2], "auc": [auc, auc - 0.01, auc + 0.02],
                       "tpr_at_1pct_fpr": [None, None, None]},
        "loss_threshold": loss, "fit_rows": 1000, **extra}
    if diff is not None:
        row["auc_minus_loss_threshold"] = {"value": diff[0], "ci95_low": diff[1], "ci95_high": diff[2]}
    return row


SELECTION = {"chosen": "logreg c=0.1 signed_log", "cv_auc": 0.8312,
             "cv": [{"candidate": "logreg c=0.1 signed_log", "auc_mean": 0.8312},
                    {"candidate": "threshold direction=smaller linear (loss only)", "auc_mean": 0.8105}]}


def test_the_verdict_is_the_paired_interval_against_zero_and_absent_without_one() -> None:
    assert verdict(_row(CELLS[0], "gmint", (0.05, 0.01, 0.09))) == "above"
    assert verdict(_row(CELLS[0], "gmint", (0.0, 0.0, 0.0))) == "level"  # reaching 0 is level: ties are not wins
    assert verdict(_row(CELLS[0], "gmint", (-0.01, -0.03, 0.0))) == "level"
    assert verdict(_row(CELLS[0], "gmint", (-0.05, -0.09, -0.01))) == "below"
    old = _row(CELLS[0], "mlp", None)
    assert verdict(old) is None and difference_text(old) == "not recorded"
    assert difference_text(_row(CELLS[0], "gmint", (0.05, 0.01, 0.09))) == "+0.050 [+0.010, +0.090] above"


def test_cell_table_gives_each_classifier_beside_the_loss_threshold_and_marks_pending_cells() -> None:
    rows = [_row(CELLS[0], "gmint", (0.05, 0.01, 0.09), model_selection=SELECTION,
                 epsilon={"epsilon_lower_bound": 1.234}),
            _row(CELLS[0], "mlp", (-0.05, -0.09, -0.01))]
    rows[1]["mint_seeds"]["tpr_at_1pct_fpr"] = [0.1, 0.3, 0.2]  # the median is stated, not the first seed's
    lines = cell_table(CELLS, index_rows(rows), ("gmint", "mlp"), KIND_NAMES)
    mnist = next(line for line in lines if line.startswith(f"| {CELLS[0]} |"))
    assert "| 0.850 (0.840–0.870) · n/a · +0.050 [+0.010, +0.090] above |" in mnist
    assert "| 0.750 (0.740–0.770) · 0.200 · -0.050 [-0.090, -0.010] below |" in mnist
    assert "| 0.800 · 0.040 | 1.23 |" in mnist  # the loss threshold's AUC and TPR, the default's ε
    assert "logreg c=0.1 signed_log (CV 0.831; the loss alone 0.810)" in mnist
    assert f"| {CELLS[1]} | pending |" in "\n".join(lines)


def test_counts_are_per_setup_and_fraction_with_unrecorded_rows_apart() -> None:
    rows = [_row(CELLS[0], "gmint", (0.05, 0.01, 0.09)), _row(CELLS[1], "gmint", (0.0, -0.01, 0.01)),
            _row(CELLS[0], "gmint", (-0.05, -0.09, -0.01), setup="entry", fraction="D1"),
            _row(CELLS[0], "mlp", None)]
    text = "\n".join(counts_table(rows, ("gmint", "mlp"), KIND_NAMES))
    gmint = next(line for line in text.splitlines() if line.startswith("| gmint's default |")).split(" | ")
    assert gmint[3] == "0 / 0 / 1"     # entry D1: one below
    assert gmint[10] == "1 / 1 / 0"    # combined D100: one above, one level
    assert gmint[-1] == "1 / 1 / 1 |"  # all
    mlp = next(line for line in text.splitlines() if line.startswith("| the paper's MLP |"))
    assert mlp.endswith("| 0 / 0 / 0 (1) |") and "in brackets" in text


def test_section_counts_cells_and_names_each_cell_below_with_its_pool_selection() -> None:
    rows = [_row(CELLS[0], "gmint", (-0.05, -0.09, -0.01), model_selection=SELECTION),
            _row(CELLS[1], "gmint", (0.03, 0.01, 0.05)), _row(CELLS[1], "mlp", (0.0, -0.02, 0.02))]
    text = "\n".join(versus_section(CELLS, rows, index_rows(rows), ("gmint", "mlp"), KIND_NAMES))
    assert "gmint's default, combined D100: above the loss threshold in 1 of 2 cells, level in 0, below in 1." in text
    assert "the paper's MLP, combined D100: above the loss threshold in 0 of 1 cells, level in 1, below in 0." in text
    below = below_cells(CELLS, index_rows(rows), "gmint", "gmint's default")
    assert below[-2] == (f"- {CELLS[0]}: -0.050 [-0.090, -0.010] below; on the pool, logreg c=0.1 signed_log "
                         "(CV 0.831; the loss alone 0.810), fitted on 1000 rows.")
    assert below_cells(CELLS, index_rows(rows), "mlp", "the paper's MLP") == []
    # cells are named for the default alone: the paper's form reads no loss
    rows.append(_row(CELLS[0], "mlp", (-0.05, -0.09, -0.01)))
    text = "\n".join(versus_section(CELLS, rows, index_rows(rows), ("gmint", "mlp"), KIND_NAMES))
    assert "Cells where gmint's default reads below" in text and "Cells where the paper's MLP" not in text
    assert versus_section(CELLS, [], {}, ("gmint",), KIND_NAMES) == []
