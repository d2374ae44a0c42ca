"""The gmint classifier (representation + model selection on the pool) and fits that cannot collapse silently."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from gmint.assess.evaluate import evaluate_store
from gmint.assess.report import write_report
from gmint.errors import InputError
from gmint.features.store import FeatureStore
from gmint.mint import MINT_MODELS, TrainedMint, train_mint
from gmint.mint.base import CollapsedFitError, score_spread
from gmint.mint.neural import NeuralMint, decision_cut
from gmint.mint.representation import Representation, representation_width
from gmint.mint.selection import GRID, LOSS_FLOOR, MIN_GAIN, Candidate, CvScore, beats, folds_of, ranked


def test_representation_adds_block_norms_and_bends_each_column_by_its_own_scale() -> None:
    x = np.array([[1.0, 0.0, 100.0], [3.0, 4.0, -300.0], [0.0, 0.0, 1.0], [2.0, 2.0, 0.0]])
    rep = Representation.fit(x, (2, 1), "signed_log")
    assert rep.width == representation_width((2, 1)) == 4  # one norm (the 2-wide block), then 3 columns
    norms = np.array([1.0, 5.0, 0.0, np.sqrt(8.0)])
    raw = np.column_stack([norms, x])
    scale = np.median(np.abs(raw), axis=0)
    scale = np.where(scale > 0, scale, np.abs(raw).mean(axis=0))
    bent = np.sign(raw) * np.log1p(np.abs(raw) / scale)
    expected = (bent - bent.mean(axis=0)) / bent.std(axis=0)
    np.testing.assert_allclose(rep(x), expected, rtol=1e-5, atol=1e-6)
    # fitted on these rows only: other rows go through the same scale, mean and std
    np.testing.assert_allclose(rep(x[:1]), expected[:1], rtol=1e-5, atol=1e-6)


def test_representation_keeps_a_heavy_tail_from_dominating() -> None:
    rng = np.random.default_rng(0)
    x = rng.lognormal(0, 4, size=(500, 1)) * rng.choice([-1, 1], size=(500, 1))  # spans many decades
    z = Representation.fit(x, (1,), "signed_log")(x)
    plain = Representation.fit(x, (1,), "linear")(x)
    assert np.abs(z).max() < 5 < np.abs(plain).max()


def test_score_spread_finds_constant_and_tied_scores() -> None:
    assert score_spread(np.linspace(-1, 1, 100)) is None
    assert "standard deviation" in str(score_spread(np.full(100, 0.3) + 1e-6 * np.arange(100) / 100))
    tied = np.r_[np.full(60, 0.537), np.linspace(-2, 2, 40)]  # a network whose units are dead on most rows
    assert "60%" in str(score_spread(tied))


def test_a_fit_that_cannot_spread_is_refitted_then_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).normal(size=(80, 3)).astype(np.float32)  # rows that differ ...
    y = np.r_[np.ones(40), np.zeros(40)].astype(np.int64)
    model = MINT_MODELS.get("mlp")(3, max_epochs=3, min_epochs=1)
    monkeypatch.setattr(model, "_logits", lambda inputs: np.zeros(len(inputs)))  # ... a net that scores them alike
    with pytest.raises(CollapsedFitError, match="3 fits"):
        model.fit(x, y, seed=0)
    assert model.config()["lr"] == 1e-3  # the options asked for stay recorded


def test_early_stopping_waits_for_min_epochs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = (rng.random(120) < 0.5).astype(np.int64)  # no signal: the validation loss is lowest early
    record = MINT_MODELS.get("mlp")(4, min_epochs=12, patience=2).fit(x, y, seed=0)
    assert record["best_epoch"] >= 12
    assert record["epochs_run"] >= 12


@pytest.mark.parametrize(("membership", "logits", "cut"), [
    ([0, 0, 1, 1], [-3.0, -2.0, -1.5, -1.0], -1.75),  # every row below 0: the cut moves to where they part
    ([0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0], 2.5),  # one member above of two, one external below of two
    ([0, 0, 0, 1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6, 7, 8, 9], 3.5),  # 3 externals weigh as 6 members
    ([0, 0, 1, 1], [-1.0, -0.5, 0.5, 1.0], None),  # 0 already parts them: the network's decision stays
    ([0, 0, 0, 0, 1, 1, 1, 1], [-4, -3, -2, 1, -1, 2, 3, 4], None),  # 1 in 4 above, 3 in 4 above: not lopsided
    ([1, 1], [1.0, 2.0], None),  # one side only
    ([0, 1], [1.0, 1.0], None),  # nothing to cut between
])
def test_a_lopsided_decision_moves_to_where_as_many_members_fall_above_as_externals_below(
        membership: list[int], logits: list[float], cut: float | None) -> None:
    assert decision_cut(np.array(membership), np.array(logits, np.float64)) == cut


@dataclass(frozen=True)
class _Fixed:
    """A network that training cannot move (lr 0): logit = x − 10, below 0.5 for every row here."""


class _FixedMint(NeuralMint[_Fixed]):
    NETWORK, KIND = _Fixed, "fixed"

    def _build(self) -> torch.nn.Module:
        linear = torch.nn.Linear(1, 1)
        torch.nn.init.ones_(linear.weight)
        torch.nn.init.constant_(linear.bias, -10.0)
        return torch.nn.Sequential(linear)


def test_a_network_decides_where_its_validation_rows_part_not_at_its_training_loss_midpoint() -> None:
    rng = np.random.default_rng(0)
    y = (np.arange(200) % 2).astype(np.int64)
    x = (y + 0.1 * rng.normal(size=200)).astype(np.float32)[:, None]  # members near 1, externals near 0
    model = _FixedMint(1, lr=0.0, max_epochs=2, min_epochs=1)
    assert (model.predict_proba(x) < 0.5).all()  # before: every row "external", an accuracy of 0.5
    cut = model.fit(x, y, seed=0)["decision_cut"]
    assert isinstance(cut, float) and -9.9 < cut < -9.1  # where the validation rows part, near x = 0.5
    fresh_y = (np.arange(400) % 2).astype(np.int64)
    fresh = (fresh_y + 0.1 * rng.normal(size=400)).astype(np.float32)[:, None]
    assert ((model.predict_proba(fresh) >= 0.5) == fresh_y).mean() > 0.99
    assert roc_auc_score(fresh_y, model.predict_proba(fresh)) == roc_auc_score(fresh_y, fresh[:, 0])


def _scores(**folds: tuple[float, ...]) -> list[CvScore]:
    """CV scores of the default grid's logreg (`wm`), its loss-and-correctness reader (`loss`) and an MLP (`mlp`)."""
    candidates = {"wm": GRID[1], "loss": LOSS_FLOOR, "mlp": next(c for c in GRID if c.kind == "mlp")}
    return [CvScore(candidates[name], auc) for name, auc in folds.items()]


