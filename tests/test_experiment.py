"""One audit cell as a function: what it builds, what it measures, and that a second run reuses what the first
finished (and refuses what another recipe made)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gmint.assess.evaluate import evaluate_store, evaluate_with_control
from gmint.data.base import ImageSet
from gmint.data.split import make_split
from gmint.errors import InputError
from gmint.experiment import Cell, Probe, Recipe, run_cell
from gmint.features.store import FeatureStore
from gmint.mint import TrainedMint
from gmint.models.train import TrainConfig

GRADIENT, OUTPUT_D10 = Probe("gMINT", "combined"), Probe("gMINT", "output", "D10")
ACTIVATION, CONTROL = Probe("activation-MINT", "combined"), Probe("negative control", "combined")
RECIPE = Recipe(arch="small_cnn", train=TrainConfig(epochs=2, batch_size=32), probes=(GRADIENT, OUTPUT_D10,
                ACTIVATION, CONTROL), members=0.4, external=0.4, control=0.2, arch_options={"width": 0.5}, n_boot=50)
FILES = {"split.json", "audited.pt", "control.pt", "audited-gradient.h5", "audited-activation.h5",
         "control-gradient.h5", "mint-combined.pt", "mint-output-D10.pt", "mint-activation-combined.pt",
         "mint-control-combined.pt"}


@pytest.fixture(scope="module")
def run(digits: ImageSet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Cell, list[Cell]]:
    """The cell, and the cell as `on_measurement` saw it after each probe."""
    seen: list[Cell] = []
    return run_cell(digits, RECIPE, tmp_path_factory.mktemp("cell"), on_measurement=seen.append), seen


def _made(workdir: Path) -> dict[str, bytes]:
    """The bytes of everything but the MINT classifiers (which record their fit time)."""
    return {p.name: p.read_bytes() for p in sorted(workdir.iterdir()) if not p.name.startswith("mint-")}


def test_the_cell_builds_what_its_recipe_says(run: tuple[Cell, list[Cell]], digits: ImageSet) -> None:
    cell, seen = run
    assert {p.name for p in cell.workdir.iterdir()} == FILES
    assert [m.probe for m in cell.measurements] == list(RECIPE.probes)
    assert [len(c.measurements) for c in seen] == [1, 2, 3, 4]
    assert all(c.measurements[-1] is m for c, m in zip(seen, cell.measurements, strict=True))
    drawn = make_split(digits, members=0.4, external=0.4, control=0.2, holdout=0.5, seed=0)
    assert cell.split.sha256 == drawn.sha256 and set(cell.models) == {"audited", "control"}
    assert cell.models["control"].meta["trained_on"] == "control"
    assert cell.models["audited"].fingerprint != cell.models["control"].fingerprint


def test_each_measurement_is_its_saved_classifier_on_its_store(run: tuple[Cell, list[Cell]]) -> None:
    cell, _ = run
    for m in cell.measurements:
        assert m.evaluation.store == cell.workdir / f"{m.probe.model}-{m.probe.source}.h5"
        assert m.mint == cell.workdir / m.probe.mint_file
        mint = TrainedMint.load(m.mint)
        assert (mint.spec.setup, mint.record["fraction"], mint.spec.source) == (m.probe.setup, m.probe.fraction,
                                                                                 m.probe.source)
        assert m.fit_rows == len(mint.fitted_ids)
        assert evaluate_store(mint, m.evaluation.store, n_boot=50).to_dict() == m.evaluation.to_dict()
    d10 = next(m for m in cell.measurements if m.probe == OUTPUT_D10)
    assert d10.fit_rows == len(cell.split.subpools["D10"]) < len(cell.split.pool)


def test_every_probe_scores_the_same_held_out_rows(run: tuple[Cell, list[Cell]]) -> None:
    cell, _ = run
    rows = [np.sort(m.evaluation.scores.sample_id) for m in cell.measurements]
    assert all(np.array_equal(rows[0], r) for r in rows[1:])
    assert len(rows[0]) == 2 * cell.evaluation(GRADIENT).rows.members
    assert np.isin(rows[0], cell.split.holdout).all()


def test_evaluation_json_keeps_its_shape_and_the_control_matches_the_cells(run: tuple[Cell, list[Cell]]) -> None:
    cell, _ = run
    plain = cell.evaluation(GRADIENT).to_dict()
    assert list(plain) == ["store", "rows", "protocol", "mint", "loss_threshold", "audited_model", "intervals",
                           "warnings", "auc_minus_loss_threshold", "epsilon"]
    assert list(plain["rows"]) == ["members", "external", "excluded_nonfinite"]
    gap = plain["audited_model"]
    assert gap["accuracy_gap"] == gap["members_accuracy"] - gap["external_accuracy"]
    mint = TrainedMint.load(cell.workdir / GRADIENT.mint_file)
    checked = evaluate_with_control(mint, cell.workdir / "audited-gradient.h5", cell.workdir / "control-gradient.h5",
                                    n_boot=50).to_dict()
    assert list(checked) == [*plain, "negative_control", "negative_control_model", "negative_control_store"]
    control = cell.evaluation(CONTROL).to_dict()
    assert checked["negative_control"] == control["mint"]  # the same recipe on the control store
    assert checked["negative_control_model"] == control["audited_model"]
    assert checked["negative_control_store"] == str(cell.workdir / "control-gradient.h5")
    auc = checked["negative_control"]["auc"]
    off_chance = not auc["ci95_low"] <= 0.5 <= auc["ci95_high"]
    assert any(w.startswith("negative control: its AUC") for w in checked["warnings"]) == off_chance


def test_a_second_run_reuses_the_models_and_stores_and_measures_the_same(run: tuple[Cell, list[Cell]],
                                                                         digits: ImageSet) -> None:
    cell, _ = run
    before = _made(cell.workdir)
    again = run_cell(digits, RECIPE, cell.workdir)
    assert _made(cell.workdir) == before
    assert [m.evaluation.to_dict() for m in again.measurements] == [m.evaluation.to_dict() for m in cell.measurements]


def test_a_folder_of_another_recipe_is_refused_before_anything_is_written(run: tuple[Cell, list[Cell]],
                                                                          digits: ImageSet) -> None:
    cell, _ = run
    before = _made(cell.workdir)
    with pytest.raises(InputError, match="audited.pt"):
        run_cell(digits, replace(RECIPE, train=TrainConfig(epochs=3, batch_size=32)), cell.workdir)
    assert _made(cell.workdir) == before


def test_probes_name_their_signal_store_and_file() -> None:
    assert (CONTROL.model, CONTROL.source, ACTIVATION.model, ACTIVATION.source) == ("control", "gradient",
                                                                                     "audited", "activation")
    assert [p.mint_file for p in RECIPE.probes] == ["mint-combined.pt", "mint-output-D10.pt",
                                                    "mint-activation-combined.pt", "mint-control-combined.pt"]
    with pytest.raises(InputError, match=r"unknown signal 'gmint'; choose from \['gMINT', 'activation-MINT'"):
        Probe("gmint", "combined")
    with pytest.raises(InputError, match="unknown data fraction 'D50'"):
        Probe("gMINT", "combined", "D50")


def test_a_probe_the_cell_did_not_measure_is_an_error(run: tuple[Cell, list[Cell]]) -> None:
    with pytest.raises(InputError, match="no measurement of"):
        run[0].evaluation(Probe("gMINT", "entry"))


def test_grouped_rows_get_intervals_that_resample_whole_groups(digits: ImageSet, tmp_path: Path) -> None:
    """Six digits to a group stand in for the frames of a track: the store keeps each row's group and the
    evaluation's intervals resample groups, where rows of the same cell without groups resample rows."""
    grouped = replace(digits, groups=np.arange(len(digits.labels)) // 6)
    recipe = replace(RECIPE, probes=(GRADIENT,), control=0, protocol="grouped")
    cell = run_cell(grouped, recipe, tmp_path / "grouped")
    evaluation = cell.evaluation(GRADIENT)
    with FeatureStore.open(evaluation.store) as store:
        np.testing.assert_array_equal(store.column("group"), grouped.groups[store.column("sample_id")])
    held_groups = len(np.unique(grouped.groups[cell.split.holdout]))
    assert evaluation.intervals == f"whole groups ({held_groups} groups of rows)"
    assert evaluation.to_dict()["intervals"] == evaluation.intervals
    # the ε bound counts each group once: its rows err together, and Clopper–Pearson needs independent trials
    scored_groups = len(np.unique(grouped.groups[evaluation.scores.sample_id]))
    assert evaluation.epsilon is not None
    assert evaluation.epsilon.members + evaluation.epsilon.external == scored_groups < len(evaluation.scores.score)
    assert TrainedMint.load(cell.workdir / GRADIENT.mint_file).record["fold_unit"] == "whole groups"
    assert run_cell(digits, recipe, tmp_path / "rows").evaluation(GRADIENT).intervals == "rows"
