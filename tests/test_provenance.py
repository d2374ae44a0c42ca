"""Store provenance: every version of a store's attributes reads into the same typed record."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gmint.errors import StoreMismatchError
from gmint.features.provenance import Provenance
from gmint.features.store import FeatureStore
from gmint.mint.base import FeatureSpec
from gmint.models.check import Fit, ModelCheck

# A store's attributes as the first versions wrote them (format /2): the keys `verify` requires, and nothing of
# what later versions added (source, parameters, presets, shapes, the data's folder, the engine's record, the
# model check, the transform).
FIRST = {"format": "gmint-feature-store/2", "gmint_version": "0.1.0", "torch_version": "2.3.0",
         "model_fingerprint": "ab" * 32, "layers": ["0.weight", "4.weight"], "reduction": "mean", "engine": "vmap",
         "dataset": "digits", "split_sha256": "cd" * 32, "seed": 0, "n_rows": 1797, "complete": True,
         "rows_written": 1797}


def test_a_first_version_store_reads_with_what_its_features_were() -> None:
    prov = Provenance.read(FIRST)
    assert (prov.format, prov.gmint_version, prov.model_fingerprint) == ("gmint-feature-store/2", "0.1.0", "ab" * 32)
    assert prov.layers == ("0.weight", "4.weight") and prov.parameters is None  # features named by parameter
    assert prov.source == "gradient"  # stores before `source` hold Weight Modifiers
    assert (prov.reduction, prov.engine, prov.dataset, prov.seed, prov.n_rows) == ("mean", "vmap", "digits", 0, 1797)
    assert prov.split_sha256 == "cd" * 32 and prov.split_seed is None and prov.layer_presets == {}
    assert prov.dataset_root is None and prov.dataset_files_sha256 is None and prov.transform is None
    assert prov.model_check is None and prov.engine_used is None and prov.shards is None
    spec = FeatureSpec(layers=["0.weight"], dims=[16], reduction="mean", model_fingerprint="ab" * 32,
                       split_sha256="cd" * 32, dataset="digits")
    spec.check(prov, {"0.weight": 16, "4.weight": 32}, "old.h5")  # a classifier fitted on it still checks
    with pytest.raises(StoreMismatchError, match="old.h5 has reduction='l2'"):
        spec.check(replace(prov, reduction="l2"), {"0.weight": 16}, "old.h5")


def test_the_model_check_reads_back_and_one_recorded_otherwise_is_none() -> None:
    check = ModelCheck(Fit(500, 0.99, 0.02), Fit(500, 0.97, 0.1), ("the preprocessing looks wrong",))
    assert Provenance.read({**FIRST, "model_check": check.to_dict()}).model_check == check
    assert Provenance.read({**FIRST, "model_check": {"members": {"accuracy": "high"}}}).model_check is None


def test_a_store_extracted_now_reads_every_key_it_records(digits_store: Path) -> None:
    with FeatureStore.open(digits_store) as store:
        attrs, layers = store.provenance, store.layers
    prov = Provenance.read(attrs)
    assert prov.layers == tuple(layers) and prov.parameters is not None and len(prov.parameters) == len(layers)
    assert prov.source == attrs["source"] and prov.engine_used == attrs["engine_used"]
    assert prov.split_seed == attrs["split_seed"] and prov.rows_sha256 == attrs["rows_sha256"]
    assert prov.layer_presets == attrs["layer_presets"] and prov.transform == attrs["transform"]
    assert prov.dataset_root == attrs["dataset_root"] and prov.format == attrs["format"]
