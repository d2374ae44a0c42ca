"""The grid report states the median over classifier seeds, names seed 0's figure where it differs, and counts
the probes where one seed's fit collapsed to chance; all on small hand-made rows with known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.grid import classifier, over_seeds
from benchmarks.report import collapsed_fits, count_collapses, differences, headline, table_entry
from gmint.mint import DEFAULT_KIND

CELL = ("paper/mnist-mobilenet", "mnist", "mobilenet")


def _row(accuracy: list[float], auc: list[float], *, cell: str = CELL[0], signal: str = "gMINT",
         **extra: Any) -> dict[str, Any]:
    """A grid row as the grid wrote it before rows stated their median: the first seed is the row's own figure,
    with a bootstrap interval around it."""
    return {"cell": cell, "signal": signal, "setup": "combined", "fraction": "D100",
            "mint": {"accuracy": {"value": accuracy[0], "ci95_low": accuracy[0] - 0.02,
                                  "ci95_high": accuracy[0] + 0.02},
                     "auc": {"value": auc[0], "ci95_low": auc[0] - 0.05, "ci95_high": auc[0] + 0.05}},
            "mint_seeds": {"seeds": list(range(len(accuracy))), "accuracy": accuracy, "auc": auc}, **extra}


# Each row's answer, worked by hand (ranges in points):
# 1: accuracy collapsed at seed 0 (0.50 vs 0.70), range 22; AUC never at chance (0.55 lowest), range 15.
# 2: accuracy collapsed at seed 1 (0.51, the bound itself), range 19; AUC collapsed at seed 1 (0.50), range 31.
# 3: accuracy spans exactly 5 points (0.50–0.55), not more, and never reaches 0.60; AUC flat.
# 4: accuracy at chance but never reaching 0.60, range 9; AUC collapsed at seed 0 (0.50 vs 0.60), range exactly 10.
ROWS = [_row([0.50, 0.62, 0.70, 0.48, 0.66], [0.55, 0.60, 0.70, 0.65, 0.62]),
        _row([0.70, 0.51, 0.65, 0.66, 0.68], [0.80, 0.50, 0.78, 0.79, 0.81]),
        _row([0.55, 0.50, 0.52, 0.53, 0.54], [0.60, 0.60, 0.60, 0.60, 0.60]),
        _row([0.50, 0.50, 0.50, 0.50, 0.59], [0.50, 0.60, 0.55, 0.55, 0.55])]


def test_a_row_without_a_stated_median_is_read_from_its_seed_points() -> None:
    spread = over_seeds(ROWS[0], "accuracy")
    assert (spread.median, spread.low, spread.high, spread.seeds) == (0.62, 0.48, 0.70, 5)
    stated = {**ROWS[0], "mint_over_seeds": {"accuracy": {"median": 0.6, "min": 0.4, "max": 0.8, "seeds": 3}}}
    assert (over_seeds(stated, "accuracy").median, over_seeds(stated, "accuracy").seeds) == (0.6, 3)
    assert classifier(ROWS[0]) == "mlp" and classifier({**ROWS[0], "classifier": "gmint"}) == "gmint"


def test_tables_state_the_median_and_name_seed_zero_where_it_is_another_figure() -> None:
    assert headline(ROWS[0], "accuracy", percent=True) == "62.0"
    assert table_entry(ROWS[0], "accuracy", percent=True) == "62.0 (seeds 48.0–70.0; seed 0: 50.0)"
    # the median is seed 0's own figure: its bootstrap interval belongs to it, as the table showed before
    assert table_entry(ROWS[2], "auc", percent=False) == "0.600 [0.550, 0.650] (seeds 0.600–0.600)"
    assert table_entry(ROWS[1], "auc", percent=False) == "0.790 (seeds 0.500–0.810; seed 0: 0.800 [0.750, 0.850])"


def test_ours_minus_paper_is_taken_from_the_median() -> None:
    paper = {("MNIST", "MobileNet", "combined", "D100"): 100.0}
    diff = differences([CELL], {(CELL[0], "gMINT", "combined", "D100", "mlp"): ROWS[0]}, paper, "mlp")
    assert diff[0, 9] == pytest.approx(62.0 - 100.0)  # combined D100: the 10th of 4 setups × 3 fractions
    assert np.isnan(diff[0, :9]).all()


@pytest.mark.parametrize(("names", "collapsed", "first", "wider"), [
    (("accuracy",), 2, 1, (3, 2)),
    (("auc",), 2, 1, (3, 2)),
    (("accuracy", "auc"), 3, 2, (3, 2)),
])
def test_collapses_are_counted_with_their_bounds_inclusive_and_ranges_in_whole_points(
        names: tuple[str, ...], collapsed: int, first: int, wider: tuple[int, int]) -> None:
    counts = count_collapses(ROWS, names)
    assert (counts.probes, counts.collapsed, counts.first_collapsed, counts.wider_than) == (4, collapsed, first, wider)


def test_collapse_section_counts_the_grids_gmint_probes_and_says_how_to_measure_the_default() -> None:
    others = [_row([0.50, 0.70], [0.50, 0.70], signal="negative control"),
              _row([0.50, 0.70], [0.50, 0.70], cell="paper/cifar10-vit")]
    config, out = Path("benchmarks/configs/grid-cpu.toml"), Path("benchmarks/results/grid-cpu.md")
    text = "\n".join(collapsed_fits([CELL], ROWS + others, config, out))
    assert "Over the 4 gMINT probes of these rows" in text
    assert "| the paper's MLP | accuracy | 2 | 1 | 3 | 2 |" in text
    assert "| the paper's MLP | accuracy or AUC | 3 | 2 | 3 | 2 |" in text
    # rows 3 and 4 are within 5 points in AUC, but none in both accuracy and AUC but row 3 (exactly 5 points)
    assert "the paper's MLP: 1 of 4 (25%)" in text
    assert "All 4 rows were measured before" in text and "an MLP on MEAN features" in text
    assert (f"python -m benchmarks.grid --config benchmarks/configs/grid-cpu.toml --out "
            f"benchmarks/results/grid-cpu-{DEFAULT_KIND}.jsonl") in text
    measured = [{**r, "classifier": DEFAULT_KIND} for r in ROWS]
    text = "\n".join(collapsed_fits([CELL], measured, config, out))
    assert "| gmint's default | accuracy | 2 | 1 | 3 | 2 |" in text
    assert "measured before" not in text and "python -m benchmarks.grid" not in text
    assert collapsed_fits([CELL], others, config, out) == []
