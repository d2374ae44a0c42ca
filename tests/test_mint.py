"""MINT classifiers: fit on the pool, round-trip to disk, refuse stores and rows they must not score."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gmint.assess.evaluate import Evaluation, evaluate_store
from gmint.errors import InputError, StoreMismatchError, UnknownNameError
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.mint import TrainedMint, train_mint
from gmint.mint.train import pool_rows


def assert_figures_are_the_scores(result: Evaluation) -> None:
    """The reported accuracy and AUC are those of the scored rows (at P(member) ≥ 0.5), not some other set."""
    membership, score = result.scores.membership, result.scores.score
    assert len(membership) == result.rows.members + result.rows.external
    assert result.mint["auc"].value == pytest.approx(roc_auc_score(membership, score))
    assert result.mint["accuracy"].value == pytest.approx(np.mean((score >= 0.5) == (membership == 1)))


@pytest.mark.parametrize("kind", ["mlp", "logreg"])
def test_save_load_round_trip_predicts_the_same(tmp_path: Path, digits_store: Path, kind: str) -> None:
    mint = train_mint(digits_store, kind=kind, setup="combined", seed=0)
    mint.save(tmp_path / "m.pt")
    loaded = TrainedMint.load(tmp_path / "m.pt")
    with FeatureStore.open(digits_store) as store:
        x = store.features(mint.spec.layers)
    np.testing.assert_allclose(loaded.predict_proba(x), mint.predict_proba(x), rtol=1e-6)
    assert loaded.spec == mint.spec
    np.testing.assert_array_equal(loaded.fitted_ids, mint.fitted_ids)


def test_fitted_only_on_pool_rows(digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="output", seed=0)
    with FeatureStore.open(digits_store) as store:
        held_ids = store.column("sample_id")[store.column("role") == 1]
    assert not np.isin(mint.fitted_ids, held_ids).any()
    assert mint.record["members"] + mint.record["external"] == len(mint.fitted_ids)


def test_same_seed_same_classifier(digits_store: Path) -> None:
    a = train_mint(digits_store, kind="mlp", setup="entry", seed=5)
    b = train_mint(digits_store, kind="mlp", setup="entry", seed=5)
    with FeatureStore.open(digits_store) as store:
        x = store.features(a.spec.layers)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))


@pytest.mark.parametrize("fraction, share", [("D10", 0.1), ("D1", 0.01)])
def test_data_fractions_match_the_manifest(digits_store: Path, digits_split, fraction: str, share: float) -> None:
    with FeatureStore.open(digits_store) as store:
        rows = pool_rows(store, fraction, digits_split.seed)
        ids = store.column("sample_id")[rows]
    assert sorted(ids.tolist()) == digits_split.subpools[fraction]
    mint = train_mint(digits_store, kind="logreg", setup="output", fraction=fraction)
    assert len(mint.fitted_ids) == len(digits_split.subpools[fraction])


def test_a_fraction_held_up_by_one_row_per_stratum_says_how_many_rows_it_holds(digits_store: Path,
                                                                                digits_split) -> None:
    """D1 of digits' ~900 pool rows is about 9 rows, but one row per (side, class) is 20: the figures are for 20."""
    with FeatureStore.open(digits_store) as store, pytest.warns(UserWarning) as caught:
        pool_rows(store, "D1", digits_split.seed)
    assert len(caught) == 1 and "one row of each of the 20 (member/external, class) strata gives 20" in \
        str(caught[0].message)
    with FeatureStore.open(digits_store) as store, warnings.catch_warnings():
        warnings.simplefilter("error")
        pool_rows(store, "D10", digits_split.seed)  # about 10% indeed: no word


