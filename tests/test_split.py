"""Membership splits: seeded, disjoint, class-balanced, group-aware, nested data fractions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from gmint.data.base import ImageSet
from gmint.data.split import MembershipSplit, check_model_split, make_split, subpool_mask
from gmint.errors import InputError


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
        make_split(toy(n_groups=2, frames=1, classes=2), members=0.5, external=0.5, seed=0)


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
    check_model_split(meta, trained)
    other = make_split(digits, members=0.5, external=0.5, seed=1)
    with pytest.raises(InputError, match=f"split {other.sha256} is not the one the audited model was trained on "
                                         rf"\({trained.sha256}\)"):
        check_model_split(meta, other)
    check_model_split(meta, other, trained_outside=True)  # the caller vouches for it
    check_model_split({"format": "state-dict"}, other)     # nothing recorded: the manifest is all there is
