"""Membership splits: which rows trained the audited model, which are external, which the auditor may use.

One seeded manifest decides everything downstream, so it is saved as JSON with a content hash that
feature stores and classifiers record. Splits are class-balanced and, under the `grouped` protocol,
group-aware: all frames of one GTSRB track land on the same side, and each class gives the pool and the
holdout as many member groups as external groups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gmint.data.base import ImageSet
from gmint.errors import InputError
from gmint.files import atomic_write

FRACTIONS = {"D100": 1.0, "D10": 0.1, "D1": 0.01}
# Roles that must never share a row: a row on both sides would be labelled, fitted or scored as both.
DISJOINT = (("members", "external"), ("pool", "holdout"), ("control", "members"), ("control", "external"),
            ("control", "pool"), ("control", "holdout"))
PROTOCOLS = ("paper", "grouped")
MEMBER, EXTERNAL = 1, 0
POOL, HOLDOUT = 0, 1


@dataclass(frozen=True)
class MembershipSplit:
    """Row indices (into the ImageSet) of each role, plus how they were drawn.

    `members` trained the audited model; `external` never did. `pool` is the part of both the auditor
    may fit a MINT classifier on; `holdout` is only ever scored, with as many members as externals.
    `subpools` holds the nested, class-balanced D10/D1 subsets of the pool. `control` rows are in
    neither set: they train a negative-control model that saw neither members nor externals.
    """

    dataset: str
    protocol: str
    seed: int
    members: list[int]
    external: list[int]
    pool: list[int]
    holdout: list[int]
    subpools: dict[str, list[int]] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)
    control: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Refuse roles that overlap, and pool/holdout rows that are neither member nor external (they
        would be labelled external): a hand-edited manifest can carry a valid hash and still be wrong."""
        problems = []
        for a, b in DISJOINT:
            common = np.intersect1d(getattr(self, a), getattr(self, b))
            if len(common):
                problems.append(f"{a} and {b} share {len(common)} rows (e.g. {', '.join(map(str, common[:3]))})")
        unlabelled = np.setdiff1d(self.pool + self.holdout, self.members + self.external)
        if len(unlabelled):
            problems.append(f"{len(unlabelled)} pool/holdout rows are neither members nor external (e.g. "
                            f"{', '.join(map(str, unlabelled[:3]))})")
        if problems:
            raise InputError("split roles overlap: " + "; ".join(problems))

    @property
    def sha256(self) -> str:
        """Hash of the manifest's content: what stores and classifiers record to detect mix-ups."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def membership_of(self, rows: np.ndarray) -> np.ndarray:
        """(N,) int8: 1 for members, 0 for external."""
        return np.isin(rows, self.members).astype(np.int8)

    def role_of(self, rows: np.ndarray) -> np.ndarray:
        """(N,) int8: 0 for the auditor's pool, 1 for the held-out evaluation rows."""
        return np.isin(rows, self.holdout).astype(np.int8)

    def save(self, path: Path) -> None:
        """Write the manifest as JSON with its hash, whole or not at all (a half-written one would not load)."""
        payload = {**asdict(self), "sha256": self.sha256}
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(payload))

    @classmethod
    def load(cls, path: Path) -> MembershipSplit:
        """Read a manifest written by `save`.

        Raises:
            InputError: the file is missing, not JSON, has other fields, overlapping roles, or a content that
                no longer matches its hash (edited by hand).
        """
        try:
            payload = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"split manifest {path} not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"split manifest {path} is not valid JSON ({exc})") from None
        recorded = payload.pop("sha256", None)
        try:
            split = cls(**payload)
        except TypeError as exc:
            raise InputError(f"split manifest {path} has the wrong fields ({exc})") from None
        except InputError as exc:
            raise InputError(f"split manifest {path}: {exc}") from None
        if recorded != split.sha256:
            raise InputError(f"split manifest {path} was modified after it was written (hash mismatch)")
        return split

    @classmethod
    def from_json(cls, text: str) -> MembershipSplit:
        """The split a JSON text describes (the copy a checkpoint records), its hash not checked."""
        payload = json.loads(text)
        payload.pop("sha256", None)
        return cls(**payload)