def test_the_loss_stays_unless_another_candidate_beats_it_beyond_fold_noise() -> None:
    def order(scores: list[CvScore]) -> list[str]:
        return ["loss" if s.candidate.reads == "loss" else s.candidate.kind for s in ranked(scores)]

    # ahead on the fold mean (0.05) but by less than one standard error of the paired fold differences (0.078)
    noisy = _scores(wm=(0.90, 0.60, 0.85, 0.65), loss=(0.70, 0.70, 0.70, 0.70), mlp=(0.5, 0.5, 0.5, 0.5))
    assert order(noisy) == ["loss", "logreg", "mlp"]
    # ahead on every fold: its lead is beyond fold noise, and the best such candidate comes first
    steady = _scores(wm=(0.74, 0.75, 0.73, 0.75), loss=(0.70, 0.71, 0.70, 0.71), mlp=(0.76, 0.75, 0.77, 0.76))
    assert order(steady) == ["mlp", "logreg", "loss"]
    # one candidate beyond the noise, another not: only the first is tried before the loss
    mixed = _scores(wm=(0.74, 0.75, 0.73, 0.75), loss=(0.70, 0.71, 0.70, 0.71), mlp=(0.95, 0.55, 0.90, 0.60))
    assert order(mixed) == ["logreg", "loss", "mlp"]
    # the loss reader collapsed in cross-validation: the fold means alone decide
    assert order(_scores(wm=(0.6, 0.6), loss=(), mlp=(0.7, 0.7))) == ["mlp", "logreg", "loss"]


