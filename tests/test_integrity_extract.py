"""Extraction labels rows with the split the audited model was trained on, or refuses to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, make_split
from gmint.errors import InputError
from gmint.features.extract import extract, split_rows
from gmint.features.settings import ExtractSettings
from gmint.features.store import FeatureStore
from gmint.models.io import AuditedModel


@pytest.fixture(scope="module")
def other_split(digits: ImageSet) -> MembershipSplit:
    """A split of digits the session's audited model was not trained on."""
    return make_split(digits, members=0.1, external=0.1, holdout=0.5, seed=1)


def test_a_split_the_model_was_not_trained_on_is_refused_before_anything_is_written(
        tmp_path: Path, digits: ImageSet, digits_split: MembershipSplit, other_split: MembershipSplit,
        audited_digits: tuple[AuditedModel, Path]) -> None:
    """With another split's labels members are called external and back, and the audit would run to the
    end on them; only a caller who says the model was trained outside gmint may pass another split."""
    other = other_split
    out = tmp_path / "other.h5"
    with pytest.raises(InputError, match=f"split {other.sha256} is not the one the audited model was trained on "
                                         rf"\({digits_split.sha256}\)"):
        extract(audited_digits[0], digits, split_rows(other), out=out, split=other)
    assert not out.exists()
    extract(audited_digits[0], digits, split_rows(other), ExtractSettings(batch_size=400), out=out, split=other,
            trained_outside=True)
    with FeatureStore.open(out) as store:
        assert store.complete and store.provenance["split_sha256"] == other.sha256


def test_cli_names_both_hashes_and_the_flag_that_accepts_another_split(
        tmp_path: Path, digits_split: MembershipSplit, other_split: MembershipSplit,
        audited_digits: tuple[AuditedModel, Path]) -> None:
    from tests.cli_runner import invoke

    other = other_split
    other.save(tmp_path / "other.json")
    args = ("extract", "--model", audited_digits[1], "--split", tmp_path / "other.json", "--out", tmp_path / "x.h5")
    code, out = invoke(*args)
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert other.sha256 in out and digits_split.sha256 in out and "--model-trained-outside-gmint" in out
    assert not (tmp_path / "x.h5").exists()
    code, out = invoke(*args, "--model-trained-outside-gmint", "--batch-size", 400)
    assert code == 0, out
