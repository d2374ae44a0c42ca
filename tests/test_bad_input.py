"""Bad input, case by case: one clear line, a non-zero exit, nothing overwritten."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.errors import InputError, StoreMismatchError, UnsupportedModelError
from gmint.features.extract import Rows, extract
from gmint.features.integrity import verify
from gmint.features.provenance import Provenance
from gmint.features.store import FeatureStore
from gmint.mint import train_mint
from gmint.mint.base import FeatureSpec
from gmint.models.io import AuditedModel, load_audited
from tests.cli_runner import invoke


def one_line_error(code: int, out: str, needle: str) -> None:
    assert code == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], out
    assert "Traceback" not in out


@pytest.fixture
def trained_mint(tmp_path: Path, digits_store: Path) -> Path:
    path = tmp_path / "mint.pt"
    train_mint(digits_store, kind="logreg", setup="combined").save(path)
    return path


def test_truncated_store(tmp_path: Path, digits_store: Path, trained_mint: Path) -> None:
    broken = tmp_path / "truncated.h5"
    broken.write_bytes(digits_store.read_bytes()[: digits_store.stat().st_size // 3])
    before = broken.read_bytes()
    for args in (("eval", trained_mint, broken), ("info", "--verify", broken), ("train", broken)):
        code, out = invoke(*args)
        one_line_error(code, out, "truncated.h5")
        assert "damaged" in out or "not a readable HDF5" in out
    assert broken.read_bytes() == before


def test_store_of_another_reduction(tmp_path: Path, digits_store: Path, trained_mint: Path) -> None:
    other = tmp_path / "other.h5"
    shutil.copy(digits_store, other)
    with h5py.File(other, "r+") as h5:
        h5.attrs["reduction"] = "l2"
    one_line_error(*invoke("eval", trained_mint, other), "reduction")


def test_mismatched_layer_dims(digits_store: Path) -> None:
    mint = train_mint(digits_store, kind="logreg", setup="combined")
    spec = FeatureSpec(**{**mint.spec.__dict__, "dims": [d + 1 for d in mint.spec.dims]})
    with FeatureStore.open(digits_store) as store, pytest.raises(StoreMismatchError, match="features, the classifier"):
        spec.check(Provenance.read(store.provenance), store.dims, str(digits_store))


def test_nonfinite_rows_are_flagged_and_left_out(tmp_path: Path) -> None:
    n, path = 40, tmp_path / "nan.h5"
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, 3)).astype(np.float32)
    feats[[3, 25], 1] = np.nan
    feats[7, 0] = np.inf
    membership = np.arange(n) % 2
    prov = {"gmint_version": "x", "torch_version": "x", "model_fingerprint": "m", "layers": ["w"],
            "source": "gradient", "reduction": "mean", "engine": "vmap", "dataset": "toy", "split_sha256": "",
            "seed": 0, "n_rows": n, "split_seed": 0}
    with FeatureStore.create(path, columns={"membership": membership, "role": (np.arange(n) >= 30).astype(int),
                                            "label": np.zeros(n), "sample_id": np.arange(n)},
                             dims={"w": 3}, provenance=prov) as store:
        store.write(0, {"w": feats}, loss=np.ones(n, np.float32), pred=np.zeros(n, np.int64))
        store.mark_complete()
    with FeatureStore.open(path) as store:
        assert np.flatnonzero(~store.column("finite")).tolist() == [3, 7, 25]
    assert any("NaN or Inf" in p for p in verify(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mint = train_mint(path, kind="logreg", setup="all")
    assert any("3 pool rows" in str(w.message) for w in caught)
    assert mint.record["excluded_nonfinite"] == 3 and len(mint.fitted_ids) == 27


def test_labels_outside_the_models_classes(tmp_path: Path, digits: ImageSet,
                                           audited_digits: tuple[AuditedModel, Path]) -> None:
    meta = {**audited_digits[0].meta, "num_classes": 5, "classes": None}
    model = AuditedModel(audited_digits[0].module, meta)
    rows = Rows(np.arange(20), np.zeros(20, np.int8), np.ones(20, np.int8))
    with pytest.raises(InputError, match="outside the audited model's 5 classes"):
        extract(model, digits, rows, out=tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_empty_rows_are_refused() -> None:
    with pytest.raises(InputError, match="empty"):
        Rows(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.int8))


def test_checkpoint_keys_do_not_match_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save(nn.Linear(4, 2).state_dict(), path)
    with pytest.raises(UnsupportedModelError, match="does not match the architecture"):
        load_audited(path, arch="torch.nn:Identity")
    code, out = invoke("extract", "--model", path, "--arch", "tests.test_bad_input:wide_linear", "--data", "digits")
    one_line_error(code, out, "does not match the architecture")


def wide_linear() -> nn.Module:
    return nn.Linear(5, 2)


def test_pickled_module_needs_the_trust_flag(tmp_path: Path, digits_split: MembershipSplit) -> None:
    path = tmp_path / "module.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), path)
    one_line_error(*invoke("layers", "--model", path), "--trust-pickle")
    code, out = invoke("layers", "--model", path, "--trust-pickle")
    assert code == 0 and "1.weight" in out


def test_split_for_another_dataset(tmp_path: Path, audited_digits: tuple[AuditedModel, Path],
                                   digits_split: MembershipSplit) -> None:
    other = MembershipSplit(**{**digits_split.__dict__, "dataset": "mnist"})
    other.save(tmp_path / "split.json")
    one_line_error(*invoke("extract", "--model", audited_digits[1], "--split", tmp_path / "split.json",
                        "--out", tmp_path / "x.h5"), "the split is for 'mnist'")
    assert not (tmp_path / "x.h5").exists()


def test_an_unfinished_training_checkpoint_is_refused_by_every_command_that_audits_it(
        tmp_path: Path, audited_digits: tuple[AuditedModel, Path]) -> None:
    """A run killed mid-training leaves weights that are an accident of when it died, and no record."""
    payload = torch.load(audited_digits[1], map_location="cpu", weights_only=True)
    meta = json.loads(payload["meta"])
    del meta["record"]
    payload["meta"] = json.dumps(meta)
    cut = tmp_path / "cut.pt"
    torch.save(payload, cut)
    with pytest.raises(InputError, match=f"unfinished training run \\(it stopped after epoch {meta['epochs_done']} of"):
        load_audited(cut)
    for args in (("extract", "--model", cut, "--out", tmp_path / "f.h5"),
                 ("reference", "train", "--model", cut, "--out", tmp_path / "refs")):
        code, out = invoke(*args)
        one_line_error(code, out, "unfinished training run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pt"]