def test_a_gain_below_the_minimum_keeps_the_loss_however_steady() -> None:
    """CIFAR-10 ResNet-101's pool in the grid: a reader on the loss and correctness ahead on every fold by
    +0.0002 on the mean, far beyond one standard error (0.0001); held out it read 0.0004 below the loss."""
    loss = (0.9750, 0.9704, 0.9656, 0.9780)
    steady_hair = _scores(wm=(0.9755, 0.9705, 0.9658, 0.9780), loss=loss, mlp=(0.9, 0.9, 0.9, 0.9))
    assert beats(steady_hair[0], steady_hair[1], min_gain=0.0)  # the standard error alone would let it through
    assert [s.candidate.reads for s in ranked(steady_hair)][0] == "loss"
    assert ranked(steady_hair, min_gain=0.0)[0].candidate is GRID[1]
    # the same steadiness with a gain at the minimum replaces the loss
    steady_gain = _scores(wm=tuple(a + MIN_GAIN + 0.0002 * (i % 2) for i, a in enumerate(loss)), loss=loss)
    assert ranked(steady_gain)[0].candidate is GRID[1]


def test_the_minimum_gain_is_an_option_recorded_with_the_choice(digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="gmint", setup="output", seed=0, options={"min_gain": 0.5 - 1e-9})
    assert mint.record["chosen"] == LOSS_FLOOR.name and mint.record["min_gain"] == pytest.approx(0.5)
    assert "at least 0.5 AUC" in str(mint.record["rule"]) and mint.model.config()["min_gain"] == pytest.approx(0.5)
    for bad in (-0.1, 0.5, "0.01", True):
        with pytest.raises(InputError, match="minimum AUC gain"):
            MINT_MODELS.get("gmint")(4, blocks=[2, 1, 1], min_gain=bad)


def test_the_loss_floor_ranks_held_out_rows_exactly_as_the_loss_threshold(digits_store: Path) -> None:
    """On 20 pool rows (D1) the default keeps the loss: its held-out AUC is the loss threshold's to the last digit,
    its paired difference exactly 0 (a reader fitted on the loss in float32, or learning its direction from 20
    rows, would not be)."""
    mint = train_mint(digits_store, setup="combined", fraction="D1", seed=0)
    assert mint.record["chosen"] == LOSS_FLOOR.name
    result = evaluate_store(mint, digits_store, n_boot=50)
    assert result.mint["auc"].value == result.loss_threshold["auc"].value
    assert result.versus_loss is not None and (result.versus_loss.value, result.versus_loss.low,
                                               result.versus_loss.high) == (0.0, 0.0, 0.0)


def test_a_fixed_direction_is_kept_where_the_pool_says_otherwise() -> None:
    x = np.r_[np.linspace(1.0, 2.0, 10), np.linspace(0.0, 1.0, 10)][:, None]  # members' losses larger here
    y = np.r_[np.ones(10), np.zeros(10)].astype(int)
    learnt, fixed = MINT_MODELS.get("threshold")(1), MINT_MODELS.get("threshold")(1, direction="smaller")
    assert learnt.fit(x, y, seed=0)["direction"] == "larger is member"
    assert fixed.fit(x, y, seed=0)["direction"] == "smaller is member" and fixed.config() == {"direction": "smaller"}
    assert np.all(np.diff(fixed.predict_proba(np.sort(x, axis=0))) <= 0)  # ranks as −x does
    again = MINT_MODELS.get("threshold")(1, **fixed.config())
    again.load_state(fixed.state())  # a reloaded classifier scores exactly as the fitted one
    np.testing.assert_array_equal(again.predict_proba(x * 1.001), fixed.predict_proba(x * 1.001))
    with pytest.raises(InputError, match="direction"):
        MINT_MODELS.get("threshold")(1, direction="up")


def test_grouped_folds_keep_groups_whole() -> None:
    y = np.repeat([1, 0] * 10, 3)
    groups = np.repeat(np.arange(20), 3)
    for train, held in folds_of(y, groups, 4, seed=0):
        assert not set(groups[train]) & set(groups[held])
        assert set(y[held]) == {0, 1}