def check_model_split(meta: Mapping[str, object], split: MembershipSplit, *, trained_outside: bool = False) -> None:
    """Refuse to label rows with a split other than the one the audited model was trained on.

    The split decides each row's membership label; another split's labels call members external and
    back, and the audit still runs to the end. A gmint checkpoint records its split (`meta["split"]`);
    a model trained elsewhere records none (nothing to check) or one that no longer describes it, which
    the caller states with `trained_outside=True`.

    Raises:
        InputError: the hashes differ; the message names both.
    """
    recorded = meta.get("split")
    if recorded is None or trained_outside:
        return
    trained = MembershipSplit.from_json(json.dumps(recorded)).sha256
    if trained != split.sha256:
        raise InputError(f"the split {split.sha256} is not the one the audited model was trained on ({trained}): "
                         "its membership labels would be wrong; use the model's own split, or pass "
                         "--model-trained-outside-gmint if the model was trained outside gmint on this split")


def one_sided_groups(membership: np.ndarray, groups: np.ndarray) -> np.ndarray | None:
    """`groups` where rows should be drawn by whole group, else None (draw rows one by one).

    Only where every row has a group (-1 marks none), some group holds several rows, and every group sits
    on one side: a group on both sides (GTSRB split by frame) cannot be drawn for one side alone. The
    bootstrap resamples such groups, and a MINT classifier holds out whole groups to stop its training on.
    """
    membership, groups = np.asarray(membership), np.asarray(groups)
    if len(groups) == 0 or (groups < 0).any():
        return None
    sides_per_group = np.unique(np.stack([groups, membership]), axis=1)[0]
    if len(np.unique(sides_per_group)) < len(sides_per_group) or len(np.unique(groups)) == len(groups):
        return None
    return groups


