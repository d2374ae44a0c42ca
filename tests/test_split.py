"""Membership splits: seeded, disjoint, class-balanced, group-aware, nested data fractions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, check_model_split, make_split, subpool_mask
from gmint.errors import InputError
from gmint.models.record import CheckpointRecord


def toy(n_groups: int = 60, frames: int = 5, classes: int = 3, test: int = 0) -> ImageSet:
    n = n_groups * frames + test
    groups = np.r_[np.repeat(np.arange(n_groups), frames), np.arange(n_groups, n_groups + test)]
    labels = np.r_[np.repeat(np.arange(n_groups) % classes, frames), np.arange(test) % classes]
    return ImageSet(name="toy", images=np.zeros((n, 2, 2, 1), np.uint8), labels=labels.astype(np.int64),
                    sample_ids=np.arange(n, dtype=np.int64),
                    part=np.array(["train"] * (n_groups * frames) + ["test"] * test),
                    classes=tuple(map(str, range(classes))), groups=groups.astype(np.int64))


def test_split_is_disjoint_balanced_and_seeded(digits: ImageSet) -> None:
    a = make_split(digits, members=0.5, external=0.5, holdout=0.5, seed=1)
    b = make_split(digits, members=0.5, external=0.5, holdout=0.5, seed=1)
    c = make_split(digits, members=0.5, external=0.5, holdout=0.5, seed=2)
    assert a.sha256 == b.sha256 != c.sha256
    assert not set(a.members) & set(a.external)
    assert not set(a.pool) & set(a.holdout)
    assert set(a.pool) | set(a.holdout) <= set(a.members) | set(a.external)
    held = np.array(a.holdout)
    assert a.membership_of(held).sum() * 2 == len(held)  # as many members as externals held out
    member_classes = np.bincount(digits.labels[a.members], minlength=10)
    assert member_classes.min() >= 0.9 * member_classes.max()  # class-balanced draw


def test_grouped_protocol_never_splits_a_group() -> None:
    data = toy()
    split = make_split(data, members=0.5, external=0.5, protocol="grouped", seed=0)
    assert data.groups is not None
    side = {}
    for rows, name in ((split.members, "m"), (split.external, "e")):
        for g in data.groups[rows]:
            assert side.setdefault(int(g), name) == name
    pool_groups, held_groups = set(data.groups[split.pool]), set(data.groups[split.holdout])
    assert not pool_groups & held_groups


def _member_share_by_class(data: ImageSet, split: MembershipSplit, rows: list[int]) -> dict[int, float]:
    index = np.asarray(rows)
    membership = split.membership_of(index)
    return {int(c): float(membership[data.labels[index] == c].mean()) for c in np.unique(data.labels[index])}


@pytest.mark.parametrize("classes", [3, 40])  # 40 classes of two groups: GTSRB's many two-track classes
def test_grouped_protocol_levels_every_class_in_the_pool_and_the_holdout(classes: int) -> None:
    data = toy(n_groups=80, frames=5, classes=classes)
    split = make_split(data, members=0.4, external=0.4, control=0.2, protocol="grouped", seed=3)
    for rows in (split.pool, split.holdout):
        assert set(_member_share_by_class(data, split, rows).values()) == {0.5}
    assert len(split.members) == len(split.external) == 160 and len(split.control) == 80


def test_a_class_prior_learned_on_the_grouped_pool_is_at_chance_on_the_holdout() -> None:
    """The classifier's easiest shortcut, each class's member share in the pool, must carry no signal to
    the held-out rows: drawn side by side, two-group classes pointed it the wrong way (AUC well below 0.5)."""
    tracks = np.repeat(np.arange(43), [2] * 23 + [3] * 3 + [4] * 3 + [5] * 6 + [7] * 3 + [8] * 5)  # GTSRB's subset
    labels = np.repeat(tracks, 30)
    data = replace(toy(n_groups=len(tracks), frames=30, classes=43), labels=labels)
    for seed in range(5):
        split = make_split(data, members=1000, external=1000, control=1000, protocol="grouped", seed=seed)
        prior = _member_share_by_class(data, split, split.pool)
        held = np.asarray(split.holdout)
        score = [prior.get(int(c), 0.5) for c in data.labels[held]]
        assert roc_auc_score(split.membership_of(held), score) == pytest.approx(0.5)


def test_grouped_protocol_keeps_pairs_when_one_side_asks_for_more() -> None:
    data = toy(n_groups=60, frames=5, classes=3)
    split = make_split(data, members=50, external=100, protocol="grouped", seed=0)
    assert (len(split.members), len(split.external)) == (50, 100)
    assert set(_member_share_by_class(data, split, split.holdout).values()) == {0.5}


def test_grouped_protocol_refuses_more_rows_than_its_pairs_hold() -> None:
    data = toy(n_groups=9, frames=5, classes=3)  # 3 groups a class: one pair each, 15 rows a side
    with pytest.raises(InputError, match="3 such pairs .15 rows a side., fewer than the 20 asked for"):
        make_split(data, members=20, external=20, protocol="grouped", seed=0)


def test_paper_protocol_draws_frames_independently_and_tests_on_official_test() -> None:
    data = toy(test=90)
    split = make_split(data, members=0.5, external=0.5, protocol="paper", seed=0)
    assert data.groups is not None
    assert set(data.groups[split.members]) & set(data.groups[split.external])  # frames straddle
    held_external = [r for r in split.holdout if r not in split.members]
    assert set(data.part[held_external]) == {"test"}
    assert set(data.part[split.members]) == {"train"}


def test_data_fractions_are_nested_balanced_and_sized(digits: ImageSet) -> None:
    split = make_split(digits, seed=0)
    pool = np.array(split.pool)
    d10, d1 = set(split.subpools["D10"]), set(split.subpools["D1"])
    assert d1 < d10 < set(split.pool)
    membership = split.membership_of(pool)
    for name, frac in (("D10", 0.1), ("D1", 0.01)):
        rows = np.array(split.subpools[name])
        m = split.membership_of(rows)
        for side in (0, 1):
            for cls in range(10):
                stratum = ((membership == side) & (digits.labels[pool] == cls)).sum()
                got = ((m == side) & (digits.labels[rows] == cls)).sum()
                assert got == max(1, round(frac * stratum))
    again = pool[subpool_mask(membership, digits.labels[pool], 0.1, split.seed)]
    assert sorted(again) == split.subpools["D10"]


def test_manifest_round_trip_and_tamper_check(tmp_path: Path, digits: ImageSet) -> None:
    split = make_split(digits, seed=0)
    path = tmp_path / "split.json"
    split.save(path)
    assert MembershipSplit.load(path) == split
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 1'))
    with pytest.raises(InputError, match="modified"):
        MembershipSplit.load(path)


@pytest.mark.parametrize("kwargs, message", [
    ({"members": 0.8, "external": 0.5}, "exceed"),
    ({"protocol": "random"}, "unknown protocol"),
    ({"holdout": 1.5}, "holdout"),
    ({"members": 0.0}, "positive"),
])
def test_bad_split_requests_are_refused(digits: ImageSet, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_split(digits, **kwargs)  # type: ignore[arg-type]


def test_too_small_data_gives_an_empty_split_error() -> None:
    with pytest.raises(InputError, match="empty split"):
        make_split(toy(n_groups=2, frames=1, classes=2), members=0.5, external=0.5, protocol="paper", seed=0)


@pytest.mark.parametrize("into, taken_from, message", [
    ("external", "members", "members and external share 1 rows"),
    ("holdout", "pool", "pool and holdout share 1 rows"),
    ("control", "members", "control and members share 1 rows"),
    ("control", "external", "control and external share 1 rows"),
    ("pool", "control", "control and pool share 1 rows.*1 pool/holdout rows are neither members nor external"),
])
def test_overlapping_roles_are_refused_even_with_a_valid_hash(tmp_path: Path, digits: ImageSet, into: str,
                                                              taken_from: str, message: str) -> None:
    """A hand-edited manifest re-hashed to fit: a row on two sides would be labelled, fitted and scored
    as both, so loading it fails and names the roles."""
    payload = asdict(make_split(digits, members=0.4, external=0.4, control=0.2, seed=0))
    payload[into] = sorted(payload[into] + payload[taken_from][:1])
    payload["sha256"] = hashlib.sha256(json.dumps({k: v for k, v in payload.items() if k != "sha256"},
                                                  sort_keys=True).encode()).hexdigest()
    path = tmp_path / "split.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(InputError, match=f"split manifest {path}: split roles overlap: {message}"):
        MembershipSplit.load(path)


def test_a_split_other_than_the_models_is_refused_naming_both_hashes(digits: ImageSet) -> None:
    trained = make_split(digits, members=0.5, external=0.5, seed=0)
    meta = json.loads(json.dumps({"split": asdict(trained), "split_sha256": trained.sha256}))  # as a checkpoint
    recorded = CheckpointRecord.read(meta).split
    check_model_split(recorded, trained)
    other = make_split(digits, members=0.5, external=0.5, seed=1)
    with pytest.raises(InputError, match=f"split {other.sha256} is not the one the audited model was trained on "
                                         rf"\({trained.sha256}\)"):
        check_model_split(recorded, other)
    check_model_split(recorded, other, trained_outside=True)  # the caller vouches for it
    check_model_split(CheckpointRecord.read({"format": "state-dict"}).split, other)  # nothing recorded


def test_the_split_of_a_model_is_the_given_file_else_the_recorded_copy(digits: ImageSet, tmp_path: Path) -> None:
    """One lookup for every command: a manifest file wins, the checkpoint's copy comes next, else none."""
    trained = make_split(digits, members=0.5, external=0.5, seed=0)
    given = make_split(digits, members=0.5, external=0.5, seed=1)
    given.save(tmp_path / "split.json")
    assert MembershipSplit.of(trained) == trained
    assert MembershipSplit.of(trained, tmp_path / "split.json") == given
    assert MembershipSplit.of(None, tmp_path / "split.json") == given
    assert MembershipSplit.of(None) is None
    with pytest.raises(InputError, match="not found"):
        MembershipSplit.of(trained, tmp_path / "missing.json")