def test_gmint_reads_the_loss_beside_the_features_and_records_its_choice(tmp_path: Path, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="gmint", setup="combined", seed=0)
    assert mint.spec.signals == ["loss", "correct"]
    record = mint.record
    assert record["chosen"] in [c.name for c in GRID]
    assert len(record["cv"]) == len(GRID)  # type: ignore[arg-type]
    chosen = next(c for c in record["cv"] if c["candidate"] == record["chosen"])  # type: ignore[union-attr]
    assert record["cv_auc"] == chosen["auc_mean"] and "standard error" in str(record["rule"])
    mint.save(tmp_path / "g.pt")
    loaded = TrainedMint.load(tmp_path / "g.pt")
    with FeatureStore.open(digits_store) as store:
        rows = np.ones(len(store), bool)
        x = loaded.inputs(store, rows)
        assert x.shape[1] == sum(mint.spec.dims) + 2
        np.testing.assert_allclose(x[:, -2], store.column("loss"))
    np.testing.assert_allclose(loaded.predict_proba(x), mint.predict_proba(x), rtol=1e-6)
    assert loaded.model.config()["chosen"] == Candidate.from_dict(mint.model.config()["chosen"]).to_dict()


def test_gmint_on_the_loss_alone_ranks_as_the_loss_does(digits_store: Path) -> None:
    only = [Candidate("logreg", "signed_log", {"c": 1.0}, reads="signals").to_dict()]
    mint = train_mint(digits_store, kind="gmint", setup="output", seed=0, options={"grid": only})
    result = evaluate_store(mint, digits_store, n_boot=50)
    assert result.mint["auc"].value == pytest.approx(result.loss_threshold["auc"].value, abs=0.01)


def test_eval_report_carries_the_paired_difference_epsilon_and_selection(tmp_path: Path, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="gmint", setup="output", seed=0)
    result = evaluate_store(mint, digits_store, n_boot=50)
    assert result.versus_loss is not None and result.epsilon is not None
    assert result.versus_loss.value == pytest.approx(result.mint["auc"].value - result.loss_threshold["auc"].value)
    write_report(result, tmp_path / "r")
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["auc_minus_loss_threshold"]["value"] == pytest.approx(result.versus_loss.value)
    assert saved["epsilon"]["epsilon_lower_bound"] == pytest.approx(result.epsilon.value)
    assert saved["protocol"]["model_selection"]["chosen"] == mint.record["chosen"]
    text = (tmp_path / "r" / "report.md").read_text()
    assert "empirical ε lower bound" in text and "Model selection on the pool" in text
    assert f"rule: {mint.record['rule']}" in text


def test_classifier_files_without_signals_still_load(tmp_path: Path, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="output", seed=0)
    mint.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    meta = json.loads(payload["meta"])
    del meta["spec"]["signals"]  # as written before classifiers read row signals
    payload["meta"] = json.dumps(meta)
    torch.save(payload, tmp_path / "old.pt")
    assert TrainedMint.load(tmp_path / "old.pt").spec.signals == []


def test_calibration_scores_read_the_row_signals_too(digits_store: Path) -> None:
    from gmint.assess.scoring import calibration_scores

    only = [Candidate("logreg", "signed_log", {"c": 1.0}, reads="signals").to_dict()]
    mint = train_mint(digits_store, kind="gmint", setup="output", seed=0, options={"grid": only})
    calibration = calibration_scores(mint, digits_store)
    with FeatureStore.open(digits_store) as store:
        rows = np.isin(store.column("sample_id"), calibration.sample_id)
        expected = mint.predict_proba(mint.inputs(store, rows))
    np.testing.assert_allclose(np.sort(calibration.score), np.sort(expected), rtol=1e-6)


def test_per_class_refuses_a_base_that_reads_row_signals(digits_store: Path) -> None:
    from gmint.errors import InputError

    with pytest.raises(InputError, match="per_class cannot wrap gmint"):
        train_mint(digits_store, kind="per_class", setup="output", options={"base": "gmint"})


def test_rows_alike_in_every_input_are_scored_alike_without_being_called_a_collapse() -> None:
    from gmint.mint.base import score_spread

    alike = np.zeros((40, 3))
    assert score_spread(np.zeros(40), alike) is None  # nothing to tell apart: one score is chance, not a collapse
    assert score_spread(np.zeros(40), np.arange(120.0).reshape(40, 3)) is not None  # inputs vary, scores do not
