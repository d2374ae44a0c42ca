"""ExtractSettings: one checked bundle for every extraction, and the one reader of a store's recorded settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gmint.assess.selection import ROWS_PHRASE, audit_split, select_rows
from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit
from gmint.data.transforms import Transform
from gmint.errors import InputError, UnknownNameError
from gmint.features.provenance import Provenance
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel


@pytest.mark.parametrize("field, value, name", [("source", "gradients", "feature source"),
                                                ("engine", "vamp", "engine"), ("loss", "hinge", "loss"),
                                                ("reduction", "maen", "reduction")])
def test_unknown_names_are_refused_when_the_settings_are_made(field: str, value: str, name: str) -> None:
    with pytest.raises(UnknownNameError, match=f"unknown {name} '{value}'"):
        ExtractSettings(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field, value, message", [("batch_size", 0, "batch size must be a positive"),
                                                   ("chunk_size", 0, "chunk size must be a positive"),
                                                   ("max_memory", 0, "memory budget must be a positive"),
                                                   ("layer_setup", " ", "layer setup is empty"),
                                                   ("layer_setup", (), "layer setup is empty")])
def test_sizes_and_empty_setups_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ExtractSettings(**{field: value})  # type: ignore[arg-type]


def test_a_listed_setup_is_kept_item_by_item() -> None:
    settings = ExtractSettings(layer_setup=["features.0.weight", "a,b"])
    assert settings.layer_setup == ("features.0.weight", "a,b")  # a tuple, never split at the comma
    assert settings.setup_text == "features.0.weight,a,b"
    assert ExtractSettings(layer_setup="entry,output").setup_text == "entry,output"


def test_a_store_records_its_settings_and_they_read_back(digits_store: Path) -> None:
    with FeatureStore.open(digits_store) as store:
        provenance = store.provenance
    recorded = ExtractSettings.recorded(Provenance.read(provenance), batch_size=7, device="cpu")
    assert provenance["layer_setup"] == "combined" and provenance["reduction"] == "mean"
    assert recorded.layer_setup == tuple(provenance["parameters"]) and len(recorded.layer_setup) == 3
    assert (recorded.reduction, recorded.source, recorded.loss, recorded.seed) == ("mean", "gradient",
                                                                                   "cross_entropy", 0)
    assert recorded.engine == provenance["engine"] == "auto"
    assert recorded.transform == Transform.from_dict(provenance["transform"])
    assert recorded.batch_size == 7  # the run's own, not the store's


def test_an_older_record_reads_with_the_defaults_it_implies() -> None:
    old = ExtractSettings.recorded(Provenance.read({"layer_setup": "entry", "reduction": "l2"}))
    assert (old.layer_setup, old.reduction, old.engine, old.transform) == ("entry", "l2", "vmap", None)
    assert ExtractSettings.recorded(Provenance.read({})).layer_setup == "combined"


def test_candidate_rows_come_from_the_models_split(digits: ImageSet, digits_split: MembershipSplit,
                                                   audited_digits: tuple[AuditedModel, Path], tmp_path: Path) -> None:
    audited = audited_digits[0]
    split = audit_split(audited)
    assert split is not None and split.sha256 == digits_split.sha256
    members = select_rows("holdout-members", split, digits)
    assert len(members) and np.isin(members, split.holdout).all() and np.isin(members, split.members).all()
    listed = tmp_path / "ids.json"
    listed.write_text("[3, 99999]")
    with pytest.raises(InputError, match=f"^{ROWS_PHRASE} {listed}: row 99999 is outside the 1797 rows of digits"):
        select_rows(str(listed), split, digits)
    with pytest.raises(InputError, match="records no membership split"):
        select_rows("holdout-external", None, digits)
    with pytest.raises(InputError, match="split"):
        audit_split(audited, replace(digits_split, seed=digits_split.seed + 1, pool=digits_split.pool[1:]))