def test_evaluation_reports_baseline_and_gap(digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined", seed=0)
    result = evaluate_store(mint, digits_store, n_boot=20)
    assert result.rows.members == result.rows.external > 0
    assert_figures_are_the_scores(result)
    # Balanced rows: balanced accuracy is plain accuracy, for the classifier and the baseline alike.
    for column in (result.mint, result.loss_threshold):
        assert column["balanced_accuracy"].value == pytest.approx(column["accuracy"].value)
    # The baseline ranks the same rows by the audited model's loss (lower loss: member).
    with FeatureStore.open(digits_store) as store:
        loss_of = dict(zip(store.column("sample_id").tolist(), store.column("loss").tolist(), strict=True))
    loss = np.array([loss_of[i] for i in result.scores.sample_id.tolist()])
    assert result.loss_threshold["auc"].value == pytest.approx(roc_auc_score(result.scores.membership, -loss))
    # Fewer than 1,000 held-out externals cannot show a 0.1% FPR: no figure, and why.
    externals = result.rows.external
    assert externals < 1000
    for column in (result.mint, result.loss_threshold):
        assert column["tpr_at_0.1pct_fpr"].to_dict() == {"value": None, "ci95_low": None, "ci95_high": None,
                                                         "unresolved": f"needs ≥ 1,000 externals, has {externals}"}
    gap = result.audited_model
    assert gap.accuracy_gap == pytest.approx(gap.members_accuracy - gap.external_accuracy)


def test_store_from_another_model_is_refused(tmp_path: Path, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined")
    other = tmp_path / "other.h5"
    other.write_bytes(digits_store.read_bytes())
    import h5py

    with h5py.File(other, "r+") as h5:
        h5.attrs["model_fingerprint"] = "0" * 64
    with pytest.raises(StoreMismatchError, match="model_fingerprint"):
        evaluate_store(mint, other)


def test_rows_used_for_fitting_are_never_scored(tmp_path: Path, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined")
    leaky = tmp_path / "leaky.h5"
    leaky.write_bytes(digits_store.read_bytes())
    import h5py

    with h5py.File(leaky, "r+") as h5:
        h5["role"][:] = 1  # pretend every row is held out, including the fitted ones
    with pytest.raises(InputError, match="used to fit"):
        evaluate_store(mint, leaky)


def test_fitted_rows_are_refused_whatever_split_the_store_was_extracted_with(
        tmp_path: Path, digits_store: Path, digits, audited_digits) -> None:
    """The same model extracted with another split holds out other rows, some of which the classifier was
    fitted on: they are found by sample id, not trusted to differ because the split hash does."""
    from gmint.data.split import make_split
    from gmint.features.extract import extract, split_rows
    from gmint.models.io import AuditedModel

    mint = train_mint(digits_store, kind="logreg", setup="combined")
    other = make_split(digits, members=0.2, external=0.2, holdout=0.5, seed=7)
    unrecorded = AuditedModel(audited_digits[0].module, {k: v for k, v in audited_digits[0].meta.items()
                                                         if k not in ("split", "split_sha256")})
    store = extract(unrecorded, digits, split_rows(other),
                    ExtractSettings(layer_setup="combined", reduction="mean", batch_size=400),
                    out=tmp_path / "other.h5", split=other)
    overlap = int(np.isin(other.holdout, mint.fitted_ids).sum())
    assert overlap > 0
    with pytest.raises(InputError, match=f"^{overlap} of the {len(other.holdout)} evaluation rows of .* were used "
                                         "to fit the MINT classifier"):
        evaluate_store(mint, store, n_boot=0)


def test_report_shows_unresolved_tpr_and_collapsed_scores(tmp_path: Path, digits_store: Path) -> None:
    """JSON, Markdown and the printed table say 'n/a' where the externals cannot resolve the FPR, and a
    classifier whose held-out scores are all one value is flagged in all three."""
    import json

    from rich.console import Console

    from gmint.assess.report import print_result, write_report

    mint = train_mint(digits_store, kind="logreg", setup="combined")
    assert evaluate_store(mint, digits_store, n_boot=0).warnings == ()
    mint.predict_proba = lambda features, labels=None: np.full(len(features), 0.5, np.float32)  # type: ignore[method-assign]
    result = evaluate_store(mint, digits_store, n_boot=0)
    n = result.rows.members + result.rows.external
    assert result.warnings == (f"MINT classifier: all {n} scores are 0.5: the classifier does not rank the "
                               "rows at all",)
    write_report(result, tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["mint"]["tpr_at_0.1pct_fpr"]["value"] is None and saved["warnings"] == list(result.warnings)
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| TPR @ 0.1% FPR | n/a (needs ≥ 1,000 externals, has" in markdown
    assert f"- **Warning:** {result.warnings[0]}" in markdown
    console = Console(record=True, width=300)
    print_result(result, console)
    printed = console.export_text()
    assert "n/a (needs ≥ 1,000 externals, has" in printed and f"warning: {result.warnings[0]}" in printed


def test_a_setup_selects_in_the_store_what_it_selected_in_the_model(digits_store: Path, digits, audited_digits) -> None:
    """One grammar: presets, comma lists and exact names pick the same layers at extraction (parameter names
    of the model) and at training (feature names of a gradient store); globs match within the store."""
    from gmint.data.transforms import Transform
    from gmint.features.layers import resolve_parameters
    from gmint.mint.train import setup_features

    model, example = audited_digits[0].module, Transform()(digits.images[:1])
    with FeatureStore.open(digits_store) as store:
        for setup in ("entry", "middle", "output", "combined", "output, entry", "entry,8.weight"):
            assert setup_features(store, setup) == resolve_parameters(model, setup, example), setup
        assert setup_features(store, "all") == store.layers == resolve_parameters(model, "combined", example)
        assert setup_features(store, "*.weight") == store.layers


def test_unknown_setup_and_kind(digits_store: Path) -> None:
    with pytest.raises(UnknownNameError, match="layer setup"):
        train_mint(digits_store, setup="nonexistent.weight")
    with pytest.raises(UnknownNameError, match="MINT classifier"):
        train_mint(digits_store, kind="forest")


def test_options_a_classifier_does_not_take_are_input_errors(digits_store: Path) -> None:
    with pytest.raises(InputError, match=r"^logreg MINT classifier: .*unexpected keyword argument 'bogus'; its "
                                         r"options: c, max_iter$"):
        train_mint(digits_store, kind="logreg", setup="combined", options={"bogus": 1})
    with pytest.raises(InputError, match=r"^threshold MINT classifier: .*'bogus'; its options: direction$"):
        train_mint(digits_store, kind="threshold", setup="combined", options={"bogus": 1})
    with pytest.raises(InputError, match=r"^per_class MINT classifier: .*'bogus'$"):  # the base's option
        train_mint(digits_store, kind="per_class", setup="combined",
                   options={"base": "logreg", "base_options": {"bogus": 1}})


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory: pytest.TempPathFactory, digits, digits_split, audited_digits) -> Path:
    from gmint.features.extract import extract, split_rows

    return extract(audited_digits[0], digits, split_rows(digits_split),
                   ExtractSettings(layer_setup="entry,output", reduction="flat"),
                   out=tmp_path_factory.mktemp("flat") / "f.h5", split=digits_split)


def test_cnn_reads_the_filter_structure_of_flat_features(tmp_path: Path, flat_store: Path) -> None:
    mint = train_mint(flat_store, kind="cnn", setup="all", seed=0, options={"max_epochs": 5})
    assert mint.model.config()["shapes"] == [[8, 1, 3, 3], [10, 32]]
    mint.save(tmp_path / "cnn.pt")
    loaded = TrainedMint.load(tmp_path / "cnn.pt")
    with FeatureStore.open(flat_store) as store:
        x = store.features(mint.spec.layers)
    np.testing.assert_allclose(loaded.predict_proba(x), mint.predict_proba(x), rtol=1e-6)
    assert_figures_are_the_scores(evaluate_store(loaded, flat_store, n_boot=0))


def test_cnn_does_not_depend_on_filter_order() -> None:
    import torch

    from gmint.mint.cnn import FilterEncoder

    torch.manual_seed(0)
    encoder = FilterEncoder([[4, 2, 3, 3]], channels=5)
    x = torch.randn(3, 4, 18)
    permuted = x[:, torch.tensor([2, 0, 3, 1])]
    torch.testing.assert_close(encoder(x.reshape(3, -1)), encoder(permuted.reshape(3, -1)))


def test_cnn_needs_flat_features(digits_store: Path) -> None:
    with pytest.raises(InputError, match="extracted with reduction flat"):
        train_mint(digits_store, kind="cnn", setup="combined")


def test_class_specific_mint_routes_rows_by_class(tmp_path: Path, digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="per_class", setup="combined", seed=0, options={"base": "logreg"})
    assert mint.record["classes"] == 10 and mint.record["shared_classes"] == []
    mint.save(tmp_path / "pc.pt")
    loaded = TrainedMint.load(tmp_path / "pc.pt")
    with FeatureStore.open(digits_store) as store:
        x, labels = store.features(mint.spec.layers), store.column("label")
    got = loaded.predict_proba(x, labels)
    np.testing.assert_allclose(got, mint.predict_proba(x, labels), rtol=1e-6)
    # Row i is scored by the classifier of its own class.
    three = labels == 3
    expected = mint.model.models["3"].predict_proba(mint.scaler(x[three]))
    np.testing.assert_allclose(got[three], expected, rtol=1e-6)
    assert_figures_are_the_scores(evaluate_store(loaded, digits_store, n_boot=0))
    with pytest.raises(InputError, match="class label"):
        loaded.predict_proba(x)


def test_a_classifier_stops_on_whole_groups_it_never_trained_on() -> None:
    """Frames of one sign on both sides of the early-stopping split would stop training on how well the net
    knows that sign: with groups, the validation part is whole groups (a fifth of each side's)."""
    from gmint.mint.base import MINT_MODELS

    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 200)
    x = (rng.normal(size=(400, 6)) + 0.5 * y[:, None]).astype(np.float32)
    groups = np.arange(400) // 5  # 40 groups a side
    grouped = MINT_MODELS.get("mlp")(6, max_epochs=5).fit(x, y, seed=1, groups=groups)
    assert grouped["validation"] == "whole groups (16)" and grouped["val_rows"] == 80
    by_row = MINT_MODELS.get("mlp")(6, max_epochs=5).fit(x, y, seed=1)
    assert by_row["validation"] == "rows" and by_row["val_rows"] == 80


def test_the_threshold_classifier_ranks_rows_as_its_signal_does_however_close_the_values() -> None:
    """Two outliers make the spread large; members and externals then differ by 1e-7 on a signal whose
    standardised values sit near -0.16, where float32 steps by 1.5e-8: rounded, every row would tie."""
    from gmint.mint.base import MINT_MODELS, Standardiser, input_dtype

    externals, members = np.arange(200) * 1e-10, 1e-7 + np.arange(200) * 1e-10
    signal = np.concatenate([externals, members, [1e3, 1e3]])[:, None]
    y = np.concatenate([np.zeros(200), np.ones(200), [0, 1]]).astype(np.int64)
    model = MINT_MODELS.get("threshold")(1)
    scaler = Standardiser.fit(signal)
    model.fit(scaler(signal, input_dtype(model)), y, seed=0)
    score = model.predict_proba(scaler(signal, input_dtype(model)))
    assert roc_auc_score(y, score) == roc_auc_score(y, signal[:, 0]) > 0.99
    assert len(np.unique(scaler(signal)[:400])) < 10  # the float32 a network takes has lost the ranking


def test_an_unknown_classifier_option_is_named_with_the_classifier_and_what_it_takes(tmp_path: Path,
                                                                                    digits_store: Path) -> None:
    from tests.cli_runner import run

    done = run("train", digits_store, "--kind", "mlp", "--options", '{"hiden": [8]}', "--out", tmp_path / "m.pt")
    assert done.code == 1 and done.stderr.count("\n") == 1
    assert "unknown option hiden for the mlp classifier; it takes lr," in done.stderr and "hidden" in done.stderr
    assert "MlpMint" not in done.stderr and not (tmp_path / "m.pt").exists()


def test_a_file_given_as_a_classifier_is_named_for_what_it_is(tmp_path: Path, digits_store: Path,
                                                               audited_digits: tuple[object, Path]) -> None:
    from gmint.errors import InputError
    from gmint.mint import TrainedMint

    with pytest.raises(InputError, match="is not a gmint MINT classifier: it is an audited model's checkpoint"):
        TrainedMint.load(audited_digits[1])
    with pytest.raises(InputError, match=r"is not a gmint MINT classifier: it is an HDF5 file"):
        TrainedMint.load(digits_store)