def make_split(data: ImageSet, *, members: float | int = 0.5, external: float | int = 0.5,
               holdout: float = 0.5, control: float | int = 0, protocol: str = "grouped",
               seed: int = 0) -> MembershipSplit:
    """Draw a seeded, class-balanced membership split of `data`.

    Args:
        data: the dataset; members and external come from its official `train` part.
        members: a fraction (≤ 1.0) of the train part or a row count (int > 1).
        external: the same, for the external samples.
        holdout: fraction of the smaller side held out for evaluation, the same number on both sides.
        control: rows (fraction or count of the train part) for a negative-control model, drawn before
            members and external (after them under `grouped`); 0 for none.
        protocol: `paper` (rows drawn independently; where the dataset has an official `test` part,
            the held-out externals come from it, as the authors did) or `grouped` (for data with
            groups: whole groups, members and external as same-class pairs so every class is level
            between them in the pool and in the holdout; for data without, the same as `paper` with
            the held-out externals from the external rows).
        seed: seeds every random choice; recorded in the manifest.

    Raises:
        InputError: unknown protocol, sizes that do not fit, or an empty side.
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'; choose from {list(PROTOCOLS)}")
    if not 0.0 < holdout < 1.0:
        raise InputError(f"holdout must be a fraction in (0, 1), got {holdout}")
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(data.part == "train")
    test = np.flatnonzero(data.part == "test")
    n_members, n_external = _count(members, len(train), "members"), _count(external, len(train), "external")
    n_control = _count(control, len(train), "control") if control else 0
    if n_members + n_external + n_control > len(train):
        raise InputError(f"{n_members} members + {n_external} external + {n_control} control exceed the "
                         f"{len(train)} rows of {data.name}'s train part")
    if protocol == "grouped" and data.groups is not None:
        roles = _grouped_roles(train, data.labels, data.groups, n_members, n_external, n_control, holdout, rng)
    else:
        roles = _row_roles(train, test if protocol == "paper" else test[:0], data.labels, n_members, n_external,
                           n_control, holdout, rng)
    control_rows, member_rows, external_rows, held_members, held_external = roles
    pool_members = np.setdiff1d(member_rows, held_members)
    pool_external = np.setdiff1d(external_rows, held_external)
    if min(len(held_members), len(held_external), len(pool_members), len(pool_external)) == 0:
        raise InputError("empty split: too few rows to give both the pool and the holdout members and "
                         "external samples")
    n = min(len(held_members), len(held_external))  # group rounding can leave the sides unequal
    held_members, held_external = rng.permutation(held_members)[:n], rng.permutation(held_external)[:n]
    held = np.concatenate([held_members, held_external])
    pool = np.sort(np.concatenate([pool_members, pool_external]))
    membership = np.isin(pool, member_rows).astype(np.int64)
    subpools = {name: pool[subpool_mask(membership, data.labels[pool], FRACTIONS[name], seed)]
                for name in FRACTIONS if FRACTIONS[name] < 1.0}
    return MembershipSplit(
        dataset=data.name, protocol=protocol, seed=seed,
        members=sorted(map(int, member_rows)), external=sorted(map(int, np.union1d(external_rows, held_external))),
        pool=sorted(map(int, pool)), holdout=sorted(map(int, held)),
        subpools={k: sorted(map(int, v)) for k, v in subpools.items()},
        options={"members": members, "external": external, "holdout": holdout, "control": control,
                 "grouped_by": "group" if protocol == "grouped" and data.groups is not None else "row"},
        control=sorted(map(int, control_rows)),
    )


class Roles(NamedTuple):
    """Rows of each role as drawn, before the holdout is trimmed to as many members as externals."""

    control: np.ndarray
    members: np.ndarray
    external: np.ndarray
    held_members: np.ndarray
    held_external: np.ndarray   # from `external`, or from the official test part under `paper`


def _row_roles(train: np.ndarray, test: np.ndarray, labels: np.ndarray, n_members: int, n_external: int,
               n_control: int, holdout: float, rng: np.random.Generator) -> Roles:
    """Every role drawn row by row, class-balanced; held-out externals from `test` where it has rows."""
    control_rows, train = _take(train, labels, None, n_control, rng)
    member_rows, rest = _take(train, labels, None, n_members, rng)
    external_rows, _ = _take(rest, labels, None, n_external, rng)
    _refuse_empty(member_rows, external_rows)
    n_hold = int(round(holdout * min(len(member_rows), len(external_rows))))
    held_members, _ = _take(member_rows, labels, None, n_hold, rng)
    held_external, _ = _take(test if len(test) else external_rows, labels, None, n_hold, rng)
    return Roles(control_rows, member_rows, external_rows, held_members, held_external)


def _grouped_roles(train: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_members: int, n_external: int,
                   n_control: int, holdout: float, rng: np.random.Generator) -> Roles:
    """Members and external as same-class pairs of whole groups; the holdout a class-interleaved prefix of the
    pairs; control groups from what is left.

    Drawing each side's groups on its own spreads a class's few groups unevenly: with GTSRB's two-track
    classes, a class often sits in the pool as members only and in the holdout as external only, so the
    class prior a classifier learns points the wrong way on held-out rows (a negative control below
    chance). A pair gives its class one member group and one external group, in the pool or in the holdout.

    Raises:
        InputError: the pairs hold fewer rows than the smaller side asks for (by more than half a group).
    """
    unit_of = groups[train]
    units, first, sizes = np.unique(unit_of, return_index=True, return_counts=True)
    unit_class = labels[train[first]]
    pairs, keys = [], []
    for cls in np.unique(unit_class):
        shuffled = rng.permutation(np.flatnonzero(unit_class == cls))
        count = len(shuffled) // 2
        pairs.append(np.stack([shuffled[0:2 * count:2], shuffled[1:2 * count:2]], axis=1))
        keys.append((np.arange(count) + rng.random(count)) / max(count, 1))
    ranked = np.concatenate(pairs)[np.argsort(np.concatenate(keys), kind="stable")]
    smaller = 0 if n_members <= n_external else 1  # the side whose count decides how many pairs
    target = min(n_members, n_external)
    pair_rows = sizes[ranked[:, smaller]]
    if not len(ranked) or target - pair_rows.sum() > sizes.max() / 2:
        available = int(pair_rows.sum())
        raise InputError(f"the grouped protocol pairs each member group with an external group of the same "
                         f"class: the train part has {len(ranked)} such pairs ({available} rows a side), fewer "
                         f"than the {target} asked for; ask for fewer, or use --protocol paper")
    taken = ranked[:_prefix_length(pair_rows, target)]

    def rows_of(unit_index: np.ndarray) -> np.ndarray:
        return np.sort(train[np.isin(unit_of, units[unit_index])])

    sides = [rows_of(taken[:, 0]), rows_of(taken[:, 1])]
    rest = np.setdiff1d(train, np.concatenate(sides))
    # the larger side's surplus over the smaller, in whole groups; it goes to the pool (the holdout is pairs)
    extra, rest = _take(rest, labels, groups, abs(n_members - n_external), rng)
    sides[1 - smaller] = np.sort(np.concatenate([sides[1 - smaller], extra]))
    member_rows, external_rows = sides
    _refuse_empty(member_rows, external_rows)
    n_hold = int(round(holdout * min(len(member_rows), len(external_rows))))
    held = taken[:_prefix_length(sizes[taken[:, 0]], n_hold)]
    control_rows, _ = _take(rest, labels, groups, n_control, rng)
    return Roles(control_rows, member_rows, external_rows, rows_of(held[:, 0]), rows_of(held[:, 1]))


def _refuse_empty(member_rows: np.ndarray, external_rows: np.ndarray) -> None:
    if len(member_rows) == 0 or len(external_rows) == 0:
        raise InputError(f"empty split: {len(member_rows)} members, {len(external_rows)} external")


def _count(size: float | int, total: int, what: str) -> int:
    if isinstance(size, float) and size <= 1.0:
        if size <= 0:
            raise InputError(f"{what} must be positive, got {size}")
        return int(round(size * total))
    if int(size) <= 0:
        raise InputError(f"{what} must be positive, got {size}")
    return int(size)


def _take(rows: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, count: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """About `count` of `rows`, class-balanced, whole groups when given → (taken rows, remaining rows).

    Units (rows, or groups of rows) are shuffled within their class and interleaved across classes by
    their relative rank, so any prefix holds each class in proportion; the prefix whose row count is
    closest to `count` is taken. Per-class rounding would starve classes with few groups (GTSRB has
    classes of two tracks).
    """
    if count <= 0:
        return np.empty(0, np.int64), rows
    unit_of = groups[rows] if groups is not None else rows
    units, first = np.unique(unit_of, return_index=True)
    unit_class = labels[rows[first]]
    keys = np.empty(len(units))
    for cls in np.unique(unit_class):
        members = np.flatnonzero(unit_class == cls)
        order = rng.permutation(len(members))
        keys[members[order]] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    ranked = units[np.argsort(keys, kind="stable")]
    sizes = np.array([np.count_nonzero(unit_of == u) for u in ranked]) if groups is not None else \
        np.ones(len(ranked), np.int64)
    taken = np.isin(unit_of, ranked[:_prefix_length(sizes, count)])
    return np.sort(rows[taken]), rows[~taken]


def _prefix_length(sizes: np.ndarray, count: int) -> int:
    """How many of the leading units (of `sizes` rows each) come closest to `count` rows; at least one."""
    return int(np.argmin(np.abs(np.cumsum(sizes) - count))) + 1


def subpool_mask(membership: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over the (sorted) pool rows: a `fraction` balanced over (membership, class).

    Nested (D1 ⊂ D10) because every fraction takes a prefix of the same seeded permutation of each
    stratum; at least one row per stratum. Used by the split and again by MINT training, from the
    store's columns, so both agree without the store carrying the manifest.
    """
    rng = np.random.default_rng([seed, 1])
    mask = np.zeros(len(membership), dtype=bool)
    for side in (MEMBER, EXTERNAL):
        for cls in np.unique(labels):
            stratum = np.flatnonzero((membership == side) & (labels == cls))
            if len(stratum):
                k = max(1, int(round(fraction * len(stratum))))
                mask[rng.permutation(stratum)[:k]] = True
    return mask
