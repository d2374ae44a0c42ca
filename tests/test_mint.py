"""MINT classifiers: fit on the pool, round-trip to disk, refuse stores and rows they must not score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmint.errors import InputError, StoreMismatchError, UnknownNameError
from gmint.evaluate import evaluate_store
from gmint.mint import TrainedMint, train_mint
from gmint.mint.train import pool_rows
from gmint.store import FeatureStore


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


def test_evaluation_reports_baseline_and_gap(digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined", seed=0)
    result = evaluate_store(mint, digits_store, n_boot=20)
    assert result["rows"]["members"] == result["rows"]["external"] > 0
    for key in ("accuracy", "auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "balanced_accuracy"):
        assert 0.0 <= result["mint"][key]["value"] <= 1.0
        assert 0.0 <= result["loss_threshold"][key]["value"] <= 1.0
    gap = result["audited_model"]
    assert gap["accuracy_gap"] == pytest.approx(gap["members_accuracy"] - gap["external_accuracy"])


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


def test_unknown_setup_and_kind(digits_store: Path) -> None:
    with pytest.raises(UnknownNameError, match="layer setup"):
        train_mint(digits_store, setup="nonexistent.weight")
    with pytest.raises(UnknownNameError, match="MINT classifier"):
        train_mint(digits_store, kind="forest")


@pytest.fixture(scope="module")
def flat_store(tmp_path_factory: pytest.TempPathFactory, digits, digits_split, audited_digits) -> Path:
    from gmint.extract import extract, split_rows

    return extract(audited_digits[0], digits, split_rows(digits_split), out=tmp_path_factory.mktemp("flat") / "f.h5",
                   layers="entry,output", reduction="flat", split=digits_split)


def test_cnn_reads_the_filter_structure_of_flat_features(tmp_path: Path, flat_store: Path) -> None:
    mint = train_mint(flat_store, kind="cnn", setup="all", seed=0, options={"max_epochs": 5})
    assert mint.model.config()["shapes"] == [[8, 1, 3, 3], [10, 32]]
    mint.save(tmp_path / "cnn.pt")
    loaded = TrainedMint.load(tmp_path / "cnn.pt")
    with FeatureStore.open(flat_store) as store:
        x = store.features(mint.spec.layers)
    np.testing.assert_allclose(loaded.predict_proba(x), mint.predict_proba(x), rtol=1e-6)
    result = evaluate_store(loaded, flat_store, n_boot=0)
    assert 0.0 <= result["mint"]["auc"]["value"] <= 1.0


def test_cnn_does_not_depend_on_filter_order() -> None:
    import torch

    from gmint.mint.cnn import FilterEncoder

    torch.manual_seed(0)
    encoder = FilterEncoder([[4, 2, 3, 3]], channels=5)
    x = torch.randn(3, 4, 18)
    permuted = x[:, torch.tensor([2, 0, 3, 1])]
    torch.testing.assert_close(encoder(x.reshape(3, -1)), encoder(permuted.reshape(3, -1)))


def test_cnn_needs_flat_features(digits_store: Path) -> None:
    with pytest.raises(InputError, match="--reduction flat"):
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
    assert 0.0 <= evaluate_store(loaded, digits_store, n_boot=0)["mint"]["auc"]["value"] <= 1.0
    with pytest.raises(InputError, match="class label"):
        loaded.predict_proba(x)
